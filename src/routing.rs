//! Which endpoints an event goes to.

use crate::config::Endpoint;
use crate::osmox::{DeliveryStatus, Notification, TestMode};

/// The fields endpoints filter on besides the status, as a view (or the views of an event so
/// far) had them: one that lacks a field (a query that did not select it) matches no endpoint
/// that filters on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    pub provider_id: Option<u64>,
    pub channel_type: Option<u64>,
    /// A view showed the event to be a SUCCESS OsmoX's test mode made (only a view that
    /// selected `result` can).
    pub test_mode: bool,
}

impl Routed {
    pub fn of(n: &Notification) -> Routed {
        Routed {
            provider_id: n.provider_id,
            channel_type: n.channel_type,
            test_mode: n.test_mode,
        }
    }

    /// What `self` knows, and what `earlier` knew where `self` does not.
    fn or(self, earlier: Routed) -> Routed {
        Routed {
            provider_id: self.provider_id.or(earlier.provider_id),
            channel_type: self.channel_type.or(earlier.channel_type),
            test_mode: self.test_mode || earlier.test_mode,
        }
    }
}

/// True when every filter the endpoint sets accepts the notification. An absent filter
/// accepts anything; a set filter rejects a notification that lacks the field.
pub fn matches(endpoint: &Endpoint, n: &Notification) -> bool {
    accepts(endpoint, n.delivery_status, Routed::of(n))
}

fn accepts(endpoint: &Endpoint, status: DeliveryStatus, fields: Routed) -> bool {
    fn allows(filter: &Option<Vec<u64>>, value: Option<u64>) -> bool {
        match filter {
            None => true,
            Some(allowed) => value.is_some_and(|v| allowed.binary_search(&v).is_ok()),
        }
    }
    let takes_test_mode = !fields.test_mode || endpoint.test_mode == TestMode::Deliver;
    takes_test_mode
        && endpoint.delivery_statuses.contains(status)
        && allows(&endpoint.provider_ids, fields.provider_id)
        && allows(&endpoint.channel_types, fields.channel_type)
}

/// The endpoints an event goes to, in configuration order. For an event already acted on,
/// now seen with a field its earlier views lacked (`before`: what they had), only those that
/// take it with everything known of it and did not with what those views had: the others
/// were served (or passed over) then. An endpoint that skips test mode skips an event any
/// view showed to be test mode, whatever the others selected.
pub fn route<'a>(
    endpoints: &'a [Endpoint],
    n: &'a Notification,
    before: Option<Routed>,
) -> impl Iterator<Item = &'a Endpoint> + 'a {
    let status = n.delivery_status;
    endpoints.iter().filter(move |e| match before {
        None => matches(e, n),
        Some(before) => accepts(e, status, Routed::of(n).or(before)) && !accepts(e, status, before),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::osmox::DeliveryStatus;

    fn endpoints(filters: &str) -> Vec<Endpoint> {
        let json = format!(
            r#"{{"endpoints": [
                {{"name": "all", "url": "http://h/a", "cluster": "c"}},
                {{"name": "filtered", "url": "http://h/b", "cluster": "c", {filters}}}
            ]}}"#
        );
        Config::from_json(json.as_bytes(), &|_| None)
            .unwrap()
            .endpoints
    }

    fn note(
        status: DeliveryStatus,
        provider: Option<u64>,
        channel: Option<u64>,
    ) -> Notification<'static> {
        Notification {
            id: 1,
            delivery_status: status,
            provider_id: provider,
            channel_type: channel,
            retry_count: Some(0),
            updated_on: None,
            result: crate::osmox::ResultView::NotSelected,
            test_mode: false,
            body: "{}".into(),
        }
    }

    fn names(eps: &[Endpoint], n: &Notification) -> Vec<String> {
        route(eps, n, None).map(|e| e.name.clone()).collect()
    }

    #[test]
    fn default_statuses_are_the_final_ones() {
        let eps = endpoints(r#""providerIds": [1]"#);
        let ok = |s| names(&eps, &note(s, Some(1), Some(1)));
        assert_eq!(ok(DeliveryStatus::Success), ["all", "filtered"]);
        assert_eq!(ok(DeliveryStatus::Failed), ["all", "filtered"]);
        for s in [
            DeliveryStatus::Pending,
            DeliveryStatus::InProgress,
            DeliveryStatus::AwaitingConfirmation,
            DeliveryStatus::QueuedConfirmation,
        ] {
            assert!(ok(s).is_empty(), "{s:?}");
        }
    }

    #[test]
    fn provider_and_channel_filters_must_all_match() {
        let eps = endpoints(r#""providerIds": [10, 11], "channelTypes": [1, 5]"#);
        let s = DeliveryStatus::Success;
        assert_eq!(
            names(&eps, &note(s, Some(11), Some(5))),
            ["all", "filtered"]
        );
        assert_eq!(names(&eps, &note(s, Some(12), Some(5))), ["all"]);
        assert_eq!(names(&eps, &note(s, Some(10), Some(2))), ["all"]);
    }

    #[test]
    fn a_set_filter_rejects_a_notification_without_the_field() {
        let eps = endpoints(r#""providerIds": [10]"#);
        let n = note(DeliveryStatus::Success, None, Some(1));
        assert_eq!(names(&eps, &n), ["all"]);
    }

    /// An event acted on when its views lacked the provider: once a view shows it, only the
    /// endpoints passed over for the lack take it now.
    #[test]
    fn a_filled_field_routes_only_to_the_endpoints_it_opens() {
        let eps = endpoints(r#""providerIds": [10]"#);
        let thin = Routed {
            provider_id: None,
            channel_type: Some(1),
            test_mode: false,
        };
        let full = note(DeliveryStatus::Success, Some(10), None);
        let filled = |n: &Notification, before| -> Vec<String> {
            route(&eps, n, Some(before))
                .map(|e| e.name.clone())
                .collect()
        };
        assert_eq!(filled(&full, thin), ["filtered"]);
        let other = note(DeliveryStatus::Success, Some(11), None);
        assert!(filled(&other, thin).is_empty());
        // The earlier views already had all of it: nothing new to route.
        let known = Routed::of(&full);
        assert!(filled(&full, known).is_empty());
        // A review: what earlier views had counts with what this one has. One view showed
        // the provider, this one only the channel; an endpoint filtering on both opens now.
        let eps = endpoints(r#""providerIds": [10], "channelTypes": [1]"#);
        let provider_only = Routed {
            provider_id: Some(10),
            channel_type: None,
            test_mode: false,
        };
        let channel_only = note(DeliveryStatus::Success, None, Some(1));
        let opened: Vec<String> = route(&eps, &channel_only, Some(provider_only))
            .map(|e| e.name.clone())
            .collect();
        assert_eq!(opened, ["filtered"]);
    }

    #[test]
    fn a_test_mode_success_goes_only_where_test_mode_is_delivered() {
        let eps = endpoints(r#""testMode": "skip""#);
        let mut n = note(DeliveryStatus::Success, Some(1), Some(1));
        assert_eq!(names(&eps, &n), ["all", "filtered"]);
        n.test_mode = true;
        assert_eq!(names(&eps, &n), ["all"]);
        // Seen before without the provider, now with it: the skipping endpoint stays closed.
        let eps = endpoints(r#""providerIds": [1], "testMode": "skip""#);
        let thin = Routed {
            provider_id: None,
            channel_type: Some(1),
            test_mode: false,
        };
        assert_eq!(route(&eps, &n, Some(thin)).count(), 0);
        n.test_mode = false;
        let opened: Vec<&str> = route(&eps, &n, Some(thin))
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(opened, ["filtered"]);
        // A review: the earlier views showed test mode, this one did not select `result`.
        let known_test_mode = Routed {
            test_mode: true,
            ..thin
        };
        assert_eq!(route(&eps, &n, Some(known_test_mode)).count(), 0);
    }

    #[test]
    fn chosen_statuses_replace_the_default() {
        let eps = endpoints(r#""deliveryStatuses": ["PENDING", 2]"#);
        let at = |s| names(&eps, &note(s, Some(1), Some(1)));
        assert_eq!(at(DeliveryStatus::Pending), ["filtered"]);
        assert_eq!(at(DeliveryStatus::InProgress), ["filtered"]);
        assert_eq!(at(DeliveryStatus::Success), ["all"]);
    }
}
