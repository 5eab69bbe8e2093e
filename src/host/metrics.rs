//! The core's metrics as Envoy stats (`wasmcustom.osmox_webhook.*`).

use std::collections::HashMap;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::metrics::{Metric, MetricKind, Metrics, PREFIX};

#[derive(Default)]
pub struct EnvoyMetrics {
    ids: HashMap<Metric, u32>,
}

impl EnvoyMetrics {
    /// Define every metric once per VM; a metric the host refuses becomes a no-op.
    pub fn define() -> Self {
        let ids = Metric::ALL
            .iter()
            .filter_map(|m| {
                let kind = match m.kind() {
                    MetricKind::Counter => MetricType::Counter,
                    MetricKind::Gauge => MetricType::Gauge,
                };
                let name = format!("{PREFIX}{}", m.name());
                hostcalls::define_metric(kind, &name)
                    .ok()
                    .map(|id| (*m, id))
            })
            .collect();
        EnvoyMetrics { ids }
    }
}

impl Metrics for EnvoyMetrics {
    fn add(&self, metric: Metric, delta: i64) {
        if let Some(id) = self.ids.get(&metric) {
            let _ = hostcalls::increment_metric(*id, delta);
        }
    }
}
