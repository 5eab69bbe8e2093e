//! Every metric the filter exposes, named once. Envoy shows them as
//! `wasmcustom.osmox_webhook.<name>` in `/stats` and `osmox_webhook_<name>` in Prometheus.

/// Prefix of every metric name.
pub const PREFIX: &str = "osmox_webhook.";

macro_rules! metrics {
    ($( $variant:ident => $name:literal, $kind:ident; )*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Metric { $( $variant, )* }

        impl Metric {
            pub const ALL: &'static [Metric] = &[ $( Metric::$variant, )* ];

            /// The name after `PREFIX`.
            pub fn name(self) -> &'static str {
                match self { $( Metric::$variant => $name, )* }
            }

            pub fn kind(self) -> MetricKind {
                match self { $( Metric::$variant => MetricKind::$kind, )* }
            }
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    /// Moved up and down by every VM; the sum is the process-wide figure.
    Gauge,
}

metrics! {
    ResponsesWatched => "responses_watched", Counter;
    ResponsesUnchanged => "responses_unchanged", Counter;
    SkippedTooLarge => "bodies_skipped_too_large", Counter;
    SkippedNotJson => "bodies_skipped_not_json", Counter;
    SkippedEncoded => "bodies_skipped_encoded", Counter;
    SkippedMalformed => "bodies_skipped_malformed", Counter;
    SkippedStatus => "bodies_skipped_status", Counter;
    SkippedBufferFull => "bodies_skipped_buffer_full", Counter;
    SkippedAliased => "bodies_skipped_aliased", Counter;
    SkippedNoQuery => "bodies_skipped_no_query", Counter;
    StreamsUnlogged => "streams_unlogged", Counter;
    PersistedQueriesKept => "persisted_queries_kept", Counter;
    ObjectsSkipped => "objects_skipped", Counter;
    EventsDetected => "events_detected", Counter;
    EventsDuplicate => "events_duplicate", Counter;
    EventsStale => "events_stale", Counter;
    EventsPassedOver => "events_passed_over", Counter;
    EventsUnrouted => "events_unrouted", Counter;
    EventsTestMode => "events_test_mode", Counter;
    WakeupsToPeers => "wakeups_to_peers", Counter;
    DeliveriesSent => "deliveries_sent", Counter;
    DeliveriesSucceeded => "deliveries_succeeded", Counter;
    DeliveriesFailed => "deliveries_failed", Counter;
    DeliveredAfterRetry => "deliveries_succeeded_after_retry", Counter;
    RetriesScheduled => "retries_scheduled", Counter;
    DeliveriesExhausted => "deliveries_exhausted", Counter;
    DeliveriesGone => "deliveries_gone", Counter;
    DeliveriesExpired => "deliveries_expired", Counter;
    DeliveriesDropped => "deliveries_dropped", Counter;
    DeliveriesRateLimited => "deliveries_rate_limited", Counter;
    DeliveriesSuperseded => "deliveries_superseded", Counter;
    DeliveriesOrphaned => "deliveries_orphaned", Counter;
    ResultsAwaited => "results_awaited", Counter;
    ResultsFilledIn => "results_filled_in", Counter;
    DispatchErrors => "dispatch_errors", Counter;
    DeadLettersSent => "dead_letters_sent", Counter;
    DeadLettersFailed => "dead_letters_failed", Counter;
    CircuitsOpened => "circuits_opened", Counter;
    EndpointPauses => "endpoint_pauses", Counter;
    EndpointsGone => "endpoints_gone", Counter;
    StoreConflicts => "store_conflicts", Counter;
    RegistrationsLearned => "registrations_learned", Counter;
    RegistrationsRemoved => "registrations_removed", Counter;
    RegistrationsRefused => "registrations_refused", Counter;
    RegistrationsFull => "registrations_full", Counter;
    RegistrationsUnread => "registrations_unread", Counter;
    LearnedEndpoints => "learned_endpoints", Gauge;
    Pending => "pending", Gauge;
    InFlight => "in_flight", Gauge;
    CircuitsOpen => "circuits_open", Gauge;
}

impl Metric {
    /// Counted for each configured endpoint as well, as `endpoint.<name>.<metric>`: what the
    /// team behind one receiver asks of its own webhooks, which the totals mix with every
    /// other receiver's.
    pub const PER_ENDPOINT: &'static [Metric] = &[
        Metric::DeliveriesSent,
        Metric::DeliveriesSucceeded,
        Metric::DeliveriesFailed,
        Metric::DeliveredAfterRetry,
        Metric::RetriesScheduled,
        Metric::DeliveriesExhausted,
        Metric::DeliveriesGone,
        Metric::DeliveriesExpired,
        Metric::DeliveriesDropped,
        Metric::DeliveriesRateLimited,
        Metric::CircuitsOpened,
        Metric::EndpointPauses,
    ];

    /// Where `self` is in `PER_ENDPOINT`.
    pub fn per_endpoint(self) -> Option<usize> {
        Metric::PER_ENDPOINT.iter().position(|m| *m == self)
    }
}

/// The histogram of how long webhook attempts took to be answered, in milliseconds: in all,
/// and per configured endpoint (`endpoint.<name>.attempt_duration_ms`).
pub const ATTEMPT_DURATION: &str = "attempt_duration_ms";

/// The histogram of how long after the filter took an event in its webhook was delivered,
/// in milliseconds: what a receiver's owner waits, retries, holds and waits for a result
/// included. In all, and per configured endpoint (`endpoint.<name>.delivery_delay_ms`).
pub const DELIVERY_DELAY: &str = "delivery_delay_ms";

/// The ids Envoy gave this VM for the metrics it defined, by name. Envoy hands out a fresh
/// id at every definition, even of a name defined before, and keeps an entry for each until
/// the VM goes; every configuration a VM loads (a root context of its own) defines them all,
/// so without this each update left the VM's whole set (51 ids, and 13 per endpoint) behind
/// in Envoy for good.
#[derive(Debug, Default)]
pub struct DefinedIds(crate::hashing::HashMap<String, u32>);

impl DefinedIds {
    /// The id of the metric `name`: the one it was given before, or the one `define` gets
    /// (a definition the host refused is asked for again next time).
    pub fn id(&mut self, name: &str, define: impl FnOnce() -> Option<u32>) -> Option<u32> {
        if let Some(id) = self.0.get(name) {
            return Some(*id);
        }
        let id = define()?;
        self.0.insert(name.to_string(), id);
        Some(id)
    }
}

/// Where the core reports metrics; the host maps it to proxy-wasm stats. A no-op in tests
/// that do not care.
pub trait Metrics {
    fn add(&self, metric: Metric, delta: i64);

    /// `metric` for a delivery to `endpoint`: counted in all, and for the endpoint where it
    /// is a configured one and the metric is in `Metric::PER_ENDPOINT`.
    fn add_for(&self, endpoint: &str, metric: Metric, delta: i64) {
        let _ = endpoint;
        self.add(metric, delta);
    }

    /// An attempt to `endpoint` was answered (or failed) `ms` after it was sent.
    fn attempt_took(&self, endpoint: &str, ms: u64) {
        let _ = (endpoint, ms);
    }

    /// A delivery to `endpoint` succeeded `ms` after its event was taken in.
    fn delivered_after(&self, endpoint: &str, ms: u64) {
        let _ = (endpoint, ms);
    }
}

/// Counts into maps: for tests.
#[derive(Debug, Default)]
pub struct CountingMetrics {
    all: std::cell::RefCell<std::collections::HashMap<Metric, i64>>,
    per_endpoint: std::cell::RefCell<std::collections::HashMap<(String, Metric), i64>>,
    durations: std::cell::RefCell<Vec<(String, u64)>>,
    delays: std::cell::RefCell<Vec<(String, u64)>>,
}

impl CountingMetrics {
    pub fn get(&self, metric: Metric) -> i64 {
        self.all.borrow().get(&metric).copied().unwrap_or(0)
    }

    /// What `add_for` counted for `endpoint` (per-endpoint metrics only).
    pub fn get_for(&self, endpoint: &str, metric: Metric) -> i64 {
        let key = (endpoint.to_string(), metric);
        self.per_endpoint.borrow().get(&key).copied().unwrap_or(0)
    }

    /// The attempt durations recorded, in order.
    pub fn durations(&self) -> Vec<(String, u64)> {
        self.durations.borrow().clone()
    }

    /// The delivery delays recorded, in order.
    pub fn delays(&self) -> Vec<(String, u64)> {
        self.delays.borrow().clone()
    }
}

impl Metrics for CountingMetrics {
    fn add(&self, metric: Metric, delta: i64) {
        *self.all.borrow_mut().entry(metric).or_insert(0) += delta;
    }

    fn add_for(&self, endpoint: &str, metric: Metric, delta: i64) {
        self.add(metric, delta);
        if metric.per_endpoint().is_some() {
            let key = (endpoint.to_string(), metric);
            *self.per_endpoint.borrow_mut().entry(key).or_insert(0) += delta;
        }
    }

    fn attempt_took(&self, endpoint: &str, ms: u64) {
        self.durations.borrow_mut().push((endpoint.to_string(), ms));
    }

    fn delivered_after(&self, endpoint: &str, ms: u64) {
        self.delays.borrow_mut().push((endpoint.to_string(), ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prometheus_safe() {
        let mut names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        assert!(names
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Metric::ALL.len());
    }

    /// Per-endpoint names are the totals' names after `endpoint.<name>.`; only counters
    /// (a gauge moved by every VM has no per-endpoint meaning here), each listed once.
    #[test]
    fn per_endpoint_metrics_are_distinct_counters() {
        for (i, m) in Metric::PER_ENDPOINT.iter().enumerate() {
            assert_eq!(m.kind(), MetricKind::Counter, "{m:?}");
            assert_eq!(m.per_endpoint(), Some(i), "{m:?}");
        }
        assert_eq!(Metric::Pending.per_endpoint(), None);
        assert!(!Metric::ALL.iter().any(|m| m.name() == ATTEMPT_DURATION));
        assert!(!Metric::ALL.iter().any(|m| m.name() == DELIVERY_DELAY));
    }

    #[test]
    fn counting_metrics_count_per_endpoint_only_what_is_listed() {
        let m = CountingMetrics::default();
        m.add_for("crm", Metric::DeliveriesSent, 2);
        m.add_for("crm", Metric::DeliveriesSuperseded, 1);
        m.add_for("billing", Metric::DeliveriesSent, 1);
        assert_eq!(m.get(Metric::DeliveriesSent), 3);
        assert_eq!(m.get(Metric::DeliveriesSuperseded), 1);
        assert_eq!(m.get_for("crm", Metric::DeliveriesSent), 2);
        assert_eq!(m.get_for("crm", Metric::DeliveriesSuperseded), 0);
    }

    /// A `Metrics` that keeps no per-endpoint counts (the flow tests' threaded one) still
    /// counts, through `add_for`'s default, every delivery in all.
    #[test]
    fn add_for_counts_in_all_where_nothing_is_kept_per_endpoint() {
        struct TotalsOnly(CountingMetrics);
        impl Metrics for TotalsOnly {
            fn add(&self, metric: Metric, delta: i64) {
                self.0.add(metric, delta);
            }
        }
        let m = TotalsOnly(CountingMetrics::default());
        m.add_for("crm", Metric::DeliveriesSent, 2);
        m.add_for("crm", Metric::DeliveriesSuperseded, 1);
        assert_eq!(m.0.get(Metric::DeliveriesSent), 2);
        assert_eq!(m.0.get(Metric::DeliveriesSuperseded), 1);
        assert_eq!(m.0.get_for("crm", Metric::DeliveriesSent), 0);
    }

    /// README's Metrics section is what dashboards are built from: its table names every
    /// metric and no other, and its per-endpoint list is `PER_ENDPOINT` and the histograms.
    #[test]
    fn readme_lists_every_metric_and_no_other() {
        let readme = include_str!("../README.md");
        let from = readme
            .find("\n## Metrics\n")
            .expect("README has a Metrics section");
        let to = from
            + readme[from..]
                .find("\n## Limits\n")
                .expect("and a section after it");
        let section = &readme[from..to];
        let ticked = |text: &str| -> Vec<String> {
            text.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        };
        let mut listed = Vec::new();
        for row in section.lines().filter(|l| l.starts_with("| `")) {
            let first = row.split('|').nth(1).unwrap_or_default();
            let mut stem = String::new();
            for name in ticked(first) {
                // `bodies_skipped_status`, `_not_json`, ...: a suffix takes the first name's stem.
                if let Some(suffix) = name.strip_prefix('_') {
                    listed.push(format!("{stem}_{suffix}"));
                } else {
                    stem = name
                        .rsplit_once('_')
                        .map_or(String::new(), |(s, _)| s.to_string());
                    listed.push(name);
                }
            }
        }
        let mut code: Vec<String> = Metric::ALL.iter().map(|m| m.name().to_string()).collect();
        code.push(ATTEMPT_DURATION.to_string());
        code.push(DELIVERY_DELAY.to_string());
        listed.sort_unstable();
        code.sort_unstable();
        assert_eq!(listed, code);

        let per = section
            .split("**Per endpoint.**")
            .nth(1)
            .and_then(|t| t.split("`wasmcustom").next())
            .expect("README has its per-endpoint paragraph");
        let mut listed = ticked(per);
        let mut code: Vec<String> = Metric::PER_ENDPOINT
            .iter()
            .map(|m| m.name().to_string())
            .collect();
        code.push(ATTEMPT_DURATION.to_string());
        code.push(DELIVERY_DELAY.to_string());
        listed.sort_unstable();
        code.sort_unstable();
        assert_eq!(listed, code);

        // The `stats_tags` rule README tells a deploy to copy is the shipped config's.
        let shipped = include_str!("../envoy/envoy-demo.yaml");
        let rule = shipped
            .split("regex: '")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .expect("the shipped config has a stats_tags regex");
        assert!(section.contains(&format!("(`{rule}`, tag")), "{rule}");
    }

    /// Envoy gives a fresh id (and keeps it) at every definition: a VM that loads another
    /// configuration asks for the ids it was given already, not for new ones.
    #[test]
    fn a_metric_is_defined_once_per_vm() {
        let mut ids = DefinedIds::default();
        let asked = std::cell::Cell::new(0);
        let define = |id| {
            asked.set(asked.get() + 1);
            id
        };
        assert_eq!(ids.id("pending", || define(Some(7))), Some(7));
        assert_eq!(ids.id("pending", || define(Some(8))), Some(7));
        assert_eq!(
            ids.id("endpoint.crm.deliveries_sent", || define(Some(9))),
            Some(9)
        );
        assert_eq!(asked.get(), 2);
        // Refused: asked again next time.
        assert_eq!(ids.id("in_flight", || define(None)), None);
        assert_eq!(ids.id("in_flight", || define(Some(10))), Some(10));
        assert_eq!(asked.get(), 4);
    }

    /// The host keeps its metric ids in a list indexed by `metric as usize`.
    #[test]
    fn all_lists_metrics_in_declaration_order() {
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(*m as usize, i, "{m:?}");
        }
    }
}
