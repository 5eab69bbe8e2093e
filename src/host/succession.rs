//! This VM's sending root contexts, in the order `delivery::succession` keeps them: one
//! succession per VM (a thread here), over shared data.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use super::root::Shared;
use super::shared_store::SharedData;
use crate::delivery::succession::{Joining, Sends, Succession};

pub use crate::delivery::succession::Standing;

impl Sends for Weak<Shared> {
    fn endpoint_names(&self) -> Vec<String> {
        self.upgrade()
            .map(|s| s.endpoints().iter().map(|e| e.name.clone()).collect())
            .unwrap_or_default()
    }
}

thread_local! {
    static SENDERS: RefCell<Succession<Weak<Shared>>> = const { RefCell::new(Succession::new()) };
}

fn with<T>(f: impl FnOnce(&mut Succession<Weak<Shared>>) -> T) -> Option<T> {
    SENDERS
        .try_with(|s| s.try_borrow_mut().ok().map(|mut s| f(&mut s)))
        .ok()
        .flatten()
}

pub fn join(context_id: u32, shared: &Rc<Shared>, source: u64, now_ms: u64) {
    let joining = Joining {
        id: context_id,
        sender: Rc::downgrade(shared),
        fingerprint: shared.config.delivery_fingerprint(),
        source,
    };
    with(|s| s.join(&SharedData, joining, now_ms));
}

pub fn leave(context_id: u32) {
    with(|s| s.leave(context_id));
}

pub fn claims_queue(context_id: u32) -> bool {
    with(|s| s.claims_queue(context_id)).unwrap_or(false)
}

pub fn saw_connection(context_id: u32, connection: impl FnOnce() -> Option<u64>) {
    with(|s| s.saw_connection(&SharedData, context_id, connection));
}

pub fn follow_shared() {
    with(|s| s.follow_store(&SharedData));
}

pub fn forward(from: u32, slot: u32, endpoint: &str) {
    with(|s| s.forward(from, slot, endpoint));
}

pub fn take_inbox(context_id: u32) -> Vec<u32> {
    with(|s| s.take_inbox(context_id)).unwrap_or_default()
}

pub fn is_in_force(context_id: u32) -> bool {
    with(|s| s.is_in_force(context_id)).unwrap_or(false)
}

pub fn standing(context_id: u32) -> Standing {
    with(|s| s.standing(context_id)).unwrap_or(Standing::NotListed)
}
