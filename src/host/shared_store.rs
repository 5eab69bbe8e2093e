//! `Store` over proxy-wasm shared data (namespaced by the filter's `vm_id`).

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

use crate::store::{Cas, Store, StoreError};

pub struct SharedData;

impl Store for SharedData {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, StoreError> {
        match hostcalls::get_shared_data(key) {
            Ok((value, Some(cas))) => Ok(Some((value.unwrap_or_default(), cas))),
            Ok((_, None)) => Ok(None),
            Err(_) => Err(StoreError::Host),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Host),
        }
    }
}

/// Create `key` with `value` unless it exists. Shared data has no atomic create, so this
/// runs at configure time, before traffic: the main thread's VM configures before the
/// workers' VMs are cloned, so in practice only it creates those keys. A learned endpoint's
/// breaker record is made by the VM that learns the registration, before the map names it
/// (`learn::create_record`); `Shared::endpoints` calls this for it only as a fallback, when
/// that write failed.
pub fn ensure(key: &str, value: &[u8]) {
    if let Ok((_, None)) = hostcalls::get_shared_data(key) {
        let _ = hostcalls::set_shared_data(key, Some(value), None);
    }
}
