//! The core's metrics as Envoy stats (`wasmcustom.osmox_webhook.*`).

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::metrics::{Metric, MetricKind, Metrics, PREFIX};

#[derive(Default)]
pub struct EnvoyMetrics {
    /// Envoy's id per metric, in `Metric::ALL` order (`metric as usize`).
    ids: Vec<Option<u32>>,
}

impl EnvoyMetrics {
    /// Define every metric once per VM; a metric the host refuses becomes a no-op.
    pub fn define() -> Self {
        let ids = Metric::ALL
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
        EnvoyMetrics { ids }
    }
}

impl Metrics for EnvoyMetrics {
    fn add(&self, metric: Metric, delta: i64) {
        if let Some(Some(id)) = self.ids.get(metric as usize) {
            let _ = hostcalls::increment_metric(*id, delta);
        }
    }
}
