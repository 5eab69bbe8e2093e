//! The core's metrics as Envoy stats (`wasmcustom.osmox_webhook.*`).
//!
//! Every hostcall leaves and re-enters the VM, which costs Envoy more than most of what the
//! filter does per response; so counts are added up inside the VM and handed to Envoy once
//! per tick. Stats therefore trail the traffic by at most one `tickMs`.
//!
//! Except gauges, whose every move is handed over at once. Envoy's gauges are unsigned, and
//! one VM's rise and another's fall (an observer's `pending` +1, the singleton sender's −1
//! once it delivered) reached Envoy in the order of their VMs' ticks, so a fall first wrapped
//! the gauge to about 1.8e19 (a review saw it on every burst); and a VM that crashed took its
//! unflushed moves with it, leaving the gauge off for good. A rise happens before its fall,
//! so handed over as they happen they never take the gauge below zero.

use std::cell::RefCell;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::metrics::{Metric, MetricKind, Metrics, PREFIX};

#[derive(Default)]
pub struct EnvoyMetrics {
    /// Envoy's id per metric, in `Metric::ALL` order (`metric as usize`).
    ids: Vec<Option<u32>>,
    /// Deltas not yet handed to Envoy, in the same order.
    unflushed: RefCell<Vec<i64>>,
}

impl EnvoyMetrics {
    /// Define every metric once per VM; a metric the host refuses becomes a no-op.
    pub fn define() -> Self {
        let ids: Vec<Option<u32>> = Metric::ALL
            .iter()
            .map(|m| {
                let kind = match m.kind() {
                    MetricKind::Counter => MetricType::Counter,
                    MetricKind::Gauge => MetricType::Gauge,
                };
                let name = format!("{PREFIX}{}", m.name());
                hostcalls::define_metric(kind, &name).ok()
            })
            .collect();
        let unflushed = RefCell::new(vec![0; ids.len()]);
        EnvoyMetrics { ids, unflushed }
    }

    /// Hand the counted deltas to Envoy.
    pub fn flush(&self) {
        let mut unflushed = self.unflushed.borrow_mut();
        for (id, delta) in self.ids.iter().zip(unflushed.iter_mut()) {
            if let (Some(id), true) = (id, *delta != 0) {
                let _ = hostcalls::increment_metric(*id, *delta);
            }
            *delta = 0;
        }
    }
}

impl Metrics for EnvoyMetrics {
    fn add(&self, metric: Metric, delta: i64) {
        let i = metric as usize;
        if metric.kind() == MetricKind::Gauge {
            if let Some(Some(id)) = self.ids.get(i) {
                let _ = hostcalls::increment_metric(*id, delta);
            }
            return;
        }
        if let Some(d) = self.unflushed.borrow_mut().get_mut(i) {
            *d = d.saturating_add(delta);
        }
    }
}
