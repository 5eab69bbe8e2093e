//! The HTTP context: watches one stream without ever changing or pausing it. It copies the
//! request and response bodies (bounded) as they pass, always returning `Continue`, and
//! reads them once the stream is over. Envoy writes what it still holds of a response to
//! the client only after `on_log` returns, so a large body is left to a tick brought
//! forward (`READ_LATER_FROM_BYTES`), and a small one is read in `on_log`, where the read
//! costs the client less than the hand-off would. It runs only on the routes the
//! deployment attaches it to, so it copies before it knows whether the call is one it
//! watches: a steady poll is then recognised by its bytes without a header read. It never
//! reads the response's headers (`extract::read_lazily` says how a response is judged
//! without them, and when its status is asked).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};

use super::root::{now_ms, Shared};
use super::shared_store::SharedData;
use crate::body::{Body, Budget};
use crate::config::MAX_GRAPHQL_REQUEST_BYTES;
use crate::delivery::wake;
use crate::events;
use crate::extract::{self, persisted, Extracted, RequestFacts, RequestHead, WatchKind};
use crate::intake;
use crate::json::SeenRows;
use crate::learn::Registry;
use crate::metrics::{Metric, Metrics};
use crate::page_memory::PageMemory;

thread_local! {
    /// What this VM's streams hold of watched bodies (`watch.maxBufferedBytes`).
    static BUFFERED: Budget = const { Budget::new() };
    /// Watched responses to read after their streams ended, oldest first.
    static LATER: RefCell<VecDeque<Later>> = const { RefCell::new(VecDeque::new()) };
}

/// Responses whose copied body is at least this long are read after the client has them.
/// Envoy writes what it still holds of a response to the client's socket only once `on_log`
/// returns, so reading there delays the client by the read: about 40 ms for a changed 7 MB
/// page. Handing a response on costs the proxy its status and its request's head read
/// ahead (the read itself may never need them) and two timer changes, and its webhooks
/// a millisecond: below this size reading at once delays the client less than that.
const READ_LATER_FROM_BYTES: usize = 64 * 1024;

pub struct Watch {
    context_id: u32,
    shared: Rc<Shared>,
    /// The request body, read before anyone knows whether the stream is watched (see
    /// `on_log`): a GraphQL call's query, a REST delete's webhook id. At most
    /// `MAX_GRAPHQL_REQUEST_BYTES`.
    request: Vec<u8>,
    /// The whole request body is in `request`.
    request_complete: bool,
    /// Part of the request body was not read, and why: what was read is dropped and no more
    /// is.
    request_gap: Option<Gap>,
    /// The response's first body chunk came.
    responded: bool,
    /// Why the response body stopped being copied: counted once the call is known to be
    /// watched (an unwatched stream shows in no metric).
    skipped: Option<Metric>,
    /// What the response body's first bytes said, as its chunks came.
    first_bytes: extract::FirstBytes,
    body: Body,
    /// The bytes of `request` and `body` taken from `BUFFERED`.
    held: usize,
    /// `on_log` came.
    logged: bool,
    /// The request's head as it passed, in the module built for HTTP/3 listeners, which
    /// alone exports the request-headers callback (build/wasm_exports.py): there `on_log`
    /// never comes and `on_done` can read no header.
    passed: Option<PassedHead>,
}

/// Why part of a request body was not copied.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gap {
    /// Past `MAX_GRAPHQL_REQUEST_BYTES`, or not handed over.
    Unread,
    /// Refused for room (`watch.maxBufferedBytes`): a GraphQL call's answer is then counted
    /// as one refused for room, not as one whose query the filter cannot read.
    NoRoom,
}

/// What `on_http_request_headers` saw of the request, for a stream read in `on_done`.
struct PassedHead {
    path: Option<String>,
    head: OwnedRequestHead,
}

/// What the request's head says of a watched stream.
struct Call {
    kind: WatchKind,
    /// Read notifications from the body.
    notifications: bool,
    /// A call that may change OsmoX's webhook table, watched when learning is on.
    registration: bool,
    method: String,
    path: String,
}

impl Watch {
    pub fn new(context_id: u32, shared: Rc<Shared>) -> Self {
        Watch {
            context_id,
            shared,
            request: Vec::new(),
            request_complete: false,
            request_gap: None,
            responded: false,
            skipped: None,
            first_bytes: extract::FirstBytes::default(),
            body: Body::Empty,
            held: 0,
            logged: false,
            passed: None,
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

    /// Give back what `hold` took for `bytes` of this stream's copies.
    fn give_back(&mut self, bytes: usize) {
        let bytes = bytes.min(self.held);
        BUFFERED.with(|b| b.give_back(bytes));
        self.held -= bytes;
    }

    /// The stream is over: read it, then let its copies go.
    fn finish(&mut self) {
        self.logged = true;
        self.read_stream();
        self.let_go();
    }

    /// Drop the copied bodies and give their bytes back.
    fn let_go(&mut self) {
        self.request = Vec::new();
        self.body = Body::Empty;
        self.give_back(self.held);
    }

    /// Stop copying the response body, for a reason counted if the call is watched. The
    /// request stays: a registration (or a persisted query's text) may still be read.
    fn skip(&mut self, why: Metric) {
        self.skipped = Some(why);
        let body = std::mem::take(&mut self.body);
        self.give_back(body.len());
    }

    /// The request's head: which kind of call this is, if it is watched at all. Read in
    /// `on_log`, not as the request passes: a steady poll is recognised by its bytes alone,
    /// and the header lookups and the callback they needed cost 12k instructions a poll, 7 %
    /// of plain Envoy's (measured under callgrind). So the path is the one OsmoX was sent: a
    /// route's rewrite (`prefix_rewrite`) has been applied, and the watched paths are
    /// OsmoX's own. (Envoy shows the request's head in no callback between its own and
    /// `on_log`: neither the header map nor the `request.*` attributes.)
    fn read_call(&self) -> Option<Call> {
        let config = &self.shared.config;
        let path = match &self.passed {
            Some(passed) => passed.path.clone()?,
            None => request_header(":path")?,
        };
        // The method only when learning needs it: a GraphQL call is told apart by its body.
        let method = match (&config.learn, &self.passed) {
            (None, _) => None,
            (Some(_), Some(passed)) => Some(text(passed.head.method.clone())?),
            (Some(_), None) => Some(request_header(":method")?),
        };
        let watch = &config.watch;
        let mut kind = extract::classify(
            method.as_deref(),
            &path,
            &watch.graphql_paths,
            &watch.rest_path_prefixes,
        );
        let no_body = self.request.is_empty() && self.request_gap.is_none();
        if kind == Some(WatchKind::Graphql) && no_body {
            kind = None; // a GET, not a GraphQL call
        }
        let notifications = kind.is_some();
        let mut registration = false;
        if let Some(method) = &method {
            if kind == Some(WatchKind::Graphql) {
                // With learning on every GraphQL call may register; one whose whole body
                // cannot (most polls) is spared the parse.
                registration = !self.request_complete || extract::may_register(&self.request);
            } else if extract::is_webhook_route(method, &path) {
                kind = Some(WatchKind::Rest);
                registration = true;
            }
        }
        Some(Call {
            kind: kind?,
            notifications,
            registration,
            method: method.unwrap_or_default(),
            path,
        })
    }

    /// Whether the whole request may register a persisted query's text.
    fn names_persisted(&self) -> bool {
        self.request_complete && persisted::may_register(&self.request)
    }

    /// Keep the text of a persisted query the server may have kept (it did not refuse it:
    /// `persisted::server_may_have_kept`), so that later requests sending its hash alone can
    /// be read. A client sends the text only when the server asks for it, which it does not
    /// while it remembers the text: so it matters whatever the answer's body.
    fn keep_persisted_text(&self, call: &Call, status: impl FnOnce() -> Option<u64>) {
        if call.kind != WatchKind::Graphql || !self.names_persisted() {
            return;
        }
        let taken = persisted::server_may_have_kept(status());
        if taken && persisted::remember(&SharedData, &self.request) {
            self.shared.metrics.add(Metric::PersistedQueriesKept, 1);
        }
    }

    /// The request headers that tell how the server reads its body: as they passed, or
    /// asked now.
    fn request_head(&self) -> OwnedRequestHead {
        self.reading().head()
    }

    /// Reading this stream's response while the stream is there to ask (or with the head
    /// kept as it passed).
    fn reading(&self) -> Reading<'_> {
        Reading {
            context_id: self.context_id,
            shared: &self.shared,
            request: &self.request,
            kept_head: self.passed.as_ref().map(|passed| &passed.head),
        }
    }

    /// Leave `body` to be read once the response has gone to the client, at this context's
    /// root's next tick, made to come within a millisecond: Envoy writes the end of a response
    /// to the client's socket in its event loop's next turn, after `on_log`, and a queue item
    /// for the VM itself is taken in the current turn, before that write (measured). What
    /// only the stream can tell (the status, the request's head) is read now.
    fn read_later(&mut self, call: &Call, body: Body, status: &dyn Fn() -> Option<u64>) {
        let later = Later {
            shared: self.shared.clone(),
            context_id: self.context_id,
            head: match call.kind {
                WatchKind::Graphql => self.request_head(),
                WatchKind::Rest => OwnedRequestHead::default(),
            },
            status: status(),
            kind: call.kind,
            path: call.path.clone(),
            request: std::mem::take(&mut self.request),
            body,
            // The copies' bytes go with them, given back once they are read.
            held: std::mem::take(&mut self.held),
        };
        LATER.with(|l| l.borrow_mut().push_back(later));
        self.shared.tick_soon();
    }

    /// The stream is over: read what it says.
    fn read_stream(&mut self) {
        let shared = Rc::clone(&self.shared);
        let metrics = &shared.metrics;
        // A large body is read after the response has gone to the client, hashing included.
        let later = self.body.len() >= READ_LATER_FROM_BYTES;
        // A steady poll: a body this VM processed before, under the same request, is known
        // by its bytes, without reading which route it came by (the same bytes read as
        // another kind of call cannot say more: see `RecentResponses`). With learning on the
        // route is read first, since a registration's answer teaches whatever its bytes.
        let hash = (!later).then(|| self.body.hash(&self.request));
        let steady = self.shared.config.learn.is_none()
            && self.responded
            && self.skipped.is_none()
            && !self.names_persisted();
        if steady && hash.is_some_and(|hash| shared.recognised(hash)) {
            metrics.add(Metric::ResponsesWatched, 1);
            metrics.add(Metric::ResponsesUnchanged, 1);
            return;
        }
        let Some(call) = self.read_call() else {
            return;
        };
        // The recorded status, asked (a hostcall) at most once and only where it decides.
        let asked = Cell::new(None);
        let status = || match asked.get() {
            Some(code) => code,
            None => {
                let code = response_code();
                asked.set(Some(code));
                code
            }
        };
        self.keep_persisted_text(&call, status);
        let ending = extract::Ending {
            registration: call.registration,
            notifications: call.notifications,
            responded: self.responded,
            skipped: self.skipped,
            query_refused: call.kind == WatchKind::Graphql && self.request_gap == Some(Gap::NoRoom),
        };
        let extract::Verdict::Answered {
            skip,
            learn,
            notifications,
        } = extract::verdict(&ending, status)
        else {
            return;
        };
        metrics.add(Metric::ResponsesWatched, 1);
        if let Some(why) = skip {
            metrics.add(why, 1);
        }
        let body = std::mem::take(&mut self.body);
        if !learn {
            if notifications {
                if later {
                    self.read_later(&call, body, &status);
                    return;
                }
                let reading = self.reading();
                reading.take_notifications(call.kind, &call.path, None, body, hash, &status);
            }
            return;
        }
        let body = body.join();
        let facts = self.reading().request_facts(call.kind);
        self.learn_registration(&call, &facts, &body);
        if notifications {
            let body = Body::One(body);
            let reading = self.reading();
            reading.take_notifications(call.kind, &call.path, Some(facts), body, hash, &status);
        }
    }

    fn learn_registration(&self, call: &Call, facts: &RequestFacts, body: &[u8]) {
        let Some(learn) = &self.shared.config.learn else {
            return;
        };
        // A REST delete names the webhook in its request body; nothing else needs it.
        let delete = call.kind == WatchKind::Rest && call.method.eq_ignore_ascii_case("DELETE");
        let request = (delete && self.request_complete)
            .then(|| self.request_head())
            .filter(|head| extract::is_json_body(&head.view()))
            .map(|_| self.request.as_slice());
        let registration = extract::extract_registration(
            call.kind,
            &call.method,
            &call.path,
            facts,
            request,
            body,
        );
        let Some(reg) = registration else {
            return;
        };
        let registry = Registry::new(learn.max_learned);
        let _ = registry.apply_counted(&SharedData, &reg, learn, &self.shared.metrics);
    }
}

/// What reading a watched response needs, from its stream or kept from it.
struct Reading<'a> {
    context_id: u32,
    shared: &'a Shared,
    /// The request body.
    request: &'a [u8],
    /// The request's head as read before: `None` asks the stream, when it is needed.
    kept_head: Option<&'a OwnedRequestHead>,
}

impl Reading<'_> {
    fn head(&self) -> OwnedRequestHead {
        self.kept_head
            .cloned()
            .unwrap_or_else(OwnedRequestHead::read)
    }

    /// The request's facts under its head, read on the way to a parse (not on every poll:
    /// each header lookup costs).
    fn request_facts(&self, kind: WatchKind) -> RequestFacts {
        match kind {
            WatchKind::Graphql => self.graphql_facts(&self.head().view()),
            // No query to read; REST reading and learning never look at the facts.
            WatchKind::Rest => RequestFacts::Unread,
        }
    }

    /// The GraphQL request's facts as read under `head`.
    fn graphql_facts(&self, head: &RequestHead<'_>) -> RequestFacts {
        let recall = |hash: &str| persisted::recall(&SharedData, hash);
        let mut known = self.shared.requests.borrow_mut();
        known.facts(head, self.request, &recall)
    }

    /// `facts` when already read under the request's head; otherwise a GraphQL request is
    /// read as a JSON `POST`, and its head only if the answer calls for something
    /// (`extract::read_lazily`). `hash`: the body's under the request (`Body::hash`); `path`:
    /// the request's, with its query string.
    fn take_notifications(
        &self,
        kind: WatchKind,
        path: &str,
        facts: Option<RequestFacts>,
        body: Body,
        hash: Option<u64>,
        status: &dyn Fn() -> Option<u64>,
    ) {
        let metrics = &self.shared.metrics;
        let hash = hash.unwrap_or_else(|| body.hash(self.request));
        if self.shared.recognised(hash) {
            metrics.add(Metric::ResponsesUnchanged, 1);
            return;
        }
        // A body this VM has not processed: now it is worth reading. (A known body under
        // another status can call for nothing new either way.)
        let body = body.join();
        let take = |extracted: &Extracted<'_>| {
            if extracted.skipped_objects > 0 {
                metrics.add(Metric::ObjectsSkipped, extracted.skipped_objects as i64);
            }
            let passed_unread = extracted.seen_rows();
            if passed_unread > 0 {
                metrics.add(Metric::EventsPassedOver, passed_unread as i64);
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
            let rows = intake.complete.then(|| extracted.rows_to_remember());
            (intake, seen, rows)
        };
        // The answer's status and the request's head are asked only if the answer calls for
        // something (`extract::read_lazily`): a poll whose page moved but no state did is
        // read without those four hostcalls (29k instructions of 262k over plain Envoy's
        // under callgrind). Until its head is read, a GraphQL request reads as a JSON POST.
        let head_unread = facts.is_none() && kind == WatchKind::Graphql;
        let facts = match facts {
            Some(facts) => facts,
            None if head_unread => self.graphql_facts(&RequestHead::JSON_POST),
            None => RequestFacts::Unread, // REST reading never looks at the facts
        };
        // Rows the last page of this request held too, in the same bytes, are not read again.
        let archived = matches!(&facts, RequestFacts::Plain(q) if q.archived());
        let page = PageMemory::key(kind, archived, path, self.request);
        // (Each look-up borrows what this VM knows only while it asks: `take` learns.)
        let known = &self.shared.known;
        let pages = self.shared.pages.borrow();
        let recall = pages
            .page(page)
            .map(|p| p.recall(|identity| known.try_borrow().is_ok_and(|k| k.holds(identity))));
        let taken = extract::read_lazily(
            kind,
            &body,
            &facts,
            recall.as_ref().map(|r| r as &dyn SeenRows),
            |found| known.borrow().knows_all(found),
            status,
            head_unread.then_some(|| extract::is_json_post(&self.head().view())),
            take,
        );
        drop(pages);
        let intake = match taken {
            Ok((intake, seen, rows)) => {
                if seen {
                    self.shared.recent.borrow_mut().remember(hash);
                }
                if let Some(rows) = rows {
                    self.shared.pages.borrow_mut().remember(page, body, rows);
                }
                intake
            }
            Err(why) => {
                metrics.add(why, 1);
                log::debug!("#{} response skipped: {}", self.context_id, why.name());
                return;
            }
        };
        // One item per response, not per delivery: each item wakes the sender's VM once.
        if intake.wake.is_empty() {
            return;
        }
        match self.shared.wake_queue() {
            Some((queue, peer)) => {
                let item = wake::encode(&intake.wake);
                if hostcalls::enqueue_shared_queue(queue, Some(&item)).is_ok() && peer {
                    metrics.add(Metric::WakeupsToPeers, 1);
                }
            }
            None => self.shared.warn_no_sender(now_ms()),
        }
    }
}

/// A watched response left to be read after its stream ended (`READ_LATER_FROM_BYTES`).
struct Later {
    shared: Rc<Shared>,
    context_id: u32,
    kind: WatchKind,
    path: String,
    request: Vec<u8>,
    /// A GraphQL request's head (a REST read never asks).
    head: OwnedRequestHead,
    status: Option<u64>,
    body: Body,
    /// Of `BUFFERED`, for `request` and `body`.
    held: usize,
}

impl Later {
    fn read(mut self) {
        let body = std::mem::take(&mut self.body);
        let reading = Reading {
            context_id: self.context_id,
            shared: &self.shared,
            request: &self.request,
            kept_head: Some(&self.head),
        };
        let status = self.status;
        reading.take_notifications(self.kind, &self.path, None, body, None, &|| status);
    }
}

impl Drop for Later {
    fn drop(&mut self) {
        BUFFERED.with(|b| b.give_back(self.held));
    }
}

/// Read the responses left for later, oldest first: on every tick of any of the VM's root
/// contexts.
pub fn read_later() {
    // At most what waits now: each was taken from the bounded `BUFFERED`.
    let waiting = LATER.with(|l| l.borrow().len());
    for _ in 0..waiting {
        let Some(later) = LATER.with(|l| l.borrow_mut().pop_front()) else {
            return;
        };
        later.read();
    }
}

/// The request headers that tell how the server reads its body, read only on the way to a
/// parse: each lookup leaves and re-enters the VM.
#[derive(Clone, Default)]
struct OwnedRequestHead {
    method: Option<Vec<u8>>,
    content_type: Option<Vec<u8>>,
    content_encoding: Option<Vec<u8>>,
}

impl OwnedRequestHead {
    fn read() -> Self {
        OwnedRequestHead {
            method: request_header_bytes(":method"),
            content_type: request_header_bytes("content-type"),
            content_encoding: request_header_bytes("content-encoding"),
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
    text(request_header_bytes(name))
}

fn request_header_bytes(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
}

fn text(value: Option<Vec<u8>>) -> Option<String> {
    String::from_utf8(value?).ok()
}

impl Context for Watch {
    /// After `on_log`, but for a stream Envoy logs only once its context is gone (HTTP/3).
    /// Neither the request's headers nor its `request.*` attributes can be read here (Envoy
    /// answers BadArgument and NotFound; the SDK's header reader panics on the first): the
    /// stream is read from the head kept as it passed, or, without one (the module for
    /// HTTP/1.1 and HTTP/2 does not ask for it), only counted and reported.
    fn on_done(&mut self) -> bool {
        if self.logged {
            return true;
        }
        if self.passed.is_some() {
            self.finish();
        } else if self.responded {
            self.shared.warn_unlogged(now_ms());
        }
        true
    }
}

impl HttpContext for Watch {
    // The module for HTTP/1.1 and HTTP/2 listeners exports no request- or response-headers
    // callback, so Envoy does not enter the VM for them (build/wasm_exports.py): what the
    // request's head says is read in `on_log`, when it is needed at all.

    /// Only in the module for HTTP/3 listeners: keep what `on_done` will need. The path is
    /// the client's, before any route's rewrite.
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        self.passed = Some(PassedHead {
            path: request_header(":path"),
            head: OwnedRequestHead::read(),
        });
        Action::Continue
    }

    /// Trailers end a request whose last body chunk did not (gRPC-style clients over
    /// HTTP/2): its body is whole. Envoy calls this only for requests that have them.
    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        self.request_complete = self.request_gap.is_none();
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if self.request_gap.is_some() {
            return Action::Continue;
        }
        if size > 0 {
            let within = self.request.len() + size <= MAX_GRAPHQL_REQUEST_BYTES;
            let fits = within && self.hold(size);
            let chunk = fits
                .then(|| hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size))
                .and_then(|r| r.ok().flatten());
            #[cfg(feature = "fault-injection")]
            if let Some(chunk) = &chunk {
                // Headers cannot be read in this callback (the SDK panics): a marker in the
                // body, then, as tests/e2e sends it.
                const FAULT: &[u8] = b"x-osmox-filter-fault";
                if chunk.windows(FAULT.len()).any(|w| w == FAULT) {
                    core::arch::wasm32::unreachable();
                }
            }
            match chunk {
                Some(chunk) => self.request.extend_from_slice(&chunk),
                None => {
                    self.request_gap = Some(if within && !fits {
                        Gap::NoRoom
                    } else {
                        Gap::Unread
                    });
                    let request = std::mem::take(&mut self.request);
                    self.give_back(request.len() + if fits { size } else { 0 });
                    return Action::Continue;
                }
            }
        }
        self.request_complete = end_of_stream;
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, _: bool) -> Action {
        if self.skipped.is_some() || size == 0 {
            return Action::Continue;
        }
        self.responded = true;
        if self.body.len() + size > self.shared.config.watch.max_body_bytes {
            self.skip(Metric::SkippedTooLarge);
            return Action::Continue;
        }
        if !self.hold(size) {
            self.skip(Metric::SkippedBufferFull);
            return Action::Continue;
        }
        let Ok(Some(chunk)) = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size) else {
            // Not seen from Envoy 1.40; were it to happen, the copy would have a hole, and what
            // is left could still parse. Counted as if the chunk had not fit.
            self.give_back(size);
            self.skip(Metric::SkippedBufferFull);
            return Action::Continue;
        };
        if let Some(why) = self.first_bytes.judge(&chunk) {
            self.give_back(size);
            self.skip(why);
            return Action::Continue;
        }
        self.body.push(chunk);
        Action::Continue
    }

    /// The head kept as the request passed (HTTP/3 module) is not used here: what Envoy
    /// reports now is what OsmoX was sent, a route's rewrite applied.
    fn on_log(&mut self) {
        self.passed = None;
        self.finish();
    }
}

impl Drop for Watch {
    /// A stream that never reached `on_log` still gives its bytes back.
    fn drop(&mut self) {
        self.let_go();
    }
}
