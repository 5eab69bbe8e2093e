//! Webhook URLs learned from OsmoX's own registration traffic, turned into endpoints.
//!
//! OsmoX keeps one active webhook per provider and fires it on SUCCESS and FAILED of that
//! provider's notifications; the registry mirrors exactly that mapping. It lives under one
//! shared-data key so every VM sees the same endpoints, and is bounded because shared data is
//! never freed. URLs come from traffic, i.e. from whoever can call OsmoX's webhook API, so each
//! one passes the SSRF policy in [`check_url`] when learned and again whenever endpoints are
//! built, so tightening the policy takes effect without forgetting anything.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::rc::Rc;

use crate::config::{CircuitPolicy, Config, Endpoint, Learn, Target};
use crate::delivery::{breaker, sender};
use crate::events::repeats_a_key;
use crate::extract::Registration;
use crate::metrics::{Metric, Metrics};
use crate::osmox::{StatusSet, TestMode};
use crate::payload::Payload;
use crate::record::{Out, Reader};
use crate::store::{self, Cas, Store, StoreError};

/// The shared-data key holding every learned mapping.
const KEY: &str = crate::shared_name!("learn/map");
/// Providers remembered when nobody says otherwise (`learn.maxLearned`'s default).
pub const DEFAULT_CAPACITY: usize = 256;
/// Longer URLs are refused: the whole map is rewritten on every change.
pub const MAX_URL_LEN: usize = 2048;
/// Learned endpoints are named `learned-<providerId>`.
pub const NAME_PREFIX: &str = "learned-";

/// The name of the endpoint learned for `provider_id`.
fn learned_name(provider_id: u64) -> String {
    format!("{NAME_PREFIX}{provider_id}")
}

/// Create the learned endpoint's breaker record, before the map names the endpoint: every
/// VM's CAS on it needs the key to exist (a write without CAS is unconditional), and a VM
/// that created it on first listing the endpoint could overwrite another VM's first write
/// (its places, a failure). Never written again once made; if this write fails, the host
/// creates it on listing, as before.
fn create_record<S: Store + ?Sized>(store: &S, provider_id: u64) {
    let record = breaker::key(&learned_name(provider_id));
    if let Ok(None) = store.get(&record) {
        let _ = store.set(&record, b"{}", None);
    }
}
/// A configured endpoint's defaults; learned ones cannot configure these.
const MAX_IN_FLIGHT: u32 = 64;
const CIRCUIT: CircuitPolicy = CircuitPolicy {
    failure_threshold: 5,
    open_ms: 30_000,
};

/// Why a learned URL was refused (each is counted and logged by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not `http` or `https`.
    Scheme,
    /// The host and port match no `learn.allowHosts` pattern.
    NotAllowedHost,
    /// An IP literal or `localhost` in a loopback, private, link-local or otherwise
    /// non-public range, while `learn.allowPrivate` is off.
    PrivateAddress,
    /// Not an absolute URL we can send to (userinfo, fragment, bad host or port, too long).
    BadUrl,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Scheme => "scheme is not http or https",
            Refusal::NotAllowedHost => "host and port are not in learn.allowHosts",
            Refusal::PrivateAddress => "private or loopback address (learn.allowPrivate is off)",
            Refusal::BadUrl => "not a usable absolute URL",
        })
    }
}

/// A URL that passed the policy, with what an ORIGINAL_DST cluster needs.
struct Checked {
    target: Target,
    /// `host:port`, the port made explicit from the scheme when the URL has none.
    host_port: String,
}

/// Check a URL from OsmoX traffic against the learn policy (SSRF guard). Ok → the Target to
/// POST to (cluster = `learn.cluster`).
///
/// The host must always match `learn.allowHosts`. An IP literal (including the numeric forms
/// resolvers accept, like `2130706433` or `0x7f.1`) or `localhost` must also be public unless
/// `learn.allowPrivate` is set. IPv6 literals can never match a host pattern, so they are
/// never learned.
///
/// Limit: a *name* that resolves to a private address cannot be caught here, since the filter
/// does no DNS. The egress cluster must restrict where it connects (e.g. a dynamic forward
/// proxy with a DNS filter, or an RBAC/network policy on the egress path).
pub fn check_url(url: &str, learn: &Learn) -> Result<Target, Refusal> {
    checked(url, learn).map(|c| c.target)
}

fn checked(url: &str, learn: &Learn) -> Result<Checked, Refusal> {
    if url.len() > MAX_URL_LEN {
        return Err(Refusal::BadUrl);
    }
    let (scheme, _) = crate::config::split_scheme(url).ok_or(Refusal::BadUrl)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(Refusal::Scheme);
    }
    let target = Target::from_url(&learn.cluster, url).map_err(|_| Refusal::BadUrl)?;
    let (host, port) = split_authority(&target.authority).ok_or(Refusal::BadUrl)?;
    // Private first: it is the more useful reason when both apply.
    if !learn.allow_private && is_private_host(host)? {
        return Err(Refusal::PrivateAddress);
    }
    let port: u16 = match port {
        Some(port) => port.parse().map_err(|_| Refusal::BadUrl)?,
        None if target.scheme == "https" => 443,
        None => 80,
    };
    if !learn
        .allow_hosts
        .iter()
        .any(|p| p.allows(&target.scheme, host, port))
    {
        return Err(Refusal::NotAllowedHost);
    }
    let host_port = format!("{host}:{port}");
    Ok(Checked { target, host_port })
}

/// `(host, port)` of an authority `parse_url` accepted; an IPv6 host keeps its brackets.
fn split_authority(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.starts_with('[') {
        let end = authority.find(']')?;
        let host = authority.get(..=end)?;
        let port = authority.get(end + 1..)?.strip_prefix(':');
        Some((host, port))
    } else {
        Some(match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        })
    }
}

/// Whether `host` names a non-public address without DNS: an IP literal or `localhost`.
/// A host that looks numeric but is no valid address is `BadUrl`, as a browser would have it.
fn is_private_host(host: &str) -> Result<bool, Refusal> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip: Ipv6Addr = inner.parse().map_err(|_| Refusal::BadUrl)?;
        return Ok(is_private_v6(ip));
    }
    // A trailing dot names the same host to a resolver.
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.eq_ignore_ascii_case("localhost") || name.to_ascii_lowercase().ends_with(".localhost") {
        return Ok(true);
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if !is_numeric_label(last) {
        return Ok(false);
    }
    let ip = parse_ipv4_loose(name).ok_or(Refusal::BadUrl)?;
    Ok(is_private_v4(ip))
}

/// A decimal or `0x` hex label: what makes a host an IPv4 address to `inet_aton` and WHATWG.
fn is_numeric_label(label: &str) -> bool {
    let hex = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"));
    match hex {
        Some(digits) => digits.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// IPv4 in every form `inet_aton` accepts (1-4 parts, each decimal, octal or hex, the last
/// filling the remaining bytes), because the resolver behind the egress cluster accepts them.
fn parse_ipv4_loose(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) =
            if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
                (hex, 16)
            } else if part.len() > 1 && part.starts_with('0') {
                (part.get(1..)?, 8)
            } else {
                (*part, 10)
            };
        if digits.is_empty() {
            // `0x` alone is 0 to inet_aton; treat it as such rather than guess otherwise.
            if radix == 16 {
                values.push(0u32);
                continue;
            }
            return None;
        }
        values.push(u32::from_str_radix(digits, radix).ok()?);
    }
    let (last, init) = values.split_last()?;
    let mut addr: u32 = 0;
    for (i, v) in init.iter().enumerate() {
        if *v > 255 {
            return None;
        }
        addr |= v << (24 - 8 * i);
    }
    let last_bits = 8 * (4 - init.len() as u32);
    if last_bits < 32 && *last >= 1 << last_bits {
        return None;
    }
    Some(Ipv4Addr::from(addr | last))
}

/// Loopback, private, link-local (incl. cloud metadata 169.254.169.254), CGNAT, "this network"
/// (0/8), and multicast/reserved/broadcast (224/3): nothing a webhook belongs on.
fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    a == 0
        || a == 10
        || a == 127
        || (a == 169 && b == 254)
        || (a == 172 && (16..=31).contains(&b))
        || (a == 192 && b == 168)
        || (a == 100 && (64..=127).contains(&b))
        || a >= 224
}

/// Loopback, unspecified, link-local (fe80::/10), site-local (fec0::/10), unique-local
/// (fc00::/7), multicast, and any IPv4 embedded in a form that reaches it: mapped
/// (::ffff:0:0/96), compatible (::/96), NAT64 (64:ff9b::/96) and 6to4 (2002::/16).
fn is_private_v6(ip: Ipv6Addr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    let [s0, s1, s2, s3, s4, s5, s6, s7] = ip.segments();
    let low96_zero = s2 == 0 && s3 == 0 && s4 == 0 && s5 == 0;
    let compatible = s0 == 0 && s1 == 0 && low96_zero;
    let nat64 = s0 == 0x64 && s1 == 0xff9b && low96_zero;
    let embedded = if let Some(v4) = ip.to_ipv4_mapped() {
        Some(v4)
    } else if compatible || nat64 {
        Some(v4_from(s6, s7))
    } else if s0 == 0x2002 {
        Some(v4_from(s1, s2))
    } else {
        None
    };
    if let Some(v4) = embedded {
        return is_private_v4(v4);
    }
    (s0 & 0xffc0) == 0xfe80
        || (s0 & 0xffc0) == 0xfec0
        || (s0 & 0xfe00) == 0xfc00
        || (s0 & 0xff00) == 0xff00
}

fn v4_from(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
}

/// What a write of the map did.
struct Modified {
    change: Change,
    /// How many mappings it added (negative: removed).
    mappings: i64,
    /// The providers whose mapping it ended.
    ended: Vec<u64>,
}

/// One learned mapping, stored with short keys because the whole list is rewritten each time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// OsmoX `providerId`.
    p: u64,
    /// The webhook row's id when known: what a delete names.
    w: Option<u64>,
    /// The URL as OsmoX stored it; checked again whenever endpoints are built.
    u: String,
}

/// What `apply` did to the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A provider got its first webhook.
    Added,
    /// A provider's webhook URL changed.
    Changed,
    /// A mapping was removed.
    Removed,
    /// Nothing that affects delivery changed (same URL, or a delete of an unknown webhook).
    Unchanged,
    /// The URL failed the policy; nothing was stored.
    Refused(Refusal),
    /// A new provider did not fit in `capacity`; its mapping was not stored (a row that
    /// moved to it still left the provider it moved from).
    Full,
    /// The call did not say what it changed (`Registration::Unread`); nothing was stored.
    Unread,
}

/// The learned providerId → webhook URL mappings, kept under one shared-data key as a JSON
/// list sorted by provider, so an unchanged map keeps its CAS and callers need not rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registry {
    capacity: usize,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(DEFAULT_CAPACITY)
    }
}

impl Registry {
    /// `capacity`: most providers remembered (`learn.maxLearned`).
    pub fn new(capacity: usize) -> Self {
        Registry { capacity }
    }

    /// So the host can create the key at configure time; an empty value reads as no mappings.
    pub fn key() -> &'static str {
        KEY
    }

    /// [`Registry::apply`], counted in the learning metrics and logged: what the host calls
    /// for every registration seen in traffic.
    pub fn apply_counted<S: Store + ?Sized>(
        &self,
        store: &S,
        reg: &Registration,
        learn: &Learn,
        metrics: &dyn Metrics,
    ) -> Result<Change, StoreError> {
        let result = self.applied(store, reg, learn);
        let counts: &[(Metric, i64)] = match &result {
            Ok(m) => match (m.change, m.mappings) {
                (Change::Added | Change::Changed, _) => &[(Metric::RegistrationsLearned, 1)],
                (Change::Removed, _) => &[(Metric::RegistrationsRemoved, 1)],
                (Change::Unchanged, _) => &[],
                (Change::Refused(_), 0) => &[(Metric::RegistrationsRefused, 1)],
                (Change::Refused(_), _) => &[
                    (Metric::RegistrationsRefused, 1),
                    (Metric::RegistrationsRemoved, 1),
                ],
                (Change::Full, 0) => &[(Metric::RegistrationsFull, 1)],
                (Change::Full, _) => &[
                    (Metric::RegistrationsFull, 1),
                    (Metric::RegistrationsRemoved, 1),
                ],
                (Change::Unread, _) => &[(Metric::RegistrationsUnread, 1)],
            },
            Err(_) => &[(Metric::StoreConflicts, 1)],
        };
        for (metric, delta) in counts {
            metrics.add(*metric, *delta);
        }
        if let Ok(m) = &result {
            // By the map's size, not by the change: a webhook row that moves to another
            // provider takes the mapping of the one it left.
            if m.mappings != 0 {
                metrics.add(Metric::LearnedEndpoints, m.mappings);
            }
            // No configuration has an ended mapping's endpoint any more: a circuit left open
            // on it would stay counted in `circuits_open` for good, no attempt ever closing it.
            for provider in &m.ended {
                sender::forget_circuit(store, metrics, &learned_name(*provider));
            }
        }
        let result = result.map(|m| m.change);
        match &result {
            Ok(Change::Refused(why)) => log::warn!("webhook registration not learned: {why}"),
            Ok(Change::Full) => {
                log::warn!("webhook registration not learned: learn.maxLearned reached")
            }
            Ok(Change::Unread) => log::warn!("webhook registration not learned: {reg}"),
            Err(e) => log::warn!("webhook registration not learned: {e:?}"),
            Ok(_) => log::info!("webhook registration learned: {reg}"),
        }
        result
    }

    /// Apply a registration (after checking its URL). Upsert replaces the provider's URL (one
    /// active webhook per provider) and remembers the webhook row's id when the answer
    /// selected it ([`Registry::upsert`]); Delete removes the mapping whose webhook id matches,
    /// so it cannot find one learned without an id.
    pub fn apply<S: Store + ?Sized>(
        &self,
        store: &S,
        reg: &Registration,
        learn: &Learn,
    ) -> Result<Change, StoreError> {
        self.applied(store, reg, learn).map(|m| m.change)
    }

    /// `apply`, with what it did to the map.
    fn applied<S: Store + ?Sized>(
        &self,
        store: &S,
        reg: &Registration,
        learn: &Learn,
    ) -> Result<Modified, StoreError> {
        match reg {
            Registration::Upsert {
                provider_id,
                webhook_id,
                webhook_url,
            } => self.upserted(store, *provider_id, *webhook_id, webhook_url, learn),
            Registration::Delete { webhook_id } => self.remove(store, *webhook_id),
            Registration::Unread(_) => Ok(Modified {
                change: Change::Unread,
                mappings: 0,
                ended: Vec::new(),
            }),
        }
    }

    /// Make `url` the provider's webhook. A known `webhook_id` is remembered for deletes and
    /// taken from any other provider, since OsmoX can move a row to another provider; an
    /// unknown one keeps the id already stored, since OsmoX updates the provider's row in place.
    pub fn upsert<S: Store + ?Sized>(
        &self,
        store: &S,
        provider_id: u64,
        webhook_id: Option<u64>,
        url: &str,
        learn: &Learn,
    ) -> Result<Change, StoreError> {
        self.upserted(store, provider_id, webhook_id, url, learn)
            .map(|m| m.change)
    }

    fn upserted<S: Store + ?Sized>(
        &self,
        store: &S,
        provider_id: u64,
        webhook_id: Option<u64>,
        url: &str,
        learn: &Learn,
    ) -> Result<Modified, StoreError> {
        if let Err(refusal) = checked(url, learn) {
            // OsmoX took the registration: its webhook for the provider no longer goes to
            // the URL learned before, so neither may the filter's (a review found notifications
            // still sent to a URL its owner had moved away from).
            // The same goes for a webhook row that moved here from another provider.
            let removed = self.modify(store, |entries| {
                let before = entries.len();
                entries
                    .retain(|e| e.p != provider_id && (webhook_id.is_none() || e.w != webhook_id));
                (Change::Removed, entries.len() != before)
            })?;
            return Ok(Modified {
                change: Change::Refused(refusal),
                ..removed
            });
        }
        self.modify(store, |entries| {
            let before = entries.len();
            if let Some(w) = webhook_id {
                entries.retain(|e| e.p == provider_id || e.w != Some(w));
            }
            let moved = entries.len() != before;
            if let Some(e) = entries.iter_mut().find(|e| e.p == provider_id) {
                let w = webhook_id.or(e.w);
                let change = if e.u == url {
                    Change::Unchanged
                } else {
                    Change::Changed
                };
                let write = moved || e.u != url || e.w != w;
                e.u = url.to_string();
                e.w = w;
                return (change, write);
            }
            if entries.len() >= self.capacity {
                // The row still left the provider it moved from (a map filled under a larger
                // `maxLearned` can be full even after that): OsmoX no longer sends that
                // provider's notifications to its URL, so neither may the filter.
                return (Change::Full, moved);
            }
            create_record(store, provider_id);
            let at = entries.partition_point(|e| e.p < provider_id);
            entries.insert(
                at,
                Entry {
                    p: provider_id,
                    w: webhook_id,
                    u: url.to_string(),
                },
            );
            (Change::Added, true)
        })
    }

    /// Forget the mapping of webhook row `webhook_id`, if one is known.
    fn remove<S: Store + ?Sized>(
        &self,
        store: &S,
        webhook_id: u64,
    ) -> Result<Modified, StoreError> {
        self.modify(store, |entries| {
            let before = entries.len();
            entries.retain(|e| e.w != Some(webhook_id));
            if entries.len() == before {
                (Change::Unchanged, false)
            } else {
                (Change::Removed, true)
            }
        })
    }

    /// Rewrite the map with `f` (which says what changed, and whether to write).
    fn modify<S: Store + ?Sized>(
        &self,
        store: &S,
        mut f: impl FnMut(&mut Vec<Entry>) -> (Change, bool),
    ) -> Result<Modified, StoreError> {
        let mut outcome = Change::Unchanged;
        let written = store::update(store, KEY, |current| {
            let mut entries = decode(current);
            let before: Vec<u64> = entries.iter().map(|e| e.p).collect();
            let (change, write) = f(&mut entries);
            outcome = change;
            if !write {
                return None;
            }
            let mappings = i64::try_from(entries.len()).unwrap_or(i64::MAX)
                - i64::try_from(before.len()).unwrap_or(i64::MAX);
            let ended = before
                .into_iter()
                .filter(|p| entries.iter().all(|e| e.p != *p))
                .collect();
            Some((
                encode(&entries),
                Modified {
                    change,
                    mappings,
                    ended,
                },
            ))
        })?;
        Ok(written.unwrap_or(Modified {
            change: outcome,
            mappings: 0,
            ended: Vec::new(),
        }))
    }

    /// The learned endpoints, built fresh from the store: name `learned-<providerId>`, target
    /// from `check_url` (re-checked: a mapping that no longer passes the policy after a config
    /// change is skipped), SUCCESS and FAILED of that provider only, the top-level `retry`,
    /// built-in in-flight and circuit defaults, no secrets (OsmoX has none). At most `capacity`
    /// of them; none when learning is disabled. Configured names cannot take the prefix.
    pub fn endpoints<S: Store + ?Sized>(
        &self,
        store: &S,
        config: &Config,
    ) -> Result<Vec<Endpoint>, StoreError> {
        let Some(learn) = &config.learn else {
            return Ok(Vec::new());
        };
        let current = store.get(KEY)?;
        let entries = decode(current.as_ref().map(|(v, _)| v.as_slice()));
        let mut out = Vec::new();
        let entries = entries.get(..self.capacity).unwrap_or(&entries);
        let names: Vec<String> = entries.iter().map(|e| learned_name(e.p)).collect();
        let configured = config.endpoints.iter().map(|e| e.name.as_str());
        let repeats = repeats_a_key(configured.chain(names.iter().map(String::as_str)));
        let learned_repeats = repeats.get(config.endpoints.len()..).unwrap_or_default();
        for ((e, name), repeats) in entries.iter().zip(names).zip(learned_repeats) {
            if *repeats {
                log::warn!(
                    "learned webhook for provider {}: skipped, its endpoint key is another's",
                    e.p
                );
                continue;
            }
            let c = match checked(&e.u, learn) {
                Ok(c) => c,
                Err(refusal) => {
                    log::warn!("learned webhook for provider {}: skipped, {refusal}", e.p);
                    continue;
                }
            };
            let headers = match &learn.original_dst_header {
                Some(header) => vec![(header.clone(), c.host_port)],
                None => Vec::new(),
            };
            out.push(Endpoint {
                name,
                target: c.target,
                provider_ids: Some(vec![e.p]),
                channel_types: None,
                delivery_statuses: StatusSet::FINAL,
                timeout_ms: learn.timeout_ms,
                headers,
                retry: config.retry.clone(),
                max_in_flight: MAX_IN_FLIGHT,
                circuit: CIRCUIT,
                rate_limit: learn.rate_limit,
                secrets: Vec::new(),
                payload: Payload::Notification,
                await_result_ms: crate::config::DEFAULT_AWAIT_RESULT_MS,
                // As OsmoX's own webhook, which these replace, never fires for one.
                test_mode: TestMode::Skip,
            });
        }
        Ok(out)
    }

    /// The CAS/version of the mapping key, so callers can cache `endpoints` and rebuild only
    /// when it changed. `None` until the key exists.
    pub fn version<S: Store + ?Sized>(&self, store: &S) -> Result<Option<Cas>, StoreError> {
        Ok(store.get(KEY)?.map(|(_, cas)| cas))
    }
}

/// Whether `endpoint` names a learned endpoint whose provider still has a registration in the
/// shared map (under any learning policy's eyes: whether a policy allows its URL is that
/// configuration's to say).
pub fn is_registered(store: &dyn Store, endpoint: &str) -> bool {
    let Some(provider) = endpoint
        .strip_prefix(NAME_PREFIX)
        .and_then(|p| p.parse::<u64>().ok())
    else {
        return false;
    };
    match store.get(KEY) {
        Ok(current) => decode(current.as_ref().map(|(v, _)| v.as_slice()))
            .iter()
            .any(|e| e.p == provider),
        // Unreadable: say yes, so that nothing is dropped on that account.
        Err(_) => true,
    }
}

/// Configured plus learned endpoints, with the learned map's version they were built at:
/// rebuilt only when the map changed.
#[derive(Debug)]
pub struct AllEndpoints {
    built_at: Option<Cas>,
    all: Rc<Vec<Endpoint>>,
}

impl AllEndpoints {
    pub fn new(configured: Vec<Endpoint>) -> Self {
        AllEndpoints {
            built_at: None,
            all: Rc::new(configured),
        }
    }

    /// Every endpoint deliveries may go to, and whether the list was rebuilt just now (the
    /// host then creates the breaker records of those it names). A read the host refuses
    /// keeps the last list, and leaves the version unrecorded so that the next call reads
    /// again: a list without the learned endpoints would have their deliveries orphaned.
    pub fn current<S: Store + ?Sized>(
        &mut self,
        store: &S,
        config: &Config,
    ) -> (Rc<Vec<Endpoint>>, bool) {
        let Some(learn) = &config.learn else {
            return (self.all.clone(), false);
        };
        let registry = Registry::new(learn.max_learned);
        let Ok(version) = registry.version(store) else {
            return (self.all.clone(), false);
        };
        if self.built_at == version {
            return (self.all.clone(), false);
        }
        let Ok(learned) = registry.endpoints(store, config) else {
            return (self.all.clone(), false);
        };
        let mut all = config.endpoints.clone();
        for e in learned {
            if all.iter().all(|c| c.name != e.name) {
                all.push(e);
            }
        }
        self.all = Rc::new(all);
        self.built_at = version;
        (self.all.clone(), true)
    }
}

/// The stored list: `[{"p":..,"w":..,"u":..}]`, `w` left out when unknown.
fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Out::default();
    out.begin_array();
    for e in entries {
        out.begin_object();
        out.key("p");
        out.uint(e.p);
        if let Some(w) = e.w {
            out.key("w");
            out.uint(w);
        }
        out.key("u");
        out.string(&e.u);
        out.end_object();
    }
    out.end_array();
    out.into_bytes()
}

fn read_entry(r: &mut Reader) -> Option<Entry> {
    let (mut p, mut w, mut u) = (None, None, None);
    r.object(|r, key| {
        match key {
            "p" => p = Some(r.uint()?),
            "w" => w = r.optional(Reader::uint)?,
            "u" => u = Some(r.string()?),
            _ => r.skip()?,
        }
        Some(())
    })?;
    Some(Entry { p: p?, w, u: u? })
}

/// The stored list; an absent, empty or unreadable value is no mappings (the next write
/// replaces an unreadable one rather than wedging learning forever).
fn decode(value: Option<&[u8]>) -> Vec<Entry> {
    let Some(bytes) = value.filter(|b| !b.is_empty()) else {
        return Vec::new();
    };
    match Reader::document(bytes, |r| r.list(read_entry)) {
        Some(entries) => entries,
        None => {
            log::warn!("{KEY}: unreadable learned webhooks ignored");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostPattern;
    use crate::delivery::retry::{Backoff, RetryPolicy};
    use crate::store::MemStore;

    fn learn(allow_private: bool) -> Learn {
        Learn {
            cluster: "webhook_egress".to_string(),
            allow_hosts: [
                "hooks.example.com",
                "*.partner.example.com:8443",
                "*.partner.example.com",
                "169.254.169.254",
            ]
            .iter()
            .chain(["127.0.0.1:8089", "10.0.0.5", "localhost:*", "2130706433"].iter())
            .map(|h| HostPattern::parse(h).unwrap())
            .collect(),
            allow_private,
            timeout_ms: 7000,
            original_dst_header: None,
            max_learned: 256,
            rate_limit: None,
        }
    }

    fn target(scheme: &str, authority: &str, path: &str) -> Target {
        Target {
            cluster: "webhook_egress".to_string(),
            authority: authority.to_string(),
            path: path.to_string(),
            scheme: scheme.to_string(),
        }
    }

    #[test]
    fn check_url_follows_the_policy() {
        let strict = learn(false);
        let cases: &[(&str, Result<Target, Refusal>)] = &[
            (
                "https://hooks.example.com/osmox?x=1",
                Ok(target("https", "hooks.example.com", "/osmox?x=1")),
            ),
            (
                "HTTP://A.Partner.Example.com:8443",
                Ok(target("http", "a.partner.example.com:8443", "/")),
            ),
            ("https://evil.example.com/", Err(Refusal::NotAllowedHost)),
            // A host allowed without a port: only its scheme's own port.
            (
                "https://hooks.example.com:443/",
                Ok(target("https", "hooks.example.com:443", "/")),
            ),
            (
                "https://hooks.example.com:8443/",
                Err(Refusal::NotAllowedHost),
            ),
            (
                "http://hooks.example.com:443/",
                Err(Refusal::NotAllowedHost),
            ),
            (
                "https://hooks.example.com:80/",
                Err(Refusal::NotAllowedHost),
            ),
            (
                "https://a.partner.example.com:9443/",
                Err(Refusal::NotAllowedHost),
            ),
            ("https://partner.example.com/", Err(Refusal::NotAllowedHost)),
            ("https://hooks.example.com./", Err(Refusal::NotAllowedHost)),
            ("http://8.8.8.8/", Err(Refusal::NotAllowedHost)),
            ("http://169.254.169.254/", Err(Refusal::PrivateAddress)),
            ("http://127.0.0.1:8089/osmox", Err(Refusal::PrivateAddress)),
            ("http://127.0.0.1./", Err(Refusal::PrivateAddress)),
            ("http://10.0.0.5/", Err(Refusal::PrivateAddress)),
            ("http://10.1.2.3/", Err(Refusal::PrivateAddress)),
            ("http://172.16.0.1/", Err(Refusal::PrivateAddress)),
            ("http://192.168.1.1/", Err(Refusal::PrivateAddress)),
            ("http://100.64.0.1/", Err(Refusal::PrivateAddress)),
            ("http://0.0.0.0/", Err(Refusal::PrivateAddress)),
            ("http://localhost:9000/", Err(Refusal::PrivateAddress)),
            ("http://a.localhost/", Err(Refusal::PrivateAddress)),
            ("http://2130706433/", Err(Refusal::PrivateAddress)),
            ("http://0x7f.1/", Err(Refusal::PrivateAddress)),
            ("http://0177.0.0.1/", Err(Refusal::PrivateAddress)),
            ("http://[::1]/", Err(Refusal::PrivateAddress)),
            ("http://[::]/", Err(Refusal::PrivateAddress)),
            ("http://[::ffff:127.0.0.1]/", Err(Refusal::PrivateAddress)),
            ("http://[::ffff:a9fe:a9fe]/", Err(Refusal::PrivateAddress)),
            ("http://[fe80::1]/", Err(Refusal::PrivateAddress)),
            ("http://[fd00::1]/", Err(Refusal::PrivateAddress)),
            ("http://[64:ff9b::a00:1]/", Err(Refusal::PrivateAddress)),
            ("http://[2002:7f00:1::]/", Err(Refusal::PrivateAddress)),
            // IPv4-compatible, site-local and link-local's last block (an audit: untested).
            ("http://[::7f00:1]/", Err(Refusal::PrivateAddress)),
            ("http://[fec0::1]/", Err(Refusal::PrivateAddress)),
            ("http://[feff::1]/", Err(Refusal::PrivateAddress)),
            ("http://[febf::1]/", Err(Refusal::PrivateAddress)),
            // The same forms around a public IPv4 address are not private.
            ("http://[::808:808]/", Err(Refusal::NotAllowedHost)),
            ("http://[64:ff9b::808:808]/", Err(Refusal::NotAllowedHost)),
            ("http://[2002:808:808::]/", Err(Refusal::NotAllowedHost)),
            // Only those exact prefixes embed one: a segment off, 127.0.0.1 in the last 32
            // bits is an ordinary IPv6 address (a mutation audit: unpinned).
            ("http://[0:0:1::7f00:1]/", Err(Refusal::NotAllowedHost)),
            ("http://[::1:0:7f00:1]/", Err(Refusal::NotAllowedHost)),
            ("http://[1::7f00:1]/", Err(Refusal::NotAllowedHost)),
            ("http://[64:1::7f00:1]/", Err(Refusal::NotAllowedHost)),
            ("http://[ff02::1]/", Err(Refusal::PrivateAddress)),
            ("http://224.0.0.1/", Err(Refusal::PrivateAddress)),
            ("http://[2606:4700::1]/", Err(Refusal::NotAllowedHost)),
            ("http://[::ffff:8.8.8.8]/", Err(Refusal::NotAllowedHost)),
            ("http://172.32.0.1/", Err(Refusal::NotAllowedHost)),
            // Each private range's edges (a review: 100.64.0.0/10 was checked inside only).
            ("http://172.15.255.255/", Err(Refusal::NotAllowedHost)),
            ("http://172.31.255.255/", Err(Refusal::PrivateAddress)),
            ("http://100.63.255.255/", Err(Refusal::NotAllowedHost)),
            ("http://100.127.255.255/", Err(Refusal::PrivateAddress)),
            ("http://100.128.0.1/", Err(Refusal::NotAllowedHost)),
            ("http://169.253.0.1/", Err(Refusal::NotAllowedHost)),
            ("http://169.255.0.1/", Err(Refusal::NotAllowedHost)),
            ("http://192.167.1.1/", Err(Refusal::NotAllowedHost)),
            ("http://192.169.1.1/", Err(Refusal::NotAllowedHost)),
            ("http://11.0.0.1/", Err(Refusal::NotAllowedHost)),
            ("http://126.255.255.255/", Err(Refusal::NotAllowedHost)),
            ("http://128.0.0.1/", Err(Refusal::NotAllowedHost)),
            ("http://223.255.255.255/", Err(Refusal::NotAllowedHost)),
            ("ftp://hooks.example.com/", Err(Refusal::Scheme)),
            ("javascript://hooks.example.com/", Err(Refusal::Scheme)),
            ("https://user:pw@hooks.example.com/", Err(Refusal::BadUrl)),
            ("https://hooks.example.com/#frag", Err(Refusal::BadUrl)),
            ("https://hooks.example.com:0/", Err(Refusal::BadUrl)),
            ("hooks.example.com/osmox", Err(Refusal::BadUrl)),
            ("http://example.256/", Err(Refusal::BadUrl)),
            ("http://256.0.0.1/", Err(Refusal::BadUrl)),
            // inet_aton takes at most four parts: a fifth, even a zero, is no address.
            ("http://1.2.3.4.0/", Err(Refusal::BadUrl)),
            ("http://1.2.3.4.5.6/", Err(Refusal::BadUrl)),
            ("http://[zz::1]/", Err(Refusal::BadUrl)),
            ("", Err(Refusal::BadUrl)),
        ];
        for (url, expected) in cases {
            assert_eq!(&check_url(url, &strict), expected, "{url}");
        }
        // The bound is on the whole URL, at the byte.
        let prefix = "https://hooks.example.com/";
        let longest = format!("{prefix}{}", "a".repeat(MAX_URL_LEN - prefix.len()));
        assert!(check_url(&longest, &strict).is_ok());
        assert_eq!(
            check_url(&format!("{longest}a"), &strict),
            Err(Refusal::BadUrl)
        );
    }

    #[test]
    fn allow_private_admits_listed_private_hosts_only() {
        let open = learn(true);
        assert_eq!(
            check_url("http://169.254.169.254/latest", &open),
            Ok(target("http", "169.254.169.254", "/latest"))
        );
        assert_eq!(
            check_url("http://127.0.0.1:8089/osmox/webhook", &open),
            Ok(target("http", "127.0.0.1:8089", "/osmox/webhook"))
        );
        assert_eq!(
            check_url("http://10.0.0.5/", &open),
            Ok(target("http", "10.0.0.5", "/"))
        );
        assert_eq!(
            check_url("http://10.0.0.6/", &open),
            Err(Refusal::NotAllowedHost)
        );
        // Envoy's admin port on an allowed host: the port is not listed.
        assert_eq!(
            check_url("http://127.0.0.1:9901/quitquitquit", &open),
            Err(Refusal::NotAllowedHost)
        );
        assert_eq!(
            check_url("http://10.0.0.5:9901/", &open),
            Err(Refusal::NotAllowedHost)
        );
        assert_eq!(
            check_url("http://localhost:9901/", &open),
            Ok(target("http", "localhost:9901", "/"))
        );
        assert_eq!(
            check_url("http://[::1]/", &open),
            Err(Refusal::NotAllowedHost)
        );
    }

    #[test]
    fn ipv4_loose_forms_parse_like_inet_aton() {
        let cases = [
            ("127.0.0.1", Some([127, 0, 0, 1])),
            ("2130706433", Some([127, 0, 0, 1])),
            ("0x7f.1", Some([127, 0, 0, 1])),
            ("127.1", Some([127, 0, 0, 1])),
            ("10.0.258", Some([10, 0, 1, 2])),
            ("0300.0250.1.1", Some([192, 168, 1, 1])),
            ("0x", Some([0, 0, 0, 0])),
            ("4294967296", None),
            ("1.2.3.4.5", None),
            ("1..2", None),
            ("08.1.1.1", None),
            ("1.2.65536", None),
        ];
        for (host, expected) in cases {
            assert_eq!(
                parse_ipv4_loose(host).map(|ip| ip.octets()),
                expected,
                "{host}"
            );
        }
    }

    #[test]
    fn refusals_read_as_short_reasons() {
        assert_eq!(Refusal::Scheme.to_string(), "scheme is not http or https");
        assert_eq!(
            Refusal::NotAllowedHost.to_string(),
            "host and port are not in learn.allowHosts"
        );
        assert_eq!(
            Refusal::PrivateAddress.to_string(),
            "private or loopback address (learn.allowPrivate is off)"
        );
        assert_eq!(Refusal::BadUrl.to_string(), "not a usable absolute URL");
    }

    fn upsert(provider_id: u64, url: &str) -> Registration {
        Registration::Upsert {
            provider_id,
            webhook_id: None,
            webhook_url: url.to_string(),
        }
    }

    #[test]
    fn applied_registrations_are_counted_by_outcome() {
        use crate::metrics::CountingMetrics;
        let config = config(r#""allowHosts": ["hooks.example.com"]"#);
        let l = config.learn.clone().unwrap();
        let (store, m) = (MemStore::new(), CountingMetrics::default());
        let reg = Registry::new(4);
        let add = Registration::Upsert {
            provider_id: 7,
            webhook_id: Some(42),
            webhook_url: A.to_string(),
        };
        let refused = Registration::Upsert {
            provider_id: 8,
            webhook_id: None,
            webhook_url: "http://169.254.169.254/".to_string(),
        };
        let delete = Registration::Delete { webhook_id: 42 };
        assert_eq!(reg.apply_counted(&store, &add, &l, &m), Ok(Change::Added));
        assert_eq!(
            reg.apply_counted(&store, &add, &l, &m),
            Ok(Change::Unchanged)
        );
        assert!(matches!(
            reg.apply_counted(&store, &refused, &l, &m),
            Ok(Change::Refused(_))
        ));
        assert_eq!(
            reg.apply_counted(&store, &delete, &l, &m),
            Ok(Change::Removed)
        );
        let stored = store.get(KEY).unwrap();
        for unread in [
            crate::extract::Unread::GraphqlFields,
            crate::extract::Unread::DeleteId,
            crate::extract::Unread::GraphqlErrors,
        ] {
            assert_eq!(
                reg.apply_counted(&store, &Registration::Unread(unread), &l, &m),
                Ok(Change::Unread)
            );
        }
        assert_eq!(store.get(KEY).unwrap(), stored, "nothing stored");
        assert_eq!(m.get(Metric::RegistrationsLearned), 1);
        assert_eq!(m.get(Metric::RegistrationsRefused), 1);
        assert_eq!(m.get(Metric::RegistrationsRemoved), 1);
        assert_eq!(m.get(Metric::RegistrationsUnread), 3);
        assert_eq!(m.get(Metric::LearnedEndpoints), 0);
    }

    /// A review: a row moving to another provider took the first provider's mapping, but
    /// the gauge counted only the second's; and a move OsmoX took to a URL the filter refuses
    /// left the old URL receiving the provider's notifications.
    #[test]
    fn the_learned_endpoints_gauge_follows_the_map_through_moves_and_refusals() {
        use crate::metrics::CountingMetrics;
        let config = config(r#""allowHosts": ["hooks.example.com", "*.partner.example.com"]"#);
        let l = config.learn.clone().unwrap();
        let (store, m) = (MemStore::new(), CountingMetrics::default());
        let reg = Registry::new(4);
        let row = |p: u64, w: u64, url: &str| Registration::Upsert {
            provider_id: p,
            webhook_id: Some(w),
            webhook_url: url.to_string(),
        };
        let mappings = |store: &MemStore| reg.endpoints(store, &config).unwrap().len() as i64;
        let steps = [
            (row(1, 3, A), Change::Added),
            (row(2, 3, A), Change::Added), // row 3 moves to provider 2
            (row(4, 5, B), Change::Added),
            (row(2, 5, B), Change::Changed), // row 5 moves onto provider 2's
            (
                row(4, 6, "https://evil.example.org/x"),
                Change::Refused(Refusal::NotAllowedHost),
            ),
            (
                row(2, 5, "http://169.254.169.254/"),
                Change::Refused(Refusal::PrivateAddress),
            ),
        ];
        for (i, (step, want)) in steps.iter().enumerate() {
            assert_eq!(
                reg.apply_counted(&store, step, &l, &m),
                Ok(*want),
                "step {i}"
            );
            assert_eq!(
                m.get(Metric::LearnedEndpoints),
                mappings(&store),
                "step {i}"
            );
        }
        // Row 7 moves from provider 2 to provider 9, at a URL the policy refuses: provider 2's
        // mapping ends with it, as an accepted move would have ended it.
        assert_eq!(mappings(&store), 0);
        assert_eq!(
            reg.apply_counted(&store, &row(2, 7, B), &l, &m),
            Ok(Change::Added)
        );
        assert_eq!(mappings(&store), 1);
        assert_eq!(
            reg.apply_counted(&store, &row(9, 7, "http://10.0.0.1/"), &l, &m),
            Ok(Change::Refused(Refusal::PrivateAddress))
        );
        assert_eq!(mappings(&store), 0);
        assert_eq!(m.get(Metric::LearnedEndpoints), 0);
        assert_eq!(m.get(Metric::RegistrationsRefused), 3);
        assert_eq!(m.get(Metric::RegistrationsRemoved), 2);
    }

    /// A review: a learned endpoint's circuit left open (its receiver died, its deliveries
    /// all ended) stayed counted in `circuits_open` for good once its registration was
    /// removed, since no attempt would ever close it; a removed configured endpoint's is
    /// forgotten once no live configuration has it. A registration ends by a delete, by a
    /// URL the policy refuses, or by its row moving to another provider: each forgets the
    /// circuit of the endpoint it ends, and only that one.
    #[test]
    fn a_removed_registrations_open_circuit_is_no_longer_counted() {
        use crate::delivery::breaker::EndpointState;
        use crate::metrics::CountingMetrics;
        let config = config(r#""allowHosts": ["hooks.example.com", "*.partner.example.com"]"#);
        let l = config.learn.clone().unwrap();
        let (store, m) = (MemStore::new(), CountingMetrics::default());
        let reg = Registry::new(8);
        let row = |p: u64, w: u64, url: &str| Registration::Upsert {
            provider_id: p,
            webhook_id: Some(w),
            webhook_url: url.to_string(),
        };
        for (p, w) in [(1, 11), (2, 12), (3, 13), (4, 14)] {
            assert_eq!(
                reg.apply_counted(&store, &row(p, w, A), &l, &m),
                Ok(Change::Added)
            );
        }
        // Every circuit opened, counted by the senders that opened them.
        for p in 1..=4 {
            let key = breaker::key(&learned_name(p));
            store.set(&key, br#"{"f":5,"o":1000}"#, None).unwrap();
        }
        m.add(Metric::CircuitsOpen, 4);
        let tripped = |p: u64| {
            let (value, _) = store.get(&breaker::key(&learned_name(p))).unwrap().unwrap();
            EndpointState::decode(&value).unwrap().is_tripped()
        };

        let delete = Registration::Delete { webhook_id: 11 };
        assert_eq!(
            reg.apply_counted(&store, &delete, &l, &m),
            Ok(Change::Removed)
        );
        assert!(!tripped(1));
        assert_eq!(m.get(Metric::CircuitsOpen), 3);

        let refused = row(2, 12, "http://169.254.169.254/");
        assert!(matches!(
            reg.apply_counted(&store, &refused, &l, &m),
            Ok(Change::Refused(_))
        ));
        assert!(!tripped(2));
        assert_eq!(m.get(Metric::CircuitsOpen), 2);

        // Row 13 moves from provider 3 to provider 4, whose mapping stays (at its new URL).
        assert_eq!(
            reg.apply_counted(&store, &row(4, 13, B), &l, &m),
            Ok(Change::Changed)
        );
        assert!(!tripped(3));
        assert!(tripped(4), "an endpoint that stays keeps its circuit");
        assert_eq!(m.get(Metric::CircuitsOpen), 1);

        // Removed again, or never known: nothing more to forget.
        assert_eq!(
            reg.apply_counted(&store, &delete, &l, &m),
            Ok(Change::Unchanged)
        );
        assert_eq!(m.get(Metric::CircuitsOpen), 1);
    }

    #[test]
    fn a_registration_answer_with_its_id_can_be_deleted_by_that_id() {
        let config = config(r#""allowHosts": ["hooks.example.com"]"#);
        let l = config.learn.clone().unwrap();
        let store = MemStore::new();
        let reg = Registry::new(4);
        let add = Registration::Upsert {
            provider_id: 7,
            webhook_id: Some(42),
            webhook_url: A.to_string(),
        };
        assert_eq!(reg.apply(&store, &add, &l), Ok(Change::Added));
        let delete = Registration::Delete { webhook_id: 42 };
        assert_eq!(reg.apply(&store, &delete, &l), Ok(Change::Removed));
        assert!(reg.endpoints(&store, &config).unwrap().is_empty());
    }

    fn stored(store: &MemStore) -> String {
        String::from_utf8(store.get(Registry::key()).unwrap().unwrap().0).unwrap()
    }

    const A: &str = "https://hooks.example.com/a";
    const B: &str = "https://x.partner.example.com/b";

    #[test]
    fn apply_adds_changes_and_keeps_one_webhook_per_provider() {
        let store = MemStore::new();
        let reg = Registry::new(4);
        let l = learn(false);
        assert_eq!(reg.apply(&store, &upsert(2, A), &l), Ok(Change::Added));
        assert_eq!(reg.apply(&store, &upsert(1, A), &l), Ok(Change::Added));
        assert_eq!(reg.apply(&store, &upsert(2, A), &l), Ok(Change::Unchanged));
        assert_eq!(reg.apply(&store, &upsert(2, B), &l), Ok(Change::Changed));
        assert_eq!(
            stored(&store),
            r#"[{"p":1,"u":"https://hooks.example.com/a"},{"p":2,"u":"https://x.partner.example.com/b"}]"#
        );
    }

    /// A review suspected a race: the first VMs to list a learned endpoint both created its
    /// record, the later write erasing the places the earlier one's VM had taken. The record
    /// is made when the registration is learned, before any VM can list the endpoint, and
    /// never again: a record in use is not reset by the same registration learned again.
    #[test]
    fn a_learned_endpoints_record_exists_before_the_map_names_it() {
        let store = MemStore::new();
        let reg = Registry::new(1);
        let l = learn(false);
        let record = |p: &str| store.get(&breaker::key(p)).unwrap().map(|(v, _)| v);
        assert_eq!(reg.apply(&store, &upsert(7, A), &l), Ok(Change::Added));
        assert_eq!(record("learned-7").as_deref(), Some(&b"{}"[..]));
        store
            .set(&breaker::key("learned-7"), br#"{"f":2}"#, None)
            .unwrap();
        assert_eq!(reg.apply(&store, &upsert(7, B), &l), Ok(Change::Changed));
        assert_eq!(record("learned-7").as_deref(), Some(&br#"{"f":2}"#[..]));
        assert_eq!(reg.apply(&store, &upsert(8, A), &l), Ok(Change::Full));
        assert_eq!(
            record("learned-8"),
            None,
            "no record for a registration not kept"
        );
    }

    /// The order that closes the race: every write of the map finds the record of each
    /// endpoint it names already made (a VM may list the endpoint as soon as the map names
    /// it, and take places on a record it would otherwise create after another VM's write).
    #[test]
    fn the_map_is_written_only_after_the_records_it_names() {
        struct Watching {
            inner: MemStore,
            missing: std::cell::RefCell<Vec<String>>,
        }
        impl Store for Watching {
            fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, StoreError> {
                self.inner.get(key)
            }
            fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), StoreError> {
                if key == KEY {
                    for e in decode(Some(value)) {
                        let name = learned_name(e.p);
                        if !matches!(self.inner.get(&breaker::key(&name)), Ok(Some(_))) {
                            self.missing.borrow_mut().push(name);
                        }
                    }
                }
                self.inner.set(key, value, cas)
            }
        }
        let store = Watching {
            inner: MemStore::new(),
            missing: std::cell::RefCell::new(Vec::new()),
        };
        let (reg, l) = (Registry::new(4), learn(false));
        assert_eq!(reg.apply(&store, &upsert(7, A), &l), Ok(Change::Added));
        assert_eq!(reg.apply(&store, &upsert(3, B), &l), Ok(Change::Added));
        assert_eq!(reg.apply(&store, &upsert(7, B), &l), Ok(Change::Changed));
        assert!(store.missing.borrow().is_empty(), "{:?}", store.missing);
    }

    #[test]
    fn apply_refuses_urls_outside_the_policy_without_storing() {
        let store = MemStore::new();
        let reg = Registry::default();
        let l = learn(false);
        assert_eq!(
            reg.apply(&store, &upsert(1, "http://169.254.169.254/"), &l),
            Ok(Change::Refused(Refusal::PrivateAddress))
        );
        assert_eq!(
            reg.apply(&store, &upsert(1, "ftp://hooks.example.com/"), &l),
            Ok(Change::Refused(Refusal::Scheme))
        );
        assert!(store.is_empty());
    }

    #[test]
    fn apply_reports_full_for_a_new_provider_only() {
        let store = MemStore::new();
        let reg = Registry::new(2);
        let l = learn(false);
        assert_eq!(reg.apply(&store, &upsert(1, A), &l), Ok(Change::Added));
        assert_eq!(reg.apply(&store, &upsert(2, A), &l), Ok(Change::Added));
        let version = reg.version(&store).unwrap();
        assert_eq!(reg.apply(&store, &upsert(3, A), &l), Ok(Change::Full));
        assert_eq!(reg.apply(&store, &upsert(2, B), &l), Ok(Change::Changed));
        assert_ne!(reg.version(&store).unwrap(), version);
        assert_eq!(
            stored(&store),
            r#"[{"p":1,"u":"https://hooks.example.com/a"},{"p":2,"u":"https://x.partner.example.com/b"}]"#
        );
    }

    #[test]
    fn delete_removes_the_mapping_with_that_webhook_id() {
        let store = MemStore::new();
        let reg = Registry::default();
        let l = learn(false);
        assert_eq!(reg.upsert(&store, 1, Some(3), A, &l), Ok(Change::Added));
        assert_eq!(reg.upsert(&store, 2, Some(4), B, &l), Ok(Change::Added));
        // An upsert without an id keeps the one already known.
        assert_eq!(reg.apply(&store, &upsert(1, B), &l), Ok(Change::Changed));
        let delete = |webhook_id| Registration::Delete { webhook_id };
        assert_eq!(reg.apply(&store, &delete(9), &l), Ok(Change::Unchanged));
        assert_eq!(reg.apply(&store, &delete(3), &l), Ok(Change::Removed));
        assert_eq!(reg.apply(&store, &delete(3), &l), Ok(Change::Unchanged));
        assert_eq!(
            stored(&store),
            r#"[{"p":2,"w":4,"u":"https://x.partner.example.com/b"}]"#
        );
    }

    #[test]
    fn delete_cannot_find_a_mapping_learned_without_an_id() {
        let store = MemStore::new();
        let reg = Registry::default();
        let l = learn(false);
        assert_eq!(reg.apply(&store, &upsert(1, A), &l), Ok(Change::Added));
        let delete = Registration::Delete { webhook_id: 3 };
        assert_eq!(reg.apply(&store, &delete, &l), Ok(Change::Unchanged));
    }

    #[test]
    fn a_webhook_row_moved_to_another_provider_leaves_the_first() {
        let store = MemStore::new();
        let reg = Registry::default();
        let l = learn(false);
        assert_eq!(reg.upsert(&store, 1, Some(3), A, &l), Ok(Change::Added));
        assert_eq!(reg.upsert(&store, 2, Some(3), A, &l), Ok(Change::Added));
        assert_eq!(
            stored(&store),
            r#"[{"p":2,"w":3,"u":"https://hooks.example.com/a"}]"#
        );
    }

    /// A review: a map holding more than `capacity` (filled under a larger `maxLearned`, by
    /// another listener or before an update lowered it) refused a row that moved to a new
    /// provider as `Full` without writing the move, so the provider the row left kept its
    /// mapping: its notifications still went to a URL OsmoX no longer sends them to.
    #[test]
    fn a_row_moved_to_a_provider_that_does_not_fit_still_leaves_the_first() {
        use crate::metrics::CountingMetrics;
        let (store, m) = (MemStore::new(), CountingMetrics::default());
        let l = learn(false);
        for (p, w) in [(1, 11), (2, 12), (3, 13)] {
            assert_eq!(
                Registry::new(3).upsert(&store, p, Some(w), A, &l),
                Ok(Change::Added)
            );
        }
        let moved = Registration::Upsert {
            provider_id: 9,
            webhook_id: Some(11),
            webhook_url: B.to_string(),
        };
        assert_eq!(
            Registry::new(2).apply_counted(&store, &moved, &l, &m),
            Ok(Change::Full)
        );
        assert_eq!(
            stored(&store),
            r#"[{"p":2,"w":12,"u":"https://hooks.example.com/a"},{"p":3,"w":13,"u":"https://hooks.example.com/a"}]"#
        );
        assert_eq!(m.get(Metric::RegistrationsFull), 1);
        assert_eq!(
            m.get(Metric::RegistrationsRemoved),
            1,
            "as a refused move counts it"
        );
        assert_eq!(m.get(Metric::LearnedEndpoints), -1);
    }

    fn config(json_learn: &str) -> Config {
        let json = format!(
            r#"{{"endpoints": [{{"name": "crm", "url": "http://h/", "cluster": "c"}}],
                "retry": {{"maxAttempts": 3, "initialDelayMs": 10}},
                "learn": {{"enabled": true, "cluster": "webhook_egress", "timeoutMs": 7000, {json_learn}}}}}"#
        );
        Config::from_json(json.as_bytes(), &|_| None).unwrap()
    }

    fn learned(provider: u64, target: Target, headers: Vec<(String, String)>) -> Endpoint {
        Endpoint {
            name: format!("learned-{provider}"),
            target,
            provider_ids: Some(vec![provider]),
            channel_types: None,
            delivery_statuses: StatusSet::FINAL,
            timeout_ms: 7000,
            headers,
            retry: RetryPolicy::try_new(
                3,
                Backoff::Exponential {
                    initial_delay_ms: 10,
                    multiplier: 2.0,
                },
                3_600_000,
                0.2,
            )
            .unwrap(),
            max_in_flight: 64,
            circuit: CircuitPolicy {
                failure_threshold: 5,
                open_ms: 30_000,
            },
            rate_limit: None,
            secrets: vec![],
            payload: Payload::Notification,
            await_result_ms: crate::config::DEFAULT_AWAIT_RESULT_MS,
            test_mode: TestMode::Skip,
        }
    }

    #[test]
    fn endpoints_are_built_with_exact_values() {
        let config = config(r#""allowHosts": ["hooks.example.com:8080", "*.partner.example.com"]"#);
        let l = config.learn.clone().unwrap();
        let store = MemStore::new();
        let reg = Registry::new(l.max_learned);
        reg.apply(&store, &upsert(7, B), &l).unwrap();
        reg.apply(
            &store,
            &upsert(1, "http://hooks.example.com:8080/a?b=c"),
            &l,
        )
        .unwrap();
        assert_eq!(
            reg.endpoints(&store, &config),
            Ok(vec![
                learned(
                    1,
                    target("http", "hooks.example.com:8080", "/a?b=c"),
                    vec![]
                ),
                learned(7, target("https", "x.partner.example.com", "/b"), vec![]),
            ])
        );
    }

    #[test]
    fn endpoints_carry_the_original_dst_header_with_an_explicit_port() {
        let config = config(
            r#""allowHosts": ["hooks.example.com", "10.0.0.5", "10.0.0.5:8089"], "allowPrivate": true,
               "originalDstHeader": "x-envoy-original-dst-host""#,
        );
        let l = config.learn.clone().unwrap();
        let store = MemStore::new();
        let reg = Registry::default();
        reg.apply(&store, &upsert(1, "https://hooks.example.com/a"), &l)
            .unwrap();
        reg.apply(&store, &upsert(2, "http://10.0.0.5/x"), &l)
            .unwrap();
        reg.apply(&store, &upsert(3, "http://10.0.0.5:8089/y"), &l)
            .unwrap();
        let header = |v: &str| vec![("x-envoy-original-dst-host".to_string(), v.to_string())];
        assert_eq!(
            reg.endpoints(&store, &config),
            Ok(vec![
                learned(
                    1,
                    target("https", "hooks.example.com", "/a"),
                    header("hooks.example.com:443")
                ),
                learned(2, target("http", "10.0.0.5", "/x"), header("10.0.0.5:80")),
                learned(
                    3,
                    target("http", "10.0.0.5:8089", "/y"),
                    header("10.0.0.5:8089")
                ),
            ])
        );
    }

    #[test]
    fn endpoints_skip_mappings_the_policy_no_longer_allows() {
        let store = MemStore::new();
        let reg = Registry::default();
        let before = config(r#""allowHosts": ["hooks.example.com", "*.partner.example.com"]"#);
        reg.apply(&store, &upsert(1, A), before.learn.as_ref().unwrap())
            .unwrap();
        reg.apply(&store, &upsert(2, B), before.learn.as_ref().unwrap())
            .unwrap();
        let after = config(r#""allowHosts": ["*.partner.example.com"]"#);
        let names: Vec<String> = reg
            .endpoints(&store, &after)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, vec!["learned-2".to_string()]);
    }

    #[test]
    fn a_configured_endpoint_cannot_take_a_learned_name() {
        let json = r#"{"endpoints": [{"name": "learned-9", "url": "http://h/", "cluster": "c"}]}"#;
        let err = Config::from_json(json.as_bytes(), &|_| None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "endpoints[0].name: must not start with \"learned-\": it names learned endpoints"
        );
    }

    #[test]
    fn endpoints_are_bounded_by_capacity_and_empty_without_learn() {
        let config = config(r#""allowHosts": ["hooks.example.com"]"#);
        let l = config.learn.clone().unwrap();
        let store = MemStore::new();
        for p in 1..=3 {
            Registry::new(3).apply(&store, &upsert(p, A), &l).unwrap();
        }
        let names: Vec<String> = Registry::new(2)
            .endpoints(&store, &config)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(
            names,
            vec!["learned-1".to_string(), "learned-2".to_string()]
        );
        let off = Config {
            learn: None,
            ..config
        };
        assert_eq!(Registry::new(3).endpoints(&store, &off), Ok(vec![]));
    }

    #[test]
    fn a_removed_provider_yields_no_endpoint() {
        let config = config(r#""allowHosts": ["hooks.example.com", "*.partner.example.com"]"#);
        let l = config.learn.clone().unwrap();
        let store = MemStore::new();
        let reg = Registry::default();
        reg.upsert(&store, 1, Some(3), A, &l).unwrap();
        reg.upsert(&store, 2, Some(4), B, &l).unwrap();
        reg.remove(&store, 3).unwrap();
        let names: Vec<String> = reg
            .endpoints(&store, &config)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, vec!["learned-2".to_string()]);
    }

    #[test]
    fn version_changes_only_when_the_map_changes() {
        let store = MemStore::new();
        let reg = Registry::default();
        let l = learn(false);
        assert_eq!(reg.version(&store), Ok(None));
        reg.apply(&store, &upsert(1, A), &l).unwrap();
        let v1 = reg.version(&store).unwrap();
        assert!(v1.is_some());
        reg.apply(&store, &upsert(1, A), &l).unwrap();
        reg.apply(&store, &upsert(2, "ftp://x/"), &l).unwrap();
        reg.apply(&store, &Registration::Delete { webhook_id: 5 }, &l)
            .unwrap();
        assert_eq!(reg.version(&store).unwrap(), v1);
        reg.apply(&store, &upsert(1, B), &l).unwrap();
        assert_ne!(reg.version(&store).unwrap(), v1);
    }

    /// A read of the map the host refuses must not be taken for the map: the endpoints it
    /// leaves out would be orphaned, their deliveries dropped, until the map changed again.
    #[test]
    fn a_refused_read_of_the_map_keeps_the_learned_endpoints() {
        /// Refuses reads of the map while `refuse` holds reads to refuse, one per read.
        struct Refusing {
            inner: MemStore,
            refuse: std::cell::RefCell<std::collections::VecDeque<bool>>,
        }
        impl Store for Refusing {
            fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, StoreError> {
                if key == KEY && self.refuse.borrow_mut().pop_front() == Some(true) {
                    return Err(StoreError::Host);
                }
                self.inner.get(key)
            }
            fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), StoreError> {
                self.inner.set(key, value, cas)
            }
        }
        let config = config(r#""allowHosts": ["hooks.example.com"]"#);
        let l = config.learn.clone().unwrap();
        let reg = Registry::new(l.max_learned);
        let store = Refusing {
            inner: MemStore::new(),
            refuse: std::cell::RefCell::new(std::collections::VecDeque::new()),
        };
        reg.apply(&store, &upsert(1, A), &l).unwrap();
        let refuse = |reads: &[bool]| store.refuse.borrow_mut().extend(reads);
        let names = |all: &AllEndpoints| -> Vec<String> {
            all.all.iter().map(|e| e.name.clone()).collect()
        };
        let mut all = AllEndpoints::new(config.endpoints.clone());
        // The version read, then the map's refused: nothing learned to build from yet.
        refuse(&[false, true]);
        all.current(&store, &config);
        let (now, _) = all.current(&store, &config);
        assert_eq!(
            now.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["crm", "learned-1"],
            "built again once the map reads"
        );
        reg.apply(&store, &upsert(2, A), &l).unwrap();
        refuse(&[false, true]);
        let (now, rebuilt) = all.current(&store, &config);
        assert!(!rebuilt);
        assert_eq!(names(&all), ["crm", "learned-1"], "the last list meanwhile");
        assert_eq!(now.len(), 2);
        // Neither read: the last list too, not the configured endpoints alone.
        refuse(&[true]);
        let (now, _) = all.current(&store, &config);
        assert_eq!(now.len(), 2, "{:?}", names(&all));
        let (now, rebuilt) = all.current(&store, &config);
        assert!(rebuilt);
        assert_eq!(
            now.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["crm", "learned-1", "learned-2"]
        );
        let (_, rebuilt) = all.current(&store, &config);
        assert!(!rebuilt, "rebuilt only when the map changed");
    }

    #[test]
    fn an_empty_or_unreadable_value_reads_as_no_mappings() {
        let config = config(r#""allowHosts": ["hooks.example.com"]"#);
        let l = config.learn.clone().unwrap();
        let store = MemStore::new();
        let reg = Registry::default();
        store.set(Registry::key(), b"", None).unwrap();
        assert_eq!(reg.endpoints(&store, &config), Ok(vec![]));
        store.set(Registry::key(), b"{not json", None).unwrap();
        assert_eq!(reg.endpoints(&store, &config), Ok(vec![]));
        assert_eq!(reg.apply(&store, &upsert(1, A), &l), Ok(Change::Added));
        assert_eq!(
            stored(&store),
            r#"[{"p":1,"u":"https://hooks.example.com/a"}]"#
        );
    }

    #[test]
    fn stored_entries_keep_their_format() {
        let entries = vec![
            Entry {
                p: 1,
                w: None,
                u: "https://a/\"q\"".to_string(),
            },
            Entry {
                p: 2,
                w: Some(9),
                u: "https://b/".to_string(),
            },
        ];
        let json = r#"[{"p":1,"u":"https://a/\"q\""},{"p":2,"w":9,"u":"https://b/"}]"#;
        assert_eq!(String::from_utf8(encode(&entries)).unwrap(), json);
        assert_eq!(decode(Some(json.as_bytes())), entries);
        let with_null = r#"[{"p":1,"w":null,"u":"https://a/\"q\"","x":0}]"#;
        assert_eq!(decode(Some(with_null.as_bytes())), entries[..1].to_vec());
        for bad in [
            r#"[{"p":1}]"#,
            r#"[{"p":-1,"u":"x"}]"#,
            r#"{"p":1,"u":"x"}"#,
            "[",
        ] {
            assert_eq!(decode(Some(bad.as_bytes())), vec![], "{bad}");
        }
    }

    /// `learn.rateLimit` is every learned endpoint's own.
    #[test]
    fn learned_endpoints_take_the_learn_blocks_rate_limit() {
        let config = config(
            r#""allowHosts": ["hooks.example.com"], "rateLimit": {"perSecond": 3, "burst": 2}"#,
        );
        let l = config.learn.clone().unwrap();
        let store = MemStore::new();
        let reg = Registry::new(l.max_learned);
        reg.apply(&store, &upsert(1, A), &l).unwrap();
        reg.apply(&store, &upsert(2, A), &l).unwrap();
        let limits: Vec<_> = reg
            .endpoints(&store, &config)
            .unwrap()
            .iter()
            .map(|e| e.rate_limit.map(|r| (r.per_second, r.burst)))
            .collect();
        assert_eq!(limits, [Some((3, 2)), Some((3, 2))]);
    }

    #[test]
    fn learned_defaults_match_a_configured_endpoints_defaults() {
        let config = config(r#""allowHosts": ["hooks.example.com"]"#);
        let configured = &config.endpoints[0];
        assert_eq!(configured.max_in_flight, MAX_IN_FLIGHT);
        assert_eq!(configured.circuit, CIRCUIT);
        assert_eq!(DEFAULT_CAPACITY, config.learn.unwrap().max_learned);
    }
}
