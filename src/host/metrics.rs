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

use crate::config::Endpoint;
use crate::metrics::{
    DefinedIds, Metric, MetricKind, Metrics, ATTEMPT_DURATION, DELIVERY_DELAY, PREFIX,
};

#[derive(Default)]
pub struct EnvoyMetrics {
    /// Envoy's id per metric, in `Metric::ALL` order (`metric as usize`).
    ids: Vec<Option<u32>>,
    /// Deltas not yet handed to Envoy, in the same order.
    unflushed: RefCell<Vec<i64>>,
    /// The attempt-duration histogram, in all.
    durations: Option<u32>,
    /// The delivery-delay histogram, in all.
    delays: Option<u32>,
    /// The configured endpoints' own metrics. Learned endpoints have none: their number is
    /// bounded only by `learn`, and Envoy keeps a stat's name until it restarts.
    endpoints: Vec<EndpointMetrics>,
}

struct EndpointMetrics {
    name: String,
    /// In `Metric::PER_ENDPOINT` order.
    ids: Vec<Option<u32>>,
    unflushed: RefCell<Vec<i64>>,
    durations: Option<u32>,
    delays: Option<u32>,
}

thread_local! {
    /// For the VM, whose every configuration defines the same metrics.
    static DEFINED: RefCell<DefinedIds> = RefCell::new(DefinedIds::default());
}

fn define(kind: MetricType, name: &str) -> Option<u32> {
    let name = format!("{PREFIX}{name}");
    let define = || hostcalls::define_metric(kind, &name).ok();
    DEFINED
        .try_with(|d| match d.try_borrow_mut() {
            Ok(mut d) => d.id(&name, define),
            Err(_) => define(),
        })
        .ok()
        .flatten()
}

impl EnvoyMetrics {
    /// Every metric, defined once per VM (`DefinedIds`): a root context that configures
    /// after another takes the ids that one was given. A metric the host refuses becomes a
    /// no-op.
    pub fn define(endpoints: &[Endpoint]) -> Self {
        let ids: Vec<Option<u32>> = Metric::ALL
            .iter()
            .map(|m| {
                let kind = match m.kind() {
                    MetricKind::Counter => MetricType::Counter,
                    MetricKind::Gauge => MetricType::Gauge,
                };
                define(kind, m.name())
            })
            .collect();
        let unflushed = RefCell::new(vec![0; ids.len()]);
        let endpoints = endpoints
            .iter()
            .map(|e| {
                let of = |name: &str| format!("endpoint.{}.{name}", e.name);
                EndpointMetrics {
                    name: e.name.clone(),
                    ids: Metric::PER_ENDPOINT
                        .iter()
                        .map(|m| define(MetricType::Counter, &of(m.name())))
                        .collect(),
                    unflushed: RefCell::new(vec![0; Metric::PER_ENDPOINT.len()]),
                    durations: define(MetricType::Histogram, &of(ATTEMPT_DURATION)),
                    delays: define(MetricType::Histogram, &of(DELIVERY_DELAY)),
                }
            })
            .collect();
        EnvoyMetrics {
            ids,
            unflushed,
            durations: define(MetricType::Histogram, ATTEMPT_DURATION),
            delays: define(MetricType::Histogram, DELIVERY_DELAY),
            endpoints,
        }
    }

    /// Hand the counted deltas to Envoy.
    pub fn flush(&self) {
        hand_over(&self.ids, &self.unflushed);
        for e in &self.endpoints {
            hand_over(&e.ids, &e.unflushed);
        }
    }

    fn endpoint(&self, name: &str) -> Option<&EndpointMetrics> {
        self.endpoints.iter().find(|e| e.name == name)
    }
}

fn hand_over(ids: &[Option<u32>], unflushed: &RefCell<Vec<i64>>) {
    let mut unflushed = unflushed.borrow_mut();
    for (id, delta) in ids.iter().zip(unflushed.iter_mut()) {
        if let (Some(id), true) = (id, *delta != 0) {
            let _ = hostcalls::increment_metric(*id, *delta);
        }
        *delta = 0;
    }
}

fn count(unflushed: &RefCell<Vec<i64>>, i: usize, delta: i64) {
    if let Some(d) = unflushed.borrow_mut().get_mut(i) {
        *d = d.saturating_add(delta);
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
        count(&self.unflushed, i, delta);
    }

    fn add_for(&self, endpoint: &str, metric: Metric, delta: i64) {
        self.add(metric, delta);
        if let (Some(i), Some(e)) = (metric.per_endpoint(), self.endpoint(endpoint)) {
            count(&e.unflushed, i, delta);
        }
    }

    fn attempt_took(&self, endpoint: &str, ms: u64) {
        let own = self.endpoint(endpoint).and_then(|e| e.durations);
        record(self.durations, own, ms);
    }

    fn delivered_after(&self, endpoint: &str, ms: u64) {
        let own = self.endpoint(endpoint).and_then(|e| e.delays);
        record(self.delays, own, ms);
    }
}

/// Recorded at once, in all and for the endpoint: a histogram takes values, not deltas, so
/// there is nothing to add up.
fn record(all: Option<u32>, own: Option<u32>, ms: u64) {
    for id in [all, own].into_iter().flatten() {
        let _ = hostcalls::record_metric(id, ms);
    }
}
