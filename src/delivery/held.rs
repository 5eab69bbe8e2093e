//! The slots a sender waits to retry as soon as a place frees: first in, first out, and each
//! slot at most once.
//!
//! Copies were the trouble: through a long outage the breaker refuses the same deliveries
//! again and again and the sweep finds them too, so a queue that took every refusal filled
//! with copies, and once full it forgot the deliveries that came after (measured: 454 of
//! 20,000 waited seconds for the sweep to find them). Holding each slot once, the queue
//! never needs more room than the ledger has slots, so it forgets nothing.

use std::collections::VecDeque;

#[derive(Debug, Default)]
pub struct Held {
    order: VecDeque<u32>,
    /// One bit per slot: set while the slot is in `order`.
    queued: Vec<u64>,
}

impl Held {
    /// Queue `slot` at the back, unless it is queued already (it keeps its place).
    pub fn push(&mut self, slot: u32) {
        let (word, bit) = Self::at(slot);
        if self.queued.len() <= word {
            self.queued.resize(word + 1, 0);
        }
        if let Some(w) = self.queued.get_mut(word) {
            if *w & bit == 0 {
                *w |= bit;
                self.order.push_back(slot);
            }
        }
    }

    pub fn pop(&mut self) -> Option<u32> {
        let slot = self.order.pop_front()?;
        let (word, bit) = Self::at(slot);
        if let Some(w) = self.queued.get_mut(word) {
            *w &= !bit;
        }
        Some(slot)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn at(slot: u32) -> (usize, u64) {
        ((slot / 64) as usize, 1 << (slot % 64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(h: &mut Held) -> Vec<u32> {
        std::iter::from_fn(|| h.pop()).collect()
    }

    #[test]
    fn slots_come_out_in_the_order_they_first_went_in_once_each() {
        let mut h = Held::default();
        for s in [5, 900, 5, 63, 64, 900, 0] {
            h.push(s);
        }
        assert_eq!((h.len(), h.is_empty()), (5, false));
        assert_eq!(drain(&mut h), vec![5, 900, 63, 64, 0]);
        assert!(h.is_empty());
    }

    #[test]
    fn a_slot_taken_out_may_be_queued_again_at_the_back() {
        let mut h = Held::default();
        h.push(1);
        h.push(2);
        assert_eq!(h.pop(), Some(1));
        h.push(1);
        h.push(2);
        assert_eq!(drain(&mut h), vec![2, 1]);
    }

    #[test]
    fn the_largest_ledger_s_slots_are_held_too() {
        let mut h = Held::default();
        h.push(999_999);
        h.push(1);
        h.push(999_999);
        assert_eq!(drain(&mut h), vec![999_999, 1]);
    }

    /// One bit a slot: holding the largest ledger's last slot takes its 125 kB of bits, not
    /// the 512 MB a word a slot would (a VM's memory is not that large).
    #[test]
    fn holding_a_slot_takes_a_bit_a_slot() {
        let mut h = Held::default();
        let last = crate::config::MAX_PENDING_LIMIT - 1;
        h.push(last);
        let bytes = h.queued.capacity() * std::mem::size_of::<u64>();
        assert!(
            bytes <= crate::config::MAX_PENDING_LIMIT as usize / 8 + 8,
            "{bytes} bytes"
        );
        assert_eq!(drain(&mut h), vec![last]);
    }
}
