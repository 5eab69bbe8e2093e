//! TEMPORARY stub.
#[derive(Debug, Clone, Default)]
pub struct RetryPolicy { pub delays: Vec<u64> }
impl RetryPolicy {
    pub fn max_attempts(&self) -> u32 { self.delays.len() as u32 + 1 }
    pub fn max_delay_ms(&self) -> u64 { 3_600_000 }
    pub fn next_delay_ms(&self, attempts_made: u32, retry_after_ms: Option<u64>, _j: f64) -> Option<u64> {
        let d = *self.delays.get(attempts_made.checked_sub(1)? as usize)?;
        Some(retry_after_ms.map_or(d, |r| r.min(self.max_delay_ms())))
    }
}
pub fn jitter_unit(seed: u64) -> f64 { (seed % 1000) as f64 / 1000.0 }
