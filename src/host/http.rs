//! The HTTP context: watches one stream without ever changing or delaying it. It copies the
//! watched response's chunks (bounded) as they pass, always returning `Continue`, and hands
//! the whole body to the core in `on_log`, after the client has it. It never reads the
//! response's headers, and the module does not export their callback, so Envoy does not
//! enter the VM for them (`extract::judge` says how a response is judged without them).

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};

use super::root::{now_ms, Shared};
use super::shared_store::SharedData;
use crate::body::{Body, Budget};
use crate::config::MAX_GRAPHQL_REQUEST_BYTES;
use crate::events;
use crate::extract::{self, persisted, RequestFacts, RequestHead, WatchKind};
use crate::intake;
use crate::learn::Registry;
use crate::metrics::{Metric, Metrics};

thread_local! {
    /// What this VM's streams hold of watched bodies (`watch.maxBufferedBytes`).
    static BUFFERED: Budget = const { Budget::new() };
}

pub struct Watch {
    context_id: u32,
    shared: Rc<Shared>,
    kind: Option<WatchKind>,
    /// Read notifications from the body: cleared when the response is not one to parse.
    notifications: bool,
    /// A call that may change OsmoX's webhook table, watched when learning is on.
    registration: bool,
    /// The whole GraphQL request body is in `request`. A request to a GraphQL path with no
    /// body bytes (neither in `request` nor lost to a gap) is a GET, not a GraphQL call.
    request_complete: bool,
    /// Part of the GraphQL request body was not read (too large, or refused): what was read
    /// is dropped and no more is.
    request_gap: bool,
    /// The response has begun (`response_begins`); until then `on_log` has nothing to read.
    responded: bool,
    /// The request registers a persisted query, and its answer was skipped: `request` is
    /// kept for `on_log` to keep its text.
    persist: bool,
    method: String,
    path: String,
    request: Vec<u8>,
    body: Body,
    /// The bytes of `request` and `body` taken from `BUFFERED`.
    held: usize,
}

impl Watch {
    pub fn new(context_id: u32, shared: Rc<Shared>) -> Self {
        Watch {
            context_id,
            shared,
            kind: None,
            notifications: false,
            registration: false,
            request_complete: false,
            request_gap: false,
            responded: false,
            persist: false,
            method: String::new(),
            path: String::new(),
            request: Vec::new(),
            body: Body::Empty,
            held: 0,
        }
    }

    /// Whether `bytes` more of a watched body fit in what the VM may hold; if so, they count
    /// as this stream's until `let_go`.
    fn hold(&mut self, bytes: usize) -> bool {
        let limit = self.shared.config.watch.max_buffered_bytes;
        let fits = BUFFERED.with(|b| b.take(bytes, limit));
        if fits {
            self.held += bytes;
        }
        fits
    }

    /// Drop the copied bodies and give their bytes back.
    fn let_go(&mut self) {
        self.request = Vec::new();
        self.body = Body::Empty;
        BUFFERED.with(|b| b.give_back(self.held));
        self.held = 0;
    }

    /// Stop reading this response, counting why.
    fn skip(&mut self, why: Metric) {
        self.shared.metrics.add(why, 1);
        // A registration's text matters whatever its answer: Apollo's server will not send
        // it again while it remembers it. Its bytes stay held until the stream ends.
        self.persist = self.names_persisted();
        self.kind = None;
        if !self.persist {
            self.let_go();
            return;
        }
        let body_bytes = self.held.saturating_sub(self.request.len());
        self.body = Body::Empty;
        BUFFERED.with(|b| b.give_back(body_bytes));
        self.held -= body_bytes;
    }

    /// The response has begun (its first body bytes, or its end when it has none): settle
    /// what the request left open. Whether the stream is still watched.
    fn response_begins(&mut self) -> bool {
        self.responded = true;
        let no_body = self.request.is_empty() && !self.request_gap;
        if self.kind == Some(WatchKind::Graphql) && no_body {
            self.kind = None; // a GET, not a GraphQL call
            return false;
        }
        if self.kind.is_none() {
            return false;
        }
        self.shared.metrics.add(Metric::ResponsesWatched, 1);
        true
    }

    /// The whole request is a GraphQL call that may register a persisted query's text.
    fn names_persisted(&self) -> bool {
        self.kind == Some(WatchKind::Graphql)
            && self.request_complete
            && persisted::may_register(&self.request)
    }

    /// Keep the text of a persisted query the server took (answered 2xx), so that later
    /// requests sending its hash alone can be read.
    fn keep_persisted_text(&self) {
        if !(self.persist || self.names_persisted()) {
            return;
        }
        let taken = response_code().is_some_and(|code| (200..300).contains(&code));
        if taken && persisted::remember(&SharedData, &self.request) {
            self.shared.metrics.add(Metric::PersistedQueriesKept, 1);
        }
    }

    /// Read on the way to a parse (not on every poll: each header lookup costs).
    fn request_facts(&self, kind: WatchKind) -> RequestFacts {
        match kind {
            WatchKind::Graphql => {
                let head = OwnedRequestHead::read();
                let recall = |hash: &str| persisted::recall(&SharedData, hash);
                let mut known = self.shared.requests.borrow_mut();
                known.facts(&head.view(), &self.request, &recall)
            }
            // No query to read; REST reading and learning never look at the facts.
            WatchKind::Rest => RequestFacts::Unread,
        }
    }

    /// `facts` when already read; otherwise read only if the response must be parsed.
    fn take_notifications(&self, kind: WatchKind, facts: Option<RequestFacts>, body: Body) {
        let metrics = &self.shared.metrics;
        let hash = body.hash(&self.request);
        if self.shared.recent.borrow().contains(hash) {
            metrics.add(Metric::ResponsesUnchanged, 1);
            return;
        }
        // A body this VM has not processed: now it is worth judging. (A known body under
        // another status can call for nothing new either way.)
        let body = body.join();
        if let Some(why) = extract::judge(response_code(), &body) {
            metrics.add(why, 1);
            return;
        }
        let facts = facts.unwrap_or_else(|| self.request_facts(kind));
        let taken = extract::read(kind, &body, &facts, |extracted| {
            if extracted.skipped_objects > 0 {
                metrics.add(Metric::ObjectsSkipped, extracted.skipped_objects as i64);
            }
            let endpoints = self.shared.endpoints();
            let intake = intake::take_in(
                Some(&mut self.shared.known.borrow_mut()),
                &self.shared.config,
                &endpoints,
                self.shared.memory,
                &SharedData,
                metrics,
                &extracted.notifications,
                now_ms(),
                hash ^ u64::from(self.context_id),
            );
            let seen = intake.complete && events::recognisable(&extracted.notifications);
            (intake, seen)
        });
        let intake = match taken {
            Ok((intake, seen)) => {
                if seen {
                    self.shared.recent.borrow_mut().remember(hash);
                }
                intake
            }
            Err(e) => {
                metrics.add(e.metric(), 1);
                log::debug!("#{} response not understood: {e}", self.context_id);
                return;
            }
        };
        // One item per response, not per delivery: each item wakes the sender's VM once.
        if intake.wake.is_empty() {
            return;
        }
        match self.shared.wake_queue() {
            Some((queue, peer)) => {
                let slots: Vec<u8> = intake.wake.iter().flat_map(|s| s.to_le_bytes()).collect();
                if hostcalls::enqueue_shared_queue(queue, Some(&slots)).is_ok() && peer {
                    metrics.add(Metric::WakeupsToPeers, 1);
                }
            }
            None => self.shared.warn_no_sender(now_ms()),
        }
    }

    /// The whole response is in: read what it says.
    fn read_response(&mut self) {
        let Some(kind) = self.kind else {
            return;
        };
        if !self.responded {
            return; // the stream ended before a response: nothing to read
        }
        let body = std::mem::take(&mut self.body);
        if !self.registration {
            if self.notifications {
                self.take_notifications(kind, None, body);
            }
            return;
        }
        // Only a server that took the call teaches anything, whatever its answer's body says.
        if !response_code().is_some_and(|code| (200..300).contains(&code)) {
            self.shared.metrics.add(Metric::SkippedStatus, 1);
            return;
        }
        let body = body.join();
        let facts = self.request_facts(kind);
        self.learn_registration(kind, &facts, &body);
        if self.notifications {
            self.take_notifications(kind, Some(facts), Body::One(body));
        }
    }

    fn learn_registration(&self, kind: WatchKind, facts: &RequestFacts, body: &[u8]) {
        let Some(learn) = &self.shared.config.learn else {
            return;
        };
        // A REST delete names the webhook in its request body; nothing else needs it.
        let delete = kind == WatchKind::Rest && self.method.eq_ignore_ascii_case("DELETE");
        let request = (delete && !self.request_gap)
            .then(OwnedRequestHead::read)
            .filter(|head| extract::is_json_body(&head.view()))
            .map(|_| self.request.as_slice());
        let registration =
            extract::extract_registration(kind, &self.method, &self.path, facts, request, body);
        let Some(reg) = registration else {
            return;
        };
        let registry = Registry::new(learn.max_learned);
        let _ = registry.apply_counted(&SharedData, &reg, learn, &self.shared.metrics);
    }
}

/// The request headers that tell how the server reads its body, read only on the way to a
/// parse: each lookup leaves and re-enters the VM.
struct OwnedRequestHead {
    method: Option<Vec<u8>>,
    content_type: Option<Vec<u8>>,
    content_encoding: Option<Vec<u8>>,
}

impl OwnedRequestHead {
    fn read() -> Self {
        let header = |name| {
            hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
                .ok()
                .flatten()
        };
        OwnedRequestHead {
            method: header(":method"),
            content_type: header("content-type"),
            content_encoding: header("content-encoding"),
        }
    }

    fn view(&self) -> RequestHead<'_> {
        RequestHead {
            method: self.method.as_deref(),
            content_type: self.content_type.as_deref(),
            content_encoding: self.content_encoding.as_deref(),
        }
    }
}

/// The response's status from the stream's record, which `on_log` can still read (its
/// header map is empty there). Envoy gives the number as 8 little-endian bytes.
fn response_code() -> Option<u64> {
    let bytes = hostcalls::get_property(vec!["response", "code"]).ok()??;
    Some(u64::from_le_bytes(bytes.as_slice().try_into().ok()?))
}

/// A request header's value; `None` when absent or not UTF-8 (no OsmoX route or method is).
/// Read as bytes: a client may send any byte above 0x7f in a header value (Envoy passes them
/// on), and the SDK's text reading panics on what is not UTF-8, which would kill the VM.
fn request_header(name: &str) -> Option<String> {
    match hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name) {
        Ok(Some(value)) => String::from_utf8(value).ok(),
        _ => None,
    }
}

impl Context for Watch {}

impl HttpContext for Watch {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        #[cfg(feature = "fault-injection")]
        if request_header("x-osmox-filter-fault").is_some() {
            core::arch::wasm32::unreachable();
        }
        // Lookups: measured cheaper here than reading the whole map, which a client may fill
        // with cookies and tokens. The method only when learning needs it: a lookup costs
        // about 5 % of plain Envoy's instructions for a poll (see `extract::classify`).
        let config = &self.shared.config;
        let Some(path) = request_header(":path") else {
            return Action::Continue;
        };
        let method = match config.learn {
            None => None,
            Some(_) => match request_header(":method") {
                Some(method) => Some(method),
                None => return Action::Continue,
            },
        };
        let watch = &config.watch;
        self.kind = extract::classify(
            method.as_deref(),
            &path,
            &watch.graphql_paths,
            &watch.rest_path_prefixes,
        );
        self.notifications = self.kind.is_some();
        if let Some(method) = method {
            if self.kind == Some(WatchKind::Graphql) {
                self.registration = true;
            } else if extract::is_webhook_route(&method, &path) {
                self.kind = Some(WatchKind::Rest);
                self.registration = true;
            }
            self.method = method;
        }
        if self.kind.is_some() {
            self.path = path;
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        // A GraphQL call, or a REST call to OsmoX's webhooks (a delete names its webhook in
        // the body).
        let reads = self.kind == Some(WatchKind::Graphql)
            || (self.kind == Some(WatchKind::Rest) && self.registration);
        if !reads || self.request_gap {
            return Action::Continue;
        }
        if size > 0 {
            let fits = self.request.len() + size <= MAX_GRAPHQL_REQUEST_BYTES && self.hold(size);
            let chunk = fits
                .then(|| hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size))
                .and_then(|r| r.ok().flatten());
            match chunk {
                Some(chunk) => self.request.extend_from_slice(&chunk),
                None => {
                    self.request_gap = true;
                    self.let_go();
                    return Action::Continue;
                }
            }
        }
        self.request_complete = end_of_stream;
        // With learning on every GraphQL call may register; one whose whole body cannot
        // (most polls) is spared the parse.
        if end_of_stream && self.registration && self.kind == Some(WatchKind::Graphql) {
            self.registration = extract::may_register(&self.request);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, _: bool) -> Action {
        if self.kind.is_none() || size == 0 {
            return Action::Continue;
        }
        if !self.responded && !self.response_begins() {
            return Action::Continue;
        }
        if self.body.len() + size > self.shared.config.watch.max_body_bytes {
            self.skip(Metric::SkippedTooLarge);
            return Action::Continue;
        }
        if !self.hold(size) {
            self.skip(Metric::SkippedBufferFull);
            return Action::Continue;
        }
        let Ok(Some(chunk)) = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size) else {
            return Action::Continue;
        };
        if self.body.is_empty() && self.notifications {
            if let Some(why) = extract::sniff(&chunk) {
                if !self.registration {
                    self.skip(why);
                    return Action::Continue;
                }
                // A registration's answer counts even when it is not JSON (a delete's).
                self.shared.metrics.add(why, 1);
                self.notifications = false;
            }
        }
        self.body.push(chunk);
        Action::Continue
    }

    fn on_log(&mut self) {
        self.keep_persisted_text();
        // A response without a body (a delete's 204) matters only to learning.
        if !self.responded && self.registration && self.kind.is_some() && response_code().is_some()
        {
            self.response_begins();
        }
        self.read_response();
        self.let_go();
    }
}

impl Drop for Watch {
    /// A stream that never reached `on_log` still gives its bytes back.
    fn drop(&mut self) {
        self.let_go();
    }
}
