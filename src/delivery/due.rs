//! The slots a sender set to come due later (a retry, an open circuit, a pause), soonest
//! first, each with the endpoint it waits for.
//!
//! A slot scheduled again, or taken by the notification's next event and scheduled for
//! that, leaves its earlier entry behind. Those entries are stale: only each slot's latest
//! scheduling counts. A heap that kept them and refused new entries when full forgot live
//! retries for stale ones (measured: of 2,940 retries due at once, 1,854 waited up to 9.3 s
//! for the ledger sweep). Stale entries are skipped as they come up and dropped whenever
//! the heap grows to twice the slots it may name, so it never refuses an entry.
//!
//! Entries are told apart by the number of their scheduling, not by their time: a slot
//! scheduled again for the same time (woken by each new event while its endpoint's circuit
//! is open, until the same moment) had every such entry count as live, so the heap outgrew
//! its bound and every scheduling then swept it in vain; and a slot taken for another
//! endpoint's delivery came due for whichever endpoint's key was smaller.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::events::EndpointKey;

#[derive(Debug, Default)]
pub struct Due {
    /// Due time, slot, the scheduling's number and the endpoint's key: 24 bytes, as without
    /// the number (it fills what was padding).
    heap: BinaryHeap<Reverse<(u64, u32, u32, EndpointKey)>>,
    /// The number of each slot's latest scheduling, by slot; 0 when it is not scheduled.
    latest: Vec<u32>,
    /// The number the last scheduling took.
    numbered: u32,
}

impl Due {
    /// `slot` comes due at `at_ms` for the endpoint `key`, whatever it was scheduled for
    /// before. `slots`: how many slots the ledger has (the live entries at most).
    pub fn schedule(&mut self, at_ms: u64, slot: u32, key: EndpointKey, slots: usize) {
        let number = self.next_number();
        let i = slot as usize;
        if self.latest.len() <= i {
            // Doubling when full, never past the ledger's slots (a growing Vec may take
            // twice). Doubled whenever it grew by a slot, it held room for all of 100,000
            // slots once 14 of them were scheduled.
            if self.latest.capacity() <= i {
                let doubled = self.latest.capacity().max(8).saturating_mul(2);
                let room = doubled.min(slots).max(i.saturating_add(1));
                self.latest
                    .reserve_exact(room.saturating_sub(self.latest.len()));
            }
            self.latest.resize(i + 1, 0);
        }
        if let Some(n) = self.latest.get_mut(i) {
            *n = number;
        }
        let bound = slots.max(1).saturating_mul(2);
        if self.heap.len() >= bound {
            self.drop_stale();
        }
        if self.heap.len() == self.heap.capacity() {
            // Doubling, but never past what the bound needs: a heap of 20,000 entries would
            // otherwise hold room for 32,768.
            let doubled = self.heap.capacity().max(4).saturating_mul(2);
            let room = doubled.min(bound.saturating_add(1));
            self.heap
                .reserve_exact(room.saturating_sub(self.heap.len()));
        }
        self.heap.push(Reverse((at_ms, slot, number, key)));
    }

    /// The next slot due by `now_ms` and its endpoint's key, skipping stale entries; at most
    /// `reads` entries are looked at.
    pub fn pop(&mut self, now_ms: u64, reads: &mut usize) -> Option<(u32, EndpointKey)> {
        while *reads > 0 {
            let &Reverse((at, slot, number, key)) = self.heap.peek()?;
            if at > now_ms {
                return None;
            }
            self.heap.pop();
            *reads -= 1;
            if let Some(n) = self.latest.get_mut(slot as usize) {
                if *n == number {
                    *n = 0;
                    return Some((slot, key));
                }
            }
        }
        None
    }

    /// Keep only each slot's latest entry: one a slot at most.
    fn drop_stale(&mut self) {
        let latest = &self.latest;
        self.heap
            .retain(|Reverse((_, s, n, _))| latest.get(*s as usize) == Some(n));
    }

    /// A number no entry in the heap has. When they run out (after 2^32 schedulings), the
    /// live entries are numbered afresh from 1: a stale entry that kept its number could
    /// otherwise take its slot's new one, and come due in its place.
    fn next_number(&mut self) -> u32 {
        if self.numbered == u32::MAX {
            self.drop_stale();
            let mut entries = std::mem::take(&mut self.heap).into_vec();
            let mut number = 0u32;
            for Reverse((_, s, n, _)) in &mut entries {
                number = number.saturating_add(1);
                *n = number;
                if let Some(l) = self.latest.get_mut(*s as usize) {
                    *l = number;
                }
            }
            self.heap = BinaryHeap::from(entries);
            self.numbered = number;
        }
        self.numbered = self.numbered.saturating_add(1);
        self.numbered
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Due slots with their endpoint keys' numbers.
    fn all_due(d: &mut Due, now: u64) -> Vec<(u32, u64)> {
        let mut reads = usize::MAX;
        std::iter::from_fn(|| d.pop(now, &mut reads))
            .map(|(slot, key)| (slot, key.0))
            .collect()
    }

    #[test]
    fn slots_come_due_soonest_first_and_not_before_their_time() {
        let mut d = Due::default();
        d.schedule(300, 3, EndpointKey(7), 10);
        d.schedule(100, 1, EndpointKey(7), 10);
        d.schedule(200, 2, EndpointKey(8), 10);
        // What the bounds below are told by.
        assert_eq!((d.len(), d.is_empty()), (3, false));
        assert_eq!(all_due(&mut d, 250), vec![(1, 7), (2, 8)]);
        assert_eq!(all_due(&mut d, 299), vec![]);
        assert_eq!(all_due(&mut d, 300), vec![(3, 7)]);
        assert!(d.is_empty());
    }

    #[test]
    fn only_a_slot_s_latest_schedule_counts() {
        let mut d = Due::default();
        d.schedule(100, 1, EndpointKey(7), 10);
        d.schedule(500, 1, EndpointKey(9), 10); // rescheduled, for another endpoint's delivery
        assert_eq!(all_due(&mut d, 400), vec![]);
        assert_eq!(all_due(&mut d, 500), vec![(1, 9)]);
        // Scheduled twice for the same time: it comes out once.
        d.schedule(600, 2, EndpointKey(7), 10);
        d.schedule(600, 2, EndpointKey(7), 10);
        assert_eq!(all_due(&mut d, 600), vec![(2, 7)]);
    }

    /// A slot whose delivery ended and whose new one, for another endpoint, was scheduled for
    /// the very millisecond the old one was: it comes due for the new one's endpoint (it
    /// came out for the smaller key, into the other endpoint's held deliveries).
    #[test]
    fn a_slot_scheduled_again_for_the_same_time_comes_due_for_its_latest_endpoint() {
        for (old, new) in [(7, 9), (9, 7)] {
            let mut d = Due::default();
            d.schedule(600, 2, EndpointKey(old), 10);
            d.schedule(600, 2, EndpointKey(new), 10);
            assert_eq!(all_due(&mut d, 600), vec![(2, new)], "{old} then {new}");
        }
    }

    /// A slot woken again while it waits for an open circuit is scheduled again for the same
    /// time: each entry a slot's latest time matched counted as live, so the heap outgrew
    /// twice the slots, and every schedule then swept it all in vain.
    #[test]
    fn schedules_for_the_same_time_never_outgrow_twice_the_slots() {
        let mut d = Due::default();
        let slots = 100;
        for _ in 0..5 {
            for s in 0..slots as u32 {
                d.schedule(1_000, s, EndpointKey(1), slots);
                assert!(d.len() <= 2 * slots, "{} entries", d.len());
            }
        }
        assert_eq!(all_due(&mut d, 1_000).len(), slots);
    }

    /// A slot scheduled for time 0 (already due) comes due, and once.
    #[test]
    fn a_slot_scheduled_for_time_zero_comes_due_once() {
        let mut d = Due::default();
        d.schedule(0, 4, EndpointKey(7), 10);
        d.schedule(0, 4, EndpointKey(7), 10);
        assert_eq!(all_due(&mut d, 1), vec![(4, 7)]);
        assert_eq!(all_due(&mut d, u64::MAX), vec![]);
    }

    #[test]
    fn stale_entries_never_crowd_out_live_ones() {
        let mut d = Due::default();
        let slots = 100;
        // Every slot rescheduled fifty times: the heap stays within twice the slots.
        for round in 0..50u64 {
            for s in 0..slots as u32 {
                d.schedule(1_000 + round, s, EndpointKey(1), slots);
            }
            assert!(d.len() <= 2 * slots);
        }
        let due = all_due(&mut d, 2_000);
        assert_eq!(due.len(), slots);
    }

    /// README: "at most 52 bytes a ledger slot for the retries, open circuits and pauses it
    /// waits on" (a heap entry is 24 bytes, at most two a slot, and 4 bytes a slot for the
    /// number of its latest scheduling). That is what the memory holds, not only what is in
    /// use: grown by doubling, the heap's room for 20,000 entries (10,000 slots, the
    /// default) was 32,768, and `latest`'s for 10,000 slots 16,384.
    #[test]
    fn the_memory_held_stays_within_52_bytes_a_slot() {
        let entry = std::mem::size_of::<Reverse<(u64, u32, u32, EndpointKey)>>();
        assert_eq!(entry, 24);
        let number = std::mem::size_of::<u32>();
        for slots in [1_000usize, 10_000, 100_000] {
            let mut d = Due::default();
            let mut worst = 0;
            for round in 0..3u64 {
                for s in 0..slots as u32 {
                    d.schedule(1_000 + round, s, EndpointKey(1), slots);
                    let held = d.heap.capacity() * entry + d.latest.capacity() * number;
                    worst = worst.max(held);
                }
            }
            assert!(
                worst <= 52 * slots + entry,
                "{slots} slots: {worst} bytes, {} a slot",
                worst as f64 / slots as f64
            );
            assert_eq!(all_due(&mut d, 2_000).len(), slots);
        }
    }

    /// The room held grows with what is scheduled, not with the ledger: a VM with a large
    /// ledger and a few retries holds room for a few entries, not for twice the slots.
    #[test]
    fn a_few_schedulings_hold_room_for_a_few_entries() {
        let mut d = Due::default();
        let slots = 100_000;
        for s in 0..5 {
            d.schedule(1_000, s, EndpointKey(1), slots);
        }
        assert!(d.heap.capacity() <= 16, "room for {}", d.heap.capacity());
        assert!(
            d.latest.capacity() <= 16,
            "room for {}",
            d.latest.capacity()
        );
        assert_eq!(all_due(&mut d, 1_000).len(), 5);
    }

    /// Numbers are used up after 2^32 schedulings; a stale entry whose number came round again
    /// for its slot would come due in the place of the slot's latest scheduling.
    #[test]
    fn a_stale_entry_never_comes_due_when_the_numbers_run_out() {
        let mut d = Due::default();
        d.schedule(100, 1, EndpointKey(7), 10); // number 1
        d.schedule(500, 1, EndpointKey(7), 10); // number 2: the one at 100 is stale
        d.schedule(300, 2, EndpointKey(8), 10);
        d.numbered = u32::MAX - 1;
        d.schedule(400, 3, EndpointKey(8), 10); // the last number
        d.schedule(700, 1, EndpointKey(9), 10); // the numbers run out
        d.schedule(800, 4, EndpointKey(8), 10);
        d.schedule(900, 2, EndpointKey(9), 10);
        d.schedule(950, 1, EndpointKey(6), 10); // the one at 700 is stale
        assert_eq!(all_due(&mut d, 600), vec![(3, 8)]);
        assert_eq!(all_due(&mut d, 1_000), vec![(4, 8), (2, 9), (1, 6)]);
        assert!(d.is_empty());
    }

    #[test]
    fn reads_bound_the_work_of_one_call() {
        let mut d = Due::default();
        for s in 0..10 {
            d.schedule(100, s, EndpointKey(1), 10);
            d.schedule(200, s, EndpointKey(1), 10); // leaves ten stale entries at 100
        }
        let mut reads = 4;
        assert_eq!(
            d.pop(300, &mut reads),
            None,
            "four stale entries read, none due"
        );
        assert_eq!(reads, 0);
        let mut reads = 100;
        assert_eq!(d.pop(300, &mut reads), Some((0, EndpointKey(1))));
    }
}
