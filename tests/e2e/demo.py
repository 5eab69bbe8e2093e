#!/usr/bin/env python3
"""Demo of osmox-webhook-filter (run via `./build.sh demo [--keep]`).

Starts, on fixed loopback ports:
  * an OsmoX stand-in on 127.0.0.1:3000 (a tiny in-memory notification store),
  * a webhook receiver on 127.0.0.1:8089 that prints every webhook,
  * Envoy with envoy/envoy-demo.yaml (listener 127.0.0.1:10000, admin 127.0.0.1:9901),
then tells a story through Envoy: create a notification over REST (PENDING), poll GraphQL
while it moves 1 -> 2 -> 5, poll again (no duplicate), and a second one that FAILS.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (METRIC_PREFIX, REPO_ROOT, STATUS_NAMES, Client, EnvoyFromConfig, OsmoxStub,  # noqa: E402
                     ReceivedRequest, Receiver, StubRequest, StubResponse, port_is_free, to_json_bytes)

OSMOX_PORT, RECEIVER_PORT, LISTENER_PORT, ADMIN_PORT = 3000, 8089, 10000, 9901
DEMO_CONFIG = REPO_ROOT / "envoy" / "envoy-demo.yaml"
DEMO_SECRET = "whsec_ZGVtby1zZWNyZXQtbm90LWZvci1wcm9kdWN0aW9uIQ=="  # the one in envoy-demo.yaml
WAIT_S = 10.0

QUERY = ("query { notifications(options: { limit: 10, offset: 0 }) { notifications { id providerId "
         "providerChainId channelType applicationId deliveryStatus status retryCount data result createdBy "
         "updatedBy createdOn updatedOn notificationSentOn } total offset limit } }")

_print_lock = threading.Lock()


def say(msg: str = ""):
    with _print_lock:
        print(msg, flush=True)


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


class MiniOsmox:
    """Just enough OsmoX: POST /notifications (v8 REST, snake_case) and the GraphQL list."""

    def __init__(self, stub: OsmoxStub):
        self.lock = threading.Lock()
        self.rows: dict[int, dict] = {}
        self.next_id = 2001
        stub.set_handler("POST", "/notifications", self.create)
        stub.set_handler("POST", "/graphql", self.graphql)

    def create(self, req: StubRequest) -> StubResponse:
        body = json.loads(req.body or b"{}")
        with self.lock:
            nid, self.next_id = self.next_id, self.next_id + 1
            ts = now_iso()
            row = {"id": nid, "providerId": body.get("providerId", 1), "providerChainId": None,
                   "channelType": body.get("channelType", 1), "applicationId": 1, "deliveryStatus": 1,
                   "status": 1, "retryCount": 0, "data": body.get("data", {}), "result": None,
                   "createdBy": "demo-app", "updatedBy": "demo-app", "createdOn": ts, "updatedOn": ts,
                   "notificationSentOn": None}
            self.rows[nid] = row
            snake = {"provider_id": row["providerId"], "data": row["data"], "application_id": 1,
                     "created_by": "demo-app", "updated_by": "demo-app", "channel_type": row["channelType"],
                     "result": None, "notification_sent_on": None, "provider_chain_id": None, "id": nid,
                     "delivery_status": 1, "created_on": ts, "updated_on": ts, "status": 1, "retry_count": 0}
        return StubResponse(201, [("Content-Type", "application/json")], to_json_bytes(snake))

    def graphql(self, req: StubRequest) -> StubResponse:
        with self.lock:
            rows = [copy.deepcopy(r) for r in sorted(self.rows.values(), key=lambda r: -r["id"])]
        doc = {"data": {"notifications": {"notifications": rows, "total": len(rows), "offset": 0, "limit": 10}}}
        return StubResponse(200, [("Content-Type", "application/json")], to_json_bytes(doc))

    def save_result(self, nid: int, result):
        """OsmoX saves a SUCCESS's result after the state, moving `updatedOn` again."""
        with self.lock:
            self.rows[nid]["result"] = result
            self.rows[nid]["updatedOn"] = now_iso()

    def move(self, nid: int, status: int, result=None, retry_count: int | None = None):
        with self.lock:
            r = self.rows[nid]
            r["deliveryStatus"] = status
            r["updatedOn"] = now_iso()
            if result is not None:
                r["result"] = result
            if retry_count is not None:
                r["retryCount"] = retry_count
            if status == 5:
                r["notificationSentOn"] = r["updatedOn"]


def print_webhook(req: ReceivedRequest):
    lines = [f"\n  <<< webhook #{print_webhook.n} at receiver: {req.method} {req.path}"]
    print_webhook.n += 1
    for k, v in req.headers_list:
        lines.append(f"      {k}: {v}")
    try:
        body = json.loads(req.body)
        lines.append("      " + json.dumps(body, indent=2).replace("\n", "\n      "))
        lines.append(f"      => notification {body.get('id')} is {STATUS_NAMES.get(body.get('deliveryStatus'), '?')}")
    except ValueError:
        lines.append(f"      {req.body[:500]!r}")
    try:
        from standardwebhooks.webhooks import Webhook
        Webhook(DEMO_SECRET).verify(req.body, req.headers)
        lines.append("      signature: valid (Standard Webhooks)")
    except Exception as e:  # noqa: BLE001
        lines.append(f"      signature: not verified ({type(e).__name__}: {e})")
    say("\n".join(lines))


print_webhook.n = 1


def wait_webhooks(rcv: Receiver, count: int, timeout: float = WAIT_S) -> bool:
    try:
        rcv.wait_for(count, timeout)
        return True
    except AssertionError:
        say(f"  !!! expected {count} webhook(s) within {timeout:.0f}s, got {rcv.count()}")
        return False


def show_stats(envoy: EnvoyFromConfig):
    stats = envoy.stats()
    say("\n--- filter stats (admin /stats, " + METRIC_PREFIX + "*) ---")
    found = False
    for k in sorted(stats):
        # Counters and gauges; histograms (attempt_duration_ms, delivery_delay_ms) are in
        # /stats/prometheus.
        if k.startswith(METRIC_PREFIX) and isinstance(stats[k], int):
            found = True
            say(f"  {k[len(METRIC_PREFIX):]:44} {stats[k]}")
    if not found:
        say("  (none: is the filter loaded?)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", action="store_true", help="keep everything running after the story, until Ctrl-C")
    args = ap.parse_args()

    busy = [p for p in (OSMOX_PORT, RECEIVER_PORT, LISTENER_PORT, ADMIN_PORT) if not port_is_free(p)]
    if busy:
        say(f"demo: port(s) {', '.join(map(str, busy))} on 127.0.0.1 already in use; stop whatever holds them "
            f"(e.g. `ss -ltnp | grep -E ':({'|'.join(map(str, busy))})\\b'`)")
        return 2
    wasm = REPO_ROOT / "dist" / "osmox-webhook-filter.wasm"
    if not wasm.exists():
        say(f"demo: {wasm} missing: run ./build.sh first")
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="osmox-demo-"))
    stub = OsmoxStub(OSMOX_PORT).start()
    osmox = MiniOsmox(stub)
    rcv = Receiver("demo", RECEIVER_PORT, on_request=print_webhook).start()
    envoy = EnvoyFromConfig(workdir, DEMO_CONFIG.read_text(), LISTENER_PORT, ADMIN_PORT, name="envoy-demo",
                            cwd=REPO_ROOT)
    ok = True
    try:
        envoy.start()
        say(f"Envoy pid {envoy.pid}: listener http://127.0.0.1:{LISTENER_PORT}, admin http://127.0.0.1:{ADMIN_PORT}, "
            f"log {envoy.log_path}")
        say(f"OsmoX stand-in http://127.0.0.1:{OSMOX_PORT}, webhook receiver http://127.0.0.1:{RECEIVER_PORT}")
        client = Client(LISTENER_PORT, timeout=10)

        say("\n[1] client creates an email notification: POST /notifications (x-api-key) through Envoy")
        r = client.post("/notifications", {"providerId": 1, "channelType": 1,
                                           "data": {"to": "jane.doe@example.com", "subject": "Invoice ready"}},
                        headers={"x-api-key": "demo-key"})
        created = r.json()
        nid = created["id"]
        say(f"    -> {r.status}: notification {nid}, delivery_status {created['delivery_status']} (PENDING)")
        ok &= wait_webhooks(rcv, 1)

        time.sleep(0.3)
        osmox.move(nid, 2)
        say(f"\n[2] OsmoX moved {nid} to 2 (IN_PROGRESS); client polls POST /graphql")
        r = client.graphql(QUERY)
        say(f"    -> {r.status}, {len(r.body)} bytes")
        ok &= wait_webhooks(rcv, 2)  # PENDING, IN_PROGRESS

        time.sleep(0.3)
        osmox.move(nid, 5)
        say(f"\n[3] OsmoX saved {nid} as 5 (SUCCESS) but not yet its result (its own webhook would go "
            "now, with \"result\": null); client polls POST /graphql")
        r = client.graphql(QUERY)
        say(f"    -> {r.status}, {len(r.body)} bytes; the filter holds the SUCCESS webhook for a poll that "
            "shows the result (awaitResultMs)")
        time.sleep(0.3)
        held = rcv.count() == 2
        say("    -> held: no webhook yet" if held else f"    -> NOT HELD: {rcv.count()} webhooks")
        ok &= held
        osmox.save_result(nid, {"result": {"response": "250 2.0.0 OK"}})
        say(f"\n[4] OsmoX saves {nid}'s result; client polls POST /graphql again")
        client.graphql(QUERY)
        ok &= wait_webhooks(rcv, 3)
        with_result = rcv.requests()[-1].json().get("result") is not None
        say("    -> the SUCCESS webhook carries the result" if with_result else "    -> RESULT MISSING")
        ok &= with_result

        say("\n[5] client polls again, nothing changed: no new webhook expected")
        before = rcv.count()
        client.graphql(QUERY)
        client.graphql(QUERY)
        time.sleep(1.0)
        say(f"    -> webhooks before {before}, after {rcv.count()}"
            + ("  (no duplicate)" if rcv.count() == before else "  (DUPLICATE!)"))
        ok &= rcv.count() == before

        say("\n[6] an SMS that fails: created, then FAILED after 3 provider retries")
        r = client.post("/notifications", {"providerId": 5, "channelType": 5,
                                           "data": {"to": "+1555555", "message": "code 119204"}},
                        headers={"x-api-key": "demo-key"})
        sms = r.json()["id"]
        ok &= wait_webhooks(rcv, before + 1)
        osmox.move(sms, 6, retry_count=3, result={"result": {
            "message": "The 'To' number +1555555 is not a valid phone number.",
            "moreInfo": "https://www.twilio.com/docs/errors/21211"}})
        client.graphql(QUERY)
        ok &= wait_webhooks(rcv, before + 2)

        time.sleep(0.5)
        show_stats(envoy)
        say(f"\n{rcv.count()} webhook(s) received. Story {'complete' if ok else 'INCOMPLETE (see above)'}.")

        if args.keep:
            say("\n--keep: everything keeps running; try e.g.\n"
                f"  curl -s -XPOST -H 'content-type: application/json' -d '{{\"providerId\":1}}' "
                f"http://127.0.0.1:{LISTENER_PORT}/notifications\n"
                f"  curl -s http://127.0.0.1:{ADMIN_PORT}/stats | grep wasmcustom\nCtrl-C to stop.")
            stop = threading.Event()
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            while not stop.wait(0.5):
                if envoy.exit_code is not None:
                    say(f"envoy exited with {envoy.exit_code}")
                    break
        return 0 if ok else 1
    except BaseException:
        ok = False  # keep the workdir: Envoy's log tells what went wrong
        raise
    finally:
        envoy.stop()
        rcv.stop()
        stub.stop()
        say("stopped: envoy, receiver, OsmoX stand-in")
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"kept {workdir} (Envoy's bootstrap and log)")


if __name__ == "__main__":
    sys.exit(main())
