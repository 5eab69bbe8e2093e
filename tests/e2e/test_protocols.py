"""The filter under the downstream protocols other than the HTTP/1.1 the other tests speak.

HTTP/2: clients multiplexing polls on one connection (here a front Envoy that speaks HTTP/2
to the Envoy under test), read in `on_log` like HTTP/1.1.

HTTP/3 (QUIC), as an edge proxy may run it. Envoy logs a QUIC
stream only once the client acknowledged its last bytes, after the filter's context is gone (a
review raised the risk of the SDK's "invalid context_id" panic there; what happens instead is
that the filter never gets `on_log`), and in `on_done` no header can be read. The module for
HTTP/1.1 and HTTP/2 therefore cannot read such streams: they pass through untouched and are
reported. The module built for HTTP/3 keeps the request's head as it passes and reads them in
`on_done`."""
from __future__ import annotations

import concurrent.futures
import datetime
import socket
import time

import h3client
from harness import HOST, clusters_for, endpoint, filter_config, to_json_bytes, wait_until
from test_chaos import snake
from test_delivery import (EXPECT_S, NOTIFICATIONS_QUERY, _padded, assert_no_more, graphql_body, graphql_rows,
                           ids_statuses, poll_graphql, rows_by_id)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def self_signed(tmp_path):
    """A certificate for localhost and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "h3-cert.pem", tmp_path / "h3-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def quic_listener(envoy, cfg: dict, port: int, cert, key) -> dict:
    """The harness's listener, its filter chain as it is, served over QUIC on UDP `port`."""
    lst = envoy.listener(cfg)
    lst["name"] = "ingress_h3"
    lst["address"] = {"socket_address": {"protocol": "UDP", "address": HOST, "port_value": port}}
    lst["udp_listener_config"] = {"quic_options": {}}
    chain = lst["filter_chains"][0]
    hcm = chain["filters"][0]["typed_config"]
    hcm["codec_type"] = "HTTP3"
    hcm["stat_prefix"] = "ingress_h3"
    chain["transport_socket"] = {"name": "envoy.transport_sockets.quic", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport",
        "downstream_tls_context": {"common_tls_context": {"tls_certificates": [{
            "certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}]}}}}
    return lst


def h3_envoy(make_envoy, osmox, receivers: dict, cfg: dict, tmp_path, **kw):
    """Envoy with the filter on its HTTP/1.1 listener and on a QUIC one; the UDP port."""
    envoy = make_envoy(osmox.port, cfg, clusters=clusters_for(cfg, receivers), **kw)
    cert, key = self_signed(tmp_path)
    # The UDP port is free when picked, bound by Envoy later: another process may take it in
    # between, and Envoy rejects the listener. Wait for Envoy's verdict; try a fresh port then.
    for attempt in range(3):
        port = free_udp_port()
        rejected = envoy.stat("listener_manager.lds.update_rejected")
        envoy.write_lds(envoy.listener(cfg), quic_listener(envoy, cfg, port, cert, key))
        wait_until(lambda: (envoy.stat("listener_manager.total_listeners_active") >= 2
                            or envoy.stat("listener_manager.lds.update_rejected") > rejected),
                   15, what="Envoy's verdict on the QUIC listener")
        if envoy.stat("listener_manager.lds.update_rejected") == rejected:
            return envoy, port
        assert attempt < 2, f"the QUIC listener was rejected three times:\n{envoy.logs()[-3000:]}"
    raise AssertionError("unreachable")


def h3(port: int, method: str, path: str, body: bytes = b""):
    headers = [("content-type", "application/json")] if body else []
    return h3client.request(HOST, port, method, path, headers, body, timeout=EXPECT_S)


def first_h3(port: int, method: str, path: str, body: bytes = b""):
    """The first request, retried while the QUIC listener comes up (Envoy reads the LDS file
    after it started)."""
    deadline = time.monotonic() + 6 * EXPECT_S
    while time.monotonic() < deadline:
        try:
            return h3(port, method, path, body)
        except (TimeoutError, ConnectionError, OSError):
            time.sleep(0.1)
    raise AssertionError("no HTTP/3 answer")


GRAPHQL_POLL = to_json_bytes({"query": NOTIFICATIONS_QUERY})
EXPECTED = [(1042, 5), (1044, 6), (1048, 5)]


def test_polls_multiplexed_over_http2_are_each_read_and_delivered(osmox, make_receiver, make_envoy, filter_wasm):
    """A front Envoy pools the client's polls onto HTTP/2 connections to the Envoy under test:
    concurrent streams on one connection, each read in its own `on_log`. Every page's
    notifications reach the receiver once, and every answer is OsmoX's bytes."""
    from test_retries import serve_pages
    crm = make_receiver("crm")
    cfg = filter_config([endpoint("crm", crm)])
    envoy = make_envoy(osmox.port, cfg, clusters=clusters_for(cfg, {"crm": crm}))
    front = make_envoy(envoy.listener_port, None, name="front", start=False)
    plain_bootstrap = front.bootstrap

    def bootstrap(c, use_lds):
        b = plain_bootstrap(c, use_lds)
        (upstream,) = [c for c in b["static_resources"]["clusters"] if c["name"] == "osmox"]
        options = upstream["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        options["explicit_http_config"] = {"http2_protocol_options": {}}
        return b

    front.bootstrap = bootstrap
    front.start()
    base = graphql_rows()
    pages = {offset: to_json_bytes(graphql_body([dict(r, id=r["id"] + 1000 * (offset + 1)) for r in base]))
             for offset in range(8)}
    serve_pages(osmox, pages)

    def poll(offset: int) -> bool:
        r = front.client.graphql(NOTIFICATIONS_QUERY, variables={"offset": offset}, timeout=EXPECT_S)
        return r.status == 200 and r.body == pages[offset]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(poll, [o for o in pages for _ in range(3)]))
    want = sorted((nid + 1000 * (offset + 1), status) for offset in pages for nid, status in EXPECTED)
    assert sorted(ids_statuses(crm.wait_for(len(want), EXPECT_S))) == want
    assert_no_more(crm, len(want))
    assert envoy.stat("http.ingress.downstream_cx_http2_total", 0) >= 1
    assert envoy.stat("http.ingress.downstream_rq_http2_total", 0) >= 3 * len(pages)
    assert envoy.stat("http.ingress.downstream_rq_http1_total", 0) == 0
    assert envoy.metric("streams_unlogged") == 0


def test_http3_streams_pass_through_untouched_and_are_reported_as_unread(osmox, make_receiver, make_envoy,
                                                                        filter_wasm, tmp_path):
    """The module for HTTP/1.1 and HTTP/2 on a QUIC listener: every answer reaches the client
    byte for byte, the VM survives (the SDK's header reader panics on what Envoy answers in
    `on_done`), and each stream is counted in `streams_unlogged` and reported at warn, not
    lost in silence. The same poll over the HTTP/1.1 listener of the same Envoy is delivered,
    as the control."""
    crm = make_receiver("crm")
    cfg = filter_config([endpoint("crm", crm)])
    envoy, port = h3_envoy(make_envoy, osmox, {"crm": crm}, cfg, tmp_path)
    served = osmox.set_json("POST", "/graphql", graphql_body(graphql_rows()))
    answers = [first_h3(port, "POST", "/graphql", GRAPHQL_POLL)]
    answers += [h3(port, "POST", "/graphql", GRAPHQL_POLL) for _ in range(4)]
    assert [(r.status, r.body == served) for r in answers] == [(200, True)] * 5
    envoy.wait_metric("streams_unlogged", 5, timeout=EXPECT_S)
    assert_no_more(crm, 0)
    assert envoy.metric("responses_watched") == 0
    logs = envoy.logs()
    assert "panicked" not in logs and "failed: Uncaught" not in logs
    assert "without Envoy's log callback" in logs
    # The control: the same poll over HTTP/1.1.
    poll_graphql(envoy)
    assert sorted(ids_statuses(crm.wait_for(3, EXPECT_S))) == EXPECTED
    assert envoy.metric("streams_unlogged") == 5


def test_the_http3_module_delivers_what_http3_clients_poll(osmox, make_receiver, make_envoy, http3_wasm, tmp_path):
    """The module built for HTTP/3 listeners reads a QUIC stream in `on_done`, from the head
    it kept as the request passed: GraphQL polls and a REST v8 read over HTTP/3 are
    delivered once, their answers passed on byte for byte; on the HTTP/1.1 listener of the
    same Envoy, where `on_log` comes first, a stream is read once, not twice."""
    crm = make_receiver("crm")
    cfg = filter_config([endpoint("crm", crm)])
    envoy, port = h3_envoy(make_envoy, osmox, {"crm": crm}, cfg, tmp_path, wasm_path=http3_wasm)
    rows = graphql_rows()
    served = osmox.set_json("POST", "/graphql", graphql_body(rows))
    first = first_h3(port, "POST", "/graphql", GRAPHQL_POLL)
    assert (first.status, first.body == served) == (200, True)
    assert sorted(ids_statuses(crm.wait_for(3, EXPECT_S))) == EXPECTED
    for _ in range(3):
        again = h3(port, "POST", "/graphql", GRAPHQL_POLL)
        assert (again.status, again.body == served) == (200, True)
    poll_graphql(envoy)  # the same page over HTTP/1.1: known already
    assert_no_more(crm, 3)
    # A REST v8 read of a new state over HTTP/3.
    moved = dict(rows_by_id()[1042], deliveryStatus=6, updatedOn="2026-04-20T10:00:00.000Z")
    rest = osmox.set_json("GET", "/notifications/1042", snake(moved))
    r = h3(port, "GET", "/notifications/1042")
    assert (r.status, r.body == rest) == (200, True)
    got = crm.wait_for(4, EXPECT_S)
    assert (got[3].json()["id"], got[3].json()["deliveryStatus"]) == (1042, 6)
    assert_no_more(crm, 4)
    # A page of 64 KiB or more, read at a tick after `on_done` hands it on.
    big = _padded([dict(r, id=r["id"] + 50_000) for r in rows], 100)
    served = osmox.set_json("POST", "/graphql", graphql_body(big))
    assert len(served) > 100 * 1024
    r = h3(port, "POST", "/graphql", GRAPHQL_POLL)
    assert (r.status, r.body == served) == (200, True)
    got = crm.wait_for(7, EXPECT_S)
    assert sorted(ids_statuses(got[4:])) == [(nid + 50_000, status) for nid, status in EXPECTED]
    assert_no_more(crm, 7)
    assert envoy.metric("streams_unlogged") == 0
    logs = envoy.logs()
    assert "panicked" not in logs and "failed: Uncaught" not in logs


def test_the_http3_module_learns_registrations_made_over_http3(osmox, make_receiver, make_envoy, http3_wasm,
                                                                tmp_path):
    """Learning reads the method from the head kept as the request passed: a REST
    registration over HTTP/3 is learned and delivers, and its delete, answered 204 with no
    body, is learned too (a stream read in `on_done` whether or not its answer had a body)."""
    from test_security import original_dst_cluster, learn_config, poll_rows, sample_row, v8_webhook_row
    a = make_receiver("A")
    cfg = learn_config()
    envoy, port = h3_envoy(make_envoy, osmox, {}, cfg, tmp_path, wasm_path=http3_wasm,
                           extra_clusters=[original_dst_cluster()])
    url = a.url("/osmox/status")
    osmox.set_json("POST", "/webhooks", v8_webhook_row(3, 1, url), status=201)
    r = first_h3(port, "POST", "/webhooks", to_json_bytes({"providerId": 1, "webhookUrl": url}))
    assert r.status == 201
    envoy.wait_metric("registrations_learned", 1, timeout=EXPECT_S)
    poll_rows(envoy, osmox, [sample_row(3501, 1, 5)])
    assert ids_statuses(a.wait_for(1, EXPECT_S)) == [(3501, 5)]
    osmox.set_response("DELETE", "/webhooks/3", 204, body=b"", content_type=None)
    assert h3(port, "DELETE", "/webhooks/3").status == 204
    envoy.wait_metric("registrations_removed", 1, timeout=EXPECT_S)
    poll_rows(envoy, osmox, [sample_row(3502, 1, 5)])
    envoy.wait_metric("events_unrouted", 1, timeout=EXPECT_S)
    assert_no_more(a, 1)
