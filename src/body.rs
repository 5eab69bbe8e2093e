//! A watched response's body as the proxy handed it over, chunk by chunk. It is joined only
//! when it must be parsed, so a body seen before is never copied again (a 5 MB poll took a
//! third fewer instructions than with one growing buffer); one chunk, the usual case, needs
//! no list. Chunks under 4 KiB are gathered as they come, so a body that trickled in a few
//! bytes at a time is held in few copies.

use std::cell::Cell;

use crate::events::RecentResponses;

/// The bytes of watched bodies one VM holds at once, across all its streams. Each stream's
/// own bound (`watch.maxBodyBytes`) does not bound the sum: a few hundred large responses in
/// flight together once exhausted a VM's memory, which killed it and cut those responses
/// short. A stream takes a chunk's size before copying it and gives back all it took when it
/// lets go of its bodies.
#[derive(Debug, Default)]
pub struct Budget {
    held: Cell<usize>,
}

impl Budget {
    pub const fn new() -> Self {
        Budget { held: Cell::new(0) }
    }

    /// Whether `bytes` more fit under `limit`; when they do, they are now held.
    pub fn take(&self, bytes: usize, limit: usize) -> bool {
        let held = self.held.get().saturating_add(bytes);
        let fits = held <= limit;
        if fits {
            self.held.set(held);
        }
        fits
    }

    pub fn give_back(&self, bytes: usize) {
        self.held.set(self.held.get().saturating_sub(bytes));
    }

    pub fn held(&self) -> usize {
        self.held.get()
    }
}

/// Chunks shorter than this are gathered into one copy rather than each kept apart.
const SMALL: usize = 4096;

#[derive(Debug, Default)]
pub enum Body {
    #[default]
    Empty,
    One(Vec<u8>),
    /// Its length kept beside them: asked on every chunk, it would cost their number.
    Chunks {
        all: Vec<Vec<u8>>,
        len: usize,
    },
}

/// Whether `chunk` goes into the copy `last` rather than after it: both are small, so a
/// copy made of small chunks stays under `2 * SMALL` and two copies side by side hold at
/// least `SMALL` bytes between them.
fn gathers(last: &[u8], chunk: &[u8]) -> bool {
    last.len() < SMALL && chunk.len() < SMALL
}

impl Body {
    /// Keep `chunk` after what came before it. A small chunk goes into the copy before it
    /// while that is small too: a body that came a few bytes at a time would otherwise hold a
    /// list entry and an allocation for every few bytes, far past what the budget counts.
    pub fn push(&mut self, chunk: Vec<u8>) {
        *self = match std::mem::take(self) {
            Body::Empty => Body::One(chunk),
            Body::One(mut first) => {
                if gathers(&first, &chunk) {
                    first.extend_from_slice(&chunk);
                    Body::One(first)
                } else {
                    let len = first.len() + chunk.len();
                    first.shrink_to_fit();
                    Body::Chunks {
                        all: vec![first, chunk],
                        len,
                    }
                }
            }
            Body::Chunks { mut all, len } => {
                let len = len + chunk.len();
                match all.last_mut() {
                    Some(last) if gathers(last, &chunk) => last.extend_from_slice(&chunk),
                    Some(last) => {
                        last.shrink_to_fit();
                        all.push(chunk);
                    }
                    None => all.push(chunk),
                }
                Body::Chunks { all, len }
            }
        };
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::One(one) => one.len(),
            Body::Chunks { len, .. } => *len,
        }
    }

    /// The dedupe hash of this body under `request`: the same for the same bytes, however
    /// they were chunked.
    pub fn hash(&self, request: &[u8]) -> u64 {
        match self {
            Body::Empty => RecentResponses::hash::<&[u8]>(request, &[]),
            Body::One(one) => RecentResponses::hash(request, std::slice::from_ref(one)),
            Body::Chunks { all, .. } => RecentResponses::hash(request, all),
        }
    }

    /// How many separate copies the body is kept in.
    #[cfg(test)]
    fn pieces(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::One(_) => 1,
            Body::Chunks { all, .. } => all.len(),
        }
    }

    /// The bytes its copies take, spare room included.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::One(one) => one.capacity(),
            Body::Chunks { all, .. } => all.iter().map(Vec::capacity).sum(),
        }
    }

    pub fn join(self) -> Vec<u8> {
        match self {
            Body::Empty => Vec::new(),
            Body::One(one) => one,
            Body::Chunks { all, .. } => all.concat(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: &[&[u8]]) -> Body {
        let mut b = Body::default();
        for c in chunks {
            b.push(c.to_vec());
        }
        b
    }

    #[test]
    fn chunks_join_in_order_and_hash_as_the_whole() {
        let whole = body(&[b"{\"data\":{\"n\":[1,2,3]}}"]);
        let split = body(&[b"{\"da", b"", b"ta\":{\"n\":[1,", b"2,3]}}"]);
        assert_eq!(split.len(), whole.len());
        assert!(!split.is_empty() && !whole.is_empty());
        assert_eq!(split.hash(b"q"), whole.hash(b"q"));
        assert_ne!(split.hash(b"other query"), whole.hash(b"q"));
        assert_eq!(split.join(), b"{\"data\":{\"n\":[1,2,3]}}");
    }

    #[test]
    fn a_budget_holds_up_to_its_limit_and_takes_back_what_is_given() {
        let budget = Budget::new();
        assert!(budget.take(60, 100));
        assert!(budget.take(40, 100));
        assert!(!budget.take(1, 100), "full");
        assert_eq!(budget.held(), 100, "a refused take holds nothing");
        budget.give_back(60);
        assert!(budget.take(50, 100));
        assert!(!budget.take(usize::MAX, 1000), "no overflow past the limit");
        budget.give_back(usize::MAX);
        assert_eq!(budget.held(), 0);
    }

    /// A review: every chunk was kept as its own copy, however small. A body that came a few
    /// bytes at a time (an upstream writing as it renders, a slow link) held a list entry
    /// and an allocation for every few bytes, ten times and more the bytes the budget
    /// counted, and its length, summed over that list on every chunk, cost the square of
    /// their number. Small chunks are gathered; what is kept stays within what is counted.
    #[test]
    fn a_body_of_many_small_chunks_is_kept_in_few_pieces() {
        let whole: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut b = Body::default();
        for byte in &whole {
            b.push(vec![*byte]);
        }
        assert_eq!(b.len(), whole.len());
        let bound = 2 * whole.len() / SMALL + 1;
        assert!(
            b.pieces() <= bound,
            "{} pieces, at most {bound}",
            b.pieces()
        );
        assert_eq!(b.hash(b"q"), body(&[&whole]).hash(b"q"));
        assert_eq!(b.join(), whole);
    }

    /// `SMALL` itself is not small: a copy gathered from small chunks stays under
    /// `2 * SMALL`, and a chunk of `SMALL` bytes is kept apart from a small neighbour,
    /// whichever comes first.
    #[test]
    fn a_chunk_of_small_bytes_is_kept_apart() {
        let full = vec![7u8; SMALL];
        assert_eq!(body(&[&full, b"x"]).pieces(), 2);
        assert_eq!(body(&[b"x", &full]).pieces(), 2);
        assert_eq!(body(&[&full[1..], b"x"]).pieces(), 1);
    }

    /// Chunks of every size, mixed, keep their order, their hash and their length.
    #[test]
    fn chunks_of_any_sizes_join_and_hash_as_the_whole() {
        let mut seed: u64 = 11;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            (seed >> 33) % n
        };
        for _ in 0..20 {
            let mut whole = Vec::new();
            let mut b = Body::default();
            for _ in 0..200 {
                let size = match next(4) {
                    0 => next(8),
                    1 => next(SMALL as u64),
                    _ => next(3 * SMALL as u64),
                };
                let chunk: Vec<u8> = (0..size).map(|_| next(256) as u8).collect();
                whole.extend_from_slice(&chunk);
                b.push(chunk);
                assert_eq!(b.len(), whole.len());
            }
            assert!(b.pieces() <= 2 * whole.len() / SMALL + 1);
            assert!(
                b.capacity() < whole.len() + 2 * SMALL,
                "copies within what is counted"
            );
            assert_eq!(b.hash(b"r"), body(&[&whole]).hash(b"r"));
            assert_eq!(b.join(), whole);
        }
    }

    #[test]
    fn an_empty_body_has_no_length_and_joins_to_nothing() {
        let empty = Body::default();
        assert!(empty.is_empty());
        assert_eq!(empty.hash(b"q"), body(&[b""]).hash(b"q"));
        assert!(empty.join().is_empty());
    }
}
