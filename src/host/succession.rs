//! Which of a VM's sending root contexts is the newest. A configuration update gives the VM a
//! new root context, and Envoy keeps the replaced one until the old listener has drained (600 s
//! by default): both sweep the one ledger, and without this an attempt went out by either
//! configuration (its URL, headers, keys) until then. Within one VM, configuration order is
//! update order; a rejected update's root context leaves again, and the one it replaced is the
//! newest once more. (A VM rebuilt after a crash configures its root contexts in the order
//! their listeners' traffic reaches them: the README names that limit.)

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use super::root::Shared;

thread_local! {
    /// This VM's sending root contexts, oldest configuration first.
    static SENDERS: RefCell<Vec<(u32, Weak<Shared>)>> = const { RefCell::new(Vec::new()) };
}

/// `context_id` was configured to send: it is now the newest.
pub fn join(context_id: u32, shared: &Rc<Shared>) {
    leave(context_id);
    let _ = SENDERS.try_with(|s| s.borrow_mut().push((context_id, Rc::downgrade(shared))));
}

/// `context_id` sends nothing more (closing, or deleted).
pub fn leave(context_id: u32) {
    let _ = SENDERS.try_with(|s| s.borrow_mut().retain(|(id, _)| *id != context_id));
}

/// The endpoints configurations newer than `context_id`'s send for; `None` when it is the
/// newest (or not a sender).
pub fn newer_endpoints(context_id: u32) -> Option<Vec<String>> {
    let newer: Vec<Rc<Shared>> = SENDERS
        .try_with(|s| {
            let s = s.borrow();
            let at = s.iter().position(|(id, _)| *id == context_id)?;
            let newer = s.get(at + 1..)?;
            (!newer.is_empty()).then(|| newer.iter().filter_map(|(_, w)| w.upgrade()).collect())
        })
        .ok()
        .flatten()?;
    // Read outside the borrow: a newer configuration's endpoints may include learned ones,
    // looked up in shared data.
    let mut names: Vec<String> = Vec::new();
    for shared in newer {
        for e in shared.endpoints().iter() {
            if !names.contains(&e.name) {
                names.push(e.name.clone());
            }
        }
    }
    Some(names)
}
