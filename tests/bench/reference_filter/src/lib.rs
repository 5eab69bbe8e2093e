//! Reference points for the benchmark, chosen by the plugin configuration (the filter's own
//! JSON, with `"referenceMode"` added):
//!
//! * `"noop"`: every callback the SDK exports, doing nothing: the cost of having any
//!   proxy-wasm filter on a stream.
//! * `"forward"`: one POST per watched response to cluster `webhook_demo`, sent from the root
//!   context through the shared queue as the filter does, with a fixed body: no parsing, no
//!   shared data, no signing. The least one webhook per response can cost.
//! * `"read"`: copies out what the filter must see of every stream and nothing more: the
//!   `:path`, the request body and the response body, chunk by chunk, then drops them. The
//!   least a filter that watches GraphQL polls can cost, whatever it does with the bytes.
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { queue: None, read: false }) });
}}

const BODY: &[u8] = br#"{"id":1,"deliveryStatus":5}"#;

struct Root {
    /// Set in forward mode.
    queue: Option<u32>,
    read: bool,
}

impl Context for Root {
    fn on_http_call_response(&mut self, _: u32, _: usize, _: usize, _: usize) {}
}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let forward = String::from_utf8_lossy(&config).contains(r#""referenceMode":"forward""#);
        self.read = String::from_utf8_lossy(&config).contains(r#""referenceMode":"read""#);
        if forward {
            self.queue = hostcalls::register_shared_queue("reference").ok();
        }
        true
    }

    fn on_queue_ready(&mut self, queue: u32) {
        while let Ok(Some(_)) = hostcalls::dequeue_shared_queue(queue) {
            let headers = vec![
                (":method", "POST"),
                (":path", "/webhooks/osmox"),
                (":authority", "127.0.0.1"),
                ("content-type", "application/json"),
            ];
            let _ = hostcalls::dispatch_http_call(
                "webhook_demo",
                headers,
                Some(BODY),
                vec![],
                Duration::from_secs(5),
            );
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            queue: self.queue,
            read: self.read,
            seen: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    queue: Option<u32>,
    /// Set in read mode.
    read: bool,
    /// What read mode copied out; dropped with the stream.
    seen: Vec<Vec<u8>>,
}

impl Stream {
    fn copy(&mut self, buffer: BufferType, size: usize) {
        if self.read && size > 0 {
            if let Ok(Some(bytes)) = hostcalls::get_buffer(buffer, 0, size) {
                self.seen.push(bytes);
            }
        }
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if self.read {
            if let Ok(Some(path)) =
                hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, ":path")
            {
                self.seen.push(path);
            }
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, _: bool) -> Action {
        self.copy(BufferType::HttpRequestBody, size);
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, _: bool) -> Action {
        self.copy(BufferType::HttpResponseBody, size);
        Action::Continue
    }

    fn on_log(&mut self) {
        if let Some(queue) = self.queue {
            let _ = hostcalls::enqueue_shared_queue(queue, Some(b"1"));
        }
    }
}
