//! A watched response's body as the proxy handed it over, chunk by chunk. It is joined only
//! when it must be parsed, so a body seen before is never copied again (a 5 MB poll took a
//! third fewer instructions than with one growing buffer); one chunk, the usual case, needs
//! no list.

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

#[derive(Debug, Default)]
pub enum Body {
    #[default]
    Empty,
    One(Vec<u8>),
    Chunks(Vec<Vec<u8>>),
}

impl Body {
    pub fn push(&mut self, chunk: Vec<u8>) {
        *self = match std::mem::take(self) {
            Body::Empty => Body::One(chunk),
            Body::One(first) => Body::Chunks(vec![first, chunk]),
            Body::Chunks(mut all) => {
                all.push(chunk);
                Body::Chunks(all)
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
            Body::Chunks(all) => all.iter().map(Vec::len).sum(),
        }
    }

    /// The dedupe hash of this body under `request`: the same for the same bytes, however
    /// they were chunked.
    pub fn hash(&self, request: &[u8]) -> u64 {
        match self {
            Body::Empty => RecentResponses::hash::<&[u8]>(request, &[]),
            Body::One(one) => RecentResponses::hash(request, std::slice::from_ref(one)),
            Body::Chunks(all) => RecentResponses::hash(request, all),
        }
    }

    pub fn join(self) -> Vec<u8> {
        match self {
            Body::Empty => Vec::new(),
            Body::One(one) => one,
            Body::Chunks(all) => all.concat(),
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

    #[test]
    fn an_empty_body_has_no_length_and_joins_to_nothing() {
        let empty = Body::default();
        assert!(empty.is_empty());
        assert_eq!(empty.hash(b"q"), body(&[b""]).hash(b"q"));
        assert!(empty.join().is_empty());
    }
}
