"""Checks of the e2e harness itself, with a plain Envoy (no filter) and with a tiny probe
wasm module (tests/e2e/fixtures/probe_filter), so that harness faults are told apart from
filter faults."""
from __future__ import annotations

import concurrent.futures
import gzip
import http.client
import os
import socket
import time

import pytest

import harness
from harness import (CLOSE, Behaviour, EnvoyProcess, StubResponse, free_port, load_sample,
                     port_is_free, request, to_json_bytes, wait_until)


def test_plain_envoy_passes_bytes_through(osmox, make_envoy):
    envoy = make_envoy(osmox.port)
    sample = load_sample("graphql-notifications-query-response.json")
    sent = osmox.set_response("POST", "/graphql", 200, body=to_json_bytes(sample),
                              headers={"x-upstream": "osmox"})
    r = envoy.client.graphql("query { notifications { notifications { id } } }",
                             headers={"x-api-key": "k1"})
    assert r.status == 200
    assert r.body == sent
    assert r.headers["x-upstream"] == "osmox"
    assert r.headers["content-type"] == "application/json"
    got = osmox.requests()
    assert len(got) == 1
    assert got[0].method == "POST" and got[0].path == "/graphql"
    assert got[0].header["x-api-key"] == "k1"
    assert got[0].json()["query"].startswith("query {")


def test_plain_envoy_default_404_query_and_status(osmox, make_envoy):
    envoy = make_envoy(osmox.port)
    r = envoy.client.get("/nope?x=1")
    assert r.status == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["instance"] == "/nope"
    osmox.set_response("POST", "/notifications", 201, body=load_sample("rest-create-notification-response.v8.json"))
    r = envoy.client.post("/notifications?x=1", {"providerId": 1})
    assert r.status == 201 and r.json()["id"] == 1042
    req = osmox.requests()[-1]
    assert (req.path, req.query) == ("/notifications", "x=1")
    assert req.json() == {"providerId": 1}


def test_plain_envoy_large_and_gzip_bodies_intact(osmox, make_envoy):
    envoy = make_envoy(osmox.port)
    big = b'{"pad":"' + b"x" * (3 * 1024 * 1024) + b'"}'
    osmox.set_response("GET", "/big", 200, body=big)
    r = envoy.client.get("/big", timeout=20)
    assert r.status == 200 and len(r.body) == len(big) and r.body == big
    sent = osmox.set_response("GET", "/gz", 200, body=b'{"a":1}', gzip=True)
    r = envoy.client.get("/gz")
    assert r.headers.get("content-encoding") == "gzip"
    assert r.body == sent and gzip.decompress(r.body) == b'{"a":1}'


def test_stub_runtime_changes_and_handler(osmox, make_envoy):
    envoy = make_envoy(osmox.port)
    osmox.set_json("GET", "/notifications/1", {"id": 1, "delivery_status": 2})
    assert envoy.client.get("/notifications/1").json()["delivery_status"] == 2
    osmox.set_json("GET", "/notifications/1", {"id": 1, "delivery_status": 5})
    assert envoy.client.get("/notifications/1").json()["delivery_status"] == 5
    calls = []
    osmox.set_handler("GET", "/h", lambda req: calls.append(req) or StubResponse(
        202, [("content-type", "text/plain")], b"n=%d" % len(calls)))
    assert envoy.client.get("/h").body == b"n=1"
    assert envoy.client.get("/h").body == b"n=2"


def test_receiver_script_default_and_close(make_receiver):
    rcv = make_receiver("r")
    rcv.script([Behaviour(503, {"Retry-After": "7"}), CLOSE, Behaviour(200, delay=0.3)])
    rcv.set_default(204)
    r = request(rcv.port, "POST", "/hook?a=b", b'{"x":1}', {"content-type": "application/json", "X-T": "1"})
    assert r.status == 503 and r.headers["retry-after"] == "7"
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        request(rcv.port, "POST", "/hook", b"{}", timeout=5)
    t0 = time.monotonic()
    assert request(rcv.port, "POST", "/hook", b"{}").status == 200
    assert time.monotonic() - t0 >= 0.3
    assert request(rcv.port, "POST", "/hook", b"{}").status == 204
    got = rcv.wait_for(4, timeout=2)
    assert got[0].path == "/hook?a=b" and got[0].body == b'{"x":1}'
    assert got[0].headers["x-t"] == "1"
    assert ("X-T", "1") in got[0].headers_list
    assert got[0].json() == {"x": 1}
    assert [g.time for g in got] == sorted(g.time for g in got)
    with pytest.raises(AssertionError):
        rcv.wait_for(5, timeout=0.3)


def test_receiver_stop_start_same_port(make_receiver):
    rcv = make_receiver("r")
    port = rcv.port
    assert request(port, "GET", "/").status == 200
    rcv.stop()
    with pytest.raises(ConnectionRefusedError):
        request(port, "GET", "/", timeout=2)
    rcv.start()
    assert rcv.port == port
    assert request(port, "GET", "/").status == 200
    assert rcv.count() == 2


def test_a_stopped_receiver_keeps_its_port_from_other_processes(make_receiver):
    """A receiver stopped for a while (receiver-down tests) must get its port back at start():
    the filter's cluster points there. While stopped it refuses connections, and another
    socket (another process's bind, as another xdist worker's servers do) cannot take it."""
    rcv = make_receiver("r")
    port = rcv.port
    rcv.stop()
    with pytest.raises(ConnectionRefusedError):
        request(port, "GET", "/", timeout=2)
    other = socket.socket()
    try:
        with pytest.raises(OSError):
            other.bind(("127.0.0.1", port))
    finally:
        other.close()
    rcv.start()
    assert rcv.port == port
    assert request(port, "GET", "/").status == 200


def test_envoy_webhook_cluster_outage_statuses(osmox, make_receiver, make_envoy):
    """The webhook clusters exist with the sizes we asked for; a stopped receiver is refused."""
    rcv = make_receiver("crm")
    envoy = make_envoy(osmox.port, clusters={"webhook_crm": rcv})
    clusters = envoy.admin("GET", "/clusters").body.decode()
    assert f"webhook_crm::127.0.0.1:{rcv.port}::" in clusters
    assert "webhook_crm::default_priority::max_requests::10000" in clusters
    assert "webhook_crm::default_priority::max_pending_requests::10000" in clusters


def test_envoy_start_stop_clean(osmox, make_envoy):
    envoy = make_envoy(osmox.port, concurrency=1)
    pid, lport, aport = envoy.pid, envoy.listener_port, envoy.admin_port
    os.kill(pid, 0)  # alive
    assert envoy.stat("server.concurrency") == 1
    assert envoy.stat("server.state") == 0  # LIVE
    envoy.stop()
    assert envoy.exit_code == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert port_is_free(lport) and port_is_free(aport)
    envoy.stop()  # idempotent


def hand_out_a_taken_port_first(monkeypatch) -> tuple[socket.socket, int, list[int]]:
    """Another process's listening socket, its port, and the ports `harness.free_port` hands
    out from now on: that taken one first, then free ones. Close the socket when done."""
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(8)
    taken = other.getsockname()[1]
    handed: list[int] = []
    real_free_port = harness.free_port

    def free_port_first_taken() -> int:
        handed.append(taken if not handed else real_free_port())
        return handed[-1]

    monkeypatch.setattr(harness, "free_port", free_port_first_taken)
    return other, taken, handed


@pytest.mark.parametrize("use_lds", [True, False], ids=["lds", "static"])
def test_a_listener_port_taken_by_another_process_is_retried_on_fresh_ports(osmox, make_envoy, monkeypatch,
                                                                           use_lds):
    """Another process (say the other xdist worker's receiver) binds the port handed out for
    the listener before Envoy does. With LDS, Envoy rejects its listener and still says LIVE,
    and the other process's socket accepts connections: start() must not take that for
    Envoy's listener, but try again on fresh ports."""
    other, taken, handed = hand_out_a_taken_port_first(monkeypatch)
    try:
        envoy = make_envoy(osmox.port, use_lds=use_lds)
        assert handed[0] == taken  # the first attempt did meet the taken port
        assert envoy.listener_port != taken
        assert f"{envoy.listener_port}" in envoy.admin("GET", "/listeners").body.decode()
        osmox.set_response("GET", "/p", 200, body=b"via envoy")
        assert envoy.client.get("/p").body == b"via envoy"
    finally:
        other.close()


def test_the_shipped_config_is_retried_on_fresh_ports_when_one_is_taken(osmox, make_receiver, tmp_path, monkeypatch,
                                                                        probe_wasm):
    """shipped_config_envoy hands out its listener and admin ports before Envoy binds them:
    another process (the other xdist worker's receiver, a client's outgoing connection) may
    take one in between. Envoy then refuses to start; start() must try fresh ports."""
    other, taken, handed = hand_out_a_taken_port_first(monkeypatch)
    rcv = make_receiver("demo")
    envoy = harness.shipped_config_envoy(tmp_path / "demo", probe_wasm, osmox.port, rcv.port)
    try:
        envoy.start()
        assert handed[0] == taken  # the first attempt did meet the taken port
        assert taken not in (envoy.listener_port, envoy.admin_port)
        osmox.set_response("GET", "/graphql", 200, body=b"{}")
        assert envoy.client.get("/graphql").headers.get("x-probe-filter") == "1"
    finally:
        envoy.stop()
        other.close()


def test_wait_stat_returns_a_value_already_reached_even_zero(osmox, make_envoy):
    envoy = make_envoy(osmox.port, use_lds=False)
    # With no time to wait, the value is checked once: a reached 0 taken for "not yet" times out.
    assert envoy.wait_stat("server.state", 0, timeout=0) == 0  # LIVE
    assert envoy.wait_stat("server.concurrency", 1, timeout=0) == 2
    with pytest.raises(AssertionError, match="timed out"):
        envoy.wait_stat("server.concurrency", 3, timeout=0.3)


def test_envoy_process_is_session_leader(osmox, make_envoy):
    envoy = make_envoy(osmox.port)
    assert os.getsid(envoy.pid) == envoy.pid
    with open(f"/proc/{envoy.pid}/comm") as f:
        assert f.read().strip().startswith("envoy")


@pytest.mark.parametrize("n", range(4))
def test_parallel_starts(osmox, make_envoy, n):
    """Under `-n 2` these run concurrently with each other and with the rest."""
    envoy = make_envoy(osmox.port)
    osmox.set_response("GET", "/p", 200, body=b"p%d" % n)
    assert envoy.client.get("/p").body == b"p%d" % n


def test_three_envoys_started_concurrently(osmox, tmp_path):
    envoys = [EnvoyProcess(tmp_path / f"e{i}", osmox.port, name=f"e{i}") for i in range(3)]
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as ex:
            list(ex.map(lambda e: e.start(), envoys))
        assert len({e.listener_port for e in envoys} | {e.admin_port for e in envoys}) == 6
        osmox.set_response("GET", "/x", 200, body=b"ok")
        for e in envoys:
            assert e.client.get("/x").body == b"ok"
    finally:
        for e in envoys:
            e.stop()


# ------------------------------------------------------------------------------------------
# With the probe wasm module: filter wiring, custom metrics, LDS reload, refused config.
# ------------------------------------------------------------------------------------------
def test_probe_filter_loads_and_counts(osmox, make_envoy, probe_wasm):
    envoy = make_envoy(osmox.port, {"hello": 1}, wasm_path=probe_wasm)
    osmox.set_response("GET", "/a", 200, body=b"{}")
    for _ in range(3):
        r = envoy.client.get("/a")
        assert r.status == 200 and r.headers.get("x-probe-filter") == "1"
    assert envoy.wait_stat("wasmcustom.probe.responses", 3, timeout=5) == 3


def test_probe_filter_lds_update(osmox, make_envoy, probe_wasm):
    envoy = make_envoy(osmox.port, {"v": 1}, wasm_path=probe_wasm)
    mod0 = envoy.stat("listener_manager.listener_modified")
    envoy.update_filter_config({"v": 2})
    assert envoy.stat("listener_manager.listener_modified") == mod0 + 1
    osmox.set_response("GET", "/a", 200, body=b"{}")
    assert envoy.client.get("/a").headers.get("x-probe-filter") == "1"
    # A configuration the module refuses: the LDS update is rejected, the old listener stays.
    with pytest.raises(AssertionError, match="rejected"):
        envoy.update_filter_config({"reject": True})
    assert envoy.stat("listener_manager.lds.update_rejected") == 1
    # The rejection is counted at once; the module's line reaches the log file at Envoy's
    # next flush (--file-flush-interval-msec): wait for it.
    wait_until(lambda: "field `reject` is not allowed" in envoy.logs(), 10, what="the refusal's log line")
    assert envoy.client.get("/a").status == 200


def test_probe_filter_bad_config_refused_at_start(osmox, make_envoy, probe_wasm):
    envoy = make_envoy(osmox.port, {"reject": 1}, wasm_path=probe_wasm, use_lds=False, start=False)
    log = envoy.expect_start_failure(timeout=20)
    assert envoy.exit_code not in (None, 0)
    assert "field `reject` is not allowed" in log
    assert "Unable to create Wasm plugin osmox_webhook" in log


def test_demo_config_runs_filter_only_on_watched_routes(osmox, make_receiver, tmp_path, probe_wasm):
    """envoy/envoy-demo.yaml, ports rewritten, probe module at its relative wasm path: the filter
    runs on /graphql and /notifications and is disabled on the catch-all route."""
    from harness import shipped_config_envoy

    rcv = make_receiver("demo")
    envoy = shipped_config_envoy(tmp_path / "demo", probe_wasm, osmox.port, rcv.port)
    try:
        envoy.start()
        for path in ("/graphql", "/notifications", "/notifications/7", "/healthz", "/webhooks"):
            osmox.set_response("GET", path, 200, body=b"{}")
        watched = {p: envoy.client.get(p).headers.get("x-probe-filter") for p in
                   ("/graphql", "/notifications", "/notifications/7", "/notifications?page=2")}
        assert watched == dict.fromkeys(watched, "1"), watched
        for p in ("/healthz", "/webhooks", "/notificationsX"):
            assert "x-probe-filter" not in envoy.client.get(p).headers, p
    finally:
        envoy.stop()
