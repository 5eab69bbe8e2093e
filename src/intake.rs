//! From notifications seen in a response to deliveries in the ledger.
//!
//! Runs in the HTTP context after the response went to the client. It only records work:
//! a callout made from a stream dies with it, so the root contexts send.

use crate::config::{Config, Endpoint};
use crate::delivery::ledger::{EventFor, FilledIn, Ledger, LedgerError, Placed, Slot, Withdrawn};
use crate::events::{
    endpoint_key, fnv1a64, EndpointKey, Generation, KnownEvents, Memory, Place, Verdict,
};
use crate::metrics::{Metric, Metrics};
use crate::osmox::{DeliveryStatus, Notification};
use crate::routing::{self, Routed};
use crate::store::Store;

/// `webhook-id`: derived from the event's identity and the endpoint, so it is the same on
/// every retry and for the same event seen again after a restart, which lets receivers drop
/// repeats. A final state's id leaves out `updatedOn`: OsmoX moves it when it saves a
/// SUCCESS's result, after the state changed, so two views of one event can differ there.
/// An earlier state's id takes it in: a notification can come back to a state with the same
/// `retryCount` and provider (confirmation goes 3 → 4 → 3; a failed enqueue 1 → 2 → 1), and
/// that later event must not reuse the id a receiver has already seen. Without `updatedOn`,
/// the event's `generation` in the dedupe memory stands in: distinct while the memory
/// remembers the notification, though an event seen again after it forgot may then get
/// another id (a receiver sees a repeat), and a state come back to after it forgot may get
/// the id of that state's earlier event (a receiver that drops repeats drops it: without a
/// time, nothing tells that view from the earlier event's seen again). A missing
/// `retryCount` or `providerId` hashes as 0 (README): a view without `retryCount` gets the id
/// of `retryCount` 0, one without `providerId` another id than a real provider's, and an
/// earlier state's view without `updatedOn` another id than one with it.
pub fn webhook_id(n: &Notification, endpoint: &str, generation: Generation) -> String {
    let retry = n.retry_count.unwrap_or(0).to_le_bytes();
    let provider = n.provider_id.unwrap_or(0).to_le_bytes();
    let count = generation.0.to_le_bytes();
    let time: &[u8] = match (n.delivery_status, n.updated_on.as_deref()) {
        (DeliveryStatus::Success | DeliveryStatus::Failed, _) => b"",
        (_, Some(at)) => at.as_bytes(),
        (_, None) => &count,
    };
    let hash = fnv1a64(&[
        &n.id.to_le_bytes(),
        &n.delivery_status.code().to_le_bytes(),
        &retry,
        &provider,
        endpoint.as_bytes(),
        time,
    ]);
    format!("msg_{}_{}_{hash:016x}", n.id, n.delivery_status.code())
}

/// A store error left a notification's intake unfinished.
struct Incomplete;

/// What taking in one response did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Intake {
    /// Slots to wake a sender for.
    pub wake: Vec<u32>,
    /// Every notification was recorded: seeing the same response again can change nothing.
    pub complete: bool,
}

/// Record the deliveries `notifications` call for. With `known`, the observations this VM
/// took in before are passed over, counted in `events_passed_over`, without asking the
/// dedupe memory in shared data, and the rest are learned once every one was recorded.
// One call per response, from the HTTP context and the tests alike; a struct to bundle
// these would be built anew at every call site for nothing.
#[allow(clippy::too_many_arguments)]
pub fn take_in<S: Store + ?Sized>(
    known: Option<&mut KnownEvents>,
    config: &Config,
    endpoints: &[Endpoint],
    memory: Memory,
    store: &S,
    metrics: &dyn Metrics,
    notifications: &[Notification],
    now_ms: u64,
    seed: u64,
) -> Intake {
    let mut intake = Intake {
        wake: Vec::new(),
        complete: true,
    };
    let fresh: Vec<&Notification> = match &known {
        Some(known) => notifications.iter().filter(|n| !known.knows(n)).collect(),
        None => notifications.iter().collect(),
    };
    let passed = notifications.len() - fresh.len();
    if passed > 0 {
        metrics.add(Metric::EventsPassedOver, passed as i64);
    }
    if fresh.is_empty() {
        return intake;
    }
    let ledger = Ledger::new(config.limits.max_pending);
    let recording = Recording {
        memory,
        ledger: &ledger,
        store,
        metrics,
        now_ms,
        seed,
    };
    for n in &fresh {
        recording.take_in(endpoints, n, &mut intake);
    }
    if let Some(known) = known.filter(|_| intake.complete) {
        known.learn(fresh);
    }
    intake
}

/// A notification's event as the dedupe memory judged it new (or newly filled in).
struct Event {
    /// Where the memory says the notification's deliveries wait, per endpoint: earlier
    /// events', which this one replaces, and for an event seen before (`Verdict::Filled`)
    /// this one's own too, which `fill_in` gives the result.
    previous: Vec<Place>,
    /// For an event seen before with less: how it was routed then.
    before: Option<Routed>,
    generation: Generation,
    /// Seen before only without its result, now with it.
    result_arrived: bool,
    /// Endpoints that have this very event already (`Verdict::Filled`).
    served: Vec<EndpointKey>,
    /// The deliveries placed now wait for the event's result.
    awaits_result: bool,
}

/// Where a response's events are judged, their deliveries placed in the ledger, and taken
/// back when another worker's event turns out to supersede them.
struct Recording<'a, S: Store + ?Sized> {
    memory: Memory,
    ledger: &'a Ledger,
    store: &'a S,
    metrics: &'a dyn Metrics,
    now_ms: u64,
    seed: u64,
}

impl<S: Store + ?Sized> Recording<'_, S> {
    fn take_in(&self, endpoints: &[Endpoint], n: &Notification, intake: &mut Intake) {
        let Some(event) = self.judge(n, &mut intake.complete) else {
            return;
        };
        let mut placed = Vec::new();
        let mut routed = false;
        // Written at the first endpoint, for all of them.
        let mut body = None;
        for endpoint in routing::route(endpoints, n, event.before) {
            routed = true;
            let key = endpoint_key(&endpoint.name);
            // Its filter, changed by an update since, passed over the view that gave it the
            // event: a second delivery would repeat the event under another webhook-id.
            if event.served.contains(&key) {
                continue;
            }
            let body = body.get_or_insert_with(|| n.webhook_body());
            let previous = event
                .previous
                .iter()
                .find(|p| p.endpoint == key)
                .map(|p| p.slot);
            let awaits = event.awaits_result;
            match self.place(endpoint, n, body, previous, event.generation, awaits) {
                Ok(Some(slot)) => {
                    placed.push(Place {
                        endpoint: key,
                        slot,
                    });
                    intake.wake.push(slot);
                }
                Ok(None) => {}
                Err(Incomplete) => intake.complete = false,
            }
        }
        if event.result_arrived {
            self.fill_in(n, &event, intake);
        }
        // An event whose every delivery was dropped was routed: the drops are counted.
        if !routed && event.before.is_none() {
            self.metrics.add(Metric::EventsUnrouted, 1);
        } else if !placed.is_empty() {
            intake.complete &= self.settle(
                n.id,
                event.generation,
                event.awaits_result,
                &placed,
                &mut intake.wake,
            );
        }
    }

    /// The dedupe memory's verdict on `n`, counted; `None` when there is nothing to deliver.
    fn judge(&self, n: &Notification, complete: &mut bool) -> Option<Event> {
        match self.memory.observe(self.store, n, self.now_ms) {
            Ok(Verdict::New { slots, generation }) => {
                self.metrics.add(Metric::EventsDetected, 1);
                if n.test_mode {
                    self.metrics.add(Metric::EventsTestMode, 1);
                }
                Some(Event {
                    previous: slots,
                    before: None,
                    generation,
                    result_arrived: false,
                    served: Vec::new(),
                    awaits_result: n.awaits_result(),
                })
            }
            Ok(Verdict::Filled {
                before,
                slots,
                generation,
                result_arrived,
                served,
                awaits_result,
            }) => {
                self.metrics.add(Metric::EventsDuplicate, 1);
                Some(Event {
                    previous: slots,
                    before: Some(before),
                    generation,
                    result_arrived,
                    served,
                    awaits_result,
                })
            }
            Ok(Verdict::Duplicate) => {
                self.metrics.add(Metric::EventsDuplicate, 1);
                None
            }
            Ok(Verdict::Stale) => {
                self.metrics.add(Metric::EventsStale, 1);
                None
            }
            Err(e) => {
                self.metrics.add(Metric::StoreConflicts, 1);
                log::warn!("notification {}: dedupe memory unavailable: {e:?}", n.id);
                *complete = false;
                None
            }
        }
    }

    /// `n` shows the result its event's earlier views lacked: give it to the deliveries that
    /// still wait (the attempt on the wire keeps what it carries), and send those it held
    /// back for it. Every one the memory recorded, to endpoints this configuration lacks too
    /// (an update removed one while the replaced configuration drains and still sends).
    fn fill_in(&self, n: &Notification, event: &Event, intake: &mut Intake) {
        let Some(result) = n.result_json() else {
            return;
        };
        // Only the result: the view that shows it may have selected fewer fields than the one
        // the body was written from (and an envelope keeps its timestamp). A body that has it
        // already was filled by an earlier view (one whose intake a store error left
        // unfinished, or another worker's at the same time): not filled, counted or woken
        // again.
        let fill = |stored: &[u8]| {
            crate::payload::with_result(stored, &result).filter(|filled| filled != stored)
        };
        let mut stored = true;
        let mut given = event.previous.clone();
        let mut to_fill = event.previous.clone();
        // Deliveries another worker recorded for the event since its verdict (a view that
        // opened an endpoint, taken in at the same time) are found when the memory is told,
        // and given the result too. Each round finds only ones not given yet, and there is
        // one per endpoint; a few rounds, then a view seen again finishes.
        for _ in 0..4 {
            for place in &to_fill {
                let of = EventFor {
                    endpoint: place.endpoint,
                    notification: n.id,
                    generation: event.generation,
                };
                let filled = self
                    .ledger
                    .fill_in(self.store, place.slot, of, fill, self.now_ms);
                match filled {
                    Ok(Some(FilledIn::DueNow)) => {
                        self.metrics.add(Metric::ResultsFilledIn, 1);
                        intake.wake.push(place.slot);
                    }
                    Ok(Some(FilledIn::Waiting)) => self.metrics.add(Metric::ResultsFilledIn, 1),
                    // Its retries would carry it; one that succeeds carried none.
                    Ok(Some(FilledIn::OnTheWire) | None) => {}
                    Err(_) => stored = false,
                }
            }
            // Only once every delivery has it: a view seen again after a store error fills
            // in what this one could not.
            if !stored {
                break;
            }
            match self
                .memory
                .result_given(self.store, n.id, event.generation, &given)
            {
                Ok(missed) if missed.is_empty() => {
                    to_fill.clear();
                    break;
                }
                Ok(missed) => {
                    given.extend_from_slice(&missed);
                    to_fill = missed;
                }
                Err(_) => {
                    stored = false;
                    break;
                }
            }
        }
        // Still some the memory holds that this view did not give the result to: the memory
        // stays marked, and the view must be asked about again.
        if !stored || !to_fill.is_empty() {
            self.metrics.add(Metric::StoreConflicts, 1);
            intake.complete = false;
        }
    }

    /// Place `n`'s delivery to `endpoint` in the ledger, replacing the one still held in
    /// `previous`; with `awaits_result`, held for the event's result. The slot it now holds,
    /// if any.
    fn place(
        &self,
        endpoint: &Endpoint,
        n: &Notification,
        body: &str,
        previous: Option<u32>,
        generation: Generation,
        awaits_result: bool,
    ) -> Result<Option<u32>, Incomplete> {
        let id = webhook_id(n, &endpoint.name, generation);
        let body = endpoint.payload.body(n, body, self.now_ms).into_bytes();
        let mut fresh =
            Slot::new(&endpoint.name, n.id, &id, body, self.now_ms).of_generation(generation);
        // Held for a view with the result (`fill_in` sends it then), or until the wait ends.
        let awaits = awaits_result && endpoint.await_result_ms > 0;
        if awaits {
            fresh.at_ms = self.now_ms.saturating_add(endpoint.await_result_ms);
        }
        match self.ledger.place(self.store, previous, fresh, self.seed) {
            Ok(placed) => {
                if awaits && placed.held_slot().is_some() {
                    self.metrics.add(Metric::ResultsAwaited, 1);
                }
                match placed {
                    Placed::New(_) => self.metrics.add(Metric::Pending, 1),
                    Placed::Replaced(_) | Placed::Requeued(_) | Placed::Outdated(_) => {
                        self.metrics.add(Metric::DeliveriesSuperseded, 1);
                    }
                    Placed::Queued(_) => {}
                }
                log::debug!("{id}: {placed} for endpoint {}", endpoint.name);
                Ok(placed.held_slot())
            }
            Err(LedgerError::Full) => {
                self.metrics
                    .add_for(&endpoint.name, Metric::DeliveriesDropped, 1);
                log::warn!(
                    "{id}: dropped, the ledger of {} slots is (nearly) full; raise limits.maxPending",
                    self.ledger.slots()
                );
                Ok(None)
            }
            Err(LedgerError::Store(e)) => {
                // The event stays remembered, so seen again it is a duplicate: the delivery is
                // lost (README, Limits). Forgetting the event instead was tried and reverted:
                // a review found it re-sent the event to endpoints served before, lost the
                // previous event's waiting retry, and still lost it when another VM saw it.
                self.metrics
                    .add_for(&endpoint.name, Metric::DeliveriesDropped, 1);
                log::warn!("{id}: dropped, store error {e:?}");
                Err(Incomplete)
            }
        }
    }

    /// Record the slots of notification `id`'s event of `generation` (`awaiting_result`:
    /// its deliveries wait for its result), and free what two workers taking in two of its
    /// events at once would otherwise send out of order: sent, such a delivery could reach
    /// the receiver after the later event. One already on the wire cannot be taken back.
    /// False on a store error.
    fn settle(
        &self,
        id: u64,
        generation: Generation,
        awaiting_result: bool,
        slots: &[Place],
        wake: &mut Vec<u32>,
    ) -> bool {
        let recorded = self
            .memory
            .record_slots(self.store, id, generation, slots, awaiting_result);
        let take_back = match recorded {
            Ok(take_back) => take_back,
            Err(_) => {
                self.metrics.add(Metric::StoreConflicts, 1);
                return false;
            }
        };
        let mut ok = true;
        for held in take_back {
            let which = |s: &Slot| {
                s.notification == id
                    && endpoint_key(&s.endpoint) == held.endpoint
                    && s.generation == held.generation
            };
            match self.ledger.withdraw(self.store, held.slot, which) {
                Ok(Some(Withdrawn::Freed(webhook_id))) => {
                    self.metrics.add(Metric::Pending, -1);
                    self.metrics.add(Metric::DeliveriesSuperseded, 1);
                    wake.retain(|w| *w != held.slot);
                    log::debug!(
                        "{webhook_id}: taken back for a later event taken in at the same time"
                    );
                }
                // The slot still holds a delivery: the event that was queued behind this one.
                Ok(Some(Withdrawn::Replaced(webhook_id))) => {
                    self.metrics.add(Metric::DeliveriesSuperseded, 1);
                    if !wake.contains(&held.slot) {
                        wake.push(held.slot);
                    }
                    log::debug!(
                        "{webhook_id}: taken back for a later event taken in at the same time; the event queued behind it takes its place"
                    );
                }
                Ok(None) => {}
                Err(_) => {
                    self.metrics.add(Metric::StoreConflicts, 1);
                    ok = false;
                }
            }
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Cas, MemStore, StoreError};

    const G1: Generation = Generation::FIRST;

    fn seen(updated_on: &str, result: &str) -> Notification<'static> {
        Notification {
            id: 504,
            delivery_status: DeliveryStatus::Success,
            provider_id: Some(1),
            channel_type: Some(1),
            retry_count: Some(0),
            updated_on: Some(updated_on.to_owned().into()),
            result: if result == "null" {
                crate::osmox::ResultView::Null
            } else {
                crate::osmox::ResultView::Present
            },
            test_mode: false,
            body: format!(r#"{{"id":504,"deliveryStatus":5,"result":{result}}}"#).into(),
        }
    }

    /// Shared data that counts reads and can refuse them all, or the dedupe memory's past a count.
    #[derive(Default)]
    struct Watched {
        inner: MemStore,
        reads: std::cell::Cell<usize>,
        refuse: std::cell::Cell<bool>,
        /// How many more reads of the dedupe memory succeed, where set.
        memory_reads_left: std::cell::Cell<Option<usize>>,
    }

    impl Watched {
        /// With `config`'s ledger laid out, as at configure time.
        fn laid_out(config: &Config) -> Watched {
            let store = Watched::default();
            for (k, v) in Ledger::new(config.limits.max_pending).keys() {
                store.set(&k, v, None).unwrap();
            }
            store
        }
    }

    impl Store for Watched {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, StoreError> {
            self.reads.set(self.reads.get() + 1);
            if self.refuse.get() {
                return Err(StoreError::Host);
            }
            if let (true, Some(left)) = (
                key.starts_with(crate::shared_name!("seen/")),
                self.memory_reads_left.get(),
            ) {
                let left = left.checked_sub(1).ok_or(StoreError::Host)?;
                self.memory_reads_left.set(Some(left));
            }
            self.inner.get(key)
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), StoreError> {
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn a_vm_passes_over_what_it_took_in_and_asks_the_memory_about_the_rest() {
        let config = Config::from_json(
            br#"{"endpoints": [{"name": "all", "url": "http://h/a", "cluster": "c",
                "deliveryStatuses": [1, 2, 3, 4, 5, 6]}]}"#,
            &|_| None,
        )
        .unwrap();
        let store = Watched::laid_out(&config);
        let metrics = crate::metrics::CountingMetrics::default();
        let mut known = KnownEvents::new(16);
        let memory = Memory::new(config.limits.max_remembered);
        let take = |known: &mut KnownEvents, n: &Notification| {
            let before = store.reads.get();
            let intake = take_in(
                Some(known),
                &config,
                &config.endpoints,
                memory,
                &store,
                &metrics,
                std::slice::from_ref(n),
                1_000,
                7,
            );
            (
                intake.wake.len(),
                intake.complete,
                store.reads.get() - before,
            )
        };
        let n = seen("2026-04-20T09:15:02.318Z", "null");
        let (placed, complete, reads) = take(&mut known, &n);
        assert_eq!((placed, complete), (1, true));
        assert!(reads > 0);
        // The same view again: no read, counted as passed over.
        assert_eq!(take(&mut known, &n), (0, true, 0));
        assert_eq!(metrics.get(Metric::EventsPassedOver), 1);
        assert_eq!(metrics.get(Metric::EventsDuplicate), 0);
        // Another VM's memory of it is its own.
        assert!(take(&mut KnownEvents::new(16), &n).2 > 0);
        // Any field told apart is another observation, asked about.
        let mut others = Vec::new();
        for change in 0..5 {
            let mut other = n.clone();
            match change {
                0 => other.delivery_status = DeliveryStatus::Failed,
                1 => other.updated_on = Some("2026-04-20T09:15:03.000Z".into()),
                2 => other.retry_count = None,
                3 => other.provider_id = Some(2),
                _ => other.channel_type = None,
            }
            others.push(other);
        }
        for other in &others {
            assert!(take(&mut known, other).2 > 0, "{other:?}");
        }
        // Without `updatedOn`, every time.
        let mut untimed = n.clone();
        untimed.updated_on = None;
        for _ in 0..2 {
            assert!(take(&mut known, &untimed).2 > 0);
        }
        // What a store error left unrecorded is not learned: asked about again, and new.
        let mut late = seen("2026-04-20T09:16:00.000Z", "null");
        late.id = 505;
        let mut fresh = KnownEvents::new(16);
        store.refuse.set(true);
        let (placed, complete, _) = take(&mut fresh, &late);
        assert_eq!((placed, complete), (0, false));
        store.refuse.set(false);
        let (placed, complete, reads) = take(&mut fresh, &late);
        assert_eq!((placed, complete), (1, true));
        assert!(reads > 0);
    }

    /// Counted once, when detected, whether or not an endpoint takes it.
    #[test]
    fn a_test_mode_success_is_counted_when_detected() {
        let config = Config::from_json(
            br#"{"endpoints": [{"name": "live", "url": "http://h/a", "cluster": "c", "testMode": "skip"}]}"#,
            &|_| None,
        )
        .unwrap();
        let store = Watched::laid_out(&config);
        let metrics = crate::metrics::CountingMetrics::default();
        let memory = Memory::new(config.limits.max_remembered);
        let mut test_mode = seen("2026-04-20T09:15:02.318Z", r#"{"result": "x"}"#);
        test_mode.test_mode = true;
        let mut plain = seen("2026-04-20T09:15:02.318Z", r#"{"result": "x"}"#);
        plain.id = 505;
        for _ in 0..2 {
            take_in(
                None,
                &config,
                &config.endpoints,
                memory,
                &store,
                &metrics,
                &[test_mode.clone(), plain.clone()],
                1_000,
                7,
            );
        }
        assert_eq!(metrics.get(Metric::EventsDetected), 2);
        assert_eq!(metrics.get(Metric::EventsTestMode), 1);
        assert_eq!(
            metrics.get(Metric::EventsUnrouted),
            1,
            "skipped by its only endpoint"
        );
    }

    /// A review: a SUCCESS one view showed to be OsmoX's test mode (it selected `result`, not
    /// `providerId`) went to an endpoint that skips test mode once another view, selecting
    /// `providerId` but not `result`, opened the endpoint's provider filter. Every learned
    /// endpoint is such a one, so OsmoX's test traffic reached registered receivers, which
    /// OsmoX's own webhook never does. What the earlier view knew now counts.
    #[test]
    fn a_success_known_as_test_mode_stays_with_skipping_endpoints_when_a_view_fills_it() {
        let config = Config::from_json(
            br#"{"endpoints": [
                {"name": "skips", "url": "http://h/a", "cluster": "c", "providerIds": [1], "testMode": "skip"},
                {"name": "delivers", "url": "http://h/b", "cluster": "c", "providerIds": [1]}
            ]}"#,
            &|_| None,
        )
        .unwrap();
        let store = Watched::laid_out(&config);
        let metrics = crate::metrics::CountingMetrics::default();
        let memory = Memory::new(config.limits.max_remembered);
        let take = |n: Notification, now_ms| {
            take_in(
                None,
                &config,
                &config.endpoints,
                memory,
                &store,
                &metrics,
                &[n],
                now_ms,
                7,
            )
            .wake
            .len()
        };
        let mut with_result = seen("2026-04-20T09:15:02.318Z", r#"{"result": "x"}"#);
        with_result.test_mode = true;
        with_result.provider_id = None;
        assert_eq!(
            take(with_result, 1_000),
            0,
            "no endpoint's provider is known"
        );
        let mut with_provider = seen("2026-04-20T09:15:02.318Z", r#"{"result": "x"}"#);
        with_provider.result = crate::osmox::ResultView::NotSelected;
        assert_eq!(
            take(with_provider.clone(), 2_000),
            1,
            "to `delivers` alone, not to `skips`"
        );
        // Without the earlier view, the same view knows no test mode: both take it.
        let fresh = Watched::laid_out(&config);
        let fresh_wakes = take_in(
            None,
            &config,
            &config.endpoints,
            memory,
            &fresh,
            &metrics,
            &[with_provider],
            3_000,
            7,
        );
        assert_eq!(fresh_wakes.wake.len(), 2);
    }

    #[test]
    fn known_observations_are_bounded_and_forget_the_oldest() {
        let mut known = KnownEvents::new(2);
        let at = |id: u64| {
            let mut n = seen("2026-04-20T09:15:02.318Z", "null");
            n.id = id;
            n
        };
        known.learn(&[at(1), at(2)]);
        assert!(known.knows(&at(1)) && known.knows(&at(2)));
        known.learn(&[at(2), at(3)]);
        assert!(!known.knows(&at(1)), "the oldest went");
        assert!(known.knows(&at(2)) && known.knows(&at(3)));
        let mut untimed = at(4);
        untimed.updated_on = None;
        known.learn(std::slice::from_ref(&untimed));
        assert!(!known.knows(&untimed));
        assert!(known.knows(&at(2)), "nothing was learned, so nothing went");
    }

    /// A store with a ledger of 16 slots laid out, as at configure time.
    fn laid_out() -> (MemStore, Ledger, crate::metrics::CountingMetrics) {
        let store = MemStore::new();
        let ledger = Ledger::new(16);
        for (k, v) in ledger.keys() {
            store.set(&k, v, None).unwrap();
        }
        (store, ledger, crate::metrics::CountingMetrics::default())
    }

    /// Taking in over `laid_out`'s store, at time 0.
    fn recording<'a>(
        store: &'a MemStore,
        ledger: &'a Ledger,
        metrics: &'a crate::metrics::CountingMetrics,
    ) -> Recording<'a, MemStore> {
        Recording {
            memory: Memory::new(1024),
            ledger,
            store,
            metrics,
            now_ms: 0,
            seed: 0,
        }
    }

    /// Taking in `n` alone, to every endpoint of `config`, with a fresh VM's memory.
    fn take_one(
        config: &Config,
        store: &impl Store,
        metrics: &crate::metrics::CountingMetrics,
        n: &Notification,
    ) -> Intake {
        take_in(
            None,
            config,
            &config.endpoints,
            Memory::new(config.limits.max_remembered),
            store,
            metrics,
            std::slice::from_ref(n),
            1_000,
            7,
        )
    }

    /// A delivery to "crm" of notification 504's event of generation `g`.
    fn crm_slot(id: &str, g: u32) -> Slot {
        Slot::new("crm", 504, id, b"{}".to_vec(), 0).of_generation(Generation(g))
    }

    /// The memory has seen notification 504 go IN_PROGRESS, AWAITING_CONFIRMATION and
    /// SUCCESS: the events of generations 1, 2 and 3.
    fn three_events_seen(recorded: &Recording<'_, MemStore>) {
        for (status, time) in [
            (DeliveryStatus::InProgress, "2026-01-01T00:00:01.000Z"),
            (
                DeliveryStatus::AwaitingConfirmation,
                "2026-01-01T00:00:02.000Z",
            ),
            (DeliveryStatus::Success, "2026-01-01T00:00:03.000Z"),
        ] {
            let n = Notification {
                delivery_status: status,
                ..seen(time, "null")
            };
            recorded.memory.observe(recorded.store, &n, 0).unwrap();
        }
    }

    /// Two workers take in IN_PROGRESS (generation 1) and SUCCESS (2) at once. IN_PROGRESS
    /// is placed and recorded in a fresh slot first; SUCCESS, which knew nothing of that slot,
    /// learns of it when it records its own and takes it back before it goes out.
    #[test]
    fn the_later_event_takes_back_the_earlier_one_it_learns_of_on_recording() {
        use crate::delivery::ledger::Record;
        let (store, ledger, metrics) = laid_out();
        let recorded = recording(&store, &ledger, &metrics);
        let mut early = seen("2026-01-01T00:00:01.000Z", "null");
        early.delivery_status = DeliveryStatus::InProgress;
        let late = seen("2026-01-01T00:00:02.000Z", "null");
        for n in [&early, &late] {
            recorded.memory.observe(&store, n, 0).unwrap();
        }
        let key = endpoint_key("crm");
        let place = |id: &str, g: u32| {
            ledger
                .place(&store, None, crm_slot(id, g), u64::from(g))
                .unwrap()
                .slot()
        };
        let mut wake = Vec::new();
        let y = place("in-progress", 1);
        assert!(recorded.settle(
            504,
            Generation(1),
            false,
            &[Place {
                endpoint: key,
                slot: y
            }],
            &mut wake
        ));
        assert!(matches!(ledger.read(&store, y).unwrap(), Record::Used(_)));
        let z = place("success", 2);
        wake.extend([y, z]);
        assert!(recorded.settle(
            504,
            Generation(2),
            false,
            &[Place {
                endpoint: key,
                slot: z
            }],
            &mut wake
        ));
        assert_eq!(ledger.read(&store, y).unwrap(), Record::Free);
        assert_eq!(wake, vec![z]);
        assert_eq!(metrics.get(Metric::DeliveriesSuperseded), 1);
        assert_eq!(metrics.get(Metric::Pending), -1);
    }

    #[test]
    fn a_webhook_id_names_the_event_not_the_view() {
        // OsmoX saves a SUCCESS's result after the state, moving `updatedOn`.
        let early = seen("2026-01-01T00:00:01.000Z", "null");
        let late = seen("2026-01-01T00:00:01.012Z", r#"{"messageId":"m"}"#);
        assert_eq!(webhook_id(&early, "crm", G1), webhook_id(&late, "crm", G1));
        assert!(webhook_id(&early, "crm", G1).starts_with("msg_504_5_"));
        assert_ne!(webhook_id(&early, "crm", G1), webhook_id(&early, "erp", G1));
        let retried = Notification {
            retry_count: Some(1),
            ..early.clone()
        };
        assert_ne!(
            webhook_id(&early, "crm", G1),
            webhook_id(&retried, "crm", G1)
        );
        let failed_over = Notification {
            provider_id: Some(2),
            ..early.clone()
        };
        assert_ne!(
            webhook_id(&early, "crm", G1),
            webhook_id(&failed_over, "crm", G1)
        );
    }

    /// Receivers drop repeats by `webhook-id` across restarts of Envoy (which empty shared
    /// data, so a notification seen again is delivered again) and so across module updates:
    /// the id is a pure function of the event and the endpoint, pinned here, with nothing of a
    /// VM's random seed or of the build in it. As README says, a view without `retryCount`
    /// gets the id of `retryCount` 0 (a SUCCESS seen again through a query that did not
    /// select it is still dropped), and one without `providerId` another id than a real
    /// provider's. The pins were computed apart, by FNV-1a in Python over the same parts.
    #[test]
    fn a_webhook_id_is_the_same_in_every_process_and_a_missing_count_is_zero() {
        let success = seen("2026-01-01T00:00:01.000Z", "null");
        assert_eq!(
            webhook_id(&success, "crm", G1),
            "msg_504_5_051536ad07392ba0"
        );
        let pending = Notification {
            delivery_status: DeliveryStatus::Pending,
            ..success.clone()
        };
        assert_eq!(
            webhook_id(&pending, "crm", Generation(7)),
            "msg_504_1_fce1133ba6bfa1b1"
        );
        let untimed = Notification {
            updated_on: None,
            ..pending.clone()
        };
        assert_eq!(
            webhook_id(&untimed, "crm", Generation(7)),
            "msg_504_1_eff10dbb6411ddb1"
        );
        let without_count = Notification {
            retry_count: None,
            ..success.clone()
        };
        assert_eq!(
            webhook_id(&without_count, "crm", G1),
            webhook_id(&success, "crm", G1)
        );
        let without_provider = Notification {
            provider_id: None,
            ..success.clone()
        };
        assert_ne!(
            webhook_id(&without_provider, "crm", G1),
            webhook_id(&success, "crm", G1)
        );
    }

    /// Confirmation goes 3 → 4 → 3 with one `retryCount`: the second 3 is another event, and
    /// a receiver that drops repeats by id must not drop it.
    #[test]
    fn a_state_come_back_to_is_a_new_id() {
        let at = |status, time: &str| Notification {
            delivery_status: status,
            ..seen(time, "null")
        };
        let first = at(
            DeliveryStatus::AwaitingConfirmation,
            "2026-01-01T00:00:01.000Z",
        );
        let again = at(
            DeliveryStatus::AwaitingConfirmation,
            "2026-01-01T00:00:09.000Z",
        );
        assert_ne!(webhook_id(&first, "crm", G1), webhook_id(&again, "crm", G1));
        assert_eq!(
            webhook_id(&first, "crm", G1),
            webhook_id(&first.clone(), "crm", G1),
            "the same view, seen again after a restart, keeps its id"
        );
        let (failed, failed_later) = (
            at(DeliveryStatus::Failed, "2026-01-01T00:00:01.000Z"),
            at(DeliveryStatus::Failed, "2026-01-01T00:00:01.030Z"),
        );
        assert_eq!(
            webhook_id(&failed, "crm", G1),
            webhook_id(&failed_later, "crm", G1)
        );
        // Without `updatedOn` the event's count in the dedupe memory tells them apart.
        let untimed = Notification {
            updated_on: None,
            ..first.clone()
        };
        let third = Generation(3);
        assert_ne!(
            webhook_id(&untimed, "crm", G1),
            webhook_id(&untimed, "crm", third)
        );
        assert_eq!(
            webhook_id(&first, "crm", G1),
            webhook_id(&first, "crm", third)
        );
    }

    /// Three events of one notification, the last two taken in by two workers at once: the
    /// third replaced the first in its waiting slot before the second recorded its own. The
    /// second learns of the first's slot and takes back the first's delivery only: the third
    /// now waiting there is a later event, and must still go out.
    #[test]
    fn taking_back_an_earlier_event_leaves_a_later_one_that_took_its_slot() {
        use crate::delivery::ledger::Record;
        let (store, ledger, metrics) = laid_out();
        let recorded = recording(&store, &ledger, &metrics);
        three_events_seen(&recorded);
        let key = endpoint_key("crm");
        let mut wake = Vec::new();
        let y = ledger
            .place(&store, None, crm_slot("first", 1), 1)
            .unwrap()
            .slot();
        assert!(recorded.settle(
            504,
            Generation(1),
            false,
            &[Place {
                endpoint: key,
                slot: y
            }],
            &mut wake
        ));
        // The third, knowing the first's slot, replaces it there.
        let third = ledger
            .place(&store, Some(y), crm_slot("third", 3), 3)
            .unwrap();
        assert_eq!(third.held_slot(), Some(y));
        // The second knew of no slot, and took a fresh one.
        let z = ledger
            .place(&store, None, crm_slot("second", 2), 2)
            .unwrap()
            .slot();
        assert_ne!(y, z);
        assert!(recorded.settle(
            504,
            Generation(2),
            false,
            &[Place {
                endpoint: key,
                slot: z
            }],
            &mut wake
        ));
        match ledger.read(&store, y).unwrap() {
            Record::Used(s) => assert_eq!(
                (s.webhook_id.as_str(), s.generation),
                ("third", Generation(3))
            ),
            other => panic!("the third event's delivery was taken back: {other:?}"),
        }
        assert_eq!(metrics.get(Metric::DeliveriesSuperseded), 0);
    }

    /// As above, but the first's delivery was on the wire when the third came, so the third
    /// queued behind it, and the attempt was then given back unsent. Taking back the first
    /// leaves the third in its slot, due: a sender is woken for it.
    #[test]
    fn taking_back_an_earlier_event_wakes_a_sender_for_the_later_one_queued_behind_it() {
        use crate::delivery::ledger::{Record, State};
        let (store, ledger, metrics) = laid_out();
        let recorded = recording(&store, &ledger, &metrics);
        three_events_seen(&recorded);
        let key = endpoint_key("crm");
        let set_state = |slot: u32, state: State| {
            ledger
                .update(&store, slot, |rec| match rec {
                    Record::Used(mut s) => {
                        s.state = state;
                        Some((Record::Used(s), ()))
                    }
                    _ => None,
                })
                .unwrap();
        };
        let mut wake = Vec::new();
        let y = ledger
            .place(&store, None, crm_slot("first", 1), 1)
            .unwrap()
            .slot();
        let first = [Place {
            endpoint: key,
            slot: y,
        }];
        assert!(recorded.settle(504, Generation(1), false, &first, &mut wake));
        set_state(y, State::InFlight);
        let third = ledger
            .place(&store, Some(y), crm_slot("third", 3), 3)
            .unwrap();
        assert_eq!(third, Placed::Queued(y));
        set_state(y, State::Waiting);
        let z = ledger
            .place(&store, None, crm_slot("second", 2), 2)
            .unwrap()
            .slot();
        wake.push(z);
        let second = [Place {
            endpoint: key,
            slot: z,
        }];
        assert!(recorded.settle(504, Generation(2), false, &second, &mut wake));
        match ledger.read(&store, y).unwrap() {
            Record::Used(s) => assert_eq!(s.webhook_id, "third"),
            other => panic!("{other:?}"),
        }
        assert_eq!(wake, vec![z, y]);
        assert_eq!(metrics.get(Metric::DeliveriesSuperseded), 1);
    }

    /// The event was judged and placed, but where its delivery waits could not be recorded:
    /// the response is not complete, so the VM does not learn it and asks again when the same
    /// view comes back.
    #[test]
    fn a_delivery_whose_slot_could_not_be_recorded_leaves_the_response_incomplete() {
        let config = Config::from_json(
            br#"{"endpoints": [{"name": "all", "url": "http://h/a", "cluster": "c"}]}"#,
            &|_| None,
        )
        .unwrap();
        let store = Watched::laid_out(&config);
        let metrics = crate::metrics::CountingMetrics::default();
        let mut known = KnownEvents::new(16);
        let n = seen("2026-04-20T09:15:02.318Z", "null");
        // The verdict's read succeeds; the one that records the slot does not.
        store.memory_reads_left.set(Some(1));
        let intake = take_in(
            Some(&mut known),
            &config,
            &config.endpoints,
            Memory::new(config.limits.max_remembered),
            &store,
            &metrics,
            std::slice::from_ref(&n),
            1_000,
            7,
        );
        assert_eq!(intake.wake.len(), 1);
        assert!(!intake.complete);
        assert!(!known.knows(&n));
        assert_eq!(metrics.get(Metric::StoreConflicts), 1);
    }

    /// `results_awaited` counts the deliveries held for a result, which `results_filled_in`
    /// is read against (README, Limits): a SUCCESS without its result that is not placed,
    /// its slot already holding a later event of the pair, holds nothing and is not counted.
    #[test]
    fn only_a_placed_delivery_counts_as_awaiting_its_result() {
        use crate::delivery::ledger::Record;
        let config = Config::from_json(
            br#"{"endpoints": [{"name": "crm", "url": "http://h/a", "cluster": "c",
                "awaitResultMs": 1000}]}"#,
            &|_| None,
        )
        .unwrap();
        let endpoint = &config.endpoints[0];
        let (store, ledger, metrics) = laid_out();
        let recorded = recording(&store, &ledger, &metrics);
        let later = crm_slot("later", 2);
        let y = ledger.place(&store, None, later, 2).unwrap().slot();
        let n = seen("2026-01-01T00:00:01.000Z", "null");
        assert!(n.awaits_result());
        let placed = recorded.place(endpoint, &n, "{}", Some(y), G1, true);
        assert!(
            matches!(placed, Ok(None)),
            "not placed: a later event holds the slot"
        );
        assert_eq!(metrics.get(Metric::ResultsAwaited), 0);
        match ledger.read(&store, y).unwrap() {
            Record::Used(s) => assert_eq!(s.webhook_id, "later"),
            other => panic!("{other:?}"),
        }
        // Placed, it is counted.
        let placed = recorded.place(endpoint, &n, "{}", None, G1, true);
        assert!(matches!(placed, Ok(Some(_))));
        assert_eq!(metrics.get(Metric::ResultsAwaited), 1);
    }

    /// Once the result reached every waiting delivery, the memory is told: the same view
    /// seen again (by another VM, which passes nothing over) fills in nothing more.
    #[test]
    fn a_result_given_to_the_deliveries_is_not_given_again() {
        let config = Config::from_json(
            br#"{"endpoints": [{"name": "all", "url": "http://h/a", "cluster": "c",
                "awaitResultMs": 2500}]}"#,
            &|_| None,
        )
        .unwrap();
        let store = MemStore::new();
        for (k, v) in Ledger::new(config.limits.max_pending).keys() {
            store.set(&k, v, None).unwrap();
        }
        let metrics = crate::metrics::CountingMetrics::default();
        let take = |n: &Notification| take_one(&config, &store, &metrics, n);
        assert_eq!(
            take(&seen("2026-04-20T09:15:02.318Z", "null")).wake.len(),
            1
        );
        assert_eq!(metrics.get(Metric::ResultsAwaited), 1);
        let with = seen("2026-04-20T09:15:02.330Z", r#"{"messageId":"m"}"#);
        let first = take(&with);
        assert_eq!((first.wake.len(), first.complete), (1, true));
        assert_eq!(metrics.get(Metric::ResultsFilledIn), 1);
        let again = take(&with);
        assert_eq!((again.wake.len(), again.complete), (0, true));
        assert_eq!(metrics.get(Metric::ResultsFilledIn), 1);
    }

    /// The memory is told of a result only once every delivery has it, so a view seen again
    /// after a store error (or taken in by two workers at once, both before either told the
    /// memory) fills in once more: what already has the result is not filled, counted or
    /// woken again. A review found `results_filled_in` counting each delivery once per such
    /// view, so `results_awaited` minus it (README: about how many went without their
    /// result) came out below the truth, negative where every result arrived.
    #[test]
    fn a_delivery_given_its_result_is_not_given_it_again() {
        use crate::delivery::ledger::Record;
        let config = Config::from_json(
            br#"{"endpoints": [{"name": "all", "url": "http://h/a", "cluster": "c",
                "awaitResultMs": 2500}]}"#,
            &|_| None,
        )
        .unwrap();
        let store = Watched::laid_out(&config);
        let metrics = crate::metrics::CountingMetrics::default();
        let take = |n: &Notification| take_one(&config, &store, &metrics, n);
        let held = take(&seen("2026-04-20T09:15:02.318Z", "null")).wake;
        assert_eq!((held.len(), metrics.get(Metric::ResultsAwaited)), (1, 1));
        let with = seen("2026-04-20T09:15:02.330Z", r#"{"messageId":"m"}"#);
        // The verdict's read succeeds; telling the memory the result was given does not.
        store.memory_reads_left.set(Some(1));
        let first = take(&with);
        assert_eq!((first.wake, first.complete), (held.clone(), false));
        assert_eq!(metrics.get(Metric::ResultsFilledIn), 1);
        // The verdict's read and one telling the memory: nothing missed, it is told once.
        store.memory_reads_left.set(Some(2));
        let again = take(&with);
        assert_eq!((again.wake.len(), again.complete), (0, true));
        assert_eq!(metrics.get(Metric::ResultsFilledIn), 1, "filled in once");
        store.memory_reads_left.set(None);
        let Record::Used(slot) = Ledger::new(config.limits.max_pending)
            .read(&store, held[0])
            .unwrap()
        else {
            panic!("the delivery went");
        };
        let body = String::from_utf8(slot.body).unwrap();
        assert_eq!(body.matches(r#""messageId":"m""#).count(), 1, "{body}");
        // The memory was told at last: a third view fills in nothing.
        let third = take(&with);
        assert_eq!((third.wake.len(), third.complete), (0, true));
        assert_eq!(metrics.get(Metric::ResultsFilledIn), 1);
    }

    /// A SUCCESS awaiting its result that no endpoint took: the view with the result has no
    /// delivery to give it to, but the memory stays marked until it is told, so a store
    /// error telling it leaves the response incomplete, to be asked about again.
    #[test]
    fn a_result_the_memory_could_not_be_told_of_leaves_the_response_incomplete() {
        let config = Config::from_json(
            br#"{"endpoints": [{"name": "failures", "url": "http://h/a", "cluster": "c",
                "deliveryStatuses": [6]}]}"#,
            &|_| None,
        )
        .unwrap();
        let store = Watched::laid_out(&config);
        let metrics = crate::metrics::CountingMetrics::default();
        let take = |n: &Notification| take_one(&config, &store, &metrics, n);
        let first = take(&seen("2026-04-20T09:15:02.318Z", "null"));
        assert_eq!((first.wake.len(), first.complete), (0, true));
        assert_eq!(metrics.get(Metric::EventsUnrouted), 1);
        let with = seen("2026-04-20T09:15:02.330Z", r#"{"messageId":"m"}"#);
        // The verdict's read succeeds; telling the memory the result was given does not.
        store.memory_reads_left.set(Some(1));
        let got = take(&with);
        assert_eq!((got.wake.len(), got.complete), (0, false));
        assert_eq!(metrics.get(Metric::StoreConflicts), 1);
        store.memory_reads_left.set(None);
        let again = take(&with);
        assert_eq!((again.wake.len(), again.complete), (0, true));
    }

    /// Two workers at once: one takes in the view with the SUCCESS's result and, while it
    /// gives the result to the deliveries the memory named, the other takes in a view that
    /// opens another endpoint (it adds `channelType`) and records a delivery held for the
    /// result. A review found the first then told the memory the result was given, though
    /// the second's delivery never had it: it went without it once its wait ran out, and
    /// every later view with the result was a duplicate.
    #[test]
    fn a_delivery_recorded_while_the_result_is_given_gets_it_too() {
        use crate::delivery::ledger::Record;
        use crate::osmox::ResultView;
        let config = Config::from_json(
            br#"{"endpoints": [
                {"name": "all", "url": "http://h/a", "cluster": "c", "awaitResultMs": 2500},
                {"name": "sms", "url": "http://h/b", "cluster": "c", "awaitResultMs": 2500,
                 "channelTypes": [1]}
            ]}"#,
            &|_| None,
        )
        .unwrap();
        let (store, ledger, metrics) = laid_out();
        let recorded = recording(&store, &ledger, &metrics);
        let endpoints = &config.endpoints;
        let mut first = seen("2026-04-20T09:15:02.318Z", "null");
        first.channel_type = None;
        first.body = r#"{"id":504,"deliveryStatus":5,"result":null}"#.into();
        let mut intake = Intake::default();
        recorded.take_in(endpoints, &first, &mut intake);
        assert_eq!(intake.wake.len(), 1, "to `all`, held for the result");
        // Worker one: the view with the result, judged...
        let mut with = seen("2026-04-20T09:15:02.330Z", r#"{"messageId":"m"}"#);
        with.channel_type = None;
        let mut complete = true;
        let event = recorded.judge(&with, &mut complete).unwrap();
        assert!(event.result_arrived);
        // ...while worker two takes in a view that opens `sms`, without the result.
        let mut opens = seen("2026-04-20T09:15:02.330Z", "null");
        opens.result = ResultView::NotSelected;
        opens.body = r#"{"id":504,"deliveryStatus":5,"channelType":1}"#.into();
        let mut second = Intake::default();
        recorded.take_in(endpoints, &opens, &mut second);
        assert_eq!(second.wake.len(), 1, "to `sms`, held for the result");
        let sms = second.wake[0];
        // Worker one gives the result.
        let mut intake = Intake {
            wake: Vec::new(),
            complete: true,
        };
        recorded.fill_in(&with, &event, &mut intake);
        let has_result = |slot: u32| {
            let Record::Used(s) = ledger.read(&store, slot).unwrap() else {
                panic!("slot {slot} went");
            };
            String::from_utf8(s.body)
                .unwrap()
                .contains(r#""messageId":"m""#)
        };
        assert!(
            has_result(sms),
            "the delivery to `sms` went without the result"
        );
        assert!(intake.complete && intake.wake.contains(&sms), "{intake:?}");
        assert_eq!(metrics.get(Metric::ResultsFilledIn), 2);
        // The memory was told once both had it: the view seen again gives nothing more.
        let mut again = Intake::default();
        recorded.take_in(endpoints, &with, &mut again);
        assert_eq!(again.wake, Vec::<u32>::new());
        assert_eq!(metrics.get(Metric::ResultsFilledIn), 2);
    }
}
