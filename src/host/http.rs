//! The HTTP context: watches one stream without ever changing or delaying it. It copies the
//! watched response's chunks (bounded) as they pass, always returning `Continue`, and hands
//! the whole body to the core in `on_log`, after the client has it.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};

use super::root::{now_ms, Shared};
use super::shared_store::SharedData;
use crate::extract::{self, RequestFacts, WatchKind};
use crate::intake;
use crate::metrics::{Metric, Metrics};

/// GraphQL request bodies are small; a larger one is not ours to read.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

pub struct Watch {
    context_id: u32,
    shared: Rc<Shared>,
    kind: Option<WatchKind>,
    request: Vec<u8>,
    body: Vec<u8>,
}

impl Watch {
    pub fn new(context_id: u32, shared: Rc<Shared>) -> Self {
        Watch {
            context_id,
            shared,
            kind: None,
            request: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Stop watching this stream, counting why.
    fn skip(&mut self, why: Metric) {
        self.shared.metrics.add(why, 1);
        self.kind = None;
        self.body = Vec::new();
    }

    fn header(&self, map: MapType, name: &str) -> Option<String> {
        hostcalls::get_map_value(map, name).ok().flatten()
    }
}

impl Context for Watch {}

impl HttpContext for Watch {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let method = self.header(MapType::HttpRequestHeaders, ":method");
        let path = self.header(MapType::HttpRequestHeaders, ":path");
        if let (Some(method), Some(path)) = (method, path) {
            let watch = &self.shared.config.watch;
            self.kind = extract::classify(
                &method,
                &path,
                &watch.graphql_paths,
                &watch.rest_path_prefixes,
            );
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, _: bool) -> Action {
        if self.kind == Some(WatchKind::Graphql) && self.request.len() + size <= MAX_REQUEST_BYTES {
            if let Ok(Some(chunk)) = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size) {
                self.request.extend_from_slice(&chunk);
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if self.kind.is_none() {
            return Action::Continue;
        }
        self.shared.metrics.add(Metric::ResponsesWatched, 1);
        let status = self.header(MapType::HttpResponseHeaders, ":status");
        if !status.is_some_and(|s| s.starts_with('2')) {
            self.skip(Metric::SkippedStatus);
            return Action::Continue;
        }
        let content_type = self
            .header(MapType::HttpResponseHeaders, "content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !content_type.contains("json") {
            self.skip(Metric::SkippedNotJson);
            return Action::Continue;
        }
        let encoding = self.header(MapType::HttpResponseHeaders, "content-encoding");
        if encoding.is_some_and(|e| !e.eq_ignore_ascii_case("identity")) {
            self.skip(Metric::SkippedEncoded);
            return Action::Continue;
        }
        let length = self
            .header(MapType::HttpResponseHeaders, "content-length")
            .and_then(|l| l.parse::<usize>().ok());
        if length.is_some_and(|l| l > self.shared.config.watch.max_body_bytes) {
            self.skip(Metric::SkippedTooLarge);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, _: bool) -> Action {
        if self.kind.is_none() || size == 0 {
            return Action::Continue;
        }
        if self.body.len() + size > self.shared.config.watch.max_body_bytes {
            self.skip(Metric::SkippedTooLarge);
            return Action::Continue;
        }
        if let Ok(Some(chunk)) = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size) {
            self.body.extend_from_slice(&chunk);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(kind) = self.kind else {
            return;
        };
        let facts = match kind {
            WatchKind::Graphql => extract::graphql_request_facts(&self.request),
            WatchKind::Rest => RequestFacts::default(),
        };
        let metrics = &self.shared.metrics;
        let extracted = match extract::extract(kind, &self.body, &facts) {
            Ok(x) => x,
            Err(e) => {
                metrics.add(Metric::SkippedMalformed, 1);
                log::debug!("#{} response not understood: {e}", self.context_id);
                return;
            }
        };
        if extracted.skipped_objects > 0 {
            metrics.add(Metric::ObjectsSkipped, extracted.skipped_objects as i64);
        }
        if extracted.notifications.is_empty() {
            return;
        }
        let config = &self.shared.config;
        let wake = intake::take_in(
            config,
            &config.endpoints,
            &SharedData,
            metrics,
            &extracted.notifications,
            now_ms(),
            self.context_id.wrapping_mul(2_654_435_761),
        );
        if let Some(queue) = self.shared.queue {
            for slot in wake {
                let _ = hostcalls::enqueue_shared_queue(queue, Some(&slot.to_le_bytes()));
            }
        }
    }
}
