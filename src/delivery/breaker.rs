//! Per-endpoint circuit breaker and in-flight bound.
//!
//! The record lives in proxy-wasm shared data, one per endpoint, and every worker updates it
//! under CAS; so it is a small JSON record and every operation is a pure function of
//! (record, now, policy). In-flight attempts are counted per sender (a root context), each
//! count with a deadline that its sender pushes forward as it sends: the record stays as small
//! as the number of VMs however many attempts are out, and the count of a sender lost with a
//! crashed or replaced VM frees its places by itself once its deadline passes.

use crate::record::{Out, Reader};

/// The shared-data key of the endpoint `name`'s record.
pub fn key(name: &str) -> String {
    format!(crate::shared_name!("ep/{}"), name)
}

/// The attempts one sender has in flight to this endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    pub sender: u32,
    pub count: u32,
    /// Past this, the sender is presumed gone and its places free.
    pub until_ms: u64,
}

/// The half-open probe on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub slot: u32,
    pub until_ms: u64,
}

/// Closed when `open_until_ms` is `None`; open until then; half-open after it, until a
/// verdict. Defaults are skipped so a healthy idle endpoint serializes to `{}`.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct EndpointState {
    failures: u32,
    open_until_ms: Option<u64>,
    probe: Option<Probe>,
    holders: Vec<Holder>,
    /// The endpoint answered 410 Gone at this target (`BreakerPolicy::target`): it wants no
    /// more webhooks there. A configuration that moves it elsewhere lifts this.
    gone: Option<u64>,
    /// The receiver asked (`Retry-After`) for no webhooks for a while: a pause, not a failure
    /// verdict, so it leaves the circuit's own state alone, and no delivery's retry window
    /// pays for it.
    pause: Option<Pause>,
    /// The rate limit's bucket is full again at this time, in Unix microseconds (GCRA's
    /// theoretical arrival time); 0 once an admission found it full.
    bucket_full_at_us: u64,
}

/// A pause the receiver at `target` (`BreakerPolicy::target`) asked for: one the
/// configuration moved the endpoint to has not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pause {
    until_ms: u64,
    target: u64,
}

impl EndpointState {
    /// The stored form:
    /// `{"f":..,"o":..,"p":{"s":..,"u":..},"l":[{"h":..,"n":..,"u":..}],"g":..,"q":..,"qt":..,"r":..}`,
    /// each key left out at its default, so a healthy idle endpoint is `{}`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Out::default();
        out.begin_object();
        if self.failures != 0 {
            out.key("f");
            out.uint(self.failures.into());
        }
        if let Some(until) = self.open_until_ms {
            out.key("o");
            out.uint(until);
        }
        if let Some(probe) = &self.probe {
            out.key("p");
            out.begin_object();
            out.key("s");
            out.uint(probe.slot.into());
            out.key("u");
            out.uint(probe.until_ms);
            out.end_object();
        }
        if !self.holders.is_empty() {
            out.key("l");
            out.begin_array();
            for h in &self.holders {
                out.begin_object();
                out.key("h");
                out.uint(h.sender.into());
                out.key("n");
                out.uint(h.count.into());
                out.key("u");
                out.uint(h.until_ms);
                out.end_object();
            }
            out.end_array();
        }
        if let Some(target) = self.gone {
            out.key("g");
            out.uint(target);
        }
        if let Some(pause) = self.pause {
            out.key("q");
            out.uint(pause.until_ms);
            out.key("qt");
            out.uint(pause.target);
        }
        if self.bucket_full_at_us != 0 {
            out.key("r");
            out.uint(self.bucket_full_at_us);
        }
        out.end_object();
        out.into_bytes()
    }

    /// `None` when the bytes are not a readable state.
    pub fn decode(bytes: &[u8]) -> Option<EndpointState> {
        Reader::document(bytes, |r| {
            let mut state = EndpointState::default();
            let (mut quiet_until, mut quiet_target) = (None, None);
            r.object(|r, key| {
                match key {
                    "f" => state.failures = r.optional(Reader::uint32)?.unwrap_or(0),
                    "o" => state.open_until_ms = r.optional(Reader::uint)?,
                    "p" => state.probe = r.optional(read_probe)?,
                    "l" => state.holders = r.optional(|r| r.list(read_holder))?.unwrap_or_default(),
                    "g" => state.gone = r.optional(Reader::uint)?,
                    "q" => quiet_until = r.optional(Reader::uint)?,
                    "qt" => quiet_target = r.optional(Reader::uint)?,
                    "r" => state.bucket_full_at_us = r.optional(Reader::uint)?.unwrap_or(0),
                    _ => r.skip()?,
                }
                Some(())
            })?;
            state.pause = quiet_until.map(|until_ms| Pause {
                until_ms,
                target: quiet_target.unwrap_or(0),
            });
            Some(state)
        })
    }
}

fn read_probe(r: &mut Reader) -> Option<Probe> {
    let (mut slot, mut until_ms) = (None, None);
    r.object(|r, key| {
        match key {
            "s" => slot = Some(r.uint32()?),
            "u" => until_ms = Some(r.uint()?),
            _ => r.skip()?,
        }
        Some(())
    })?;
    Some(Probe {
        slot: slot?,
        until_ms: until_ms?,
    })
}

fn read_holder(r: &mut Reader) -> Option<Holder> {
    let (mut sender, mut count, mut until_ms) = (None, None, None);
    r.object(|r, key| {
        match key {
            "h" => sender = Some(r.uint32()?),
            "n" => count = Some(r.uint32()?),
            "u" => until_ms = Some(r.uint()?),
            _ => r.skip()?,
        }
        Some(())
    })?;
    Some(Holder {
        sender: sender?,
        count: count?,
        until_ms: until_ms?,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the breaker (0 behaves as 1).
    pub failure_threshold: u32,
    pub open_ms: u64,
    pub max_in_flight: u32,
    /// Where the endpoint's webhooks go now (a hash of its cluster and URL).
    pub target: u64,
    pub rate: Option<RatePolicy>,
    /// The longest pause a `Retry-After` may ask for (the endpoint's `maxDelayMs`).
    pub max_pause_ms: u64,
    /// How long a place (or the probe) taken now is held if its sender never reports back.
    pub lease_ms: u64,
}

/// The furthest ahead any configuration leases a place or the probe: the longest
/// `timeoutMs`, the claim's margin and the spare places' margin.
pub const FURTHEST_LEASE_MS: u64 = crate::config::MAX_TIMEOUT_MS + 15_000;

/// How much older one VM's `now` may be than the one another VM last took a token at (each
/// takes its time once per callback): a bucket full again beyond what its policy allows by
/// more than this was not made so by that policy on this clock.
const CLOCK_SLACK_US: u64 = 1_000_000;

/// An endpoint's rate limit as its record applies it (the generic cell rate algorithm): one
/// attempt every `interval_us`, and `burst` at once after a quiet spell. One timestamp in the
/// record is its whole state, so every worker applies one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatePolicy {
    interval_us: u64,
    burst: u32,
}

impl RatePolicy {
    /// Rounded so that no more than `per_second` go in a second.
    pub fn new(per_second: u32, burst: u32) -> Self {
        RatePolicy {
            interval_us: 1_000_000u64.div_ceil(u64::from(per_second.max(1))),
            burst: burst.max(1),
        }
    }

    /// How far ahead of now the bucket may be full again and still let an attempt go.
    fn tolerance_us(self) -> u64 {
        self.interval_us
            .saturating_mul(u64::from(self.burst.saturating_sub(1)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Granted,
    /// `max_in_flight` attempts are out.
    Full,
    Open {
        until_ms: u64,
        /// The receiver asked for this wait (`Retry-After`); otherwise its failures opened it.
        announced: bool,
    },
    /// Half-open and the single probe is out.
    ProbeBusy,
    /// The endpoint answered 410 Gone at its current target.
    Gone,
    /// The rate limit allows the next attempt at `until_ms`.
    Throttled {
        until_ms: u64,
    },
}

impl EndpointState {
    /// Take a place for `sender`'s attempt on `slot`, which ends by `lease_until_ms` (the
    /// caller passes now + timeout + margin). Closed: granted while fewer than `max_in_flight`
    /// are out. Open: refused. Half-open: one probe at a time.
    pub fn admit(
        &mut self,
        sender: u32,
        slot: u32,
        now_ms: u64,
        lease_until_ms: u64,
        policy: &BreakerPolicy,
    ) -> Admit {
        self.admit_up_to(sender, slot, now_ms, lease_until_ms, policy, 1)
            .0
    }

    /// `admit`, taking up to `want` places at once while the breaker is closed and clean
    /// (no failures counted): the sender keeps the extra ones to send without touching the
    /// record. Returns the verdict and how many places were taken (0 unless granted).
    pub fn admit_up_to(
        &mut self,
        sender: u32,
        slot: u32,
        now_ms: u64,
        lease_until_ms: u64,
        policy: &BreakerPolicy,
        want: u32,
    ) -> (Admit, u32) {
        self.expire(now_ms);
        let _ = self.bound_waits(now_ms, policy);
        match self.gone {
            Some(target) if target == policy.target => return (Admit::Gone, 0),
            // The configuration moved the endpoint since: whatever answered 410 is not there.
            Some(_) => self.gone = None,
            None => {}
        }
        match self.pause {
            Some(Pause { until_ms, target }) if target == policy.target => {
                let announced = true;
                return (
                    Admit::Open {
                        until_ms,
                        announced,
                    },
                    0,
                );
            }
            // The configuration moved the endpoint since: whoever asked is not there.
            Some(_) => self.pause = None,
            None => {}
        }
        let half_open = match self.open_until_ms {
            Some(until_ms) if now_ms < until_ms => {
                return (
                    Admit::Open {
                        until_ms,
                        announced: false,
                    },
                    0,
                );
            }
            Some(_) => true,
            None => false,
        };
        if half_open && self.probe.is_some() {
            return (Admit::ProbeBusy, 0);
        }
        let free = u64::from(policy.max_in_flight).saturating_sub(self.in_flight(now_ms));
        if free == 0 {
            return (Admit::Full, 0);
        }
        if let Some(rate) = policy.rate {
            let now_us = now_ms.saturating_mul(1000);
            // This policy never puts it further ahead than a whole bucket and one interval
            // (give or take how much older one VM's `now` is than another's): a time beyond
            // was kept under a slower or deeper one (a configuration raised the limit since)
            // or before the clock stepped back, and would hold the endpoint until it came
            // (refusals write nothing, so a clamp alone would hold it for good). Such a
            // bucket counts as empty, its next token due now.
            let furthest = now_us
                .saturating_add(rate.tolerance_us())
                .saturating_add(rate.interval_us)
                .saturating_add(CLOCK_SLACK_US);
            let full_at = if self.bucket_full_at_us > furthest {
                now_us.saturating_add(rate.tolerance_us())
            } else {
                self.bucket_full_at_us.max(now_us)
            };
            let from_us = full_at.saturating_sub(rate.tolerance_us());
            if now_us < from_us {
                let until_ms = from_us.div_ceil(1000);
                return (Admit::Throttled { until_ms }, 0);
            }
            self.bucket_full_at_us = full_at.saturating_add(rate.interval_us);
        }
        // A rate limit takes one token per place: spare places would spend none.
        let want = if half_open || self.failures > 0 || policy.rate.is_some() {
            1
        } else {
            want.max(1)
        };
        let taken = u32::try_from(free.min(u64::from(want))).unwrap_or(1);
        match self.holders.iter_mut().find(|h| h.sender == sender) {
            Some(h) => {
                h.count = h.count.saturating_add(taken);
                h.until_ms = h.until_ms.max(lease_until_ms);
            }
            None => self.holders.push(Holder {
                sender,
                count: taken,
                until_ms: lease_until_ms,
            }),
        }
        if half_open {
            self.probe = Some(Probe {
                slot,
                until_ms: lease_until_ms,
            });
        }
        (Admit::Granted, taken)
    }

    /// Closed with no failures counted: places taken now may be reused for later sends
    /// without asking again.
    pub fn is_clean(&self) -> bool {
        self.failures == 0
            && self.open_until_ms.is_none()
            && self.gone.is_none()
            && self.pause.is_none()
    }

    /// The endpoint answered 410 Gone at `policy.target`: refuse every attempt there from now
    /// on (`Admit::Gone`). As a live receiver's answer, it also closes the breaker.
    pub fn mark_gone(&mut self, sender: u32, slot: u32, now_ms: u64, policy: &BreakerPolicy) {
        self.record(sender, slot, true, now_ms, policy);
        self.gone = Some(policy.target);
    }

    /// Whether the endpoint, at `policy.target`, said it wants no more webhooks.
    pub fn is_gone(&self, policy: &BreakerPolicy) -> bool {
        self.gone == Some(policy.target)
    }

    /// Give back `n` places `sender` holds without using them.
    pub fn give_back(&mut self, sender: u32, n: u32) {
        if let Some(h) = self.holders.iter_mut().find(|h| h.sender == sender) {
            h.count = h.count.saturating_sub(n);
        }
        self.holders.retain(|h| h.count > 0);
    }

    /// Record the attempt's result and give back its place. Success closes the breaker and
    /// resets failures. A failure counts; at `failure_threshold`, or when the half-open probe
    /// fails, the breaker opens until `now + open_ms`. Failures of attempts that were already
    /// in flight when it opened do not extend the open period, nor reopen it once half-open.
    pub fn record(
        &mut self,
        sender: u32,
        slot: u32,
        success: bool,
        now_ms: u64,
        policy: &BreakerPolicy,
    ) {
        let _ = self.bound_waits(now_ms, policy);
        let was_probe = self.probe.is_some_and(|p| p.slot == slot);
        self.release(sender, slot);
        if success {
            self.failures = 0;
            self.open_until_ms = None;
            self.probe = None;
            return;
        }
        self.failures = self.failures.saturating_add(1);
        if self.is_open(now_ms) {
            return;
        }
        if self.is_tripped() && !was_probe {
            // Half-open: every attempt admitted now is the probe, so this one was on the
            // wire before the breaker opened (a `timeoutMs` longer than `openMs`). The
            // probe's verdict decides.
            return;
        }
        if was_probe || self.failures >= policy.failure_threshold.max(1) {
            self.open_until_ms = Some(now_ms.saturating_add(policy.open_ms));
        }
    }

    /// The receiver asked, with a failure's `Retry-After`, to be left alone until `until_ms`
    /// (the caller caps it). A maintenance or a rate limit is the endpoint's, not one
    /// delivery's: no attempt goes there until then, whatever the circuit says. Replies to
    /// attempts sent before do not lift it: they answer an earlier question.
    pub fn hold_off(&mut self, now_ms: u64, until_ms: u64, policy: &BreakerPolicy) {
        if until_ms <= now_ms {
            return;
        }
        let earlier = self
            .pause
            .filter(|p| p.target == policy.target)
            .map_or(until_ms, |p| p.until_ms);
        self.pause = Some(Pause {
            until_ms: earlier.max(until_ms),
            target: policy.target,
        });
    }

    /// In a pause the receiver asked for.
    pub fn is_paused(&self, now_ms: u64) -> bool {
        self.pause.is_some_and(|p| now_ms < p.until_ms)
    }

    /// Give back a place without a verdict.
    pub fn release(&mut self, sender: u32, slot: u32) {
        self.give_back(sender, 1);
        if self.probe.is_some_and(|p| p.slot == slot) {
            self.probe = None;
        }
    }

    /// Open and not yet half-open.
    pub fn is_open(&self, now_ms: u64) -> bool {
        self.open_until_ms.is_some_and(|until| now_ms < until)
    }

    pub fn in_flight(&self, now_ms: u64) -> u64 {
        self.holders
            .iter()
            .filter(|h| h.until_ms > now_ms)
            .map(|h| u64::from(h.count))
            .sum()
    }

    /// Open or half-open: not yet closed by a success.
    pub fn is_tripped(&self) -> bool {
        self.open_until_ms.is_some()
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// A circuit open further ahead than `openMs`, or a pause further ahead than its cap (give
    /// or take how much older one VM's `now` is than another's), was not begun on this clock
    /// under this policy: the wall clock stepped back since (or a configuration lowered the
    /// bound). Waiting for it would hold the endpoint, and every delivery to it, for as long as
    /// the step: the circuit is half-open now, and the pause ends by its cap from now.
    ///
    /// True when it bounded either: the record must then be written back even when the
    /// admission is refused (by that very pause), or the next one bounds it again from its
    /// own `now`, and the pause never ends.
    pub fn bound_waits(&mut self, now_ms: u64, policy: &BreakerPolicy) -> bool {
        let slack_ms = CLOCK_SLACK_US / 1000;
        let furthest = now_ms
            .saturating_add(policy.open_ms)
            .saturating_add(slack_ms);
        let mut bounded = false;
        if self.open_until_ms.is_some_and(|until| until > furthest) {
            self.open_until_ms = Some(now_ms);
            bounded = true;
        }
        let capped = now_ms.saturating_add(policy.max_pause_ms);
        if let Some(pause) = self.pause.as_mut() {
            if pause.until_ms > capped.saturating_add(slack_ms) {
                pause.until_ms = capped;
                bounded = true;
            }
        }
        // A place or probe leased further ahead than any configuration leases was taken before
        // the clock stepped back: held as if taken now, not for the step (a sender that died
        // with the probe out would hold the endpoint half-open, sending nothing, that long).
        let leased = now_ms.saturating_add(policy.lease_ms);
        let furthest_lease = now_ms.saturating_add(FURTHEST_LEASE_MS + slack_ms);
        let stale = |until_ms: u64| until_ms > furthest_lease;
        for h in &mut self.holders {
            if stale(h.until_ms) {
                h.until_ms = leased;
                bounded = true;
            }
        }
        if let Some(probe) = self.probe.as_mut() {
            if stale(probe.until_ms) {
                probe.until_ms = leased;
                bounded = true;
            }
        }
        bounded
    }

    fn expire(&mut self, now_ms: u64) {
        self.holders.retain(|h| h.until_ms > now_ms);
        if self.probe.is_some_and(|p| p.until_ms <= now_ms) {
            self.probe = None;
        }
        if self.pause.is_some_and(|p| p.until_ms <= now_ms) {
            self.pause = None;
        }
        if self.bucket_full_at_us <= now_ms.saturating_mul(1000) {
            self.bucket_full_at_us = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BreakerPolicy = BreakerPolicy {
        failure_threshold: 3,
        open_ms: 10_000,
        max_in_flight: 2,
        target: 7,
        rate: None,
        max_pause_ms: 120_000,
        lease_ms: 16_000,
    };
    const LEASE_MS: u64 = 5_000;
    const A: u32 = 11;
    const B: u32 = 22;

    fn admit(s: &mut EndpointState, slot: u32, now: u64) -> Admit {
        s.admit(A, slot, now, now + LEASE_MS, &POLICY)
    }

    /// A state opened at `now` by `failure_threshold` failures.
    fn opened_at(now: u64) -> EndpointState {
        let mut s = EndpointState::default();
        for slot in 0..POLICY.failure_threshold {
            assert_eq!(admit(&mut s, slot, now), Admit::Granted);
            s.record(A, slot, false, now, &POLICY);
        }
        assert!(s.is_open(now));
        s
    }

    /// Standard Webhooks: a 410 means the endpoint wants no more webhooks from this source.
    /// Refused from then on at that target, through a round trip in shared data; a new
    /// target (the configuration moved the endpoint) is admitted again.
    #[test]
    fn gone_refuses_the_target_that_said_so_and_no_other() {
        let mut s = EndpointState::default();
        assert_eq!(admit(&mut s, 1, 0), Admit::Granted);
        s.mark_gone(A, 1, 0, &POLICY);
        assert!(s.is_gone(&POLICY) && !s.is_clean() && s.in_flight(0) == 0);
        let mut s = EndpointState::decode(&s.encode()).unwrap();
        assert_eq!(admit(&mut s, 2, 1), Admit::Gone);
        assert_eq!(s.admit(B, 3, 1, 1 + LEASE_MS, &POLICY), Admit::Gone);
        let moved = BreakerPolicy {
            target: 8,
            ..POLICY
        };
        assert!(!s.is_gone(&moved));
        assert_eq!(s.admit(A, 4, 2, 2 + LEASE_MS, &moved), Admit::Granted);
        assert!(!s.is_gone(&POLICY), "lifted for good once moved");
    }

    /// A `Retry-After` pauses the endpoint for everyone, through shared data; a shorter one
    /// does not shorten it, nor does a reply to an attempt sent before it; then the circuit is
    /// as the failures left it (closed here: one failure is below the threshold).
    #[test]
    fn a_pause_the_receiver_asked_for_holds_everyone_and_then_lapses() {
        let mut s = EndpointState::default();
        assert_eq!(admit(&mut s, 1, 0), Admit::Granted);
        assert_eq!(admit(&mut s, 2, 0), Admit::Granted);
        s.record(A, 1, false, 100, &POLICY);
        s.hold_off(100, 60_100, &POLICY);
        s.hold_off(200, 5_000, &POLICY);
        assert!(s.is_paused(60_099) && !s.is_paused(60_100) && !s.is_clean());
        let mut s = EndpointState::decode(&s.encode()).unwrap();
        s.record(A, 2, true, 300, &POLICY);
        let paused = Admit::Open {
            until_ms: 60_100,
            announced: true,
        };
        assert_eq!(s.admit(B, 3, 400, 400 + LEASE_MS, &POLICY), paused);
        assert_eq!(admit(&mut s, 3, 60_099), paused);
        assert!(!s.is_tripped());
        assert_eq!(admit(&mut s, 3, 60_100), Admit::Granted);
        assert_eq!(s.encode(), br#"{"l":[{"h":11,"n":1,"u":65100}]}"#);
    }

    /// A pause asks for nothing at or before now (`Retry-After: 0`, a date past), and an
    /// announced pause comes before the circuit's own verdicts.
    #[test]
    fn a_pause_in_the_past_is_nothing_and_a_pause_outranks_the_probe() {
        let mut s = EndpointState::default();
        s.hold_off(1_000, 1_000, &POLICY);
        assert_eq!(s, EndpointState::default());
        let mut s = opened_at(0);
        s.hold_off(0, 50_000, &POLICY);
        assert_eq!(
            admit(&mut s, 9, 20_000),
            Admit::Open {
                until_ms: 50_000,
                announced: true
            }
        );
        assert_eq!(
            admit(&mut s, 9, 50_000),
            Admit::Granted,
            "half-open: the probe"
        );
        assert_eq!(admit(&mut s, 10, 50_000), Admit::ProbeBusy);
    }

    /// A pause is capped at `maxDelayMs` when asked for; one further ahead than the cap in force
    /// (give or take a second) was asked on a wall clock since stepped back, or under a larger
    /// cap an update lowered: it held the endpoint for the whole step. It ends by the cap now.
    #[test]
    fn a_pause_further_ahead_than_the_cap_ends_by_the_cap_from_now() {
        const T: u64 = 1_800_000_000_000;
        let cap = POLICY.max_pause_ms;
        let back = T - 3_600_000;
        let mut s = EndpointState::default();
        s.hold_off(T, T + 60_000, &POLICY);
        let bounded = Admit::Open {
            until_ms: back + cap,
            announced: true,
        };
        assert_eq!(
            admit(&mut s, 1, back),
            bounded,
            "the clock stepped back an hour"
        );
        assert!(s.is_paused(back + cap - 1) && !s.is_paused(back + cap));
        assert_eq!(admit(&mut s, 1, back + cap), Admit::Granted);
        // A cap lowered since: the pause ends by the new cap.
        let lowered = BreakerPolicy {
            max_pause_ms: 5_000,
            ..POLICY
        };
        let mut s = EndpointState::default();
        s.hold_off(T, T + 60_000, &POLICY);
        assert_eq!(
            s.admit(A, 1, T + 1_000, T + 1_000 + LEASE_MS, &lowered),
            Admit::Open {
                until_ms: T + 6_000,
                announced: true
            }
        );
        // Within the cap, give or take another VM's older `now`, the pause holds as asked.
        let mut s = EndpointState::default();
        s.hold_off(T, T + cap, &POLICY);
        assert_eq!(
            admit(&mut s, 1, T - 500),
            Admit::Open {
                until_ms: T + cap,
                announced: true
            }
        );
    }

    /// A review: a configuration that moves the endpoint elsewhere lifts the pause the old
    /// receiver asked for, as it lifts a 410.
    #[test]
    fn a_pause_holds_only_the_target_that_asked_for_it() {
        let mut s = EndpointState::default();
        assert_eq!(admit(&mut s, 1, 0), Admit::Granted);
        s.record(A, 1, false, 0, &POLICY);
        s.hold_off(0, 3_600_000, &POLICY);
        let mut s = EndpointState::decode(&s.encode()).unwrap();
        let moved = BreakerPolicy {
            target: 8,
            ..POLICY
        };
        assert_eq!(s.admit(A, 2, 1_000, 6_000, &moved), Admit::Granted);
        assert!(!s.is_paused(1_000), "lifted for good once moved");
    }

    /// `burst` go at once, then one every `1 / perSecond` s, whichever sender asks, through
    /// the record's round trips; a refusal says when the next may go, and takes no place.
    #[test]
    fn a_rate_limit_lets_a_burst_go_then_one_an_interval_across_senders() {
        let policy = BreakerPolicy {
            max_in_flight: 100,
            rate: Some(RatePolicy::new(4, 3)), // one every 250 ms, three at once
            ..POLICY
        };
        let mut s = EndpointState::default();
        let at = |s: &mut EndpointState, sender: u32, slot: u32, now: u64| {
            let verdict = s.admit_up_to(sender, slot, now, now + LEASE_MS, &policy, 8);
            *s = EndpointState::decode(&s.encode()).unwrap();
            verdict
        };
        for (slot, sender) in [(1, A), (2, B), (3, A)] {
            assert_eq!(
                at(&mut s, sender, slot, 1_000),
                (Admit::Granted, 1),
                "one place each"
            );
        }
        let throttled = Admit::Throttled { until_ms: 1_250 };
        assert_eq!(at(&mut s, B, 4, 1_000), (throttled, 0));
        assert_eq!(at(&mut s, B, 4, 1_249), (throttled, 0));
        assert_eq!(s.in_flight(1_249), 3, "a refusal takes no place");
        assert_eq!(at(&mut s, B, 4, 1_250).0, Admit::Granted);
        assert_eq!(
            at(&mut s, A, 5, 1_250).0,
            Admit::Throttled { until_ms: 1_500 }
        );
        // Quiet for a while: the bucket refills to `burst`, no further.
        let later = 10_000;
        for slot in 6..9 {
            assert_eq!(at(&mut s, A, slot, later).0, Admit::Granted);
        }
        assert!(matches!(at(&mut s, A, 9, later).0, Admit::Throttled { .. }));
    }

    /// One a second with a bucket of one: attempts a whole second apart, to the millisecond,
    /// and a quiet spell saves up no more than the one.
    #[test]
    fn a_bucket_of_one_spaces_attempts_by_the_interval() {
        let policy = BreakerPolicy {
            rate: Some(RatePolicy::new(1, 1)),
            ..POLICY
        };
        let mut s = EndpointState::default();
        let mut at = |slot: u32, now: u64| {
            let verdict = s.admit(A, slot, now, now + LEASE_MS, &policy);
            if verdict == Admit::Granted {
                s.record(A, slot, true, now + 10, &policy);
            }
            verdict
        };
        assert_eq!(at(1, 5_000), Admit::Granted);
        assert_eq!(at(2, 5_999), Admit::Throttled { until_ms: 6_000 });
        assert_eq!(at(2, 6_000), Admit::Granted);
        assert_eq!(at(3, 60_000), Admit::Granted);
        assert_eq!(at(4, 60_000), Admit::Throttled { until_ms: 61_000 });
    }

    /// Probes and retries take tokens too (README: "retries and probes too"): a half-open
    /// circuit's probe waits for one, and a refused probe is no probe (the next admission
    /// once a token is due is the probe, not `ProbeBusy`).
    #[test]
    fn a_half_open_probe_waits_for_a_token() {
        let policy = BreakerPolicy {
            failure_threshold: 1,
            open_ms: 500,
            rate: Some(RatePolicy::new(1, 1)),
            ..POLICY
        };
        let mut s = EndpointState::default();
        assert_eq!(s.admit(A, 1, 0, LEASE_MS, &policy), Admit::Granted);
        s.record(A, 1, false, 10, &policy);
        assert!(matches!(
            s.admit(A, 2, 400, 400 + LEASE_MS, &policy),
            Admit::Open { until_ms: 510, .. }
        ));
        // Half-open, but the one token of this second went at 0.
        assert_eq!(
            s.admit(A, 2, 600, 600 + LEASE_MS, &policy),
            Admit::Throttled { until_ms: 1_000 }
        );
        assert_eq!(
            s.admit(A, 2, 1_000, 1_000 + LEASE_MS, &policy),
            Admit::Granted
        );
        assert_eq!(
            s.admit(B, 3, 2_500, 2_500 + LEASE_MS, &policy),
            Admit::ProbeBusy,
            "that was the probe"
        );
    }

    /// The stored time the bucket is full again can lie further ahead than the policy now
    /// applied could ever put it: a configuration that raised the limit after a deep bucket
    /// drained (one a second, bursts of 1,000: full again 1,000 s later), or a wall clock
    /// stepped back. The bucket then counts as empty under the policy it has, its next token
    /// due at once: a review found the endpoint stalled until the old time came (16 minutes;
    /// an hour).
    #[test]
    fn a_bucket_full_again_beyond_the_policy_counts_as_empty() {
        let policy = |per_second, burst| BreakerPolicy {
            max_in_flight: 10_000,
            rate: Some(RatePolicy::new(per_second, burst)),
            ..POLICY
        };
        let t = 1_800_000_000_000;
        let mut s = EndpointState::default();
        let (slow, fast) = (policy(1, 1_000), policy(100, 100));
        for slot in 0..1_000 {
            assert_eq!(s.admit(A, slot, t, t + LEASE_MS, &slow), Admit::Granted);
        }
        assert_eq!(
            s.admit(A, 1_000, t, t + LEASE_MS, &slow),
            Admit::Throttled {
                until_ms: t + 1_000
            }
        );
        // Raised to 100 a second: one now, then one every 10 ms, as the new bucket runs.
        assert_eq!(s.admit(A, 1_000, t, t + LEASE_MS, &fast), Admit::Granted);
        assert_eq!(
            s.admit(A, 1_001, t, t + LEASE_MS, &fast),
            Admit::Throttled { until_ms: t + 10 }
        );
        assert_eq!(
            s.admit(A, 1_001, t + 10, t + LEASE_MS, &fast),
            Admit::Granted
        );
        // The clock stepped back an hour: the same, not the hour.
        let back = t - 3_600_000;
        assert_eq!(
            s.admit(A, 1_002, back, back + LEASE_MS, &fast),
            Admit::Granted
        );
        assert_eq!(
            s.admit(A, 1_003, back, back + LEASE_MS, &fast),
            Admit::Throttled {
                until_ms: back + 10
            }
        );
        // Under a policy that stays, a bucket emptied to its last token is not "beyond": the
        // bound holds to the microsecond.
        let mut s = EndpointState::default();
        for slot in 0..100 {
            assert_eq!(s.admit(A, slot, t, t + LEASE_MS, &fast), Admit::Granted);
        }
        assert_eq!(
            s.admit(A, 100, t, t + LEASE_MS, &fast),
            Admit::Throttled { until_ms: t + 10 }
        );
        // Nor when a VM asks with a `now` taken a while before the last token went.
        assert_eq!(
            s.admit(B, 100, t - 500, t + LEASE_MS, &fast),
            Admit::Throttled { until_ms: t + 10 }
        );
    }

    #[test]
    fn closed_admits_up_to_max_in_flight_across_senders_then_is_full() {
        let mut s = EndpointState::default();
        assert_eq!(s.admit(A, 1, 0, LEASE_MS, &POLICY), Admit::Granted);
        assert_eq!(s.admit(B, 2, 0, LEASE_MS, &POLICY), Admit::Granted);
        assert_eq!(s.admit(A, 3, 0, LEASE_MS, &POLICY), Admit::Full);
        assert_eq!(s.in_flight(0), 2);
        s.release(B, 2);
        assert_eq!(s.admit(A, 3, 0, LEASE_MS, &POLICY), Admit::Granted);
        assert_eq!(s.in_flight(0), 2);
    }

    #[test]
    fn the_record_holds_one_entry_per_sender_however_many_are_out() {
        let policy = BreakerPolicy {
            max_in_flight: 1000,
            ..POLICY
        };
        let mut s = EndpointState::default();
        for slot in 0..500 {
            assert_eq!(
                s.admit(A, slot, slot.into(), 10_000, &policy),
                Admit::Granted
            );
        }
        assert_eq!(s.in_flight(0), 500);
        let json = String::from_utf8(s.encode()).unwrap();
        assert_eq!(json, r#"{"l":[{"h":11,"n":500,"u":10000}]}"#);
    }

    #[test]
    fn a_lost_senders_places_free_themselves_after_its_deadline() {
        let mut s = EndpointState::default();
        s.admit(A, 1, 0, LEASE_MS, &POLICY);
        s.admit(A, 2, 0, LEASE_MS, &POLICY);
        assert_eq!(
            s.admit(B, 3, LEASE_MS - 1, 2 * LEASE_MS, &POLICY),
            Admit::Full
        );
        assert_eq!(s.in_flight(LEASE_MS), 0);
        assert_eq!(
            s.admit(B, 3, LEASE_MS, 2 * LEASE_MS, &POLICY),
            Admit::Granted
        );
        assert_eq!(
            s.holders,
            vec![Holder {
                sender: B,
                count: 1,
                until_ms: 2 * LEASE_MS
            }]
        );
    }

    #[test]
    fn a_sending_sender_keeps_its_deadline_moving() {
        let mut s = EndpointState::default();
        s.admit(A, 1, 0, LEASE_MS, &POLICY);
        s.admit(A, 2, 4_000, 4_000 + LEASE_MS, &POLICY);
        assert_eq!(
            s.in_flight(LEASE_MS),
            2,
            "the first attempt's deadline no longer rules"
        );
    }

    /// The wall clock may step back (proxy-wasm's time is the system's): a claim made then
    /// must not cut short the deadline covering the attempts already out.
    #[test]
    fn a_clock_stepping_back_never_shortens_a_senders_deadline() {
        let mut s = EndpointState::default();
        s.admit(A, 1, 4_000, 4_000 + LEASE_MS, &POLICY);
        s.admit(A, 2, 3_000, 3_000 + LEASE_MS, &POLICY);
        assert_eq!(s.in_flight(3_000 + LEASE_MS), 2);
    }

    #[test]
    fn threshold_failures_open_the_breaker() {
        let mut s = EndpointState::default();
        for slot in 0..2 {
            admit(&mut s, slot, 0);
            s.record(A, slot, false, 0, &POLICY);
            assert!(!s.is_open(0));
        }
        admit(&mut s, 2, 50);
        s.record(A, 2, false, 50, &POLICY);
        assert_eq!(s.consecutive_failures(), 3);
        assert!(s.is_open(50));
        assert_eq!(s.in_flight(50), 0);
    }

    #[test]
    fn open_refuses_until_open_ms_passes() {
        let mut s = opened_at(1_000);
        assert_eq!(
            admit(&mut s, 9, 1_000),
            Admit::Open {
                until_ms: 11_000,
                announced: false
            }
        );
        assert_eq!(
            admit(&mut s, 9, 10_999),
            Admit::Open {
                until_ms: 11_000,
                announced: false
            }
        );
        assert!(s.is_open(10_999));
        assert!(!s.is_open(11_000));
        assert_eq!(admit(&mut s, 9, 11_000), Admit::Granted);
    }

    /// Places taken, and the probe, are leased until the attempt's claim would lapse, so a
    /// sender that went away with them frees them. Taken before the clock stepped back an
    /// hour, they were held for the hour: the endpoint had no place (and, half-open, no
    /// probe) for it. A lease further ahead than any configuration's was taken before the
    /// step: it runs as if taken now, and `bound_waits` says so, for the record to be written.
    #[test]
    fn places_and_the_probe_taken_before_the_clock_stepped_back_lapse_without_the_step() {
        const T: u64 = 1_800_000_000_000;
        let lease = T + FURTHEST_LEASE_MS;
        let mut s = EndpointState::default();
        assert_eq!(s.admit(B, 1, T, lease, &POLICY), Admit::Granted);
        assert_eq!(s.admit(B, 2, T, lease, &POLICY), Admit::Granted);
        let back = T + 1_000 - 3_600_000;
        assert_eq!(admit(&mut s, 3, back), Admit::Full, "held on this clock");
        assert_eq!(admit(&mut s, 3, back + POLICY.lease_ms), Admit::Granted);
        // Half-open, the probe of a sender gone before the step.
        let mut s = opened_at(T);
        let open = T + POLICY.open_ms;
        assert_eq!(
            s.admit(B, 9, open, open + FURTHEST_LEASE_MS, &POLICY),
            Admit::Granted
        );
        let back = open - 3_600_000;
        assert!(s.bound_waits(back, &POLICY), "bounded: to be written");
        assert!(!s.bound_waits(back, &POLICY), "once");
        assert_eq!(admit(&mut s, 10, back), Admit::ProbeBusy);
        assert_eq!(admit(&mut s, 10, back + POLICY.lease_ms), Admit::Granted);
    }

    /// The host's clock is the wall clock: stepped back (NTP, a resumed VM) while the circuit
    /// was open, the circuit stayed open for the whole step, its deliveries held (new ones
    /// too, scheduled for that time) and the endpoint given nothing for an hour. No circuit
    /// opened on this clock lies further ahead than `openMs`: such a one is half-open now.
    #[test]
    fn a_clock_stepped_back_does_not_hold_the_circuit_open_for_the_step() {
        const T: u64 = 1_800_000_000_000;
        let back = T + 1_000 - 3_600_000;
        let mut s = opened_at(T);
        assert_eq!(admit(&mut s, 9, back), Admit::Granted, "the probe");
        assert_eq!(admit(&mut s, 10, back), Admit::ProbeBusy);
        // Its failure opens the circuit for `openMs` on this clock.
        s.record(A, 9, false, back, &POLICY);
        assert!(s.is_open(back));
        assert_eq!(
            admit(&mut s, 10, back),
            Admit::Open {
                until_ms: back + POLICY.open_ms,
                announced: false
            }
        );
        // A failure of an attempt that was out before the step opens nothing further.
        let mut s = opened_at(T);
        assert_eq!(admit(&mut s, 9, back), Admit::Granted, "the probe");
        s.record(A, 7, false, back, &POLICY);
        assert!(!s.is_open(back), "half-open still: the probe is out");
        // Within `openMs` (give or take a second of another VM's `now`), the circuit holds.
        let mut s = opened_at(T);
        assert!(matches!(
            admit(&mut s, 9, T - 500),
            Admit::Open { until_ms, .. } if until_ms == T + POLICY.open_ms
        ));
    }

    #[test]
    fn half_open_admits_exactly_one_probe() {
        let mut s = opened_at(0);
        assert_eq!(admit(&mut s, 1, 10_000), Admit::Granted);
        assert_eq!(admit(&mut s, 2, 10_000), Admit::ProbeBusy);
        assert_eq!(s.admit(B, 3, 10_001, 20_000, &POLICY), Admit::ProbeBusy);
        assert_eq!(s.in_flight(10_001), 1);
    }

    #[test]
    fn a_lost_probe_expires_and_another_may_probe() {
        let mut s = opened_at(0);
        assert_eq!(admit(&mut s, 1, 10_000), Admit::Granted);
        assert_eq!(admit(&mut s, 2, 10_000 + LEASE_MS), Admit::Granted);
        assert_eq!(s.probe.map(|p| p.slot), Some(2));
    }

    #[test]
    fn a_released_probe_lets_another_probe() {
        let mut s = opened_at(0);
        admit(&mut s, 1, 10_000);
        s.release(A, 1);
        assert_eq!(admit(&mut s, 2, 10_000), Admit::Granted);
        assert_eq!(admit(&mut s, 3, 10_000), Admit::ProbeBusy);
    }

    #[test]
    fn probe_success_closes_the_breaker() {
        let mut s = opened_at(0);
        admit(&mut s, 1, 10_000);
        s.record(A, 1, true, 10_500, &POLICY);
        assert!(!s.is_open(10_500));
        assert_eq!(s, EndpointState::default());
        assert_eq!(admit(&mut s, 2, 10_500), Admit::Granted);
        assert_eq!(admit(&mut s, 3, 10_500), Admit::Granted);
    }

    #[test]
    fn probe_failure_reopens_the_breaker() {
        let mut s = opened_at(0);
        admit(&mut s, 1, 10_000);
        s.record(A, 1, false, 10_500, &POLICY);
        assert!(s.is_open(10_500));
        assert_eq!(
            admit(&mut s, 2, 10_500),
            Admit::Open {
                until_ms: 20_500,
                announced: false
            }
        );
        assert_eq!(s.probe, None);
    }

    /// A configuration update may raise the threshold while the circuit is open: the probe's
    /// failure still reopens it, rather than leave it half-open to probe again at once.
    #[test]
    fn a_failed_probe_reopens_under_a_threshold_raised_since() {
        let mut s = opened_at(0);
        let raised = BreakerPolicy {
            failure_threshold: 10,
            ..POLICY
        };
        assert_eq!(
            s.admit(A, 1, 10_000, 10_000 + LEASE_MS, &raised),
            Admit::Granted
        );
        s.record(A, 1, false, 10_500, &raised);
        assert!(s.is_open(10_500));
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut s = EndpointState::default();
        for slot in 0..2 {
            admit(&mut s, slot, 0);
            s.record(A, slot, false, 0, &POLICY);
        }
        admit(&mut s, 5, 0);
        s.record(A, 5, true, 0, &POLICY);
        assert_eq!(s.consecutive_failures(), 0);
        for slot in 0..2 {
            admit(&mut s, slot, 0);
            s.record(A, slot, false, 0, &POLICY);
        }
        assert!(!s.is_open(0));
        assert_eq!(s.consecutive_failures(), 2);
    }

    #[test]
    fn late_failures_while_open_do_not_extend_it() {
        let mut s = EndpointState::default();
        admit(&mut s, 7, 0); // in flight before the breaker opens
        for slot in 0..3 {
            admit(&mut s, slot, 0);
            s.record(A, slot, false, 0, &POLICY);
        }
        s.record(A, 7, false, 4_000, &POLICY);
        assert_eq!(
            admit(&mut s, 8, 4_000),
            Admit::Open {
                until_ms: 10_000,
                announced: false
            }
        );
    }

    /// An attempt in flight when the breaker opened that fails once it is half-open (its
    /// `timeoutMs` longer than `openMs`) is not the probe: only the probe's verdict decides,
    /// so it neither reopens the breaker behind the probe's back nor holds the deliveries
    /// waiting for the probe another `openMs`.
    #[test]
    fn a_late_failure_while_half_open_leaves_the_verdict_to_the_probe() {
        let mut s = EndpointState::default();
        admit(&mut s, 7, 0); // in flight before the breaker opens
        for slot in 0..3 {
            admit(&mut s, slot, 0);
            s.record(A, slot, false, 0, &POLICY);
        }
        assert_eq!(admit(&mut s, 1, 10_000), Admit::Granted, "the probe");
        s.record(A, 7, false, 12_000, &POLICY);
        assert!(!s.is_open(12_000), "half-open still: the probe is out");
        assert_eq!(admit(&mut s, 2, 12_000), Admit::ProbeBusy);
        s.record(A, 1, true, 12_500, &POLICY);
        assert_eq!(
            admit(&mut s, 3, 12_500),
            Admit::Granted,
            "the probe closed it"
        );
    }

    #[test]
    fn zero_threshold_opens_on_the_first_failure() {
        let policy = BreakerPolicy {
            failure_threshold: 0,
            ..POLICY
        };
        let mut s = EndpointState::default();
        s.admit(A, 1, 0, LEASE_MS, &policy);
        assert!(!s.is_open(0));
        s.record(A, 1, false, 0, &policy);
        assert!(s.is_open(0));
    }

    #[test]
    fn serialized_state_is_small_and_round_trips() {
        let empty = String::from_utf8(EndpointState::default().encode()).unwrap();
        assert_eq!(empty, "{}");

        let mut s = opened_at(0);
        admit(&mut s, 4, 10_000);
        let json = String::from_utf8(s.encode()).unwrap();
        assert_eq!(
            json,
            r#"{"f":3,"o":10000,"p":{"s":4,"u":15000},"l":[{"h":11,"n":1,"u":15000}]}"#
        );
        let back = EndpointState::decode(json.as_bytes()).unwrap();
        assert_eq!(back, s);
        // Gone at one target, paused at it: the keys the state above leaves out.
        let s = EndpointState {
            gone: Some(7),
            pause: Some(Pause {
                until_ms: 20_000,
                target: 7,
            }),
            ..EndpointState::default()
        };
        let json = String::from_utf8(s.encode()).unwrap();
        assert_eq!(json, r#"{"g":7,"q":20000,"qt":7}"#);
        assert_eq!(EndpointState::decode(json.as_bytes()).unwrap(), s);
        let back = EndpointState::decode(b"{}").unwrap();
        assert_eq!(back, EndpointState::default());
        let back = EndpointState::decode(br#"{"f":1,"o":null,"x":[],"l":[]}"#).unwrap();
        assert_eq!(
            back,
            EndpointState {
                failures: 1,
                ..EndpointState::default()
            }
        );
        for bad in [
            "",
            "[]",
            r#"{"f":-1}"#,
            r#"{"f":4294967296}"#,
            r#"{"p":{"s":1}}"#,
            r#"{"l":[{"h":1,"n":1}]}"#,
        ] {
            assert_eq!(EndpointState::decode(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn places_come_in_blocks_only_while_clean_and_never_beyond_the_bound() {
        let policy = BreakerPolicy {
            max_in_flight: 5,
            ..POLICY
        };
        let mut s = EndpointState::default();
        assert_eq!(
            s.admit_up_to(A, 1, 0, LEASE_MS, &policy, 4),
            (Admit::Granted, 4)
        );
        assert_eq!(
            s.admit_up_to(B, 2, 0, LEASE_MS, &policy, 4),
            (Admit::Granted, 1),
            "only what is left of the bound"
        );
        assert_eq!(s.admit_up_to(B, 3, 0, LEASE_MS, &policy, 4).0, Admit::Full);
        s.give_back(A, 3);
        assert_eq!(s.in_flight(0), 2);
        assert!(s.is_clean(), "places out count no failure");
        s.record(A, 1, false, 0, &policy);
        assert!(!s.is_clean());
        assert_eq!(
            s.admit_up_to(A, 4, 0, LEASE_MS, &policy, 4),
            (Admit::Granted, 1),
            "one at a time once a failure is counted"
        );
    }

    /// Mutation review: a pause the configuration's new target asks for is not lengthened by
    /// the one its old target asked for.
    #[test]
    fn a_pause_asked_at_a_new_target_is_not_lengthened_by_the_old_one() {
        let mut s = EndpointState::default();
        s.hold_off(0, 3_600_000, &POLICY);
        let moved = BreakerPolicy {
            target: 8,
            ..POLICY
        };
        s.hold_off(1_000, 6_000, &moved);
        assert!(s.is_paused(5_999) && !s.is_paused(6_000));
    }

    /// Mutation review: a circuit opened for exactly `openMs`, seen by a VM whose `now` is the
    /// whole slack older, is within the bound: it stays open, not half-open.
    #[test]
    fn a_circuit_open_for_open_ms_holds_for_a_now_the_whole_slack_older() {
        const T: u64 = 1_800_000_000_000;
        let mut s = opened_at(T);
        let older = T - CLOCK_SLACK_US / 1000;
        assert!(!s.bound_waits(older, &POLICY), "nothing to bound");
        assert_eq!(
            admit(&mut s, 9, older),
            Admit::Open {
                until_ms: T + POLICY.open_ms,
                announced: false
            }
        );
    }

    /// Mutation review: a pause of exactly the cap, seen by a VM whose `now` is the whole
    /// slack older, holds as asked.
    #[test]
    fn a_pause_of_the_cap_holds_for_a_now_the_whole_slack_older() {
        const T: u64 = 1_800_000_000_000;
        let cap = POLICY.max_pause_ms;
        let mut s = EndpointState::default();
        s.hold_off(T, T + cap, &POLICY);
        let older = T - CLOCK_SLACK_US / 1000;
        assert!(!s.bound_waits(older, &POLICY), "nothing to bound");
        assert_eq!(
            admit(&mut s, 1, older),
            Admit::Open {
                until_ms: T + cap,
                announced: true
            }
        );
    }

    /// Mutation review: places and the probe leased as far ahead as any configuration leases
    /// them, seen by a VM whose `now` is the whole slack older, were not taken before a step
    /// back: their leases stand, and the record needs no writing.
    #[test]
    fn leases_of_the_furthest_length_stand_for_a_now_the_whole_slack_older() {
        const T: u64 = 1_800_000_000_000;
        let open = T + POLICY.open_ms;
        let mut s = opened_at(T);
        assert_eq!(
            s.admit(B, 9, open, open + FURTHEST_LEASE_MS, &POLICY),
            Admit::Granted,
            "the probe"
        );
        let leased = s.clone();
        let older = open - CLOCK_SLACK_US / 1000;
        assert!(!s.bound_waits(older, &POLICY), "nothing to bound");
        assert_eq!(s, leased);
    }

    /// Mutation review: a bucket emptied to its last token at `t`, seen by a VM whose `now`
    /// is the whole slack older, is at the bound, not beyond it: still empty.
    #[test]
    fn an_emptied_bucket_stays_empty_for_a_now_the_whole_slack_older() {
        let policy = BreakerPolicy {
            max_in_flight: 1_000,
            rate: Some(RatePolicy::new(100, 100)),
            ..POLICY
        };
        let t = 1_800_000_000_000;
        let mut s = EndpointState::default();
        for slot in 0..100 {
            assert_eq!(s.admit(A, slot, t, t + LEASE_MS, &policy), Admit::Granted);
        }
        let older = t - CLOCK_SLACK_US / 1000;
        assert_eq!(
            s.admit(B, 100, older, t + LEASE_MS, &policy),
            Admit::Throttled { until_ms: t + 10 }
        );
    }
}
