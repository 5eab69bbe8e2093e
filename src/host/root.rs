//! The root context: loads the configuration, and owns delivery (queue, tick, callouts),
//! because a callout made from a stream's context dies with the stream.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, MapType};

use super::http::{read_later, Watch};
use super::metrics::EnvoyMetrics;
use super::shared_store::{ensure, SharedData};
use super::succession::{self, Standing};
use crate::config::{Config, DriftWatch, Endpoint, Role};
use crate::delivery::ledger::Ledger;
use crate::delivery::live_endpoints;
use crate::delivery::outcome::{
    envoy_local_reply, may_be_envoy_local_reply, AttemptResponse, LOCAL_REPLY_MAX_BYTES,
};
use crate::delivery::peers::{self, Rotation, PEERS_KEY};
use crate::delivery::sender::{Dispatch, Io, Sender};
use crate::delivery::tick::{self, EveryMinute, Tick};
use crate::delivery::wake;
use crate::events::{KnownEvents, Memory, RecentResponses};
use crate::extract::{persisted, KnownRequests};
use crate::hashing::{self, Seeded};
use crate::layout::{self, LaidOut};
use crate::learn::{AllEndpoints, Registry};
use crate::metrics::{Metric, Metrics};
use crate::page_memory::PageMemory;

/// The queue HTTP contexts put filled slots on, registered by a singleton sender (observers
/// look it up by name). Envoy hands each item to whichever root context registered a name
/// last, so with every VM sending ("both"), each registers a queue of its own (see
/// `queue_name`), and HTTP contexts hand their items to the live VMs' queues in turn while
/// their own VM is backlogged (`peers`): the sending spreads over the workers even when the
/// traffic does not.
pub const QUEUE: &str = crate::shared_name!("deliveries");
/// Slots each root context sweeps per tick: bounds the main thread's work per tick.
const SCAN_PER_TICK: u32 = 256;
/// Distinct watched responses each VM remembers to skip when they come again unchanged.
const RECENT_RESPONSES: usize = 256;
/// Observations of notifications each VM remembers to pass over when they come again in a
/// response that changed elsewhere: about 0.4 MB of the VM's memory.
const KNOWN_EVENTS: usize = 8_192;
/// GraphQL requests whose facts a VM keeps: pollers send a handful of distinct ones.
const KNOWN_REQUESTS: usize = 32;
/// Deliveries sent per wake-up at most; the rest of the item goes back on the queue. A
/// wake-up runs on a worker thread between its streams, so this bounds how long it holds
/// them up.
const SLOTS_PER_WAKE: usize = 32;

/// What every context of this VM shares once configured.
pub struct Shared {
    pub config: Config,
    /// The dedupe memory as laid out in shared data, which may predate `config`.
    pub memory: Memory,
    pub metrics: EnvoyMetrics,
    /// The delivery queue: registered by a sending VM, looked up by an observing one (whose
    /// sender, a bootstrap singleton, may register it after this VM configured).
    queue: Cell<Option<u32>>,
    /// With every VM sending: the live senders' queues, taken in turn while this VM's
    /// sender is backlogged.
    rotation: RefCell<Option<Rotation>>,
    backlogged: Cell<bool>,
    /// What this root context's timer runs at.
    tick_period_ms: Cell<u64>,
    pub recent: RefCell<RecentResponses>,
    pub pages: RefCell<PageMemory>,
    pub known: RefCell<KnownEvents>,
    pub requests: RefCell<KnownRequests>,
    /// Configured plus learned endpoints.
    endpoints: RefCell<AllEndpoints>,
    /// When this VM last warned that no sender takes its deliveries.
    no_sender_warned: EveryMinute,
    /// When this VM last warned of a stream it could not read (`warn_unlogged`).
    unlogged_warned: EveryMinute,
}

impl Shared {
    /// The queue for the next item of wake-ups, and whether it belongs to another VM.
    pub fn wake_queue(&self) -> Option<(u32, bool)> {
        if let Some(rotation) = self.rotation.borrow_mut().as_mut() {
            return Some(rotation.next_queue(self.backlogged.get()));
        }
        self.queue().map(|q| (q, false))
    }

    /// Whether this VM processed the same body under the same request before: nothing new
    /// can be in it.
    pub fn recognised(&self, hash: u64) -> bool {
        self.recent.borrow().contains(hash)
    }

    /// Have this root context tick within a millisecond: responses wait to be read
    /// (`http::read_later`). Called from its HTTP contexts, whose timer is their root's.
    pub fn tick_soon(&self) {
        self.set_tick_period(1);
    }

    fn set_tick_period(&self, ms: u64) {
        if self.tick_period_ms.get() != ms
            && hostcalls::set_tick_period(Duration::from_millis(ms)).is_ok()
        {
            self.tick_period_ms.set(ms);
        }
    }

    /// An observer whose deliveries no sender takes: say so, once a minute, rather than let
    /// `pending` grow in silence.
    pub fn warn_no_sender(&self, now_ms: u64) {
        if self.no_sender_warned.due(now_ms) {
            log::warn!(
                "role \"{}\": no sender has registered the \"{QUEUE}\" queue under this vm_id; deliveries wait in the ledger. Run the bootstrap singleton sender with the same vm_id (README, deploy step 7) or use role \"both\"",
                self.config.role
            );
        }
    }

    /// A stream on a watched route ended without Envoy's log callback, which is where this
    /// module learns the request's path: nothing it copied can be read. Envoy does this on
    /// HTTP/3 listeners (it logs a QUIC stream only once the client acknowledged the last
    /// bytes, after the filter's context is gone), so say which module to deploy there.
    pub fn warn_unlogged(&self, now_ms: u64) {
        self.metrics.add(Metric::StreamsUnlogged, 1);
        if self.unlogged_warned.due(now_ms) {
            log::warn!(
                "a watched stream ended without Envoy's log callback, so the filter could not read it (an HTTP/3 listener?). On HTTP/3 listeners run osmox-webhook-filter-http3.wasm (README, Limits); such streams count in streams_unlogged"
            );
        }
    }

    fn queue(&self) -> Option<u32> {
        if self.queue.get().is_none() {
            if let Some(vm_id) = plugin_vm_id() {
                self.queue.set(
                    hostcalls::resolve_shared_queue(&vm_id, QUEUE)
                        .ok()
                        .flatten(),
                );
            }
        }
        self.queue.get()
    }

    /// Every endpoint deliveries may go to; rebuilt only when the learned map changed.
    pub fn endpoints(&self) -> Rc<Vec<Endpoint>> {
        let (all, rebuilt) = self
            .endpoints
            .borrow_mut()
            .current(&SharedData, &self.config);
        if rebuilt {
            for key in Sender::keys(&all) {
                ensure(&key, b"{}");
            }
        }
        all
    }
}

/// A random id for this VM's sender: root contexts of different VMs share context ids.
/// Drawn from the host's random source, with the maps' seed, which every root context of
/// this VM stirred its own draw into.
fn sender_id(context_id: u32) -> u32 {
    use std::hash::BuildHasher;
    let h = hashing::mix(Seeded::default().hash_one(context_id), entropy());
    // Truncation is fine: any 32 bits of the hash.
    #[allow(clippy::cast_possible_truncation)]
    let id = h as u32;
    id
}

thread_local! {
    /// Drawn once per VM instance, which outlives its root contexts.
    static VM_TAG: Cell<Option<u32>> = const { Cell::new(None) };
}

/// This VM's tag: names its own delivery queue and its entry among the live senders.
fn vm_tag(context_id: u32) -> u32 {
    VM_TAG.with(|t| {
        let tag = t.get().unwrap_or_else(|| sender_id(context_id));
        t.set(Some(tag));
        tag
    })
}

/// A sending VM's own delivery queue. The name stays the same when a configuration update
/// gives the VM a new root context, so re-registering points the queue (and any items on
/// it) at the new one: Envoy keeps registered queues as long as the vm_id lives, and a fresh
/// name per root context would leave one behind per update.
fn queue_name(tag: u32) -> String {
    format!("{QUEUE}/{tag:08x}")
}

/// Point this VM's delivery queue (and its wake-ups) at the root context `context_id`.
fn register_queue(context_id: u32, role: Role) -> Option<u32> {
    match role {
        Role::Sender => hostcalls::register_shared_queue(QUEUE),
        _ => hostcalls::register_shared_queue(&queue_name(vm_tag(context_id))),
    }
    .ok()
}

/// `context_id` became current among this VM's senders: wake-ups go to it from now on.
fn take_queue(context_id: u32, shared: &Shared) {
    if let Some(queue) = register_queue(context_id, shared.config.role) {
        shared.queue.set(Some(queue));
    }
}

/// The stream's downstream connection: Envoy numbers them in the order it accepts them.
fn connection_id() -> Option<u64> {
    let bytes = hostcalls::get_property(vec!["connection", "id"]).ok()??;
    Some(u64::from_le_bytes(bytes.as_slice().try_into().ok()?))
}

/// The `vm_id` that names this filter's shared data and queues. A configuration without one
/// has the empty `vm_id`: Envoy then hands back no bytes, which the SDK reads as no value,
/// and taking that for "unknown" left observers unable to find a singleton sender's queue
/// registered under the same empty `vm_id` (and every VM sending without peers).
fn plugin_vm_id() -> Option<String> {
    match hostcalls::get_property(vec!["plugin_vm_id"]) {
        Ok(Some(b)) => String::from_utf8(b).ok(),
        Ok(None) => Some(String::new()),
        Err(_) => None,
    }
}

/// The host's clock since 1970; `None` if the host has none to give.
fn since_epoch() -> Option<Duration> {
    hostcalls::get_current_time()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
}

/// Entropy for ids and hash seeds: WASI's `random_get`, which Envoy answers from
/// BoringSSL's `RAND_bytes`, so no one outside can tell a VM's seed from when it started
/// (std's random source would do the same but bring WASI's error names and formatting,
/// 13 KB of module). The host's clock in nanoseconds where it refuses.
fn entropy() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        log::warn!(
            "no random source (WASI random_get refused): ids and hash seeds come from the clock"
        );
        // Truncation is fine: the low bits of the clock are the ones that differ.
        since_epoch().map_or(0, |d| d.as_nanos() as u64)
    })
}

pub fn now_ms() -> u64 {
    since_epoch().map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub struct Root {
    context_id: u32,
    shared: Option<Rc<Shared>>,
    sender: Option<Sender>,
    /// When this VM next says it is alive to the other senders (every VM sending only).
    beat_at_ms: Option<u64>,
    /// Whether it said that, as a sender only, its HTTP contexts watch nothing.
    warned_inert: Cell<bool>,
    /// A singleton sender's check that the observers deliver by its configuration: when it
    /// next looks, and what it warned about.
    drift_check_at_ms: u64,
    drift: DriftWatch,
    /// When the tick's own work is next due; ticks before then only read what waits.
    regular_tick_at_ms: u64,
}

/// Where observers publish their configuration's `delivery_fingerprint`.
const OBSERVED_CONFIG_KEY: &str = crate::shared_name!("config/observed");
/// How often a singleton sender compares it with its own.
const DRIFT_CHECK_MS: u64 = 5_000;

struct Net;

/// An HTTP context that does nothing.
struct Inert;

impl Context for Inert {}

impl HttpContext for Inert {}

impl Dispatch for Net {
    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, String> {
        hostcalls::dispatch_http_call(
            cluster,
            headers.to_vec(),
            Some(body),
            vec![],
            Duration::from_millis(timeout_ms),
        )
        .map_err(|status| format!("{status:?}"))
    }
}

impl Root {
    /// A bootstrap singleton sender keeps the configuration Envoy started with: an LDS
    /// update reaches only the observers. Say so when theirs delivers differently.
    fn check_drift(&mut self, now: u64) {
        let Some(shared) = self.shared.as_ref() else {
            return;
        };
        if shared.config.role != Role::Sender
            || !tick::every_due(self.drift_check_at_ms, now, DRIFT_CHECK_MS)
        {
            return;
        }
        self.drift_check_at_ms = now.saturating_add(DRIFT_CHECK_MS);
        let theirs = hostcalls::get_shared_data(OBSERVED_CONFIG_KEY)
            .ok()
            .and_then(|(value, _)| value)
            .and_then(|v| Config::read_published_fingerprint(&v));
        if !self
            .drift
            .warns(shared.config.delivery_fingerprint(), theirs)
        {
            return;
        }
        log::warn!(
            "#{} the observers' configuration delivers differently from this singleton sender's (endpoints, their URLs, headers, policies or keys, the dead letter, or learning): an LDS update does not reach a bootstrap extension, so deliveries go by the configuration Envoy started with, and those for endpoints it lacks are dropped. Put the same configuration in the bootstrap and restart Envoy",
            self.context_id
        );
    }

    pub fn new(context_id: u32) -> Self {
        // Before this context makes any map: theirs are seeded from it.
        hashing::reseed(entropy() ^ u64::from(context_id));
        Root {
            context_id,
            shared: None,
            sender: None,
            beat_at_ms: None,
            warned_inert: Cell::new(false),
            drift_check_at_ms: 0,
            drift: DriftWatch::default(),
            regular_tick_at_ms: 0,
        }
    }

    /// Envoy is replacing this root context and waits for its replies (`on_done`).
    fn closing(&self) -> bool {
        self.sender.as_ref().is_some_and(Sender::is_closing)
    }

    fn flush_metrics(&self) {
        if let Some(shared) = &self.shared {
            shared.metrics.flush();
        }
    }

    /// Say this VM is alive, and take the live senders' queues for the rotation.
    fn beat(&mut self, now: u64) {
        let (Some(at), Some(shared)) = (self.beat_at_ms, &self.shared) else {
            return;
        };
        if !tick::every_due(at, now, peers::BEAT_MS) {
            return;
        }
        self.beat_at_ms = Some(now.saturating_add(peers::BEAT_MS));
        let (Ok(tags), Some(vm_id)) = (
            peers::beat(
                &SharedData,
                vm_tag(self.context_id),
                now,
                shared.config.tick_ms,
            ),
            plugin_vm_id(),
        ) else {
            return;
        };
        let queues: Vec<u32> = tags
            .into_iter()
            .filter_map(|tag| {
                hostcalls::resolve_shared_queue(&vm_id, &queue_name(tag))
                    .ok()
                    .flatten()
            })
            .collect();
        if let Some(rotation) = shared.rotation.borrow_mut().as_mut() {
            rotation.set_peers(queues);
        }
    }

    /// Take one item off the delivery queue and send what it wakes, at most
    /// `SLOTS_PER_WAKE`; the rest goes back on the queue as a new item.
    fn wake_from(&mut self, queue_id: u32) {
        let Ok(Some(item)) = hostcalls::dequeue_shared_queue(queue_id) else {
            return;
        };
        let (slots, later) = wake::take(&item, SLOTS_PER_WAKE);
        if !later.is_empty() {
            let _ = hostcalls::enqueue_shared_queue(queue_id, Some(later));
        }
        self.wake_slots(slots);
    }

    /// Send what `slots` hold (those for endpoints only another configuration in this VM has
    /// are passed on to it by `with_sender`).
    fn wake_slots(&mut self, slots: Vec<u32>) {
        self.with_sender(|sender, config, endpoints, io| {
            for slot in slots {
                sender.wake(config, endpoints, io, slot);
            }
        });
    }

    fn with_sender(&mut self, f: impl FnOnce(&mut Sender, &Config, &[Endpoint], &mut Io)) {
        let (Some(shared), Some(sender)) = (&self.shared, &mut self.sender) else {
            return;
        };
        let handed_over = match succession::standing(self.context_id) {
            Standing::Superseded(names) => names,
            Standing::InForce => {
                if succession::claims_queue(self.context_id) {
                    take_queue(self.context_id, shared);
                }
                Vec::new()
            }
            // Closing: it sends nothing more, and must not take the queue as it goes.
            Standing::NotListed => Vec::new(),
        };
        sender.hand_over(handed_over);
        let endpoints = shared.endpoints();
        let mut net = Net;
        let mut io = Io {
            store: &SharedData,
            metrics: &shared.metrics,
            net: &mut net,
            now_ms: now_ms(),
        };
        f(sender, &shared.config, &endpoints, &mut io);
        shared.backlogged.set(sender.backlogged());
        for (slot, endpoint) in sender.take_handed() {
            succession::forward(self.context_id, slot, &endpoint);
        }
    }
}

/// Format log lines only when Envoy would print them: at `Trace`, every `debug!` on the
/// delivery path would be formatted and handed to the host just to be dropped there.
pub fn follow_log_level() {
    if let Ok(level) = hostcalls::get_log_level() {
        proxy_wasm::set_log_level(level);
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        succession::leave(self.context_id);
    }
}

impl Context for Root {
    /// Envoy is replacing this root context (a configuration update). It would cancel the
    /// callouts with it, and receivers that already took those webhooks would get them again
    /// once the claims lapsed; so it waits, at our word, until the replies are in (`done()`).
    fn on_done(&mut self) -> bool {
        // Large bodies waiting for a tick (`read_later`): the last streams of a drained
        // listener may have left some just before this context's end, with no tick to come.
        read_later();
        succession::leave(self.context_id);
        // Closing gives up (and counts) the reports waiting for another try, in flight or not.
        self.with_sender(|sender, _, _, io| sender.close(io));
        self.flush_metrics();
        let owed = self.sender.as_ref().map_or(0, Sender::in_flight);
        if owed == 0 {
            return true;
        }
        log::info!(
            "#{} configuration replaced: awaiting {owed} replies before closing",
            self.context_id
        );
        false
    }

    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        // A reset with no response has no headers; reading `:status` then would panic.
        let mut response = AttemptResponse {
            num_headers,
            ..AttemptResponse::default()
        };
        if num_headers > 0 {
            // Values as bytes: a receiver may answer with any byte in a header value, and
            // the SDK's text reading would panic on it and kill the sender's VM.
            if let Ok(headers) = hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders) {
                for (name, value) in headers {
                    match name.as_str() {
                        ":status" => {
                            response.status = std::str::from_utf8(&value)
                                .ok()
                                .and_then(|s| s.parse().ok());
                        }
                        "retry-after" => {
                            // Not UTF-8 is no delay we could read: as if absent.
                            response.retry_after = String::from_utf8(value).ok();
                        }
                        _ => {}
                    }
                }
            }
            // Envoy's own replies for an endpoint it did not reach, or whose answer it could
            // not read or wait for, are short 408s, 502s, 503s and 504s.
            if let Some(status) = response.status.filter(|&s| may_be_envoy_local_reply(s)) {
                if body_size <= LOCAL_REPLY_MAX_BYTES {
                    let body =
                        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                            .ok()
                            .flatten()
                            .unwrap_or_default();
                    response.local_failure = envoy_local_reply(status, &body);
                }
            }
        }
        self.with_sender(|sender, config, endpoints, io| {
            sender.on_response(config, endpoints, io, token, &response);
        });
        if self.sender.as_ref().is_some_and(Sender::drained) {
            self.flush_metrics();
            if let Err(e) = hostcalls::done() {
                log::warn!("#{} closing: Envoy refused done(): {e:?}", self.context_id);
            }
        }
    }
}

/// Create every ledger and dedupe-memory key before traffic (shared data can only CAS keys
/// that exist), unless the marker says an earlier VM under this `vm_id` did.
fn lay_out(max_pending: u32, memory: &Memory, context_id: u32) {
    let ledger = Ledger::new(max_pending);
    let needed = LaidOut::needed(ledger.slots(), memory.buckets());
    let done = LaidOut::decode(
        hostcalls::get_shared_data(layout::KEY)
            .ok()
            .and_then(|(value, _)| value)
            .as_deref(),
    );
    if done.covers(needed) {
        return;
    }
    for (key, value) in ledger.keys() {
        ensure(&key, value);
    }
    for key in memory.keys() {
        ensure(&key, b"");
    }
    for key in persisted::keys() {
        ensure(&key, b"[]");
    }
    let marker = done.union(needed).encode();
    if hostcalls::set_shared_data(layout::KEY, Some(&marker), None).is_err() {
        log::warn!(
            "#{context_id} could not record the shared-data layout; later VMs check every key"
        );
    }
    log::info!(
        "#{context_id} laid out {} ledger slots and {} memory buckets in shared data",
        needed.slots,
        needed.buckets
    );
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        follow_log_level();
        let raw = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        // Tells loads of one configuration (a VM rebuilt after a crash) from an update.
        let source = crate::events::fnv1a64(&[&raw]);
        let env = |name: &str| std::env::var(name).ok();
        let config = match Config::from_json(&raw, &env) {
            Ok(c) => c,
            Err(e) => {
                log::error!(
                    "#{} osmox-webhook-filter: configuration rejected: {e}",
                    self.context_id
                );
                return false;
            }
        };
        let memory = Memory::settle(&SharedData, config.limits.max_remembered);
        if memory.capacity() != Memory::new(config.limits.max_remembered).capacity() {
            log::warn!(
                "#{} limits.maxRemembered {} takes effect when Envoy restarts (or under a new vm_id): the dedupe memory keeps the layout it was created with ({} notifications), so that nothing is delivered again",
                self.context_id,
                config.limits.max_remembered,
                memory.capacity(),
            );
        }
        lay_out(config.limits.max_pending, &memory, self.context_id);
        // Every role records its ledger's size, an observer's too: the senders sweep as far
        // as the largest, a bootstrap singleton (which no update reaches) as well.
        let ledger = Ledger::new(config.limits.max_pending).sweeping_high_water(&SharedData);
        for key in Sender::keys(&config.endpoints) {
            ensure(&key, b"{}");
        }
        if config.learn.is_some() {
            ensure(Registry::key(), b"");
        }
        ensure(PEERS_KEY, b"");
        // Senders' first beats race to write it: a CAS needs the key to exist.
        ensure(live_endpoints::KEY, b"");
        if config.role == Role::Observer {
            let print = config.published_fingerprint();
            let _ = hostcalls::set_shared_data(OBSERVED_CONFIG_KEY, Some(print.as_bytes()), None);
        }
        // Every VM ticks: metrics are handed to Envoy on the tick, even where nothing is sent.
        if hostcalls::set_tick_period(Duration::from_millis(config.tick_ms)).is_err() {
            log::error!("#{} could not set the tick period", self.context_id);
            return false;
        }
        let mut queue = None;
        let mut rotation = None;
        if config.role.sends() {
            queue = register_queue(self.context_id, config.role);
            if config.role == Role::Both {
                rotation = queue.map(Rotation::new);
                self.beat_at_ms = Some(0);
            }
            let mut sender = Sender::new(sender_id(self.context_id), ledger, SCAN_PER_TICK);
            sender.announce(&SharedData, &config, source, now_ms());
            self.sender = Some(sender);
        }
        log::info!(
            "#{} osmox-webhook-filter {} configured as {}: {} endpoints, {} pending deliveries max, {} notifications remembered",
            self.context_id,
            env!("CARGO_PKG_VERSION"),
            config.role,
            config.endpoints.len(),
            config.limits.max_pending,
            memory.capacity(),
        );
        // Whether each endpoint signs, and its cluster: an operator should not have to infer
        // either from the receivers' side (and a cluster Envoy lacks shows only at send).
        for e in &config.endpoints {
            let signing = match e.secrets.len() {
                0 => "unsigned (no secret)".to_string(),
                keys => format!("signed with {keys} key(s)"),
            };
            // Envoy's cluster alone decides whether the connection is TLS: a review sent an
            // `https` URL's webhook in cleartext through a plain cluster.
            let tls = if e.target.scheme == "https" {
                " (https: encrypted only if that cluster has a TLS transport_socket)"
            } else {
                ""
            };
            log::info!(
                "#{} endpoint {}: {signing}, via cluster {}{tls}",
                self.context_id,
                e.name,
                e.target.cluster
            );
        }
        // The other clusters the filter sends to: a typo there shows otherwise only as failed
        // reports (after their 21 minutes of tries) or learned endpoints that never get a POST.
        if let Some(dl) = &config.dead_letter {
            let cluster = &dl.target.cluster;
            log::info!(
                "#{} dead-letter reports via cluster {cluster}",
                self.context_id
            );
        }
        if let Some(learn) = &config.learn {
            let cluster = &learn.cluster;
            log::info!(
                "#{} learned endpoints via cluster {cluster}",
                self.context_id
            );
        }
        let tick_period_ms = Cell::new(config.tick_ms);
        let metrics = EnvoyMetrics::define(&config.endpoints);
        let shared = Rc::new(Shared {
            endpoints: RefCell::new(AllEndpoints::new(config.endpoints.clone())),
            config,
            memory,
            metrics,
            queue: Cell::new(queue),
            rotation: RefCell::new(rotation),
            backlogged: Cell::new(false),
            tick_period_ms,
            recent: RefCell::new(RecentResponses::new(RECENT_RESPONSES)),
            pages: RefCell::new(PageMemory::new()),
            known: RefCell::new(KnownEvents::new(KNOWN_EVENTS)),
            requests: RefCell::new(KnownRequests::new(KNOWN_REQUESTS)),
            no_sender_warned: EveryMinute::default(),
            unlogged_warned: EveryMinute::default(),
        });
        if self.sender.is_some() {
            succession::join(self.context_id, &shared, source, now_ms());
        }
        self.shared = Some(shared);
        true
    }

    fn on_tick(&mut self) {
        read_later();
        if let Some(shared) = &self.shared {
            match tick::plan(now_ms(), self.regular_tick_at_ms, shared.config.tick_ms) {
                Tick::Early { next_in_ms } => {
                    // For those reads alone: the next tick comes when the regular one is due.
                    shared.set_tick_period(next_in_ms);
                    shared.metrics.flush();
                    return;
                }
                Tick::Regular { next_at_ms } => {
                    self.regular_tick_at_ms = next_at_ms;
                    shared.set_tick_period(shared.config.tick_ms);
                }
            }
        }
        // A closing root context only awaits its replies (the senders that stay sweep), and
        // still hands on the metrics of streams the old listener drains.
        if !self.closing() {
            follow_log_level();
            self.beat(now_ms());
            self.check_drift(now_ms());
            if self.sender.is_some() {
                succession::follow_shared();
                let handed = succession::take_inbox(self.context_id);
                if !handed.is_empty() {
                    self.wake_slots(handed);
                }
            }
            self.with_sender(|sender, config, endpoints, io| sender.tick(config, endpoints, io));
        }
        // An item whose wake-up never came (its VM was replaced) waits for the next one;
        // take it here instead. What its slots hold is swept from the ledger anyway.
        // (Only a sending VM: `queue()` looks the queue up by hostcalls until it exists.)
        let queue = self
            .sender
            .as_ref()
            .filter(|s| !s.is_closing() && succession::is_in_force(self.context_id))
            .and(self.shared.as_ref())
            .and_then(|s| s.queue());
        if let Some(queue) = queue {
            self.wake_from(queue);
        }
        self.flush_metrics();
    }

    /// Envoy calls this once per item enqueued, so taking one item per call leaves the
    /// worker's event loop free between items.
    fn on_queue_ready(&mut self, queue_id: u32) {
        if !self.closing() {
            self.wake_from(queue_id);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Returning None would make the SDK panic: a VM that must not watch gets an inert
        // context instead.
        match &self.shared {
            Some(shared) if shared.config.role.observes() => {
                if shared.config.role.sends() {
                    succession::saw_connection(self.context_id, connection_id);
                    // Before the stream can queue a wake-up: the root context that had the
                    // queue may be gone.
                    if succession::claims_queue(self.context_id) {
                        take_queue(self.context_id, shared);
                    }
                }
                Some(Box::new(Watch::new(context_id, shared.clone())))
            }
            Some(_) => {
                if !self.warned_inert.replace(true) {
                    log::warn!(
                        "#{} role \"sender\" on an HTTP filter watches nothing: it belongs to the bootstrap singleton; give the HTTP filter role \"observer\" (or \"both\")",
                        self.context_id
                    );
                }
                Some(Box::new(Inert))
            }
            None => Some(Box::new(Inert)),
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
