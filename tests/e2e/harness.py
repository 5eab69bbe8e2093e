"""End-to-end harness: a scripted OsmoX stand-in, a scripted webhook receiver, and an Envoy
process (optionally running the osmox-webhook-filter wasm) wired between them.

Everything binds to 127.0.0.1 on free ports, every wait is bounded, every HTTP client call
has a timeout, and Envoy runs in its own session and is stopped by PID. Nothing here is
specific to pytest; `conftest.py` wraps these classes in fixtures.
"""
from __future__ import annotations

import atexit
import copy
import gzip as gzip_mod
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "tests" / "fixtures" / "osmox"
HOST = "127.0.0.1"

# --------------------------------------------------------------------------------------
# Names the filter is expected to use. Change them here only.
# --------------------------------------------------------------------------------------
FILTER_NAME = "envoy.filters.http.wasm"
PLUGIN_NAME = "osmox_webhook"  # config.name
ROOT_ID = "osmox_webhook"
VM_ID = "osmox_webhook"
WASM_RUNTIME = "envoy.wasm.runtime.v8"
# The filter defines its metrics as "osmox_webhook.<name>"; Envoy shows them at /stats as
# "wasmcustom.osmox_webhook.<name>".
METRIC_PREFIX = "wasmcustom.osmox_webhook."
# The filter flushes its counts to Envoy every tick; tests run with tickMs 50.
METRIC_SETTLE_S = 0.25
# The longest a receiver holds an answer on `Behaviour.hold`: a test that failed before
# releasing it does not leave the server thread waiting for good.
HOLD_MAX_S = 60.0
METRICS = {
    "responses_watched": "responses_watched",
    "bodies_skipped_too_large": "bodies_skipped_too_large",
    "bodies_skipped_not_json": "bodies_skipped_not_json",
    "bodies_skipped_encoded": "bodies_skipped_encoded",
    "bodies_skipped_malformed": "bodies_skipped_malformed",
    "events_detected": "events_detected",
    "events_duplicate": "events_duplicate",
    "deliveries_sent": "deliveries_sent",
    "deliveries_succeeded": "deliveries_succeeded",
    "deliveries_failed": "deliveries_failed",
}
USER_AGENT_PREFIX = "osmox-webhook-filter/"

# OsmoX deliveryStatus numbers (see tests/fixtures/osmox/SAMPLES.md).
STATUS = {
    "PENDING": 1,
    "IN_PROGRESS": 2,
    "AWAITING_CONFIRMATION": 3,
    "QUEUED_CONFIRMATION": 4,
    "SUCCESS": 5,
    "FAILED": 6,
}
STATUS_NAMES = {v: k for k, v in STATUS.items()}
ALL_STATUS_NAMES = list(STATUS)


def metric_name(short: str) -> str:
    """Full /stats name of one of the filter's metrics, e.g. 'deliveries_sent'."""
    return METRIC_PREFIX + METRICS.get(short, short)


# --------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------
_PORT_LOCK = threading.Lock()
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port that is free now and was not handed out before in this process."""
    with _PORT_LOCK:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((HOST, 0))
                port = s.getsockname()[1]
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port
    raise RuntimeError("no free port found")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll `pred` until it returns a truthy value (returned) or `timeout` s pass (TimeoutError)."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - keep polling; report the last error
            last_exc = e
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout:.1f}s waiting for {what}"
            if last_exc is not None:
                msg += f" (last error: {last_exc!r})"
            raise TimeoutError(msg)
        time.sleep(interval)


def load_sample(name: str) -> Any:
    """Parse a sample JSON file from tests/fixtures/osmox, keeping key order."""
    with open(DATA_DIR / name, "rb") as f:
        return json.loads(f.read())


def to_json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def ordered(obj: Any) -> Any:
    """A representation of parsed JSON whose equality also compares key order (recursively)."""
    if isinstance(obj, dict):
        return [("{}", k, ordered(v)) for k, v in obj.items()]
    if isinstance(obj, list):
        return [ordered(v) for v in obj]
    return obj


def snake_to_camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def camelize_top_level(obj: Mapping[str, Any]) -> dict:
    """OsmoX v8 REST rows are snake_case at top level only; `data`/`result` stay as sent."""
    return {snake_to_camel(k): v for k, v in obj.items()}


def _read_body(rfile, headers) -> bytes:
    te = (headers.get("transfer-encoding") or "").lower()
    if "chunked" in te:
        chunks = []
        while True:
            line = rfile.readline(65537)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # trailers until blank line
                while True:
                    t = rfile.readline(65537)
                    if t in (b"\r\n", b"\n", b""):
                        break
                break
            chunks.append(rfile.read(size))
            rfile.readline(3)
        return b"".join(chunks)
    n = int(headers.get("content-length") or 0)
    return rfile.read(n) if n else b""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, handler, owner, bind_and_activate: bool = True):
        self.owner = owner
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(addr, handler, bind_and_activate)

    def process_request(self, request, client_address):
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self):
        with self._conns_lock:
            conns = list(self._conns)
            self._conns.clear()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass


class _ServerBase:
    """Start/stop a ThreadingHTTPServer on a fixed loopback port (stop+start keeps the port)."""

    handler_cls: type[BaseHTTPRequestHandler]

    def __init__(self, port: int = 0):
        # port 0: the OS picks one at the first start() (no race with other processes); a
        # later start() after stop() listens on the same port again.
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # While stopped, the port stays bound (not listening: connections are refused), so no
        # other process (the other xdist worker's servers, an outgoing connection's ephemeral
        # port) can take it before start() listens on it again.
        self._reserved: socket.socket | None = None

    def start(self, timeout: float = 5.0):
        if self._server is not None:
            return self
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._reserved is not None:
                    srv = _Server((HOST, self.port), self.handler_cls, self, bind_and_activate=False)
                    srv.socket.close()
                    srv.socket, self._reserved = self._reserved, None
                    srv.server_address = srv.socket.getsockname()
                    srv.server_name, srv.server_port = HOST, self.port
                    srv.server_activate()
                else:
                    srv = _Server((HOST, self.port), self.handler_cls, self)
                self._server = srv
                self.port = self._server.server_address[1]
                self._server.socket = self.wrap_listener(self._server.socket)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name=f"{type(self).__name__}:{self.port}",
        )
        self._thread.start()
        return self

    def wrap_listener(self, sock: socket.socket) -> socket.socket:
        """The listening socket as served: a subclass may wrap it (TLS)."""
        return sock

    def stop(self, keep_port: bool = True):
        """Stop listening and drop open connections: afterwards the port refuses connections.
        keep_port: hold the port (bound, not listening) for a later start(); else release it."""
        srv, self._server = self._server, None
        if srv is None:
            if not keep_port:
                self._release()
            return
        srv.shutdown()
        srv.server_close()
        srv.close_all_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None
        if keep_port:
            self._reserve()

    def _reserve(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((HOST, self.port))
        except OSError:
            s.close()  # taken already: start() waits for it as before
            return
        self._reserved = s

    def _release(self):
        s, self._reserved = self._reserved, None
        if s is not None:
            s.close()

    @property
    def running(self) -> bool:
        return self._server is not None

    def url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop(keep_port=False)


# --------------------------------------------------------------------------------------
# OsmoX stand-in
# --------------------------------------------------------------------------------------
@dataclass
class StubRequest:
    time: float
    method: str
    path: str  # without query
    query: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def header(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers}

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class StubResponse:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    # When set, all but the body's last byte is sent, then the last byte once this is set
    # (waiting HOLD_MAX_S at most): keeps many answers in flight at once.
    hold: threading.Event | None = None


HOLD_MAX_S = 30.0


PROBLEM_404 = {
    "type": "about:blank",
    "title": "Not Found",
    "status": 404,
    "detail": "no scripted response",
    "error_code": "NOT_FOUND",
}


class _StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *a):  # quiet
        pass

    def _handle(self):
        stub: OsmoxStub = self.server.owner
        body = _read_body(self.rfile, self.headers)
        parsed = urllib.parse.urlsplit(self.path)
        req = StubRequest(time.time(), self.command, parsed.path, parsed.query, list(self.headers.items()), body)
        stub._record(req)
        resp = stub._response_for(req)
        self.send_response(resp.status)
        has_len = False
        for k, v in resp.headers:
            if k.lower() == "content-length":
                has_len = True
            self.send_header(k, v)
        if not has_len:
            self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if self.command != "HEAD" and resp.body:
            view = memoryview(resp.body)
            last = len(view) - 1 if resp.hold is not None else len(view)
            for i in range(0, last, 256 * 1024):
                self.wfile.write(view[i:min(i + 256 * 1024, last)])
            if resp.hold is not None:
                self.wfile.flush()
                resp.hold.wait(HOLD_MAX_S)
                self.wfile.write(view[last:])
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class OsmoxStub(_ServerBase):
    """Scripted stand-in for the OsmoX API.

    Responses are keyed by (METHOD, path-without-query) and can be changed at any time.
    Unscripted requests get a 404 application/problem+json.
    """

    handler_cls = _StubHandler

    def __init__(self, port: int = 0):
        super().__init__(port)
        self._lock = threading.Lock()
        self._routes: dict[tuple[str, str], StubResponse | Callable[[StubRequest], StubResponse]] = {}
        self._requests: list[StubRequest] = []

    # -- scripting --------------------------------------------------------------------
    def set_response(self, method: str, path: str, status: int = 200, body: bytes | str | Any = b"",
                     headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
                     content_type: str | None = "application/json", gzip: bool = False,
                     hold: threading.Event | None = None) -> bytes:
        """Script the answer to METHOD path. `body` may be bytes, str, or a JSON-able object.

        Returns the exact body bytes that will be sent (compressed if gzip=True), so tests can
        compare what the client got byte for byte.
        """
        if isinstance(body, bytes):
            raw = body
        elif isinstance(body, str):
            raw = body.encode()
        else:
            raw = to_json_bytes(body)
        hdrs: list[tuple[str, str]] = []
        if content_type is not None:
            hdrs.append(("Content-Type", content_type))
        if gzip:
            raw = gzip_mod.compress(raw)
            hdrs.append(("Content-Encoding", "gzip"))
        if headers:
            items = headers.items() if isinstance(headers, Mapping) else headers
            hdrs.extend((str(k), str(v)) for k, v in items)
        with self._lock:
            self._routes[(method.upper(), path)] = StubResponse(status, hdrs, raw, hold)
        return raw

    def set_json(self, method: str, path: str, obj: Any, status: int = 200, **kw) -> bytes:
        return self.set_response(method, path, status=status, body=to_json_bytes(obj), **kw)

    def set_handler(self, method: str, path: str, fn: Callable[[StubRequest], StubResponse]):
        """Answer METHOD path by calling fn(request) -> StubResponse (runs on server threads)."""
        with self._lock:
            self._routes[(method.upper(), path)] = fn

    def clear(self, method: str | None = None, path: str | None = None):
        with self._lock:
            if method is None:
                self._routes.clear()
            else:
                self._routes.pop((method.upper(), path or "/"), None)

    # -- inspection -------------------------------------------------------------------
    def requests(self) -> list[StubRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self):
        with self._lock:
            self._requests.clear()

    # -- internals --------------------------------------------------------------------
    def _record(self, req: StubRequest):
        with self._lock:
            self._requests.append(req)

    def _response_for(self, req: StubRequest) -> StubResponse:
        with self._lock:
            r = self._routes.get((req.method.upper(), req.path))
        if callable(r):
            return r(req)
        if r is not None:
            return r
        return StubResponse(404, [("Content-Type", "application/problem+json")],
                            to_json_bytes(dict(PROBLEM_404, instance=req.path)))


# --------------------------------------------------------------------------------------
# Webhook receiver
# --------------------------------------------------------------------------------------
@dataclass
class Behaviour:
    """How the receiver answers one request."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (or closing)
    close: bool = False  # close the connection without answering
    body: bytes = b""
    # Answer only once the test sets it (at most HOLD_MAX_S): how long an answer waits is then
    # the test's to decide, not a guess at how fast the filter gets there.
    hold: threading.Event | None = None

    @staticmethod
    def of(x: "Behaviour | int | Mapping[str, Any]") -> "Behaviour":
        if isinstance(x, Behaviour):
            return x
        if isinstance(x, int):
            return Behaviour(status=x)
        return Behaviour(**x)


CLOSE = Behaviour(close=True)


class _Message:
    """Headers (as received, and lower-cased) and a raw body."""
    headers_list: list[tuple[str, str]]
    body: bytes

    @property
    def headers(self) -> dict[str, str]:
        """Lower-cased header names; repeated headers are joined with ', '."""
        out: dict[str, str] = {}
        for k, v in self.headers_list:
            k = k.lower()
            out[k] = f"{out[k]}, {v}" if k in out else v
        return out

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ReceivedRequest(_Message):
    time: float  # time.time() at arrival (after the body was read)
    method: str
    path: str  # path + query, as sent
    headers_list: list[tuple[str, str]]
    body: bytes

    def __repr__(self):
        b = self.body[:200]
        return f"<{self.method} {self.path} {len(self.body)}B {b!r}>"


class _ReceiverHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *a):
        pass

    def _handle(self):
        rcv: Receiver = self.server.owner
        body = _read_body(self.rfile, self.headers)
        req = ReceivedRequest(time.time(), self.command, self.path, list(self.headers.items()), body)
        beh = rcv._record_and_pick(req)
        if beh.hold is not None:
            beh.hold.wait(HOLD_MAX_S)
        if beh.delay:
            time.sleep(beh.delay)
        if beh.close:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.send_response(beh.status)
        for k, v in beh.headers.items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(beh.body)))
        self.end_headers()
        if beh.body:
            self.wfile.write(beh.body)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class Receiver(_ServerBase):
    """Records every webhook request and answers from a script, then a default."""

    handler_cls = _ReceiverHandler

    def __init__(self, name: str = "receiver", port: int = 0, default: Behaviour | int = 200,
                 on_request: Callable[[ReceivedRequest], None] | None = None):
        super().__init__(port)
        self.name = name
        self.on_request = on_request  # called on the server thread after recording
        self._lock = threading.Condition()
        self._requests: list[ReceivedRequest] = []
        self._script: list[Behaviour] = []
        self._default = Behaviour.of(default)

    def script(self, behaviours: Iterable[Behaviour | int | Mapping[str, Any]]):
        """Append behaviours consumed one per request, in order, before the default applies."""
        with self._lock:
            self._script.extend(Behaviour.of(b) for b in behaviours)

    def set_default(self, status: int = 200, headers: Mapping[str, str] | None = None,
                    delay: float = 0.0, close: bool = False, body: bytes = b""):
        with self._lock:
            self._default = Behaviour(status, dict(headers or {}), delay, close, body)

    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def count(self) -> int:
        with self._lock:
            return len(self._requests)

    def clear(self):
        with self._lock:
            self._requests.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Wait until at least `count` requests arrived; return all of them (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"receiver {self.name!r}: expected >= {count} request(s) within {timeout}s, "
                        f"got {len(self._requests)}: {self._requests!r}")
                self._lock.wait(min(left, 0.1))
            return list(self._requests)

    def settle(self, seconds: float = 1.0) -> list[ReceivedRequest]:
        """Wait a bounded time for stragglers, then return every request so far."""
        time.sleep(seconds)
        return self.requests()

    def _record_and_pick(self, req: ReceivedRequest) -> Behaviour:
        with self._lock:
            self._requests.append(req)
            beh = self._script.pop(0) if self._script else self._default
            self._lock.notify_all()
        if self.on_request is not None:
            try:
                self.on_request(req)
            except Exception:  # noqa: BLE001 - a printing hook must not break the receiver
                pass
        return beh


# --------------------------------------------------------------------------------------
# HTTP client with timeouts, returning raw bytes
# --------------------------------------------------------------------------------------
@dataclass
class Response(_Message):
    status: int
    headers_list: list[tuple[str, str]]
    body: bytes


def request(port: int, method: str, path: str, body: bytes | str | Any | None = None,
            headers: Mapping[str, str] | None = None, timeout: float = 10.0, host: str = HOST) -> Response:
    """One HTTP/1.1 request on a fresh connection; the body is read fully and never decoded."""
    if body is not None and not isinstance(body, (bytes, str)):
        body = to_json_bytes(body)
        headers = {"content-type": "application/json", **(headers or {})}
    if isinstance(body, str):
        body = body.encode()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, list(r.getheaders()), data)
    finally:
        conn.close()


class Client:
    """Requests to one host:port (e.g. Envoy's listener) with a default timeout."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.port = port
        self.timeout = timeout

    def request(self, method: str, path: str, body=None, headers=None, timeout: float | None = None) -> Response:
        return request(self.port, method, path, body, headers, timeout or self.timeout)

    def get(self, path: str, **kw) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body=None, **kw) -> Response:
        return self.request("POST", path, body, **kw)

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None, path: str = "/graphql",
                headers: Mapping[str, str] | None = None, **kw) -> Response:
        payload: dict[str, Any] = {"query": query}
        if variables is not None:
            payload["variables"] = dict(variables)
        hdrs = {"content-type": "application/json", "authorization": "Bearer test-jwt", **(headers or {})}
        return self.request("POST", path, to_json_bytes(payload), hdrs, **kw)


# --------------------------------------------------------------------------------------
# Filter configuration helpers
# --------------------------------------------------------------------------------------
def endpoint(name: str, receiver: "Receiver | int", cluster: str | None = None,
             path: str = "/hooks/osmox?src=edge", **kw) -> dict:
    """One `endpoints[]` entry pointing at a receiver; extra keys (camelCase) pass through."""
    port = receiver.port if isinstance(receiver, Receiver) else int(receiver)
    ep = {"name": name, "url": f"http://{HOST}:{port}{path}", "cluster": cluster or f"webhook_{name}"}
    ep.update(kw)
    return ep


def filter_config(endpoints: Sequence[dict], tick_ms: int = 50, **kw) -> dict:
    """A filter configuration with a short tick; extra top-level keys pass through."""
    cfg: dict[str, Any] = {"endpoints": list(endpoints), "tickMs": tick_ms}
    cfg.update(kw)
    return cfg


def clusters_for(cfg: Mapping[str, Any], receivers: Mapping[str, Receiver]) -> dict[str, int]:
    """Map each endpoint's cluster to its receiver's port, by endpoint name."""
    out = {}
    for ep in cfg.get("endpoints", []):
        r = receivers.get(ep["name"])
        if r is not None:
            out[ep["cluster"]] = r.port
    return out


# --------------------------------------------------------------------------------------
# Envoy
# --------------------------------------------------------------------------------------
def envoy_bin() -> str:
    env = os.environ.get("ENVOY_BIN")
    if env:
        return env
    venv = REPO_ROOT / ".venv" / "bin" / "envoy"
    if venv.exists():
        return str(venv)
    return "envoy"


def filter_wasm_path() -> Path:
    return Path(os.environ.get("OSMOX_FILTER_WASM", REPO_ROOT / "dist" / "osmox-webhook-filter.wasm")).resolve()


def static_cluster(name: str, port: int, host: str = HOST, connect_timeout: str = "1s",
                   max_requests: int = 10000) -> dict:
    """A STATIC HTTP/1.1 cluster with big circuit breakers (webhook fan-out)."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": host, "port_value": port}}}}]}],
        },
        "circuit_breakers": {"thresholds": [{
            "priority": "DEFAULT",
            "max_connections": max_requests,
            "max_pending_requests": max_requests,
            "max_requests": max_requests,
        }]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {}},
            }
        },
    }


_LIVE: dict[int, "EnvoyProcess"] = {}


def _kill_leftovers():
    for p in list(_LIVE.values()):
        try:
            p.stop(timeout=3)
        except Exception:  # noqa: BLE001
            pass


atexit.register(_kill_leftovers)


class EnvoyStartError(RuntimeError):
    pass


class EnvoyProcess:
    """One Envoy: listener -> `osmox` cluster (the stub), optional wasm filter, webhook clusters.

    filter_config: dict (JSON-encoded into the plugin's StringValue configuration), a raw str
    (sent verbatim, for malformed-config tests), or None for a plain Envoy without the filter.
    clusters: {cluster_name: port or Receiver} rendered as STATIC webhook clusters.
    use_lds: the listener comes from a watched file so `update_filter_config` can replace it.
    bootstrap_extra: more top-level bootstrap fields (e.g. `stats_config`).
    filters_before: HTTP filters placed before the wasm filter (e.g. a `buffer` filter).
    """

    def __init__(self, workdir: Path | str, upstream_port: int, filter_config: Mapping[str, Any] | str | None = None,
                 clusters: Mapping[str, "int | Receiver"] | None = None, extra_clusters: Sequence[dict] = (),
                 concurrency: int = 2, wasm_path: Path | str | None = None, use_lds: bool = True,
                 log_level: str = "info", component_log_level: str | None = "wasm:debug",
                 env: Mapping[str, str] | None = None, host_env_keys: Sequence[str] = (),
                 buffer_limit_bytes: int | None = None, name: str = "envoy", cwd: Path | str | None = None,
                 bootstrap_extensions: Sequence[dict] = (), failure_policy: str = "FAIL_OPEN",
                 reload_config: Mapping[str, Any] | None = None, drain_time_s: int = 1,
                 bootstrap_extra: Mapping[str, Any] | None = None, vm_id: str = VM_ID,
                 filters_before: Sequence[dict] = ()):
        self.workdir = Path(workdir)
        self.cwd = Path(cwd) if cwd else self.workdir  # Envoy's working directory
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.upstream_port = upstream_port
        self.filter_config = copy.deepcopy(filter_config)
        self.clusters = {k: (v.port if isinstance(v, Receiver) else int(v)) for k, v in (clusters or {}).items()}
        self.extra_clusters = list(extra_clusters)
        self.concurrency = concurrency
        # How long a replaced listener drains, with the filter's replaced root contexts alive
        # (Envoy's default is 600 s).
        self.drain_time_s = drain_time_s
        self.wasm_path = Path(wasm_path).resolve() if wasm_path else filter_wasm_path()
        self.use_lds = use_lds
        self.log_level = log_level
        self.component_log_level = component_log_level
        self.env = dict(env or {})
        self.host_env_keys = list(host_env_keys)
        self.buffer_limit_bytes = buffer_limit_bytes
        self.bootstrap_extensions = list(bootstrap_extensions)
        self.bootstrap_extra = copy.deepcopy(dict(bootstrap_extra or {}))
        self.filters_before = copy.deepcopy(list(filters_before))
        self.failure_policy = failure_policy
        self.reload_config = dict(reload_config or {})
        self.name = name
        # "": left out of the filter's and the singleton's vm_config (Envoy's empty vm_id).
        self.vm_id = vm_id
        self.listener_port = 0
        self.admin_port = 0
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.bootstrap_path = self.workdir / f"{name}-bootstrap.yaml"
        self.lds_dir = self.workdir / f"{name}-lds"
        self.lds_path = self.lds_dir / "lds.yaml"
        self.log_path = self.workdir / f"{name}.log"
        self.stdout_path = self.workdir / f"{name}.stdout"

    # -- rendering --------------------------------------------------------------------
    def singleton_service(self, cfg: Mapping[str, Any]) -> dict:
        """A bootstrap `envoy.bootstrap.wasm` singleton running the filter's module with the
        same vm_id (so it shares the filter's shared data and queue), e.g. as its sender."""
        return {"name": "envoy.bootstrap.wasm", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.wasm.v3.WasmService",
            "singleton": True,
            "config": {
                "name": PLUGIN_NAME + "_singleton",
                "root_id": ROOT_ID,
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": json.dumps(cfg)},
                "vm_config": {**self.vm_id_field(), "runtime": WASM_RUNTIME,
                              "code": {"local": {"filename": str(self.wasm_path)}}},
            }}}

    def vm_id_field(self) -> dict[str, str]:
        return {"vm_id": self.vm_id} if self.vm_id else {}

    def wasm_filter(self, cfg: Mapping[str, Any] | str) -> dict:
        conf = cfg if isinstance(cfg, str) else json.dumps(cfg)
        vm: dict[str, Any] = {
            **self.vm_id_field(),
            "runtime": WASM_RUNTIME,
            "code": {"local": {"filename": str(self.wasm_path)}},
        }
        if self.host_env_keys:
            vm["environment_variables"] = {"host_env_keys": list(self.host_env_keys)}
        return {
            "name": FILTER_NAME,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": PLUGIN_NAME,
                    "root_id": ROOT_ID,
                    "failure_policy": self.failure_policy,
                    **({"reload_config": self.reload_config} if self.reload_config else {}),
                    "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": conf},
                    "vm_config": vm,
                },
            },
        }

    def listener(self, cfg: Mapping[str, Any] | str | None) -> dict:
        http_filters = list(self.filters_before)
        if cfg is not None:
            http_filters.append(self.wasm_filter(cfg))
        http_filters.append({"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
        lst: dict[str, Any] = {
            "name": "ingress",
            "address": {"socket_address": {"address": HOST, "port_value": self.listener_port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "ingress",
                    "codec_type": "AUTO",
                    "route_config": {"name": "local", "virtual_hosts": [{
                        "name": "all", "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "osmox", "timeout": "30s"}}],
                    }]},
                    "http_filters": http_filters,
                },
            }]}],
        }
        if self.buffer_limit_bytes is not None:
            lst["per_connection_buffer_limit_bytes"] = self.buffer_limit_bytes
        return lst

    def bootstrap(self, cfg: Mapping[str, Any] | str | None, use_lds: bool) -> dict:
        clusters = [static_cluster("osmox", self.upstream_port)]
        clusters += [static_cluster(n, p) for n, p in self.clusters.items()]
        clusters += self.extra_clusters
        b: dict[str, Any] = {
            "node": {"id": f"e2e-{self.name}", "cluster": "e2e"},
            "admin": {"address": {"socket_address": {"address": HOST, "port_value": self.admin_port}}},
            "static_resources": {"clusters": clusters},
        }
        if self.bootstrap_extensions:
            b["bootstrap_extensions"] = self.bootstrap_extensions
        b.update(self.bootstrap_extra)
        if use_lds:
            b["dynamic_resources"] = {"lds_config": {"resource_api_version": "V3", "path_config_source": {
                "path": str(self.lds_path), "watched_directory": {"path": str(self.lds_dir)}}}}
        else:
            b["static_resources"]["listeners"] = [self.listener(cfg)]
        return b

    def _write_lds(self, cfg):
        self.write_lds(self.listener(cfg))

    def write_lds(self, listener: dict, *more: dict):
        """Offer `listener` (see `listener()`), and any `more`, over LDS, without waiting for
        Envoy's verdict."""
        self.lds_dir.mkdir(parents=True, exist_ok=True)
        doc = {"version_info": str(time.time_ns()), "resources": [
            dict({"@type": "type.googleapis.com/envoy.config.listener.v3.Listener"}, **one)
            for one in (listener, *more)]}
        tmp = self.lds_dir / f".lds.{os.getpid()}.{time.time_ns()}.tmp"
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self.lds_path)  # atomic: Envoy sees the move in the watched directory

    def _render(self, use_lds: bool):
        self.listener_port = free_port()
        self.admin_port = free_port()
        if use_lds:
            self._write_lds(self.filter_config)
        self.bootstrap_path.write_text(json.dumps(self.bootstrap(self.filter_config, use_lds), indent=1))

    # -- process control --------------------------------------------------------------
    def _spawn(self):
        args = [envoy_bin(), "-c", str(self.bootstrap_path), "--concurrency", str(self.concurrency),
                "--disable-hot-restart", "--log-path", str(self.log_path), "-l", self.log_level,
                "--drain-time-s", str(self.drain_time_s), "--parent-shutdown-time-s", "2",
                # Flush the log file often, so logs() of a running Envoy is current.
                "--file-flush-interval-msec", "100"]
        if self.component_log_level:
            args += ["--component-log-level", self.component_log_level]
        env = dict(os.environ)
        env.update(self.env)
        self.log_path.write_text("")
        out = open(self.stdout_path, "wb")
        try:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=str(self.cwd), env=env, start_new_session=True)
        finally:
            out.close()
        self.pid = self.proc.pid
        _LIVE[self.pid] = self

    def start(self, timeout: float = 20.0) -> "EnvoyProcess":
        """Start and wait until admin /ready says LIVE and Envoy lists its listener, which accepts
        connections; a listener port another process took first is retried on fresh ports."""
        if self.filter_config is not None and not self.wasm_path.exists():
            raise EnvoyStartError(f"wasm module not found: {self.wasm_path} (run ./build.sh first)")
        last = ""
        for _attempt in range(3):
            self._render(self.use_lds)
            self._spawn()
            try:
                self._wait_live(timeout)
                return self
            except EnvoyStartError as e:
                last = str(e)
                self.stop()
                # Read once Envoy exited: its log is complete then, a just-rejected listener's
                # line included.
                log = self.logs()
                if "Address already in use" in log or "cannot bind" in log:
                    continue  # port race with another process: try fresh ports
                raise
        raise EnvoyStartError(last)

    def _wait_live(self, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            rc = self.proc.poll()
            if rc is not None:
                raise EnvoyStartError(f"envoy exited with code {rc} during start:\n{self.logs()[-6000:]}")
            try:
                r = request(self.admin_port, "GET", "/ready", timeout=1.0)
                if r.status == 200 and r.body.strip() == b"LIVE":
                    if self._listener_is_envoys() and self._listener_accepts():
                        return
                    if self.use_lds and self.stat("listener_manager.lds.update_rejected", 0):
                        # LIVE without its listener (e.g. another process bound the port
                        # first, and that process's socket is what accepts connections).
                        raise EnvoyStartError(f"envoy rejected its listener:\n{self.logs()[-6000:]}")
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise EnvoyStartError(f"envoy not LIVE with a listener after {timeout}s:\n{self.logs()[-6000:]}")
            time.sleep(0.05)

    def _listener_is_envoys(self) -> bool:
        """Envoy lists a listener on listener_port: a connection that is accepted could reach
        another process that bound the port first."""
        body = self.admin("GET", "/listeners", timeout=1.0).body.decode(errors="replace")
        return any(line.strip().endswith(f":{self.listener_port}") for line in body.splitlines())

    def _listener_accepts(self) -> bool:
        try:
            with socket.create_connection((HOST, self.listener_port), timeout=0.5):
                return True
        except OSError:
            return False

    def expect_start_failure(self, timeout: float = 20.0) -> str:
        """Start with a static listener (bootstrap) and expect Envoy to refuse it.

        Returns the log text once the process exited on its own (or, with use_lds, once the
        listener update was rejected). Raises AssertionError if Envoy became LIVE with the
        listener instead.
        """
        if not self.wasm_path.exists():
            raise EnvoyStartError(f"wasm module not found: {self.wasm_path} (run ./build.sh first)")
        self._render(self.use_lds)
        self._spawn()
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return self.logs()
                if self.use_lds:
                    try:
                        if self.stats().get("listener_manager.lds.update_rejected", 0) >= 1:
                            return self.logs()
                    except OSError:
                        pass
                elif self.admin_port and self._listener_accepts():
                    try:
                        ready = request(self.admin_port, "GET", "/ready", timeout=1.0)
                        if ready.body.strip() == b"LIVE":
                            raise AssertionError(f"envoy started and accepted the config:\n{self.logs()[-4000:]}")
                    except OSError:
                        pass
                time.sleep(0.05)
            raise AssertionError(f"envoy neither exited nor rejected the config within {timeout}s:\n"
                                 f"{self.logs()[-4000:]}")
        finally:
            self.stop()

    @property
    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 10.0):
        """SIGTERM by PID, wait, SIGKILL fallback. Safe to call twice."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        _LIVE.pop(proc.pid, None)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- observation ------------------------------------------------------------------
    def url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.listener_port}{path}"

    def admin_url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.admin_port}{path}"

    @property
    def client(self) -> Client:
        return Client(self.listener_port)

    def request(self, method: str, path: str, body=None, headers=None, timeout: float = 10.0) -> Response:
        return request(self.listener_port, method, path, body, headers, timeout)

    def admin(self, method: str, path: str, timeout: float = 5.0) -> Response:
        return request(self.admin_port, method, path, timeout=timeout)

    def stats(self) -> dict[str, Any]:
        """Parse admin /stats text: counters/gauges as int, histograms as their text."""
        r = self.admin("GET", "/stats")
        out: dict[str, Any] = {}
        for line in r.body.decode(errors="replace").splitlines():
            name, sep, value = line.partition(": ")
            if not sep:
                continue
            value = value.strip()
            try:
                out[name] = int(value)
            except ValueError:
                out[name] = value
        return out

    def stat(self, name: str, default: Any = 0) -> Any:
        return self.stats().get(name, default)

    def metric(self, short: str) -> int:
        """One of the filter's metrics by short name (see METRICS); 0 when not defined yet.

        The filter hands its counts to Envoy once per tick (tickMs, 50 ms in these tests), so
        this waits a few ticks first: a read right after an event would see the old value."""
        time.sleep(METRIC_SETTLE_S)
        v = self.stat(metric_name(short), 0)
        return v if isinstance(v, int) else 0

    def wait_stat(self, name: str, at_least: int, timeout: float = 10.0) -> int:
        """Wait until stat `name` (full name) is >= at_least; returns its value."""
        def check():
            v = self.stat(name, 0)
            # In a tuple: a value of 0 that is reached is truthy to wait_until too.
            return (v,) if isinstance(v, int) and v >= at_least else None
        try:
            return wait_until(check, timeout, what=f"{name} >= {at_least}")[0]
        except TimeoutError as e:
            raise AssertionError(f"{e}; now {self.stat(name, None)!r}") from None

    def wait_metric(self, short: str, at_least: int, timeout: float = 10.0) -> int:
        return self.wait_stat(metric_name(short), at_least, timeout)

    def logs(self) -> str:
        parts = []
        for p in (self.stdout_path, self.log_path):
            try:
                parts.append(p.read_text(errors="replace"))
            except FileNotFoundError:
                pass
        return "\n".join(parts)

    # -- runtime reconfiguration (LDS) -----------------------------------------------
    def update_filter_config(self, new_cfg: Mapping[str, Any] | str | None, timeout: float = 15.0):
        """Replace the listener (with the filter's new configuration) via the watched LDS file.

        Waits until Envoy accepted it (lds.update_success and listener_modified moved and no
        listener is warming); raises AssertionError with the log tail if it was rejected.
        """
        if not self.use_lds:
            raise RuntimeError("update_filter_config needs use_lds=True")
        before = self.stats()
        ok0 = before.get("listener_manager.lds.update_success", 0)
        rej0 = before.get("listener_manager.lds.update_rejected", 0)
        mod0 = before.get("listener_manager.listener_modified", 0)
        self.filter_config = copy.deepcopy(new_cfg)
        self._write_lds(new_cfg)
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            if s.get("listener_manager.lds.update_rejected", 0) > rej0:
                raise AssertionError(f"LDS update rejected:\n{self.logs()[-4000:]}")
            if (s.get("listener_manager.lds.update_success", 0) > ok0
                    and s.get("listener_manager.listener_modified", 0) > mod0
                    and s.get("listener_manager.total_listeners_warming", 0) == 0
                    and self._listener_accepts()):
                return
            if time.monotonic() >= deadline:
                raise AssertionError(f"LDS update not applied within {timeout}s:\n{self.logs()[-4000:]}")
            time.sleep(0.05)


class EnvoyFromConfig(EnvoyProcess):
    """An Envoy started from a ready-made bootstrap text (e.g. envoy/envoy-demo.yaml with its
    ports rewritten). The caller supplies the listener and admin ports used in the text; the
    process runs with cwd=workdir, so relative paths in the text resolve from there.

    With `text_for(listener_port, admin_port)`, the text for other ports: a start that finds a
    port taken by another process (handed out free, bound later) is retried on fresh ones."""

    def __init__(self, workdir: Path | str, config_text: str, listener_port: int, admin_port: int,
                 concurrency: int = 2, name: str = "envoy",
                 text_for: Callable[[int, int], str] | None = None, **kw):
        super().__init__(workdir, 0, None, concurrency=concurrency, use_lds=False, name=name, **kw)
        self.config_text = config_text
        self._ports = (listener_port, admin_port)
        self.text_for = text_for

    def _render(self, use_lds: bool):
        self.listener_port, self.admin_port = self._ports
        self.bootstrap_path.write_text(self.config_text)

    def start(self, timeout: float = 20.0) -> "EnvoyProcess":
        for attempt in range(3):
            self._render(False)
            self._spawn()
            try:
                self._wait_live(timeout)
                return self
            except EnvoyStartError:
                self.stop()
                # Read once Envoy exited: its log is complete then.
                log = self.logs()
                taken = "Address already in use" in log or "cannot bind" in log
                if self.text_for is None or not taken or attempt == 2:
                    raise
                self._ports = (free_port(), free_port())
                self.config_text = self.text_for(*self._ports)
        raise AssertionError("unreachable")


def shipped_config_envoy(workdir: Path, wasm: Path, osmox_port: int, receiver_port: int) -> EnvoyFromConfig:
    """envoy/envoy-demo.yaml as shipped, its four ports rewritten (the listener and admin to
    free ones) and `wasm` placed at the relative path the file names; not started."""
    shipped = (REPO_ROOT / "envoy" / "envoy-demo.yaml").read_text()

    def text_for(lport: int, aport: int) -> str:
        text = shipped
        for old, new in (("port_value: 10000", f"port_value: {lport}"), ("port_value: 9901", f"port_value: {aport}"),
                         ("port_value: 3000", f"port_value: {osmox_port}"),
                         ("port_value: 8089", f"port_value: {receiver_port}")):
            assert text.count(old) == 1, f"envoy/envoy-demo.yaml changed shape: {old!r}"
            text = text.replace(old, new)
        return text

    lport, aport = free_port(), free_port()
    text = text_for(lport, aport)
    (workdir / "dist").mkdir(parents=True)
    (workdir / "dist" / "osmox-webhook-filter.wasm").write_bytes(wasm.read_bytes())
    return EnvoyFromConfig(workdir, text, lport, aport, name="shipped", text_for=text_for)

