//! Sends what the ledger holds: claims a due slot, asks the endpoint's breaker for a lease,
//! POSTs, and on the reply records the attempt and schedules the next one or finishes.
//!
//! One `Sender` lives in each root context. Every step that others might race (claiming a
//! slot, taking an endpoint lease) is a CAS, so any number of senders sweep one ledger with
//! exactly one attempt per delivery on the wire.

use std::collections::{HashMap, VecDeque};

use crate::config::{Config, Endpoint, Target};
use crate::delivery::breaker::{Admit, BreakerPolicy, EndpointState};
use crate::delivery::ledger::{body_key, AttemptRecord, Ledger, Record, Slot, State};
use crate::delivery::outcome::{self, AttemptResponse, Failure, Outcome};
use crate::delivery::retry;
use crate::events::fnv1a64;
use crate::metrics::{Metric, Metrics};
use crate::signing;
use crate::store::{self, Store};

/// A claim outlives the request timeout by this much before another sender may take over.
const LEASE_MARGIN_MS: u64 = 10_000;
/// How long a delivery refused by a full endpoint waits before it is tried again.
const FULL_HOLD_MS: u64 = 200;
/// Slots a sender remembers locally to retry as soon as its endpoint frees a lease.
const MAX_HELD: usize = 4096;
/// Held deliveries retried per tick.
const HELD_PER_TICK: usize = 32;

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
    },
    DeadLetter,
}

/// One attempt's result, as `finish` records it.
struct Attempt<'a> {
    slot: u32,
    webhook_id: &'a str,
    outcome: Outcome,
    retry_after_ms: Option<u64>,
    duration_ms: u64,
}

impl<'a> Attempt<'a> {
    /// An attempt that got no reply: never dispatched, or its sender is gone.
    fn lost(slot: u32, webhook_id: &'a str) -> Self {
        Attempt {
            slot,
            webhook_id,
            outcome: Outcome::Retry(Failure::Transport),
            retry_after_ms: None,
            duration_ms: 0,
        }
    }
}

/// How a delivery left the ledger, or didn't.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Delivered { after_retry: bool },
    Retrying,
    Exhausted,
    Gone,
    Superseded,
}

pub struct Sender {
    /// Names this sender's places in the endpoints' in-flight counts.
    id: u32,
    ledger: Ledger,
    calls: HashMap<u32, Call>,
    held: VecDeque<u32>,
    scan_per_tick: u32,
}

fn breaker_key(name: &str) -> String {
    format!("ep/{name}")
}

fn breaker_policy(e: &Endpoint) -> BreakerPolicy {
    BreakerPolicy {
        failure_threshold: e.circuit.failure_threshold,
        open_ms: e.circuit.open_ms,
        max_in_flight: e.max_in_flight,
    }
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
            calls: HashMap::new(),
            held: VecDeque::new(),
            scan_per_tick,
        }
    }

    /// Keys the sender needs created before traffic: one breaker record per endpoint.
    pub fn keys(endpoints: &[Endpoint]) -> impl Iterator<Item = String> + '_ {
        endpoints.iter().map(|e| breaker_key(&e.name))
    }

    pub fn in_flight(&self) -> usize {
        self.calls.len()
    }

    /// A slot was filled or refilled: try to send it now.
    pub fn wake(&mut self, config: &Config, endpoints: &[Endpoint], io: &mut Io, slot: u32) {
        self.try_send(config, endpoints, io, slot, false);
    }

    /// Sweep the next window of the ledger for due retries and lapsed claims, then retry
    /// what this sender held back. The work is bounded by the window, not by the backlog.
    pub fn tick(&mut self, config: &Config, endpoints: &[Endpoint], io: &mut Io) {
        if let Ok(window) = self.ledger.next_scan_window(io.store, self.scan_per_tick) {
            for slot in window {
                self.try_send(config, endpoints, io, slot, false);
            }
        }
        // Replies free leases and retry held deliveries at once; this only covers leases that
        // freed elsewhere (another VM's replies, lapsed deadlines).
        self.retry_held(config, endpoints, io, HELD_PER_TICK);
    }

    fn retry_held(&mut self, config: &Config, endpoints: &[Endpoint], io: &mut Io, n: usize) {
        for _ in 0..n.min(self.held.len()) {
            if let Some(slot) = self.held.pop_front() {
                self.try_send(config, endpoints, io, slot, true);
            }
        }
    }

    /// Remember a slot to retry when a lease frees. A slot held twice is tried twice, which
    /// is harmless; checking for it would cost O(held) on every refusal.
    fn hold(&mut self, slot: u32) {
        if self.held.len() < MAX_HELD {
            self.held.push_back(slot);
        }
    }

    /// Send `slot` if it is due; `lease_freed` when a lease just came free for held ones.
    fn try_send(
        &mut self,
        config: &Config,
        endpoints: &[Endpoint],
        io: &mut Io,
        slot: u32,
        lease_freed: bool,
    ) {
        let now = io.now_ms;
        // Claim in one read-modify-write: only the sender whose CAS wins goes on. Anything
        // else the record shows is handled below, from what the claim saw.
        let mut seen = Record::Free;
        let claimed = self.ledger.update(io.store, slot, |rec| {
            let due = match &rec {
                Record::Used(x) if x.is_sendable(now, lease_freed) => {
                    endpoints.iter().find(|e| e.name == x.endpoint)
                }
                _ => None,
            };
            match (rec, due) {
                (Record::Used(mut x), Some(endpoint)) => {
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
            Ok(None) => return self.not_claimed(config, endpoints, io, slot, seen, lease_freed),
            Err(_) => return,
        };
        let Some(endpoint) = endpoints.iter().find(|e| e.name == s.endpoint) else {
            return;
        };
        let claim_lapses = lease_until(now, endpoint);
        match self.admit(io, endpoint, slot, claim_lapses) {
            Admit::Granted => {}
            refused => {
                let until = match refused {
                    Admit::Open { until_ms } => until_ms,
                    _ => now + FULL_HOLD_MS,
                };
                let full = !matches!(refused, Admit::Open { .. });
                self.unclaim(io, slot, &s.webhook_id, until, full);
                if full {
                    self.hold(slot);
                }
                return;
            }
        }
        let body = self.ledger.body(io.store, slot).unwrap_or_default();
        let sent = send_webhook(io, endpoint, &s.webhook_id, &body);
        match sent {
            Ok(token) => {
                io.metrics.add(Metric::DeliveriesSent, 1);
                io.metrics.add(Metric::InFlight, 1);
                log::debug!(
                    "{}: attempt {} sent to {}",
                    s.webhook_id,
                    s.attempts + 1,
                    endpoint.name
                );
                self.calls.insert(
                    token,
                    Call::Webhook {
                        slot,
                        endpoint: endpoint.name.clone(),
                        webhook_id: s.webhook_id.clone(),
                        started_ms: now,
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
                self.record_breaker(io, endpoint, slot, false);
                self.finish(config, endpoints, io, Attempt::lost(slot, &s.webhook_id));
            }
        }
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
        let s = match record {
            Record::Used(s) => s,
            rec @ Record::Filling { .. } => {
                if Ledger::is_abandoned(&rec, now) {
                    self.free_if(io, slot, |r| *r == rec);
                }
                return;
            }
            Record::Free => return,
        };
        if s.state == State::InFlight {
            let ours = self
                .calls
                .values()
                .any(|c| matches!(c, Call::Webhook { slot: x, .. } if *x == slot));
            if s.at_ms < now && !ours {
                // The sender that claimed it is gone (VM replaced or crashed): its reply will
                // never come, so count the attempt as failed and go on.
                log::warn!("{}: claim lapsed, retrying", s.webhook_id);
                self.finish(config, endpoints, io, Attempt::lost(slot, &s.webhook_id));
            }
            return;
        }
        if s.is_sendable(now, lease_freed) && endpoints.iter().all(|e| e.name != s.endpoint) {
            io.metrics.add(Metric::DeliveriesOrphaned, 1);
            log::warn!(
                "{}: endpoint \"{}\" is no longer configured; delivery dropped",
                s.webhook_id,
                s.endpoint
            );
            if self.free_if(
                io,
                slot,
                |r| matches!(r, Record::Used(x) if x.webhook_id == s.webhook_id),
            ) {
                io.metrics.add(Metric::Pending, -1);
            }
        }
    }

    fn admit(&self, io: &mut Io, endpoint: &Endpoint, slot: u32, lease_until: u64) -> Admit {
        let policy = breaker_policy(endpoint);
        let sender = self.id;
        let now = io.now_ms;
        let mut verdict = Admit::Full;
        let result = store::update(io.store, &breaker_key(&endpoint.name), |cur| {
            let mut state = decode_state(cur);
            verdict = state.admit(sender, slot, now, lease_until, &policy);
            match verdict {
                Admit::Granted => Some((state.encode(), ())),
                _ => None,
            }
        });
        match result {
            Ok(_) => verdict,
            // Without the breaker record we cannot bound the endpoint: hold and try later.
            Err(_) => Admit::Full,
        }
    }

    fn record_breaker(&self, io: &mut Io, endpoint: &Endpoint, slot: u32, success: bool) {
        let policy = breaker_policy(endpoint);
        let sender = self.id;
        let now = io.now_ms;
        let change = store::update(io.store, &breaker_key(&endpoint.name), |cur| {
            let mut state = decode_state(cur);
            let was_open = state.is_tripped();
            state.record(sender, slot, success, now, &policy);
            let is_open = state.is_tripped();
            Some((state.encode(), (was_open, is_open)))
        });
        if let Ok(Some((was_open, is_open))) = change {
            if !was_open && is_open {
                io.metrics.add(Metric::CircuitsOpened, 1);
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

    /// Give a claimed slot back, due at `until`.
    fn unclaim(&self, io: &mut Io, slot: u32, webhook_id: &str, until: u64, held: bool) {
        let _ = self.ledger.update(io.store, slot, |rec| match rec {
            Record::Used(mut x) if x.webhook_id == webhook_id && x.state == State::InFlight => {
                x.state = State::Waiting;
                x.at_ms = until;
                x.held = held;
                Some((Record::Used(x), ()))
            }
            _ => None,
        });
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
        let Call::Webhook {
            slot,
            endpoint,
            webhook_id,
            started_ms,
        } = call
        else {
            return; // dead-letter reports are sent once, best effort
        };
        io.metrics.add(Metric::InFlight, -1);
        let outcome = outcome::classify(response);
        let retry_after = response.status.and_then(|status| {
            outcome::retry_after_ms(status, response.retry_after.as_deref(), io.now_ms)
        });
        let duration = io.now_ms.saturating_sub(started_ms);
        if let Some(e) = endpoints.iter().find(|e| e.name == endpoint) {
            self.record_breaker(io, e, slot, outcome == Outcome::Delivered);
        }
        let attempt = Attempt {
            slot,
            webhook_id: &webhook_id,
            outcome,
            retry_after_ms: retry_after,
            duration_ms: duration,
        };
        self.finish(config, endpoints, io, attempt);
        // A lease came free: give held deliveries a chance now rather than next tick.
        self.retry_held(config, endpoints, io, 4);
    }

    /// Record a finished attempt and decide what follows: done, retry later, or give up.
    fn finish(&mut self, config: &Config, endpoints: &[Endpoint], io: &mut Io, a: Attempt) {
        let Attempt {
            slot,
            webhook_id,
            ref outcome,
            retry_after_ms,
            duration_ms,
        } = a;
        let now = io.now_ms;
        let store = io.store;
        let ledger = self.ledger;
        let label = match outcome {
            Outcome::Delivered => "delivered".to_string(),
            Outcome::Retry(f) | Outcome::GiveUp(f) => f.to_string(),
        };
        let policy = |name: &str| endpoints.iter().find(|e| e.name == name).map(|e| &e.retry);
        let result = ledger.update(store, slot, |rec| {
            let Record::Used(mut s) = rec else {
                return None;
            };
            if s.webhook_id != webhook_id || s.state != State::InFlight {
                return None;
            }
            s.attempts += 1;
            s.push_history(AttemptRecord {
                at_ms: now,
                outcome: label.clone(),
                duration_ms,
            });
            let verdict = match outcome {
                Outcome::Delivered => Verdict::Delivered {
                    after_retry: s.attempts > 1,
                },
                Outcome::GiveUp(_) => Verdict::Gone,
                Outcome::Retry(_) if s.successor.is_some() => Verdict::Superseded,
                Outcome::Retry(_) => {
                    let seed = fnv1a64(&[s.webhook_id.as_bytes(), &s.attempts.to_le_bytes()]);
                    let delay = policy(&s.endpoint).and_then(|p| {
                        p.next_delay_ms(s.attempts, retry_after_ms, retry::jitter_unit(seed))
                    });
                    match delay {
                        Some(d) => {
                            s.state = State::Waiting;
                            s.at_ms = now.saturating_add(d);
                            return Some((
                                Record::Used(s.clone()),
                                (Verdict::Retrying, s, false, None),
                            ));
                        }
                        None => Verdict::Exhausted,
                    }
                }
            };
            // The delivery is over. A newer event queued behind it takes the slot; keep the
            // finished one's body first if the dead-letter report needs it.
            let reported = matches!(verdict, Verdict::Exhausted | Verdict::Gone)
                .then(|| ledger.body(store, slot).unwrap_or_default());
            let (next, promoted) = match s.successor.take() {
                Some(succ) => {
                    if store
                        .set(&body_key(slot), succ.body.as_bytes(), None)
                        .is_err()
                    {
                        return None;
                    }
                    let fresh = Slot::new(&s.endpoint, s.notification, &succ.webhook_id, now);
                    (Record::Used(fresh), true)
                }
                None => (Record::Free, false),
            };
            Some((next, (verdict, s, promoted, reported)))
        });
        let Ok(Some((verdict, slot_after, promoted, reported))) = result else {
            return;
        };
        match verdict {
            Verdict::Delivered { after_retry } => {
                io.metrics.add(Metric::DeliveriesSucceeded, 1);
                if after_retry {
                    io.metrics.add(Metric::DeliveredAfterRetry, 1);
                }
                log::debug!("{webhook_id}: delivered");
            }
            Verdict::Retrying => {
                io.metrics.add(Metric::DeliveriesFailed, 1);
                io.metrics.add(Metric::RetriesScheduled, 1);
                // `Retry(Timeout)`: the end-to-end tests look for this line.
                log::debug!("{webhook_id}: {outcome:?}, retry at {}", slot_after.at_ms);
            }
            Verdict::Superseded => {
                io.metrics.add(Metric::DeliveriesFailed, 1);
                io.metrics.add(Metric::DeliveriesSuperseded, 1);
            }
            Verdict::Exhausted | Verdict::Gone => {
                io.metrics.add(Metric::DeliveriesFailed, 1);
                let (metric, why) = if verdict == Verdict::Gone {
                    (Metric::DeliveriesGone, "gone")
                } else {
                    (Metric::DeliveriesExhausted, "exhausted")
                };
                io.metrics.add(metric, 1);
                log::warn!(
                    "{webhook_id}: delivery to {} {why} after {} attempts",
                    slot_after.endpoint,
                    slot_after.attempts
                );
                let body = reported.unwrap_or_default();
                self.dead_letter(config, endpoints, io, &slot_after, &body, why);
            }
        }
        if verdict != Verdict::Retrying {
            if promoted {
                self.try_send(config, endpoints, io, slot, false);
            } else {
                io.metrics.add(Metric::Pending, -1);
            }
        }
    }

    /// Report an abandoned delivery to the dead-letter endpoint, once, best effort.
    fn dead_letter(
        &mut self,
        config: &Config,
        endpoints: &[Endpoint],
        io: &mut Io,
        s: &Slot,
        body: &[u8],
        reason: &str,
    ) {
        let Some(dl) = &config.dead_letter else {
            return;
        };
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
        // The stored body as it was sent, or `null` if it is somehow not JSON.
        report.key("notification");
        match crate::json::parse(body) {
            Ok(notification) => report.value(&notification),
            Err(_) => report.null(),
        }
        report.end_object();
        let bytes = report.into_bytes();
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", "POST"),
            (":path", &dl.target.path),
            (":authority", &dl.target.authority),
            ("content-type", "application/json"),
            ("user-agent", crate::USER_AGENT),
        ];
        headers.extend(dl.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        match io
            .net
            .dispatch(&dl.target.cluster, &headers, &bytes, dl.timeout_ms)
        {
            Ok(token) => {
                io.metrics.add(Metric::DeadLettersSent, 1);
                self.calls.insert(token, Call::DeadLetter);
            }
            Err(e) => log::warn!("{}: dead-letter report not sent: {e}", s.webhook_id),
        }
    }
}

/// When a claim made now lapses if its sender never reports back.
fn lease_until(now_ms: u64, endpoint: &Endpoint) -> u64 {
    now_ms + endpoint.timeout_ms + LEASE_MARGIN_MS
}

fn decode_state(bytes: Option<&[u8]>) -> EndpointState {
    bytes.and_then(EndpointState::decode).unwrap_or_default()
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
