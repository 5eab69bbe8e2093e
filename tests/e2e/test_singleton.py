"""Delivery by an optional bootstrap singleton: the HTTP filter only observes ("role":
"observer") and one `envoy.bootstrap.wasm` singleton with the same vm_id sends and retries
("role": "sender"), on Envoy's main thread."""
from __future__ import annotations

import copy
import re
import time
from pathlib import Path

import pytest
from harness import clusters_for, endpoint, filter_config, metric_name, wait_until
from test_delivery import (EXPECT_S, TICK_MS, assert_no_more, graphql_body, graphql_rows, ids_statuses,
                           poll_graphql)

# The shared-data format prefix of the module under test, as the core's pinned format says.
FORMAT_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "shared-data-format.txt"
SHARED_PREFIX = FORMAT_FIXTURE.read_text().split("\n", 1)[0].removeprefix("format ")


def singleton_envoy(make_envoy, osmox, cfg, receivers, with_sender=True, **kw):
    observer = dict(cfg, role="observer")
    envoy = make_envoy(osmox.port, observer, clusters=clusters_for(cfg, receivers), start=False, **kw)
    if with_sender:
        envoy.bootstrap_extensions = [envoy.singleton_service(dict(cfg, role="sender"))]
    envoy.start()
    return envoy


def test_a_singleton_sender_delivers_what_observers_see(osmox, make_receiver, make_envoy, filter_wasm):
    crm = make_receiver("crm")
    cfg = filter_config([endpoint("crm", crm)], tick_ms=TICK_MS)
    envoy = singleton_envoy(make_envoy, osmox, cfg, {"crm": crm})
    osmox.set_json("POST", "/graphql", graphql_body(graphql_rows()))
    poll_graphql(envoy)
    got = crm.wait_for(3, EXPECT_S)
    assert sorted(ids_statuses(got)) == [(1042, 5), (1044, 6), (1048, 5)]
    poll_graphql(envoy)
    assert_no_more(crm, 3)


def test_a_singleton_and_observers_without_a_vm_id_find_each_other(osmox, make_receiver, make_envoy, filter_wasm):
    """A review: Envoy answers `plugin_vm_id` with no bytes when the configuration leaves
    `vm_id` out, and the filter took that for "unknown": observers never resolved the queue the
    singleton registered under the same empty `vm_id`, so deliveries waited for the sender's
    next ledger sweep (a minute here, with `tickMs` 60000) and every minute an observer warned
    that no sender had registered. The wake-up reaches the singleton: it sends at once."""
    crm = make_receiver("crm")
    cfg = filter_config([endpoint("crm", crm)], tick_ms=60_000)
    envoy = singleton_envoy(make_envoy, osmox, cfg, {"crm": crm}, vm_id="")
    assert "vm_id" not in envoy.wasm_filter(cfg)["typed_config"]["config"]["vm_config"]
    osmox.set_json("POST", "/graphql", graphql_body(graphql_rows()))
    poll_graphql(envoy)
    got = crm.wait_for(3, EXPECT_S)
    assert sorted(ids_statuses(got)) == [(1042, 5), (1044, 6), (1048, 5)]
    # The receiver has the POSTs before the sender has read their answers: wait for those too.
    delivered = [f"{r.headers['webhook-id']}: delivered" for r in got]
    wait_until(lambda: all(line in envoy.logs() for line in delivered), EXPECT_S, what="3 deliveries logged")
    envoy.stop()  # flushes its log
    assert "no sender has registered" not in envoy.logs()


def test_gauges_never_wrap_below_zero_when_one_vm_raises_and_another_lowers(osmox, make_receiver, make_envoy,
                                                                           filter_wasm):
    """A review: an observer's `pending` +1 and the singleton's -1 reached Envoy in the order
    of their VMs' ticks, and a fall first wrapped the unsigned gauge to about 1.8e19."""
    crm = make_receiver("crm")
    cfg = filter_config([endpoint("crm", crm)], tick_ms=100)
    envoy = singleton_envoy(make_envoy, osmox, cfg, {"crm": crm})
    names = [metric_name(g) for g in ("pending", "in_flight")]
    seen: list[int] = []
    rounds = 6
    for n in range(1, rounds + 1):
        rows = [dict(r, id=r["id"] + 10_000 * n) for r in graphql_rows()]
        osmox.set_json("POST", "/graphql", graphql_body(rows))
        poll_graphql(envoy)
        for _ in range(40):  # a fixed number of looks, however fast the machine
            stats = envoy.stats()
            seen.extend(stats.get(name, 0) for name in names)
            time.sleep(0.005)
    crm.wait_for(3 * rounds, EXPECT_S)
    # Three deliveries a round: neither gauge can truly exceed all of them.
    assert max(seen) <= 3 * rounds, sorted(set(seen))


@pytest.mark.parametrize("singleton", [True, False], ids=["singleton", "every_worker"])
def test_which_thread_sends(singleton, osmox, make_receiver, make_envoy, filter_wasm):
    """With the singleton, workers record and Envoy's main thread (whose thread id is the
    process id) sends; without it, the worker that recorded a delivery sends it."""
    crm = make_receiver("crm")
    cfg = filter_config([endpoint("crm", crm)], tick_ms=TICK_MS)
    envoy = (singleton_envoy(make_envoy, osmox, cfg, {"crm": crm}) if singleton
             else make_envoy(osmox.port, cfg, clusters=clusters_for(cfg, {"crm": crm})))
    osmox.set_json("POST", "/graphql", graphql_body(graphql_rows()))
    poll_graphql(envoy)
    ids = {r.headers["webhook-id"] for r in crm.wait_for(3, EXPECT_S)}
    assert len(ids) == 3
    wait_log(envoy, lambda _: ids <= set(threads_saying(envoy, "delivered")))
    recorded, delivered = threads_saying(envoy, "new in slot"), threads_saying(envoy, "delivered")
    assert ids <= set(recorded)
    assert envoy.pid not in {recorded[i] for i in ids}, "recorded by workers"
    if singleton:
        assert {delivered[i] for i in ids} == {envoy.pid}
    else:
        assert all(delivered[i] == recorded[i] for i in ids), (recorded, delivered, envoy.pid)


def threads_saying(envoy, what: str) -> dict[str, int]:
    """webhook-id -> the thread id (the `[%t]` of Envoy's log format) of the filter's debug
    line saying `what` of it."""
    line_re = re.compile(r"^\[[^]]*\]\[(\d+)\]\[debug\]\[wasm\] .*: (msg_[0-9a-z_]+): " + re.escape(what))
    return {m[2]: int(m[1]) for m in map(line_re.match, envoy.logs().splitlines()) if m}


def test_the_singleton_retries(osmox, make_receiver, make_envoy, filter_wasm):
    crm = make_receiver("crm")
    crm.script([503])
    ep = endpoint("crm", crm, retry={"maxAttempts": 3, "initialDelayMs": 200, "jitter": 0.0})
    cfg = filter_config([ep], tick_ms=TICK_MS)
    envoy = singleton_envoy(make_envoy, osmox, cfg, {"crm": crm})
    rows = [r for r in graphql_rows() if r["id"] == 1048]
    osmox.set_json("POST", "/graphql", graphql_body(rows))
    poll_graphql(envoy)
    first, second = crm.wait_for(2, EXPECT_S)[:2]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert second.time - first.time >= 0.2
    # The receiver records the retry before it answers it: the count moves once the answer is
    # back and the singleton's next tick hands it to Envoy.
    envoy.wait_metric("deliveries_succeeded_after_retry", 1, timeout=EXPECT_S)
    assert_no_more(crm, 2)
    assert envoy.metric("deliveries_succeeded_after_retry") == 1


def test_observers_alone_send_nothing(osmox, make_receiver, make_envoy, filter_wasm):
    """The control: without the singleton, "observer" VMs record deliveries but never send."""
    crm = make_receiver("crm")
    cfg = filter_config([endpoint("crm", crm)], tick_ms=TICK_MS)
    envoy = singleton_envoy(make_envoy, osmox, cfg, {"crm": crm}, with_sender=False)
    osmox.set_json("POST", "/graphql", graphql_body(copy.deepcopy(graphql_rows())))
    poll_graphql(envoy)
    envoy.wait_metric("events_detected", 7, timeout=EXPECT_S)
    assert_no_more(crm, 0)
    assert envoy.metric("pending") == 3
    # Not in silence: the observer says no sender takes its deliveries.
    wait_log(envoy, lambda line: "[warning]" in line and f'registered the "{SHARED_PREFIX}deliveries" queue' in line)


def test_a_singleton_warns_when_the_observers_configuration_moves_on(osmox, make_receiver, make_envoy,
                                                                     filter_wasm):
    """An LDS update never reaches a bootstrap extension: after one that changes an endpoint,
    the singleton still delivers by the configuration Envoy started with, and says so."""
    crm = make_receiver("crm")
    v1 = filter_config([endpoint("crm", crm, headers={"x-team": "v1"})], tick_ms=TICK_MS)
    envoy = singleton_envoy(make_envoy, osmox, v1, {"crm": crm})
    drift = 'the observers\' configuration delivers differently from this singleton sender\'s'
    v2 = filter_config([endpoint("crm", crm, headers={"x-team": "v2"})], tick_ms=TICK_MS)
    envoy.update_filter_config(dict(v2, role="observer"))
    osmox.set_json("POST", "/graphql", graphql_body(graphql_rows()))
    poll_graphql(envoy)
    got = crm.wait_for(3, EXPECT_S)
    assert {r.headers.get("x-team") for r in got} == {"v1"}, "the limit this warning is about"
    wait_log(envoy, lambda line: "[warning]" in line and drift in line)
    # Said once per change, not every few seconds.
    time.sleep(6)
    assert sum(drift in line for line in envoy.logs().splitlines()) == 1


def test_a_sender_role_on_the_http_filter_says_it_watches_nothing(osmox, make_receiver, make_envoy, filter_wasm):
    crm = make_receiver("crm")
    cfg = filter_config([endpoint("crm", crm)], tick_ms=TICK_MS, role="sender")
    envoy = make_envoy(osmox.port, cfg, clusters=clusters_for(cfg, {"crm": crm}))
    osmox.set_json("POST", "/graphql", graphql_body(copy.deepcopy(graphql_rows())))
    poll_graphql(envoy)
    wait_log(envoy, lambda line: "[warning]" in line and 'role "sender" on an HTTP filter watches nothing' in line)
    assert envoy.metric("responses_watched") == 0
    assert_no_more(crm, 0)


def wait_log(envoy, pred, timeout: float = 15.0):
    """Envoy flushes its log file every few seconds: wait for the line."""
    deadline = time.monotonic() + timeout
    while not any(pred(line) for line in envoy.logs().splitlines()):
        assert time.monotonic() < deadline, "log line not found; tail:\n" + "\n".join(envoy.logs().splitlines()[-10:])
        time.sleep(0.2)
