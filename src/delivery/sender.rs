//! Sends what the ledger holds: claims a due slot, asks the endpoint's breaker for a lease,
//! POSTs, and on the reply records the attempt and schedules the next one or finishes.
//!
//! One `Sender` lives in each root context. Every step that others might race (claiming a
//! slot, taking an endpoint lease) is a CAS, so any number of senders sweep one ledger with
//! exactly one attempt per delivery on the wire.

use crate::hashing::HashMap;

use crate::config::{Config, Endpoint, Target, MAX_AWAIT_RESULT_MS, MAX_TIMEOUT_MS};
use crate::delivery::breaker::{
    self, Admit, BreakerPolicy, EndpointState, RatePolicy, FURTHEST_LEASE_MS,
};
use crate::delivery::due::Due;
use crate::delivery::held::Held;
use crate::delivery::ledger::{AttemptRecord, Ledger, Record, Slot, State};
use crate::delivery::live_endpoints::{self, LiveEndpoints};
use crate::delivery::outcome::{self, AttemptResponse, Failure, Outcome};
use crate::delivery::reports::{Report, Reports};
use crate::delivery::retry;
use crate::events::{endpoint_key, fnv1a64, EndpointKey};
use crate::json::Value;
use crate::metrics::{Metric, Metrics};
use crate::payload::Payload;
use crate::signing;
use crate::store::{self, Store};

/// A claim outlives the request timeout by this much before another sender may take over.
const LEASE_MARGIN_MS: u64 = 10_000;
/// How long a delivery refused by a full endpoint waits before it is tried again.
const FULL_HOLD_MS: u64 = 200;
/// How much further ahead than its policies allow a waiting delivery may be due before it is
/// taken as set before the clock stepped back: a rate limit's next token (up to a second)
/// and a second of how much older one VM's `now` is than another's (`furthest_wait_ms`).
const STEPPED_SLACK_MS: u64 = 2_000;
/// Held deliveries sent per tick at most.
const HELD_PER_TICK: usize = 32;
/// Entries a retry of held deliveries may read per send it asks for: held entries go stale
/// when another sender delivers them, and a sender with nothing on the wire gets no replies
/// to go on, so skipping stale ones must not use up its turn; this bounds the reads.
const HELD_READS_PER_SEND: usize = 16;
/// Entries of `due` read per tick at most (deliveries come due move to `held`), so that a
/// whole ledger coming due at once (an open breaker closing) costs a bounded tick; replies
/// draw from `held`.
const RELEASE_PER_TICK: usize = 4096;
/// A sender whose sweeps found nothing for a whole ledger's worth of windows sweeps one
/// window every this many ticks: an idle ledger would otherwise cost every VM a read per
/// slot of a window, every tick. New work wakes senders through the queue, and a sender
/// that schedules a retry sweeps at full speed until it is due, so what the slow sweep
/// finds late is only work no live sender knows of (a retry whose VM is gone).
const IDLE_EVERY: u32 = 10;
/// Places taken beyond the asking attempt stay usable this long past its lease.
const SPARE_MARGIN_MS: u64 = 5_000;
// The breaker's bound on leases is the longest one this sender sets (`breaker_policy`).
const _: () = assert!(FURTHEST_LEASE_MS == MAX_TIMEOUT_MS + LEASE_MARGIN_MS + SPARE_MARGIN_MS);

/// What one round of retrying held deliveries may spend: sends, and ledger reads (held
/// entries go stale when another sender delivers them; skipping those must not use up the
/// turn, and must not read without bound either).
struct Budget {
    sends: usize,
    reads: usize,
}

impl Budget {
    fn sends(n: usize) -> Self {
        Budget {
            sends: n,
            reads: n.saturating_mul(HELD_READS_PER_SEND),
        }
    }

    fn spent(&self) -> bool {
        self.sends == 0 || self.reads == 0
    }
}

/// Places an endpoint's breaker record gave this sender beyond the attempts that asked.
/// While the breaker is clean, a sender takes places in blocks and reuses them as replies
/// come back, so a webhook costs no shared-data round trip on the breaker record; the
/// bound still holds, since spare places count as in flight. What it gives up: another
/// VM's failures are seen (and this sender's successes stop resetting them) only when
/// its spares run out, at most a block of sends later.
#[derive(Debug, Default)]
struct Spare {
    count: u32,
    /// The breaker record's deadline for this sender's places.
    until_ms: u64,
    /// The record was closed without failures when the places were taken.
    clean: bool,
    /// A spare was taken or returned since the last tick.
    used: bool,
}

/// Places asked for at once: an eighth of the bound, so VMs share it fairly.
fn block(e: &Endpoint) -> u32 {
    (e.max_in_flight / 8).clamp(1, 16)
}

/// The network, as the sender needs it.
pub trait Dispatch {
    /// Start a request through `cluster`; its reply comes back with the returned token.
    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, String>;
}

/// What the sender acts through, gathered by the host for one callback.
pub struct Io<'a> {
    pub store: &'a dyn Store,
    pub metrics: &'a dyn Metrics,
    pub net: &'a mut dyn Dispatch,
    pub now_ms: u64,
}

#[derive(Debug, Clone)]
enum Call {
    Webhook {
        slot: u32,
        endpoint: String,
        webhook_id: String,
        started_ms: u64,
        claim: Claim,
    },
    /// A dead-letter report, kept to try again if this try fails.
    DeadLetter(Report),
}

/// Which claim of a delivery an attempt went out under. A reply can come after another
/// sender found the claim lapsed (its VM stalled, or the wall clock jumped forward past the
/// lease), counted the attempt lost and sent the retry, which shows the same `webhook_id` on
/// the wire: the late reply must not end that retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Claim {
    /// The attempts made before this one; finishing a lapsed claim counts one more.
    attempts: u32,
    /// When the claim lapses, as it set it; only `bound_claim` moves that, after the wall
    /// clock stepped back.
    lapses_ms: u64,
}

impl Claim {
    fn of(s: &Slot) -> Self {
        Claim {
            attempts: s.attempts,
            lapses_ms: s.at_ms,
        }
    }

    /// Whether the on-the-wire slot `s` (of this attempt's `webhook_id`) is still this claim.
    fn shown_by(&self, s: &Slot) -> bool {
        s.attempts == self.attempts || s.at_ms == self.lapses_ms
    }
}

/// One attempt's result, as `finish` records it.
struct Attempt<'a> {
    slot: u32,
    webhook_id: &'a str,
    claim: Claim,
    outcome: Outcome,
    retry_after_ms: Option<u64>,
    duration_ms: u64,
}

impl<'a> Attempt<'a> {
    /// An attempt that got no reply: never dispatched, or its sender is gone.
    fn lost(slot: u32, webhook_id: &'a str, claim: Claim, why: Failure) -> Self {
        Attempt {
            slot,
            webhook_id,
            claim,
            outcome: Outcome::Retry(why),
            retry_after_ms: None,
            duration_ms: 0,
        }
    }
}

/// What `try_send` did with a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tried {
    /// Claimed and dispatched (or failed to dispatch, and that attempt is recorded).
    Sent,
    /// Claimed, then refused a place: held or scheduled again.
    Refused,
    /// Claimed and ended without an attempt: its circuit held it past its retry window.
    Ended,
    /// Not claimed: free, not due, on the wire, unreadable, or this sender is closing
    /// (`occupied` unless free).
    Skipped { occupied: bool },
}

impl Tried {
    /// Whether the slot holds a delivery (or could not be read).
    fn occupied(self) -> bool {
        !matches!(self, Tried::Skipped { occupied: false })
    }
}

/// Why a claimed delivery goes back unsent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// No free in-flight place: the endpoint answers, slowly. Not counted against its window.
    Places,
    /// Half-open, and the probe is out.
    Probe,
    /// The circuit is open: the endpoint fails.
    Circuit,
    /// The receiver asked for a pause (`Retry-After`) until then. Not counted against the
    /// window, up to `credit_cap_ms` of pauses in all.
    Pause { credit_cap_ms: u64 },
    /// Ending it would send one dead-letter report too many at once.
    Reports,
    /// The endpoint's rate limit allows no attempt yet. Not counted against its window: the
    /// endpoint is not failing, and a backlog drains at the configured rate.
    Rate,
}

/// What an attempt's outcome did to its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Retrying,
    Ended(End),
}

/// How a delivery left the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Delivered {
        after_retry: bool,
    },
    Exhausted,
    Gone,
    Superseded,
    /// Past its retry window: held that long by an open circuit, or its next attempt would
    /// come after it.
    Expired,
    /// Its endpoint left this sender's configuration while its attempt was on the wire (a
    /// learned registration removed): nothing is left to try it again by.
    Orphaned,
}

pub struct Sender {
    /// Names this sender's places in the endpoints' in-flight counts.
    id: u32,
    ledger: Ledger,
    calls: HashMap<u32, Call>,
    /// Deliveries waiting for a free place, per endpoint (by `endpoint_key`): a reply frees
    /// a place at its own endpoint, so it draws from that endpoint's queue. One queue for all
    /// let a slow or failing endpoint's deliveries, refused at the head, take every freed
    /// place's turn: a healthy endpoint's burst of 500 then took 28 s instead of 0.6 s.
    held: HashMap<EndpointKey, Held>,
    /// Which endpoint's held deliveries a tick retries first, in turn.
    held_turn: usize,
    /// Slots this sender set to come due later (a retry, an open breaker): at the due time
    /// they join `held`, so a backlog goes out as fast as replies free places instead of as
    /// fast as the sweep finds it. The sweep still finds what this misses.
    due: Due,
    scan_per_tick: u32,
    /// Sweep every tick until then at least: a retry this sender scheduled is due.
    busy_until_ms: u64,
    /// Windows swept in a row that held no delivery.
    empty_windows: u32,
    /// Ticks an idle sender still skips before its next window.
    idle_skip: u32,
    /// Per endpoint name.
    spares: HashMap<String, Spare>,
    /// Rate-limited endpoints whose bucket was empty when this sender last asked, with the
    /// time its next token is due: until then its sweep and wake-ups pass over their due
    /// deliveries (held ones are still tried, one refusal a tick), instead of claiming and
    /// giving back each one it comes across.
    throttled: Vec<(String, u64)>,
    /// Its root context is being replaced: it only awaits the replies it is owed, and leaves
    /// every new send to the senders that stay.
    closing: bool,
    /// Says which endpoints this sender's configuration has, for the senders of others.
    live: LiveEndpoints,
    /// Dead-letter reports on the wire, and those waiting to be tried again.
    reports: Reports,
    /// Endpoints a newer configuration sends for (one an update brought into this VM while
    /// this one's listener drains): this sender starts no attempt to them and leaves their
    /// deliveries, retries and lapsed claims to it, so an update's URL, headers and keys
    /// apply at once rather than once the old listener has drained.
    handed_over: Vec<String>,
    /// Deliveries this sender came across for endpoints another configuration in the VM sends
    /// for (woken here; or handed over and come due, by its timers for retries and waits it
    /// scheduled before an update, or by its sweep): the host passes them on to that one,
    /// which would otherwise find them only by its sweep.
    handed: Vec<(u32, String)>,
}

/// No live configuration has `endpoint` any more: a circuit left open on it would stay
/// counted in `circuits_open` for good, since no attempt will ever close it (a review).
fn forget_breaker(io: &mut Io, endpoint: &str) {
    forget_circuit(io.store, io.metrics, endpoint);
}

/// `forget_breaker`, for whoever ends an endpoint: of the VMs that find it tripped, the one
/// whose write resets it counts it out.
pub fn forget_circuit<S: Store + ?Sized>(store: &S, metrics: &dyn Metrics, endpoint: &str) {
    let forgot = store::update(store, &breaker::key(endpoint), |cur| {
        decode_state(cur)
            .is_tripped()
            .then(|| (EndpointState::default().encode(), ()))
    });
    if matches!(forgot, Ok(Some(()))) {
        metrics.add(Metric::CircuitsOpen, -1);
    }
}

fn breaker_policy(e: &Endpoint) -> BreakerPolicy {
    BreakerPolicy {
        failure_threshold: e.circuit.failure_threshold,
        open_ms: e.circuit.open_ms,
        max_in_flight: e.max_in_flight,
        target: fnv1a64(&[e.target.cluster.as_bytes(), url(&e.target).as_bytes()]),
        rate: e.rate_limit.map(|r| RatePolicy::new(r.per_second, r.burst)),
        max_pause_ms: e.retry.max_delay_ms(),
        lease_ms: lease_until(0, e).saturating_add(SPARE_MARGIN_MS),
    }
}

/// Whether a sender was told (`throttled`) that `endpoint`'s bucket has no token until later.
fn waits_for_rate(throttled: &[(String, u64)], endpoint: &str, now_ms: u64) -> bool {
    throttled
        .iter()
        .any(|(e, until)| e == endpoint && now_ms < *until)
}

/// Whether a sender may keep places for later sends without asking the record: not under a
/// rate limit, whose tokens only the record hands out, one per attempt.
fn keeps_spares(e: &Endpoint) -> bool {
    e.rate_limit.is_none()
}

fn url(t: &Target) -> String {
    format!("{}://{}{}", t.scheme, t.authority, t.path)
}

impl Sender {
    /// `id` should be unique among the senders sharing a store (random is fine); `ledger` is
    /// `Ledger::new(limits.maxPending)`, possibly sweeping a larger high-water mark.
    pub fn new(id: u32, ledger: Ledger, scan_per_tick: u32) -> Self {
        Sender {
            id,
            ledger,
            calls: HashMap::default(),
            held: HashMap::default(),
            held_turn: 0,
            due: Due::default(),
            scan_per_tick,
            busy_until_ms: 0,
            empty_windows: 0,
            idle_skip: 0,
            spares: HashMap::default(),
            throttled: Vec::new(),
            closing: false,
            live: LiveEndpoints::default(),
            reports: Reports::default(),
            handed_over: Vec::new(),
            handed: Vec::new(),
        }
    }

    /// The deliveries given up for another configuration since the last call, with their
    /// endpoints.
    pub fn take_handed(&mut self) -> Vec<(u32, String)> {
        std::mem::take(&mut self.handed)
    }

    /// The endpoints a newer configuration sends for from now on (none: this one is the
    /// newest). Attempts already on the wire finish here.
    pub fn hand_over(&mut self, names: Vec<String>) {
        self.handed_over = names;
    }

    /// Say which endpoints `config` has before its traffic starts: a delivery its HTTP
    /// contexts place could otherwise be found, before this sender's first tick, by another
    /// configuration's sweep and dropped as orphaned (a review). A configuration Envoy loads
    /// and then throws away (its canary, a rejected update) only keeps deliveries until its
    /// entry goes stale (30 s, longer for a slow `tickMs`: `live_endpoints::stale_after_ms`).
    /// `source` hashes the configuration's text (`live_endpoints`).
    pub fn announce(&mut self, store: &dyn Store, config: &Config, source: u64, now_ms: u64) {
        self.live = LiveEndpoints::of_source(source);
        self.live.announce(store, config, now_ms);
    }

    /// Keys the sender needs created before traffic: one breaker record per endpoint.
    pub fn keys(endpoints: &[Endpoint]) -> impl Iterator<Item = String> + '_ {
        endpoints.iter().map(|e| breaker::key(&e.name))
    }

    pub fn in_flight(&self) -> usize {
        self.calls.len()
    }

    /// Send nothing more; what is due waits in the ledger for the other senders' sweeps,
    /// and the places this sender holds spare go back to them (now, and as replies come).
    pub fn close(&mut self, io: &mut Io) {
        self.closing = true;
        self.return_spares(io, true);
        // They live in this VM's memory, which goes with it.
        let dropped = self.reports.give_up_waiting();
        if dropped > 0 {
            io.metrics.add(Metric::DeadLettersFailed, dropped as i64);
            log::warn!("{dropped} dead-letter reports waiting to be tried again are given up with this configuration");
        }
    }

    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Closing, and no reply is owed any more.
    pub fn drained(&self) -> bool {
        self.closing && self.calls.is_empty()
    }

    /// Deliveries wait here for an in-flight place: other senders could take new ones.
    pub fn backlogged(&self) -> bool {
        self.held.values().any(|h| !h.is_empty())
    }

    /// A slot was filled or refilled: try to send it now, or when it is due.
    pub fn wake(&mut self, config: &Config, endpoints: &[Endpoint], io: &mut Io, slot: u32) {
        self.empty_windows = 0;
        if let Tried::Skipped { occupied: true } = self.try_send(config, endpoints, io, slot, false)
        {
            self.not_sent_now(endpoints, io, slot);
        }
    }

    /// A woken delivery that did not go: one placed to wait (for the result its view lacked)
    /// goes when it is due, not when a sweep next passes, which for an idle sender can be
    /// seconds later; one for an endpoint this sender does not send for is given up
    /// (`take_handed`), for the configuration in the VM that does.
    fn not_sent_now(&mut self, endpoints: &[Endpoint], io: &mut Io, slot: u32) {
        let Ok(Record::Used(s)) = self.ledger.read(io.store, slot) else {
            return;
        };
        if s.state != State::Waiting {
            return;
        }
        // A closing sender ticks no more: what it wakes goes to the configuration that stays.
        let ours = !self.closing
            && endpoints.iter().any(|e| e.name == s.endpoint)
            && !self.handed_over.contains(&s.endpoint);
        if !ours {
            // A due one for a handed-over endpoint was given up already (`not_claimed`).
            if self.handed.iter().all(|(h, _)| *h != slot) {
                self.handed.push((slot, s.endpoint));
            }
        } else if s.at_ms > io.now_ms {
            self.schedule(s.at_ms, slot, endpoint_key(&s.endpoint));
        } else if waits_for_rate(&self.throttled, &s.endpoint, io.now_ms) {
            // Passed over for its endpoint's empty bucket: it waits with the held ones.
            self.hold(slot, endpoint_key(&s.endpoint));
        }
    }

    /// Whether this sender is idle: it swept a whole ledger's worth of empty windows, holds
    /// nothing back and awaits no retry of its own.
    pub fn is_idle(&self, now_ms: u64) -> bool {
        let pass = self.ledger.swept().div_ceil(self.scan_per_tick.max(1));
        self.empty_windows >= pass && !self.backlogged() && now_ms >= self.busy_until_ms
    }

    /// Whether this tick sweeps: every tick while busy, one in `IDLE_EVERY` when idle.
    fn sweeps(&mut self, now_ms: u64) -> bool {
        if !self.is_idle(now_ms) || self.idle_skip == 0 {
            self.idle_skip = IDLE_EVERY - 1;
            return true;
        }
        self.idle_skip -= 1;
        false
    }

    /// Sweep the next window of the ledger for due retries and lapsed claims, then retry
    /// what this sender held back. The work is bounded by the window, not by the backlog.
    pub fn tick(&mut self, config: &Config, endpoints: &[Endpoint], io: &mut Io) {
        if self.closing {
            return; // a window swept without sending would pass over what waits there
        }
        for endpoint in self.live.beat(io.store, config, io.now_ms) {
            forget_breaker(io, &endpoint);
        }
        // Reports already due go before the reports of deliveries this sweep ends.
        self.retry_reports(config, io);
        if self.sweeps(io.now_ms) {
            if let Ok(window) = self.ledger.next_scan_window(io.store, self.scan_per_tick) {
                let mut occupied = false;
                for slot in window {
                    occupied |= self.try_send(config, endpoints, io, slot, false).occupied();
                }
                self.empty_windows = if occupied {
                    0
                } else {
                    self.empty_windows.saturating_add(1)
                };
            }
        }
        self.release_due(io.now_ms);
        // Replies free leases and retry held deliveries at once; this only covers leases that
        // freed elsewhere (another VM's replies, lapsed deadlines) and slots just come due.
        // One budget for all endpoints, whatever their number; each tick another one goes
        // first, so none waits behind the others for long.
        self.held.retain(|_, h| !h.is_empty());
        let mut keys: Vec<EndpointKey> = self.held.keys().copied().collect();
        crate::heapsort::sort(&mut keys);
        if !keys.is_empty() {
            let first = self.held_turn % keys.len();
            keys.rotate_left(first);
            self.held_turn = self.held_turn.wrapping_add(1);
        }
        let mut budget = Budget::sends(HELD_PER_TICK);
        for key in keys {
            if budget.spent() {
                break;
            }
            self.retry_held(config, endpoints, io, key, &mut budget);
        }
        self.return_idle_spares(io);
        self.throttled.retain(|(_, until)| io.now_ms < *until);
    }

    /// Give back spare places not used since the last tick, so other VMs may use them.
    fn return_idle_spares(&mut self, io: &mut Io) {
        self.return_spares(io, false);
    }

    /// Give back spare places: `all`, or those not used since the last tick.
    fn return_spares(&mut self, io: &mut Io, all: bool) {
        let (sender, now) = (self.id, io.now_ms);
        for (name, spare) in &mut self.spares {
            if spare.until_ms <= now {
                spare.count = 0; // lapsed in the record already
            }
            if spare.count > 0 && (all || !spare.used) {
                give_back(io, name, sender, std::mem::take(&mut spare.count));
            }
            spare.used = false;
        }
        // One lapsed holds nothing an entry made afresh would not (no place, and unusable for
        // a send or a kept reply): forgotten, so the map does not grow with every endpoint
        // this VM ever sent to (learned ones come and go).
        self.spares.retain(|_, spare| spare.until_ms > now);
    }

    /// Send deliveries held for the endpoint `key` within `budget`, stopping at the first
    /// refusal (no place is free there).
    fn retry_held(
        &mut self,
        config: &Config,
        endpoints: &[Endpoint],
        io: &mut Io,
        key: EndpointKey,
        budget: &mut Budget,
    ) {
        while !budget.spent() {
            let Some(slot) = self.held.get_mut(&key).and_then(Held::pop) else {
                break;
            };
            budget.reads -= 1;
            match self.try_send(config, endpoints, io, slot, true) {
                Tried::Sent => budget.sends -= 1,
                Tried::Refused => break,
                Tried::Ended | Tried::Skipped { .. } => {}
            }
        }
    }

    /// Move the slots that came due to the back of their endpoint's `held`.
    fn release_due(&mut self, now_ms: u64) {
        let mut reads = RELEASE_PER_TICK;
        while let Some((slot, key)) = self.due.pop(now_ms, &mut reads) {
            self.hold(slot, key);
        }
    }

    /// Remember that `slot` comes due at `at_ms` for the endpoint `key`.
    fn schedule(&mut self, at_ms: u64, slot: u32, key: EndpointKey) {
        self.due
            .schedule(at_ms, slot, key, self.ledger.swept() as usize);
    }

    /// Remember a slot to retry when a place at its endpoint frees; once, so every slot of
    /// the ledger fits (about 4 bytes each): a burst beyond the room held went out only as
    /// fast as the sweep found it (measured: 500/s instead of 4,000/s).
    fn hold(&mut self, slot: u32, key: EndpointKey) {
        self.held.entry(key).or_default().push(slot);
    }

    /// Send `slot` if it is due; `lease_freed` when a lease just came free for held ones.
    fn try_send(
        &mut self,
        config: &Config,
        endpoints: &[Endpoint],
        io: &mut Io,
        slot: u32,
        lease_freed: bool,
    ) -> Tried {
        if self.closing {
            return Tried::Skipped { occupied: true };
        }
        let now = io.now_ms;
        // Claim in one read-modify-write: only the sender whose CAS wins goes on. Anything
        // else the record shows is handled below, from what the claim saw.
        let mut seen = Record::Free;
        let handed_over = &self.handed_over;
        let throttled = &self.throttled;
        // Held deliveries (`lease_freed`) still ask: one refusal tells of the next token.
        let waits = |endpoint: &str| !lease_freed && waits_for_rate(throttled, endpoint, now);
        let claimed = self.ledger.update(io.store, slot, |rec| {
            let due = match &rec {
                Record::Used(x)
                    if x.is_sendable(now, lease_freed)
                        && !handed_over.contains(&x.endpoint)
                        && !waits(&x.endpoint) =>
                {
                    endpoints.iter().find(|e| e.name == x.endpoint)
                }
                Record::Used(x)
                    if x.state == State::Waiting
                        && !handed_over.contains(&x.endpoint)
                        && !waits(&x.endpoint) =>
                {
                    endpoints
                        .iter()
                        .find(|e| e.name == x.endpoint)
                        .filter(|e| x.at_ms > now.saturating_add(furthest_wait_ms(e)))
                }
                _ => None,
            };
            match (rec, due) {
                (Record::Used(mut x), Some(endpoint)) => {
                    // Waiting for a free place is not the endpoint failing: it widens an open
                    // window by as long.
                    if let Some(since) = x.waiting_since_ms.take() {
                        if x.window_from_ms.is_some() {
                            let waited = now.saturating_sub(since);
                            x.extended_ms = x.extended_ms.saturating_add(waited);
                        }
                    }
                    let snapshot = x.clone();
                    x.state = State::InFlight;
                    x.at_ms = lease_until(now, endpoint);
                    x.held = false;
                    Some((Record::Used(x), snapshot))
                }
                (rec, _) => {
                    seen = rec;
                    None
                }
            }
        });
        let s = match claimed {
            Ok(Some(s)) => s,
            Ok(None) => {
                let occupied = seen != Record::Free;
                self.not_claimed(config, endpoints, io, slot, seen, lease_freed);
                return Tried::Skipped { occupied };
            }
            Err(_) => return Tried::Skipped { occupied: true },
        };
        let Some(endpoint) = endpoints.iter().find(|e| e.name == s.endpoint) else {
            return Tried::Skipped { occupied: true };
        };
        let claim_lapses = lease_until(now, endpoint);
        // As the claim wrote it: the same `now` and endpoint.
        let claim = Claim {
            attempts: s.attempts,
            lapses_ms: claim_lapses,
        };
        let end = match self.admit(io, endpoint, slot, claim_lapses) {
            Admit::Granted => None,
            // Only an open circuit asks: no window arithmetic on the way of a send.
            Admit::Open { .. }
                if retry_deadline(endpoint, &s, config.tick_ms).is_some_and(|d| now >= d) =>
            {
                Some(End::Expired)
            }
            Admit::Gone => Some(End::Gone),
            refused => {
                let (until, why) = match refused {
                    Admit::Open {
                        until_ms,
                        announced: true,
                    } => {
                        // Looked at again every `openMs`, as an open circuit is: a
                        // configuration that moves the endpoint lifts the pause.
                        let until = until_ms.min(now.saturating_add(endpoint.circuit.open_ms));
                        // As long as one answer may ask to wait: a receiver that keeps
                        // asking cannot keep its deliveries, and fill the ledger.
                        let credit_cap_ms = endpoint.retry.max_delay_ms();
                        (until, Hold::Pause { credit_cap_ms })
                    }
                    Admit::Open { until_ms, .. } => (until_ms, Hold::Circuit),
                    Admit::Full => (now + FULL_HOLD_MS, Hold::Places),
                    Admit::Throttled { until_ms } => {
                        io.metrics
                            .add_for(&endpoint.name, Metric::DeliveriesRateLimited, 1);
                        self.throttled.retain(|(e, _)| *e != endpoint.name);
                        self.throttled.push((endpoint.name.clone(), until_ms));
                        (until_ms, Hold::Rate)
                    }
                    _ => (now + FULL_HOLD_MS, Hold::Probe),
                };
                if let Some((ended, promoted)) = self.unclaim(io, slot, &s.webhook_id, until, why) {
                    let end = End::Superseded;
                    self.conclude(config, endpoints, io, slot, end, &ended, promoted);
                    return Tried::Ended;
                }
                let key = endpoint_key(&endpoint.name);
                match why {
                    Hold::Circuit | Hold::Pause { .. } => self.schedule(until, slot, key),
                    _ => self.hold(slot, key),
                }
                return Tried::Refused;
            }
        };
        if let Some(end) = end {
            // Deliveries that end unsent (expired, gone) would otherwise send a report each,
            // all at once: thousands after an outage, past the dead-letter cluster's limits.
            if config.dead_letter.is_some() && !self.reports.has_room(now) {
                // Its report would join too many on the wire: end it on a later tick.
                let until = now + FULL_HOLD_MS;
                let why = Hold::Reports;
                if let Some((ended, promoted)) = self.unclaim(io, slot, &s.webhook_id, until, why) {
                    let end = End::Superseded;
                    self.conclude(config, endpoints, io, slot, end, &ended, promoted);
                    return Tried::Ended;
                }
                self.schedule(until, slot, endpoint_key(&endpoint.name));
                return Tried::Refused;
            }
            self.end_unsent(config, endpoints, io, slot, &s.webhook_id, end);
            return Tried::Ended;
        }
        let sent = send_webhook(io, endpoint, &s.webhook_id, &s.body);
        match sent {
            Ok(token) => {
                io.metrics
                    .add_for(&endpoint.name, Metric::DeliveriesSent, 1);
                io.metrics.add(Metric::InFlight, 1);
                log::debug!(
                    "{}: attempt {} sent to {}",
                    s.webhook_id,
                    s.attempts.saturating_add(1),
                    endpoint.name
                );
                self.calls.insert(
                    token,
                    Call::Webhook {
                        slot,
                        endpoint: endpoint.name.clone(),
                        webhook_id: s.webhook_id.clone(),
                        started_ms: now,
                        claim,
                    },
                );
            }
            Err(e) => {
                io.metrics.add(Metric::DispatchErrors, 1);
                log::warn!(
                    "{}: could not dispatch to cluster {}: {e}",
                    s.webhook_id,
                    endpoint.target.cluster
                );
                self.record_breaker(io, endpoint, slot, false, None);
                let attempt = Attempt::lost(slot, &s.webhook_id, claim, Failure::NotDispatched);
                // Not recorded (the store refused the write): the claim stays, and the sender
                // that finds it lapsed counts a lost attempt out of `in_flight`.
                if !self.finish(config, endpoints, io, attempt) {
                    claim_kept(io);
                }
            }
        }
        Tried::Sent
    }

    /// A slot the claim did not take: free, being filled, on the wire, not due yet, or due
    /// for an endpoint that is no longer configured.
    fn not_claimed(
        &mut self,
        config: &Config,
        endpoints: &[Endpoint],
        io: &mut Io,
        slot: u32,
        record: Record,
        lease_freed: bool,
    ) {
        let now = io.now_ms;
        let Record::Used(s) = record else {
            return;
        };
        let ours = self
            .calls
            .values()
            .any(|c| matches!(c, Call::Webhook { slot: x, .. } if *x == slot));
        let lapsed = s.state == State::InFlight && s.at_ms < now && !ours;
        if self.handed_over.contains(&s.endpoint) {
            // The newer configuration's senders try it, or end its lost attempt: told now, as
            // their sweep may not come across it while this one's takes its window each time
            // (the cursor is shared).
            if s.is_sendable(now, lease_freed) || lapsed {
                self.handed.push((slot, s.endpoint));
            }
            return;
        }
        let unknown = endpoints.iter().all(|e| e.name != s.endpoint);
        // Another live configuration (the one an update brought, while this one's old listener
        // drains) may have the endpoint: its senders send the delivery, or end its lost attempt.
        // Judged as of before a forward clock step this sender's beats found (`judged_at`).
        let judged = self.live.judged_at(now);
        if unknown && live_endpoints::kept_elsewhere(io.store, config, &s.endpoint, judged) {
            // Told, when one lives in this VM (`take_handed`): its sweep may not come across
            // it while this one's takes its window each time (the cursor is shared).
            if s.is_sendable(now, lease_freed) || lapsed {
                self.handed.push((slot, s.endpoint));
            }
            return;
        }
        if s.state == State::InFlight {
            if lapsed && unknown {
                // Its sender is gone and no configuration has the endpoint to try it again by
                // (a review found such an attempt ended as exhausted after one try).
                if self.orphan(io, slot, &s) {
                    // Its lost attempt failed, as `finish` would have counted it.
                    io.metrics.add(Metric::InFlight, -1);
                    io.metrics.add(Metric::DeliveriesFailed, 1);
                }
            } else if lapsed {
                // The sender that claimed it is gone (VM replaced or crashed): its reply will
                // never come, so count the attempt as failed and go on.
                let attempt = Attempt::lost(slot, &s.webhook_id, Claim::of(&s), Failure::Transport);
                // Its sender counted it in flight and will never count it out; of the senders
                // that come across the lapsed claim, the one that finishes it does.
                if self.finish(config, endpoints, io, attempt) {
                    log::warn!("{}: claim lapsed, retrying", s.webhook_id);
                    io.metrics.add(Metric::InFlight, -1);
                }
            } else if !ours {
                self.bound_claim(io, endpoints, slot, &s);
            }
            return;
        }
        if unknown && s.is_sendable(now, lease_freed) {
            self.orphan(io, slot, &s);
        }
    }

    /// A claim lapses no further ahead than the longest `timeoutMs` any configuration may
    /// have and `LEASE_MARGIN_MS` after it was made: one further ahead was made before the
    /// wall clock stepped back, and would keep an attempt whose sender went away from being
    /// tried again for as long as the step. It lapses as if made now; a sender still awaiting
    /// its reply (it came before the step) gets that reply before then.
    fn bound_claim(&self, io: &mut Io, endpoints: &[Endpoint], slot: u32, s: &Slot) {
        let furthest = io
            .now_ms
            .saturating_add(MAX_TIMEOUT_MS + LEASE_MARGIN_MS + STEPPED_SLACK_MS);
        if s.at_ms <= furthest {
            return;
        }
        let Some(endpoint) = endpoints.iter().find(|e| e.name == s.endpoint) else {
            return;
        };
        let lapses = lease_until(io.now_ms, endpoint);
        let _ = self.ledger.update(io.store, slot, |rec| match rec {
            Record::Used(mut x)
                if x.webhook_id == s.webhook_id
                    && x.state == State::InFlight
                    && x.at_ms == s.at_ms =>
            {
                x.at_ms = lapses;
                Some((Record::Used(x), ()))
            }
            _ => None,
        });
    }

    /// Drop a delivery whose endpoint no live configuration has, with any event queued behind
    /// its attempt; whether this sender freed it (another sender's sweep may have first).
    fn orphan(&mut self, io: &mut Io, slot: u32, s: &Slot) -> bool {
        let queued = std::cell::Cell::new(false);
        let freed = self.free_if(io, slot, |r| match r {
            Record::Used(x)
                if x.webhook_id == s.webhook_id && x.state == s.state && x.at_ms == s.at_ms =>
            {
                queued.set(x.successor.is_some());
                true
            }
            _ => false,
        });
        if !freed {
            return false;
        }
        io.metrics.add(Metric::Pending, -1);
        io.metrics
            .add(Metric::DeliveriesOrphaned, 1 + i64::from(queued.get()));
        log::warn!(
            "{}: endpoint \"{}\" is not in this sender's configuration (removed; or, with a bootstrap singleton sender, added only to the observers'); delivery dropped{}",
            s.webhook_id,
            s.endpoint,
            if queued.get() { ", with the event queued behind it" } else { "" }
        );
        forget_breaker(io, &s.endpoint);
        true
    }

    fn admit(&mut self, io: &mut Io, endpoint: &Endpoint, slot: u32, lease_until: u64) -> Admit {
        let spare = self.spares.entry(endpoint.name.clone()).or_default();
        if spare.until_ms <= io.now_ms {
            // Lapsed in the record already (as a tick would find): kept, they would join the
            // places taken below, uncounted there.
            spare.count = 0;
        }
        if spare.until_ms
            > io.now_ms
                .saturating_add(FURTHEST_LEASE_MS + STEPPED_SLACK_MS)
        {
            // Taken before the wall clock stepped back: the record holds them as if taken at
            // the step (`bound_waits`), not for as long as this sender believes; too near
            // their end for this send (below), they are given back, to be taken again with a
            // lease on this clock.
            spare.until_ms = io.now_ms;
        }
        if spare.count > 0 && spare.clean && spare.until_ms >= lease_until && keeps_spares(endpoint)
        {
            spare.count -= 1;
            spare.used = true;
            return Admit::Granted;
        }
        if spare.count > 0 {
            // Too near their end for this send's claim, yet counted in the record until
            // then: with few places they would leave none to take below.
            give_back(
                io,
                &endpoint.name,
                self.id,
                std::mem::take(&mut spare.count),
            );
        }
        let policy = breaker_policy(endpoint);
        let (sender, now, want) = (self.id, io.now_ms, block(endpoint));
        let until = lease_until.saturating_add(SPARE_MARGIN_MS);
        let mut verdict = (Admit::Full, 0, false);
        let result = store::update(io.store, &breaker::key(&endpoint.name), |cur| {
            let mut state = decode_state(cur);
            // A wait bounded here is written even when refused (by that very pause): left
            // unwritten, the next admission would bound it again from its own `now`.
            let bounded = state.bound_waits(now, &policy);
            let (admit, taken) = state.admit_up_to(sender, slot, now, until, &policy, want);
            verdict = (admit, taken, state.is_clean());
            match admit {
                Admit::Granted => Some((state.encode(), ())),
                _ if bounded => Some((state.encode(), ())),
                _ => None,
            }
        });
        match (result, verdict) {
            (Ok(_), (Admit::Granted, taken, clean)) => {
                spare.count += taken.saturating_sub(1);
                spare.until_ms = spare.until_ms.max(until);
                spare.clean = clean;
                spare.used = true;
                Admit::Granted
            }
            (Ok(_), (refused, _, _)) => refused,
            // Without the breaker record we cannot bound the endpoint: hold and try later.
            (Err(_), _) => Admit::Full,
        }
    }

    /// `retry_after_ms`: a failure's `Retry-After`, which holds the whole endpoint.
    fn record_breaker(
        &mut self,
        io: &mut Io,
        endpoint: &Endpoint,
        slot: u32,
        success: bool,
        retry_after_ms: Option<u64>,
    ) {
        let spare = self.spares.entry(endpoint.name.clone()).or_default();
        let (sender, block) = (self.id, block(endpoint));
        let usable = spare.until_ms >= lease_until(io.now_ms, endpoint);
        if success && spare.clean && usable && keeps_spares(endpoint) {
            // Keep the place for a next send that can still use it (a slow answer's cannot:
            // its claim would outlast the place); give back only what exceeds a block.
            spare.count += 1;
            spare.used = true;
            let excess = spare.count.saturating_sub(block);
            if excess > 0 {
                spare.count = block;
                give_back(io, &endpoint.name, sender, excess);
            }
            return;
        }
        let policy = breaker_policy(endpoint);
        let now = io.now_ms;
        // A verdict the record must see: give the spares back with it.
        let returned = std::mem::take(&mut spare.count);
        // Capped as a delivery's own delay is: a receiver cannot silence itself for longer.
        let quiet_ms = retry_after_ms
            .filter(|_| !success)
            .map(|ms| ms.min(endpoint.retry.max_delay_ms()));
        let change = store::update(io.store, &breaker::key(&endpoint.name), |cur| {
            let mut state = decode_state(cur);
            let (was_open, was_paused) = (state.is_tripped(), state.is_paused(now));
            state.give_back(sender, returned);
            state.record(sender, slot, success, now, &policy);
            if let Some(quiet_ms) = quiet_ms {
                state.hold_off(now, now.saturating_add(quiet_ms), &policy);
            }
            let paused = !was_paused && state.is_paused(now);
            let is_open = state.is_tripped();
            Some((
                state.encode(),
                (was_open, is_open, state.is_clean(), paused),
            ))
        });
        if let Ok(Some((was_open, is_open, clean, paused))) = change {
            spare.clean = clean;
            if let Some(ms) = quiet_ms.filter(|_| paused) {
                io.metrics
                    .add_for(&endpoint.name, Metric::EndpointPauses, 1);
                log::warn!(
                    "endpoint {}: its Retry-After asks for no webhooks for {} s; holding its deliveries",
                    endpoint.name,
                    ms.div_ceil(1000)
                );
            }
            if !was_open && is_open {
                io.metrics
                    .add_for(&endpoint.name, Metric::CircuitsOpened, 1);
                io.metrics.add(Metric::CircuitsOpen, 1);
                log::warn!(
                    "endpoint {}: circuit opened after repeated failures; holding its deliveries",
                    endpoint.name
                );
            } else if was_open && !is_open {
                io.metrics.add(Metric::CircuitsOpen, -1);
            }
        }
    }

    /// The endpoint answered 410 Gone: Standard Webhooks asks the sender to disable it. Every
    /// sender refuses it from now on, until the configuration moves it to another target.
    fn mark_gone(&mut self, io: &mut Io, endpoint: &Endpoint, slot: u32) {
        let spare = self.spares.entry(endpoint.name.clone()).or_default();
        let returned = std::mem::take(&mut spare.count);
        let (sender, now, policy) = (self.id, io.now_ms, breaker_policy(endpoint));
        let change = store::update(io.store, &breaker::key(&endpoint.name), |cur| {
            let mut state = decode_state(cur);
            let (was_open, was_gone) = (state.is_tripped(), state.is_gone(&policy));
            state.give_back(sender, returned);
            state.mark_gone(sender, slot, now, &policy);
            Some((state.encode(), (was_open, was_gone)))
        });
        spare.clean = false;
        if let Ok(Some((was_open, was_gone))) = change {
            if was_open {
                io.metrics.add(Metric::CircuitsOpen, -1);
            }
            if !was_gone {
                io.metrics.add(Metric::EndpointsGone, 1);
                log::warn!(
                    "endpoint {}: answered 410 Gone, so it gets no more webhooks at {}: its deliveries end as gone until the configuration gives it another URL or cluster (or Envoy restarts)",
                    endpoint.name,
                    url(&endpoint.target)
                );
            }
        }
    }

    /// Give a claimed slot back unsent, due at `until`, noting why. One taken back while it
    /// was claimed (`superseded`: another worker took in a later event of the notification
    /// meanwhile, `Ledger::withdraw`) never went out: it ends here, as a failed attempt of it
    /// would, rather than wait to go out after the later event. So does one that a newer
    /// event queued behind while it was claimed: it waits again, and a newer event replaces
    /// an older one that waits. Then the delivery as it ended, and whether an event queued
    /// behind it took the slot.
    #[must_use]
    fn unclaim(
        &self,
        io: &mut Io,
        slot: u32,
        webhook_id: &str,
        until: u64,
        why: Hold,
    ) -> Option<(Slot, bool)> {
        let now = io.now_ms;
        let ended_here = self.ledger.update(io.store, slot, |rec| match rec {
            Record::Used(mut x) if x.webhook_id == webhook_id && x.state == State::InFlight => {
                if x.superseded || x.successor.is_some() {
                    let (next, promoted) = ended(&mut x, now);
                    return Some((next, Some((x, promoted))));
                }
                x.state = State::Waiting;
                x.at_ms = until;
                // Sendable as soon as a place frees, before `until`.
                x.held = matches!(why, Hold::Places | Hold::Probe | Hold::Rate);
                match why {
                    Hold::Places | Hold::Rate => {
                        x.waiting_since_ms = x.waiting_since_ms.or(Some(now));
                    }
                    // The endpoint is failing: the retry window opens.
                    Hold::Circuit => x.window_from_ms = x.window_from_ms.or(Some(now)),
                    // Credited now: it is not claimed again before `until`.
                    Hold::Pause { credit_cap_ms } => {
                        x.window_from_ms = x.window_from_ms.or(Some(now));
                        let credit = until
                            .saturating_sub(now)
                            .min(credit_cap_ms.saturating_sub(x.paused_ms));
                        x.paused_ms = x.paused_ms.saturating_add(credit);
                        x.extended_ms = x.extended_ms.saturating_add(credit);
                    }
                    Hold::Probe | Hold::Reports => {}
                }
                Some((Record::Used(x), None))
            }
            _ => None,
        });
        match ended_here {
            Ok(ended) => ended.flatten(),
            Err(_) => {
                claim_kept(io);
                None
            }
        }
    }

    fn free_if(&self, io: &mut Io, slot: u32, pred: impl Fn(&Record) -> bool) -> bool {
        matches!(
            self.ledger.update(io.store, slot, |rec| pred(&rec)
                .then_some((Record::Free, ()))),
            Ok(Some(()))
        )
    }

    /// A reply to a callout this sender made.
    pub fn on_response(
        &mut self,
        config: &Config,
        endpoints: &[Endpoint],
        io: &mut Io,
        token: u32,
        response: &AttemptResponse,
    ) {
        let Some(call) = self.calls.remove(&token) else {
            return;
        };
        let outcome = outcome::classify(response);
        let (slot, endpoint, webhook_id, started_ms, claim) = match call {
            Call::Webhook {
                slot,
                endpoint,
                webhook_id,
                started_ms,
                claim,
            } => (slot, endpoint, webhook_id, started_ms, claim),
            Call::DeadLetter(report) => {
                self.reports.answered();
                if let Outcome::Retry(failure) | Outcome::GiveUp(failure) = outcome {
                    self.report_failed(io, report, &failure.to_string());
                }
                // A place came free: a report waiting for one goes now.
                self.retry_reports(config, io);
                return;
            }
        };
        let retry_after = response.status.and_then(|status| {
            outcome::retry_after_ms(status, response.retry_after.as_deref(), io.now_ms)
        });
        let duration = io.now_ms.saturating_sub(started_ms);
        io.metrics.attempt_took(&endpoint, duration);
        if let Some(e) = endpoints.iter().find(|e| e.name == endpoint) {
            if let Outcome::GiveUp(_) = outcome {
                self.mark_gone(io, e, slot);
            } else {
                self.record_breaker(io, e, slot, outcome == Outcome::Delivered, retry_after);
            }
        }
        let attempt = Attempt {
            slot,
            webhook_id: &webhook_id,
            claim,
            outcome,
            retry_after_ms: retry_after,
            duration_ms: duration,
        };
        // Counted out of `in_flight` by whoever records the attempt: here, or, when the slot
        // no longer shows it (its claim lapsed and another sender finished or orphaned it, or
        // recording failed and it will lapse) or it is left to lapse for another live
        // configuration's senders, by that sender, which counts it out too.
        if self.finish(config, endpoints, io, attempt) {
            io.metrics.add(Metric::InFlight, -1);
        }
        if self.closing {
            self.return_spares(io, true); // this sender sends nothing more
            return;
        }
        // A place at this endpoint came free: its held deliveries go now, not next tick.
        let key = endpoint_key(&endpoint);
        self.retry_held(config, endpoints, io, key, &mut Budget::sends(4));
    }

    /// Record a finished attempt and decide what follows: done, retry later, or give up.
    /// False when the slot no longer shows that attempt on the wire (another sender finished
    /// it), or when it is to be retried by another live configuration's senders, as its claim
    /// lapses.
    fn finish(&mut self, config: &Config, endpoints: &[Endpoint], io: &mut Io, a: Attempt) -> bool {
        let Attempt {
            slot,
            webhook_id,
            claim,
            ref outcome,
            retry_after_ms,
            duration_ms,
        } = a;
        let now = io.now_ms;
        let judged = self.live.judged_at(now);
        let store = io.store;
        let ledger = self.ledger;
        let label = match outcome {
            Outcome::Delivered => "delivered".to_string(),
            Outcome::Retry(f) | Outcome::GiveUp(f) => f.to_string(),
        };
        let endpoint = |name: &str| endpoints.iter().find(|e| e.name == name);
        let result = ledger.update(store, slot, |rec| {
            let Record::Used(mut s) = rec else {
                return None;
            };
            if s.webhook_id != webhook_id || s.state != State::InFlight || !claim.shown_by(&s) {
                return None;
            }
            s.attempts = s.attempts.saturating_add(1);
            s.window_from_ms = s.window_from_ms.or(Some(now.saturating_sub(duration_ms)));
            s.push_history(AttemptRecord {
                at_ms: now,
                outcome: label.clone(),
                duration_ms,
            });
            let end = match outcome {
                Outcome::Delivered => End::Delivered {
                    after_retry: s.attempts > 1,
                },
                Outcome::GiveUp(_) => End::Gone,
                Outcome::Retry(_) if s.successor.is_some() || s.superseded => End::Superseded,
                Outcome::Retry(_) if endpoint(&s.endpoint).is_none() => {
                    if live_endpoints::kept_elsewhere(store, config, &s.endpoint, judged) {
                        // Another live configuration has it: its senders retry it, by its
                        // policy, once this claim lapses (`not_claimed` hands it to them).
                        return None;
                    }
                    End::Orphaned
                }
                Outcome::Retry(_) => {
                    let seed = fnv1a64(&[s.webhook_id.as_bytes(), &s.attempts.to_le_bytes()]);
                    let next = endpoint(&s.endpoint).and_then(|e| {
                        let jitter = retry::jitter_unit(seed);
                        let delay = e.retry.next_delay_ms(s.attempts, retry_after_ms, jitter)?;
                        // What a `Retry-After` asked beyond the schedule widens the window.
                        let scheduled = e.retry.next_delay_ms(s.attempts, None, jitter)?;
                        s.extended_ms = s
                            .extended_ms
                            .saturating_add(delay.saturating_sub(scheduled));
                        Some((
                            now.saturating_add(delay),
                            retry_deadline(e, &s, config.tick_ms)?,
                        ))
                    });
                    match next {
                        Some((at_ms, deadline)) if at_ms <= deadline => {
                            s.state = State::Waiting;
                            s.at_ms = at_ms;
                            return Some((Record::Used(s.clone()), (Verdict::Retrying, s, false)));
                        }
                        // A `Retry-After`, or holds by an open circuit, put the next
                        // attempt past the window.
                        Some(_) => End::Expired,
                        None => End::Exhausted,
                    }
                }
            };
            // The delivery is over. A newer event queued behind it takes the slot.
            let (next, promoted) = ended(&mut s, now);
            Some((next, (Verdict::Ended(end), s, promoted)))
        });
        let Ok(Some((verdict, slot_after, promoted))) = result else {
            return false;
        };
        if *outcome != Outcome::Delivered {
            io.metrics
                .add_for(&slot_after.endpoint, Metric::DeliveriesFailed, 1);
        }
        match verdict {
            Verdict::Retrying => {
                if self.closing {
                    // It ticks no more: the configuration that stays in the VM times it.
                    self.handed.push((slot, slot_after.endpoint.clone()));
                } else {
                    // Sweep at full speed until the retry is due.
                    self.busy_until_ms = self.busy_until_ms.max(slot_after.at_ms);
                    let key = endpoint_key(&slot_after.endpoint);
                    self.schedule(slot_after.at_ms, slot, key);
                }
                io.metrics
                    .add_for(&slot_after.endpoint, Metric::RetriesScheduled, 1);
                // `Retry(Timeout)`: the end-to-end tests look for this line.
                log::debug!("{webhook_id}: {outcome:?}, retry at {}", slot_after.at_ms);
            }
            Verdict::Ended(end) => {
                self.conclude(config, endpoints, io, slot, end, &slot_after, promoted);
            }
        }
        true
    }

    /// End a claimed delivery without an attempt: its endpoint answered 410 Gone, or an open
    /// circuit held it past its retry window (otherwise a long outage would keep every
    /// delivery to the endpoint, and fill the ledger that all endpoints share).
    fn end_unsent(
        &mut self,
        config: &Config,
        endpoints: &[Endpoint],
        io: &mut Io,
        slot: u32,
        webhook_id: &str,
        end: End,
    ) {
        let now = io.now_ms;
        let result = self.ledger.update(io.store, slot, |rec| {
            let Record::Used(mut s) = rec else {
                return None;
            };
            if s.webhook_id != webhook_id || s.state != State::InFlight {
                return None;
            }
            let (next, promoted) = ended(&mut s, now);
            Some((next, (s, promoted)))
        });
        match result {
            Ok(Some((slot_after, promoted))) => {
                self.conclude(config, endpoints, io, slot, end, &slot_after, promoted);
            }
            Ok(None) => {}
            Err(_) => claim_kept(io),
        }
    }

    /// Count and report a delivery that left `slot`, and send the newer event `promoted` to
    /// it.
    // The sender's usual four, and the three facts of the ending.
    #[allow(clippy::too_many_arguments)]
    fn conclude(
        &mut self,
        config: &Config,
        endpoints: &[Endpoint],
        io: &mut Io,
        slot: u32,
        end: End,
        s: &Slot,
        promoted: bool,
    ) {
        let webhook_id = &s.webhook_id;
        let why = match end {
            End::Delivered { after_retry } => {
                io.metrics
                    .add_for(&s.endpoint, Metric::DeliveriesSucceeded, 1);
                if let Some(taken_in) = s.taken_in_ms {
                    let ms = io.now_ms.saturating_sub(taken_in);
                    io.metrics.delivered_after(&s.endpoint, ms);
                }
                if after_retry {
                    io.metrics
                        .add_for(&s.endpoint, Metric::DeliveredAfterRetry, 1);
                }
                log::debug!("{webhook_id}: delivered");
                None
            }
            End::Superseded => {
                io.metrics.add(Metric::DeliveriesSuperseded, 1);
                None
            }
            End::Orphaned => {
                io.metrics.add(Metric::DeliveriesOrphaned, 1);
                log::warn!(
                    "{webhook_id}: endpoint \"{}\" left the configuration while an attempt was on the wire; delivery dropped",
                    s.endpoint
                );
                forget_breaker(io, &s.endpoint);
                None
            }
            End::Gone => Some((Metric::DeliveriesGone, "gone")),
            End::Exhausted => Some((Metric::DeliveriesExhausted, "exhausted")),
            End::Expired => Some((Metric::DeliveriesExpired, "expired")),
        };
        if let Some((metric, why)) = why {
            io.metrics.add_for(&s.endpoint, metric, 1);
            log::warn!(
                "{webhook_id}: delivery to {} {why} after {} attempts",
                s.endpoint,
                s.attempts
            );
            self.dead_letter(config, endpoints, io, s, &s.body, why);
        }
        if promoted {
            // Due now, or when its wait for a result ends.
            self.wake(config, endpoints, io, slot);
        } else {
            io.metrics.add(Metric::Pending, -1);
        }
    }

    /// Report an abandoned delivery to the dead-letter endpoint (tried up to six times:
    /// `reports::RETRY_DELAYS_MS`).
    fn dead_letter(
        &mut self,
        config: &Config,
        endpoints: &[Endpoint],
        io: &mut Io,
        s: &Slot,
        body: &[u8],
        reason: &str,
    ) {
        if config.dead_letter.is_none() {
            return;
        }
        let endpoint_url = endpoints
            .iter()
            .find(|e| e.name == s.endpoint)
            .map(|e| url(&e.target));
        let mut report = crate::json::Out::default();
        report.begin_object();
        report.key("type");
        report.string("webhook.delivery.failed");
        report.key("reason");
        report.string(reason);
        report.key("webhookId");
        report.string(&s.webhook_id);
        report.key("detectedAt");
        match s.taken_in_ms {
            Some(ms) => report.uint(ms),
            None => report.null(),
        }
        report.key("endpoint");
        report.begin_object();
        report.key("name");
        report.string(&s.endpoint);
        report.key("url");
        match &endpoint_url {
            Some(u) => report.string(u),
            None => report.null(),
        }
        report.end_object();
        report.key("attempts");
        report.begin_array();
        for a in &s.history {
            report.begin_object();
            report.key("at");
            report.uint(a.at_ms);
            report.key("outcome");
            report.string(&a.outcome);
            report.key("durationMs");
            report.uint(a.duration_ms);
            report.end_object();
        }
        report.end_array();
        report.key("attemptCount");
        report.uint(u64::from(s.attempts));
        // The notification from the stored body as it was sent (inside its envelope, when it
        // was wrapped: told by its shape, since the endpoint's `payload` may have changed
        // since), or `null` if that is somehow not JSON.
        report.key("notification");
        let arena = crate::json::Arena::new();
        let sent = crate::json::parse(body, &arena);
        let notification = match &sent {
            Ok(Value::Object(o)) if Payload::is_envelope(o) => o.get("data"),
            Ok(whole) => Some(whole),
            Err(_) => None,
        };
        match notification {
            Some(notification) => report.value(notification),
            None => report.null(),
        }
        report.end_object();
        let report = Report {
            webhook_id: s.webhook_id.clone(),
            body: report.into_bytes(),
            tries: 0,
        };
        // Reports due for another try go first.
        self.retry_reports(config, io);
        self.post_report(config, io, report);
    }

    /// One try of a dead-letter report.
    fn post_report(&mut self, config: &Config, io: &mut Io, mut report: Report) {
        let Some(dl) = &config.dead_letter else {
            return;
        };
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", "POST"),
            (":path", &dl.target.path),
            (":authority", &dl.target.authority),
            (":scheme", &dl.target.scheme),
            ("content-type", "application/json"),
            ("user-agent", crate::USER_AGENT),
        ];
        headers.extend(dl.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if !self.reports.wire_free() {
            // A delivery that ended on a reply: its report waits for a place.
            let (id, tries) = (report.webhook_id.clone(), report.tries);
            if !self.reports.defer(report, io.now_ms) {
                self.give_up_report(io, &id, tries, "no room to wait");
            }
            return;
        }
        report.tries = report.tries.saturating_add(1);
        let sent = io
            .net
            .dispatch(&dl.target.cluster, &headers, &report.body, dl.timeout_ms);
        match sent {
            Ok(token) => {
                io.metrics.add(Metric::DeadLettersSent, 1);
                self.reports.sent();
                self.calls.insert(token, Call::DeadLetter(report));
            }
            Err(e) => self.report_failed(io, report, &format!("not dispatched: {e}")),
        }
    }

    /// A try of a dead-letter report failed: try it again later, or give it up.
    fn report_failed(&mut self, io: &mut Io, report: Report, why: &str) {
        let (id, tries) = (report.webhook_id.clone(), report.tries);
        if !self.closing && self.reports.failed(report, io.now_ms) {
            log::info!("{id}: dead-letter report failed ({why}); it will be tried again");
        } else {
            self.give_up_report(io, &id, tries, why);
        }
    }

    fn give_up_report(&self, io: &mut Io, webhook_id: &str, tries: u32, why: &str) {
        io.metrics.add(Metric::DeadLettersFailed, 1);
        log::warn!("{webhook_id}: dead-letter report given up after {tries} tries: {why}");
    }

    /// Send the dead-letter reports that are due for another try.
    fn retry_reports(&mut self, config: &Config, io: &mut Io) {
        for report in self.reports.take_due(io.now_ms) {
            self.post_report(config, io, report);
        }
    }
}

/// What a slot holds once its delivery ends: the newer event queued behind it, if any (and
/// whether there was one), or nothing.
fn ended(s: &mut Slot, now_ms: u64) -> (Record, bool) {
    match s.successor.take() {
        Some(next) => {
            let at = now_ms.max(next.at_ms);
            (Record::Used(next.into_slot(s, at)), true)
        }
        None => (Record::Free, false),
    }
}

/// When a delivery's retry window closes: its policy's whole schedule, and one timeout and
/// one tick per attempt (a retry goes out at its sender's first tick after it is due), from
/// when it was taken in. An open circuit holds a delivery without spending its attempts only
/// until then, and no retry (however long a `Retry-After` asks for) is scheduled after it:
/// the window bounds how long a delivery occupies the ledger.
fn retry_deadline(endpoint: &Endpoint, s: &Slot, tick_ms: u64) -> Option<u64> {
    let timeouts = endpoint
        .timeout_ms
        .saturating_add(tick_ms)
        .saturating_mul(u64::from(endpoint.retry.max_attempts()));
    let from = s.window_from_ms?;
    Some(
        from.saturating_add(endpoint.retry.schedule_span_ms())
            .saturating_add(timeouts)
            .saturating_add(s.extended_ms),
    )
}

/// Give `n` unused places on endpoint `name`'s breaker record back to the others.
fn give_back(io: &mut Io, name: &str, sender: u32, n: u32) {
    let _ = store::update(io.store, &breaker::key(name), |cur| {
        let mut state = decode_state(cur);
        state.give_back(sender, n);
        Some((state.encode(), ()))
    });
}

/// The furthest ahead `e`'s policies set a waiting delivery: its longest retry delay (a
/// `Retry-After` is capped there), an open circuit or a pause (`openMs`), a wait for the
/// event's result, or its rate limit's next token (within a second), give or take how much
/// older one VM's `now` is than another's. A delivery due further ahead was set before the
/// wall clock stepped back (NTP, a resumed machine), or under a configuration with longer
/// waits: waiting for it would hold it for as long as the step, so it is due now. The wait
/// for a result is the observer's (`awaitResultMs` is not in the fingerprint a singleton
/// sender compares), so any up to its cap is taken as set by policy.
fn furthest_wait_ms(e: &Endpoint) -> u64 {
    e.retry
        .max_delay_ms()
        .max(e.circuit.open_ms)
        .max(MAX_AWAIT_RESULT_MS)
        .max(FULL_HOLD_MS)
        .saturating_add(STEPPED_SLACK_MS)
}

/// When a claim made now lapses if its sender never reports back.
fn lease_until(now_ms: u64, endpoint: &Endpoint) -> u64 {
    now_ms + endpoint.timeout_ms + LEASE_MARGIN_MS
}

fn decode_state(bytes: Option<&[u8]>) -> EndpointState {
    bytes.and_then(EndpointState::decode).unwrap_or_default()
}

/// A claim a sender could not give back or end (the store refused the write: a CAS lost
/// every time) stays claimed with nothing on the wire; when it lapses, the sender that finds
/// it counts a lost attempt out of `in_flight`, so it is counted in now, or the gauge would
/// fall below zero (an unsigned gauge in Envoy).
fn claim_kept(io: &mut Io) {
    io.metrics.add(Metric::StoreConflicts, 1);
    io.metrics.add(Metric::InFlight, 1);
}

/// POST one attempt: the stored body, signed with this attempt's timestamp.
fn send_webhook(io: &mut Io, e: &Endpoint, webhook_id: &str, body: &[u8]) -> Result<u32, String> {
    let ts = (io.now_ms / 1000).to_string();
    let signature = signing::signature_header(&e.secrets, webhook_id, io.now_ms / 1000, body);
    let mut headers: Vec<(&str, &str)> = vec![
        (":method", "POST"),
        (":path", &e.target.path),
        (":authority", &e.target.authority),
        (":scheme", &e.target.scheme),
        ("content-type", "application/json"),
        ("user-agent", crate::USER_AGENT),
        (signing::WEBHOOK_ID, webhook_id),
        (signing::WEBHOOK_TIMESTAMP, &ts),
    ];
    if let Some(sig) = &signature {
        headers.push((signing::WEBHOOK_SIGNATURE, sig));
    }
    headers.extend(e.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    io.net
        .dispatch(&e.target.cluster, &headers, body, e.timeout_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::CountingMetrics;

    struct NoNet;

    impl Dispatch for NoNet {
        fn dispatch(
            &mut self,
            _: &str,
            _: &[(&str, &str)],
            _: &[u8],
            _: u64,
        ) -> Result<u32, String> {
            Err("no network here".into())
        }
    }

    /// A configuration of one-second endpoints of these names, and a store laid out for it.
    fn endpoints_named(names: &[&str]) -> (Config, crate::store::MemStore) {
        let endpoints: Vec<String> = names
            .iter()
            .map(|n| {
                format!(
                    r#"{{"name": "{n}", "url": "http://{n}.local/in", "cluster": "c", "timeoutMs": 1000}}"#
                )
            })
            .collect();
        let json = format!(
            r#"{{"endpoints": [{}], "limits": {{"maxPending": 64}}}}"#,
            endpoints.join(",")
        );
        let config = Config::from_json(json.as_bytes(), &|_| None).unwrap();
        let store = crate::fuzz::laid_out(&config);
        (config, store)
    }

    /// Shared data has no atomic create (`ensure`, at configure time): every endpoint's
    /// breaker record must be among the keys made before traffic, or the first CAS on it
    /// writes unchecked and VMs taking their first places overwrite each other.
    #[test]
    fn the_keys_made_before_traffic_are_every_endpoint_s_breaker_record() {
        let (config, _) = endpoints_named(&["a", "b"]);
        let keys: Vec<String> = Sender::keys(&config.endpoints).collect();
        assert_eq!(keys, [breaker::key("a"), breaker::key("b")]);
    }

    /// A sender remembers spare places per endpoint name. Learned endpoints come and go
    /// (`learned-<providerId>`, one per provider ever learned), so an entry must not outlive
    /// the places it stands for: the map would grow with every endpoint this VM ever sent to.
    #[test]
    fn spare_places_are_forgotten_once_they_lapse() {
        let (config, store) = endpoints_named(&["a", "b"]);
        let metrics = CountingMetrics::default();
        let mut net = NoNet;
        let mut sender = Sender::new(1, Ledger::new(config.limits.max_pending), 64);
        let now = 1_800_000_000_000;
        let mut io = Io {
            store: &store,
            metrics: &metrics,
            net: &mut net,
            now_ms: now,
        };
        for (slot, e) in config.endpoints.iter().enumerate() {
            let lease = lease_until(now, e);
            assert_eq!(sender.admit(&mut io, e, slot as u32, lease), Admit::Granted);
            sender.record_breaker(&mut io, e, slot as u32, true, None);
        }
        assert_eq!(sender.spares.len(), 2);
        // Every place taken has lapsed in the records by then.
        io.now_ms = now + FURTHEST_LEASE_MS + 1;
        sender.tick(&config, &config.endpoints, &mut io);
        sender.tick(&config, &config.endpoints, &mut io);
        assert!(sender.spares.is_empty(), "{:?}", sender.spares);
    }

    /// An entry goes the very tick its places lapse (`return_spares` counts them gone from
    /// then on), not one later.
    #[test]
    fn spare_places_are_forgotten_the_moment_they_lapse() {
        let (config, store) = endpoints_named(&["a"]);
        let metrics = CountingMetrics::default();
        let mut net = NoNet;
        let mut sender = Sender::new(1, Ledger::new(config.limits.max_pending), 64);
        let now = 1_800_000_000_000;
        let mut io = Io {
            store: &store,
            metrics: &metrics,
            net: &mut net,
            now_ms: now,
        };
        let e = &config.endpoints[0];
        let lease = lease_until(now, e);
        assert_eq!(sender.admit(&mut io, e, 0, lease), Admit::Granted);
        io.now_ms = lease + SPARE_MARGIN_MS - 1;
        sender.tick(&config, &config.endpoints, &mut io);
        assert_eq!(sender.spares.len(), 1, "kept while its places last");
        io.now_ms += 1;
        sender.tick(&config, &config.endpoints, &mut io);
        assert!(sender.spares.is_empty(), "{:?}", sender.spares);
    }
}
