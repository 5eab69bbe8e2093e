//! Which of a VM's sending root contexts sends for an endpoint that several configurations
//! have. A configuration update gives the VM a new root context, and Envoy keeps the replaced
//! one until the old listener has drained (600 s by default): both sweep the one ledger, and
//! without this an attempt went out by either configuration (its URL, headers, keys) until then.
//!
//! The current one is the newest configured, until a stream of another one arrives on a newer
//! connection than any seen in this VM since: Envoy numbers connections in the order it accepts
//! them, and only the listener traffic now reaches takes new ones. That catches what the order
//! of configuration cannot tell: a rollback to a configuration whose root context Envoy kept
//! (it configures nothing then), and a VM rebuilt after a crash, whose root contexts are
//! configured in the order streams reach them. A rejected update's root context leaves again.
//! Connections are read only while two senders live here, so a VM with one pays nothing.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use super::root::Shared;

struct Senders {
    /// Sending root contexts, the current one last.
    roots: Vec<(u32, Weak<Shared>)>,
    /// The newest connection a stream of any of them arrived on since the last one joined.
    newest_connection: Option<u64>,
}

thread_local! {
    static SENDERS: RefCell<Senders> = const {
        RefCell::new(Senders {
            roots: Vec::new(),
            newest_connection: None,
        })
    };
}

/// Where a root context stands among this VM's senders.
pub enum Standing {
    /// Not a sender here (closing, or never configured to send).
    NotListed,
    Current,
    /// Another configuration is current: the endpoints it, and any other that took over from
    /// this one since, send for.
    Superseded(Vec<String>),
}

/// `context_id` was configured to send: it is current now.
pub fn join(context_id: u32, shared: &Rc<Shared>) {
    let _ = SENDERS.try_with(|s| {
        let mut s = s.borrow_mut();
        s.roots.retain(|(id, _)| *id != context_id);
        s.roots.push((context_id, Rc::downgrade(shared)));
        // Connections seen so far came before it: none of them may take over from it.
        s.newest_connection = None;
    });
}

/// `context_id` sends nothing more (closing, or deleted).
pub fn leave(context_id: u32) {
    let _ = SENDERS.try_with(|s| {
        let mut s = s.borrow_mut();
        s.roots.retain(|(id, _)| *id != context_id);
        if s.roots.len() < 2 {
            s.newest_connection = None;
        }
    });
}

/// Whether two or more senders live here, so streams' connections tell which is current.
pub fn contested() -> bool {
    SENDERS
        .try_with(|s| s.borrow().roots.len() >= 2)
        .unwrap_or(false)
}

/// A stream of `context_id` arrived on `connection`; true when that makes it current (its
/// listener took a newer connection than any seen here since the last one joined).
pub fn saw_connection(context_id: u32, connection: u64) -> bool {
    SENDERS
        .try_with(|s| {
            let mut s = s.borrow_mut();
            let seen = s.newest_connection;
            s.newest_connection = Some(seen.map_or(connection, |n| n.max(connection)));
            // The first connection after a join cannot tell old from new: it sets the mark.
            if seen.is_none_or(|n| connection <= n) {
                return false;
            }
            let at = s.roots.iter().position(|(id, _)| *id == context_id);
            match at {
                Some(at) if at + 1 < s.roots.len() => {
                    let root = s.roots.remove(at);
                    s.roots.push(root);
                    true
                }
                _ => false,
            }
        })
        .unwrap_or(false)
}

pub fn standing(context_id: u32) -> Standing {
    let after = SENDERS
        .try_with(|s| {
            let s = s.borrow();
            let at = s.roots.iter().position(|(id, _)| *id == context_id)?;
            let after: Vec<Weak<Shared>> = s
                .roots
                .get(at + 1..)
                .unwrap_or_default()
                .iter()
                .map(|(_, w)| w.clone())
                .collect();
            Some(after)
        })
        .ok()
        .flatten();
    let Some(after) = after else {
        return Standing::NotListed;
    };
    if after.is_empty() {
        return Standing::Current;
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
