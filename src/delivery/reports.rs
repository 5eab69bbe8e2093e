//! Dead-letter reports on the wire, and those waiting to be sent again.
//!
//! A report is the only word a team gets of a delivery given up on, so one that fails is
//! tried again a few times over a minute. They wait in the sender's memory, not in shared
//! data: bounded, and lost with the VM (a crash, a configuration that replaces it).

use std::collections::VecDeque;

/// Reports one sender keeps on the wire at once (2,000 expiring together once sent 433 in
/// one tick).
pub const MAX_REPORTS_OUT: usize = 64;

/// Delays before the second, third and fourth try; then the report is given up.
pub const RETRY_DELAYS_MS: [u64; 3] = [2_000, 10_000, 60_000];

/// Reports waiting for another try; a failure beyond them is given up at once.
pub const MAX_WAITING: usize = 256;

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
}

impl Reports {
    /// Whether one more report may go on the wire now.
    pub fn has_room(&self) -> bool {
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
            Some(delay) if self.waiting.len() < MAX_WAITING => {
                self.waiting
                    .push_back((now_ms.saturating_add(*delay), report));
                true
            }
            _ => false,
        }
    }

    /// The waiting reports that are due, as many as may go on the wire.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<Report> {
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() && self.out + due.len() < MAX_REPORTS_OUT {
            match self.waiting.get(i) {
                Some((at, _)) if *at <= now_ms => {
                    if let Some((_, report)) = self.waiting.remove(i) {
                        due.push(report);
                    }
                }
                _ => i += 1,
            }
        }
        due
    }

    /// Reports waiting for another try.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Give up every waiting report (its sender is closing); how many there were.
    pub fn give_up_waiting(&mut self) -> usize {
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
    fn a_report_is_tried_four_times_in_all_over_a_minute_and_more() {
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
        assert_eq!(report.tries, 4);
        assert!(!r.failed(report, now), "given up after the fourth try");
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
        assert!(r.has_room(), "taking them does not count them as sent");
        for _ in &due {
            r.sent();
        }
        assert!(!r.has_room());
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
}
