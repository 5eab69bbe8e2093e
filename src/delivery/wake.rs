//! The items on a sender's delivery queue: the ledger slots one response woke, each as 4
//! little-endian bytes. The HTTP context that took the response in puts one item on the
//! queue; the root context that gets it sends a bounded number of its slots at once and
//! puts the rest back as an item of its own.

/// The item for `slots`.
pub fn encode(slots: &[u32]) -> Vec<u8> {
    slots.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// The first `max` slots of `item`, and the rest of its bytes (empty when nothing is left):
/// an item of its own, to go back on the queue. Bytes short of a whole slot at the end are
/// no slot.
pub fn take(item: &[u8], max: usize) -> (Vec<u32>, &[u8]) {
    let (now, later) = item.split_at(item.len().min(max.saturating_mul(4)));
    let slots = now
        .chunks_exact(4)
        .filter_map(|b| <[u8; 4]>::try_from(b).ok().map(u32::from_le_bytes))
        .collect();
    (slots, later)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_gives_back_its_slots_in_order() {
        let slots = [0, 1, 255, 256, 70_000, u32::MAX];
        let item = encode(&slots);
        assert_eq!(item.len(), 24);
        assert_eq!(&item[8..12], &[255, 0, 0, 0], "little-endian");
        assert_eq!(take(&item, 32), (slots.to_vec(), &[][..]));
    }

    #[test]
    fn slots_past_the_bound_are_left_as_an_item_of_their_own() {
        let slots: Vec<u32> = (1..=70).collect();
        let item = encode(&slots);
        let (now, later) = take(&item, 32);
        assert_eq!(now, (1..=32).collect::<Vec<u32>>());
        let (next, rest) = take(later, 32);
        assert_eq!(next, (33..=64).collect::<Vec<u32>>());
        let (last, none) = take(rest, 32);
        assert_eq!(last, (65..=70).collect::<Vec<u32>>());
        assert!(none.is_empty());
    }

    #[test]
    fn an_empty_or_torn_item_wakes_only_whole_slots() {
        assert_eq!(take(&[], 32), (Vec::new(), &[][..]));
        let mut item = encode(&[7, 8]);
        item.extend_from_slice(&[1, 2, 3]);
        assert_eq!(take(&item, 32), (vec![7, 8], &[][..]));
        assert_eq!(take(&item, usize::MAX), (vec![7, 8], &[][..]));
        assert_eq!(take(&item, 0), (Vec::new(), &item[..]));
    }
}
