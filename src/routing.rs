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
