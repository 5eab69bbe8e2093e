//! Which of a VM's sending root contexts is in force: the one that takes the VM's queue and
//! sends for every endpoint its configuration has, while the others leave those deliveries
//! to it. A configuration update gives the VM a new root context, and Envoy keeps the replaced
//! one until the old listener has drained (600 s by default): both sweep the one ledger, and
//! without this an attempt went out by either configuration (its URL, headers, keys) until then.
//!
//! The newest configured is in force, until a configuration whose listener takes a newer
//! connection than the one in force has taken since it was configured: Envoy numbers
//! connections in the order it accepts them, and only the listener in use takes new ones. That
//! catches a rollback to a configuration whose root context Envoy kept (it configures nothing
//! then). Which one that is goes into shared data, so VMs that see no such stream (the main
//! thread's, a quiet worker's) follow at their next tick. Streams on connections accepted
//! before a configuration was loaded never count against it: old keep-alive connections of the
//! replaced listener would otherwise hand it back. Connections are read only while two
//! senders live in the VM, so a VM with one pays nothing.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use proxy_wasm::hostcalls;

use super::root::Shared;
use super::shared_store::SharedData;
use crate::delivery::live_endpoints;

/// Shared data: the connection that put a configuration in force and its
/// `delivery_fingerprint`, 16 bytes; empty until one was put in force since the last load.
pub const IN_FORCE_KEY: &str = "config/in_force";

struct Listed {
    id: u32,
    shared: Weak<Shared>,
    fingerprint: u64,
    /// A hash of its configuration's text (`live_endpoints`).
    source: u64,
    /// Slots woken in another root context of the VM (the one with the queue) for an endpoint
    /// only this one sends for; taken at its next tick.
    inbox: Vec<u32>,
}

struct Senders {
    /// Sending root contexts, the one in force last.
    roots: Vec<Listed>,
    /// The newest connection a stream here arrived on since the last one was configured.
    newest_connection: Option<u64>,
    /// The root context this VM's queue is registered to.
    queue_holder: Option<u32>,
    /// Told at its first root context's configure: this VM replaces one that crashed (its
    /// configuration was already live elsewhere), so the order in which its root contexts
    /// are configured (the order traffic reaches their listeners) says nothing of updates.
    rebuilt: Option<bool>,
}

thread_local! {
    static SENDERS: RefCell<Senders> = const {
        RefCell::new(Senders {
            roots: Vec::new(),
            newest_connection: None,
            queue_holder: None,
            rebuilt: None,
        })
    };
}

fn with<T>(f: impl FnOnce(&mut Senders) -> T) -> Option<T> {
    SENDERS.try_with(|s| f(&mut s.borrow_mut())).ok()
}

/// Where a root context stands among this VM's senders.
pub enum Standing {
    /// Not a sender here (closing, or never configured to send).
    NotListed,
    InForce,
    /// Another configuration is in force: the endpoints it, and any other put in force since
    /// this one was, send for.
    Superseded(Vec<String>),
}

/// `context_id` was configured to send, and registered this VM's queue: it is in force here.
/// A configuration an update brings clears what put another in force before, in every VM:
/// connections taken before it was loaded say nothing of it. In a VM rebuilt after a crash
/// (while the others go on) nothing is an update: the record stays, its root contexts follow
/// it, and until it names one the configuration first heard from last is in force here.
pub fn join(context_id: u32, shared: &Rc<Shared>, source: u64, now_ms: u64) {
    let fingerprint = shared.config.delivery_fingerprint();
    let first = with(|s| s.rebuilt.is_none()).unwrap_or(false);
    let established = first && live_endpoints::established(&SharedData, source, now_ms);
    let rebuilt = with(|s| {
        let rebuilt = *s.rebuilt.get_or_insert(established);
        s.roots.retain(|r| r.id != context_id);
        s.roots.push(Listed {
            id: context_id,
            shared: Rc::downgrade(shared),
            fingerprint,
            source,
            inbox: Vec::new(),
        });
        s.newest_connection = None;
        s.queue_holder = Some(context_id);
        rebuilt
    })
    .unwrap_or(false);
    if !rebuilt {
        let _ = hostcalls::set_shared_data(IN_FORCE_KEY, Some(b""), None);
        return;
    }
    let heard: Vec<(u32, u64)> = with(|s| {
        s.roots
            .iter()
            .map(|r| {
                let since = live_endpoints::first_heard(&SharedData, r.source, now_ms);
                (r.id, since.unwrap_or(0))
            })
            .collect()
    })
    .unwrap_or_default();
    with(|s| {
        // Oldest first heard first: the one in force last; between equals, the order of
        // configuration.
        let since = |id: u32| heard.iter().find(|(i, _)| *i == id).map_or(0, |(_, t)| *t);
        let mut keyed: Vec<(u64, usize, Listed)> = std::mem::take(&mut s.roots)
            .into_iter()
            .enumerate()
            .map(|(i, r)| (since(r.id), i, r))
            .collect();
        crate::heapsort::sort_by(&mut keyed, |a, b| (a.0, a.1) < (b.0, b.1));
        s.roots = keyed.into_iter().map(|(_, _, r)| r).collect();
    });
    follow_shared();
}

/// `context_id` sends nothing more (closing, or deleted).
pub fn leave(context_id: u32) {
    with(|s| {
        s.roots.retain(|r| r.id != context_id);
        if s.queue_holder == Some(context_id) {
            s.queue_holder = None;
        }
    });
}

fn in_force(s: &Senders, context_id: u32) -> bool {
    s.roots.last().is_some_and(|r| r.id == context_id)
}

/// Whether `context_id` is in force here and must register the VM's queue to take its
/// wake-ups (a root context that had it left: a rejected update, a drained listener). The
/// caller registers it: only a context of that root can.
pub fn claims_queue(context_id: u32) -> bool {
    with(|s| {
        let claims = in_force(s, context_id) && s.queue_holder != Some(context_id);
        if claims {
            s.queue_holder = Some(context_id);
        }
        claims
    })
    .unwrap_or(false)
}

/// A stream of `context_id` arrived on `connection`. While two senders live here, a newer
/// connection than any seen since the last load may put its configuration in force.
pub fn saw_connection(context_id: u32, connection: impl FnOnce() -> Option<u64>) {
    let Some((fingerprint, current)) = with(|s| {
        let listed = s.roots.iter().find(|r| r.id == context_id)?;
        (s.roots.len() >= 2).then(|| (listed.fingerprint, in_force(s, context_id)))
    })
    .flatten() else {
        return;
    };
    let Some(connection) = connection() else {
        return;
    };
    let unseen = with(|s| {
        let unseen = s.newest_connection.is_none_or(|n| connection > n);
        if unseen {
            s.newest_connection = Some(connection);
        }
        unseen
    });
    if unseen != Some(true) {
        return;
    }
    let Ok((value, cas)) = hostcalls::get_shared_data(IN_FORCE_KEY) else {
        return;
    };
    let put = match decode(value.as_deref()) {
        // A connection the configuration in force took first, or one accepted before it.
        Some((first, f)) if f == fingerprint || connection <= first => Some(f),
        // Newer than any the configuration in force took: this listener is the one in use.
        Some(_) => publish(connection, fingerprint, cas).then_some(fingerprint),
        // None yet since the last load: only the one in force here may say which it is.
        None if current => publish(connection, fingerprint, cas).then_some(fingerprint),
        None => None,
    };
    if let Some(f) = put {
        follow(f);
    }
}

/// At a tick: put in force here the configuration the others put in force.
pub fn follow_shared() {
    if !with(|s| s.roots.len() >= 2).unwrap_or(false) {
        return;
    }
    if let Ok((value, _)) = hostcalls::get_shared_data(IN_FORCE_KEY) {
        if let Some((_, f)) = decode(value.as_deref()) {
            follow(f);
        }
    }
}

/// Put in force here the newest root context configured with `fingerprint`, if any.
fn follow(fingerprint: u64) {
    with(|s| {
        if s.roots.last().is_some_and(|r| r.fingerprint == fingerprint) {
            return;
        }
        if let Some(at) = s.roots.iter().rposition(|r| r.fingerprint == fingerprint) {
            let root = s.roots.remove(at);
            s.roots.push(root);
        }
    });
}

fn publish(connection: u64, fingerprint: u64, cas: Option<u32>) -> bool {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&connection.to_le_bytes());
    value[8..].copy_from_slice(&fingerprint.to_le_bytes());
    hostcalls::set_shared_data(IN_FORCE_KEY, Some(&value), cas).is_ok()
}

fn decode(value: Option<&[u8]>) -> Option<(u64, u64)> {
    let value: &[u8; 16] = value?.try_into().ok()?;
    let (connection, fingerprint) = value.split_at(8);
    Some((
        u64::from_le_bytes(connection.try_into().ok()?),
        u64::from_le_bytes(fingerprint.try_into().ok()?),
    ))
}

/// `slot` was woken in `from` for `endpoint`, which `from` does not send for: hand it to the
/// root context here that does (the newest with it: the others hand it over), for its next
/// tick. Without one it waits for a sweep.
pub fn forward(from: u32, slot: u32, endpoint: &str) {
    let others: Vec<(u32, Weak<Shared>)> = with(|s| {
        s.roots
            .iter()
            .rev()
            .filter(|r| r.id != from)
            .map(|r| (r.id, r.shared.clone()))
            .collect()
    })
    .unwrap_or_default();
    // Read outside the borrow: endpoints may include learned ones, from shared data.
    let target = others.into_iter().find_map(|(id, shared)| {
        let shared = shared.upgrade()?;
        let has = shared.endpoints().iter().any(|e| e.name == endpoint);
        has.then_some(id)
    });
    if let Some(target) = target {
        with(|s| {
            if let Some(r) = s.roots.iter_mut().find(|r| r.id == target) {
                r.inbox.push(slot);
            }
        });
    }
}

/// The slots other root contexts handed `context_id` since its last tick.
pub fn take_inbox(context_id: u32) -> Vec<u32> {
    with(|s| {
        s.roots
            .iter_mut()
            .find(|r| r.id == context_id)
            .map(|r| std::mem::take(&mut r.inbox))
    })
    .flatten()
    .unwrap_or_default()
}

pub fn is_in_force(context_id: u32) -> bool {
    with(|s| in_force(s, context_id)).unwrap_or(false)
}

pub fn standing(context_id: u32) -> Standing {
    let after = with(|s| {
        let at = s.roots.iter().position(|r| r.id == context_id)?;
        let after: Vec<Weak<Shared>> = s
            .roots
            .get(at + 1..)
            .unwrap_or_default()
            .iter()
            .map(|r| r.shared.clone())
            .collect();
        Some(after)
    })
    .flatten();
    let Some(after) = after else {
        return Standing::NotListed;
    };
    if after.is_empty() {
        return Standing::InForce;
    }
    // Read outside the borrow: their endpoints may include learned ones, from shared data.
    let mut names: Vec<String> = Vec::new();
    for shared in after.iter().filter_map(Weak::upgrade) {
        for e in shared.endpoints().iter() {
            if !names.contains(&e.name) {
                names.push(e.name.clone());
            }
        }
    }
    Standing::Superseded(names)
}
