"""Delivery by an optional bootstrap singleton: the HTTP filter only observes ("role":
"observer") and one `envoy.bootstrap.wasm` singleton with the same vm_id sends and retries
("role": "sender"), on Envoy's main thread."""
from __future__ import annotations

import copy

from harness import clusters_for, endpoint, filter_config
from test_delivery import (EXPECT_S, TICK_MS, assert_no_more, graphql_body, graphql_rows, ids_statuses,
                           poll_graphql)


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


def test_the_shipped_config_delivers_signed_webhooks_from_its_singleton(osmox, make_receiver, tmp_path,
                                                                        filter_wasm):
    """envoy/envoy-demo.yaml as shipped, ports rewritten, the real module at its relative path:
    its HTTP filters only observe, so what arrives was sent by its bootstrap singleton."""
    import json
    import re

    from harness import REPO_ROOT, EnvoyFromConfig, free_port
    from standardwebhooks.webhooks import Webhook

    text = (REPO_ROOT / "envoy" / "envoy-demo.yaml").read_text()
    configs = [json.loads(m.group(2)) for m in re.finditer(r"\n([ ]*)value: \|\n((?:\1[ ]+.*\n)+)", text)]
    assert [c.get("role") for c in configs] == ["observer", "sender"]
    assert dict(configs[0], role=None) == dict(configs[1], role=None), "the two copies differ beyond role"
    secret = configs[0]["endpoints"][0]["secret"]
    rcv = make_receiver("demo")
    lport, aport = free_port(), free_port()
    for old, new in (("port_value: 10000", f"port_value: {lport}"), ("port_value: 9901", f"port_value: {aport}"),
                     ("port_value: 3000", f"port_value: {osmox.port}"), ("port_value: 8089", f"port_value: {rcv.port}")):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (tmp_path / "demo" / "dist").mkdir(parents=True)
    (tmp_path / "demo" / "dist" / "osmox-webhook-filter.wasm").write_bytes(filter_wasm.read_bytes())
    envoy = EnvoyFromConfig(tmp_path / "demo", text, lport, aport, name="demo")
    try:
        envoy.start()
        osmox.set_json("POST", "/graphql", graphql_body(graphql_rows()))
        poll_graphql(envoy)
        got = rcv.wait_for(7, EXPECT_S)  # the shipped config routes every status
        assert sorted(Webhook(secret).verify(r.body, r.headers)["id"] for r in got) == sorted(
            r["id"] for r in graphql_rows())
        assert all(r.path == "/webhooks/osmox?src=demo" for r in got)
        poll_graphql(envoy)
        assert_no_more(rcv, 7)
    finally:
        envoy.stop()
