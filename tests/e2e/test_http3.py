"""The filter on an HTTP/3 (QUIC) listener, as an edge proxy may run it. Envoy logs a QUIC
stream only once the client acknowledged its last bytes, after the filter's context is gone (a
review raised the risk of the SDK's "invalid context_id" panic there; what happens instead is
that the filter never gets `on_log`), so the filter cannot read such streams: the test pins
that they pass through untouched and are reported, not silently dropped."""
from __future__ import annotations

import datetime
import socket

import h3client
from harness import HOST, clusters_for, endpoint, filter_config, to_json_bytes
from test_delivery import (EXPECT_S, NOTIFICATIONS_QUERY, assert_no_more, graphql_body, graphql_rows,
                           ids_statuses, poll_graphql)


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


def test_http3_streams_pass_through_untouched_and_are_reported_as_unread(osmox, make_receiver, make_envoy,
                                                                        filter_wasm, tmp_path):
    """Envoy 1.40 logs a QUIC stream only once the client acknowledged its last bytes, after
    the filter's context is gone, and in `on_done`, the last callback the filter gets, neither
    the request's headers nor its `request.*` attributes can be read: the filter cannot tell
    what was asked, so it delivers nothing from an HTTP/3 listener (README, Limits). What must
    hold: every answer reaches the client byte for byte, the VM survives (the SDK's header
    reader panics on what Envoy answers there), and each such stream is counted in
    `streams_unlogged` and reported at warn, not lost in silence. The same poll over the
    HTTP/1.1 listener of the same Envoy is delivered, as the control."""
    crm = make_receiver("crm")
    cfg = filter_config([endpoint("crm", crm)])
    envoy = make_envoy(osmox.port, cfg, clusters=clusters_for(cfg, {"crm": crm}))
    port = free_udp_port()
    cert, key = self_signed(tmp_path)
    envoy.write_lds(envoy.listener(cfg), quic_listener(envoy, cfg, port, cert, key))
    served = osmox.set_json("POST", "/graphql", graphql_body(graphql_rows()))
    request = to_json_bytes({"query": NOTIFICATIONS_QUERY})
    headers = [("content-type", "application/json")]

    def poll():
        return h3client.request(HOST, port, "POST", "/graphql", headers, request, timeout=EXPECT_S)

    answers = []
    for _ in range(50):  # the listener comes up once Envoy has read the LDS file
        try:
            answers.append(poll())
            break
        except (TimeoutError, ConnectionError, OSError):
            continue
    assert answers, "no HTTP/3 answer"
    answers += [poll() for _ in range(4)]
    assert [(r.status, r.body == served) for r in answers] == [(200, True)] * 5
    envoy.wait_metric("streams_unlogged", 5, timeout=EXPECT_S)
    assert_no_more(crm, 0)
    assert envoy.metric("responses_watched") == 0
    logs = envoy.logs()
    assert "panicked" not in logs and "failed: Uncaught" not in logs
    assert "without Envoy's log callback" in logs
    # The control: the same poll over HTTP/1.1.
    poll_graphql(envoy)
    assert sorted(ids_statuses(crm.wait_for(3, EXPECT_S))) == [(1042, 5), (1044, 6), (1048, 5)]
    assert envoy.metric("streams_unlogged") == 5
