//! A root context's tick: most ticks do the regular work (`tickMs` apart); a tick brought
//! forward for large bodies waiting to be read (`tick_soon` in the host) does only those
//! reads, and the timer is then set for when the regular one is due.

use std::cell::Cell;

/// What one tick does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Only the reads that wait; the next tick comes in `next_in_ms` (at least 1), when the
    /// regular one is due.
    Early { next_in_ms: u64 },
    /// The regular work; the next regular tick is due at `next_at_ms`, `tick_ms` on.
    Regular { next_at_ms: u64 },
}

/// The tick at `now_ms`, the regular one being due at `regular_at_ms`, which the last
/// regular tick set `tick_ms` after its own time.
///
/// The host's clock is the wall clock: stepped back (NTP, a resumed machine), or giving
/// nothing (0), it can put the regular tick more than a period ahead, and waiting for it
/// would stop the root context's regular work (retries, sweeps, heartbeats, metrics) for as
/// long as the step. A regular tick can never be a whole period away, so such a tick is
/// taken as the regular one, due now.
pub fn plan(now_ms: u64, regular_at_ms: u64, tick_ms: u64) -> Tick {
    let ahead = regular_at_ms.saturating_sub(now_ms);
    if ahead > 0 && ahead < tick_ms {
        return Tick::Early { next_in_ms: ahead };
    }
    Tick::Regular {
        next_at_ms: now_ms.saturating_add(tick_ms),
    }
}

/// Whether work done every `period_ms`, whose next time was set for `next_at_ms` (its last
/// time and `period_ms`), is due at `now_ms`. The host's clock is the wall clock: stepped
/// back (NTP, a resumed machine), it would put the next time further ahead than a period
/// ever is, and the work would wait for as long as the step. Such a time is taken as due now.
pub fn every_due(next_at_ms: u64, now_ms: u64, period_ms: u64) -> bool {
    now_ms >= next_at_ms || next_at_ms - now_ms > period_ms
}

/// How often an `EveryMinute` warning may be said.
const MINUTE_MS: u64 = 60_000;

/// A warning said at most once a minute per VM: what it reports goes on, and the metric
/// beside it counts each time. A minute by `every_due`: a wall clock stepped back after a
/// warning would otherwise silence it for as long as the step.
#[derive(Debug, Default)]
pub struct EveryMinute(Cell<Option<u64>>);

impl EveryMinute {
    /// Whether to say it at `now_ms` (and, if so, that it was said then).
    pub fn due(&self, now_ms: u64) -> bool {
        let due = self
            .0
            .get()
            .is_none_or(|at| every_due(at.saturating_add(MINUTE_MS), now_ms, MINUTE_MS));
        if due {
            self.0.set(Some(now_ms));
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_tick_is_regular() {
        assert_eq!(plan(1_000, 0, 200), Tick::Regular { next_at_ms: 1_200 });
    }

    #[test]
    fn a_tick_brought_forward_waits_for_the_regular_one() {
        assert_eq!(plan(1_050, 1_200, 200), Tick::Early { next_in_ms: 150 });
        assert_eq!(plan(1_199, 1_200, 200), Tick::Early { next_in_ms: 1 });
        assert_eq!(plan(1_200, 1_200, 200), Tick::Regular { next_at_ms: 1_400 });
        assert_eq!(plan(1_450, 1_200, 200), Tick::Regular { next_at_ms: 1_650 });
    }

    /// The host's clock is the wall clock: stepped back (NTP, a VM resumed), the regular
    /// tick set before the step lies further ahead than a period. Waiting for it stopped the
    /// root context's retries, sweeps, heartbeats and metrics for as long as the step.
    #[test]
    fn a_clock_stepped_back_does_not_hold_the_regular_tick() {
        // A regular tick at T set the next for T + 200; 150 ms later the clock went back an
        // hour.
        const T: u64 = 1_764_000_000_000;
        let now = T + 150 - 3_600_000;
        assert_eq!(
            plan(now, T + 200, 200),
            Tick::Regular {
                next_at_ms: now + 200
            }
        );
        // Back by less than the elapsed part of the period: still early, within a period.
        match plan(T + 100, T + 200, 200) {
            Tick::Early { next_in_ms } => assert!(next_in_ms <= 200),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn periodic_work_comes_a_period_apart_and_not_a_clock_step_apart() {
        let (hour, period) = (3_600_000, 1_000);
        let next = hour + period; // set by the work done at 1 h
        assert!(!every_due(next, hour, period));
        assert!(!every_due(next, next - 1, period));
        assert!(every_due(next, next, period));
        assert!(every_due(next, next + 5_000, period));
        // The clock stepped back an hour after that: the next is due now, not in an hour.
        assert!(every_due(next, 500, period));
    }

    /// A host whose clock gives nothing (`now_ms` 0 at every tick) still ticks regularly.
    #[test]
    fn a_clock_that_does_not_move_does_not_hold_the_regular_tick() {
        let Tick::Regular { next_at_ms } = plan(0, 0, 200) else {
            panic!("the first tick is regular");
        };
        assert_eq!(plan(0, next_at_ms, 200), Tick::Regular { next_at_ms: 200 });
    }

    #[test]
    fn a_warning_is_said_at_most_once_a_minute() {
        let w = EveryMinute::default();
        assert!(w.due(1_000));
        assert!(!w.due(1_000));
        assert!(!w.due(60_999));
        assert!(w.due(61_000));
        assert!(!w.due(61_001));
    }

    /// The host's clock is the wall clock: stepped back (NTP, a resumed machine) after a
    /// warning, it silenced the warning for as long as the step (an hour's step, an hour of
    /// streams counted in `streams_unlogged` without the line that says why), rather than a
    /// minute.
    #[test]
    fn a_clock_stepped_back_does_not_silence_a_warning_for_the_step() {
        const T: u64 = 1_764_000_000_000;
        let w = EveryMinute::default();
        assert!(w.due(T));
        let back = T + 10_000 - 3_600_000;
        assert!(w.due(back), "a minute on this clock is not an hour away");
        assert!(!w.due(back + 1_000), "and then once a minute again");
        assert!(w.due(back + 60_000));
    }
}
