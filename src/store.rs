//! The storage the core keeps its state in: proxy-wasm shared data in Envoy, a map in tests.
//!
//! The contract mirrors shared data: a value comes with a CAS token, and a write that names a
//! token fails if the value changed since. There is no delete and no listing, so callers use a
//! bounded key space.

use std::cell::RefCell;
use std::collections::HashMap;

pub type Cas = u32;

/// Names a shared-data key or shared queue in this build's storage format:
/// `shared_name!("q/m/{}")` is a format string, `shared_name!("peers")` a `&'static str`.
///
/// Shared data outlives a module: a build loaded under the same `vm_id` as another, by an
/// update or during a drain, would read records written in another layout. The prefix is the
/// format's version, so builds of different formats keep apart (each delivers what it took
/// in) instead of misreading each other. Change it whenever what any key or queue holds
/// changes; the flow test `the_shared_data_format_is_pinned` fails until you do. One
/// exception, since a new prefix costs users what the old one held (pending deliveries,
/// learned registrations, the dedupe memory): a key added to a record whose readers skip
/// keys they do not know, when losing it (an older build of this prefix writes the record
/// back without it) costs nothing a user relies on. So far: the endpoint record's `r`, the
/// rate limit's bucket, which an older build's write refills; a ledger slot's `ti` (and its
/// queued event's), when the event was taken in, which costs only that delivery's sample of
/// `delivery_delay_ms`.
#[macro_export]
macro_rules! shared_name {
    ($name:literal) => {
        concat!("f2/", $name)
    };
}

/// The prefix every shared-data key and queue name of this build's format starts with.
pub const FORMAT: &str = shared_name!("");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Someone else wrote the key since we read it: read again and retry.
    CasMismatch,
    /// The host refused for another reason.
    Host,
}

pub trait Store {
    /// The value and its CAS token; `None` when the key was never written.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, StoreError>;
    /// Write `value`; with `Some(cas)`, only if the key is unchanged since that read.
    fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), StoreError>;
}

/// How many times a read-modify-write loop retries a CAS conflict before giving up.
pub const CAS_RETRIES: usize = 16;

/// Read-modify-write one key under CAS. `update` sees the current value (or `None`) and
/// returns the new value and a result, or `None` to write nothing.
///
/// A thin generic shell around `update_dyn`, inlined into its callers: the loop is compiled
/// once rather than once per caller's closure and result type.
#[inline]
pub fn update<S: Store + ?Sized, T>(
    store: &S,
    key: &str,
    mut update: impl FnMut(Option<&[u8]>) -> Option<(Vec<u8>, T)>,
) -> Result<Option<T>, StoreError> {
    let mut result = None;
    let wrote = update_dyn(&ByRef(store), key, &mut |current| {
        let (new, out) = update(current)?;
        // A lost CAS race runs `update` again, and the next result replaces this one.
        result = Some(out);
        Some(new)
    })?;
    Ok(if wrote { result } else { None })
}

/// Sees the current value and returns the value to write, or `None` to write nothing.
type Rewrite<'a> = dyn FnMut(Option<&[u8]>) -> Option<Vec<u8>> + 'a;

/// `update`'s loop: whether a value was written (false when `update` declined).
fn update_dyn(store: &dyn Store, key: &str, update: &mut Rewrite<'_>) -> Result<bool, StoreError> {
    for _ in 0..CAS_RETRIES {
        let current = store.get(key)?;
        let (bytes, cas) = match &current {
            Some((v, cas)) => (Some(v.as_slice()), Some(*cas)),
            None => (None, None),
        };
        let Some(new) = update(bytes) else {
            return Ok(false);
        };
        match store.set(key, &new, cas) {
            Ok(()) => return Ok(true),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::CasMismatch)
}

/// A store behind a reference, so that an unsized `S` (such as `dyn Store`) can be passed on
/// as a `&dyn Store`.
struct ByRef<'a, S: ?Sized>(&'a S);

impl<S: Store + ?Sized> Store for ByRef<'_, S> {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, StoreError> {
        self.0.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), StoreError> {
        self.0.set(key, value, cas)
    }
}

/// An in-memory `Store` with shared data's semantics, for native tests and benchmarks.
#[derive(Debug, Default)]
pub struct MemStore {
    map: RefCell<HashMap<String, (Vec<u8>, Cas)>>,
    next_cas: RefCell<Cas>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.borrow().is_empty()
    }

    /// Every key and value, ordered by key.
    pub fn entries(&self) -> Vec<(String, Vec<u8>)> {
        let mut all: Vec<(String, Vec<u8>)> = self
            .map
            .borrow()
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        all.sort();
        all
    }
}

impl Store for MemStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, StoreError> {
        Ok(self.map.borrow().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), StoreError> {
        let mut map = self.map.borrow_mut();
        if let (Some(expected), Some((_, actual))) = (cas, map.get(key)) {
            if expected != *actual {
                return Err(StoreError::CasMismatch);
            }
        }
        let mut next = self.next_cas.borrow_mut();
        *next = next.wrapping_add(1).max(1);
        map.insert(key.to_string(), (value.to_vec(), *next));
        Ok(())
    }
}

/// For tests: shared data where another worker writes a key just after this one read it,
/// once armed (`then`): the read's CAS token is stale by the time it writes, as when two
/// workers race for the key.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Meanwhile {
    pub store: MemStore,
    /// The other worker's write: to that key only, or with `None` to whichever is read next.
    pub then: RefCell<Option<(Option<String>, Vec<u8>)>>,
}

#[cfg(test)]
impl Store for Meanwhile {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, StoreError> {
        let read = self.store.get(key)?;
        let due =
            matches!(&*self.then.borrow(), Some((k, _)) if k.as_deref().is_none_or(|k| k == key));
        if let Some((_, theirs)) = due.then(|| self.then.take()).flatten() {
            self.store.set(key, &theirs, None)?;
        }
        Ok(read)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), StoreError> {
        self.store.set(key, value, cas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_cas_is_refused() {
        let s = MemStore::new();
        s.set("k", b"a", None).unwrap();
        let (_, cas) = s.get("k").unwrap().unwrap();
        s.set("k", b"b", Some(cas)).unwrap();
        assert_eq!(s.set("k", b"c", Some(cas)), Err(StoreError::CasMismatch));
        assert_eq!(s.get("k").unwrap().unwrap().0, b"b");
    }

    /// What tests read off a `MemStore`: each key once, with its last value, in key order.
    #[test]
    fn a_mem_store_lists_each_key_once_with_its_last_value() {
        let s = MemStore::new();
        assert!(s.is_empty());
        s.set("kb", b"abc", None).unwrap();
        s.set("a", b"", None).unwrap();
        s.set("kb", b"abcd", None).unwrap();
        assert!(!s.is_empty());
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.entries(),
            [
                ("a".to_string(), vec![]),
                ("kb".to_string(), b"abcd".to_vec())
            ]
        );
    }

    #[test]
    fn update_retries_until_it_wins() {
        let s = MemStore::new();
        s.set("n", b"1", None).unwrap();
        let mut interfered = false;
        let out = update(&s, "n", |cur| {
            if !interfered {
                interfered = true;
                s.set("n", b"5", None).unwrap();
            }
            let n: u32 = std::str::from_utf8(cur.unwrap()).unwrap().parse().unwrap();
            Some(((n + 1).to_string().into_bytes(), n + 1))
        })
        .unwrap();
        assert_eq!(out, Some(6));
        assert_eq!(s.get("n").unwrap().unwrap().0, b"6");
    }

    #[test]
    fn update_that_declines_after_a_lost_race_writes_and_returns_nothing() {
        let s = MemStore::new();
        s.set("n", b"1", None).unwrap();
        let mut calls = 0;
        let out = update(&s, "n", |_| {
            calls += 1;
            if calls == 1 {
                // Lose the race once: the first answer must not be returned.
                s.set("n", b"5", None).unwrap();
                Some((b"2".to_vec(), "first"))
            } else {
                None
            }
        })
        .unwrap();
        assert_eq!(out, None);
        assert_eq!(calls, 2);
        assert_eq!(s.get("n").unwrap().unwrap().0, b"5");
    }

    #[test]
    fn update_gives_up_after_cas_retries_and_works_through_dyn_store() {
        let s = MemStore::new();
        let store: &dyn Store = &s;
        let mut calls = 0;
        let out = update(store, "k", |_| {
            calls += 1;
            s.set("k", b"other", None).unwrap();
            Some((b"mine".to_vec(), ()))
        });
        // The key did not exist at the first read, so the first write (no CAS) wins.
        assert_eq!(out, Ok(Some(())));
        assert_eq!(calls, 1);
        let mut calls = 0;
        let out = update(store, "k", |_| {
            calls += 1;
            s.set("k", b"other", None).unwrap();
            Some((b"mine".to_vec(), ()))
        });
        assert_eq!(out, Err(StoreError::CasMismatch));
        // Every retry was tried, and none of them wrote.
        assert_eq!(calls, CAS_RETRIES);
        assert_eq!(s.get("k").unwrap().unwrap().0, b"other");
    }
}
