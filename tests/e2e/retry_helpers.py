"""Helpers for tests/e2e/test_retries.py: a receiver that remembers how it answered each
request, GraphQL notification rows built from scratch, and small wait/inspection utilities.

Nothing here changes the shared harness; `TrackingReceiver` only subclasses its Receiver.
"""
from __future__ import annotations

import collections
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from harness import Behaviour, ReceivedRequest, Receiver, to_json_bytes


@dataclass
class Answer:
    """One request and the behaviour the receiver answered it with."""

    req: ReceivedRequest
    beh: Behaviour
    n: int  # 1-based arrival number at this receiver

    @property
    def webhook_id(self) -> str:
        return self.req.headers.get("webhook-id", "")

    @property
    def ok(self) -> bool:
        """Answered 2xx without closing the connection.

        Not whether the filter took it for a success: a `delay` past the endpoint's
        `timeoutMs` makes the attempt a timeout there. A test that delays a 2xx checks
        `deliveries_succeeded` too (the half-open probe test does)."""
        return 200 <= self.beh.status < 300 and not self.beh.close

    def json(self) -> Any:
        return self.req.json()


Decide = Callable[[ReceivedRequest, int], "Behaviour | int | Mapping[str, Any] | None"]


class TrackingReceiver(Receiver):
    """A Receiver that records (request, behaviour) pairs.

    `decide(req, n)` (n = 1-based arrival number) may pick the behaviour per request; when it
    returns None the usual script/default applies. It runs under no lock, on server threads.
    """

    def __init__(self, name: str = "receiver", decide: Decide | None = None, **kw):
        super().__init__(name, **kw)
        self.decide = decide
        self._answers: list[Answer] = []
        self._ok_ids: set[str] = set()
        self._n = 0
        self._n_lock = threading.Lock()

    def _record_and_pick(self, req: ReceivedRequest) -> Behaviour:
        with self._n_lock:
            self._n += 1
            n = self._n
        beh = super()._record_and_pick(req)
        if self.decide is not None:
            d = self.decide(req, n)
            if d is not None:
                beh = Behaviour.of(d)
        a = Answer(req, beh, n)
        with self._lock:
            self._answers.append(a)
            if a.ok:
                self._ok_ids.add(a.webhook_id)
            self._lock.notify_all()
        return beh

    def ok_id_count(self) -> int:
        with self._lock:
            return len(self._ok_ids)

    def answers(self) -> list[Answer]:
        with self._lock:
            return list(self._answers)

    def ok_answers(self) -> list[Answer]:
        return [a for a in self.answers() if a.ok]

    def wait_answers(self, pred: Callable[[list[Answer]], bool], timeout: float, what: str) -> list[Answer]:
        """Wait until pred(all answers) holds; AssertionError with a summary on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                got = list(self._answers)
                if pred(got):
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver {self.name!r}: timed out after {timeout}s waiting for {what}; "
                                         f"{summarize(got)}")
                self._lock.wait(min(left, 0.1))

    def wait_ok_ids(self, ids: Iterable[str] | int, timeout: float) -> list[Answer]:
        """Wait until every webhook-id in `ids` (or that many distinct ids) got a 2xx answer."""
        # Polls a set kept up to date per request: cheap even for tens of thousands of answers.
        wanted = None if isinstance(ids, int) else set(ids)
        want = ids if isinstance(ids, int) else len(wanted)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                done = (len(self._ok_ids) >= want) if wanted is None else wanted <= self._ok_ids
            if done:
                return self.answers()
            if time.monotonic() >= deadline:
                got = self.answers()
                raise AssertionError(f"receiver {self.name!r}: timed out after {timeout}s waiting for 2xx answers "
                                     f"to {want} distinct webhook-ids; {summarize(got)}")
            time.sleep(0.05)


def summarize(answers: list[Answer], limit: int = 12) -> str:
    ok = sum(1 for a in answers if a.ok)
    ids = len({a.webhook_id for a in answers})
    head = ", ".join(f"#{a.n} {a.webhook_id} -> {a.beh.status}{' close' if a.beh.close else ''}"
                     for a in answers[:limit])
    return f"{len(answers)} request(s), {ok} answered 2xx, {ids} distinct webhook-ids [{head}{' ...' if len(answers) > limit else ''}]"


def ok_counts(answers: list[Answer]) -> collections.Counter:
    """webhook-id -> number of 2xx-answered deliveries."""
    return collections.Counter(a.webhook_id for a in answers if a.ok)


def by_webhook_id(answers: list[Answer]) -> dict[str, list[Answer]]:
    out: dict[str, list[Answer]] = collections.defaultdict(list)
    for a in answers:
        out[a.webhook_id].append(a)
    return dict(out)


# ------------------------------------------------------------------------------------------
# OsmoX rows
# ------------------------------------------------------------------------------------------
def iso(ms: int) -> str:
    """An OsmoX-style ISO-8601 UTC timestamp (ms precision) from epoch ms."""
    t = time.gmtime(ms // 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{ms % 1000:03d}Z"


BASE_MS = 1_776_672_000_000  # 2026-04-20T08:00:00Z


def notification_row(nid: int, status: int, retry_count: int = 0, updated_ms: int | None = None,
                     provider_id: int = 1, channel_type: int = 1, pad: str = "") -> dict:
    """One GraphQL notification row, shaped like OsmoX's `notifications` query answer."""
    updated = BASE_MS + nid if updated_ms is None else updated_ms
    data = {"from": "alerts@example.com", "to": f"user{nid}@example.com", "subject": f"n{nid}",
            "text": "e2e retry test" + pad}
    return {
        "id": nid,
        "providerId": provider_id,
        "providerChainId": None,
        "channelType": channel_type,
        "applicationId": 2,
        "deliveryStatus": status,
        "status": 1,
        "retryCount": retry_count,
        "data": data,
        "result": {"result": {"status": status}},
        "createdBy": "e2e",
        "updatedBy": "e2e",
        "createdOn": iso(BASE_MS),
        "updatedOn": iso(updated),
        "notificationSentOn": None,
    }


def notifications_page(rows: list[dict], total: int | None = None, offset: int = 0) -> dict:
    return {"data": {"notifications": {"notifications": rows, "total": total if total is not None else len(rows),
                                       "offset": offset, "limit": len(rows)}}}


def page_bytes(rows: list[dict], **kw) -> bytes:
    return to_json_bytes(notifications_page(rows, **kw))


NOTIFICATIONS_QUERY = """query Page($offset: Float!) {
  notifications(options: { limit: 500, offset: $offset, sortBy: "createdOn", sortOrder: DESC }) {
    notifications { id providerId providerChainId channelType applicationId deliveryStatus status
                    retryCount data result createdBy updatedBy createdOn updatedOn notificationSentOn }
    total offset limit
  }
}"""


_READY_POLLER = r"""
import http.client, json, select, sys, time
port, every, max_s = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
out, end = [], time.monotonic() + max_s
while time.monotonic() < end:
    t0 = time.monotonic()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/ready")
        r = c.getresponse()
        body = r.read().strip().decode(errors="replace")
        c.close()
        dt = time.monotonic() - t0
        out.append([time.time() - dt, dt, r.status, body])
    except Exception as e:
        dt = time.monotonic() - t0
        out.append([time.time() - dt, dt, 0, repr(e)])
    left = max(0.0, every - (time.monotonic() - t0))
    if select.select([sys.stdin], [], [], left)[0]:
        break  # stdin closed: stop
print(json.dumps(out))
"""


class ReadyPoller:
    """Polls admin /ready from a separate process (its own GIL: the receiver's threads in
    this process cannot delay it), every `every` s, for at most `max_s` s."""

    def __init__(self, admin_port: int, every: float = 0.2, max_s: float = 300.0):
        self._proc = subprocess.Popen([sys.executable, "-c", _READY_POLLER, str(admin_port), str(every), str(max_s)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def stop(self, timeout: float = 15.0) -> list[tuple[float, float, int, str]]:
        """Stop polling; [(start, latency_s, status, body)] per poll."""
        try:
            out, err = self._proc.communicate(b"", timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            out, err = self._proc.communicate(timeout=5)
        if self._proc.returncode != 0:
            raise AssertionError(f"/ready poller failed: {err.decode(errors='replace')[-2000:]}")
        return [tuple(x) for x in json.loads(out)]
