//! Which configuration the senders sharing a `vm_id` deliver by.
//!
//! After a configuration update Envoy keeps the root contexts it replaced until the old
//! listener has drained (`--drain-time-s`, 600 s by default), and only then asks them to
//! close. Left to themselves they went on sweeping the shared ledger all that time: sending
//! retries to the old URLs, with the old headers and keys, and dropping as orphaned the
//! deliveries of endpoints only the new configuration has. So each sending configuration
//! joins a generation when it loads; one whose generation a newer one replaced sends nothing
//! more and only awaits the replies it is owed.

use crate::store::{self, Store, StoreError};

/// The newest generation and its configuration's `Config::delivery_fingerprint`.
pub const KEY: &str = "config/generation";

/// A sending configuration's place in the order configurations were loaded in. Every VM
/// loads the same configuration, so they join one generation; a configuration that delivers
/// as the newest one does (the update changed only what the observers use) joins it too, as
/// the senders of both would send alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    number: u64,
}

impl Generation {
    /// The generation of a configuration that delivers as `fingerprint` says: the newest, if
    /// that is the newest one's; else a new one after it.
    pub fn join(store: &dyn Store, fingerprint: u64) -> Result<Generation, StoreError> {
        let mut joined = 0;
        store::update(store, KEY, |current| {
            let newest = current.and_then(decode);
            joined = match newest {
                Some((_, print)) if print == fingerprint => return None,
                Some((number, _)) => number.saturating_add(1),
                None => 1,
            };
            Some((encode(joined, fingerprint), ()))
        })?;
        if joined == 0 {
            // Declined to write: the newest generation is this configuration's.
            joined = store
                .get(KEY)?
                .and_then(|(v, _)| decode(&v))
                .map_or(1, |(number, _)| number);
        }
        Ok(Generation { number: joined })
    }

    /// Whether a newer configuration has loaded since. A store that cannot be read says no:
    /// the sender goes on as before rather than go quiet.
    pub fn is_replaced(self, store: &dyn Store) -> bool {
        store
            .get(KEY)
            .ok()
            .flatten()
            .and_then(|(v, _)| decode(&v))
            .is_some_and(|(number, _)| number > self.number)
    }
}

fn encode(number: u64, fingerprint: u64) -> Vec<u8> {
    format!("{number} {fingerprint}").into_bytes()
}

fn decode(bytes: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (number, print) = text.split_once(' ')?;
    Some((number.parse().ok()?, print.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    #[test]
    fn vms_loading_one_configuration_join_one_generation() {
        let store = MemStore::new();
        let first = Generation::join(&store, 7).unwrap();
        let second = Generation::join(&store, 7).unwrap();
        assert_eq!(first, second);
        assert!(!first.is_replaced(&store));
    }

    #[test]
    fn a_configuration_that_delivers_otherwise_replaces_the_newest() {
        let store = MemStore::new();
        let old = Generation::join(&store, 7).unwrap();
        let new = Generation::join(&store, 8).unwrap();
        assert!(old.is_replaced(&store));
        assert!(!new.is_replaced(&store));
        // A VM that loads the new one later joins it, and replaces nothing.
        assert_eq!(Generation::join(&store, 8).unwrap(), new);
        assert!(!new.is_replaced(&store));
        // Going back to the old configuration is another update: it replaces the new one.
        let back = Generation::join(&store, 7).unwrap();
        assert!(new.is_replaced(&store) && old.is_replaced(&store));
        assert!(!back.is_replaced(&store));
    }

    #[test]
    fn an_unreadable_record_starts_over_and_a_missing_store_replaces_nothing() {
        let store = MemStore::new();
        store.set(KEY, b"garbage", None).unwrap();
        let g = Generation::join(&store, 7).unwrap();
        assert!(!g.is_replaced(&store));
        assert_eq!(Generation::join(&store, 7).unwrap(), g);
        assert!(!g.is_replaced(&MemStore::new()));
    }
}
