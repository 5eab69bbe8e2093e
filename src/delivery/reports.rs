//! Dead-letter reports on the wire, and those waiting to be sent again.
//!
//! A report is the only word a team gets of a delivery given up on, so one that fails is
//! tried again for about twenty minutes: long enough to outlast a dead-letter receiver's
//! deploy or restart. They wait in the sender's memory, not in shared
//! data: bounded, and lost with the VM (a crash, a configuration that replaces it).

use std::collections::VecDeque;

use crate::delivery::tick;

/// Reports one sender keeps on the wire at once (2,000 expiring together once sent 433 in
/// one tick). One that finds the wire full waits its turn with those to be tried again.
pub const MAX_REPORTS_OUT: usize = 64;

/// Delays before the second to the sixth try (about 21 minutes in all); then the report is
/// given up. Four tries over 72 s lost every report of a dead-letter receiver down for a
/// routine deploy.
pub const RETRY_DELAYS_MS: [u64; 5] = [2_000, 10_000, 60_000, 300_000, LONGEST_DELAY_MS];
const LONGEST_DELAY_MS: u64 = 900_000;

/// A waiting report due further ahead than the longest delay and a second was set before
/// the wall clock stepped back: it is due now, rather than held for the step on top of its
/// delay (and holding one of the `MAX_WAITING` places meanwhile).
const MAX_AHEAD_MS: u64 = LONGEST_DELAY_MS + 1_000;

fn is_due(at_ms: u64, now_ms: u64) -> bool {
    tick::every_due(at_ms, now_ms, MAX_AHEAD_MS)
}

/// Reports waiting for the wire or for another try; one more is given up at once.
pub const MAX_WAITING: usize = 256;

/// What the waiting reports may hold in all: each embeds its notification, which may be as
/// large as a watched body.
pub const MAX_WAITING_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The abandoned delivery's `webhook-id`.
    pub webhook_id: String,
    pub body: Vec<u8>,
    /// Tries dispatched so far.
    pub tries: u32,
}

#[derive(Debug, Default)]
pub struct Reports {
    out: usize,
    /// Each with the time it is due.
    waiting: VecDeque<(u64, Report)>,
    waiting_bytes: usize,
}

impl Reports {
    /// Whether one more report may go on the wire now, after those already due.
    pub fn has_room(&self, now_ms: u64) -> bool {
        let due = (self.waiting.iter())
            .filter(|(at, _)| is_due(*at, now_ms))
            .count();
        self.out + due < MAX_REPORTS_OUT
    }

    /// Whether the wire itself has a place.
    pub fn wire_free(&self) -> bool {
        self.out < MAX_REPORTS_OUT
    }

    pub fn sent(&mut self) {
        self.out += 1;
    }

    pub fn answered(&mut self) {
        self.out = self.out.saturating_sub(1);
    }

    /// A try of `report` failed: keep it for another, if it has one left and there is
    /// room. Whether it will be tried again.
    pub fn failed(&mut self, report: Report, now_ms: u64) -> bool {
        let delay = usize::try_from(report.tries)
            .ok()
            .and_then(|tries| tries.checked_sub(1))
            .and_then(|i| RETRY_DELAYS_MS.get(i));
        match delay {
            Some(delay) => self.wait(now_ms.saturating_add(*delay), report),
            None => false,
        }
    }

    /// The wire is full: keep `report` to send, untried, as soon as a place frees. Whether
    /// there was room to keep it.
    pub fn defer(&mut self, report: Report, now_ms: u64) -> bool {
        self.wait(now_ms, report)
    }

    fn wait(&mut self, at_ms: u64, report: Report) -> bool {
        let bytes = self.waiting_bytes.saturating_add(report.body.len());
        if self.waiting.len() >= MAX_WAITING || bytes > MAX_WAITING_BYTES {
            return false;
        }
        self.waiting_bytes = bytes;
        self.waiting.push_back((at_ms, report));
        true
    }

    /// The waiting reports that are due, as many as may go on the wire, oldest due first.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<Report> {
        let mut due = Vec::new();
        while self.out + due.len() < MAX_REPORTS_OUT {
            let next = (self.waiting.iter().enumerate())
                .filter(|(_, (at, _))| is_due(*at, now_ms))
                .min_by_key(|(_, (at, _))| *at)
                .map(|(i, _)| i);
            let Some((_, report)) = next.and_then(|i| self.waiting.remove(i)) else {
                break;
            };
            self.waiting_bytes = self.waiting_bytes.saturating_sub(report.body.len());
            due.push(report);
        }
        due
    }

    /// Reports waiting for the wire or another try.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Give up every waiting report (its sender is closing); how many there were.
    pub fn give_up_waiting(&mut self) -> usize {
        self.waiting_bytes = 0;
        std::mem::take(&mut self.waiting).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(tries: u32) -> Report {
        Report {
            webhook_id: format!("msg_{tries}"),
            body: b"{}".to_vec(),
            tries,
        }
    }

    #[test]
    fn a_report_is_tried_six_times_over_twenty_minutes_and_more() {
        let mut r = Reports::default();
        let mut now = 0;
        let mut report = report(1);
        for delay in RETRY_DELAYS_MS {
            assert!(r.failed(report.clone(), now));
            assert!(r.take_due(now + delay - 1).is_empty());
            now += delay;
            let due = r.take_due(now);
            assert_eq!(due, vec![report.clone()]);
            report.tries += 1;
        }
        assert_eq!(report.tries, 6);
        assert!(now > 20 * 60_000, "tried over {now} ms");
        assert!(!r.failed(report, now), "given up after the sixth try");
        assert_eq!(r.waiting(), 0);
    }

    #[test]
    fn waiting_reports_are_bounded_and_leave_no_more_than_the_wire_has_room_for() {
        let mut r = Reports::default();
        for _ in 0..MAX_WAITING {
            assert!(r.failed(report(1), 0));
        }
        assert!(!r.failed(report(1), 0), "no room: given up");
        for _ in 0..10 {
            r.sent();
        }
        let due = r.take_due(RETRY_DELAYS_MS[0]);
        assert_eq!(due.len(), MAX_REPORTS_OUT - 10);
        assert_eq!(r.waiting(), MAX_WAITING - due.len());
        assert!(r.wire_free(), "taking them does not count them as sent");
        for _ in &due {
            r.sent();
        }
        assert!(!r.wire_free() && !r.has_room(0));
        assert!(r.take_due(u64::MAX).is_empty());
        r.answered();
        assert_eq!(r.take_due(u64::MAX).len(), 1);
    }

    /// Reports come due in the order of their times, not of their failures.
    #[test]
    fn a_later_failure_due_sooner_goes_first() {
        let mut r = Reports::default();
        assert!(r.failed(report(3), 0)); // due at 60 s
        assert!(r.failed(report(1), 1_000)); // due at 3 s
        assert_eq!(r.take_due(3_000), vec![report(1)]);
        assert_eq!(r.take_due(60_000), vec![report(3)]);
    }

    /// A report deferred for a full wire goes before first tries that come after it: the
    /// room a new report asks for counts the ones already due.
    #[test]
    fn reports_already_due_come_before_new_ones() {
        let mut r = Reports::default();
        for _ in 0..MAX_REPORTS_OUT - 1 {
            r.sent();
        }
        assert!(r.has_room(0));
        assert!(r.defer(report(1), 0));
        assert!(!r.has_room(0), "the deferred report takes the last place");
        assert!(r.has_room(u64::MAX) == r.has_room(0));
        assert_eq!(r.take_due(0), vec![report(1)]);
    }

    /// A report waiting for a later try takes no place on the wire until it is due: the
    /// reports of deliveries ending unsent may go meanwhile.
    #[test]
    fn a_report_waiting_for_a_later_try_leaves_the_wire_to_new_ones_until_due() {
        let mut r = Reports::default();
        for _ in 0..MAX_REPORTS_OUT - 1 {
            r.sent();
        }
        assert!(r.failed(report(1), 0)); // due at 2 s
        assert!(
            r.has_room(RETRY_DELAYS_MS[0] - 1),
            "not due yet: the last place is free"
        );
        assert!(
            !r.has_room(RETRY_DELAYS_MS[0]),
            "due: it takes the last place"
        );
    }

    /// The host's clock is the wall clock: stepped back (NTP, a resumed machine) after a
    /// report was set to wait, the report must not wait for the step on top of its delay,
    /// filling the 256 places meanwhile so that later reports are given up unsent.
    #[test]
    fn a_clock_stepped_back_does_not_hold_a_waiting_report_for_the_step() {
        let hour = 3_600_000;
        let mut r = Reports::default();
        for _ in 0..MAX_REPORTS_OUT - 1 {
            r.sent();
        }
        assert!(r.failed(report(1), 10 * hour)); // due 2 s later
        let now = 9 * hour; // the clock went back an hour
        assert!(!r.has_room(now), "it is due: it takes the last place");
        assert_eq!(r.take_due(now), vec![report(1)]);
        for _ in 0..MAX_REPORTS_OUT - 1 {
            r.answered();
        }
        // A report legitimately waiting its longest delay is not due early.
        assert!(RETRY_DELAYS_MS.iter().all(|d| *d < MAX_AHEAD_MS));
        let longest = RETRY_DELAYS_MS[RETRY_DELAYS_MS.len() - 1];
        assert!(r.failed(report(5), 0));
        assert!(r.take_due(0).is_empty());
        assert!(r.take_due(longest - 1).is_empty());
        assert_eq!(r.take_due(longest), vec![report(5)]);
    }

    /// Each report embeds its notification: what waits is bounded in bytes too.
    #[test]
    fn waiting_reports_are_bounded_in_bytes() {
        let mut r = Reports::default();
        let big = Report {
            body: vec![b'x'; MAX_WAITING_BYTES / 4],
            ..report(1)
        };
        for _ in 0..4 {
            assert!(r.failed(big.clone(), 0));
        }
        assert!(!r.failed(report(1), 0), "no bytes left");
        assert_eq!(r.take_due(RETRY_DELAYS_MS[0]).len(), 4);
        assert!(r.failed(report(1), 0), "their bytes came back");
    }

    /// A closing sender gives up what waits and may still defer reports of replies it is
    /// owed: the bytes given up must not count against those.
    #[test]
    fn giving_up_the_waiting_reports_frees_their_bytes() {
        let mut r = Reports::default();
        let big = Report {
            body: vec![b'x'; MAX_WAITING_BYTES / 2 + 1],
            ..report(1)
        };
        assert!(r.failed(big.clone(), 0));
        assert_eq!(r.give_up_waiting(), 1);
        assert!(r.defer(big, 0), "their bytes came back");
    }

    /// Several reports due at once leave in the order of their due times, and when the wire
    /// has room for only one, the one due first takes it.
    #[test]
    fn reports_due_together_leave_earliest_due_first() {
        let mut r = Reports::default();
        assert!(r.failed(report(3), 0)); // due at 60 s
        assert!(r.failed(report(1), 1_000)); // due at 3 s
        assert_eq!(r.take_due(60_000), vec![report(1), report(3)]);

        let mut r = Reports::default();
        for _ in 0..MAX_REPORTS_OUT - 1 {
            r.sent();
        }
        assert!(r.failed(report(3), 0));
        assert!(r.failed(report(1), 1_000));
        assert_eq!(r.take_due(60_000), vec![report(1)]);
    }
}
