//! When to try a webhook again: a validated policy and the delay it gives after each failure.
//!
//! Pure arithmetic with the randomness injected (`jitter_unit`), so schedules are reproducible
//! in tests and identical across Envoy workers that derive the seed from the same webhook id.

use std::fmt;

/// How the delay between attempts grows.
#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    /// `initial_delay_ms * multiplier^(k-1)` before retry `k`.
    Exponential {
        initial_delay_ms: u64,
        multiplier: f64,
    },
    /// Explicit delays: entry `k-1` before retry `k`; one attempt more than entries.
    Schedule(Vec<u64>),
}

/// A validated retry policy; construct with `try_new` so `next_delay_ms` needs no checks.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: Backoff,
    max_delay_ms: u64,
    jitter: f64,
}

/// Why `RetryPolicy::try_new` refused its input: one variant per rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryError {
    MaxAttempts,
    InitialDelay,
    Multiplier,
    MaxDelay,
    MaxDelayBelowInitial {
        initial_delay_ms: u64,
    },
    Jitter,
    ScheduleEmpty,
    ScheduleTooLong {
        len: usize,
    },
    /// The entry at `index` is 0 or beyond `max_delay_ms`: both named, as the default cap
    /// (an hour) is not in the configuration being read.
    ScheduleEntry {
        index: usize,
        delay_ms: u64,
        max_delay_ms: u64,
    },
    ScheduleAttempts {
        expected: usize,
    },
}

/// `RetryPolicy::default()`'s values: configuration fills unset retry fields from these.
pub(crate) const DEFAULT_MAX_ATTEMPTS: u32 = 8;
pub(crate) const DEFAULT_INITIAL_DELAY_MS: u64 = 5_000;
pub(crate) const DEFAULT_MULTIPLIER: f64 = 2.0;
pub(crate) const DEFAULT_MAX_DELAY_MS: u64 = 3_600_000;
pub(crate) const DEFAULT_JITTER: f64 = 0.2;

/// Bounds shared by validation and the messages that explain it.
const MAX_ATTEMPTS: u32 = 100;
const MAX_SCHEDULE: usize = (MAX_ATTEMPTS as usize) - 1;

impl RetryError {
    /// The camelCase configuration field the rule is about, so config errors can name a path.
    pub fn field(&self) -> &'static str {
        match self {
            RetryError::MaxAttempts | RetryError::ScheduleAttempts { .. } => "maxAttempts",
            RetryError::InitialDelay => "initialDelayMs",
            RetryError::Multiplier => "multiplier",
            RetryError::MaxDelay | RetryError::MaxDelayBelowInitial { .. } => "maxDelayMs",
            RetryError::Jitter => "jitter",
            RetryError::ScheduleEmpty
            | RetryError::ScheduleTooLong { .. }
            | RetryError::ScheduleEntry { .. } => "schedule",
        }
    }

    /// The rule that was broken, without the field name.
    pub fn reason(&self) -> String {
        match self {
            RetryError::MaxAttempts => format!("must be between 1 and {MAX_ATTEMPTS}"),
            RetryError::InitialDelay => "must be at least 1".to_string(),
            RetryError::Multiplier => "must be a finite number >= 1.0".to_string(),
            RetryError::MaxDelay => "must be at least 1".to_string(),
            RetryError::MaxDelayBelowInitial { initial_delay_ms } => {
                format!("must be >= initialDelayMs ({initial_delay_ms})")
            }
            RetryError::Jitter => "must be a finite number in [0, 1)".to_string(),
            RetryError::ScheduleEmpty => "must not be empty".to_string(),
            RetryError::ScheduleTooLong { len } => {
                format!("must have at most {MAX_SCHEDULE} entries, got {len}")
            }
            RetryError::ScheduleEntry {
                index,
                delay_ms,
                max_delay_ms,
            } => {
                format!(
                    "entry {index} ({delay_ms}) must be between 1 and maxDelayMs ({max_delay_ms})"
                )
            }
            RetryError::ScheduleAttempts { expected } => {
                format!("must equal the schedule length + 1 ({expected})")
            }
        }
    }
}

impl fmt::Display for RetryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field(), self.reason())
    }
}

impl std::error::Error for RetryError {}

impl RetryPolicy {
    /// With `Backoff::Schedule`, `max_attempts` must be `schedule.len() + 1`: a mismatch would
    /// silently drop schedule entries or invent delays, so it is refused.
    pub fn try_new(
        max_attempts: u32,
        backoff: Backoff,
        max_delay_ms: u64,
        jitter: f64,
    ) -> Result<Self, RetryError> {
        if max_delay_ms < 1 {
            return Err(RetryError::MaxDelay);
        }
        if !jitter.is_finite() || !(0.0..1.0).contains(&jitter) {
            return Err(RetryError::Jitter);
        }
        match &backoff {
            Backoff::Exponential {
                initial_delay_ms,
                multiplier,
            } => {
                if *initial_delay_ms < 1 {
                    return Err(RetryError::InitialDelay);
                }
                if !multiplier.is_finite() || *multiplier < 1.0 {
                    return Err(RetryError::Multiplier);
                }
                if max_delay_ms < *initial_delay_ms {
                    return Err(RetryError::MaxDelayBelowInitial {
                        initial_delay_ms: *initial_delay_ms,
                    });
                }
            }
            Backoff::Schedule(schedule) => {
                if schedule.is_empty() {
                    return Err(RetryError::ScheduleEmpty);
                }
                if schedule.len() > MAX_SCHEDULE {
                    return Err(RetryError::ScheduleTooLong {
                        len: schedule.len(),
                    });
                }
                let mut bad = schedule.iter().enumerate();
                if let Some((index, &delay_ms)) = bad.find(|&(_, &d)| d < 1 || d > max_delay_ms) {
                    return Err(RetryError::ScheduleEntry {
                        index,
                        delay_ms,
                        max_delay_ms,
                    });
                }
            }
        }
        if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(RetryError::MaxAttempts);
        }
        if let Backoff::Schedule(schedule) = &backoff {
            let expected = schedule.len().saturating_add(1);
            if usize::try_from(max_attempts).ok() != Some(expected) {
                return Err(RetryError::ScheduleAttempts { expected });
            }
        }
        Ok(Self {
            max_attempts,
            backoff,
            max_delay_ms,
            jitter,
        })
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    pub fn max_delay_ms(&self) -> u64 {
        self.max_delay_ms
    }

    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The longest the schedule itself can take from the first attempt to the last: every
    /// delay at full jitter, none lengthened by a `Retry-After`.
    pub fn schedule_span_ms(&self) -> u64 {
        (1..self.max_attempts)
            .filter_map(|k| self.next_delay_ms(k, None, 1.0))
            .fold(0, u64::saturating_add)
    }

    /// Delay before the next attempt after `attempts_made` attempts failed (1 = the first
    /// attempt failed); `None` once `attempts_made >= max_attempts` (exhausted). With no
    /// attempt made yet the answer is `Some(0)`: the first attempt is not delayed.
    ///
    /// `retry_after_ms` is a Retry-After the receiver sent (only for 429/503): the receiver
    /// knows its load better than our curve, so it may lengthen the delay (capped at
    /// `max_delay_ms`, so a hostile value cannot park a delivery forever), but not shorten
    /// it: a `Retry-After: 0` from a shedding load balancer would spend every attempt within
    /// seconds, all of a burst's retries in the same tick.
    ///
    /// `jitter_unit` is a number in [0, 1) from the caller (see `jitter_unit`), mapped to a
    /// factor in [1 - jitter, 1 + jitter] to spread retries of a burst of failures.
    pub fn next_delay_ms(
        &self,
        attempts_made: u32,
        retry_after_ms: Option<u64>,
        jitter_unit: f64,
    ) -> Option<u64> {
        if attempts_made >= self.max_attempts {
            return None;
        }
        if attempts_made == 0 {
            return Some(0);
        }
        let base = match &self.backoff {
            Backoff::Exponential {
                initial_delay_ms,
                multiplier,
            } => self.exponential(*initial_delay_ms, *multiplier, attempts_made),
            Backoff::Schedule(schedule) => {
                let index = usize::try_from(attempts_made - 1).ok()?;
                schedule.get(index).copied()?.min(self.max_delay_ms)
            }
        };
        let delay = self.jittered(base, jitter_unit);
        Some(match retry_after_ms {
            Some(retry_after) => delay.max(retry_after.min(self.max_delay_ms)),
            None => delay,
        })
    }

    /// `min(initial * multiplier^(k-1), max_delay)` computed in f64 so a huge exponent
    /// saturates to infinity (then to the cap) instead of overflowing.
    fn exponential(&self, initial_delay_ms: u64, multiplier: f64, k: u32) -> u64 {
        let exponent = i32::try_from(k.saturating_sub(1)).unwrap_or(i32::MAX);
        let raw = initial_delay_ms as f64 * multiplier.powi(exponent);
        let cap = self.max_delay_ms as f64;
        if !raw.is_finite() || raw >= cap {
            self.max_delay_ms
        } else {
            // In [initial, max_delay): fits in u64; `as` saturates anyway.
            (raw.round() as u64).min(self.max_delay_ms)
        }
    }

    fn jittered(&self, base: u64, unit: f64) -> u64 {
        if self.jitter == 0.0 {
            return base;
        }
        // A bad unit from the caller degrades to "no jitter" rather than a wild delay.
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let factor = 1.0 - self.jitter + 2.0 * self.jitter * unit;
        let delay = base as f64 * factor;
        if !delay.is_finite() || delay >= self.max_delay_ms as f64 {
            self.max_delay_ms
        } else {
            (delay.round().max(0.0) as u64).min(self.max_delay_ms)
        }
    }
}

/// Eight attempts, 5 s doubling, ±20 %: retries at about 5, 10, 20, 40, 80, 160 and 320 s,
/// about 10.6 minutes in all. Svix spreads 7 retries from 5 s to 10 h, which outlives a
/// proxy's in-memory queue and restarts; OsmoX's own webhook gives up after 5 tries in 62 s,
/// shorter than a routine receiver deploy. Ten minutes rides out a deploy or brief outage while
/// bounding how long pending deliveries occupy `limits.maxPending`.
impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::Exponential {
                initial_delay_ms: DEFAULT_INITIAL_DELAY_MS,
                multiplier: DEFAULT_MULTIPLIER,
            },
            max_delay_ms: DEFAULT_MAX_DELAY_MS,
            jitter: DEFAULT_JITTER,
        }
    }
}

/// A deterministic value in [0, 1) from `seed` (splitmix64): callers seed with the webhook id
/// and attempt, so retries spread out yet every worker and test computes the same delay.
pub fn jitter_unit(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // The top 53 bits fill an f64 mantissa exactly, so the result is < 1.0.
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(max_attempts: u32, initial: u64, multiplier: f64, max: u64, jitter: f64) -> RetryPolicy {
        RetryPolicy::try_new(
            max_attempts,
            Backoff::Exponential {
                initial_delay_ms: initial,
                multiplier,
            },
            max,
            jitter,
        )
        .unwrap()
    }

    fn delays(p: &RetryPolicy) -> Vec<u64> {
        (1..p.max_attempts())
            .map(|k| p.next_delay_ms(k, None, 0.5).unwrap())
            .collect()
    }

    #[test]
    fn the_schedule_span_takes_every_delay_at_full_jitter() {
        // 5 + 10 + ... + 320 s = 635 s, each up to 20 % longer.
        assert_eq!(RetryPolicy::default().schedule_span_ms(), 762_000);
        // Capped delays stay capped: 1 + 2 + 3 + 3 s.
        assert_eq!(
            exp(5, 1_000, 2.0, 3_000, 0.5).schedule_span_ms(),
            1_500 + 3_000 * 3
        );
        let schedule = RetryPolicy::try_new(3, Backoff::Schedule(vec![700, 300]), 1_000, 0.0);
        assert_eq!(schedule.unwrap().schedule_span_ms(), 1_000);
        assert_eq!(exp(1, 1_000, 2.0, 3_000, 0.0).schedule_span_ms(), 0);
    }

    #[test]
    fn first_delay_equals_initial_without_jitter() {
        let p = exp(5, 1234, 3.0, 1_000_000, 0.0);
        assert_eq!(p.next_delay_ms(1, None, 0.9), Some(1234));
    }

    #[test]
    fn delays_grow_by_multiplier() {
        let p = exp(5, 100, 3.0, 1_000_000, 0.0);
        assert_eq!(delays(&p), vec![100, 300, 900, 2700]);
        let p = exp(4, 1000, 1.5, 1_000_000, 0.0);
        assert_eq!(delays(&p), vec![1000, 1500, 2250]);
    }

    #[test]
    fn delays_are_capped_at_max_delay() {
        let p = exp(6, 100, 10.0, 5_000, 0.0);
        assert_eq!(delays(&p), vec![100, 1000, 5000, 5000, 5000]);
    }

    #[test]
    fn huge_exponents_saturate_to_max_delay() {
        let p = exp(100, u64::MAX, 1e300, u64::MAX, 0.9);
        assert_eq!(p.next_delay_ms(99, None, 0.99), Some(u64::MAX));
        let p = exp(100, 1, 2.0, u64::MAX, 0.0);
        assert_eq!(p.next_delay_ms(64, None, 0.0), Some(1 << 63));
        assert_eq!(p.next_delay_ms(99, None, 0.0), Some(u64::MAX));
    }

    #[test]
    fn exhausted_policy_gives_none() {
        let p = exp(3, 100, 2.0, 10_000, 0.2);
        assert_eq!(p.next_delay_ms(2, None, 0.0), Some(160));
        assert_eq!(p.next_delay_ms(3, None, 0.0), None);
        assert_eq!(p.next_delay_ms(u32::MAX, Some(5), 0.0), None);
        let single = exp(1, 100, 2.0, 10_000, 0.0);
        assert_eq!(single.next_delay_ms(1, None, 0.0), None);
    }

    #[test]
    fn no_attempt_made_means_no_delay() {
        assert_eq!(RetryPolicy::default().next_delay_ms(0, None, 0.7), Some(0));
    }

    #[test]
    fn jitter_stays_within_bounds_over_many_seeds() {
        let p = exp(8, 5000, 2.0, 300_000, 0.2);
        for seed in 0..10_000u64 {
            for k in 1..8u32 {
                let base = exp(8, 5000, 2.0, 300_000, 0.0)
                    .next_delay_ms(k, None, 0.0)
                    .unwrap() as f64;
                let d = p.next_delay_ms(k, None, jitter_unit(seed)).unwrap();
                assert!(d as f64 >= (base * 0.8).floor(), "seed {seed} k {k}: {d}");
                assert!(d as f64 <= (base * 1.2).ceil(), "seed {seed} k {k}: {d}");
                assert!(d <= 300_000, "seed {seed} k {k}: {d}");
            }
        }
    }

    #[test]
    fn jitter_spans_its_range() {
        let p = exp(2, 10_000, 2.0, 100_000, 0.2);
        assert_eq!(p.next_delay_ms(1, None, 0.0), Some(8_000));
        assert_eq!(p.next_delay_ms(1, None, 0.5), Some(10_000));
        assert_eq!(p.next_delay_ms(1, None, 0.999_999), Some(12_000));
        let (lo, hi) = (0..10_000u64)
            .map(|s| p.next_delay_ms(1, None, jitter_unit(s)).unwrap())
            .fold((u64::MAX, 0), |(lo, hi), d| (lo.min(d), hi.max(d)));
        assert!(lo < 8_100 && hi > 11_900, "poorly spread: {lo}..{hi}");
    }

    #[test]
    fn jitter_never_exceeds_max_delay() {
        let p = exp(3, 1000, 2.0, 1000, 0.5);
        assert_eq!(p.next_delay_ms(2, None, 0.999), Some(1000));
        assert_eq!(p.next_delay_ms(2, None, 0.0), Some(500));
    }

    #[test]
    fn zero_jitter_adds_nothing() {
        let p = exp(4, 700, 2.0, 100_000, 0.0);
        for seed in 0..100 {
            assert_eq!(p.next_delay_ms(2, None, jitter_unit(seed)), Some(1400));
        }
    }

    #[test]
    fn bad_jitter_unit_means_no_jitter() {
        let p = exp(2, 1000, 2.0, 100_000, 0.5);
        assert_eq!(p.next_delay_ms(1, None, f64::NAN), Some(1000));
        assert_eq!(p.next_delay_ms(1, None, -3.0), Some(500));
    }

    #[test]
    fn schedule_overrides_exponential_curve() {
        let p = RetryPolicy::try_new(4, Backoff::Schedule(vec![5, 300, 7]), 1000, 0.0).unwrap();
        assert_eq!(delays(&p), vec![5, 300, 7]);
        assert_eq!(p.next_delay_ms(4, None, 0.0), None);
    }

    #[test]
    fn schedule_is_jittered_and_capped() {
        let p = RetryPolicy::try_new(2, Backoff::Schedule(vec![1000]), 1100, 0.5).unwrap();
        assert_eq!(p.next_delay_ms(1, None, 0.0), Some(500));
        assert_eq!(p.next_delay_ms(1, None, 0.9), Some(1100));
    }

    #[test]
    fn retry_after_lengthens_the_delay_but_never_shortens_it() {
        let p = exp(5, 1000, 2.0, 60_000, 0.2);
        assert_eq!(p.next_delay_ms(1, Some(42_000), 0.99), Some(42_000));
        // Shorter than the backoff (4000 ms, jittered down to 3200): the backoff holds.
        assert_eq!(p.next_delay_ms(3, Some(0), 0.0), Some(3200));
        assert_eq!(p.next_delay_ms(3, Some(1000), 0.0), Some(3200));
        assert_eq!(p.next_delay_ms(1, Some(u64::MAX), 0.0), Some(60_000));
        assert_eq!(
            p.next_delay_ms(5, Some(0), 0.0),
            None,
            "nor does it add attempts"
        );
    }

    #[test]
    fn default_retries_for_about_ten_minutes() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts(), 8);
        assert_eq!(p.max_delay_ms(), 3_600_000);
        assert_eq!(p.jitter(), 0.2);
        assert_eq!(
            delays(&p),
            vec![5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000]
        );
        assert_eq!(delays(&p).iter().sum::<u64>(), 635_000);
        let same = RetryPolicy::try_new(
            8,
            Backoff::Exponential {
                initial_delay_ms: 5_000,
                multiplier: 2.0,
            },
            3_600_000,
            0.2,
        );
        assert_eq!(same, Ok(p));
    }

    #[test]
    fn jitter_unit_is_deterministic_and_in_range() {
        assert_eq!(jitter_unit(42), jitter_unit(42));
        assert_ne!(jitter_unit(1), jitter_unit(2));
        for seed in (0..10_000u64).chain([u64::MAX, u64::MAX - 1]) {
            let u = jitter_unit(seed);
            assert!((0.0..1.0).contains(&u), "seed {seed}: {u}");
        }
        let mean = (0..10_000u64).map(jitter_unit).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    fn err(max_attempts: u32, backoff: Backoff, max: u64, jitter: f64) -> String {
        RetryPolicy::try_new(max_attempts, backoff, max, jitter)
            .unwrap_err()
            .to_string()
    }

    fn e(initial_delay_ms: u64, multiplier: f64) -> Backoff {
        Backoff::Exponential {
            initial_delay_ms,
            multiplier,
        }
    }

    #[test]
    fn rejects_max_attempts_out_of_range() {
        let msg = "maxAttempts must be between 1 and 100";
        assert_eq!(err(0, e(1, 2.0), 10, 0.0), msg);
        assert_eq!(err(101, e(1, 2.0), 10, 0.0), msg);
        assert!(RetryPolicy::try_new(100, e(1, 2.0), 10, 0.0).is_ok());
    }

    #[test]
    fn rejects_zero_initial_delay() {
        assert_eq!(
            err(3, e(0, 2.0), 10, 0.0),
            "initialDelayMs must be at least 1"
        );
    }

    #[test]
    fn rejects_bad_multiplier() {
        let msg = "multiplier must be a finite number >= 1.0";
        assert_eq!(err(3, e(1, 0.99), 10, 0.0), msg);
        assert_eq!(err(3, e(1, f64::NAN), 10, 0.0), msg);
        assert_eq!(err(3, e(1, f64::INFINITY), 10, 0.0), msg);
        assert!(RetryPolicy::try_new(3, e(1, 1.0), 10, 0.0).is_ok());
    }

    #[test]
    fn rejects_bad_max_delay() {
        assert_eq!(err(3, e(1, 2.0), 0, 0.0), "maxDelayMs must be at least 1");
        assert_eq!(
            err(3, e(500, 2.0), 499, 0.0),
            "maxDelayMs must be >= initialDelayMs (500)"
        );
    }

    #[test]
    fn rejects_bad_jitter() {
        let msg = "jitter must be a finite number in [0, 1)";
        for j in [-0.01, 1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(err(3, e(1, 2.0), 10, j), msg, "jitter {j}");
        }
    }

    #[test]
    fn rejects_bad_schedules() {
        assert_eq!(
            err(1, Backoff::Schedule(vec![]), 10, 0.0),
            "schedule must not be empty"
        );
        assert_eq!(
            err(101, Backoff::Schedule(vec![1; 100]), 10, 0.0),
            "schedule must have at most 99 entries, got 100"
        );
        assert!(RetryPolicy::try_new(100, Backoff::Schedule(vec![1; 99]), 10, 0.0).is_ok());
        assert_eq!(
            err(4, Backoff::Schedule(vec![1, 0, 3]), 10, 0.0),
            "schedule entry 1 (0) must be between 1 and maxDelayMs (10)"
        );
        assert_eq!(
            err(4, Backoff::Schedule(vec![1, 2, 11]), 10, 0.0),
            "schedule entry 2 (11) must be between 1 and maxDelayMs (10)"
        );
        assert_eq!(
            err(3, Backoff::Schedule(vec![1, 2, 3]), 10, 0.0),
            "maxAttempts must equal the schedule length + 1 (4)"
        );
    }

    #[test]
    fn errors_name_their_field() {
        assert_eq!(RetryError::Jitter.field(), "jitter");
        assert_eq!(
            RetryError::ScheduleAttempts { expected: 2 }.field(),
            "maxAttempts"
        );
        assert_eq!(
            RetryError::ScheduleEntry {
                index: 0,
                delay_ms: 0,
                max_delay_ms: 1
            }
            .field(),
            "schedule"
        );
    }

    /// Over many generated policies, small and huge: every delay lies within `maxDelayMs`
    /// and within what `schedule_span_ms` counts for it (so no retry lands past the window
    /// that span sizes), grows with the jitter unit, is lengthened but never shortened by a
    /// `Retry-After`, and there is one exactly while attempts remain.
    #[test]
    fn generated_policies_keep_every_delay_within_its_bounds() {
        let mut rng = crate::json::tests::Rng(0x0dd_ba11_cafe_f00d);
        let big = |rng: &mut crate::json::tests::Rng| match rng.below(4) {
            0 => 1 + rng.below(10) as u64,
            1 => u64::MAX - rng.below(3) as u64,
            2 => 1 + (rng.below(usize::MAX) as u64 >> rng.below(64)),
            _ => 1 + rng.below(10_000_000) as u64,
        };
        let mut checked = 0;
        while checked < 2_000 {
            let max_attempts = 1 + rng.below(100) as u32;
            let max_delay = big(&mut rng);
            let jitter = [0.0, 0.2, 0.5, 0.999_999][rng.below(4)];
            let backoff = if rng.below(3) == 0 {
                let len = (max_attempts - 1) as usize;
                Backoff::Schedule((0..len).map(|_| 1 + big(&mut rng) % max_delay).collect())
            } else {
                Backoff::Exponential {
                    initial_delay_ms: 1 + big(&mut rng) % max_delay,
                    multiplier: [1.0, 1.5, 2.0, 10.0, 1e300][rng.below(5)],
                }
            };
            let Ok(p) = RetryPolicy::try_new(max_attempts, backoff, max_delay, jitter) else {
                continue;
            };
            checked += 1;
            let span = p.schedule_span_ms();
            let mut total: u64 = 0;
            for k in 1..=max_attempts + 1 {
                let Some(top) = p.next_delay_ms(k, None, 1.0) else {
                    assert!(k >= max_attempts, "{p:?}: none after {k}");
                    continue;
                };
                assert!(k < max_attempts, "{p:?}: a delay after {k} attempts");
                total = total.saturating_add(top);
                let mut previous = 0;
                for unit in [0.0, 0.1, 0.5, 0.9, 0.999_999_9] {
                    let d = p.next_delay_ms(k, None, unit).unwrap();
                    assert!(d <= max_delay && d <= top, "{p:?} k {k} unit {unit}: {d}");
                    assert!(d >= previous, "{p:?} k {k}: not monotone in the unit");
                    previous = d;
                    let asked = big(&mut rng);
                    let lengthened = p.next_delay_ms(k, Some(asked), unit).unwrap();
                    assert_eq!(lengthened, d.max(asked.min(max_delay)), "{p:?} k {k}");
                }
            }
            assert_eq!(span, total, "{p:?}");
        }
    }

    /// `initial * multiplier^(k-1)` is rounded to the nearest millisecond, not truncated.
    #[test]
    fn fractional_exponential_delays_round_to_the_nearest_ms() {
        // 5, 7.5, 11.25, 16.875
        let p = exp(5, 5, 1.5, 1_000, 0.0);
        assert_eq!(delays(&p), vec![5, 8, 11, 17]);
    }

    /// A delay that reaches `maxDelayMs` is `maxDelayMs` to the millisecond, even past 2^53 ms
    /// where f64 no longer holds every integer and would round the cap down.
    #[test]
    fn a_delay_at_the_cap_is_the_cap_exactly() {
        let cap = (1u64 << 53) + 1;
        assert_eq!(
            exp(2, cap, 2.0, cap, 0.0).next_delay_ms(1, None, 0.0),
            Some(cap)
        );
        // Jitter 0.5 at unit 0.5 is a factor of exactly 1.
        let p = RetryPolicy::try_new(2, Backoff::Schedule(vec![cap]), cap, 0.5).unwrap();
        assert_eq!(p.next_delay_ms(1, None, 0.5), Some(cap));
    }

    /// The smallest cap, 1 ms, is a valid policy: "at least 1" includes 1.
    #[test]
    fn a_max_delay_of_one_ms_is_valid() {
        let p = RetryPolicy::try_new(3, e(1, 2.0), 1, 0.0);
        assert_eq!(p.map(|p| delays(&p)), Ok(vec![1, 1]));
        let p = RetryPolicy::try_new(2, Backoff::Schedule(vec![1]), 1, 0.0);
        assert_eq!(p.map(|p| delays(&p)), Ok(vec![1]));
    }

    /// `jitter_unit` is splitmix64 (its published outputs for state 0, as seeds 0, γ and 2γ),
    /// scaled to [0, 1): a slip in its mixing still looks uniform to the range and mean checks.
    #[test]
    fn jitter_unit_is_splitmix64() {
        const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
        let unit = |z: u64| (z >> 11) as f64 / (1u64 << 53) as f64;
        assert_eq!(jitter_unit(0), unit(0xE220_A839_7B1D_CDAF));
        assert_eq!(jitter_unit(GAMMA), unit(0x6E78_9E6A_A1B9_65F4));
        assert_eq!(
            jitter_unit(GAMMA.wrapping_mul(2)),
            unit(0x06C4_5D18_8009_454F)
        );
    }

    /// `maxDelayMs` bounds schedule entries inclusively: an entry equal to it is valid.
    #[test]
    fn a_schedule_entry_may_equal_max_delay() {
        let p = RetryPolicy::try_new(3, Backoff::Schedule(vec![10, 10]), 10, 0.0);
        assert_eq!(p.map(|p| delays(&p)), Ok(vec![10, 10]));
    }
}
