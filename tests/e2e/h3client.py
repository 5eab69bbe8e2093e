"""A minimal HTTP/3 client for the end-to-end tests (aioquic): one request per call, each on a
connection of its own, the server's certificate not verified (the tests make it themselves)."""
from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent


@dataclass
class H3Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class _Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiting: dict[int, tuple[asyncio.Future, list[H3Event]]] = {}

    def quic_event_received(self, event: QuicEvent):
        for ev in self.h3.handle_event(event):
            if isinstance(ev, (HeadersReceived, DataReceived)) and ev.stream_id in self.waiting:
                fut, events = self.waiting[ev.stream_id]
                events.append(ev)
                if ev.stream_ended and not fut.done():
                    fut.set_result(events)

    async def request(self, method: str, authority: str, path: str, headers: list[tuple[str, str]],
                      body: bytes) -> H3Response:
        sid = self._quic.get_next_available_stream_id()
        fut = asyncio.get_running_loop().create_future()
        self.waiting[sid] = (fut, [])
        hdrs = [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", authority.encode()),
                (b":path", path.encode())] + [(k.lower().encode(), v.encode()) for k, v in headers]
        if body:
            hdrs.append((b"content-length", str(len(body)).encode()))
        self.h3.send_headers(sid, hdrs, end_stream=not body)
        if body:
            self.h3.send_data(sid, body, end_stream=True)
        self.transmit()
        events = await fut
        status, resp_headers, data = 0, [], b""
        for ev in events:
            if isinstance(ev, HeadersReceived) and not status:
                resp_headers = [(k, v) for k, v in ev.headers if not k.startswith(b":")]
                status = int(dict(ev.headers)[b":status"])
            elif isinstance(ev, DataReceived):
                data += ev.data
        return H3Response(status, resp_headers, data)


async def _one(host: str, port: int, method: str, path: str, headers, body: bytes) -> H3Response:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE, server_name="localhost")
    async with connect(host, port, configuration=cfg, create_protocol=_Client) as client:
        return await client.request(method, f"localhost:{port}", path, headers, body)


def request(host: str, port: int, method: str, path: str, headers: list[tuple[str, str]] = (),
            body: bytes = b"", timeout: float = 10.0) -> H3Response:
    """One request on a connection of its own; `timeout` bounds all of it, the handshake too
    (left to aioquic, a connection that never comes up waits out its idle timeout)."""
    return asyncio.run(asyncio.wait_for(_one(host, port, method, path, list(headers), body), timeout))
