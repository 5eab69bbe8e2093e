"""End-to-end test of everything at once on a real Envoy with two workers (and four, more VMs
than this machine's cores, for the tests that allow it): concurrent polls of
pages whose notifications move through two states, a receiver that fails every third request,
one behind a rate limit, one that is down and then comes back (its circuit opens and closes),
and a configuration update between the two states; and the same kind of burst with the
workers' VMs crashing in the middle of it. The other tests each take one of these alone;
here they share the ledger, the workers and the ticks.

What must hold whatever the interleaving: every endpoint gets each notification's final
state exactly once with a 2xx, signed with its own key; an earlier state is delivered at most
once, never after the final one, and is otherwise counted as superseded; one webhook-id always
carries one body; the rate limit holds; nothing is dropped, exhausted or orphaned, and the
gauges come back to zero. And the same notifications polled at once through GraphQL and
through REST v8's list, the REST answers caught before OsmoX saved each SUCCESS's result; and
endpoints learned from OsmoX registrations, one moved to another receiver in the middle.

Needs dist/osmox-webhook-filter.wasm (./build.sh).
"""
from __future__ import annotations

import base64
import collections
import concurrent.futures
import os
import random
import re
import threading
import time

import pytest
from standardwebhooks.webhooks import Webhook

from harness import METRIC_PREFIX, Behaviour, endpoint, to_json_bytes
from retry_helpers import BASE_MS, NOTIFICATIONS_QUERY, notification_row, notifications_page
from test_endpoint_metrics import wait_counts
from test_retries import make_tracking  # noqa: F401 (a fixture)
from test_retries import (assert_one_ok_per_id, config, metrics, poll_page, serve_pages, start, summarize,
                          wait_gauge)

IN_PROGRESS, SUCCESS, FAILED = 2, 5, 6
EXPECT_S = 10.0
PAGES, PER_PAGE = 3, 30
IDS = [80_000 + i for i in range(PAGES * PER_PAGE)]
FAST_RETRY = {"maxAttempts": 40, "initialDelayMs": 50, "multiplier": 2.0, "maxDelayMs": 400, "jitter": 0.5}
PER_SECOND, BURST = 40, 10
DOWN_S = 1.0
# Arrivals are timed at the receiver, after the network: allow them that much jitter.
JITTER_S = 0.2


def secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def final_state(nid: int) -> int:
    return SUCCESS if nid % 3 else FAILED


def pages_of(state) -> dict[int, bytes]:
    """Every page, its rows in `state(nid)`; each state a later `updatedOn`."""
    out = {}
    for p in range(PAGES):
        ids = IDS[p * PER_PAGE:(p + 1) * PER_PAGE]
        rows = []
        for nid in ids:
            s = state(nid)
            rows.append(notification_row(nid, s, updated_ms=BASE_MS + nid + (10_000 if s != IN_PROGRESS else 0)))
        out[p * PER_PAGE] = to_json_bytes(notifications_page(rows, total=len(IDS), offset=p * PER_PAGE))
    return out


def poll_all(envoy, pages: dict[int, bytes], times: int = 6):
    offsets = [o for o in pages for _ in range(times)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda o: poll_page(envoy, o), offsets))


class DownAtFirst:
    """503 for every request in the first `DOWN_S` after the first one, then 200."""

    def __init__(self):
        self.first = None
        self.lock = threading.Lock()

    def __call__(self, req, n):
        with self.lock:
            if self.first is None:
                self.first = time.monotonic()
            return 503 if time.monotonic() - self.first < DOWN_S else 200


def assert_one_body_per_webhook_id(name: str, answers):
    bodies = collections.defaultdict(set)
    for a in answers:
        bodies[a.webhook_id].add(a.req.body)
    assert all(len(b) == 1 for b in bodies.values()), f"{name}: one webhook-id, two bodies"


def assert_each_final_state_once(name: str, got, key: str) -> collections.Counter:
    """One receiver's answers: one 2xx and one body per webhook-id, each 2xx signed with `key`,
    each notification's final state delivered once. Returns the (id, state) pairs with a 2xx."""
    assert_one_ok_per_id(got)
    assert_one_body_per_webhook_id(name, got)
    ok = [a for a in got if a.ok]
    for a in ok:
        Webhook(key).verify(a.req.body, a.req.headers)  # raises if not signed with its key
    delivered = collections.Counter((a.json()["id"], a.json()["deliveryStatus"]) for a in ok)
    finals = {(nid, final_state(nid)): delivered[(nid, final_state(nid))] for nid in IDS}
    assert set(finals.values()) == {1}, f"{name}: final states not delivered exactly once: " \
        f"{ {k: v for k, v in finals.items() if v != 1} }; {summarize(got)}"
    return delivered


def wait_final_states(receivers: dict, timeout: float):
    for rcv in receivers.values():
        rcv.wait_answers(lambda got: {a.json()["id"] for a in got if a.ok and a.json()["deliveryStatus"] != IN_PROGRESS}
                         >= set(IDS), timeout=timeout, what="every final state with a 2xx")


@pytest.mark.parametrize("workers", [2, 4])
def test_every_feature_at_once_keeps_each_guarantee(osmox, make_tracking, make_envoy, filter_wasm, workers):
    """On two workers, and on four (twice the machine's cores here: more VMs contend for each
    shared-data key, and each is preempted more often in the middle of an update)."""
    flaky = make_tracking("flaky", decide=lambda req, n: 503 if n % 3 == 1 else 200)
    limited = make_tracking("limited")
    flapping = make_tracking("flapping", decide=DownAtFirst())
    keys = {"flaky": secret(), "limited": secret(), "flapping": secret()}
    receivers = {"flaky": flaky, "limited": limited, "flapping": flapping}

    def cfg(generation: str) -> dict:
        gen = {"x-gen": generation}
        return config([
            endpoint("flaky", flaky, secret=keys["flaky"], headers=gen, retry=FAST_RETRY,
                     deliveryStatuses=["IN_PROGRESS", "SUCCESS", "FAILED"],
                     circuitBreaker={"failureThreshold": 1000, "openMs": 1000}),
            endpoint("limited", limited, secret=keys["limited"], headers=gen, retry=FAST_RETRY,
                     rateLimit={"perSecond": PER_SECOND, "burst": BURST}),
            endpoint("flapping", flapping, secret=keys["flapping"], headers=gen, retry=FAST_RETRY,
                     circuitBreaker={"failureThreshold": 3, "openMs": 300}),
        ])

    envoy = start(make_envoy, osmox, cfg("1"), receivers, concurrency=workers)
    serve_pages(osmox, pages_of(lambda nid: IN_PROGRESS))
    poll_all(envoy, pages_of(lambda nid: IN_PROGRESS))
    envoy.wait_metric("events_detected", len(IDS), timeout=10)
    envoy.update_filter_config(cfg("2"))
    final_pages = pages_of(final_state)
    serve_pages(osmox, final_pages)
    poll_all(envoy, final_pages)
    envoy.wait_metric("events_detected", 2 * len(IDS), timeout=10)

    wait_final_states(receivers, timeout=30)
    time.sleep(1.5)  # stragglers: a repeat would come within this

    for name, rcv in receivers.items():
        got = rcv.answers()
        delivered = assert_each_final_state_once(name, got, keys[name])
        for a in got:
            if a.ok:
                assert a.req.headers.get("x-gen") in ("1", "2"), a.req.headers
        earlier = {k: v for k, v in delivered.items() if k[1] == IN_PROGRESS}
        if name != "flaky":
            assert not earlier, f"{name} takes only final states: {earlier}"
            continue
        assert all(v == 1 for v in earlier.values()), earlier
        # Per notification, every attempt of the earlier state came before the first attempt of
        # the final one.
        for nid in IDS:
            mine = [a for a in got if a.json()["id"] == nid]
            first_final = min(a.n for a in mine if a.json()["deliveryStatus"] != IN_PROGRESS)
            late = [a.n for a in mine if a.json()["deliveryStatus"] == IN_PROGRESS and a.n > first_final]
            assert not late, f"notification {nid}: IN_PROGRESS attempts {late} after the final state's #{first_final}"
        superseded = metrics(envoy, "deliveries_superseded")["deliveries_superseded"]
        assert len(earlier) + superseded == len(IDS), \
            f"IN_PROGRESS: {len(earlier)} delivered + {superseded} superseded, of {len(IDS)}"

    # The rate limit held: no second of attempts to `limited` held more than the bucket allows.
    times = sorted(a.req.time for a in limited.answers())
    for i, t in enumerate(times):
        in_second = sum(1 for u in times[i:] if u < t + 1.0 - JITTER_S)
        assert in_second <= BURST + PER_SECOND, f"{in_second} attempts within a second of {t}"
    assert any(a.beh.status == 503 for a in flapping.answers())

    per = f"{METRIC_PREFIX}endpoint."
    want = {per + "flapping.deliveries_succeeded": len(IDS), per + "limited.deliveries_succeeded": len(IDS)}
    assert wait_counts(envoy, want) == want
    assert envoy.stats().get(per + "flapping.circuits_opened", 0) >= 1
    for gauge in ("pending", "in_flight", "circuits_open"):
        wait_gauge(envoy, gauge, 0)
    m = metrics(envoy, "deliveries_dropped", "deliveries_exhausted", "deliveries_orphaned", "deliveries_expired",
                "store_conflicts")
    assert m == dict.fromkeys(m, 0), m


def test_vm_crashes_in_the_middle_of_a_burst_lose_no_delivery(osmox, make_tracking, make_envoy, fault_wasm):
    """Both workers' VMs trap, six times, while deliveries, retries and a rate-limited backlog
    are under way (FAIL_RELOAD, as shipped): each reloaded VM finds in shared data what the
    crashed ones owed. Every final state still reaches each endpoint with a 2xx (an attempt
    whose reply died with its VM goes again once its claim lapses, with the same webhook-id
    and body), and nothing is dropped, exhausted or expired."""
    from test_delivery import FAULT_QUERY
    # Answers that take a while: the crashes find attempts on the wire.
    flaky = make_tracking("flaky", decide=lambda req, n: 503 if n % 3 == 1 else Behaviour(delay=0.3 * (n % 2)))
    steady = make_tracking("steady", decide=lambda req, n: Behaviour(delay=0.2))
    receivers = {"flaky": flaky, "steady": steady}
    keys = {name: secret() for name in receivers}
    cfg = config([
        endpoint("flaky", flaky, secret=keys["flaky"], retry=FAST_RETRY, timeoutMs=1000,
                 deliveryStatuses=["IN_PROGRESS", "SUCCESS", "FAILED"],
                 circuitBreaker={"failureThreshold": 1000, "openMs": 1000}),
        endpoint("steady", steady, secret=keys["steady"], retry=FAST_RETRY, timeoutMs=1000,
                 rateLimit={"perSecond": 60, "burst": 10}),
    ], limits={"maxPending": 4096})
    reload = {"backoff": {"base_interval": "0.05s", "max_interval": "1s"}}
    envoy = start(make_envoy, osmox, cfg, receivers, concurrency=2, wasm_path=fault_wasm,
                  failure_policy="FAIL_RELOAD", reload_config=reload)
    serve_pages(osmox, pages_of(lambda nid: IN_PROGRESS))
    poll_all(envoy, pages_of(lambda nid: IN_PROGRESS))
    final_pages = pages_of(final_state)
    serve_pages(osmox, final_pages)
    poll_all(envoy, final_pages, times=2)
    # A 503 to the fault query is also what a VM still reloading answers: each fault waits for
    # the VMs crashed before it to be reloaded (a normal poll answered, Envoy's count of
    # reloads caught up), so each meets a live VM and traps it.
    reloaded = "wasm.osmox_webhook.vm_reload_success"
    for crash in range(1, 7):
        time.sleep(0.15)
        assert envoy.client.graphql(FAULT_QUERY).status == 503, f"fault {crash} did not trap the VM"
        deadline = time.monotonic() + EXPECT_S
        while (envoy.client.graphql(NOTIFICATIONS_QUERY, variables={"offset": 0}).status != 200
               or envoy.stat(reloaded) < crash):
            assert time.monotonic() < deadline, f"{envoy.stat(reloaded)} VM reloads after {crash} crashes"
            time.sleep(0.02)
    # Poll on (a request that meets a VM still reloading gets a 503, as the deploy guide says):
    # what a crashed VM took in but had not recorded yet is seen again.
    for offset in [o for o in final_pages for _ in range(4)]:
        deadline = time.monotonic() + 10
        while envoy.client.graphql(NOTIFICATIONS_QUERY, variables={"offset": offset}).status != 200:
            assert time.monotonic() < deadline, "no VM watched again within 10 s"
            time.sleep(0.02)
    assert envoy.stat(reloaded) >= 6
    # A claim whose VM died lapses `timeoutMs` + 10 s after it was taken.
    wait_final_states(receivers, timeout=60)
    for name, rcv in receivers.items():
        got = rcv.answers()
        assert_one_body_per_webhook_id(name, got)
        for a in got:
            if a.ok:
                Webhook(keys[name]).verify(a.req.body, a.req.headers)
    for gauge in ("pending", "in_flight"):
        wait_gauge(envoy, gauge, 0, timeout=30)
    m = metrics(envoy, "deliveries_dropped", "deliveries_exhausted", "deliveries_orphaned", "deliveries_expired")
    assert m == dict.fromkeys(m, 0), m


# Longer than the default, so that a slow machine's polls still come within a SUCCESS's wait.
AWAIT_MS = 5000


def snake(row: dict) -> dict:
    """A GraphQL row as REST v8 writes it: top-level keys in snake_case, values as they are."""
    return {re.sub(r"(?<!^)([A-Z])", r"_\1", k).lower(): v for k, v in row.items()}


@pytest.mark.parametrize("workers", [2, 4])
def test_notifications_polled_through_graphql_and_rest_at_once_reach_each_endpoint_once(
        osmox, make_tracking, make_envoy, filter_wasm, workers):
    """Two (or four) workers, two APIs, one set of notifications: GraphQL pages (camelCase) and REST v8
    list pages (`GET /notifications?page=`, snake_case, no envelope) of the same rows, polled
    concurrently. The REST pages show each SUCCESS as OsmoX saved it first, `"result": null`
    and an earlier `updatedOn`; the GraphQL pages show it with its result. Whichever view a
    worker takes in first, every endpoint gets each final state once, each SUCCESS with its
    result, under one webhook-id and body, signed."""
    from harness import StubResponse
    flaky = make_tracking("flaky", decide=lambda req, n: 503 if n % 3 == 1 else 200)
    steady = make_tracking("steady")
    receivers = {"flaky": flaky, "steady": steady}
    keys = {name: secret() for name in receivers}
    cfg = config([
        endpoint("flaky", flaky, secret=keys["flaky"], retry=FAST_RETRY, awaitResultMs=AWAIT_MS,
                 deliveryStatuses=["IN_PROGRESS", "SUCCESS", "FAILED"],
                 circuitBreaker={"failureThreshold": 1000, "openMs": 1000}),
        endpoint("steady", steady, secret=keys["steady"], retry=FAST_RETRY, awaitResultMs=AWAIT_MS),
    ])
    envoy = start(make_envoy, osmox, cfg, receivers, concurrency=workers)

    def rows(state, for_rest: bool) -> list[list[dict]]:
        out = []
        for p in range(PAGES):
            page = []
            for nid in IDS[p * PER_PAGE:(p + 1) * PER_PAGE]:
                s = state(nid)
                updated = BASE_MS + nid + (10_000 if s != IN_PROGRESS else 0)
                row = notification_row(nid, s, updated_ms=updated)
                if for_rest and s == SUCCESS:  # saved before its result, which moved updatedOn
                    row = notification_row(nid, s, updated_ms=updated - 50)
                    row["result"] = None
                page.append(snake(row) if for_rest else row)
            out.append(page)
        return out

    def serve(state):
        graphql = {p * PER_PAGE: to_json_bytes(notifications_page(page, total=len(IDS), offset=p * PER_PAGE))
                   for p, page in enumerate(rows(state, False))}
        rest = {p + 1: to_json_bytes({"items": page, "page_info": {
            "page": p + 1, "limit": PER_PAGE, "total_items": len(IDS), "total_pages": PAGES,
            "has_next": p + 1 < PAGES, "has_prev": p > 0}}) for p, page in enumerate(rows(state, True))}
        serve_pages(osmox, graphql)

        def rest_handler(req):
            page = int(dict(q.split("=", 1) for q in req.query.split("&") if "=" in q).get("page", "1"))
            body = rest.get(page)
            if body is None:
                return StubResponse(404, [("Content-Type", "application/json")], b"{}")
            return StubResponse(200, [("Content-Type", "application/json")], body)

        osmox.set_handler("GET", "/notifications", rest_handler)
        return graphql, rest

    def poll_both(graphql, rest, times: int):
        """REST's first page alone first (its SUCCESSes are seen without their results first),
        then every page of both, interleaved, on eight connections."""
        calls = [("g", o) for o in graphql for _ in range(times)] + [("r", p) for p in rest for _ in range(times)]
        random.Random(len(calls)).shuffle(calls)
        calls.remove(("r", 1))
        calls.remove(("g", 0))  # the same rows with their results: among the first calls
        calls.insert(0, ("g", 0))
        call(("r", 1), rest)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda c: call(c, rest), calls))

    def call(c, rest):
        if c[0] == "g":
            poll_page(envoy, c[1])
        else:
            r = envoy.client.get(f"/notifications?page={c[1]}&limit={PER_PAGE}", timeout=30)
            assert r.status == 200 and r.body == rest[c[1]], r.status

    poll_both(*serve(lambda nid: IN_PROGRESS), times=3)
    envoy.wait_metric("events_detected", len(IDS), timeout=10)
    poll_both(*serve(final_state), times=4)
    envoy.wait_metric("events_detected", 2 * len(IDS), timeout=10)

    wait_final_states(receivers, timeout=30)
    time.sleep(1.5)  # stragglers: a repeat, or a SUCCESS that went without its result, would come within this

    for name, rcv in receivers.items():
        got = rcv.answers()
        delivered = assert_each_final_state_once(name, got, keys[name])
        without = sorted(a.json()["id"] for a in got
                         if a.ok and a.json()["deliveryStatus"] == SUCCESS and a.json()["result"] is None)
        assert not without, f"{name}: SUCCESS webhooks without their result: {without}"
        if name == "steady":
            assert not [k for k in delivered if k[1] == IN_PROGRESS]
    # REST's first page was seen first: each of its SUCCESSes waited, for each endpoint.
    successes_first_seen_bare = sum(1 for nid in IDS[:PER_PAGE] if final_state(nid) == SUCCESS)
    assert metrics(envoy, "results_awaited")["results_awaited"] >= 2 * successes_first_seen_bare
    m = metrics(envoy, "deliveries_dropped", "deliveries_exhausted", "deliveries_orphaned", "deliveries_expired")
    assert m == dict.fromkeys(m, 0), m


def test_learned_endpoints_on_two_workers_move_with_their_registration(osmox, make_tracking, make_envoy, filter_wasm):
    """Two providers' webhooks learned from registrations made through the proxy; a burst of
    final states polled on two workers, provider 1's registration moved from A to C (which
    fails one request in three) while the polls run. Each of provider 2's final states reaches
    B once; each of provider 1's reaches A or C once with a 2xx, never both, and one webhook-id
    carries one body across them. Learned endpoints are unsigned and take only final states."""
    from harness import StubResponse
    from test_security import learn_config, original_dst_cluster, register_answer, register_mutation
    a, b = make_tracking("A"), make_tracking("B")
    c = make_tracking("C", decide=lambda req, n: 503 if n % 3 == 1 else 200)
    provider = {nid: 1 if nid % 2 else 2 for nid in IDS}
    cfg = learn_config()
    cfg["retry"] = FAST_RETRY  # learned endpoints' retry policy
    envoy = make_envoy(osmox.port, cfg, extra_clusters=[original_dst_cluster()], concurrency=2)
    registrations = {1: a.url("/osmox/status"), 2: b.url("/osmox/status")}
    pages: dict[int, bytes] = {}

    def handler(req):
        doc = req.json() if req.body else {}
        query = doc.get("query", "")
        if query.startswith("mutation"):
            pid = 1 if "providerId: 1" in query else 2
            return StubResponse(200, [("Content-Type", "application/json")],
                                to_json_bytes(register_answer(10 + pid, pid, registrations[pid])))
        body = pages.get(int(doc.get("variables", {}).get("offset", 0)))
        if body is None:
            return StubResponse(404, [("Content-Type", "application/json")], b'{"errors":[{"message":"no page"}]}')
        return StubResponse(200, [("Content-Type", "application/json")], body)

    osmox.set_handler("POST", "/graphql", handler)

    def register(pid: int):
        r = envoy.client.graphql(register_mutation(pid, registrations[pid]))
        assert r.status == 200, r.body[:300]

    def serve(state):
        for p in range(PAGES):
            ids = IDS[p * PER_PAGE:(p + 1) * PER_PAGE]
            rows = [notification_row(nid, state(nid), provider_id=provider[nid],
                                     updated_ms=BASE_MS + nid + (10_000 if state(nid) != IN_PROGRESS else 0))
                    for nid in ids]
            pages[p * PER_PAGE] = to_json_bytes(notifications_page(rows, total=len(IDS), offset=p * PER_PAGE))

    register(1)
    register(2)
    envoy.wait_metric("registrations_learned", 2, timeout=10)
    serve(lambda nid: IN_PROGRESS)
    poll_all(envoy, dict(pages), times=3)
    envoy.wait_metric("events_detected", len(IDS), timeout=10)
    serve(final_state)
    # Provider 1 moves from A to C while the first two pages are polled; the last page is
    # polled once the move is learned.
    first, last = list(pages)[:-1], list(pages)[-1]
    calls = [("poll", o) for o in first for _ in range(6)]
    random.Random(7).shuffle(calls)
    calls.insert(len(calls) // 3, ("move", 1))

    def call(c_):
        if c_[0] == "move":
            registrations[1] = c.url("/osmox/moved")
            register(1)
        else:
            poll_page(envoy, c_[1])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(call, calls))
    envoy.wait_metric("registrations_learned", 3, timeout=10)
    poll_all(envoy, {last: pages[last]})
    envoy.wait_metric("events_detected", 2 * len(IDS), timeout=10)

    def ok_final(rcv) -> collections.Counter:
        return collections.Counter(x.json()["id"] for x in rcv.answers() if x.ok)

    ones = [nid for nid in IDS if provider[nid] == 1]
    twos = [nid for nid in IDS if provider[nid] == 2]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if set(ok_final(a) + ok_final(c)) >= set(ones) and set(ok_final(b)) >= set(twos):
            break
        time.sleep(0.1)
    time.sleep(1.5)  # stragglers: a repeat would come within this

    got_b = ok_final(b)
    assert dict(got_b) == dict.fromkeys(twos, 1), summarize(b.answers())
    got_ac = ok_final(a) + ok_final(c)
    assert dict(got_ac) == dict.fromkeys(ones, 1), f"A: {summarize(a.answers())}; C: {summarize(c.answers())}"
    after_move = [nid for nid in IDS[last:] if provider[nid] == 1]
    assert set(ok_final(c)) >= set(after_move), "the last page's, taken in after the move, went to C"
    for rcv in (a, b, c):
        for x in rcv.answers():
            assert x.json()["deliveryStatus"] == final_state(x.json()["id"])
            assert "webhook-signature" not in x.req.headers
    assert_one_body_per_webhook_id("A and C", a.answers() + c.answers())
    for gauge in ("pending", "in_flight"):
        wait_gauge(envoy, gauge, 0)
    m = metrics(envoy, "deliveries_dropped", "deliveries_exhausted", "deliveries_orphaned", "deliveries_expired",
                "registrations_refused")
    assert m == dict.fromkeys(m, 0), m
