//! The filter's configuration: the JSON Envoy hands us, read strictly by hand and compiled into a
//! validated form the rest of the filter can use without re-checking.
//!
//! Every mistake is reported with the JSON path of the field at fault, because the only place an
//! operator sees it is one line in Envoy's log when the filter refuses to start.

use std::fmt::{self, Write as _};

use crate::delivery::retry::{
    Backoff, RetryError, RetryPolicy, DEFAULT_INITIAL_DELAY_MS, DEFAULT_JITTER,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_DELAY_MS, DEFAULT_MULTIPLIER,
};
use crate::events::{endpoint_key, repeats_a_key};
use crate::json::{self, Value};
use crate::osmox::{DeliveryStatus, StatusSet, TestMode};
use crate::payload::Payload;
use crate::signing::Secret;

/// Svix's: a receiver that does its work before answering gets 15 s before the attempt
/// counts as failed and the event goes again.
const DEFAULT_TIMEOUT_MS: u64 = 15_000;
/// The longest `timeoutMs`: no claim lapses further ahead than it (and a margin) from when it
/// was made.
pub const MAX_TIMEOUT_MS: u64 = 600_000;
const DEFAULT_MAX_IN_FLIGHT: u64 = 64;
const DEFAULT_FAILURE_THRESHOLD: u64 = 5;
const DEFAULT_OPEN_MS: u64 = 30_000;
/// A bound on the bucket, not a target: far beyond what one Envoy sends one endpoint.
const MAX_RATE: u64 = 100_000;
/// How long a SUCCESS seen without its result waits for a view that shows it: OsmoX saves
/// the result about 100 ms after the state (measured on v8.5), so a client still polling
/// shows it well within this; one that stopped at SUCCESS costs this much delay.
pub const DEFAULT_AWAIT_RESULT_MS: u64 = 1_000;
/// The longest a SUCCESS may wait for its result; the dedupe memory keeps one that long.
pub const MAX_AWAIT_RESULT_MS: u64 = 60_000;
const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;
/// GraphQL request bodies are small; a larger one is not read. It counts against
/// `watch.maxBufferedBytes` with its answer.
pub const MAX_GRAPHQL_REQUEST_BYTES: usize = 64 * 1024;
/// Sixteen bodies at the default size, or thousands of ordinary polls, in flight on one
/// worker; with the largest bound (512 MiB), the biggest body (64 MiB) and its parse, a VM
/// stays well under the 1 GiB Envoy lets it have.
const DEFAULT_MAX_BUFFERED_BYTES: u64 = 128 * 1024 * 1024;
const DEFAULT_MAX_PENDING: u64 = 10_000;
/// The most pending deliveries a configuration may keep: the ledger's slots.
pub const MAX_PENDING_LIMIT: u32 = 1_000_000;
const DEFAULT_MAX_REMEMBERED: u64 = 65_536;
const DEFAULT_TICK_MS: u64 = 100;
/// The slowest `tickMs` allowed (every build has had this bound).
pub const MAX_TICK_MS: u64 = 60_000;
const MAX_NAME_LEN: usize = 64;
const MAX_CHANNEL_TYPE: u64 = 12;
const DEFAULT_MAX_LEARNED: u64 = 256;
const MAX_LEARNED: u64 = 10_000;

/// Headers the filter sets itself (or, for `content-encoding`, leaves out: the body goes
/// unencoded, and a receiver told otherwise fails to decode every webhook), and hop-by-hop
/// headers: letting configuration set them would corrupt the request or forge the signature
/// headers.
const RESERVED_HEADERS: [&str; 13] = [
    "content-type",
    "content-encoding",
    "content-length",
    "host",
    "user-agent",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

// ---------------------------------------------------------------------------------------------
// Compiled form

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub endpoints: Vec<Endpoint>,
    pub watch: Watch,
    pub retry: RetryPolicy,
    pub limits: Limits,
    pub dead_letter: Option<DeadLetter>,
    /// `None` when learning is disabled.
    pub learn: Option<Learn>,
    /// The root contexts' tick period.
    pub tick_ms: u64,
    pub role: Role,
}

/// What this plugin's VMs do. `Both` serves the HTTP filter alone (Istio's WasmPlugin).
/// With a bootstrap singleton (`envoy.bootstrap.wasm`, `singleton: true`, the same `vm_id`),
/// the HTTP filter runs as `Observer` and the singleton as `Sender`, so all sending, retries
/// and ticks run in one root context on the main thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Both,
    Observer,
    Sender,
}

impl Role {
    const ALL: [Role; 3] = [Role::Both, Role::Observer, Role::Sender];

    /// As the configuration spells it.
    fn name(self) -> &'static str {
        match self {
            Role::Both => "both",
            Role::Observer => "observer",
            Role::Sender => "sender",
        }
    }

    pub fn observes(self) -> bool {
        self != Role::Sender
    }

    pub fn sends(self) -> bool {
        self != Role::Observer
    }
}

/// As the configuration spells it: a log line that quotes a role (`role "observer": no
/// sender ...`) must quote a value the configuration takes, and `"Observer"` is refused.
impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub name: String,
    pub target: Target,
    /// `None` matches any provider; otherwise sorted and deduplicated.
    pub provider_ids: Option<Vec<u64>>,
    /// `None` matches any channel type; otherwise sorted and deduplicated.
    pub channel_types: Option<Vec<u64>>,
    pub delivery_statuses: StatusSet,
    pub timeout_ms: u64,
    /// Lowercase names, sorted by name.
    pub headers: Vec<(String, String)>,
    pub retry: RetryPolicy,
    pub max_in_flight: u32,
    pub circuit: CircuitPolicy,
    /// `None`: as fast as `maxInFlight` and the receiver allow.
    pub rate_limit: Option<RateLimit>,
    /// Signing keys in order `secret`, `secrets...`, `secretEnv`; empty sends unsigned webhooks.
    pub secrets: Vec<Secret>,
    pub payload: Payload,
    /// How long a SUCCESS seen before OsmoX saved its result waits for a view that shows it
    /// (0: sent at once, as seen).
    pub await_result_ms: u64,
    pub test_mode: TestMode,
}

/// A token bucket over all workers together: `burst` attempts may go at once, then one every
/// `1 / per_second` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitPolicy {
    pub failure_threshold: u32,
    pub open_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub graphql_paths: Vec<String>,
    pub rest_path_prefixes: Vec<String>,
    pub max_body_bytes: usize,
    /// What one VM may hold of watched bodies at once, across all its streams.
    pub max_buffered_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_pending: u32,
    pub max_remembered: u32,
}

/// Where an HTTP call goes: proxy-wasm dispatches to a cluster, with the pseudo headers taken
/// from the configured URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub cluster: String,
    pub authority: String,
    /// Path and query, e.g. `/hooks/osmox?src=edge`.
    pub path: String,
    pub scheme: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub target: Target,
    pub timeout_ms: u64,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learn {
    pub cluster: String,
    pub allow_hosts: Vec<HostPattern>,
    pub allow_private: bool,
    pub timeout_ms: u64,
    /// For an ORIGINAL_DST egress cluster: the header (lowercase) that carries the learned
    /// URL's `host:port` to it, since a shared cluster cannot take it from its own config.
    pub original_dst_header: Option<String>,
    /// How many providers' webhooks are remembered at most; bounds shared data.
    pub max_learned: usize,
    /// Each learned endpoint's own bucket: a partner's receiver is no better protected
    /// than a configured one.
    pub rate_limit: Option<RateLimit>,
}

impl Learn {
    fn fingerprint(&self, f: &mut Fingerprint) {
        f.text(&self.cluster);
        for h in &self.allow_hosts {
            h.fingerprint(f);
        }
        f.number(u64::from(self.allow_private));
        f.number(self.timeout_ms);
        f.text(self.original_dst_header.as_deref().unwrap_or(""));
        f.number(self.max_learned as u64);
        f.rate(self.rate_limit);
    }
}

/// An allowed host for learned webhook URLs: an exact name or `*.suffix` (at least one more
/// label, so `*.example.com` never matches `example.com` itself), with the ports it may be
/// reached on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lowercase; for a wildcard, the part after `*.`.
    host: String,
    wildcard: bool,
    ports: Ports,
}

/// The ports a host pattern allows. Any client that may register an OsmoX webhook chooses
/// the URL: an allowed host on any port reached every service there (a review had a learned
/// webhook POST to Envoy's own admin port and change its log levels), so a pattern without a
/// port allows only the URL scheme's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    /// 80 for `http`, 443 for `https`.
    SchemeDefault,
    One(u16),
    /// `host:*`: every port, for operators who mean it.
    Any,
}

impl HostPattern {
    pub fn parse(pattern: &str) -> Result<HostPattern, String> {
        let lower = pattern.to_ascii_lowercase();
        let (name, ports) = match lower.rsplit_once(':') {
            None => (lower.as_str(), Some(Ports::SchemeDefault)),
            Some((name, "*")) => (name, Some(Ports::Any)),
            Some((name, port)) => (
                name,
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0 && port.bytes().all(|b| b.is_ascii_digit()))
                    .map(Ports::One),
            ),
        };
        let (host, wildcard) = match name.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (name, false),
        };
        match ports {
            Some(ports) if is_hostname(host) => Ok(HostPattern {
                host: host.to_string(),
                wildcard,
                ports,
            }),
            _ => Err(format!(
                "invalid host pattern {}: expected a hostname or *.suffix, then :port or :* \
                 for ports other than the scheme's own (80 for http, 443 for https)",
                Quoted(pattern)
            )),
        }
    }

    /// Whether a URL of `scheme` may go to `host` (without its port; compared
    /// case-insensitively) on `port`.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let port_allowed = match self.ports {
            Ports::SchemeDefault => port == if scheme == "https" { 443 } else { 80 },
            Ports::One(p) => port == p,
            Ports::Any => true,
        };
        port_allowed && self.matches(host)
    }

    fn matches(&self, host: &str) -> bool {
        if !self.wildcard {
            return host.eq_ignore_ascii_case(&self.host);
        }
        let Some(label_len) = host.len().checked_sub(self.host.len() + 1) else {
            return false;
        };
        if label_len == 0 {
            return false;
        }
        match host
            .get(label_len..)
            .and_then(|tail| tail.strip_prefix('.'))
        {
            Some(suffix) => suffix.eq_ignore_ascii_case(&self.host),
            None => false,
        }
    }

    /// What `Config::delivery_fingerprint` tells patterns apart by.
    fn fingerprint(&self, f: &mut Fingerprint) {
        f.text(&self.host);
        f.number(u64::from(self.wildcard));
        f.number(match self.ports {
            Ports::SchemeDefault => 0,
            Ports::One(p) => u64::from(p),
            Ports::Any => u64::MAX,
        });
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.host)?;
        match self.ports {
            Ports::SchemeDefault => Ok(()),
            Ports::One(p) => write!(f, ":{p}"),
            Ports::Any => f.write_str(":*"),
        }
    }
}

/// A string in double quotes for messages, escaped as `{:?}` escapes ASCII (`\"`, `\\`,
/// `\n`, `\u{1b}`, ...); other characters are written as they are. Written by hand because
/// `{:?}` links Unicode tables into the wasm module.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", Escaped(self.0))
    }
}

/// `Quoted` without the quotes: the escaped text alone, for a message that marks it
/// otherwise (an unknown key, in backticks). A message is one line of Envoy's log, which a
/// newline or a terminal sequence taken from the configuration must not break or forge.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\0' => f.write_str("\\0")?,
                c if c.is_ascii_control() => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

impl Target {
    pub fn from_url(cluster: &str, url: &str) -> Result<Target, String> {
        if cluster.is_empty() {
            return Err("cluster must not be empty".to_string());
        }
        let (scheme, authority, path) = parse_url(url)?;
        Ok(Target {
            cluster: cluster.to_string(),
            authority,
            path,
            scheme,
        })
    }
}

/// `url.split_once("://")`. Searching for a `&str` (or testing a `&str` for a `char`) links
/// core's two-way string searcher, 2.4 KB of module that these few cold checks alone used, so
/// the URL and header checks here and in `learn` look for bytes instead.
pub(crate) fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let at = url.as_bytes().windows(3).position(|w| w == b"://")?;
    Some((url.get(..at)?, url.get(at + 3..)?))
}

/// Split an absolute `http(s)` URL into `(scheme, authority, path)` for the `:scheme`,
/// `:authority` and `:path` pseudo headers. Hand-rolled to keep the wasm module small; it
/// refuses what those headers cannot carry (fragments) or should not (userinfo credentials).
pub fn parse_url(url: &str) -> Result<(String, String, String), String> {
    if url.is_empty() {
        return Err("must not be empty".to_string());
    }
    if !url.is_ascii() {
        return Err("must be ASCII (percent-encode other characters)".to_string());
    }
    if url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("must not contain spaces or control characters".to_string());
    }
    let (scheme, rest) = split_scheme(url)
        .ok_or_else(|| "must be an absolute http:// or https:// URL".to_string())?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "scheme must be http or https, got {}",
            Quoted(&scheme)
        ));
    }
    if rest.as_bytes().contains(&b'#') {
        return Err("fragments (#...) are not allowed".to_string());
    }
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = match (rest.get(..split), rest.get(split..)) {
        (Some(a), Some(t)) => (a, t),
        _ => return Err("malformed URL".to_string()),
    };
    if authority.as_bytes().contains(&b'@') {
        return Err("userinfo (user@) is not allowed".to_string());
    }
    check_authority(authority)?;
    let path = if tail.is_empty() {
        "/".to_string()
    } else if tail.starts_with('?') {
        format!("/{tail}")
    } else {
        tail.to_string()
    };
    Ok((scheme, authority.to_ascii_lowercase(), path))
}

fn check_authority(authority: &str) -> Result<(), String> {
    if authority.is_empty() {
        return Err("missing host".to_string());
    }
    let (host_ok, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (ip, after) = bracketed
            .split_once(']')
            .ok_or_else(|| "unterminated [IPv6] host".to_string())?;
        let ok = !ip.is_empty()
            && ip
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| "unexpected characters after [IPv6] host".to_string())?,
            ),
        };
        (ok, port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        (ok, port)
    };
    if !host_ok {
        return Err("invalid host".to_string());
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p != 0);
        if !valid {
            return Err("invalid port".to_string());
        }
    }
    Ok(())
}

/// A DNS name: dot-separated labels of letters, digits and `-`.
fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl Config {
    /// Parse and validate the filter's `configuration`. `env` reads environment variables
    /// (for `secretEnv`); it is injected so tests need not touch the process environment.
    pub fn from_json(
        json: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        if json.iter().all(u8::is_ascii_whitespace) {
            return Err(ConfigError::Parse(
                "empty: give the filter its JSON configuration (a StringValue)".into(),
            ));
        }
        let arena = json::Arena::new();
        let root = json::parse(json, &arena).map_err(|e| ConfigError::Parse(e.to_string()))?;
        RawConfig::read(&root)?.compile(env)
    }

    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// Tells apart configurations whose sender delivers differently (endpoints with their
    /// URLs, headers, policies and keys; the dead letter; learning, and the top-level retry
    /// policy learned endpoints use), so a bootstrap singleton sender, which an LDS update
    /// never reaches, can notice that the observers' configuration moved on. What only the
    /// observers use (which events an endpoint takes, its payload form) is left out. Written
    /// out field by field, not through `Debug`, which would pull float formatting into the
    /// module.
    pub fn delivery_fingerprint(&self) -> u64 {
        let mut f = Fingerprint::default();
        for e in &self.endpoints {
            f.text(&e.name);
            f.target(&e.target);
            f.number(e.timeout_ms);
            f.headers(&e.headers);
            f.retry(&e.retry);
            f.number(u64::from(e.max_in_flight));
            f.number(u64::from(e.circuit.failure_threshold));
            f.number(e.circuit.open_ms);
            f.rate(e.rate_limit);
            f.number(e.secrets.len() as u64);
            e.secrets.iter().for_each(|k| f.bytes(&k.digest()));
        }
        if let Some(dl) = &self.dead_letter {
            f.target(&dl.target);
            f.number(dl.timeout_ms);
            f.headers(&dl.headers);
        }
        if let Some(learn) = &self.learn {
            learn.fingerprint(&mut f);
        }
        f.retry(&self.retry);
        crate::events::fnv1a64(&[&f.0])
    }

    /// The `delivery_fingerprint` as observers publish it for a singleton sender: tagged with
    /// how it was computed, since builds that compute it differently share one prefix of
    /// shared data (a field added to it is no change of a stored layout).
    pub fn published_fingerprint(&self) -> String {
        format!("{FINGERPRINT_FORMAT}:{}", self.delivery_fingerprint())
    }

    /// The fingerprint in a value `published_fingerprint` wrote, if this build computes it
    /// the same way: another build's print (or an older build's bare number) tells nothing
    /// about drift, and taking it for one warned of a drift that was not there.
    pub fn read_published_fingerprint(value: &[u8]) -> Option<u64> {
        let text = std::str::from_utf8(value).ok()?;
        let (format, print) = text.split_once(':')?;
        (format.parse::<u32>().ok()? == FINGERPRINT_FORMAT).then_some(())?;
        print.parse().ok()
    }

    /// Tells apart learning policies: configurations whose policies differ may build different
    /// endpoints from the one shared map of learned registrations. `None` without learning.
    pub fn learn_fingerprint(&self) -> Option<u64> {
        let learn = self.learn.as_ref()?;
        let mut f = Fingerprint::default();
        learn.fingerprint(&mut f);
        Some(crate::events::fnv1a64(&[&f.0]))
    }
}

/// A singleton sender's watch on the observers' published `delivery_fingerprint`: whether a
/// look at it warrants the warning that they deliver differently. Each drift is said once,
/// not at every look; one that comes back after the observers were in step again is a new
/// drift.
#[derive(Debug, Default)]
pub struct DriftWatch {
    /// The observers' fingerprint last warned about.
    warned: Option<u64>,
}

impl DriftWatch {
    /// Whether to warn, the singleton's own fingerprint being `ours` and the observers'
    /// `theirs` (`None`: nothing this build can read).
    pub fn warns(&mut self, ours: u64, theirs: Option<u64>) -> bool {
        let Some(theirs) = theirs else {
            return false;
        };
        if theirs == ours {
            // Back in step: a later drift, even to a print warned about before, is new.
            self.warned = None;
            return false;
        }
        if self.warned == Some(theirs) {
            return false;
        }
        self.warned = Some(theirs);
        true
    }
}

/// How `delivery_fingerprint` is computed; bump it whenever
/// `the_delivery_fingerprint_is_pinned` has to change.
const FINGERPRINT_FORMAT: u32 = 1;

/// The bytes `delivery_fingerprint` hashes: each field length-prefixed or fixed-width, so
/// that no two configurations write the same sequence.
#[derive(Default)]
struct Fingerprint(Vec<u8>);

impl Fingerprint {
    fn bytes(&mut self, b: &[u8]) {
        self.number(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn text(&mut self, t: &str) {
        self.bytes(t.as_bytes());
    }

    fn number(&mut self, n: u64) {
        self.0.extend_from_slice(&n.to_le_bytes());
    }

    fn target(&mut self, t: &Target) {
        for part in [&t.cluster, &t.scheme, &t.authority, &t.path] {
            self.text(part);
        }
    }

    fn headers(&mut self, headers: &[(String, String)]) {
        self.number(headers.len() as u64);
        for (name, value) in headers {
            self.text(name);
            self.text(value);
        }
    }

    /// No limit writes what no limit can: a rate is at least 1.
    fn rate(&mut self, limit: Option<RateLimit>) {
        let (per_second, burst) = limit.map_or((0, 0), |r| (r.per_second, r.burst));
        self.number(u64::from(per_second));
        self.number(u64::from(burst));
    }

    fn retry(&mut self, r: &RetryPolicy) {
        self.number(u64::from(r.max_attempts()));
        self.number(r.max_delay_ms());
        self.number(r.jitter().to_bits());
        match r.backoff() {
            Backoff::Exponential {
                initial_delay_ms,
                multiplier,
            } => {
                self.number(0);
                self.number(*initial_delay_ms);
                self.number(multiplier.to_bits());
            }
            Backoff::Schedule(delays) => {
                self.number(1);
                self.number(delays.len() as u64);
                delays.iter().for_each(|&d| self.number(d));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why the configuration was refused. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The JSON is malformed, or is not an object: there is no field to name.
    Parse(String),
    /// A value is out of range or inconsistent; `path` is the field, e.g. `endpoints[0].url`.
    Invalid { path: String, message: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Parse(message) => write!(f, "configuration: {message}"),
            ConfigError::Invalid { path, message } => write!(f, "{path}: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {}

// The small readers and error builders below are `#[inline(never)]`: configuration is cold, and
// each was inlined at dozens of call sites (6.8 KB of module, raw and after `wasm-opt -Oz`).
#[inline(never)]
fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

#[inline(never)]
fn ranged(
    path: &str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let v = value.unwrap_or(default);
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(path, format!("must be between {min} and {max}")))
    }
}

#[inline(never)]
fn ranged_u32(
    path: &str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u32, ConfigError> {
    let v = ranged(path, value, default, min, max)?;
    u32::try_from(v).map_err(|_| invalid(path, format!("must be between {min} and {max}")))
}

fn timeout(path: &str, value: Option<u64>) -> Result<u64, ConfigError> {
    ranged(path, value, DEFAULT_TIMEOUT_MS, 1, MAX_TIMEOUT_MS)
}

// ---------------------------------------------------------------------------------------------
// Raw form: the JSON tree, read by hand
//
// Read by hand from `json`'s tree rather than with serde, which made up a large part of the
// wasm module. Objects are strict: an unknown or repeated key is refused (the tree keeps every
// member, so a field given twice is seen rather than silently taking the last value), and, as
// with serde's `Option`, a `null` field counts as absent. Type errors name the field's path and
// the kind of value it holds, never the value, so a secret put in the wrong place is not
// echoed.

/// What a value is, for type errors. Numbers are told apart as serde_json tells them, except
/// that an integer too large for an `i64` or `u64` is named as one, not as a float.
fn kind(value: &Value<'_>) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) if value.as_u64().is_some() => "an integer",
        Value::Number(_) if value.as_i64().is_some() => "a negative integer",
        // serde_json reads `-0` as a float.
        Value::Number(raw) if *raw != "-0" && !raw.contains(['.', 'e', 'E']) => {
            "an integer out of range"
        }
        Value::Number(_) => "a floating-point number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
        Value::Deep(raw) if raw.starts_with('[') => "an array",
        // Rows come only from `json::parse_rows`, and only objects are rows.
        Value::Deep(_) | Value::Row(_) => "an object",
    }
}

#[inline(never)]
fn type_error(path: &str, expected: &str, got: &Value<'_>) -> ConfigError {
    let message = format!("expected {expected}, got {}", kind(got));
    if path.is_empty() {
        ConfigError::Parse(message)
    } else {
        invalid(path, message)
    }
}

/// The path of element `j` of the array at `path`.
#[inline(never)]
fn index(path: &str, j: usize) -> String {
    format!("{path}[{j}]")
}

/// `key`'s path inside the object at `base` (`""` for the top level).
#[inline(never)]
fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

/// The non-null entries of the object at `path`, after refusing unknown and repeated keys.
/// Each key comes back as its name in `known`.
fn fields<'a, 'j>(
    path: &str,
    node: &'a Value<'j>,
    known: &[&'static str],
) -> Result<Vec<(&'static str, &'a Value<'j>)>, ConfigError> {
    let Value::Object(obj) = node else {
        return Err(type_error(path, "an object", node));
    };
    let mut seen: Vec<&'static str> = Vec::with_capacity(obj.members().len());
    let mut out = Vec::with_capacity(obj.members().len());
    for (key, value) in obj.members() {
        let Some(name) = known.iter().copied().find(|name| key.is(name)) else {
            let mut expected = String::new();
            for (j, name) in known.iter().enumerate() {
                expected.push_str(if j == 0 { "`" } else { ", `" });
                expected.push_str(name);
                expected.push('`');
            }
            let key = Escaped(&key.text()).to_string();
            return Err(invalid(
                join(path, &key),
                format!("unknown field, expected one of {expected}"),
            ));
        };
        if seen.contains(&name) {
            return Err(invalid(join(path, name), "given more than once"));
        }
        seen.push(name);
        if !matches!(value, Value::Null) {
            out.push((name, value));
        }
    }
    Ok(out)
}

#[inline(never)]
fn uint(path: &str, node: &Value<'_>) -> Result<u64, ConfigError> {
    node.as_u64()
        .ok_or_else(|| type_error(path, "a non-negative integer", node))
}

#[inline(never)]
fn number(path: &str, node: &Value<'_>) -> Result<f64, ConfigError> {
    node.as_f64()
        .ok_or_else(|| type_error(path, "a number", node))
}

#[inline(never)]
fn boolean(path: &str, node: &Value<'_>) -> Result<bool, ConfigError> {
    match node {
        Value::Bool(v) => Ok(*v),
        other => Err(type_error(path, "a boolean", other)),
    }
}

#[inline(never)]
fn string(path: &str, node: &Value<'_>) -> Result<String, ConfigError> {
    match node {
        Value::String(v) => Ok(v.text().into_owned()),
        other => Err(type_error(path, "a string", other)),
    }
}

/// Each element of the array at `path`, read by `item` with its own path.
/// A loop rather than `collect::<Result<Vec<_>, _>>()`, whose adapter took more module
/// per item type.
fn list<T>(
    path: &str,
    node: &Value<'_>,
    expected: &str,
    item: impl Fn(&str, &Value<'_>) -> Result<T, ConfigError>,
) -> Result<Vec<T>, ConfigError> {
    let Value::Array(items) = node else {
        return Err(type_error(path, expected, node));
    };
    let mut out = Vec::with_capacity(items.len());
    for (j, n) in items.iter().enumerate() {
        out.push(item(&index(path, j), n)?);
    }
    Ok(out)
}

/// An object of strings, as pairs sorted by name; a repeated name is refused. Values (often
/// credentials) are never put in messages.
///
/// A sorted `Vec` rather than a `BTreeMap`: the map's code was the module's only use of one
/// (about 4 KB); these objects hold a few headers, so the linear search for a repeat is cheap.
fn string_map(path: &str, node: &Value<'_>) -> Result<Vec<(String, String)>, ConfigError> {
    let Value::Object(obj) = node else {
        return Err(type_error(path, "an object of strings", node));
    };
    let mut out: Vec<(String, String)> = Vec::with_capacity(obj.members().len());
    for (key, value) in obj.members() {
        let key = key.text();
        let p = format!("{path}[{}]", Quoted(&key));
        let value = string(&p, value)?;
        if out.iter().any(|(k, _)| *k == key) {
            return Err(invalid(p, "given twice"));
        }
        out.push((key.into_owned(), value));
    }
    crate::heapsort::sort_by(&mut out, |a, b| a.0 < b.0);
    Ok(out)
}

#[derive(Default)]
struct RawConfig {
    endpoints: Option<Vec<RawEndpoint>>,
    watch: Option<RawWatch>,
    retry: Option<RawRetry>,
    limits: Option<RawLimits>,
    dead_letter: Option<RawDeadLetter>,
    learn: Option<RawLearn>,
    tick_ms: Option<u64>,
    role: Option<String>,
}

impl RawConfig {
    fn read(node: &Value<'_>) -> Result<RawConfig, ConfigError> {
        const KNOWN: &[&str] = &[
            "endpoints",
            "watch",
            "retry",
            "limits",
            "deadLetter",
            "learn",
            "tickMs",
            "role",
        ];
        let mut raw = RawConfig::default();
        for (key, v) in fields("", node, KNOWN)? {
            match key {
                "endpoints" => {
                    raw.endpoints = Some(list(key, v, "an array of endpoints", RawEndpoint::read)?);
                }
                "watch" => raw.watch = Some(RawWatch::read(key, v)?),
                "retry" => raw.retry = Some(RawRetry::read(key, v)?),
                "limits" => raw.limits = Some(RawLimits::read(key, v)?),
                "deadLetter" => raw.dead_letter = Some(RawDeadLetter::read(key, v)?),
                "learn" => raw.learn = Some(RawLearn::read(key, v)?),
                "tickMs" => raw.tick_ms = Some(uint(key, v)?),
                "role" => raw.role = Some(string(key, v)?),
                _ => {}
            }
        }
        Ok(raw)
    }
}

// No Debug on raw structs: they hold secrets in the clear.
#[derive(Default)]
struct RawEndpoint {
    name: Option<String>,
    url: Option<String>,
    cluster: Option<String>,
    provider_ids: Option<Vec<u64>>,
    channel_types: Option<Vec<u64>>,
    delivery_statuses: Option<Vec<RawStatus>>,
    timeout_ms: Option<u64>,
    headers: Option<Vec<(String, String)>>,
    retry: Option<RawRetry>,
    max_in_flight: Option<u64>,
    circuit_breaker: Option<RawCircuit>,
    rate_limit: Option<RawRateLimit>,
    secret: Option<String>,
    secrets: Option<Vec<String>>,
    secret_env: Option<String>,
    payload: Option<String>,
    await_result_ms: Option<u64>,
    test_mode: Option<String>,
}

impl RawEndpoint {
    fn read(path: &str, node: &Value<'_>) -> Result<RawEndpoint, ConfigError> {
        const KNOWN: &[&str] = &[
            "name",
            "url",
            "cluster",
            "providerIds",
            "channelTypes",
            "deliveryStatuses",
            "timeoutMs",
            "headers",
            "retry",
            "maxInFlight",
            "circuitBreaker",
            "rateLimit",
            "secret",
            "secrets",
            "secretEnv",
            "payload",
            "awaitResultMs",
            "testMode",
        ];
        const IDS: &str = "an array of non-negative integers";
        // Elsewhere null means absent; here that would turn a secret a template failed to
        // fill in into unsigned webhooks, or a filter into one that takes every provider's
        // (or channel's) notifications, silently.
        if let Value::Object(obj) = node {
            for (key, why) in [
                ("secret", "is null; omit it to send unsigned webhooks"),
                ("secrets", "is null; omit it to send unsigned webhooks"),
                ("secretEnv", "is null; omit it to send unsigned webhooks"),
                ("providerIds", "is null; omit it to match any"),
                ("channelTypes", "is null; omit it to match any"),
            ] {
                if matches!(obj.get(key), Some(Value::Null)) {
                    return Err(invalid(join(path, key), why));
                }
            }
        }
        let mut raw = RawEndpoint::default();
        for (key, v) in fields(path, node, KNOWN)? {
            let p = &join(path, key);
            match key {
                "name" => raw.name = Some(string(p, v)?),
                "url" => raw.url = Some(string(p, v)?),
                "cluster" => raw.cluster = Some(string(p, v)?),
                "providerIds" => raw.provider_ids = Some(list(p, v, IDS, uint)?),
                "channelTypes" => raw.channel_types = Some(list(p, v, IDS, uint)?),
                "deliveryStatuses" => {
                    raw.delivery_statuses = Some(list(
                        p,
                        v,
                        "an array of delivery statuses",
                        RawStatus::read,
                    )?);
                }
                "timeoutMs" => raw.timeout_ms = Some(uint(p, v)?),
                "headers" => raw.headers = Some(string_map(p, v)?),
                "retry" => raw.retry = Some(RawRetry::read(p, v)?),
                "maxInFlight" => raw.max_in_flight = Some(uint(p, v)?),
                "circuitBreaker" => raw.circuit_breaker = Some(RawCircuit::read(p, v)?),
                "rateLimit" => raw.rate_limit = Some(RawRateLimit::read(p, v)?),
                "secret" => raw.secret = Some(secret(p, v)?),
                "secrets" => {
                    raw.secrets = Some(list(p, v, "an array of secret strings", secret)?);
                }
                "secretEnv" => raw.secret_env = Some(string(p, v)?),
                "payload" => raw.payload = Some(string(p, v)?),
                "awaitResultMs" => raw.await_result_ms = Some(uint(p, v)?),
                "testMode" => raw.test_mode = Some(string(p, v)?),
                _ => {}
            }
        }
        Ok(raw)
    }
}

fn secret(path: &str, node: &Value<'_>) -> Result<String, ConfigError> {
    match node {
        Value::String(v) => Ok(v.text().into_owned()),
        other => Err(type_error(path, "a secret string", other)),
    }
}

#[derive(Default)]
struct RawRetry {
    max_attempts: Option<u64>,
    initial_delay_ms: Option<u64>,
    multiplier: Option<f64>,
    max_delay_ms: Option<u64>,
    jitter: Option<f64>,
    schedule: Option<Vec<u64>>,
}

impl RawRetry {
    fn read(path: &str, node: &Value<'_>) -> Result<RawRetry, ConfigError> {
        const KNOWN: &[&str] = &[
            "maxAttempts",
            "initialDelayMs",
            "multiplier",
            "maxDelayMs",
            "jitter",
            "schedule",
        ];
        let mut raw = RawRetry::default();
        for (key, v) in fields(path, node, KNOWN)? {
            let p = &join(path, key);
            match key {
                "maxAttempts" => raw.max_attempts = Some(uint(p, v)?),
                "initialDelayMs" => raw.initial_delay_ms = Some(uint(p, v)?),
                "multiplier" => raw.multiplier = Some(number(p, v)?),
                "maxDelayMs" => raw.max_delay_ms = Some(uint(p, v)?),
                "jitter" => raw.jitter = Some(number(p, v)?),
                "schedule" => {
                    raw.schedule = Some(list(p, v, "an array of non-negative integers", uint)?);
                }
                _ => {}
            }
        }
        Ok(raw)
    }
}

#[derive(Default)]
struct RawRateLimit {
    per_second: Option<u64>,
    burst: Option<u64>,
}

impl RawRateLimit {
    fn read(path: &str, node: &Value<'_>) -> Result<RawRateLimit, ConfigError> {
        let mut raw = RawRateLimit::default();
        for (key, v) in fields(path, node, &["perSecond", "burst"])? {
            let p = &join(path, key);
            match key {
                "perSecond" => raw.per_second = Some(uint(p, v)?),
                "burst" => raw.burst = Some(uint(p, v)?),
                _ => {}
            }
        }
        Ok(raw)
    }

    /// A bucket as deep as a second's worth unless told otherwise: "N a second" then holds
    /// over any second that follows a quiet one.
    fn compile(self, path: &str) -> Result<RateLimit, ConfigError> {
        let per_second_path = join(path, "perSecond");
        let Some(per_second) = self.per_second else {
            return Err(invalid(per_second_path, "is required"));
        };
        let per_second = ranged_u32(&per_second_path, Some(per_second), 0, 1, MAX_RATE)?;
        let burst = ranged_u32(
            &join(path, "burst"),
            self.burst,
            per_second.into(),
            1,
            MAX_RATE,
        )?;
        Ok(RateLimit { per_second, burst })
    }
}

#[derive(Default)]
struct RawCircuit {
    failure_threshold: Option<u64>,
    open_ms: Option<u64>,
}

impl RawCircuit {
    fn read(path: &str, node: &Value<'_>) -> Result<RawCircuit, ConfigError> {
        let mut raw = RawCircuit::default();
        for (key, v) in fields(path, node, &["failureThreshold", "openMs"])? {
            let p = &join(path, key);
            match key {
                "failureThreshold" => raw.failure_threshold = Some(uint(p, v)?),
                "openMs" => raw.open_ms = Some(uint(p, v)?),
                _ => {}
            }
        }
        Ok(raw)
    }
}

#[derive(Default)]
struct RawWatch {
    graphql_paths: Option<Vec<String>>,
    rest_path_prefixes: Option<Vec<String>>,
    max_body_bytes: Option<u64>,
    max_buffered_bytes: Option<u64>,
}

impl RawWatch {
    fn read(path: &str, node: &Value<'_>) -> Result<RawWatch, ConfigError> {
        const KNOWN: &[&str] = &[
            "graphqlPaths",
            "restPathPrefixes",
            "maxBodyBytes",
            "maxBufferedBytes",
        ];
        const PATHS: &str = "an array of strings";
        let mut raw = RawWatch::default();
        for (key, v) in fields(path, node, KNOWN)? {
            let p = &join(path, key);
            match key {
                "graphqlPaths" => raw.graphql_paths = Some(list(p, v, PATHS, string)?),
                "restPathPrefixes" => raw.rest_path_prefixes = Some(list(p, v, PATHS, string)?),
                "maxBodyBytes" => raw.max_body_bytes = Some(uint(p, v)?),
                "maxBufferedBytes" => raw.max_buffered_bytes = Some(uint(p, v)?),
                _ => {}
            }
        }
        Ok(raw)
    }
}

#[derive(Default)]
struct RawLimits {
    max_pending: Option<u64>,
    max_remembered: Option<u64>,
}

impl RawLimits {
    fn read(path: &str, node: &Value<'_>) -> Result<RawLimits, ConfigError> {
        let mut raw = RawLimits::default();
        for (key, v) in fields(path, node, &["maxPending", "maxRemembered"])? {
            let p = &join(path, key);
            match key {
                "maxPending" => raw.max_pending = Some(uint(p, v)?),
                "maxRemembered" => raw.max_remembered = Some(uint(p, v)?),
                _ => {}
            }
        }
        Ok(raw)
    }
}

#[derive(Default)]
struct RawDeadLetter {
    url: Option<String>,
    cluster: Option<String>,
    timeout_ms: Option<u64>,
    headers: Option<Vec<(String, String)>>,
}

impl RawDeadLetter {
    fn read(path: &str, node: &Value<'_>) -> Result<RawDeadLetter, ConfigError> {
        const KNOWN: &[&str] = &["url", "cluster", "timeoutMs", "headers"];
        let mut raw = RawDeadLetter::default();
        for (key, v) in fields(path, node, KNOWN)? {
            let p = &join(path, key);
            match key {
                "url" => raw.url = Some(string(p, v)?),
                "cluster" => raw.cluster = Some(string(p, v)?),
                "timeoutMs" => raw.timeout_ms = Some(uint(p, v)?),
                "headers" => raw.headers = Some(string_map(p, v)?),
                _ => {}
            }
        }
        Ok(raw)
    }
}

#[derive(Default)]
struct RawLearn {
    enabled: Option<bool>,
    cluster: Option<String>,
    allow_hosts: Option<Vec<String>>,
    allow_private: Option<bool>,
    timeout_ms: Option<u64>,
    original_dst_header: Option<String>,
    max_learned: Option<u64>,
    rate_limit: Option<RawRateLimit>,
}

impl RawLearn {
    fn read(path: &str, node: &Value<'_>) -> Result<RawLearn, ConfigError> {
        const KNOWN: &[&str] = &[
            "enabled",
            "cluster",
            "allowHosts",
            "allowPrivate",
            "timeoutMs",
            "originalDstHeader",
            "maxLearned",
            "rateLimit",
        ];
        let mut raw = RawLearn::default();
        for (key, v) in fields(path, node, KNOWN)? {
            let p = &join(path, key);
            match key {
                "enabled" => raw.enabled = Some(boolean(p, v)?),
                "cluster" => raw.cluster = Some(string(p, v)?),
                "allowHosts" => {
                    raw.allow_hosts = Some(list(p, v, "an array of strings", string)?);
                }
                "allowPrivate" => raw.allow_private = Some(boolean(p, v)?),
                "timeoutMs" => raw.timeout_ms = Some(uint(p, v)?),
                "originalDstHeader" => raw.original_dst_header = Some(string(p, v)?),
                "maxLearned" => raw.max_learned = Some(uint(p, v)?),
                "rateLimit" => raw.rate_limit = Some(RawRateLimit::read(p, v)?),
                _ => {}
            }
        }
        Ok(raw)
    }
}

/// A `deliveryStatuses` element, name or code, kept raw so validation can name its index.
enum RawStatus {
    Name(String),
    Code(u64),
    Negative(i64),
}

impl RawStatus {
    fn read(path: &str, node: &Value<'_>) -> Result<RawStatus, ConfigError> {
        if let Value::String(name) = node {
            return Ok(RawStatus::Name(name.text().into_owned()));
        }
        match (node.as_u64(), node.as_i64()) {
            (Some(code), _) => Ok(RawStatus::Code(code)),
            (None, Some(code)) => Ok(RawStatus::Negative(code)),
            (None, None) => Err(type_error(path, "a delivery status name or code 1-6", node)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Compilation

impl RawConfig {
    fn compile(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let retry = compile_retry("retry", self.retry)?;
        let learn = self.learn.map(compile_learn).transpose()?.flatten();
        // Learning alone may leave the list out, as the Security section's example does.
        let raw_endpoints = match (self.endpoints, &learn) {
            (Some(raw), _) => raw,
            (None, Some(_)) => Vec::new(),
            (None, None) => return Err(invalid("endpoints", "is required")),
        };
        if raw_endpoints.is_empty() && learn.is_none() {
            return Err(invalid("endpoints", "at least one endpoint is required"));
        }
        let mut endpoints: Vec<Endpoint> = Vec::with_capacity(raw_endpoints.len());
        for (i, mut raw) in raw_endpoints.into_iter().enumerate() {
            let endpoint = raw.compile(&format!("endpoints[{i}]"), &retry, env)?;
            if endpoints.iter().any(|e| e.name == endpoint.name) {
                return Err(invalid(
                    format!("endpoints[{i}].name"),
                    format!("duplicate endpoint name \"{}\"", endpoint.name),
                ));
            }
            endpoints.push(endpoint);
        }
        let repeats = repeats_a_key(endpoints.iter().map(|e| e.name.as_str()));
        if let Some(second) = repeats.iter().position(|r| *r) {
            let name = endpoints.get(second).map_or("", |e| e.name.as_str());
            let first = endpoints
                .iter()
                .position(|e| endpoint_key(&e.name) == endpoint_key(name))
                .unwrap_or(0);
            return Err(invalid(
                format!("endpoints[{second}].name"),
                format!(
                    "\"{name}\" has the same 64-bit key as endpoints[{first}] (\"{}\"): rename one",
                    endpoints.get(first).map_or("", |e| e.name.as_str()),
                ),
            ));
        }
        Ok(Config {
            endpoints,
            watch: compile_watch(self.watch)?,
            retry,
            limits: compile_limits(self.limits)?,
            dead_letter: self.dead_letter.map(compile_dead_letter).transpose()?,
            learn,
            tick_ms: ranged("tickMs", self.tick_ms, DEFAULT_TICK_MS, 10, MAX_TICK_MS)?,
            role: match self.role.as_deref() {
                None => Role::default(),
                Some(name) => (Role::ALL.into_iter())
                    .find(|r| r.name() == name)
                    .ok_or_else(|| {
                        invalid(
                            "role",
                            "must be \"both\", \"observer\" or \"sender\"".to_string(),
                        )
                    })?,
            },
        })
    }
}

impl RawEndpoint {
    /// Takes the fields it compiles out of `self`, which the caller drops once, however this
    /// returns: by value, each `?` dropped the fields not yet taken, a cleanup per return.
    fn compile(
        &mut self,
        p: &str,
        global_retry: &RetryPolicy,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Endpoint, ConfigError> {
        let name = self
            .name
            .take()
            .ok_or_else(|| invalid(join(p, "name"), "is required"))?;
        let name_ok = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !name_ok {
            return Err(invalid(
                join(p, "name"),
                format!("must be 1-{MAX_NAME_LEN} characters of [A-Za-z0-9_.-]"),
            ));
        }
        // Deliveries find their endpoint by name: one left in the ledger by a configured
        // `learned-9` would go to the learned endpoint of that name once the other is removed.
        if name.starts_with(crate::learn::NAME_PREFIX) {
            let why = format!(
                "must not start with \"{}\": it names learned endpoints",
                crate::learn::NAME_PREFIX
            );
            return Err(invalid(join(p, "name"), why));
        }
        let target = compile_target(p, self.url.take(), self.cluster.take())?;
        let retry = match self.retry.take() {
            Some(raw) => compile_retry(&join(p, "retry"), Some(raw))?,
            None => global_retry.clone(),
        };
        let circuit = self.circuit_breaker.take().unwrap_or(RawCircuit {
            failure_threshold: None,
            open_ms: None,
        });
        Ok(Endpoint {
            name,
            target,
            provider_ids: compile_ids(&join(p, "providerIds"), self.provider_ids.take(), None)?,
            channel_types: compile_ids(
                &join(p, "channelTypes"),
                self.channel_types.take(),
                Some(MAX_CHANNEL_TYPE),
            )?,
            delivery_statuses: compile_statuses(
                &join(p, "deliveryStatuses"),
                self.delivery_statuses.take(),
            )?,
            timeout_ms: timeout(&join(p, "timeoutMs"), self.timeout_ms)?,
            headers: compile_headers(&join(p, "headers"), self.headers.take())?,
            retry,
            max_in_flight: ranged_u32(
                &join(p, "maxInFlight"),
                self.max_in_flight,
                DEFAULT_MAX_IN_FLIGHT,
                1,
                10_000,
            )?,
            circuit: CircuitPolicy {
                failure_threshold: ranged_u32(
                    &join(p, "circuitBreaker.failureThreshold"),
                    circuit.failure_threshold,
                    DEFAULT_FAILURE_THRESHOLD,
                    1,
                    1000,
                )?,
                open_ms: ranged(
                    &join(p, "circuitBreaker.openMs"),
                    circuit.open_ms,
                    DEFAULT_OPEN_MS,
                    100,
                    86_400_000,
                )?,
            },
            rate_limit: self
                .rate_limit
                .take()
                .map(|raw| raw.compile(&join(p, "rateLimit")))
                .transpose()?,
            secrets: compile_secrets(
                p,
                self.secret.take(),
                self.secrets.take(),
                self.secret_env.take(),
                env,
            )?,
            payload: match self.payload.as_deref() {
                None => Payload::default(),
                Some(name) => Payload::from_name(name).ok_or_else(|| {
                    invalid(
                        join(p, "payload"),
                        "must be \"notification\" or \"envelope\"",
                    )
                })?,
            },
            await_result_ms: ranged(
                &join(p, "awaitResultMs"),
                self.await_result_ms,
                DEFAULT_AWAIT_RESULT_MS,
                0,
                MAX_AWAIT_RESULT_MS,
            )?,
            test_mode: match self.test_mode.as_deref() {
                None | Some("deliver") => TestMode::Deliver,
                Some("skip") => TestMode::Skip,
                Some(_) => {
                    return Err(invalid(
                        join(p, "testMode"),
                        "must be \"deliver\" or \"skip\"",
                    ))
                }
            },
        })
    }
}

fn compile_target(
    p: &str,
    url: Option<String>,
    cluster: Option<String>,
) -> Result<Target, ConfigError> {
    let url = url.ok_or_else(|| invalid(join(p, "url"), "is required"))?;
    let cluster = cluster.ok_or_else(|| invalid(join(p, "cluster"), "is required"))?;
    if cluster.is_empty() {
        return Err(invalid(join(p, "cluster"), "must not be empty"));
    }
    Target::from_url(&cluster, &url).map_err(|e| invalid(join(p, "url"), e))
}

fn compile_ids(
    path: &str,
    ids: Option<Vec<u64>>,
    max: Option<u64>,
) -> Result<Option<Vec<u64>>, ConfigError> {
    let Some(mut ids) = ids else {
        return Ok(None);
    };
    if ids.is_empty() {
        return Err(invalid(path, "must not be empty (omit it to match any)"));
    }
    if let Some(max) = max {
        if let Some(j) = ids.iter().position(|&id| id < 1 || id > max) {
            return Err(invalid(
                index(path, j),
                format!("must be between 1 and {max}"),
            ));
        }
    }
    crate::heapsort::sort(&mut ids);
    ids.dedup();
    Ok(Some(ids))
}

fn compile_statuses(path: &str, raw: Option<Vec<RawStatus>>) -> Result<StatusSet, ConfigError> {
    let Some(raw) = raw else {
        return Ok(StatusSet::FINAL);
    };
    if raw.is_empty() {
        return Err(invalid(
            path,
            "must not be empty (omit it for SUCCESS and FAILED)",
        ));
    }
    let mut set = StatusSet::default();
    for (j, item) in raw.into_iter().enumerate() {
        let status = match &item {
            RawStatus::Name(name) => DeliveryStatus::from_name(name).ok_or_else(|| {
                let names: Vec<&str> = DeliveryStatus::ALL.iter().map(|s| s.name()).collect();
                invalid(
                    index(path, j),
                    format!(
                        "unknown status {}, expected one of {} or a code 1-6",
                        Quoted(name),
                        names.join(", ")
                    ),
                )
            }),
            RawStatus::Code(code) => DeliveryStatus::from_code(*code).ok_or_else(|| {
                invalid(
                    index(path, j),
                    format!("unknown status code {code}, expected 1-6"),
                )
            }),
            RawStatus::Negative(code) => Err(invalid(
                index(path, j),
                format!("unknown status code {code}, expected 1-6"),
            )),
        }?;
        set.insert(status);
    }
    Ok(set)
}

/// RFC 7230 `tchar`.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '!' | '#'
                | '$'
                | '%'
                | '&'
                | '\''
                | '*'
                | '+'
                | '-'
                | '.'
                | '^'
                | '_'
                | '`'
                | '|'
                | '~'
        )
}

/// Header values are never put in messages: they often carry credentials.
fn compile_headers(
    path: &str,
    raw: Option<Vec<(String, String)>>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let raw = raw.unwrap_or_default();
    let mut out: Vec<(String, String)> = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let p = format!("{path}[{}]", Quoted(&name));
        let lower = name.to_ascii_lowercase();
        if lower.starts_with(':') {
            return Err(invalid(p, "pseudo-headers cannot be configured"));
        }
        if lower.is_empty() || !lower.chars().all(is_tchar) {
            return Err(invalid(p, "not a valid HTTP header name"));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("webhook-") {
            return Err(invalid(p, "is set by the filter and cannot be configured"));
        }
        // Envoy's router obeys these on the webhook call itself: `x-envoy-retry-on` would
        // multiply attempts past `maxAttempts` and `maxInFlight`, and a timeout header would
        // override `timeoutMs`.
        if lower.starts_with("x-envoy-") {
            return Err(invalid(
                p,
                "x-envoy-* headers steer Envoy's own retries and timeouts; use retry and timeoutMs",
            ));
        }
        // Envoy refuses such a value when it sends: every attempt would fail.
        if value.chars().any(|c| c.is_ascii_control() && c != '\t') {
            return Err(invalid(
                p,
                "value must not contain control characters (tab aside)",
            ));
        }
        if out.iter().any(|(n, _)| *n == lower) {
            return Err(invalid(
                p,
                "duplicate header name (names are case-insensitive)",
            ));
        }
        out.push((lower, value));
    }
    crate::heapsort::sort_by(&mut out, |a, b| a.0 < b.0);
    Ok(out)
}

/// A per-endpoint `retry` replaces the global one entirely: unset fields take the built-in
/// defaults, not the global block's values, so an endpoint's policy reads in one place.
fn compile_retry(path: &str, raw: Option<RawRetry>) -> Result<RetryPolicy, ConfigError> {
    let Some(raw) = raw else {
        return Ok(RetryPolicy::default());
    };
    let max_delay_ms = raw.max_delay_ms.unwrap_or(DEFAULT_MAX_DELAY_MS);
    let jitter = raw.jitter.unwrap_or(DEFAULT_JITTER);
    // With a schedule, `initialDelayMs` and `multiplier` are ignored rather than refused: the
    // brief's own example gives them alongside it.
    let (max_attempts, backoff) = match raw.schedule {
        Some(schedule) => {
            let attempts = raw
                .max_attempts
                .unwrap_or(schedule.len().saturating_add(1) as u64);
            (attempts, Backoff::Schedule(schedule))
        }
        None => (
            raw.max_attempts.unwrap_or(u64::from(DEFAULT_MAX_ATTEMPTS)),
            Backoff::Exponential {
                initial_delay_ms: raw.initial_delay_ms.unwrap_or(DEFAULT_INITIAL_DELAY_MS),
                multiplier: raw.multiplier.unwrap_or(DEFAULT_MULTIPLIER),
            },
        ),
    };
    // An out-of-range u64 becomes u32::MAX, which `try_new` rejects with the range message.
    let max_attempts = u32::try_from(max_attempts).unwrap_or(u32::MAX);
    // A delay out of range is named by its index, as a delay of the wrong type there is, so
    // one element has one path whatever is wrong with it.
    RetryPolicy::try_new(max_attempts, backoff, max_delay_ms, jitter).map_err(|e| match e {
        RetryError::ScheduleEntry {
            index: j,
            delay_ms,
            max_delay_ms,
        } => invalid(
            index(&join(path, "schedule"), j),
            format!("must be between 1 and maxDelayMs ({max_delay_ms}), got {delay_ms}"),
        ),
        e => invalid(join(path, e.field()), e.reason()),
    })
}

fn compile_secrets(
    p: &str,
    secret: Option<String>,
    secrets: Option<Vec<String>>,
    secret_env: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Secret>, ConfigError> {
    let mut out = Vec::new();
    if let Some(s) = secret {
        out.push(Secret::parse(&s).map_err(|e| invalid(join(p, "secret"), e.to_string()))?);
    }
    if secrets.as_ref().is_some_and(Vec::is_empty) {
        let why = "must not be empty; omit it to send unsigned webhooks";
        return Err(invalid(join(p, "secrets"), why));
    }
    for (j, s) in secrets.unwrap_or_default().into_iter().enumerate() {
        out.push(
            Secret::parse(&s).map_err(|e| invalid(format!("{p}.secrets[{j}]"), e.to_string()))?,
        );
    }
    if let Some(var) = secret_env {
        let path = join(p, "secretEnv");
        if var.is_empty() {
            return Err(invalid(path, "must name an environment variable"));
        }
        // The name is not quoted back: a secret pasted here by mistake would reach the log.
        let value = env(&var).filter(|v| !v.is_empty()).ok_or_else(|| {
            invalid(
                &path,
                "names an environment variable that is not set or empty in the VM (is it listed in vm_config.environment_variables.host_env_keys?)",
            )
        })?;
        out.push(
            Secret::parse(&value)
                .map_err(|e| invalid(&path, format!("the environment variable it names: {e}")))?,
        );
    }
    Ok(out)
}

fn compile_paths(path: &str, paths: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if let Some(j) = paths.iter().position(|s| !s.starts_with('/')) {
        return Err(invalid(index(path, j), "must start with \"/\""));
    }
    if let Some(j) = paths.iter().position(|s| s.contains(['?', '#'])) {
        let why = "must not hold a query or fragment: paths are matched without them";
        return Err(invalid(index(path, j), why));
    }
    // A request's `:path` carries these percent-encoded: a path holding one never matches.
    let unmatchable = |s: &String| s.bytes().any(|b| !b.is_ascii_graphic());
    if let Some(j) = paths.iter().position(unmatchable) {
        let why = "must not contain spaces, control characters or non-ASCII characters \
                   (percent-encode them as requests carry them)";
        return Err(invalid(index(path, j), why));
    }
    Ok(paths)
}

fn compile_watch(raw: Option<RawWatch>) -> Result<Watch, ConfigError> {
    let raw = raw.unwrap_or(RawWatch {
        graphql_paths: None,
        rest_path_prefixes: None,
        max_body_bytes: None,
        max_buffered_bytes: None,
    });
    let graphql_paths = compile_paths(
        "watch.graphqlPaths",
        raw.graphql_paths
            .unwrap_or_else(|| vec!["/graphql".to_string()]),
    )?;
    let rest_path_prefixes = compile_paths(
        "watch.restPathPrefixes",
        raw.rest_path_prefixes
            .unwrap_or_else(|| vec!["/notifications".to_string()]),
    )?;
    if graphql_paths.is_empty() && rest_path_prefixes.is_empty() {
        return Err(invalid(
            "watch",
            "graphqlPaths and restPathPrefixes must not both be empty",
        ));
    }
    let path = "watch.maxBodyBytes";
    let max_body_bytes = ranged(
        path,
        raw.max_body_bytes,
        DEFAULT_MAX_BODY_BYTES,
        1024,
        64 << 20,
    )?;
    let buffered_path = "watch.maxBufferedBytes";
    let max_buffered_bytes = ranged(
        buffered_path,
        raw.max_buffered_bytes,
        DEFAULT_MAX_BUFFERED_BYTES,
        1 << 20,
        512 << 20,
    )?;
    if max_buffered_bytes < max_body_bytes + MAX_GRAPHQL_REQUEST_BYTES as u64 {
        return Err(invalid(
            buffered_path,
            "must hold watch.maxBodyBytes and a GraphQL request (64 KiB) besides",
        ));
    }
    let size = |path, n: u64| {
        usize::try_from(n).map_err(|_| invalid(path, "does not fit this platform's usize"))
    };
    Ok(Watch {
        graphql_paths,
        rest_path_prefixes,
        max_body_bytes: size(path, max_body_bytes)?,
        max_buffered_bytes: size(buffered_path, max_buffered_bytes)?,
    })
}

fn compile_limits(raw: Option<RawLimits>) -> Result<Limits, ConfigError> {
    let raw = raw.unwrap_or(RawLimits {
        max_pending: None,
        max_remembered: None,
    });
    Ok(Limits {
        max_pending: ranged_u32(
            "limits.maxPending",
            raw.max_pending,
            DEFAULT_MAX_PENDING,
            1,
            MAX_PENDING_LIMIT.into(),
        )?,
        max_remembered: ranged_u32(
            "limits.maxRemembered",
            raw.max_remembered,
            DEFAULT_MAX_REMEMBERED,
            1024,
            4_000_000,
        )?,
    })
}

fn compile_dead_letter(raw: RawDeadLetter) -> Result<DeadLetter, ConfigError> {
    Ok(DeadLetter {
        target: compile_target("deadLetter", raw.url, raw.cluster)?,
        timeout_ms: timeout("deadLetter.timeoutMs", raw.timeout_ms)?,
        headers: compile_headers("deadLetter.headers", raw.headers)?,
    })
}

/// A disabled `learn` block is not validated further: it is inert, and keeping a half-written
/// block switched off is a normal way to stage it.
fn compile_learn(raw: RawLearn) -> Result<Option<Learn>, ConfigError> {
    // Values given are checked even while learning is off, so that a typo does not wait for
    // the day someone turns it on; only the fields learning needs are optional then.
    let hosts = raw.allow_hosts.unwrap_or_default();
    let mut allow_hosts = Vec::with_capacity(hosts.len());
    for (j, h) in hosts.iter().enumerate() {
        let pattern = HostPattern::parse(h);
        allow_hosts.push(pattern.map_err(|e| invalid(format!("learn.allowHosts[{j}]"), e))?);
    }
    let original_dst_header = raw
        .original_dst_header
        .map(|name| compile_original_dst_header("learn.originalDstHeader", name))
        .transpose()?;
    let path = "learn.maxLearned";
    let max_learned = ranged(path, raw.max_learned, DEFAULT_MAX_LEARNED, 1, MAX_LEARNED)?;
    let timeout_ms = timeout("learn.timeoutMs", raw.timeout_ms)?;
    let rate_limit = raw
        .rate_limit
        .map(|rate| rate.compile("learn.rateLimit"))
        .transpose()?;
    if !raw.enabled.unwrap_or(false) {
        return Ok(None);
    }
    let cluster = raw
        .cluster
        .filter(|c| !c.is_empty())
        .ok_or_else(|| invalid("learn.cluster", "is required when learn is enabled"))?;
    if allow_hosts.is_empty() {
        return Err(invalid(
            "learn.allowHosts",
            "must not be empty when learn is enabled",
        ));
    }
    Ok(Some(Learn {
        cluster,
        allow_hosts,
        allow_private: raw.allow_private.unwrap_or(false),
        timeout_ms,
        original_dst_header,
        max_learned: usize::try_from(max_learned)
            .map_err(|_| invalid(path, "does not fit this platform's usize"))?,
        rate_limit,
    }))
}

/// Lowercase only: the name is sent as given, and HTTP/2 forbids uppercase header names.
fn compile_original_dst_header(path: &str, name: String) -> Result<String, ConfigError> {
    let token = !name.is_empty() && name.chars().all(|c| is_tchar(c) && !c.is_ascii_uppercase());
    if !token {
        return Err(invalid(path, "must be a lowercase HTTP header name"));
    }
    if RESERVED_HEADERS.contains(&name.as_str()) || name.starts_with("webhook-") {
        return Err(invalid(
            path,
            "is set by the filter and cannot be configured",
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const S2: &str = "whsec_AgMEBQYHCAkKCwwNDg8QERITFBUWFxgZ";
    const S3: &str = "whsec_BQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fICEiIyQ=";
    const S_ENV: &str = "whsec_ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoOEhYaHiImKiw==";

    fn env(name: &str) -> Option<String> {
        match name {
            "CRM_WEBHOOK_SECRET" => Some(S_ENV.to_string()),
            "EMPTY" => Some(String::new()),
            "GARBAGE" => Some("whsec_!!!not-base64!!!".to_string()),
            _ => None,
        }
    }

    fn parse(json: &str) -> Config {
        Config::from_json(json.as_bytes(), &env).unwrap()
    }

    fn err(json: &str) -> String {
        Config::from_json(json.as_bytes(), &env)
            .unwrap_err()
            .to_string()
    }

    /// One endpoint with the given extra JSON fields spliced in.
    fn endpoint(extra: &str) -> String {
        let sep = if extra.is_empty() { "" } else { ", " };
        format!(
            r#"{{"endpoints": [{{"name": "crm", "url": "http://h/x", "cluster": "c"{sep}{extra}}}]}}"#
        )
    }

    fn endpoint_err(extra: &str) -> String {
        err(&endpoint(extra))
    }

    /// Learned endpoints take `learn.rateLimit`, checked like an endpoint's even while
    /// learning is off.
    #[test]
    fn learned_endpoints_may_have_a_rate_limit() {
        let learn = |rate: &str| {
            format!(
                r#"{{"learn": {{"enabled": true, "cluster": "egress", "allowHosts": ["h.example.com"]{rate}}}}}"#
            )
        };
        let limit = |c: &Config| c.learn.as_ref().and_then(|l| l.rate_limit);
        assert_eq!(limit(&parse(&learn(""))), None);
        let limited = parse(&learn(r#", "rateLimit": {"perSecond": 7}"#));
        let want = RateLimit {
            per_second: 7,
            burst: 7,
        };
        assert_eq!(limit(&limited), Some(want));
        assert_ne!(
            parse(&learn("")).delivery_fingerprint(),
            limited.delivery_fingerprint()
        );
        let off = r#"{"endpoints": [{"name": "a", "url": "http://h", "cluster": "c"}],
            "learn": {"rateLimit": {"perSecond": 0}}}"#;
        assert_eq!(
            err(off),
            "learn.rateLimit.perSecond: must be between 1 and 100000"
        );
    }

    /// A bucket a second deep unless `burst` says otherwise; none unless asked for; and the
    /// sender's fingerprint moves with it, so a singleton sender notices a changed limit.
    #[test]
    fn a_rate_limit_defaults_its_burst_to_a_seconds_worth() {
        let limit = |extra: &str| Config::from_json(endpoint(extra).as_bytes(), &env).unwrap();
        let plain = limit("");
        let per_second = limit(r#""rateLimit": {"perSecond": 20}"#);
        let bursty = limit(r#""rateLimit": {"perSecond": 20, "burst": 3}"#);
        assert_eq!(plain.endpoints[0].rate_limit, None);
        let rate = |c: &Config| c.endpoints[0].rate_limit.map(|r| (r.per_second, r.burst));
        assert_eq!(rate(&per_second), Some((20, 20)));
        assert_eq!(rate(&bursty), Some((20, 3)));
        let prints = [&plain, &per_second, &bursty].map(|c| c.delivery_fingerprint());
        assert!(prints[0] != prints[1] && prints[1] != prints[2] && prints[0] != prints[2]);
    }

    /// The brief's example, except `retry.maxAttempts`: 8 contradicts its 2-entry schedule.
    const FULL: &str = r#"{
      "endpoints": [
        {
          "name": "crm",
          "url": "http://127.0.0.1:8080/hooks/osmox?src=edge",
          "cluster": "webhook_crm",
          "providerIds": [11, 10, 11],
          "channelTypes": [5, 1],
          "deliveryStatuses": ["SUCCESS", "FAILED", 3],
          "timeoutMs": 7000,
          "headers": {"X-Team": "crm", "authorization": "Bearer abc"},
          "retry": {"maxAttempts": 4, "initialDelayMs": 1000, "multiplier": 3.0, "maxDelayMs": 60000, "jitter": 0.1},
          "maxInFlight": 32,
          "circuitBreaker": {"failureThreshold": 7, "openMs": 45000},
          "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
          "secrets": ["whsec_AgMEBQYHCAkKCwwNDg8QERITFBUWFxgZ", "whsec_BQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fICEiIyQ="],
          "secretEnv": "CRM_WEBHOOK_SECRET",
          "payload": "envelope",
          "awaitResultMs": 2500,
          "testMode": "skip"
        },
        {"name": "ops.v2", "url": "HTTPS://Hooks.Example.com", "cluster": "webhook_ops"}
      ],
      "watch": {"graphqlPaths": ["/graphql"], "restPathPrefixes": ["/notifications"], "maxBodyBytes": 8388608},
      "retry": {"maxAttempts": 3, "initialDelayMs": 5000, "multiplier": 2.0, "maxDelayMs": 3600000, "jitter": 0.2, "schedule": [5000, 300000]},
      "limits": {"maxPending": 10000, "maxRemembered": 65536},
      "deadLetter": {"url": "http://127.0.0.1:9000/dlq", "cluster": "dead_letter", "timeoutMs": 5000, "headers": {}},
      "learn": {"enabled": true, "cluster": "webhook_egress", "allowHosts": ["hooks.example.com", "*.Partner.example.com"], "allowPrivate": false, "timeoutMs": 5000},
      "tickMs": 200
    }"#;

    fn target(cluster: &str, scheme: &str, authority: &str, path: &str) -> Target {
        Target {
            cluster: cluster.to_string(),
            authority: authority.to_string(),
            path: path.to_string(),
            scheme: scheme.to_string(),
        }
    }

    #[test]
    fn full_example_compiles_to_exact_values() {
        let global =
            RetryPolicy::try_new(3, Backoff::Schedule(vec![5000, 300_000]), 3_600_000, 0.2)
                .unwrap();
        let crm_retry = RetryPolicy::try_new(
            4,
            Backoff::Exponential {
                initial_delay_ms: 1000,
                multiplier: 3.0,
            },
            60_000,
            0.1,
        )
        .unwrap();
        let expected = Config {
            endpoints: vec![
                Endpoint {
                    name: "crm".to_string(),
                    target: target(
                        "webhook_crm",
                        "http",
                        "127.0.0.1:8080",
                        "/hooks/osmox?src=edge",
                    ),
                    provider_ids: Some(vec![10, 11]),
                    channel_types: Some(vec![1, 5]),
                    delivery_statuses: [
                        DeliveryStatus::Success,
                        DeliveryStatus::Failed,
                        DeliveryStatus::AwaitingConfirmation,
                    ]
                    .into_iter()
                    .collect(),
                    timeout_ms: 7000,
                    headers: vec![
                        ("authorization".to_string(), "Bearer abc".to_string()),
                        ("x-team".to_string(), "crm".to_string()),
                    ],
                    retry: crm_retry,
                    max_in_flight: 32,
                    circuit: CircuitPolicy {
                        failure_threshold: 7,
                        open_ms: 45_000,
                    },
                    rate_limit: None,
                    secrets: [S1, S2, S3, S_ENV]
                        .iter()
                        .map(|s| Secret::parse(s).unwrap())
                        .collect(),
                    payload: Payload::Envelope,
                    await_result_ms: 2500,
                    test_mode: TestMode::Skip,
                },
                Endpoint {
                    name: "ops.v2".to_string(),
                    target: target("webhook_ops", "https", "hooks.example.com", "/"),
                    provider_ids: None,
                    channel_types: None,
                    delivery_statuses: StatusSet::FINAL,
                    timeout_ms: 15_000,
                    headers: vec![],
                    retry: global.clone(),
                    max_in_flight: 64,
                    circuit: CircuitPolicy {
                        failure_threshold: 5,
                        open_ms: 30_000,
                    },
                    rate_limit: None,
                    secrets: vec![],
                    payload: Payload::Notification,
                    await_result_ms: DEFAULT_AWAIT_RESULT_MS,
                    test_mode: TestMode::Deliver,
                },
            ],
            watch: Watch {
                graphql_paths: vec!["/graphql".to_string()],
                rest_path_prefixes: vec!["/notifications".to_string()],
                max_body_bytes: 8_388_608,
                max_buffered_bytes: 128 << 20,
            },
            retry: global,
            limits: Limits {
                max_pending: 10_000,
                max_remembered: 65_536,
            },
            dead_letter: Some(DeadLetter {
                target: target("dead_letter", "http", "127.0.0.1:9000", "/dlq"),
                timeout_ms: 5000,
                headers: vec![],
            }),
            learn: Some(Learn {
                cluster: "webhook_egress".to_string(),
                allow_hosts: vec![
                    HostPattern::parse("hooks.example.com").unwrap(),
                    HostPattern::parse("*.partner.example.com").unwrap(),
                ],
                allow_private: false,
                timeout_ms: 5000,
                original_dst_header: None,
                max_learned: 256,
                rate_limit: None,
            }),
            tick_ms: 200,
            role: Role::Both,
        };
        let config = parse(FULL);
        assert_eq!(config, expected);
        assert_eq!(config.endpoint("ops.v2").map(|e| e.max_in_flight), Some(64));
        assert!(config.endpoint("nope").is_none());
    }

    #[test]
    fn brief_example_with_conflicting_max_attempts_is_rejected() {
        let json = FULL.replace(
            r#""maxAttempts": 3, "initialDelayMs": 5000"#,
            r#""maxAttempts": 8, "initialDelayMs": 5000"#,
        );
        assert_eq!(
            err(&json),
            "retry.maxAttempts: must equal the schedule length + 1 (3)"
        );
    }

    #[test]
    fn a_drift_is_warned_once_and_again_when_it_comes_back() {
        let (ours, x, y) = (1, 2, 3);
        let mut w = DriftWatch::default();
        assert!(!w.warns(ours, None), "nothing this build reads");
        assert!(!w.warns(ours, Some(ours)));
        assert!(w.warns(ours, Some(x)));
        assert!(!w.warns(ours, Some(x)), "said once, not at every look");
        assert!(w.warns(ours, Some(y)), "another drift");
        // Observers rolled back to the singleton's configuration, then moved off it again:
        // the earlier warning, a while ago, says nothing of this drift (a review found it
        // went unwarned).
        assert!(!w.warns(ours, Some(ours)));
        assert!(w.warns(ours, Some(y)));
    }

    /// A singleton sender of one build compares its fingerprint with the observers' of
    /// another, under one prefix of shared data: a change to how it is computed must come with
    /// a new `FINGERPRINT_FORMAT`, or the singleton warns of a drift that is not there.
    #[test]
    fn the_delivery_fingerprint_is_pinned() {
        let config = parse(
            r#"{"endpoints": [{"name": "crm", "url": "http://h/x", "cluster": "c",
                "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "rateLimit": {"perSecond": 5}}],
                "deadLetter": {"url": "http://d/x", "cluster": "d"}}"#,
        );
        let print = config.delivery_fingerprint();
        assert_eq!(
            print, 8_754_380_084_599_063_240,
            "pinned; if it moved, bump FINGERPRINT_FORMAT"
        );
        let published = config.published_fingerprint();
        assert_eq!(published, format!("{FINGERPRINT_FORMAT}:{print}"));
        assert_eq!(
            Config::read_published_fingerprint(published.as_bytes()),
            Some(print)
        );
        // Another rule's print, an older build's bare number, or junk: nothing to compare.
        let other = format!("{}:{print}", FINGERPRINT_FORMAT + 1);
        for value in [
            other.as_bytes(),
            print.to_string().as_bytes(),
            b"1:x",
            b"",
            b"\xff:1",
        ] {
            assert_eq!(Config::read_published_fingerprint(value), None, "{value:?}");
        }
    }

    /// A singleton sender compares its fingerprint with the observers': equal across what only
    /// watching or ticking concerns, different for anything that changes a delivery.
    #[test]
    fn the_delivery_fingerprint_follows_what_deliveries_depend_on() {
        let base = r#"{"endpoints": [{"name": "crm", "url": "http://h/x", "cluster": "c",
            "headers": {"x-team": "a"}, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]ROLE}"#;
        let print = |json: &str| parse(json).delivery_fingerprint();
        let observer = print(&base.replace("ROLE", r#", "role": "observer", "tickMs": 50"#));
        assert_eq!(
            print(&base.replace("ROLE", r#", "role": "sender""#)),
            observer
        );
        let changed = [
            base.replace(r#""x-team": "a""#, r#""x-team": "b""#),
            base.replace("http://h/x", "http://h/y"),
            base.replace(
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx",
            ),
            base.replace(
                r#""cluster": "c","#,
                r#""cluster": "c", "timeoutMs": 1000,"#,
            ),
            base.replace(
                "ROLE",
                r#", "deadLetter": {"url": "http://d/", "cluster": "d"}"#,
            ),
            base.replace("ROLE", r#", "retry": {"maxAttempts": 3}"#),
            // Each part of an endpoint the sender reads: a review found that dropping any one
            // of these from the fingerprint failed no test.
            base.replace(r#""name": "crm""#, r#""name": "crm2""#),
            base.replace(r#""cluster": "c","#, r#""cluster": "d","#),
            base.replace(r#""cluster": "c","#, r#""cluster": "c", "maxInFlight": 8,"#),
            base.replace(
                r#""cluster": "c","#,
                r#""cluster": "c", "circuitBreaker": {"failureThreshold": 9},"#,
            ),
            base.replace(
                r#""cluster": "c","#,
                r#""cluster": "c", "circuitBreaker": {"openMs": 1000},"#,
            ),
            base.replace(
                r#""cluster": "c","#,
                r#""cluster": "c", "retry": {"maxAttempts": 3},"#,
            ),
            base.replace(
                r#""cluster": "c","#,
                r#""cluster": "c", "secrets": ["whsec_AgMEBQYHCAkKCwwNDg8QERITFBUWFxgZ"],"#,
            ),
            base.replace(
                "ROLE",
                r#", "learn": {"enabled": true, "cluster": "e", "allowHosts": ["a.example"]}"#,
            ),
        ];
        for json in changed {
            assert_ne!(print(&json.replace("ROLE", "")), observer, "{json}");
        }
        // What only the observers use is no drift (a review saw a false warning).
        let observers_only = [
            base.replace("ROLE", r#", "role": "observer""#).replace(
                r#""cluster": "c","#,
                r#""cluster": "c", "deliveryStatuses": [5],"#,
            ),
            base.replace("ROLE", "").replace(
                r#""cluster": "c","#,
                r#""cluster": "c", "payload": "envelope", "providerIds": [3],"#,
            ),
        ];
        for json in observers_only {
            assert_eq!(print(&json), observer, "{json}");
        }
    }

    /// A change inside a block is drift as much as adding the block: a singleton sender that
    /// missed a rotated dead-letter token, a new jitter or a loosened `allowPrivate` would
    /// go on sending by the old values.
    #[test]
    fn the_delivery_fingerprint_follows_each_field_of_the_retry_dead_letter_and_learn_blocks() {
        let ep = r#""endpoints": [{"name": "a", "url": "http://h/", "cluster": "c"}]"#;
        let with = |extra: &str| parse(&format!("{{{ep}, {extra}}}"));
        let print = |extra: &str| with(extra).delivery_fingerprint();
        assert_ne!(
            print(r#""retry": {"jitter": 0.1}"#),
            print(r#""retry": {"jitter": 0.2}"#)
        );
        let dead_letter = |token: &str| {
            print(&format!(
                r#""deadLetter": {{"url": "http://d/", "cluster": "d", "headers": {{"authorization": "{token}"}}}}"#
            ))
        };
        assert_ne!(dead_letter("Bearer a"), dead_letter("Bearer b"));
        assert_ne!(
            print(r#""deadLetter": {"url": "http://d/", "cluster": "d"}"#),
            print(r#""deadLetter": {"url": "http://d/", "cluster": "d", "timeoutMs": 1000}"#)
        );
        let learn = |extra: &str| {
            with(&format!(
                r#""learn": {{"enabled": true, "cluster": "e", "allowHosts": ["a.example"]{extra}}}"#
            ))
        };
        let base = learn("");
        // The egress cluster every learned endpoint goes through.
        let moved =
            with(r#""learn": {"enabled": true, "cluster": "f", "allowHosts": ["a.example"]}"#);
        assert_ne!(moved.delivery_fingerprint(), base.delivery_fingerprint());
        assert_ne!(moved.learn_fingerprint(), base.learn_fingerprint());
        for extra in [
            r#", "allowPrivate": true"#,
            r#", "timeoutMs": 1000"#,
            r#", "originalDstHeader": "x-dst""#,
            r#", "maxLearned": 10"#,
        ] {
            let changed = learn(extra);
            assert_ne!(
                changed.delivery_fingerprint(),
                base.delivery_fingerprint(),
                "{extra}"
            );
            assert_ne!(
                changed.learn_fingerprint(),
                base.learn_fingerprint(),
                "{extra}"
            );
        }
    }

    /// README's "Complete example" is what a deploy copies first: it must load, and give
    /// what its table says of the fields it sets.
    #[test]
    fn readme_complete_example_loads() {
        let readme = include_str!("../README.md");
        let marker = "Complete example:\n\n```json\n";
        let start = readme
            .find(marker)
            .expect("README has its complete example")
            + marker.len();
        let len = readme[start..]
            .find("```")
            .expect("the example's block ends");
        let config = Config::from_json(&readme.as_bytes()[start..start + len], &|_| None)
            .unwrap_or_else(|e| panic!("README's complete example is refused: {e}"));
        let crm = &config.endpoints[0];
        assert_eq!(crm.target.path, "/hooks/osmox?src=edge");
        assert_eq!(crm.secrets.len(), 1);
        assert_eq!(config.retry.max_attempts(), 4);
        assert_eq!(config.dead_letter.map(|d| d.timeout_ms), Some(15_000));
    }

    /// The JSON of each `configuration` (`value: |` block scalar) in a YAML text.
    fn yaml_configurations(yaml: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut lines = yaml.lines().peekable();
        while let Some(line) = lines.next() {
            if !line.trim_end().ends_with("value: |") {
                continue;
            }
            let indent = |l: &str| l.len() - l.trim_start().len();
            let Some(first) = lines.peek().copied() else {
                break;
            };
            let depth = indent(first);
            let mut block = String::new();
            while let Some(l) = lines.next_if(|l| l.trim().is_empty() || indent(l) >= depth) {
                block.push_str(l.get(depth..).unwrap_or(""));
                block.push('\n');
            }
            out.push(block);
        }
        out
    }

    /// What an operator copies: the shipped Envoy config's filter configuration, and the
    /// README's singleton sender, whose `secretEnv` Envoy's environment supplies.
    #[test]
    fn the_shipped_configurations_load() {
        let shipped = yaml_configurations(include_str!("../envoy/envoy-demo.yaml"));
        assert_eq!(shipped.len(), 1, "the demo configures one filter");
        let demo = Config::from_json(shipped[0].as_bytes(), &|_| None)
            .unwrap_or_else(|e| panic!("envoy-demo.yaml's configuration is refused: {e}"));
        let e = &demo.endpoints[0];
        assert_eq!((e.name.as_str(), e.secrets.len()), ("demo", 1));
        assert_eq!(
            e.target,
            target(
                "webhook_demo",
                "http",
                "127.0.0.1:8089",
                "/webhooks/osmox?src=demo"
            )
        );
        assert_eq!(
            e.delivery_statuses,
            DeliveryStatus::ALL.into_iter().collect()
        );
        assert_eq!((e.timeout_ms, e.retry.max_attempts()), (5000, 5));
        assert_eq!(demo.role, Role::Both);

        let readme = yaml_configurations(include_str!("../README.md"));
        assert_eq!(readme.len(), 1, "the README shows one YAML configuration");
        let env = |name: &str| (name == "OSMOX_WEBHOOK_SECRET").then(|| S1.to_string());
        let sender = Config::from_json(readme[0].as_bytes(), &env)
            .unwrap_or_else(|e| panic!("the README's singleton sender is refused: {e}"));
        assert_eq!(sender.role, Role::Sender);
        assert_eq!(sender.endpoints[0].secrets.len(), 1);
        assert_eq!(sender.endpoints[0].target.scheme, "https");
    }

    #[test]
    fn minimal_config_gets_every_default() {
        let config = parse(&endpoint(""));
        let expected = Config {
            endpoints: vec![Endpoint {
                name: "crm".to_string(),
                target: target("c", "http", "h", "/x"),
                provider_ids: None,
                channel_types: None,
                delivery_statuses: StatusSet::FINAL,
                timeout_ms: 15_000,
                headers: vec![],
                retry: RetryPolicy::default(),
                max_in_flight: 64,
                circuit: CircuitPolicy {
                    failure_threshold: 5,
                    open_ms: 30_000,
                },
                rate_limit: None,
                secrets: vec![],
                payload: Payload::Notification,
                await_result_ms: DEFAULT_AWAIT_RESULT_MS,
                test_mode: TestMode::Deliver,
            }],
            watch: Watch {
                graphql_paths: vec!["/graphql".to_string()],
                rest_path_prefixes: vec!["/notifications".to_string()],
                max_body_bytes: 8 * 1024 * 1024,
                max_buffered_bytes: 128 << 20,
            },
            retry: RetryPolicy::default(),
            limits: Limits {
                max_pending: 10_000,
                max_remembered: 65_536,
            },
            dead_letter: None,
            learn: None,
            tick_ms: 100,
            role: Role::Both,
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn role_names_the_part_a_vm_plays() {
        let with = |role: &str| {
            let json = format!(
                r#"{{"endpoints": [{{"name": "a", "url": "http://h/", "cluster": "c"}}], "role": "{role}"}}"#
            );
            Config::from_json(json.as_bytes(), &|_| None).map(|c| c.role)
        };
        assert_eq!(with("observer").unwrap(), Role::Observer);
        assert_eq!(with("sender").unwrap(), Role::Sender);
        assert_eq!(with("both").unwrap(), Role::Both);
        assert_eq!(
            with("leader").unwrap_err().to_string(),
            r#"role: must be "both", "observer" or "sender""#
        );
    }

    /// Envoy's log showed `role "Observer": no sender ...` and `configured as Both`: names the
    /// configuration refuses.
    #[test]
    fn a_role_is_shown_as_the_configuration_spells_it() {
        for role in Role::ALL {
            let json = format!(
                r#"{{"endpoints": [{{"name": "a", "url": "http://h/", "cluster": "c"}}], "role": "{role}"}}"#
            );
            let parsed = Config::from_json(json.as_bytes(), &|_| None).map(|c| c.role);
            assert_eq!(parsed, Ok(role), "{role}");
        }
    }

    /// What the root context reads of a role: only a sender watches nothing, only an observer
    /// sends nothing, and `both` does both.
    #[test]
    fn only_a_sender_skips_watching_and_only_an_observer_skips_sending() {
        assert!(Role::Both.observes() && Role::Both.sends());
        assert!(Role::Observer.observes() && !Role::Observer.sends());
        assert!(!Role::Sender.observes() && Role::Sender.sends());
    }

    #[test]
    fn endpoint_retry_replaces_global_with_builtin_defaults() {
        let json = r#"{"endpoints": [{"name": "a", "url": "http://h/", "cluster": "c", "retry": {"jitter": 0.0}}],
                       "retry": {"maxAttempts": 2, "initialDelayMs": 10}}"#;
        let config = parse(json);
        let expected = RetryPolicy::try_new(
            8,
            Backoff::Exponential {
                initial_delay_ms: 5000,
                multiplier: 2.0,
            },
            3_600_000,
            0.0,
        )
        .unwrap();
        assert_eq!(config.endpoints[0].retry, expected);
        assert_eq!(config.retry.max_attempts(), 2);
    }

    #[test]
    fn schedule_without_max_attempts_implies_one_more_attempt() {
        let config = parse(&endpoint(r#""retry": {"schedule": [10, 20, 30]}"#));
        let retry = &config.endpoints[0].retry;
        assert_eq!(retry.max_attempts(), 4);
        assert_eq!(retry.backoff(), &Backoff::Schedule(vec![10, 20, 30]));
    }

    #[test]
    fn learn_only_config_may_have_no_endpoints() {
        let config = parse(
            r#"{"endpoints": [], "learn": {"enabled": true, "cluster": "egress", "allowHosts": ["a.example"]}}"#,
        );
        assert!(config.endpoints.is_empty());
        let learn = config.learn.unwrap();
        assert_eq!(learn.timeout_ms, 15_000);
        assert!(!learn.allow_private);
        assert_eq!(learn.original_dst_header, None);
        assert_eq!(learn.max_learned, 256);
        // The list may be left out too, as README's Security example does; not when learning
        // is off.
        let bare =
            r#"{"learn": {"enabled": true, "cluster": "egress", "allowHosts": ["a.example"]}}"#;
        assert!(parse(bare).endpoints.is_empty());
        let off =
            r#"{"learn": {"enabled": false, "cluster": "egress", "allowHosts": ["a.example"]}}"#;
        assert_eq!(err(off), "endpoints: is required");
    }

    #[test]
    fn learn_takes_original_dst_header_and_max_learned() {
        let config = parse(
            r#"{"endpoints": [], "learn": {"enabled": true, "cluster": "egress", "allowHosts": ["a.example"],
                "originalDstHeader": "x-envoy-original-dst-host", "maxLearned": 10000}}"#,
        );
        let learn = config.learn.unwrap();
        assert_eq!(
            learn.original_dst_header.as_deref(),
            Some("x-envoy-original-dst-host")
        );
        assert_eq!(learn.max_learned, 10_000);
    }

    #[test]
    fn rejects_bad_learn_original_dst_header_and_max_learned() {
        let learn = r#""enabled": true, "cluster": "e", "allowHosts": ["a.b"]"#;
        for (extra, msg) in [
            (
                r#""originalDstHeader": "X-Envoy-Original-Dst-Host""#,
                "learn.originalDstHeader: must be a lowercase HTTP header name",
            ),
            (
                r#""originalDstHeader": "x dst""#,
                "learn.originalDstHeader: must be a lowercase HTTP header name",
            ),
            (
                r#""originalDstHeader": """#,
                "learn.originalDstHeader: must be a lowercase HTTP header name",
            ),
            (
                r#""originalDstHeader": ":authority""#,
                "learn.originalDstHeader: must be a lowercase HTTP header name",
            ),
            (
                r#""originalDstHeader": "host""#,
                "learn.originalDstHeader: is set by the filter and cannot be configured",
            ),
            // README: not `webhook-*` either, whose signature headers it would forge.
            (
                r#""originalDstHeader": "webhook-signature""#,
                "learn.originalDstHeader: is set by the filter and cannot be configured",
            ),
            (
                r#""maxLearned": 0"#,
                "learn.maxLearned: must be between 1 and 10000",
            ),
            (
                r#""maxLearned": 10001"#,
                "learn.maxLearned: must be between 1 and 10000",
            ),
        ] {
            assert_eq!(
                err(&format!(
                    r#"{{"endpoints": [], "learn": {{{learn}, {extra}}}}}"#
                )),
                msg,
                "{extra}"
            );
        }
    }

    #[test]
    fn disabled_learn_compiles_to_none() {
        let config = parse(
            r#"{"endpoints": [{"name": "a", "url": "http://h", "cluster": "c"}],
                "learn": {"enabled": false, "allowHosts": []}}"#,
        );
        assert_eq!(config.learn, None);
        // What it does hold is checked all the same.
        let bad = [
            (r#""allowHosts": ["not a host!"]"#, "learn.allowHosts[0]"),
            (r#""maxLearned": 0"#, "learn.maxLearned"),
            (r#""timeoutMs": 0"#, "learn.timeoutMs"),
            (
                r#""originalDstHeader": "Bad Header""#,
                "learn.originalDstHeader",
            ),
        ];
        for (field, path) in bad {
            let msg = err(&format!(
                r#"{{"endpoints": [{{"name": "a", "url": "http://h", "cluster": "c"}}],
                    "learn": {{"enabled": false, {field}}}}}"#
            ));
            assert!(msg.starts_with(&format!("{path}: ")), "{field}: {msg}");
        }
    }

    /// `enabled` is what turns learning on: a block without it stays off, however complete.
    #[test]
    fn a_learn_block_without_enabled_stays_off() {
        let config = parse(
            r#"{"endpoints": [{"name": "a", "url": "http://h", "cluster": "c"}],
                "learn": {"cluster": "e", "allowHosts": ["a.example"]}}"#,
        );
        assert_eq!(config.learn, None);
    }

    #[test]
    fn secret_env_lookup_uses_the_callback() {
        let config = parse(&endpoint(r#""secretEnv": "CRM_WEBHOOK_SECRET""#));
        assert_eq!(
            config.endpoints[0].secrets,
            vec![Secret::parse(S_ENV).unwrap()]
        );
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let config = parse(FULL);
        let debug = format!("{config:?}");
        assert!(debug.contains("Secret(<redacted>)"));
        for s in [S1, S2, S3, S_ENV] {
            let b64 = s.trim_start_matches("whsec_");
            assert!(!debug.contains(b64), "leaked {s}");
        }
    }

    // --- rejections -------------------------------------------------------------------------

    #[test]
    fn rejects_invalid_json() {
        assert_eq!(
            err("{"),
            "configuration: EOF while parsing an object at line 1 column 1"
        );
    }

    #[test]
    fn rejects_unknown_top_level_field() {
        let msg = err(r#"{"endpoints": [], "tickMS": 5}"#);
        assert!(
            msg.starts_with("tickMS: unknown field, expected one of"),
            "{msg}"
        );
    }

    #[test]
    fn rejects_unknown_endpoint_field() {
        let msg = endpoint_err(r#""timeout": 5"#);
        assert!(
            msg.starts_with("endpoints[0].timeout: unknown field, expected one of"),
            "{msg}"
        );
    }

    #[test]
    fn rejects_unknown_nested_fields() {
        for (json, field) in [
            (
                endpoint(r#""retry": {"delay": 1}"#),
                "endpoints[0].retry.delay",
            ),
            (
                endpoint(r#""circuitBreaker": {"open": 1}"#),
                "endpoints[0].circuitBreaker.open",
            ),
            (
                r#"{"endpoints": [], "watch": {"paths": []}}"#.to_string(),
                "watch.paths",
            ),
            (
                r#"{"endpoints": [], "limits": {"max": 1}}"#.to_string(),
                "limits.max",
            ),
            (
                r#"{"endpoints": [], "deadLetter": {"uri": "x"}}"#.to_string(),
                "deadLetter.uri",
            ),
            (
                r#"{"endpoints": [], "learn": {"on": true}}"#.to_string(),
                "learn.on",
            ),
        ] {
            let msg = err(&json);
            assert!(
                msg.starts_with(&format!("{field}: unknown field, expected one of `")),
                "{msg}"
            );
        }
    }

    #[test]
    fn unknown_fields_name_the_object_they_are_in() {
        assert_eq!(
            endpoint_err(r#""retry": {"delay": 1}"#),
            "endpoints[0].retry.delay: unknown field, expected one of `maxAttempts`, \
             `initialDelayMs`, `multiplier`, `maxDelayMs`, `jitter`, `schedule`"
        );
        // Even with a null value: the key itself is wrong.
        let msg = err(r#"{"endpoints": [], "tickMS": null}"#);
        assert!(
            msg.starts_with("tickMS: unknown field, expected one of `endpoints`,"),
            "{msg}"
        );
    }

    /// An unknown key is written escaped, as every other text a message quotes: an escaped
    /// newline or terminal sequence in it must not reach Envoy's log as one.
    #[test]
    fn an_unknown_field_is_named_escaped() {
        let msg = err(r#"{"endpoints": [], "tick\nMs\u001b[2J": 1}"#);
        assert!(
            msg.starts_with(r"tick\nMs\u{1b}[2J: unknown field, expected one of"),
            "{msg}"
        );
        assert!(!msg.contains(['\n', '\u{1b}']), "{msg}");
    }

    #[test]
    fn rejects_repeated_fields() {
        assert_eq!(
            err(r#"{"endpoints": [], "tickMs": 100, "tickMs": 200}"#),
            "tickMs: given more than once"
        );
        assert_eq!(
            endpoint_err(r#""name": "again""#),
            "endpoints[0].name: given more than once"
        );
        assert_eq!(
            endpoint_err(r#""retry": {"jitter": null, "jitter": 0.5}"#),
            "endpoints[0].retry.jitter: given more than once"
        );
        // A key is compared once its escapes are decoded.
        assert_eq!(
            err(r#"{"endpoints": [], "tickMs": 100, "tick\u004ds": 200}"#),
            "tickMs: given more than once"
        );
    }

    #[test]
    fn numbers_are_told_apart_as_serde_json_tells_them() {
        let got = |v: &str| endpoint_err(&format!(r#""timeoutMs": {v}"#));
        let want = |kind: &str| {
            format!("endpoints[0].timeoutMs: expected a non-negative integer, got {kind}")
        };
        assert_eq!(got("-5"), want("a negative integer"));
        assert_eq!(got("-9223372036854775808"), want("a negative integer"));
        for float in ["-0", "1e3", "5.0"] {
            assert_eq!(got(float), want("a floating-point number"), "{float}");
        }
        // serde_json reads these as floats; an operator wrote an integer, too large.
        for large in ["18446744073709551616", "-9223372036854775809"] {
            assert_eq!(got(large), want("an integer out of range"), "{large}");
        }
        assert_eq!(
            endpoint_err(r#""deliveryStatuses": [1.5]"#),
            "endpoints[0].deliveryStatuses[0]: expected a delivery status name or code 1-6, \
             got a floating-point number"
        );
        let config = parse(&endpoint(
            r#""retry": {"multiplier": 1.50E+0, "jitter": 25e-2}"#,
        ));
        assert_eq!(
            config.endpoints[0].retry.backoff(),
            &Backoff::Exponential {
                initial_delay_ms: 5000,
                multiplier: 1.5
            }
        );
    }

    #[test]
    fn a_repeated_header_name_is_refused() {
        assert_eq!(
            endpoint_err(r#""headers": {"x-a": "1", "x-a": "2"}"#),
            r#"endpoints[0].headers["x-a"]: given twice"#
        );
    }

    /// A review: `"secret": null` from a template that failed to fill it in sent unsigned
    /// webhooks without a word.
    #[test]
    fn a_null_or_empty_secret_is_refused() {
        for (field, why) in [
            (
                r#""secret": null"#,
                "endpoints[0].secret: is null; omit it to send unsigned webhooks",
            ),
            (
                r#""secrets": null"#,
                "endpoints[0].secrets: is null; omit it to send unsigned webhooks",
            ),
            (
                r#""secretEnv": null"#,
                "endpoints[0].secretEnv: is null; omit it to send unsigned webhooks",
            ),
            (
                r#""secrets": []"#,
                "endpoints[0].secrets: must not be empty; omit it to send unsigned webhooks",
            ),
        ] {
            assert_eq!(endpoint_err(field), why, "{field}");
        }
    }

    #[test]
    fn test_mode_is_deliver_or_skip() {
        assert_eq!(
            parse(&endpoint("")).endpoints[0].test_mode,
            TestMode::Deliver
        );
        for (given, want) in [("deliver", TestMode::Deliver), ("skip", TestMode::Skip)] {
            let c = parse(&endpoint(&format!(r#""testMode": "{given}""#)));
            assert_eq!(c.endpoints[0].test_mode, want, "{given}");
        }
        assert_eq!(
            endpoint_err(r#""testMode": "Skip""#),
            r#"endpoints[0].testMode: must be "deliver" or "skip""#
        );
        assert_eq!(
            endpoint_err(r#""testMode": false"#),
            "endpoints[0].testMode: expected a string, got a boolean"
        );
    }

    #[test]
    fn payload_is_notification_or_envelope() {
        assert_eq!(
            parse(&endpoint("")).endpoints[0].payload,
            Payload::Notification
        );
        let wrapped = parse(&endpoint(r#""payload": "envelope""#));
        assert_eq!(wrapped.endpoints[0].payload, Payload::Envelope);
        assert_eq!(
            endpoint_err(r#""payload": "standard""#),
            r#"endpoints[0].payload: must be "notification" or "envelope""#
        );
        let explicit = parse(&endpoint(r#""payload": "notification""#));
        assert_eq!(explicit.endpoints[0].payload, Payload::Notification);
    }

    /// Sorted by the lowercase name, not as given: uppercase sorts before lowercase, so
    /// `B-Two` and `C-Three` came before `a-one` until lowercased.
    #[test]
    fn header_names_are_lowercased_and_sorted_as_lowercased() {
        let config = parse(&endpoint(
            r#""headers": {"B-Two": "2", "C-Three": "3", "a-one": "1"}"#,
        ));
        let names: Vec<&str> = (config.endpoints[0].headers.iter())
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(names, ["a-one", "b-two", "c-three"]);
    }

    #[test]
    fn a_tab_in_a_header_value_passes_and_a_query_in_a_path_does_not() {
        let tab = parse(&endpoint(r#""headers": {"x-d": "a\tb"}"#));
        assert_eq!(tab.endpoints[0].headers[0].1, "a\tb");
        assert_eq!(
            err(r#"{"endpoints": [{"name": "a", "url": "http://h", "cluster": "c"}], "watch": {"graphqlPaths": ["/graphql?x=1"]}}"#),
            "watch.graphqlPaths[0]: must not hold a query or fragment: paths are matched without them"
        );
        assert_eq!(
            err(r#"{"endpoints": [{"name": "a", "url": "http://h", "cluster": "c"}], "watch": {"restPathPrefixes": ["/notifications#x"]}}"#),
            "watch.restPathPrefixes[0]: must not hold a query or fragment: paths are matched without them"
        );
    }

    #[test]
    fn null_fields_count_as_absent() {
        let config = parse(&endpoint(
            r#""timeoutMs": null, "retry": null, "headers": null"#,
        ));
        assert_eq!(config, parse(&endpoint("")));
        let config = parse(
            r#"{"endpoints": [{"name": "a", "url": "http://h", "cluster": "c"}], "watch": {"graphqlPaths": null},
                "learn": null, "deadLetter": null, "role": null, "tickMs": null}"#,
        );
        assert_eq!(config.watch.graphql_paths, vec!["/graphql".to_string()]);
        assert_eq!(config.learn, None);
        assert_eq!(config.tick_ms, 100);
        assert_eq!(err(r#"{"endpoints": null}"#), "endpoints: is required");
    }

    #[test]
    fn numbers_are_read_as_serde_read_them() {
        let config = parse(&endpoint(
            r#""retry": {"multiplier": 3, "jitter": 0, "maxAttempts": 2}, "timeoutMs": 7000"#,
        ));
        let retry = &config.endpoints[0].retry;
        assert_eq!(retry.max_attempts(), 2);
        assert_eq!(
            retry.backoff(),
            &Backoff::Exponential {
                initial_delay_ms: 5000,
                multiplier: 3.0
            }
        );
        assert_eq!(config.endpoints[0].timeout_ms, 7000);
        assert_eq!(
            endpoint_err(r#""retry": {"multiplier": -2}"#),
            "endpoints[0].retry.multiplier: must be a finite number >= 1.0"
        );
    }

    #[test]
    fn an_empty_configuration_says_so() {
        for empty in ["", " \n\t"] {
            assert_eq!(
                err(empty),
                "configuration: empty: give the filter its JSON configuration (a StringValue)"
            );
        }
    }

    #[test]
    fn rejects_wrong_type() {
        assert_eq!(
            endpoint_err(r#""timeoutMs": "5s""#),
            "endpoints[0].timeoutMs: expected a non-negative integer, got a string"
        );
        assert_eq!(
            endpoint_err(r#""timeoutMs": 5.0"#),
            "endpoints[0].timeoutMs: expected a non-negative integer, got a floating-point number"
        );
        assert_eq!(
            endpoint_err(r#""retry": {"jitter": "0.1"}"#),
            "endpoints[0].retry.jitter: expected a number, got a string"
        );
        assert_eq!(
            err(r#"{"endpoints": [], "learn": {"enabled": "yes"}}"#),
            "learn.enabled: expected a boolean, got a string"
        );
        assert_eq!(
            err(r#"{"endpoints": {}}"#),
            "endpoints: expected an array of endpoints, got an object"
        );
        assert_eq!(
            err(r#"{"endpoints": [[]]}"#),
            "endpoints[0]: expected an object, got an array"
        );
        assert_eq!(
            endpoint_err(r#""circuitBreaker": 5"#),
            "endpoints[0].circuitBreaker: expected an object, got an integer"
        );
        assert_eq!(
            endpoint_err(r#""headers": {"x-a": 1}"#),
            r#"endpoints[0].headers["x-a"]: expected a string, got an integer"#
        );
        assert_eq!(
            err(r#"{"endpoints": [], "watch": {"graphqlPaths": ["/g", null]}}"#),
            "watch.graphqlPaths[1]: expected a string, got null"
        );
        assert_eq!(err("[]"), "configuration: expected an object, got an array");
    }

    #[test]
    fn rejects_missing_endpoints() {
        assert_eq!(err("{}"), "endpoints: is required");
    }

    #[test]
    fn rejects_empty_endpoints_without_learn() {
        assert_eq!(
            err(r#"{"endpoints": []}"#),
            "endpoints: at least one endpoint is required"
        );
    }

    #[test]
    fn rejects_duplicate_endpoint_name() {
        let json = r#"{"endpoints": [
            {"name": "crm", "url": "http://h/", "cluster": "c"},
            {"name": "crm", "url": "http://g/", "cluster": "d"}]}"#;
        assert_eq!(
            err(json),
            r#"endpoints[1].name: duplicate endpoint name "crm""#
        );
    }

    /// Two names with one 64-bit key (FNV-1a, found by a rho search) would share a ledger
    /// slot: the second is refused, naming the first, not just any other endpoint.
    #[test]
    fn names_sharing_a_64_bit_key_are_refused() {
        assert_eq!(endpoint_key("K8p1v24iPRA"), endpoint_key("2oo_nUOI7hG"));
        let json = r#"{"endpoints": [
            {"name": "crm", "url": "http://h/", "cluster": "c"},
            {"name": "K8p1v24iPRA", "url": "http://h/", "cluster": "c"},
            {"name": "2oo_nUOI7hG", "url": "http://h/", "cluster": "c"}]}"#;
        assert_eq!(
            err(json),
            r#"endpoints[2].name: "2oo_nUOI7hG" has the same 64-bit key as endpoints[1] ("K8p1v24iPRA"): rename one"#
        );
    }

    #[test]
    fn rejects_bad_endpoint_names() {
        let msg = "endpoints[0].name: must be 1-64 characters of [A-Za-z0-9_.-]";
        for name in ["", "has space", "ümlaut", &"a".repeat(65)] {
            let json = format!(
                r#"{{"endpoints": [{{"name": "{name}", "url": "http://h", "cluster": "c"}}]}}"#
            );
            assert_eq!(err(&json), msg, "{name}");
        }
        let missing = r#"{"endpoints": [{"url": "http://h", "cluster": "c"}]}"#;
        assert_eq!(err(missing), "endpoints[0].name: is required");
    }

    #[test]
    fn an_endpoint_name_may_take_all_64_characters() {
        let name = "a".repeat(64);
        let json = format!(
            r#"{{"endpoints": [{{"name": "{name}", "url": "http://h", "cluster": "c"}}]}}"#
        );
        assert_eq!(parse(&json).endpoints[0].name, name);
    }

    #[test]
    fn rejects_missing_url_and_cluster() {
        assert_eq!(
            err(r#"{"endpoints": [{"name": "a", "cluster": "c"}]}"#),
            "endpoints[0].url: is required"
        );
        assert_eq!(
            err(r#"{"endpoints": [{"name": "a", "url": "http://h"}]}"#),
            "endpoints[0].cluster: is required"
        );
        assert_eq!(
            err(r#"{"endpoints": [{"name": "a", "url": "http://h", "cluster": ""}]}"#),
            "endpoints[0].cluster: must not be empty"
        );
    }

    fn url_err(url: &str) -> String {
        err(&format!(
            r#"{{"endpoints": [{{"name": "a", "url": "{url}", "cluster": "c"}}]}}"#
        ))
    }

    #[test]
    fn rejects_bad_scheme() {
        assert_eq!(
            url_err("ftp://h/x"),
            r#"endpoints[0].url: scheme must be http or https, got "ftp""#
        );
        assert_eq!(
            url_err("h:8080/x"),
            "endpoints[0].url: must be an absolute http:// or https:// URL"
        );
    }

    #[test]
    fn rejects_fragment() {
        assert_eq!(
            url_err("http://h/x#frag"),
            "endpoints[0].url: fragments (#...) are not allowed"
        );
    }

    #[test]
    fn rejects_userinfo() {
        assert_eq!(
            url_err("http://user:pw@h/x"),
            "endpoints[0].url: userinfo (user@) is not allowed"
        );
    }

    #[test]
    fn rejects_bad_authorities() {
        assert_eq!(url_err("http:///x"), "endpoints[0].url: missing host");
        assert_eq!(url_err("http://h:0/"), "endpoints[0].url: invalid port");
        assert_eq!(url_err("http://h:65536/"), "endpoints[0].url: invalid port");
        assert_eq!(url_err("http://h:/"), "endpoints[0].url: invalid port");
        // Digits only: `u16::from_str` would take a sign.
        assert_eq!(url_err("http://h:+80/"), "endpoints[0].url: invalid port");
        assert_eq!(url_err("http://h%41/"), "endpoints[0].url: invalid host");
        // An IPv6 literal holds hex digits, `:` and `.` (a v4-mapped tail) and nothing else.
        assert_eq!(url_err("http://[::g]/"), "endpoints[0].url: invalid host");
        assert_eq!(
            url_err("http://[fe80::1%25eth0]/"),
            "endpoints[0].url: invalid host"
        );
        assert_eq!(url_err("http://[]/"), "endpoints[0].url: invalid host");
        assert_eq!(
            url_err("http://[::1]x/"),
            "endpoints[0].url: unexpected characters after [IPv6] host"
        );
        // `:path` and `:authority` carry ASCII: a raw `é` must be percent-encoded.
        assert_eq!(
            url_err("http://h/café"),
            "endpoints[0].url: must be ASCII (percent-encode other characters)"
        );
        assert_eq!(
            url_err("http://h x/"),
            "endpoints[0].url: must not contain spaces or control characters"
        );
    }

    #[test]
    fn split_scheme_is_split_once_on_the_first_separator() {
        for url in [
            "",
            ":",
            "://",
            "a://",
            "://b",
            "http://h/p",
            "http:/x://y://z",
            "é://ü",
            "h:/",
            "x:://y",
            "https:///",
        ] {
            assert_eq!(split_scheme(url), url.split_once("://"), "{url}");
        }
    }

    #[test]
    fn parses_urls_into_pseudo_headers() {
        let ok = |url: &str| parse_url(url).unwrap();
        let t = |s: &str, a: &str, p: &str| (s.to_string(), a.to_string(), p.to_string());
        assert_eq!(ok("http://h"), t("http", "h", "/"));
        assert_eq!(
            ok("https://H.Example:8443?a=1"),
            t("https", "h.example:8443", "/?a=1")
        );
        assert_eq!(ok("HTTP://h/a/b?c=d&e"), t("http", "h", "/a/b?c=d&e"));
        assert_eq!(ok("http://[::1]:9000/x"), t("http", "[::1]:9000", "/x"));
        assert_eq!(
            parse_url("http://[::1"),
            Err("unterminated [IPv6] host".to_string())
        );
        assert_eq!(
            Target::from_url("", "http://h"),
            Err("cluster must not be empty".to_string())
        );
    }

    #[test]
    fn rejects_empty_id_lists() {
        assert_eq!(
            endpoint_err(r#""providerIds": []"#),
            "endpoints[0].providerIds: must not be empty (omit it to match any)"
        );
        assert_eq!(
            endpoint_err(r#""channelTypes": []"#),
            "endpoints[0].channelTypes: must not be empty (omit it to match any)"
        );
    }

    /// A review: a filter a template failed to fill in (`"providerIds": null`) was read as
    /// absent, so the endpoint took every provider's notifications (their recipients and
    /// contents) without a word, where `[]` is refused for that very reason.
    #[test]
    fn rejects_null_id_lists() {
        assert_eq!(
            endpoint_err(r#""providerIds": null"#),
            "endpoints[0].providerIds: is null; omit it to match any"
        );
        assert_eq!(
            endpoint_err(r#""channelTypes": null"#),
            "endpoints[0].channelTypes: is null; omit it to match any"
        );
    }

    #[test]
    fn rejects_negative_provider_id() {
        assert_eq!(
            endpoint_err(r#""providerIds": [3, -1]"#),
            "endpoints[0].providerIds[1]: expected a non-negative integer, got a negative integer"
        );
    }

    #[test]
    fn rejects_channel_type_out_of_range() {
        assert_eq!(
            endpoint_err(r#""channelTypes": [1, 13]"#),
            "endpoints[0].channelTypes[1]: must be between 1 and 12"
        );
        assert_eq!(
            endpoint_err(r#""channelTypes": [0]"#),
            "endpoints[0].channelTypes[0]: must be between 1 and 12"
        );
    }

    #[test]
    fn rejects_bad_status_name() {
        assert_eq!(
            endpoint_err(r#""deliveryStatuses": ["SUCCESS", "DONE"]"#),
            "endpoints[0].deliveryStatuses[1]: unknown status \"DONE\", expected one of PENDING, \
             IN_PROGRESS, AWAITING_CONFIRMATION, QUEUED_CONFIRMATION, SUCCESS, FAILED or a code 1-6"
        );
    }

    #[test]
    fn rejects_status_codes_zero_and_seven() {
        assert_eq!(
            endpoint_err(r#""deliveryStatuses": [0]"#),
            "endpoints[0].deliveryStatuses[0]: unknown status code 0, expected 1-6"
        );
        assert_eq!(
            endpoint_err(r#""deliveryStatuses": [6, 7]"#),
            "endpoints[0].deliveryStatuses[1]: unknown status code 7, expected 1-6"
        );
        assert_eq!(
            endpoint_err(r#""deliveryStatuses": [-5]"#),
            "endpoints[0].deliveryStatuses[0]: unknown status code -5, expected 1-6"
        );
    }

    #[test]
    fn rejects_non_scalar_status() {
        assert_eq!(
            endpoint_err(r#""deliveryStatuses": [1.5]"#),
            "endpoints[0].deliveryStatuses[0]: expected a delivery status name or code 1-6, \
             got a floating-point number"
        );
        assert_eq!(
            endpoint_err(r#""deliveryStatuses": [1, true]"#),
            "endpoints[0].deliveryStatuses[1]: expected a delivery status name or code 1-6, \
             got a boolean"
        );
    }

    #[test]
    fn accepts_mixed_status_names_and_codes() {
        let config = parse(&endpoint(
            r#""deliveryStatuses": ["PENDING", 2, "PENDING"]"#,
        ));
        let expected: StatusSet = [DeliveryStatus::Pending, DeliveryStatus::InProgress]
            .into_iter()
            .collect();
        assert_eq!(config.endpoints[0].delivery_statuses, expected);
    }

    #[test]
    fn rejects_empty_statuses() {
        assert_eq!(
            endpoint_err(r#""deliveryStatuses": []"#),
            "endpoints[0].deliveryStatuses: must not be empty (omit it for SUCCESS and FAILED)"
        );
    }

    /// README's Configuration reference gives each range with its ends included: a value at
    /// either end loads, and is kept as given.
    #[test]
    fn every_range_end_the_readme_gives_is_accepted() {
        for end in [Ends::Low, Ends::High] {
            let pick = |low: u64, high: u64| if end == Ends::Low { low } else { high };
            let (t, inflight, threshold, open) = (
                pick(1, 600_000),
                pick(1, 10_000),
                pick(1, 1000),
                pick(100, 86_400_000),
            );
            let (wait, channel, status) = (pick(0, 60_000), pick(1, 12), pick(1, 6));
            let (attempts, body, buffered) =
                (pick(1, 100), pick(1024, 64 << 20), pick(1 << 20, 512 << 20));
            let (pending, remembered, tick, learned) = (
                pick(1, 1_000_000),
                pick(1024, 4_000_000),
                pick(10, 60_000),
                pick(1, 10_000),
            );
            let json = format!(
                r#"{{"endpoints": [{{"name": "a", "url": "http://h/", "cluster": "c",
                    "timeoutMs": {t}, "maxInFlight": {inflight}, "awaitResultMs": {wait},
                    "circuitBreaker": {{"failureThreshold": {threshold}, "openMs": {open}}},
                    "channelTypes": [{channel}], "deliveryStatuses": [{status}],
                    "retry": {{"maxAttempts": {attempts}, "initialDelayMs": 1, "maxDelayMs": 1,
                               "multiplier": 1.0, "jitter": 0.0}}}}],
                  "watch": {{"maxBodyBytes": {body}, "maxBufferedBytes": {buffered}}},
                  "limits": {{"maxPending": {pending}, "maxRemembered": {remembered}}},
                  "deadLetter": {{"url": "http://d/", "cluster": "d", "timeoutMs": {t}}},
                  "learn": {{"enabled": true, "cluster": "e", "allowHosts": ["a.b"],
                             "timeoutMs": {t}, "maxLearned": {learned}}},
                  "tickMs": {tick}}}"#
            );
            let config = Config::from_json(json.as_bytes(), &|_| None)
                .unwrap_or_else(|e| panic!("{end:?}: {e}"));
            let e = &config.endpoints[0];
            assert_eq!(e.timeout_ms, t);
            assert_eq!(u64::from(e.max_in_flight), inflight);
            assert_eq!(e.await_result_ms, wait);
            assert_eq!(u64::from(e.circuit.failure_threshold), threshold);
            assert_eq!(e.circuit.open_ms, open);
            assert_eq!(e.channel_types, Some(vec![channel]));
            assert_eq!(u64::from(e.retry.max_attempts()), attempts);
            assert_eq!(config.watch.max_body_bytes as u64, body);
            assert_eq!(config.watch.max_buffered_bytes as u64, buffered);
            assert_eq!(u64::from(config.limits.max_pending), pending);
            assert_eq!(u64::from(config.limits.max_remembered), remembered);
            assert_eq!(config.dead_letter.map(|d| d.timeout_ms), Some(t));
            let learn = config.learn.unwrap();
            assert_eq!((learn.timeout_ms, learn.max_learned as u64), (t, learned));
            assert_eq!(config.tick_ms, tick);
        }
        // A schedule of 99 entries, each up to maxDelayMs, with the 100 attempts it implies.
        let schedule = vec!["3600000"; 99].join(", ");
        let json = format!(
            r#"{{"endpoints": [{{"name": "a", "url": "http://h/", "cluster": "c"}}],
                 "retry": {{"schedule": [{schedule}], "maxAttempts": 100, "jitter": 0.999}}}}"#
        );
        assert_eq!(parse(&json).retry.max_attempts(), 100);
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Ends {
        Low,
        High,
    }

    #[test]
    fn rejects_out_of_range_numbers() {
        for (extra, msg) in [
            (
                r#""timeoutMs": 0"#,
                "endpoints[0].timeoutMs: must be between 1 and 600000",
            ),
            (
                r#""timeoutMs": 600001"#,
                "endpoints[0].timeoutMs: must be between 1 and 600000",
            ),
            (
                r#""maxInFlight": 0"#,
                "endpoints[0].maxInFlight: must be between 1 and 10000",
            ),
            (
                r#""maxInFlight": 10001"#,
                "endpoints[0].maxInFlight: must be between 1 and 10000",
            ),
            (
                r#""circuitBreaker": {"failureThreshold": 0}"#,
                "endpoints[0].circuitBreaker.failureThreshold: must be between 1 and 1000",
            ),
            (
                r#""circuitBreaker": {"failureThreshold": 1001}"#,
                "endpoints[0].circuitBreaker.failureThreshold: must be between 1 and 1000",
            ),
            (
                r#""circuitBreaker": {"openMs": 99}"#,
                "endpoints[0].circuitBreaker.openMs: must be between 100 and 86400000",
            ),
            (
                r#""circuitBreaker": {"openMs": 86400001}"#,
                "endpoints[0].circuitBreaker.openMs: must be between 100 and 86400000",
            ),
            (
                r#""awaitResultMs": 60001"#,
                "endpoints[0].awaitResultMs: must be between 0 and 60000",
            ),
            (
                r#""rateLimit": {"burst": 5}"#,
                "endpoints[0].rateLimit.perSecond: is required",
            ),
            (
                r#""rateLimit": {"perSecond": 0}"#,
                "endpoints[0].rateLimit.perSecond: must be between 1 and 100000",
            ),
            (
                r#""rateLimit": {"perSecond": 100001}"#,
                "endpoints[0].rateLimit.perSecond: must be between 1 and 100000",
            ),
            (
                r#""rateLimit": {"perSecond": 5, "burst": 0}"#,
                "endpoints[0].rateLimit.burst: must be between 1 and 100000",
            ),
            (
                r#""rateLimit": {"perSecond": 5, "perMinute": 5}"#,
                "endpoints[0].rateLimit.perMinute: unknown field, expected one of `perSecond`, `burst`",
            ),
            (
                r#""awaitResultMs": -1"#,
                "endpoints[0].awaitResultMs: expected a non-negative integer, got a negative integer",
            ),
        ] {
            assert_eq!(endpoint_err(extra), msg);
        }
        let ep = r#""endpoints": [{"name": "a", "url": "http://h", "cluster": "c"}]"#;
        for (extra, msg) in [
            (r#""tickMs": 9"#, "tickMs: must be between 10 and 60000"),
            (r#""tickMs": 60001"#, "tickMs: must be between 10 and 60000"),
            (
                r#""limits": {"maxPending": 0}"#,
                "limits.maxPending: must be between 1 and 1000000",
            ),
            (
                r#""limits": {"maxPending": 1000001}"#,
                "limits.maxPending: must be between 1 and 1000000",
            ),
            (
                r#""limits": {"maxRemembered": 1023}"#,
                "limits.maxRemembered: must be between 1024 and 4000000",
            ),
            (
                r#""limits": {"maxRemembered": 4000001}"#,
                "limits.maxRemembered: must be between 1024 and 4000000",
            ),
            (
                r#""watch": {"maxBodyBytes": 1023}"#,
                "watch.maxBodyBytes: must be between 1024 and 67108864",
            ),
            (
                r#""watch": {"maxBodyBytes": 67108865}"#,
                "watch.maxBodyBytes: must be between 1024 and 67108864",
            ),
            (
                r#""watch": {"maxBufferedBytes": 1048575}"#,
                "watch.maxBufferedBytes: must be between 1048576 and 536870912",
            ),
            (
                r#""watch": {"maxBufferedBytes": 536870913}"#,
                "watch.maxBufferedBytes: must be between 1048576 and 536870912",
            ),
            (
                r#""watch": {"maxBodyBytes": 1048576, "maxBufferedBytes": 1048576}"#,
                "watch.maxBufferedBytes: must hold watch.maxBodyBytes and a GraphQL request (64 KiB) besides",
            ),
            (
                r#""deadLetter": {"url": "http://d/", "cluster": "d", "timeoutMs": 0}"#,
                "deadLetter.timeoutMs: must be between 1 and 600000",
            ),
            (
                r#""learn": {"enabled": true, "cluster": "e", "allowHosts": ["a.b"], "timeoutMs": 600001}"#,
                "learn.timeoutMs: must be between 1 and 600000",
            ),
        ] {
            assert_eq!(err(&format!("{{{ep}, {extra}}}")), msg);
        }
    }

    /// One past each README range end that `rejects_out_of_range_numbers` leaves out.
    #[test]
    fn rejects_one_past_the_other_range_ends() {
        let ep = r#""endpoints": [{"name": "a", "url": "http://h", "cluster": "c"}]"#;
        let learn = r#""enabled": true, "cluster": "e", "allowHosts": ["a.b"]"#;
        let schedule = vec!["1"; 100].join(", ");
        for (extra, msg) in [
            (
                r#""retry": {"maxAttempts": 101}"#.to_string(),
                "retry.maxAttempts: must be between 1 and 100",
            ),
            (
                format!(r#""retry": {{"schedule": [{schedule}]}}"#),
                "retry.schedule: must have at most 99 entries, got 100",
            ),
            (
                r#""deadLetter": {"url": "http://d/", "cluster": "d", "timeoutMs": 600001}"#
                    .to_string(),
                "deadLetter.timeoutMs: must be between 1 and 600000",
            ),
            (
                format!(r#""learn": {{{learn}, "timeoutMs": 0}}"#),
                "learn.timeoutMs: must be between 1 and 600000",
            ),
            (
                format!(
                    r#""learn": {{{learn}, "rateLimit": {{"perSecond": 1, "burst": 100001}}}}"#
                ),
                "learn.rateLimit.burst: must be between 1 and 100000",
            ),
        ] {
            assert_eq!(err(&format!("{{{ep}, {extra}}}")), msg, "{extra}");
        }
        assert_eq!(
            endpoint_err(r#""rateLimit": {"perSecond": 1, "burst": 100001}"#),
            "endpoints[0].rateLimit.burst: must be between 1 and 100000"
        );
    }

    /// Every integer field refuses every other kind of value, naming its own path and the
    /// kind, never the value.
    #[test]
    fn every_integer_field_names_its_path_when_given_another_kind() {
        let in_endpoint = |f: &str| {
            format!(r#"{{"endpoints": [{{"name": "a", "url": "http://h", "cluster": "c", {f}}}]}}"#)
        };
        let top = |f: &str| {
            format!(r#"{{"endpoints": [{{"name": "a", "url": "http://h", "cluster": "c"}}], {f}}}"#)
        };
        let learn = r#""learn": {"enabled": true, "cluster": "e", "allowHosts": ["a.b"], "#;
        let fields = [
            (in_endpoint(r#""timeoutMs": $"#), "endpoints[0].timeoutMs"),
            (
                in_endpoint(r#""maxInFlight": $"#),
                "endpoints[0].maxInFlight",
            ),
            (
                in_endpoint(r#""awaitResultMs": $"#),
                "endpoints[0].awaitResultMs",
            ),
            (
                in_endpoint(r#""providerIds": [$]"#),
                "endpoints[0].providerIds[0]",
            ),
            (
                in_endpoint(r#""channelTypes": [1, $]"#),
                "endpoints[0].channelTypes[1]",
            ),
            (
                in_endpoint(r#""circuitBreaker": {"failureThreshold": $}"#),
                "endpoints[0].circuitBreaker.failureThreshold",
            ),
            (
                in_endpoint(r#""circuitBreaker": {"openMs": $}"#),
                "endpoints[0].circuitBreaker.openMs",
            ),
            (
                in_endpoint(r#""rateLimit": {"perSecond": $}"#),
                "endpoints[0].rateLimit.perSecond",
            ),
            (
                in_endpoint(r#""rateLimit": {"perSecond": 1, "burst": $}"#),
                "endpoints[0].rateLimit.burst",
            ),
            (
                in_endpoint(r#""retry": {"maxAttempts": $}"#),
                "endpoints[0].retry.maxAttempts",
            ),
            (
                in_endpoint(r#""retry": {"initialDelayMs": $}"#),
                "endpoints[0].retry.initialDelayMs",
            ),
            (
                in_endpoint(r#""retry": {"maxDelayMs": $}"#),
                "endpoints[0].retry.maxDelayMs",
            ),
            (
                in_endpoint(r#""retry": {"schedule": [1, 2, 3, $]}"#),
                "endpoints[0].retry.schedule[3]",
            ),
            (top(r#""retry": {"schedule": [$]}"#), "retry.schedule[0]"),
            (top(r#""watch": {"maxBodyBytes": $}"#), "watch.maxBodyBytes"),
            (
                top(r#""watch": {"maxBufferedBytes": $}"#),
                "watch.maxBufferedBytes",
            ),
            (top(r#""limits": {"maxPending": $}"#), "limits.maxPending"),
            (
                top(r#""limits": {"maxRemembered": $}"#),
                "limits.maxRemembered",
            ),
            (
                top(r#""deadLetter": {"url": "http://d/", "cluster": "d", "timeoutMs": $}"#),
                "deadLetter.timeoutMs",
            ),
            (
                top(&format!(r#"{learn}"timeoutMs": $}}"#)),
                "learn.timeoutMs",
            ),
            (
                top(&format!(r#"{learn}"maxLearned": $}}"#)),
                "learn.maxLearned",
            ),
            (
                top(&format!(r#"{learn}"rateLimit": {{"perSecond": $}}}}"#)),
                "learn.rateLimit.perSecond",
            ),
            (top(r#""tickMs": $"#), "tickMs"),
        ];
        let kinds = [
            ("1.5", "a floating-point number"),
            ("100.0", "a floating-point number"),
            ("1e2", "a floating-point number"),
            ("-1", "a negative integer"),
            ("18446744073709551616", "an integer out of range"),
            (r#""7""#, "a string"),
            ("true", "a boolean"),
            ("[]", "an array"),
            ("{}", "an object"),
        ];
        for (template, path) in &fields {
            for (value, kind) in kinds {
                assert_eq!(
                    err(&template.replace('$', value)),
                    format!("{path}: expected a non-negative integer, got {kind}"),
                    "{template} with {value}"
                );
            }
        }
    }

    #[test]
    fn rejects_bad_header_name() {
        assert_eq!(
            endpoint_err(r#""headers": {"x bad": "v"}"#),
            r#"endpoints[0].headers["x bad"]: not a valid HTTP header name"#
        );
        assert_eq!(
            endpoint_err(r#""headers": {"": "v"}"#),
            r#"endpoints[0].headers[""]: not a valid HTTP header name"#
        );
        // Headers are read sorted by name, so the one named the duplicate does not depend on
        // the order the JSON gives them in.
        for headers in [
            r#"{"x-team": "a", "X-Team": "b"}"#,
            r#"{"X-Team": "b", "x-team": "a"}"#,
        ] {
            assert_eq!(
                endpoint_err(&format!(r#""headers": {headers}"#)),
                r#"endpoints[0].headers["x-team"]: duplicate header name (names are case-insensitive)"#
            );
        }
    }

    /// Every name the README's table refuses, spelled out here rather than read from
    /// `RESERVED_HEADERS`, so that dropping one from the list fails this test.
    #[test]
    fn rejects_reserved_headers() {
        for name in [
            "Content-Type",
            "content-length",
            "host",
            "user-agent",
            "Webhook-Signature",
            "webhook-id",
            "webhook-timestamp",
            "Transfer-Encoding",
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "Upgrade",
            "expect",
        ] {
            assert_eq!(
                endpoint_err(&format!(r#""headers": {{"{name}": "v"}}"#)),
                format!(
                    r#"endpoints[0].headers["{name}"]: is set by the filter and cannot be configured"#
                )
            );
        }
    }

    /// A review: a static `content-encoding` loaded, and then every receiver tried to decode
    /// the plain JSON body by it (Express's body parser answers 400 or 415), so no webhook to
    /// that endpoint could ever succeed.
    #[test]
    fn rejects_a_content_encoding() {
        for name in ["content-encoding", "Content-Encoding"] {
            assert_eq!(
                endpoint_err(&format!(r#""headers": {{"{name}": "gzip"}}"#)),
                format!(
                    r#"endpoints[0].headers["{name}"]: is set by the filter and cannot be configured"#
                )
            );
        }
        assert_eq!(
            err(r#"{"endpoints": [], "learn": {"originalDstHeader": "content-encoding"}}"#),
            "learn.originalDstHeader: is set by the filter and cannot be configured"
        );
    }

    /// Envoy's router obeys these on the webhook call: a review saw `x-envoy-retry-on` turn
    /// one attempt into four on the wire.
    #[test]
    fn rejects_headers_that_steer_envoy() {
        for name in ["x-envoy-retry-on", "X-Envoy-Upstream-Rq-Timeout-Ms"] {
            assert_eq!(
                endpoint_err(&format!(r#""headers": {{"{name}": "5xx"}}"#)),
                format!(
                    r#"endpoints[0].headers["{name}"]: x-envoy-* headers steer Envoy's own retries and timeouts; use retry and timeoutMs"#
                )
            );
        }
    }

    #[test]
    fn rejects_control_characters_in_header_values() {
        // DEL and the rest were accepted once, and then failed every attempt in Envoy.
        let more = [r"a\u007f", r"a\u0001", r"a\u001b[0m"];
        for value in [r"a\r\nx-evil: 1", r"a\nb", r"a\u0000b"]
            .into_iter()
            .chain(more)
        {
            assert_eq!(
                endpoint_err(&format!(r#""headers": {{"x-ok": "{value}"}}"#)),
                r#"endpoints[0].headers["x-ok"]: value must not contain control characters (tab aside)"#
            );
        }
    }

    #[test]
    fn rejects_pseudo_header() {
        assert_eq!(
            endpoint_err(r#""headers": {":authority": "evil"}"#),
            r#"endpoints[0].headers[":authority"]: pseudo-headers cannot be configured"#
        );
    }

    #[test]
    fn rejects_bad_dead_letter_headers_and_target() {
        let ep = r#""endpoints": [{"name": "a", "url": "http://h", "cluster": "c"}]"#;
        assert_eq!(
            err(&format!(
                r#"{{{ep}, "deadLetter": {{"url": "http://d", "cluster": "d", "headers": {{"Host": "x"}}}}}}"#
            )),
            r#"deadLetter.headers["Host"]: is set by the filter and cannot be configured"#
        );
        assert_eq!(
            err(&format!(r#"{{{ep}, "deadLetter": {{"cluster": "d"}}}}"#)),
            "deadLetter.url: is required"
        );
    }

    /// `Secret::parse`'s own message, so these tests survive a change of its wording.
    fn secret_error(s: &str) -> String {
        Secret::parse(s).unwrap_err().to_string()
    }

    #[test]
    fn rejects_bad_secret_without_echoing_it() {
        let bad = "whsec_not*base64";
        let msg = endpoint_err(&format!(r#""secret": "{bad}""#));
        assert_eq!(msg, format!("endpoints[0].secret: {}", secret_error(bad)));
        assert!(!msg.contains("not*base64"), "{msg}");
        let msg = endpoint_err(&format!(r#""secrets": ["{S1}", "whsec_"]"#));
        assert_eq!(
            msg,
            format!("endpoints[0].secrets[1]: {}", secret_error("whsec_"))
        );
    }

    #[test]
    fn rejects_secrets_string_without_echoing_it() {
        let msg = endpoint_err(&format!(r#""secrets": "{S1}""#));
        assert_eq!(
            msg,
            "endpoints[0].secrets: expected an array of secret strings, got a string"
        );
        assert!(!msg.contains("MfKQ9r8"), "{msg}");
        assert_eq!(
            endpoint_err(r#""secret": 5"#),
            "endpoints[0].secret: expected a secret string, got an integer"
        );
        assert_eq!(
            endpoint_err(&format!(r#""secrets": ["{S1}", 5]"#)),
            "endpoints[0].secrets[1]: expected a secret string, got an integer"
        );
    }

    #[test]
    fn rejects_missing_secret_env_var() {
        assert_eq!(
            endpoint_err(r#""secretEnv": "NOPE""#),
            "endpoints[0].secretEnv: names an environment variable that is not set or empty in the VM (is it listed in vm_config.environment_variables.host_env_keys?)"
        );
        assert_eq!(
            endpoint_err(r#""secretEnv": "EMPTY""#),
            "endpoints[0].secretEnv: names an environment variable that is not set or empty in the VM (is it listed in vm_config.environment_variables.host_env_keys?)"
        );
        // A secret pasted in place of the variable's name is not echoed to the log.
        let pasted = endpoint_err(&format!(r#""secretEnv": "{S1}""#));
        assert!(!pasted.contains(S1), "{pasted}");
        assert_eq!(
            endpoint_err(r#""secretEnv": """#),
            "endpoints[0].secretEnv: must name an environment variable"
        );
    }

    #[test]
    fn rejects_bad_secret_env_value_without_echoing_it() {
        let msg = endpoint_err(r#""secretEnv": "GARBAGE""#);
        assert_eq!(
            msg,
            format!(
                "endpoints[0].secretEnv: the environment variable it names: {}",
                secret_error("whsec_!!!not-base64!!!")
            )
        );
        assert!(!msg.contains("not-base64"), "{msg}");
    }

    /// A delay out of range is named by its index, as a delay of the wrong type there is
    /// (`every_integer_field_names_its_path_when_given_another_kind`), in the top-level
    /// block and in an endpoint's, against that block's own `maxDelayMs`.
    #[test]
    fn a_schedule_entry_out_of_range_is_named_by_its_index() {
        let ep = r#"{"name": "a", "url": "http://h", "cluster": "c"}"#;
        let ep2 = r#"{"name": "a2", "url": "http://h", "cluster": "c"}"#;
        let retry = r#""retry": {"schedule": [1, 2, 3, 7200000], "maxDelayMs": 7200000}"#;
        for (config, msg) in [
            (
                format!(r#"{{"endpoints": [{ep}], "retry": {{"schedule": [1, 0]}}}}"#),
                "retry.schedule[1]: must be between 1 and maxDelayMs (3600000), got 0",
            ),
            (
                format!(
                    r#"{{"endpoints": [{ep}, {ep2}, {{"name": "b", "url": "http://h", "cluster": "c",
                         "retry": {{"schedule": [1, 2, 3, 3600001]}}}}], {retry}}}"#
                ),
                "endpoints[2].retry.schedule[3]: must be between 1 and maxDelayMs (3600000), \
                 got 3600001",
            ),
            (
                format!(
                    r#"{{"endpoints": [{{"name": "b", "url": "http://h", "cluster": "c",
                         "retry": {{"schedule": [5000], "maxDelayMs": 1000}}}}], {retry}}}"#
                ),
                "endpoints[0].retry.schedule[0]: must be between 1 and maxDelayMs (1000), \
                 got 5000",
            ),
        ] {
            assert_eq!(err(&config), msg);
        }
        // The endpoint's own cap lets its schedule go past the top-level one's.
        let config = parse(&format!(
            r#"{{"endpoints": [{{"name": "b", "url": "http://h", "cluster": "c", {retry}}}]}}"#
        ));
        assert_eq!(config.endpoints[0].retry.max_delay_ms(), 7_200_000);
    }

    #[test]
    fn rejects_schedule_max_attempts_conflict() {
        assert_eq!(
            endpoint_err(r#""retry": {"maxAttempts": 2, "schedule": [1, 2]}"#),
            "endpoints[0].retry.maxAttempts: must equal the schedule length + 1 (3)"
        );
    }

    #[test]
    fn rejects_bad_retry_values() {
        for (retry, msg) in [
            (
                r#"{"jitter": 1.0}"#,
                "endpoints[0].retry.jitter: must be a finite number in [0, 1)",
            ),
            (
                r#"{"jitter": -0.1}"#,
                "endpoints[0].retry.jitter: must be a finite number in [0, 1)",
            ),
            (
                r#"{"maxAttempts": 0}"#,
                "endpoints[0].retry.maxAttempts: must be between 1 and 100",
            ),
            (
                r#"{"maxAttempts": 4294967297}"#,
                "endpoints[0].retry.maxAttempts: must be between 1 and 100",
            ),
            (
                r#"{"initialDelayMs": 0}"#,
                "endpoints[0].retry.initialDelayMs: must be at least 1",
            ),
            (
                r#"{"multiplier": 0.5}"#,
                "endpoints[0].retry.multiplier: must be a finite number >= 1.0",
            ),
            (
                r#"{"initialDelayMs": 10, "maxDelayMs": 5}"#,
                "endpoints[0].retry.maxDelayMs: must be >= initialDelayMs (10)",
            ),
            (
                r#"{"schedule": []}"#,
                "endpoints[0].retry.schedule: must not be empty",
            ),
            (
                r#"{"schedule": [1, 3600001]}"#,
                "endpoints[0].retry.schedule[1]: must be between 1 and maxDelayMs (3600000), got 3600001",
            ),
        ] {
            assert_eq!(endpoint_err(&format!(r#""retry": {retry}"#)), msg);
        }
        let ep = r#""endpoints": [{"name": "a", "url": "http://h", "cluster": "c"}]"#;
        assert_eq!(
            err(&format!(r#"{{{ep}, "retry": {{"schedule": [0]}}}}"#)),
            "retry.schedule[0]: must be between 1 and maxDelayMs (3600000), got 0"
        );
    }

    #[test]
    fn rejects_bad_watch_paths() {
        let ep = r#""endpoints": [{"name": "a", "url": "http://h", "cluster": "c"}]"#;
        assert_eq!(
            err(&format!(
                r#"{{{ep}, "watch": {{"graphqlPaths": ["/graphql", "graphql"]}}}}"#
            )),
            r#"watch.graphqlPaths[1]: must start with "/""#
        );
        assert_eq!(
            err(&format!(
                r#"{{{ep}, "watch": {{"graphqlPaths": [], "restPathPrefixes": []}}}}"#
            )),
            "watch: graphqlPaths and restPathPrefixes must not both be empty"
        );
        let only_rest = parse(&format!(r#"{{{ep}, "watch": {{"graphqlPaths": []}}}}"#));
        assert_eq!(
            only_rest.watch.rest_path_prefixes,
            vec!["/notifications".to_string()]
        );
    }

    /// Envoy hands the filter a `:path` without spaces, control characters or raw non-ASCII
    /// (a client must percent-encode them): a watch path holding one (a trailing space pasted
    /// from a document, a `\n` from a template) could never match, and the filter would
    /// load and silently watch nothing there.
    #[test]
    fn rejects_watch_paths_that_no_request_path_can_match() {
        let ep = r#""endpoints": [{"name": "a", "url": "http://h", "cluster": "c"}]"#;
        for (watch, at) in [
            (r#""graphqlPaths": ["/graphql "]"#, "watch.graphqlPaths[0]"),
            (
                r#""graphqlPaths": ["/graphql", "/gra phql"]"#,
                "watch.graphqlPaths[1]",
            ),
            (r#""graphqlPaths": ["/graphql\n"]"#, "watch.graphqlPaths[0]"),
            (
                r#""restPathPrefixes": ["/notificações"]"#,
                "watch.restPathPrefixes[0]",
            ),
            (
                r#""restPathPrefixes": ["/notifications\t"]"#,
                "watch.restPathPrefixes[0]",
            ),
        ] {
            assert_eq!(
                err(&format!(r#"{{{ep}, "watch": {{{watch}}}}}"#)),
                format!(
                    "{at}: must not contain spaces, control characters or non-ASCII \
                     characters (percent-encode them as requests carry them)"
                ),
                "{watch}"
            );
        }
        let encoded = parse(&format!(
            r#"{{{ep}, "watch": {{"restPathPrefixes": ["/notifica%C3%A7%C3%B5es"]}}}}"#
        ));
        assert_eq!(
            encoded.watch.rest_path_prefixes,
            vec!["/notifica%C3%A7%C3%B5es".to_string()]
        );
    }

    /// The least `maxBufferedBytes` takes is exactly a whole body and a GraphQL request, of
    /// 64 KiB: one byte less is refused.
    #[test]
    fn max_buffered_bytes_may_hold_just_a_body_and_a_request() {
        let config = parse(
            r#"{"endpoints": [{"name": "a", "url": "http://h", "cluster": "c"}],
                "watch": {"maxBodyBytes": 983040, "maxBufferedBytes": 1048576}}"#,
        );
        assert_eq!(config.watch.max_buffered_bytes, 983_040 + 64 * 1024);
        assert_eq!(
            err(r#"{"endpoints": [{"name": "a", "url": "http://h", "cluster": "c"}],
                "watch": {"maxBodyBytes": 983041, "maxBufferedBytes": 1048576}}"#),
            "watch.maxBufferedBytes: must hold watch.maxBodyBytes and a GraphQL request (64 KiB) besides"
        );
    }

    #[test]
    fn rejects_incomplete_learn() {
        let base = r#""endpoints": []"#;
        assert_eq!(
            err(&format!(
                r#"{{{base}, "learn": {{"enabled": true, "allowHosts": ["a.b"]}}}}"#
            )),
            "learn.cluster: is required when learn is enabled"
        );
        assert_eq!(
            err(&format!(
                r#"{{{base}, "learn": {{"enabled": true, "cluster": "e"}}}}"#
            )),
            "learn.allowHosts: must not be empty when learn is enabled"
        );
        assert_eq!(
            err(&format!(
                r#"{{{base}, "learn": {{"enabled": true, "cluster": "e", "allowHosts": ["a.b", "*"]}}}}"#
            )),
            format!("learn.allowHosts[1]: {}", bad_pattern("*"))
        );
        assert_eq!(
            err(&format!(
                r#"{{{base}, "learn": {{"enabled": true, "cluster": "", "allowHosts": ["a.b"]}}}}"#
            )),
            "learn.cluster: is required when learn is enabled"
        );
    }

    #[test]
    fn host_patterns_match_case_insensitively() {
        let wild = HostPattern::parse("*.partner.example.com").unwrap();
        assert!(wild.matches("a.partner.example.com"));
        assert!(wild.matches("X.Y.Partner.Example.COM"));
        assert!(!wild.matches("partner.example.com"));
        assert!(!wild.matches(".partner.example.com"));
        assert!(!wild.matches("apartner.example.com"));
        // A review: a label that runs into the suffix without its dot.
        assert!(!wild.matches("evilpartner.example.com"));
        assert!(!wild.matches("ab.cpartner.example.com"));
        assert!(!wild.matches("a.partner.example.com.evil"));
        // The suffix boundary falls inside `é`: no match, and no panic.
        assert!(!HostPattern::parse("*.x.example.com")
            .unwrap()
            .matches("éx.example.com"));
        let exact = HostPattern::parse("Hooks.Example.com").unwrap();
        assert!(exact.matches("hooks.example.COM"));
        assert!(!exact.matches("a.hooks.example.com"));
        assert_eq!(exact.to_string(), "hooks.example.com");
        assert_eq!(wild.to_string(), "*.partner.example.com");
    }

    #[test]
    fn quoted_escapes_ascii_as_debug_does() {
        for s in [
            "plain",
            "",
            "a\"b",
            "back\\slash",
            "\n\r\t\0",
            "\u{1b}[31m\u{7f}\u{1}",
            "ümlaut é",
            "'single'",
        ] {
            assert_eq!(Quoted(s).to_string(), format!("{s:?}"), "{s}");
        }
    }

    fn bad_pattern(p: &str) -> String {
        format!(
            "invalid host pattern {p:?}: expected a hostname or *.suffix, then :port or :* for \
             ports other than the scheme's own (80 for http, 443 for https)"
        )
    }

    #[test]
    fn rejects_malformed_host_patterns() {
        for p in [
            "", "*.", "a..b", "*.*.b", "a.*.b", "a_b", "a b", "a:", "a:0", "a:65536", "a:+80",
            "a:8o", "a:80:80", ":80", "*:80", "[::1]:80",
        ] {
            assert_eq!(HostPattern::parse(p), Err(bad_pattern(p)), "{p}");
        }
    }

    /// DNS's own bounds: a label of 63 characters is a hostname, one of 64 is not; likewise
    /// a name of 253 characters and one of 254.
    #[test]
    fn host_patterns_take_labels_of_up_to_63_characters() {
        let longest = format!("{}.example.com", "a".repeat(63));
        assert_eq!(
            HostPattern::parse(&longest).map(|p| p.to_string()),
            Ok(longest)
        );
        let too_long = format!("*.{}.example.com", "a".repeat(64));
        assert_eq!(HostPattern::parse(&too_long), Err(bad_pattern(&too_long)));
        // And a name of up to 253 characters: four labels of 63 and their dots make 255.
        let label = "a".repeat(63);
        let longest_name = format!("{label}.{label}.{label}.{}", "a".repeat(61));
        assert_eq!(longest_name.len(), 253);
        assert!(HostPattern::parse(&longest_name).is_ok());
        let too_long_name = format!("{longest_name}a");
        assert_eq!(
            HostPattern::parse(&too_long_name),
            Err(bad_pattern(&too_long_name))
        );
    }

    #[test]
    fn host_patterns_allow_the_schemes_port_unless_they_name_ports() {
        let plain = HostPattern::parse("hooks.example.com").unwrap();
        assert!(plain.allows("https", "hooks.example.com", 443));
        assert!(plain.allows("http", "hooks.example.com", 80));
        assert!(!plain.allows("http", "hooks.example.com", 443));
        assert!(!plain.allows("https", "hooks.example.com", 9901));
        let one = HostPattern::parse("*.Partner.example.com:8443").unwrap();
        assert!(one.allows("https", "a.partner.example.com", 8443));
        assert!(!one.allows("https", "a.partner.example.com", 443));
        assert!(!one.allows("https", "partner.example.com", 8443));
        let any = HostPattern::parse("10.0.0.5:*").unwrap();
        assert!(any.allows("http", "10.0.0.5", 1));
        assert!(any.allows("https", "10.0.0.5", 65535));
        assert!(!any.allows("http", "10.0.0.6", 80));
        assert_eq!(one.to_string(), "*.partner.example.com:8443");
        assert_eq!(any.to_string(), "10.0.0.5:*");
        // Told apart in the fingerprint: a port is part of what delivers differently.
        let with = |hosts: &str| {
            parse(&format!(
                r#"{{"endpoints": [], "learn": {{"enabled": true, "cluster": "e", "allowHosts": [{hosts}]}}}}"#
            ))
            .delivery_fingerprint()
        };
        let prints = [with(r#""a.b""#), with(r#""a.b:80""#), with(r#""a.b:*""#)];
        assert!(prints[0] != prints[1] && prints[1] != prints[2] && prints[0] != prints[2]);
        // So is a wildcard: `*.a.b` allows other hosts than `a.b`.
        assert_ne!(with(r#""*.a.b""#), prints[0]);
    }
}
