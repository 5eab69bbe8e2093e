//! Which endpoints an event goes to.

use crate::config::Endpoint;
use crate::osmox::Notification;

/// True when every filter the endpoint sets accepts the notification. An absent filter
/// accepts anything; a set filter rejects a notification that lacks the field.
pub fn matches(endpoint: &Endpoint, n: &Notification) -> bool {
    fn accepts(filter: &Option<Vec<u64>>, value: Option<u64>) -> bool {
        match filter {
            None => true,
            Some(allowed) => value.is_some_and(|v| allowed.binary_search(&v).is_ok()),
        }
    }
    endpoint.delivery_statuses.contains(n.delivery_status)
        && accepts(&endpoint.provider_ids, n.provider_id)
        && accepts(&endpoint.channel_types, n.channel_type)
}

/// The endpoints an event goes to, in configuration order.
pub fn route<'a>(
    endpoints: &'a [Endpoint],
    n: &'a Notification,
) -> impl Iterator<Item = &'a Endpoint> + 'a {
    endpoints.iter().filter(move |e| matches(e, n))
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

    fn note(status: DeliveryStatus, provider: Option<u64>, channel: Option<u64>) -> Notification {
        Notification {
            id: 1,
            delivery_status: status,
            provider_id: provider,
            channel_type: channel,
            retry_count: Some(0),
            updated_on: None,
            body: "{}".into(),
        }
    }

    fn names(eps: &[Endpoint], n: &Notification) -> Vec<String> {
        route(eps, n).map(|e| e.name.clone()).collect()
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

    #[test]
    fn chosen_statuses_replace_the_default() {
        let eps = endpoints(r#""deliveryStatuses": ["PENDING", 2]"#);
        let at = |s| names(&eps, &note(s, Some(1), Some(1)));
        assert_eq!(at(DeliveryStatus::Pending), ["filtered"]);
        assert_eq!(at(DeliveryStatus::InProgress), ["filtered"]);
        assert_eq!(at(DeliveryStatus::Success), ["all"]);
    }
}
