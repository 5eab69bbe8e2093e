//! Which of a VM's sending configurations is in force: the one that takes the VM's queue and
//! sends for every endpoint it has, while the others leave those deliveries to it. A
//! configuration update gives the VM a new root context, and Envoy keeps the replaced one
//! until the old listener has drained (600 s by default): both sweep the one ledger, and
//! without this an attempt went out by either configuration (its URL, headers, keys) until then.
//!
//! The newest configured is in force, until a configuration whose listener takes a newer
//! connection than the one in force has taken since it was configured: Envoy numbers
//! connections in the order it accepts them, and only the listener in use takes new ones. That
//! catches a rollback to a configuration whose root context Envoy kept (it configures nothing
//! then). Which one that is goes into the store, so VMs that see no such stream (the main
//! thread's, a quiet worker's) follow at their next tick. Streams on connections accepted
//! before a configuration was loaded never count against it: old keep-alive connections of the
//! replaced listener would otherwise hand it back. Connections are read only while two
//! senders live in the VM, so a VM with one pays nothing.

use crate::delivery::live_endpoints;
use crate::store::{self, Cas, Store};

/// The connection that put a configuration in force and its `delivery_fingerprint`, 16
/// bytes; empty until one was put in force since the last load.
pub const IN_FORCE_KEY: &str = crate::shared_name!("config/in_force");

/// Slots an inbox holds at most: what one tick wakes of them. A sender hands over what it
/// finds at each pass of its sweep, so one ticking slower than it was handed the same slots
/// again and again, and woke them all at its next tick. Those past it are handed over again
/// at the next pass, or found by a sweep.
const MAX_INBOX: usize = 1024;

/// What the succession needs to know of a sender besides its place: the endpoints it sends
/// for now (learned ones included, so asked each time).
pub trait Sends {
    fn endpoint_names(&self) -> Vec<String>;
}

/// A sending configuration joining its VM's senders.
pub struct Joining<H> {
    /// Its root context.
    pub id: u32,
    pub sender: H,
    /// `Config::delivery_fingerprint`: configurations that deliver alike are one in force.
    pub fingerprint: u64,
    /// A hash of its configuration's text (`live_endpoints`).
    pub source: u64,
}

struct Listed<H> {
    id: u32,
    sender: H,
    fingerprint: u64,
    source: u64,
    /// Slots woken in another root context of the VM (the one with the queue) for an endpoint
    /// only this one sends for; taken at its next tick.
    inbox: Vec<u32>,
}

/// One VM's sending configurations.
pub struct Succession<H> {
    /// The one in force last.
    roots: Vec<Listed<H>>,
    /// The newest connection a stream here arrived on since the last one was configured.
    newest_connection: Option<u64>,
    /// The root context this VM's queue is registered to.
    queue_holder: Option<u32>,
    /// Told at the first configure: this VM replaces one that crashed (its configuration was
    /// already live elsewhere), so the order in which its root contexts are configured (the
    /// order traffic reaches their listeners) says nothing of updates.
    rebuilt: Option<bool>,
}

/// Where a root context stands among its VM's senders.
#[derive(Debug, PartialEq, Eq)]
pub enum Standing {
    /// Not a sender here (closing, or never configured to send).
    NotListed,
    InForce,
    /// Another configuration is in force: the endpoints it, and any other put in force since
    /// this one was, send for.
    Superseded(Vec<String>),
}

impl<H: Sends> Succession<H> {
    pub const fn new() -> Self {
        Succession {
            roots: Vec::new(),
            newest_connection: None,
            queue_holder: None,
            rebuilt: None,
        }
    }

    /// `joining` was configured to send, and registered the VM's queue: it is in force here.
    /// A configuration an update brings clears what put another in force before, in every
    /// VM: connections taken before it was loaded say nothing of it. In a VM rebuilt after a
    /// crash (while the others go on) no configuration live elsewhere is an update: the
    /// record stays, its root contexts follow it, and until it names one the configuration
    /// first heard from last is in force here. One not live elsewhere is an update there too.
    pub fn join(&mut self, store: &dyn Store, joining: Joining<H>, now_ms: u64) {
        // Told per configuration: an update that reaches a rebuilt VM later (or the new VMs
        // of a module update, whose first configuration was live elsewhere) took the record
        // of an earlier update for the newest, and put the replaced configuration in force
        // until the new listener took a connection (a review).
        let rebuilt = self.rebuilt != Some(false)
            && live_endpoints::established(store, joining.source, now_ms);
        self.rebuilt.get_or_insert(rebuilt);
        let fingerprint = joining.fingerprint;
        self.roots.retain(|r| r.id != joining.id);
        self.roots.push(Listed {
            id: joining.id,
            sender: joining.sender,
            fingerprint: joining.fingerprint,
            source: joining.source,
            inbox: Vec::new(),
        });
        self.newest_connection = None;
        self.queue_holder = Some(joining.id);
        if !rebuilt {
            // Unless it names this configuration already: another VM configured with this
            // update saw it take a connection first. Cleared by a VM configured a moment
            // later, that went unsaid, and a rollback then waited for the listener rolled
            // back from to take another connection, which it no longer does (a review).
            let _ = store::update(store, IN_FORCE_KEY, |current| {
                let names_it = decode(current).is_some_and(|(_, f)| f == fingerprint);
                (!names_it).then(|| (Vec::new(), ()))
            });
            return;
        }
        // Oldest first heard first: the one in force last; between equals, the order of
        // configuration.
        let mut keyed: Vec<(u64, usize, Listed<H>)> = std::mem::take(&mut self.roots)
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let since = live_endpoints::first_heard(store, r.source, now_ms);
                (since.unwrap_or(0), i, r)
            })
            .collect();
        crate::heapsort::sort_by(&mut keyed, |a, b| (a.0, a.1) < (b.0, b.1));
        self.roots = keyed.into_iter().map(|(_, _, r)| r).collect();
        self.follow_store(store);
    }

    /// `id` sends nothing more (closing, or deleted).
    pub fn leave(&mut self, id: u32) {
        self.roots.retain(|r| r.id != id);
        if self.queue_holder == Some(id) {
            self.queue_holder = None;
        }
    }

    pub fn is_in_force(&self, id: u32) -> bool {
        self.roots.last().is_some_and(|r| r.id == id)
    }

    /// Whether `id` is in force here and must register the VM's queue to take its wake-ups
    /// (a root context that had it left: a rejected update, a drained listener). The caller
    /// registers it: only a context of that root can.
    pub fn claims_queue(&mut self, id: u32) -> bool {
        let claims = self.is_in_force(id) && self.queue_holder != Some(id);
        if claims {
            self.queue_holder = Some(id);
        }
        claims
    }

    /// A stream of `id` arrived on `connection` (asked only when it can matter). While two
    /// senders live here, a newer connection than any seen since the last load may put its
    /// configuration in force.
    pub fn saw_connection(
        &mut self,
        store: &dyn Store,
        id: u32,
        connection: impl FnOnce() -> Option<u64>,
    ) {
        if self.roots.len() < 2 {
            return;
        }
        let Some(fingerprint) = self
            .roots
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.fingerprint)
        else {
            return;
        };
        let current = self.is_in_force(id);
        let Some(connection) = connection() else {
            return;
        };
        if self.newest_connection.is_some_and(|n| connection <= n) {
            return;
        }
        self.newest_connection = Some(connection);
        let Ok(record) = store.get(IN_FORCE_KEY) else {
            return;
        };
        let cas = record.as_ref().map(|(_, cas)| *cas);
        let put = match decode(record.as_ref().map(|(v, _)| v.as_slice())) {
            // A connection the configuration in force took first, or one accepted before it.
            Some((first, f)) if f == fingerprint || connection <= first => Some(f),
            // Newer than any the configuration in force took: this listener is the one in use.
            Some(_) => publish(store, connection, fingerprint, cas).then_some(fingerprint),
            // None yet since the last load: only the one in force here may say which it is.
            None if current => publish(store, connection, fingerprint, cas).then_some(fingerprint),
            None => None,
        };
        if let Some(f) = put {
            self.follow(f);
        }
    }

    /// At a tick: put in force here the configuration the other VMs put in force.
    pub fn follow_store(&mut self, store: &dyn Store) {
        if self.roots.len() < 2 {
            return;
        }
        if let Ok(Some((value, _))) = store.get(IN_FORCE_KEY) {
            if let Some((_, f)) = decode(Some(&value)) {
                self.follow(f);
            }
        }
    }

    /// Put in force here the newest configured with `fingerprint`, if any.
    fn follow(&mut self, fingerprint: u64) {
        if self
            .roots
            .last()
            .is_some_and(|r| r.fingerprint == fingerprint)
        {
            return;
        }
        if let Some(at) = self
            .roots
            .iter()
            .rposition(|r| r.fingerprint == fingerprint)
        {
            let root = self.roots.remove(at);
            self.roots.push(root);
        }
    }

    /// `slot` was woken in `from` for `endpoint`, which `from` does not send for: hand it to
    /// the sender here that does (the newest with it: the others hand it over), for its next
    /// tick, once, and `MAX_INBOX` at most. Without one it waits for a sweep.
    pub fn forward(&mut self, from: u32, slot: u32, endpoint: &str) {
        let target = self
            .roots
            .iter_mut()
            .rev()
            .filter(|r| r.id != from)
            .find(|r| r.sender.endpoint_names().iter().any(|n| n == endpoint));
        if let Some(target) = target {
            if target.inbox.len() < MAX_INBOX && !target.inbox.contains(&slot) {
                target.inbox.push(slot);
            }
        }
    }

    /// The slots other senders handed `id` since its last tick.
    pub fn take_inbox(&mut self, id: u32) -> Vec<u32> {
        self.roots
            .iter_mut()
            .find(|r| r.id == id)
            .map(|r| std::mem::take(&mut r.inbox))
            .unwrap_or_default()
    }

    pub fn standing(&self, id: u32) -> Standing {
        let Some(at) = self.roots.iter().position(|r| r.id == id) else {
            return Standing::NotListed;
        };
        let after = self.roots.get(at + 1..).unwrap_or_default();
        if after.is_empty() {
            return Standing::InForce;
        }
        let mut names: Vec<String> = Vec::new();
        for name in after.iter().flat_map(|r| r.sender.endpoint_names()) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Standing::Superseded(names)
    }
}

impl<H: Sends> Default for Succession<H> {
    fn default() -> Self {
        Self::new()
    }
}

fn publish(store: &dyn Store, connection: u64, fingerprint: u64, cas: Option<Cas>) -> bool {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&connection.to_le_bytes());
    value[8..].copy_from_slice(&fingerprint.to_le_bytes());
    store.set(IN_FORCE_KEY, &value, cas).is_ok()
}

fn decode(value: Option<&[u8]>) -> Option<(u64, u64)> {
    let value: &[u8; 16] = value?.try_into().ok()?;
    let (connection, fingerprint) = value.split_at(8);
    Some((
        u64::from_le_bytes(connection.try_into().ok()?),
        u64::from_le_bytes(fingerprint.try_into().ok()?),
    ))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::config::Config;
    use crate::delivery::live_endpoints::LiveEndpoints;
    use crate::store::MemStore;

    struct Names(Vec<&'static str>);

    impl Sends for Names {
        fn endpoint_names(&self) -> Vec<String> {
            self.0.iter().map(|n| n.to_string()).collect()
        }
    }

    /// Root context `id`, configured with fingerprint `id * 100` and source `id * 1000`.
    fn joining(id: u32, names: &[&'static str]) -> Joining<Names> {
        Joining {
            id,
            sender: Names(names.to_vec()),
            fingerprint: fingerprint(id),
            source: u64::from(id) * 1000,
        }
    }

    fn fingerprint(id: u32) -> u64 {
        u64::from(id) * 100
    }

    fn record(store: &MemStore) -> Option<(u64, u64)> {
        let (value, _) = store.get(IN_FORCE_KEY).unwrap()?;
        decode(Some(&value))
    }

    fn names(names: &[&str]) -> Standing {
        Standing::Superseded(names.iter().map(|n| n.to_string()).collect())
    }

    /// A VM where root context 1 (endpoints a, x) was configured, then 2 (a, b) by an update.
    fn updated(store: &MemStore) -> Succession<Names> {
        let mut vm = Succession::new();
        vm.join(store, joining(1, &["a", "x"]), 0);
        vm.join(store, joining(2, &["a", "b"]), 0);
        vm
    }

    #[test]
    fn the_newest_configured_is_in_force_and_the_others_hand_over_what_it_sends() {
        let store = MemStore::new();
        let vm = updated(&store);
        assert_eq!(vm.standing(2), Standing::InForce);
        assert_eq!(vm.standing(1), names(&["a", "b"]));
        assert_eq!(vm.standing(3), Standing::NotListed);
        assert!(vm.is_in_force(2) && !vm.is_in_force(1));
    }

    #[test]
    fn an_update_clears_what_put_another_in_force_before() {
        let store = MemStore::new();
        store.set(IN_FORCE_KEY, &[7; 16], None).unwrap();
        let mut vm = Succession::new();
        vm.join(&store, joining(1, &["a"]), 0);
        assert_eq!(store.get(IN_FORCE_KEY).unwrap().unwrap().0, b"");
    }

    #[test]
    fn a_vm_with_one_sender_never_reads_a_connection() {
        let store = MemStore::new();
        let mut vm = Succession::new();
        vm.join(&store, joining(1, &["a"]), 0);
        let asked = Cell::new(false);
        vm.saw_connection(&store, 1, || {
            asked.set(true);
            Some(1)
        });
        assert!(!asked.get());
        vm.join(&store, joining(2, &["a"]), 0);
        vm.saw_connection(&store, 2, || {
            asked.set(true);
            Some(1)
        });
        assert!(asked.get());
    }

    #[test]
    fn a_rollback_is_put_in_force_by_a_newer_connection_than_the_one_in_force_took() {
        let store = MemStore::new();
        let mut vm = updated(&store);
        vm.saw_connection(&store, 2, || Some(10));
        assert_eq!(record(&store), Some((10, fingerprint(2))));
        assert!(vm.is_in_force(2));
        // Envoy rolled back to the configuration of root context 1: its listener takes the
        // new connections.
        vm.saw_connection(&store, 1, || Some(12));
        assert_eq!(record(&store), Some((12, fingerprint(1))));
        assert_eq!(vm.standing(1), Standing::InForce);
        assert_eq!(vm.standing(2), names(&["a", "x"]));
    }

    #[test]
    fn connections_accepted_before_the_one_in_force_took_its_first_never_count() {
        let store = MemStore::new();
        let mut vm = updated(&store);
        let mut other = updated(&store);
        vm.saw_connection(&store, 2, || Some(10));
        // An old keep-alive connection of the replaced listener.
        vm.saw_connection(&store, 1, || Some(5));
        assert!(vm.is_in_force(2));
        // Nor in another VM, which has seen no newer one itself.
        other.saw_connection(&store, 1, || Some(9));
        assert!(other.is_in_force(2));
        assert_eq!(record(&store), Some((10, fingerprint(2))));
    }

    #[test]
    fn until_the_one_in_force_took_a_connection_no_other_takes_its_place() {
        let store = MemStore::new();
        let mut vm = updated(&store);
        vm.saw_connection(&store, 1, || Some(7));
        assert!(vm.is_in_force(2));
        assert_eq!(record(&store), None);
    }

    #[test]
    fn the_other_vms_follow_the_record_at_their_tick() {
        let store = MemStore::new();
        let mut worker = updated(&store);
        let mut main_thread = updated(&store);
        worker.saw_connection(&store, 2, || Some(10));
        worker.saw_connection(&store, 1, || Some(11));
        assert!(main_thread.is_in_force(2));
        main_thread.follow_store(&store);
        assert!(main_thread.is_in_force(1));
    }

    #[test]
    fn the_newest_configured_with_the_fingerprint_put_in_force_is_followed() {
        let store = MemStore::new();
        let mut vm = updated(&store);
        // A third configuration that delivers as root context 1 does.
        vm.join(
            &store,
            Joining {
                fingerprint: fingerprint(1),
                ..joining(3, &["a"])
            },
            0,
        );
        vm.saw_connection(&store, 3, || Some(4));
        vm.join(&store, joining(4, &["a"]), 0);
        store
            .set(
                IN_FORCE_KEY,
                &[&4u64.to_le_bytes()[..], &fingerprint(1).to_le_bytes()].concat(),
                None,
            )
            .unwrap();
        vm.follow_store(&store);
        assert!(vm.is_in_force(3));
    }

    fn config(name: &str) -> Config {
        let json = format!(
            r#"{{"endpoints": [{{"name": "{name}", "url": "http://h/", "cluster": "c"}}]}}"#
        );
        Config::from_json(json.as_bytes(), &|_| None).unwrap()
    }

    /// The other VMs have had root context 1's configuration live since 0, and 2's since
    /// `two_since` (20 s: an update); both beat every 5 s until 35 s.
    fn both_live(store: &MemStore, two_since: u64) {
        let (mut one, mut two) = (
            LiveEndpoints::of_source(1000),
            LiveEndpoints::of_source(2000),
        );
        for at in (0..=35_000).step_by(5_000) {
            one.beat(store, &config("a"), at);
            if at >= two_since {
                two.beat(store, &config("b"), at);
            }
        }
    }

    /// A VM whose root contexts 1 (endpoint a) and 2 (b) were configured in `order` at `at_ms`.
    fn configured(store: &MemStore, order: [u32; 2], at_ms: u64) -> Succession<Names> {
        let mut vm = Succession::new();
        for id in order {
            let name = if id == 1 { "a" } else { "b" };
            vm.join(store, joining(id, &[name]), at_ms);
        }
        vm
    }

    #[test]
    fn a_vm_rebuilt_after_a_crash_puts_in_force_the_configuration_first_heard_from_last() {
        let store = MemStore::new();
        both_live(&store, 20_000);
        // Traffic reaches the new listener first, so its root context is configured first.
        let vm = configured(&store, [2, 1], 40_000);
        assert!(vm.is_in_force(2));
        // Not an update: what the record says stays.
        assert_eq!(store.get(IN_FORCE_KEY).unwrap(), None);
    }

    #[test]
    fn a_vm_rebuilt_after_a_crash_follows_the_record() {
        let store = MemStore::new();
        both_live(&store, 20_000);
        let rolled_back = [&9u64.to_le_bytes()[..], &fingerprint(1).to_le_bytes()].concat();
        store.set(IN_FORCE_KEY, &rolled_back, None).unwrap();
        let vm = configured(&store, [2, 1], 40_000);
        assert!(vm.is_in_force(1));
        assert_eq!(record(&store), Some((9, fingerprint(1))));
    }

    #[test]
    fn a_configuration_live_elsewhere_for_less_than_ten_seconds_is_an_update() {
        let store = MemStore::new();
        both_live(&store, 20_000);
        // Root context 2's configuration was first heard from at 20 s.
        let vm = configured(&store, [2, 1], 29_000);
        assert!(vm.is_in_force(1));
    }

    #[test]
    fn wake_ups_for_an_endpoint_only_another_sends_for_wait_in_its_inbox() {
        let store = MemStore::new();
        let mut vm = updated(&store);
        vm.forward(2, 3, "x");
        vm.forward(2, 4, "nowhere");
        // Never to the one it came from.
        vm.forward(1, 6, "x");
        assert_eq!(vm.take_inbox(2), Vec::<u32>::new());
        assert_eq!(vm.take_inbox(1), vec![3]);
        assert_eq!(vm.take_inbox(1), Vec::<u32>::new());
        // Among several with it, the newest: the others hand it over.
        vm.join(&store, joining(3, &["x"]), 0);
        vm.forward(2, 5, "x");
        assert_eq!(vm.take_inbox(3), vec![5]);
        assert_eq!(vm.take_inbox(1), Vec::<u32>::new());
    }

    /// A review: a sender hands over what its sweep finds due for another's endpoint at each
    /// pass (an open circuit holds a backlog due), so one ticking slower than it (an update
    /// that changed `tickMs`) was handed the same slots again and again, and woke them all at
    /// its next tick: with a backlog, a minute's tick could take over a hundred thousand reads.
    #[test]
    fn an_inbox_holds_each_slot_once_and_a_tick_of_wake_ups_at_most() {
        let store = MemStore::new();
        let mut vm = updated(&store);
        for _ in 0..600 {
            for slot in 0..256 {
                vm.forward(2, slot, "x");
            }
        }
        assert_eq!(vm.take_inbox(1), (0..256).collect::<Vec<u32>>());
        for slot in 0..100_000 {
            vm.forward(2, slot, "x");
        }
        assert_eq!(vm.take_inbox(1).len(), MAX_INBOX);
    }

    #[test]
    fn the_one_in_force_claims_the_queue_once_the_root_context_that_had_it_left() {
        let store = MemStore::new();
        let mut vm = updated(&store);
        assert!(!vm.claims_queue(2) && !vm.claims_queue(1));
        // The update's root context goes (Envoy rejected it, or its listener drained).
        vm.leave(2);
        assert_eq!(vm.standing(2), Standing::NotListed);
        assert!(vm.claims_queue(1));
        assert!(!vm.claims_queue(1));
    }

    #[test]
    fn a_superseded_root_context_leaving_leaves_the_queue_with_the_one_in_force() {
        let store = MemStore::new();
        let mut vm = updated(&store);
        // 2 registered the queue when it was configured; 1 goes.
        vm.leave(1);
        assert!(
            !vm.claims_queue(2),
            "2 holds the queue still: registering it again is not asked"
        );
    }

    /// Counts reads, to show which streams cost a shared-data read.
    struct Counted(MemStore, Cell<usize>);

    impl Store for Counted {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, crate::store::StoreError> {
            self.1.set(self.1.get() + 1);
            self.0.get(key)
        }
        fn set(
            &self,
            key: &str,
            value: &[u8],
            cas: Option<Cas>,
        ) -> Result<(), crate::store::StoreError> {
            self.0.set(key, value, cas)
        }
    }

    #[test]
    fn only_a_connection_newer_than_any_seen_here_since_the_last_load_costs_a_read() {
        let store = Counted(MemStore::new(), Cell::new(0));
        let mut vm = Succession::new();
        vm.join(&store, joining(1, &["a"]), 0);
        vm.join(&store, joining(2, &["a"]), 0);
        let reads = store.1.get();
        vm.saw_connection(&store, 2, || Some(10));
        assert_eq!(store.1.get(), reads + 1);
        for connection in [10, 9, 10] {
            vm.saw_connection(&store, 2, || Some(connection));
            vm.saw_connection(&store, 1, || Some(connection));
        }
        assert_eq!(store.1.get(), reads + 1);
        vm.saw_connection(&store, 1, || Some(11));
        assert_eq!(store.1.get(), reads + 2);
    }

    /// Another worker writes the record between this one's read and its write.
    fn encoded(connection: u64, id: u32) -> Vec<u8> {
        [
            &connection.to_le_bytes()[..],
            &fingerprint(id).to_le_bytes(),
        ]
        .concat()
    }

    #[test]
    fn a_record_another_worker_wrote_meanwhile_wins_and_nothing_is_followed() {
        // The record is empty: the one in force here would name itself.
        let store = crate::store::Meanwhile::default();
        let mut vm = Succession::new();
        vm.join(&store, joining(1, &["a"]), 0);
        vm.join(&store, joining(2, &["a"]), 0);
        *store.then.borrow_mut() = Some((None, encoded(12, 1)));
        vm.saw_connection(&store, 2, || Some(10));
        assert_eq!(record(&store.store), Some((12, fingerprint(1))));
        assert!(vm.is_in_force(2));
        // A newer connection of the other: it would take the record.
        store
            .store
            .set(IN_FORCE_KEY, &encoded(10, 2), None)
            .unwrap();
        *store.then.borrow_mut() = Some((None, encoded(20, 2)));
        vm.saw_connection(&store, 1, || Some(21));
        assert_eq!(record(&store.store), Some((20, fingerprint(2))));
        assert!(vm.is_in_force(2));
    }

    #[test]
    fn newer_connections_of_the_one_in_force_leave_the_record_as_it_is() {
        let store = MemStore::new();
        let mut vm = updated(&store);
        let mut other = updated(&store);
        vm.saw_connection(&store, 2, || Some(10));
        vm.saw_connection(&store, 2, || Some(15));
        assert_eq!(record(&store), Some((10, fingerprint(2))));
        // So a connection of the replaced listener accepted after 10 still counts.
        other.saw_connection(&store, 1, || Some(12));
        assert!(other.is_in_force(1));
    }

    #[test]
    fn a_rebuilt_vm_orders_configurations_first_heard_at_once_as_configured() {
        let store = MemStore::new();
        both_live(&store, 0);
        let vm = configured(&store, [1, 2], 40_000);
        assert!(vm.is_in_force(2));
    }

    /// A VM rebuilt after a crash (or a new VM of a module update, which finds its
    /// configuration's text live elsewhere) treats its first configurations as loaded again;
    /// an update that comes to it later is an update all the same: the configuration it
    /// brings is in force at once, not the one a connection put in force before.
    #[test]
    fn an_update_after_a_rebuild_is_in_force_at_once() {
        let store = MemStore::new();
        both_live(&store, 0);
        // An earlier update's connection put root context 1's configuration in force.
        store.set(IN_FORCE_KEY, &encoded(9, 1), None).unwrap();
        let mut vm = Succession::new();
        vm.join(&store, joining(1, &["a"]), 40_000);
        assert!(vm.is_in_force(1));
        // The update, long after: root context 3's configuration, first heard from now.
        LiveEndpoints::of_source(3000).beat(&store, &config("c"), 60_000);
        vm.join(&store, joining(3, &["c"]), 60_000);
        assert!(vm.is_in_force(3), "the update's configuration is in force");
        vm.follow_store(&store);
        assert!(vm.is_in_force(3), "and stays so at the next tick");
    }

    /// A review: the VMs are configured with an update one after another, and one configured
    /// later cleared the record of the connection the update's configuration had taken in
    /// another: a rollback then went unnoticed until the listener rolled back from drained.
    #[test]
    fn a_vm_configured_later_keeps_the_connection_the_update_took_elsewhere() {
        let store = MemStore::new();
        let mut b = Succession::new();
        b.join(&store, joining(1, &["a", "x"]), 0);
        let mut a = updated(&store);
        a.saw_connection(&store, 2, || Some(10));
        b.join(&store, joining(2, &["a", "b"]), 0);
        assert_eq!(record(&store), Some((10, fingerprint(2))));
        assert!(b.is_in_force(2));
        // Envoy rolls back: the listener of root context 1's configuration takes connection 20.
        a.saw_connection(&store, 1, || Some(20));
        assert!(a.is_in_force(1));
        b.follow_store(&store);
        assert!(b.is_in_force(1));
    }

    #[test]
    fn the_endpoints_handed_over_are_named_once() {
        let store = MemStore::new();
        let mut vm = updated(&store);
        vm.join(&store, joining(3, &["b", "c"]), 0);
        assert_eq!(vm.standing(1), names(&["a", "b", "c"]));
    }
}
