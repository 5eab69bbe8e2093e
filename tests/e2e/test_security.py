"""End-to-end security tests: Standard Webhooks signing (static, rotated and env-sourced
secrets), credential hygiene, header-config refusal, and webhook URLs learned from OsmoX's own
registration traffic (with the SSRF guard).

client -> Envoy (osmox-webhook-filter) -> OsmoxStub; the filter's webhooks -> Receiver(s).
The Python `standardwebhooks` package is the independent verifier of every signature.

Learned-registration tests send webhooks through an Envoy ORIGINAL_DST cluster (`egress`) that
takes its destination from the `x-envoy-original-dst-host` header the filter adds. Tests that
expect a URL to be *refused* point `egress` at a STATIC loopback trap instead, so that a filter
bug can never make Envoy connect to a non-loopback address (e.g. 169.254.169.254).

Waits: up to EXPECT_S for something expected, SETTLE_S to show that nothing more comes.
"""
from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import uuid

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from harness import (HOST, USER_AGENT_PREFIX, ReceivedRequest, Receiver, clusters_for, endpoint, filter_config,
                     load_sample, wait_until)

EXPECT_S = 10.0
SETTLE_S = 1.0
TICK_MS = 50
ODH = "x-envoy-original-dst-host"  # learn.originalDstHeader and the egress cluster's header

NOTIFICATIONS_QUERY = """query {
  notifications(options: { limit: 7, offset: 0, sortBy: "createdOn", sortOrder: DESC }) {
    notifications { id providerId providerChainId channelType applicationId deliveryStatus status
                    retryCount data result createdBy updatedBy createdOn updatedOn notificationSentOn }
    total offset limit
  }
}"""

# Credentials a client sends to OsmoX (and OsmoX answers with): none may reach a receiver.
CLIENT_CREDENTIALS = {
    "authorization": "Bearer client-jwt-e2e-must-not-leak",
    "x-api-key": "client-api-key-e2e-must-not-leak",
    "cookie": "a=b; session=client-cookie-e2e-must-not-leak",
    "proxy-authorization": "Basic cHJveHktZTJlLW11c3Qtbm90LWxlYWs=",
}
OSMOX_SET_COOKIE = "osmox_session=upstream-cookie-e2e-must-not-leak; Path=/; HttpOnly"
LEAK_NAMES = {"authorization", "x-api-key", "cookie", "proxy-authorization", "set-cookie"}
LEAK_VALUES = list(CLIENT_CREDENTIALS.values()) + ["client-jwt-e2e-must-not-leak", "client-api-key-e2e",
                                                   "client-cookie-e2e", "upstream-cookie-e2e",
                                                   "cHJveHktZTJlLW11c3Qtbm90LWxlYWs"]


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def new_secret() -> str:
    """A fresh Standard Webhooks secret: whsec_ + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def secret_forms(secret: str) -> list[str]:
    """Spellings of a secret that must never be disclosed: whole, base64 part, and its
    unpadded base64 (at least 40 chars, so no accidental match)."""
    b64 = secret.removeprefix("whsec_")
    return [secret, b64, b64.rstrip("=")]


def sample_row(row_id: int, provider_id: int, status: int, updated: str = "2026-04-20T09:20:19.000Z") -> dict:
    """A notification row shaped like the GraphQL sample (1042), with id/provider/status set."""
    rows = load_sample("graphql-notifications-query-response.json")["data"]["notifications"]["notifications"]
    row = copy.deepcopy(next(r for r in rows if r["id"] == 1042))
    row.update(id=row_id, providerId=provider_id, deliveryStatus=status, updatedOn=updated)
    return row


def graphql_list(rows: list[dict]) -> dict:
    return {"data": {"notifications": {"notifications": rows, "total": len(rows), "offset": 0, "limit": 7}}}


def poll_rows(envoy, osmox, rows: list[dict], headers=None):
    """The client lists notifications; OsmoX answers with `rows`."""
    osmox.set_json("POST", "/graphql", graphql_list(rows))
    r = envoy.client.graphql(NOTIFICATIONS_QUERY, headers=headers)
    assert r.status == 200, r.body[:500]
    return r


def start(make_envoy, osmox, cfg: dict, receivers: dict, **kw):
    """Envoy with the filter configured by cfg; receivers: {endpoint name: Receiver}."""
    return make_envoy(osmox.port, cfg, clusters=clusters_for(cfg, receivers), **kw)


def assert_no_more(receiver, count: int, settle: float = SETTLE_S) -> list[ReceivedRequest]:
    got = receiver.settle(settle)
    assert len(got) == count, f"{receiver.name}: expected {count} webhook(s), got {len(got)}: {got!r}"
    return got


def ids_statuses(reqs: list[ReceivedRequest]) -> list[tuple[int, int]]:
    return [(r.json()["id"], r.json()["deliveryStatus"]) for r in reqs]


def wait_metric_eq(envoy, short: str, value: int, timeout: float = EXPECT_S):
    """Wait until one of the filter's metrics equals `value` (e.g. a gauge moved by another VM)."""
    try:
        wait_until(lambda: envoy.metric(short) == value, timeout, what=f"{short} == {value}")
    except TimeoutError as e:
        raise AssertionError(f"{e}; now {envoy.metric(short)}") from None


def signature_entries(req: ReceivedRequest) -> list[str]:
    return req.headers.get("webhook-signature", "").split(" ")


def assert_rejected(secret: str, body: bytes, headers: dict):
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def wasm_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "wasm log" in line]


def assert_no_leak(req: ReceivedRequest):
    """No client/OsmoX credential header (by lowercased name) or value reaches a receiver."""
    names = {k.lower() for k, _ in req.headers_list}
    assert not names & LEAK_NAMES, f"credential header(s) {sorted(names & LEAK_NAMES)} reached the receiver"
    everything = "\n".join(f"{k}: {v}" for k, v in req.headers_list) + "\n" + req.body.decode(errors="replace")
    for value in LEAK_VALUES:
        assert value not in everything, f"credential value {value!r} reached the receiver"


# -- learning ------------------------------------------------------------------------------
def original_dst_cluster(name: str = "egress") -> dict:
    """An ORIGINAL_DST cluster taking host:port from the ODH request header (HTTP/1.1)."""
    return {
        "name": name,
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "1s",
        "original_dst_lb_config": {"use_http_header": True, "http_header_name": ODH},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {}},
            }
        },
    }


def learn_config(endpoints=(), **learn) -> dict:
    # Receivers listen on free ports: every port of the loopback host is allowed here.
    block = {"enabled": True, "cluster": "egress", "allowHosts": [f"{HOST}:*"], "allowPrivate": True,
             "originalDstHeader": ODH}
    block.update(learn)
    return filter_config(list(endpoints), tick_ms=TICK_MS, learn=block)


def start_learning(make_envoy, osmox, cfg: dict | None = None, **kw):
    return make_envoy(osmox.port, cfg or learn_config(), extra_clusters=[original_dst_cluster()], **kw)


def register_mutation(provider_id: int, url: str) -> str:
    return (f'mutation {{ webhook(createWebhookInput: {{providerId: {provider_id}, webhookUrl: "{url}"}}) '
            f'{{ id providerId webhookUrl status }} }}')


def register_answer(webhook_id: int, provider_id: int, url: str) -> dict:
    doc = load_sample("graphql-register-webhook-response.json")
    doc["data"]["webhook"].update(id=webhook_id, providerId=provider_id, webhookUrl=url)
    return doc


def register_graphql(envoy, osmox, webhook_id: int, provider_id: int, url: str, answer: dict | None = None):
    """The client registers `url` for `provider_id` through the proxy; OsmoX answers `answer`
    (default: success, row `webhook_id`)."""
    sent = osmox.set_json("POST", "/graphql", answer if answer is not None else
                          register_answer(webhook_id, provider_id, url))
    r = envoy.client.graphql(register_mutation(provider_id, url))
    assert r.status == 200 and r.body == sent
    return r


def v8_webhook_row(webhook_id: int, provider_id: int, url: str, status: int = 1) -> dict:
    return {"id": webhook_id, "provider_id": provider_id, "webhook_url": url, "is_verified": 0, "status": status,
            "created_by": None, "updated_by": None, "created_on": "2026-04-19T14:02:55.140Z",
            "updated_on": "2026-04-19T14:02:55.140Z"}


def assert_learned_webhook(req: ReceivedRequest, path: str = "/osmox/status"):
    assert req.method == "POST"
    assert req.path == path, req.path
    h = req.headers
    assert h.get("content-type") == "application/json"
    assert h.get("user-agent", "").startswith(USER_AGENT_PREFIX)
    assert h.get("webhook-id") and h.get("webhook-timestamp", "").isdigit()
    assert_no_leak(req)


# ------------------------------------------------------------------------------------------
# 1-4: signing
# ------------------------------------------------------------------------------------------
def test_secret_signs_standard_webhooks(osmox, make_receiver, make_envoy, filter_wasm):
    crm = make_receiver("crm")
    secret = new_secret()
    cfg = filter_config([endpoint("crm", crm, secret=secret)], tick_ms=TICK_MS)
    envoy = start(make_envoy, osmox, cfg, {"crm": crm})
    row = sample_row(2001, 1, 5)
    poll_rows(envoy, osmox, [row])
    crm.wait_for(1, EXPECT_S)
    (req,) = assert_no_more(crm, 1)
    h = req.headers
    assert h.get("webhook-id"), "webhook-id missing"
    assert h.get("webhook-timestamp", "").isdigit(), h.get("webhook-timestamp")
    assert abs(int(h["webhook-timestamp"]) - req.time) <= 5
    sigs = signature_entries(req)
    assert len(sigs) == 1 and sigs[0].startswith("v1,"), h.get("webhook-signature")
    assert len(base64.b64decode(sigs[0][3:])) == 32  # HMAC-SHA256
    payload = Webhook(secret).verify(req.body, h)  # raises if the signature is wrong
    assert payload["id"] == 2001 and payload["deliveryStatus"] == 5
    # The verifier is not trivially satisfied: another key fails.
    assert_rejected(new_secret(), req.body, h)


def test_seeds_and_sender_ids_come_from_the_hosts_random_source(osmox, make_receiver, make_envoy, filter_wasm):
    """Each VM seeds its hash maps and draws its sender id from WASI's `random_get` (Envoy answers
    from BoringSSL), not from the clock it started at; the filter warns where the host refuses."""
    crm = make_receiver("crm")
    cfg = filter_config([endpoint("crm", crm)], tick_ms=TICK_MS)
    envoy = start(make_envoy, osmox, cfg, {"crm": crm})
    poll_rows(envoy, osmox, [sample_row(2009, 1, 5)])
    crm.wait_for(1, EXPECT_S)
    envoy.stop()  # Envoy flushes its log file only every ~10 s, and at exit
    logs = envoy.logs()
    assert "osmox-webhook-filter" in logs  # the filter's lines are there (so the check below means something)
    assert "no random source" not in logs


def test_rotation_two_secrets_each_verifies_alone(osmox, make_receiver, make_envoy, filter_wasm):
    crm = make_receiver("crm")
    old, new = new_secret(), new_secret()
    cfg = filter_config([endpoint("crm", crm, secrets=[old, new])], tick_ms=TICK_MS)
    envoy = start(make_envoy, osmox, cfg, {"crm": crm})
    poll_rows(envoy, osmox, [sample_row(2002, 1, 6)])
    crm.wait_for(1, EXPECT_S)
    (req,) = assert_no_more(crm, 1)
    sigs = signature_entries(req)
    assert len(sigs) == 2, f"expected two space-separated signatures: {req.headers.get('webhook-signature')!r}"
    assert all(s.startswith("v1,") for s in sigs), sigs
    assert sigs[0] != sigs[1]
    assert Webhook(old).verify(req.body, req.headers)["id"] == 2002
    assert Webhook(new).verify(req.body, req.headers)["id"] == 2002
    # Each entry alone verifies with exactly one of the two keys.
    for sig, key, other in ((sigs[0], old, new), (sigs[1], new, old)):
        single = dict(req.headers, **{"webhook-signature": sig})
        Webhook(key).verify(req.body, single)
        assert_rejected(other, req.body, single)
    assert_rejected(new_secret(), req.body, req.headers)


def test_tampered_body_or_id_or_timestamp_fails_verification(osmox, make_receiver, make_envoy, filter_wasm):
    crm = make_receiver("crm")
    secret = new_secret()
    cfg = filter_config([endpoint("crm", crm, secret=secret)], tick_ms=TICK_MS)
    envoy = start(make_envoy, osmox, cfg, {"crm": crm})
    poll_rows(envoy, osmox, [sample_row(2003, 1, 5)])
    crm.wait_for(1, EXPECT_S)
    (req,) = assert_no_more(crm, 1)
    Webhook(secret).verify(req.body, req.headers)  # the untouched webhook verifies

    body = bytearray(req.body)
    at = req.body.index(b"2003")  # a digit of the id: flipping it keeps the body valid UTF-8/JSON
    body[at] = ord("9") if body[at] != ord("9") else ord("8")
    assert bytes(body) != req.body
    assert_rejected(secret, bytes(body), req.headers)

    other_id = dict(req.headers, **{"webhook-id": req.headers["webhook-id"] + "x"})
    assert_rejected(secret, req.body, other_id)
    other_ts = dict(req.headers, **{"webhook-timestamp": str(int(req.headers["webhook-timestamp"]) - 1)})
    assert_rejected(secret, req.body, other_ts)


def test_retry_keeps_id_and_resigns_with_new_timestamp(osmox, make_receiver, make_envoy, filter_wasm):
    crm = make_receiver("crm")
    crm.script([503])  # then the default 200
    secret = new_secret()
    # One retry 1.5 s later: its timestamp (whole seconds) must be later than the first's.
    cfg = filter_config([endpoint("crm", crm, secret=secret, retry={"schedule": [1500], "jitter": 0})],
                        tick_ms=TICK_MS)
    envoy = start(make_envoy, osmox, cfg, {"crm": crm})
    poll_rows(envoy, osmox, [sample_row(2004, 1, 5)])
    crm.wait_for(2, EXPECT_S)
    first, second = assert_no_more(crm, 2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    for req in (first, second):
        assert Webhook(secret).verify(req.body, req.headers)["id"] == 2004
    t1, t2 = int(first.headers["webhook-timestamp"]), int(second.headers["webhook-timestamp"])
    assert t2 >= t1
    assert t2 > t1, f"the retry ~1.5 s later kept timestamp {t1}: not re-signed"
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]
    envoy.wait_metric("deliveries_succeeded", 1, timeout=EXPECT_S)
    assert envoy.metric("retries_scheduled") >= 1


# ------------------------------------------------------------------------------------------
# 5: secretEnv
# ------------------------------------------------------------------------------------------
ADMIN_PAGES = ["/config_dump", "/config_dump?include_eds", "/stats", "/stats?format=json", "/stats/prometheus",
               "/server_info", "/clusters", "/listeners"]


def test_secret_env_signs_and_is_never_disclosed(osmox, make_receiver, make_envoy, filter_wasm):
    crm = make_receiver("crm")
    secret = new_secret()
    var = f"OSMOX_E2E_SECRET_{uuid.uuid4().hex[:12].upper()}"
    cfg = filter_config([endpoint("crm", crm, secretEnv=var)], tick_ms=TICK_MS)
    # Debug logs everywhere: the strictest place for a secret to show up.
    envoy = start(make_envoy, osmox, cfg, {"crm": crm}, env={var: secret}, host_env_keys=[var],
                  log_level="debug", component_log_level="wasm:trace")
    poll_rows(envoy, osmox, [sample_row(2005, 1, 5)])
    crm.wait_for(1, EXPECT_S)
    (req,) = assert_no_more(crm, 1)
    assert Webhook(secret).verify(req.body, req.headers)["id"] == 2005
    envoy.wait_metric("deliveries_succeeded", 1, timeout=EXPECT_S)

    pages = {p: envoy.admin("GET", p).body.decode(errors="replace") for p in ADMIN_PAGES}
    assert var in pages["/config_dump"], "config_dump should show the configuration (naming the variable)"
    assert "osmox_webhook" in pages["/stats"]
    envoy.stop()  # Envoy flushes its log file only every ~10 s, and at exit
    logs = envoy.logs()
    assert "osmox-webhook-filter" in logs  # the filter did log (so the check below means something)
    on_disk = {p.name: p.read_text(errors="replace") for p in envoy.workdir.rglob("*") if p.is_file()}
    for form in secret_forms(secret):
        for page, text in pages.items():
            assert form not in text, f"the secret appears in admin {page}"
        assert form not in logs, "the secret appears in Envoy's log"
        for name, text in on_disk.items():
            assert form not in text, f"the secret appears in {name}"


def _refused_env_case(case: str, var: str, junk_secret: str):
    """(env, host_env_keys) for a secretEnv that cannot yield a key."""
    if case == "unset":  # passed to the VM by name, but not in Envoy's environment
        return {}, [var]
    if case == "not-passed":  # in Envoy's environment, but not passed to the VM
        return {var: new_secret()}, []
    if case == "garbage":  # passed, but not a valid key (decodes to 10 bytes)
        return {var: junk_secret}, [var]
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["unset", "not-passed", "garbage"])
def test_secret_env_missing_or_bad_is_refused_naming_secret_env(osmox, make_receiver, make_envoy, filter_wasm,
                                                                case):
    crm, ops = make_receiver("crm"), make_receiver("ops")
    var = f"OSMOX_E2E_SECRET_{uuid.uuid4().hex[:12].upper()}"
    junk = "whsec_" + base64.b64encode(b"junk-e2e-!").decode()
    env, keys = _refused_env_case(case, var, junk)
    literal = new_secret()  # another endpoint's valid secret, which must not be printed either
    cfg = filter_config([endpoint("ops", ops, secret=literal), endpoint("crm", crm, secretEnv=var)], tick_ms=TICK_MS)
    envoy = make_envoy(osmox.port, cfg, clusters=clusters_for(cfg, {"crm": crm, "ops": ops}), use_lds=False,
                       start=False, env=env, host_env_keys=keys)
    log = envoy.expect_start_failure(timeout=20)
    assert envoy.exit_code not in (None, 0), "envoy should exit when the filter refuses its configuration"
    lines = wasm_lines(log)
    assert any("secretEnv" in line for line in lines), f"no filter log line names secretEnv:\n{log[-3000:]}"
    assert any("endpoints[1].secretEnv" in line for line in lines), lines
    for s in [literal, junk, *env.values()]:
        for form in secret_forms(s):
            assert form not in log, "a secret appears in Envoy's log"


# ------------------------------------------------------------------------------------------
# 6: credential hygiene
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("api", ["rest", "graphql"])
def test_client_and_osmox_credentials_never_reach_receiver(osmox, make_receiver, make_envoy, filter_wasm, api):
    crm = make_receiver("crm")
    cfg = filter_config([endpoint("crm", crm, headers={"x-team": "crm"})], tick_ms=TICK_MS)
    envoy = start(make_envoy, osmox, cfg, {"crm": crm})
    if api == "rest":
        row = load_sample("rest-create-notification-response.v8.json")
        row["delivery_status"] = 5
        osmox.set_json("POST", "/notifications", row, status=201, headers=[("Set-Cookie", OSMOX_SET_COOKIE)])
        r = envoy.client.post("/notifications", {"providerId": 1}, headers=CLIENT_CREDENTIALS)
        assert r.status == 201
    else:
        osmox.set_json("POST", "/graphql", graphql_list([sample_row(2006, 1, 5)]),
                       headers=[("Set-Cookie", OSMOX_SET_COOKIE)])
        r = envoy.client.graphql(NOTIFICATIONS_QUERY, headers=CLIENT_CREDENTIALS)
        assert r.status == 200
    # The credentials really went through the proxy both ways (so their absence below counts).
    assert r.headers.get("set-cookie") == OSMOX_SET_COOKIE
    upstream = osmox.requests()[-1].header
    for k, v in CLIENT_CREDENTIALS.items():
        assert upstream.get(k) == v, k
    crm.wait_for(1, EXPECT_S)
    (req,) = assert_no_more(crm, 1)
    assert req.headers.get("x-team") == "crm"
    assert_no_leak(req)


# ------------------------------------------------------------------------------------------
# 7: header configuration refused at load
# ------------------------------------------------------------------------------------------
BAD_HEADERS = {
    "crlf": ({"x-team": "crm\r\nx-injected: e2e-injected"}, "x-team"),
    "pseudo-path": ({":path": "/evil"}, ":path"),
    "webhook-id": ({"webhook-id": "forged"}, "webhook-id"),
    "content-type": ({"content-type": "text/plain"}, "content-type"),
    "webhook-signature-mixed-case": ({"Webhook-Signature": "v1,Zm9yZ2Vk"}, "Webhook-Signature"),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_bad_header_config_is_refused_naming_headers(osmox, make_receiver, make_envoy, filter_wasm, case):
    crm = make_receiver("crm")
    headers, name = BAD_HEADERS[case]
    cfg = filter_config([endpoint("crm", crm, headers=headers)], tick_ms=TICK_MS)
    envoy = make_envoy(osmox.port, cfg, clusters=clusters_for(cfg, {"crm": crm}), use_lds=False, start=False)
    log = envoy.expect_start_failure(timeout=20)
    assert envoy.exit_code not in (None, 0), "envoy should exit when the filter refuses its configuration"
    lines = wasm_lines(log)
    naming = [line for line in lines if "endpoints[0].headers" in line]
    assert naming, f"no filter log line names endpoints[0].headers:\n{log[-3000:]}"
    assert any(name in line for line in naming), naming
    assert not any("e2e-injected" in line for line in lines), "the header value was printed"


# ------------------------------------------------------------------------------------------
# 8-11: learned registrations
# ------------------------------------------------------------------------------------------
def test_graphql_registration_is_learned_and_fires_on_final_states(osmox, make_receiver, make_envoy, filter_wasm):
    a = make_receiver("A")
    envoy = start_learning(make_envoy, osmox)
    url_a = a.url("/osmox/status")
    register_graphql(envoy, osmox, 3, 1, url_a)  # with the client's Authorization: Bearer …
    envoy.wait_metric("registrations_learned", 1, timeout=EXPECT_S)
    wait_metric_eq(envoy, "learned_endpoints", 1)
    assert envoy.metric("registrations_refused") == 0

    rows = [sample_row(3001, 1, 5), sample_row(3002, 2, 5), sample_row(3003, 1, 1), sample_row(3004, 1, 6),
            sample_row(3005, 1, 3)]
    poll_rows(envoy, osmox, rows, headers=CLIENT_CREDENTIALS)
    a.wait_for(2, EXPECT_S)
    got = assert_no_more(a, 2)
    assert sorted(ids_statuses(got)) == [(3001, 5), (3004, 6)]
    for req in got:
        assert_learned_webhook(req)
        assert "webhook-signature" not in req.headers  # OsmoX webhooks carry no secret
    envoy.wait_metric("deliveries_succeeded", 2, timeout=EXPECT_S)
    assert envoy.metric("registrations_learned") == 1


def test_a_learned_url_reaches_only_the_ports_allow_hosts_names(osmox, make_receiver, make_envoy, filter_wasm):
    """A review: an allowed host was allowed on every port, so any client that may register
    a webhook had the filter POST to Envoy's own admin API (`/logging?level=critical`)."""
    a = make_receiver("A")
    envoy = start_learning(make_envoy, osmox, learn_config(allowHosts=[f"{HOST}:{a.port}"]))
    admin = f"http://{HOST}:{envoy.admin_port}/logging?level=critical"
    register_graphql(envoy, osmox, 3, 1, a.url("/osmox/status"))
    register_graphql(envoy, osmox, 4, 2, admin)
    envoy.wait_metric("registrations_learned", 1, timeout=EXPECT_S)
    envoy.wait_metric("registrations_refused", 1, timeout=EXPECT_S)
    poll_rows(envoy, osmox, [sample_row(3101, 1, 5), sample_row(3102, 2, 5)])
    a.wait_for(1, EXPECT_S)
    assert ids_statuses(assert_no_more(a, 1)) == [(3101, 5)]
    assert envoy.metric("events_unrouted") == 1
    assert envoy.metric("deliveries_sent") == 1
    # Nothing but A's webhook left through the egress cluster.
    assert envoy.stat("cluster.egress.upstream_rq_total", 0) == 1


def test_changed_registration_moves_deliveries(osmox, make_receiver, make_envoy, filter_wasm):
    a, b = make_receiver("A"), make_receiver("B")
    envoy = start_learning(make_envoy, osmox)
    register_graphql(envoy, osmox, 3, 1, a.url("/osmox/status"))
    envoy.wait_metric("registrations_learned", 1, timeout=EXPECT_S)
    poll_rows(envoy, osmox, [sample_row(3101, 1, 5)])
    a.wait_for(1, EXPECT_S)

    register_graphql(envoy, osmox, 4, 1, b.url("/osmox/status-b"))
    envoy.wait_metric("registrations_learned", 2, timeout=EXPECT_S)
    wait_metric_eq(envoy, "learned_endpoints", 1)  # still one provider
    poll_rows(envoy, osmox, [sample_row(3102, 1, 5), sample_row(3103, 1, 6)])
    b.wait_for(2, EXPECT_S)
    got_b = assert_no_more(b, 2)
    assert sorted(ids_statuses(got_b)) == [(3102, 5), (3103, 6)]
    for req in got_b:
        assert_learned_webhook(req, "/osmox/status-b")
    got_a = assert_no_more(a, 1, settle=0)
    assert ids_statuses(got_a) == [(3101, 5)]


def test_rest_delete_by_the_id_in_its_body_stops_deliveries(osmox, make_receiver, make_envoy, filter_wasm):
    """A final review: OsmoX v8 removes a webhook by `DELETE /webhooks` naming its id in the
    JSON request body, and answers `true`. The filter kept the mapping and went on sending."""
    a = make_receiver("A")
    envoy = start_learning(make_envoy, osmox)
    register_graphql(envoy, osmox, 3, 1, a.url("/osmox/status"))
    envoy.wait_metric("registrations_learned", 1, timeout=EXPECT_S)
    osmox.set_json("DELETE", "/webhooks", True)
    # The registration's answer was watched already: wait for the delete's own answer.
    watched = envoy.metric("responses_watched")
    # A form-encoded body is not read as the server reads it: nothing is removed by it.
    r = envoy.client.request("DELETE", "/webhooks", b"id=3",
                             headers={"x-api-key": "k", "content-type": "application/x-www-form-urlencoded"})
    assert r.status == 200
    envoy.wait_metric("responses_watched", watched + 1, timeout=EXPECT_S)
    assert envoy.metric("registrations_removed") == 0
    assert envoy.metric("registrations_unread") == 1  # the operator hears of it
    r = envoy.client.request("DELETE", "/webhooks", {"id": 3}, headers={"x-api-key": "k"})
    assert r.status == 200
    envoy.wait_metric("registrations_removed", 1, timeout=EXPECT_S)
    wait_metric_eq(envoy, "learned_endpoints", 0)
    poll_rows(envoy, osmox, [sample_row(3301, 1, 5)])
    envoy.wait_metric("events_unrouted", 1, timeout=EXPECT_S)
    assert_no_more(a, 0)


@pytest.mark.parametrize("answer", ["json", "empty", "text", "gzip"])
def test_rest_delete_stops_deliveries(osmox, make_receiver, make_envoy, filter_wasm, answer):
    """A delete teaches from its path and status alone: whatever its answer's body is (none, not
    JSON, or compressed), the filter never reads the answer's headers."""
    a = make_receiver("A")
    envoy = start_learning(make_envoy, osmox)
    register_graphql(envoy, osmox, 3, 1, a.url("/osmox/status"))
    envoy.wait_metric("registrations_learned", 1, timeout=EXPECT_S)
    poll_rows(envoy, osmox, [sample_row(3201, 1, 5)])
    a.wait_for(1, EXPECT_S)

    # A delete OsmoX refused (unscripted: 404 problem+json) removes nothing.
    assert envoy.client.request("DELETE", "/webhooks/3", headers={"x-api-key": "k"}).status == 404
    poll_rows(envoy, osmox, [sample_row(3204, 1, 6)])
    a.wait_for(2, EXPECT_S)
    assert envoy.metric("registrations_removed") == 0

    status = 204 if answer == "empty" else 200
    if answer == "empty":
        osmox.set_response("DELETE", "/webhooks/3", 204, body=b"", content_type=None)
    elif answer == "text":
        osmox.set_response("DELETE", "/webhooks/3", 200, body=b"OK", content_type="text/plain")
    elif answer == "gzip":
        osmox.set_json("DELETE", "/webhooks/3", {"affected": 1}, status=200, gzip=True)
    else:
        osmox.set_json("DELETE", "/webhooks/3", {"affected": 1}, status=200)
    r = envoy.client.request("DELETE", "/webhooks/3", headers={"x-api-key": "k"})
    assert r.status == status
    envoy.wait_metric("registrations_removed", 1, timeout=EXPECT_S)
    wait_metric_eq(envoy, "learned_endpoints", 0)
    poll_rows(envoy, osmox, [sample_row(3202, 1, 5)])
    envoy.wait_metric("events_unrouted", 1, timeout=EXPECT_S)  # seen, and routed nowhere
    assert_no_more(a, 2)

    # Control: the pipeline is alive; a new registration delivers again.
    register_graphql(envoy, osmox, 5, 1, a.url("/osmox/status"))
    envoy.wait_metric("registrations_learned", 2, timeout=EXPECT_S)
    poll_rows(envoy, osmox, [sample_row(3203, 1, 5)])
    a.wait_for(3, EXPECT_S)
    got = assert_no_more(a, 3)
    assert ids_statuses(got) == [(3201, 5), (3204, 6), (3203, 5)]


def test_private_and_unlisted_registrations_are_refused(osmox, make_receiver, make_envoy, filter_wasm):
    # `egress` is a STATIC trap on loopback: whatever the filter learns, nothing leaves the box.
    trap = make_receiver("trap")
    cfg = learn_config(allowPrivate=False, allowHosts=[HOST, "169.254.169.254"])
    envoy = make_envoy(osmox.port, cfg, clusters={"egress": trap})
    refused = [
        (3, 1, "http://169.254.169.254/latest/meta-data"),      # allowed host, but link-local metadata
        (4, 2, "http://hooks.not-allowed.example.com/osmox/status"),  # not on allowHosts
        (5, 3, trap.url("/osmox/status")),                      # 127.0.0.1 allowed, but loopback
    ]
    for i, (wid, pid, url) in enumerate(refused, start=1):
        register_graphql(envoy, osmox, wid, pid, url)
        envoy.wait_metric("registrations_refused", i, timeout=EXPECT_S)
    assert envoy.metric("registrations_refused") == 3
    assert envoy.metric("registrations_learned") == 0
    assert envoy.metric("learned_endpoints") == 0

    poll_rows(envoy, osmox, [sample_row(3300 + pid, pid, 5) for _, pid, _ in refused])
    envoy.wait_metric("events_unrouted", 3, timeout=EXPECT_S)
    assert_no_more(trap, 0)
    assert envoy.metric("deliveries_sent") == 0
    assert envoy.stat("cluster.egress.upstream_rq_total", 0) == 0
    envoy.stop()  # Envoy flushes its log file only every ~10 s, and at exit
    refusals = [line for line in wasm_lines(envoy.logs()) if "registration not learned" in line]
    assert len(refusals) == 3, refusals
    assert sum("learn.allowPrivate" in line for line in refusals) == 2, refusals
    assert sum("learn.allowHosts" in line for line in refusals) == 1, refusals


FAILED_GRAPHQL = {
    "errors-null-webhook": lambda url: {
        "errors": [{"message": "Cannot read properties of undefined (reading 'protocol')"}],
        "data": {"webhook": None}},
    "errors-null-data": lambda url: {
        "errors": [{"message": "Cannot read properties of undefined (reading 'protocol')"}], "data": None},
    # Partial data next to errors: the write may not have happened, so nothing is learned;
    # but it may have, so the operator is told (`registrations_unread`).
    "errors-with-row": lambda url: dict(register_answer(3, 1, url),
                                        errors=[{"message": "Cannot read properties of undefined"}]),
}


@pytest.mark.parametrize("case", ["graphql-" + k for k in FAILED_GRAPHQL] + ["rest-409"])
def test_failed_registration_teaches_nothing(osmox, make_receiver, make_envoy, filter_wasm, case):
    a = make_receiver("A")
    envoy = start_learning(make_envoy, osmox)
    url = a.url("/osmox/status")
    if case == "rest-409":
        # A conflict answer that even carries a usable row: a non-2xx must teach nothing.
        osmox.set_json("POST", "/webhooks", v8_webhook_row(3, 1, url), status=409)
        r = envoy.client.post("/webhooks", {"providerId": 1, "webhookUrl": url}, headers={"x-api-key": "k"})
        assert r.status == 409
    else:
        register_graphql(envoy, osmox, 3, 1, url, answer=FAILED_GRAPHQL[case.removeprefix("graphql-")](url))
    envoy.wait_metric("responses_watched", 1, timeout=EXPECT_S)
    poll_rows(envoy, osmox, [sample_row(3401, 1, 5)])
    envoy.wait_metric("events_detected", 1, timeout=EXPECT_S)
    got = a.settle(SETTLE_S)
    assert envoy.metric("registrations_learned") == 0, "a failed registration was learned"
    assert envoy.metric("learned_endpoints") == 0
    assert envoy.metric("registrations_unread") == (1 if case == "graphql-errors-with-row" else 0)
    assert got == [], f"a failed registration's URL got webhooks: {got!r}"
    assert envoy.metric("events_unrouted") == 1

    # Control: the same registration answered 201 by REST is learned and delivers.
    osmox.set_json("POST", "/webhooks", v8_webhook_row(3, 1, url), status=201)
    assert envoy.client.post("/webhooks", {"providerId": 1, "webhookUrl": url}).status == 201
    envoy.wait_metric("registrations_learned", 1, timeout=EXPECT_S)
    poll_rows(envoy, osmox, [sample_row(3402, 1, 5)])
    a.wait_for(1, EXPECT_S)
    (req,) = assert_no_more(a, 1)
    assert ids_statuses([req]) == [(3402, 5)]
    assert_learned_webhook(req)


SKIP_METRICS = ("bodies_skipped_too_large", "bodies_skipped_not_json", "bodies_skipped_encoded",
                "bodies_skipped_buffer_full", "bodies_skipped_status", "bodies_skipped_malformed")


@pytest.mark.parametrize("case", ["502-html", "200-html-too-large"])
def test_a_skipped_registration_answer_counts_under_one_skip_reason(osmox, make_envoy, filter_wasm, case):
    """A registration's answer that is skipped is one body skipped, counted under one reason
    (a review found one counted twice): a non-2xx under `_status`, whatever its body; a 2xx
    that is not JSON under `_not_json`, found at its first chunk, before it grows past
    `watch.maxBodyBytes` (the headers, which would tell its length, are not read)."""
    cfg = learn_config()
    cfg["watch"] = {"maxBodyBytes": 1024}
    envoy = start_learning(make_envoy, osmox, cfg)
    if case == "502-html":
        osmox.set_response("POST", "/graphql", 502, body=b"<html>bad gateway</html>", content_type="text/html")
        want, status = "bodies_skipped_status", 502
    else:
        # All but the last byte first (1024: fits), then the last one (1025: too large).
        release = threading.Event()
        osmox.set_response("POST", "/graphql", 200, body=b"<html>" + b"x" * 1012 + b"</html>",
                           content_type="text/html", hold=release)
        want, status = "bodies_skipped_not_json", 200
        threading.Timer(0.5, release.set).start()  # the last byte comes as a chunk of its own
    r = envoy.client.graphql(register_mutation(1, "http://127.0.0.1:9/osmox/status"))
    assert r.status == status
    envoy.wait_metric("responses_watched", 1, timeout=EXPECT_S)
    envoy.wait_metric(want, 1, timeout=EXPECT_S)
    assert envoy.metric("registrations_learned") == 0
    assert {m: envoy.metric(m) for m in SKIP_METRICS} == {m: int(m == want) for m in SKIP_METRICS}


def test_a_gzip_body_whose_magic_is_split_across_chunks_is_counted_encoded(osmox, make_envoy, filter_wasm):
    """A body's first bytes decide whether it is copied, whatever chunks they come in: a gzip
    body whose first chunk is one byte of its magic is counted `_encoded` (a review found it
    counted `_not_json`, as only the first chunk was looked at). The upstream sends all but
    the last byte, then the last byte as a chunk of its own. Other splits (a blank first
    chunk) are checked natively, in `extract::response_check`."""
    envoy = start_learning(make_envoy, osmox)
    release = threading.Event()
    sent = osmox.set_response("POST", "/graphql", 200, body=b"\x1f\x8b", hold=release)
    threading.Timer(0.5, release.set).start()
    r = envoy.client.graphql(register_mutation(1, "http://127.0.0.1:9/osmox/status"))
    assert (r.status, r.body) == (200, sent)
    want = "bodies_skipped_encoded"
    envoy.wait_metric("responses_watched", 1, timeout=EXPECT_S)
    envoy.wait_metric(want, 1, timeout=EXPECT_S)
    assert {m: envoy.metric(m) for m in SKIP_METRICS} == {m: int(m == want) for m in SKIP_METRICS}


def test_a_compressed_rest_registration_answer_is_counted(osmox, make_envoy, filter_wasm):
    """A REST create OsmoX answers gzip-compressed cannot be learned (the filter does not
    decompress): `bodies_skipped_encoded` tells an operator why (a review found no metric
    moving)."""
    envoy = start_learning(make_envoy, osmox)
    url = "http://127.0.0.1:9/osmox/status"
    osmox.set_json("POST", "/webhooks", v8_webhook_row(3, 1, url), status=201, gzip=True)
    r = envoy.client.post("/webhooks", {"providerId": 1, "webhookUrl": url}, headers={"x-api-key": "k"})
    assert r.status == 201
    envoy.wait_metric("responses_watched", 1, timeout=EXPECT_S)
    assert envoy.metric("registrations_learned") == 0
    envoy.wait_metric("bodies_skipped_encoded", 1, timeout=EXPECT_S)


def test_a_delete_with_an_answer_over_max_body_bytes_is_learned(osmox, make_receiver, make_envoy, filter_wasm):
    """A delete teaches from its path whatever its answer's body: one over `watch.maxBodyBytes`
    (or one that finds the VM's buffer full) is not copied, and the delete is still learned
    (a review found it was not)."""
    a = make_receiver("A")
    cfg = learn_config()
    cfg["watch"] = {"maxBodyBytes": 1024}
    envoy = start_learning(make_envoy, osmox, cfg)
    register_graphql(envoy, osmox, 3, 1, a.url("/osmox/status"))
    envoy.wait_metric("registrations_learned", 1, timeout=EXPECT_S)
    osmox.set_response("DELETE", "/webhooks/3", 200, body=b"x" * 2048, content_type="text/plain")
    assert envoy.client.request("DELETE", "/webhooks/3", headers={"x-api-key": "k"}).status == 200
    envoy.wait_metric("registrations_removed", 1, timeout=EXPECT_S)


def test_learn_config_with_no_endpoints_and_original_dst_cluster_starts(osmox, make_envoy, filter_wasm):
    """`endpoints: []` is allowed with learning on (and refused without it)."""
    envoy = start_learning(make_envoy, osmox)
    assert envoy.metric("learned_endpoints") == 0
    wait_until(lambda: "learned endpoints via cluster egress" in envoy.logs(), EXPECT_S,
               what="the learn cluster logged at configure")
    bad = make_envoy(osmox.port, filter_config([], tick_ms=TICK_MS), use_lds=False, start=False, name="nolearn")
    log = bad.expect_start_failure(timeout=20)
    assert any("endpoints" in line for line in wasm_lines(log)), log[-3000:]



# -- GraphQL answers a client shapes ------------------------------------------------------
# A client chooses the keys of a GraphQL answer through aliases, and may send no query text at
# all (a persisted query): the filter must not sign what such a client chose.
def test_an_aliased_query_whose_hash_collides_with_a_plain_one_is_not_delivered(osmox, make_receiver, make_envoy,
                                                                                 filter_wasm):
    # A review computed these two bodies to share their FNV hash: while known requests were
    # matched on the hash alone, the aliased one was read with the plain one's facts, and
    # OsmoX's answer (channelType under `deliveryStatus`) went out as a signed webhook.
    plain = b'{"query":"query { notifications { notifications { id deliveryStatus } } } #I22CGgLkDXH"}'
    aliased = b'{"query":"query { notifications { notifications { id deliveryStatus: channelType } } } #NAviJWskT3L"}'
    crm = make_receiver("crm")
    envoy = start(make_envoy, osmox, filter_config([endpoint("crm", crm)], tick_ms=TICK_MS), {"crm": crm},
                  concurrency=1)
    json_type = {"content-type": "application/json"}
    osmox.set_json("POST", "/graphql", {"data": {"notifications": {"notifications": []}}})
    assert envoy.client.post("/graphql", plain, headers=json_type).status == 200
    osmox.set_json("POST", "/graphql",
                   {"data": {"notifications": {"notifications": [{"id": 5151, "deliveryStatus": 5}]}}})
    assert envoy.client.post("/graphql", aliased, headers=json_type).status == 200
    wait_metric_eq(envoy, "responses_watched", 2)
    assert_no_more(crm, 0, settle=2.0)
    assert envoy.metric("bodies_skipped_aliased") == 1, "the aliased answer was told apart by its own query"
    # Control: the same answer to the plain query is read and delivered, so the silence above
    # is the aliased query's, not that of a row too bare to deliver.
    assert envoy.client.post("/graphql", plain, headers=json_type).status == 200
    crm.wait_for(1, EXPECT_S)
    assert ids_statuses(assert_no_more(crm, 1)) == [(5151, 5)]


def test_aliased_graphql_answers_are_not_delivered(osmox, make_receiver, make_envoy, filter_wasm):
    crm = make_receiver("crm")
    secret = new_secret()
    cfg = filter_config([endpoint("crm", crm, secret=secret)], tick_ms=TICK_MS)
    envoy = start(make_envoy, osmox, cfg, {"crm": crm})
    # 1. `deliveryStatus: channelType`: OsmoX answers PENDING notification 5151's channel type
    #    (5, SMS_TWILIO) under the key `deliveryStatus`, which reads as SUCCESS.
    sent = osmox.set_json("POST", "/graphql", {"data": {"notifications": {"notifications": [
        {"id": 5151, "providerId": 1, "retryCount": 0, "deliveryStatus": 5}], "total": 1}}})
    r = envoy.client.graphql("query { notifications { notifications { id providerId retryCount "
                             "deliveryStatus: channelType } total } }")
    assert r.status == 200 and r.body == sent
    # 2. `payload: data`: the client's own payload holds a notification-shaped object.
    osmox.set_json("POST", "/graphql", {"data": {"notifications": {"notifications": [
        {"id": 1, "providerId": 1, "payload": {"meta": {"id": 999, "deliveryStatus": 5, "providerId": 7}}}],
        "total": 1}}})
    envoy.client.graphql("query { notifications { notifications { id providerId payload: data } } }")
    # 3. `updatedOn: createdBy`: a free-text "time" on notification 5151's PENDING row.
    osmox.set_json("POST", "/graphql", {"data": {"notifications": {"notifications": [
        {"id": 5151, "providerId": 1, "channelType": 1, "retryCount": 0, "deliveryStatus": 1,
         "updatedOn": "system"}], "total": 1}}})
    envoy.client.graphql("query { notifications { notifications { id providerId channelType retryCount "
                         "deliveryStatus updatedOn: createdBy } total } }")
    envoy.wait_metric("bodies_skipped_aliased", 3, timeout=EXPECT_S)
    assert_no_more(crm, 0)
    assert envoy.metric("events_detected") == 0
    # The real SUCCESS, polled by a client that renames nothing, is delivered once and signed.
    row = sample_row(5151, 1, 5, updated="2026-04-20T09:25:00.000Z")
    row.update(retryCount=0)
    poll_rows(envoy, osmox, [row])
    crm.wait_for(1, EXPECT_S)
    got = assert_no_more(crm, 1)
    assert ids_statuses(got) == [(5151, 5)]
    Webhook(secret).verify(got[0].body, got[0].headers)


def test_graphql_answers_without_the_query_text_are_not_delivered(osmox, make_receiver, make_envoy,
                                                                   filter_wasm):
    crm = make_receiver("crm")
    cfg = filter_config([endpoint("crm", crm)], tick_ms=TICK_MS)
    envoy = start(make_envoy, osmox, cfg, {"crm": crm})
    # OsmoX's answer to notification(notificationId: 5) for an archived row: the archive's id.
    archived = {"data": {"notification": {"id": 77, "providerId": 1, "deliveryStatus": 5}}}
    sent = osmox.set_json("POST", "/graphql", archived)
    # A persisted query sent by its hash only.
    apq = {"variables": {"n": 5}, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": "ab" * 32}}}
    r = envoy.client.post("/graphql", apq)
    assert r.status == 200 and r.body == sent
    # A request over the 64 KiB the filter reads of one.
    big = "query Q($n: Int!) { notification(notificationId: $n) { id providerId deliveryStatus } }\n" \
          + "#" + "x" * 70_000 + "\n"
    r = envoy.client.graphql(big, variables={"n": 5})
    assert r.status == 200 and r.body == sent
    envoy.wait_metric("bodies_skipped_no_query", 2, timeout=EXPECT_S)
    assert_no_more(crm, 0)
    # With the query text, the same answer is notification 5.
    envoy.client.graphql("query Q($n: Int!) { notification(notificationId: $n) { id providerId deliveryStatus } }",
                         variables={"n": 5})
    crm.wait_for(1, EXPECT_S)
    assert ids_statuses(assert_no_more(crm, 1)) == [(5, 5)]


def test_a_persisted_query_sent_by_hash_is_read_once_its_text_was_seen(osmox, make_receiver, make_envoy,
                                                                        filter_wasm):
    """Apollo's automatic persisted queries: a client sends a query by its SHA-256 alone, and
    its text (with the hash) only when the server asks. The filter keeps texts it sees with a
    matching hash, in shared data, and reads later hash-only polls with them; a text sent
    under another query's hash is not kept."""
    crm = make_receiver("crm")
    envoy = start(make_envoy, osmox, filter_config([endpoint("crm", crm)], tick_ms=TICK_MS), {"crm": crm})
    query = "query Poll { notifications { notifications { id providerId deliveryStatus updatedOn } } }"
    digest = hashlib.sha256(query.encode()).hexdigest()

    def page(id_, status, at):
        row = {"id": id_, "providerId": 7, "deliveryStatus": status, "updatedOn": at}
        return osmox.set_json("POST", "/graphql", {"data": {"notifications": {"notifications": [row]}}})

    def poll(body):
        r = envoy.client.post("/graphql", body)
        assert r.status == 200
        return r.body

    by_hash = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}}
    sent = page(6001, 5, "2026-04-20T09:15:01.000Z")
    assert poll(by_hash) == sent
    envoy.wait_metric("bodies_skipped_no_query", 1, timeout=EXPECT_S)
    assert_no_more(crm, 0)
    # The server did not know the hash: the client sends the text with it, once.
    assert poll({"query": query, **by_hash}) == sent
    crm.wait_for(1, EXPECT_S)
    envoy.wait_metric("persisted_queries_kept", 1, timeout=EXPECT_S)
    # Later polls send the hash alone, and are read.
    sent = page(6002, 5, "2026-04-20T09:16:01.000Z")
    assert poll(by_hash) == sent
    crm.wait_for(2, EXPECT_S)
    assert ids_statuses(assert_no_more(crm, 2)) == [(6001, 5), (6002, 5)]
    # An innocent text filed under the hash of a query that renames a key is not kept, so
    # that query sent by its hash stays unread.
    aliased = "{ notifications { notifications { id providerId deliveryStatus: channelType } } }"
    forged = hashlib.sha256(aliased.encode()).hexdigest()
    page(6003, 5, "2026-04-20T09:17:01.000Z")
    poll({"query": query, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": forged}}})
    skipped = envoy.metric("bodies_skipped_no_query")
    page(6004, 5, "2026-04-20T09:18:01.000Z")
    poll({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": forged}}})
    envoy.wait_metric("bodies_skipped_no_query", skipped + 1, timeout=EXPECT_S)
    assert envoy.metric("persisted_queries_kept") == 1
    crm.wait_for(3, EXPECT_S)  # 6003's: not only within the settle below, which a loaded machine can overrun
    got = assert_no_more(crm, 3)
    assert ids_statuses(got)[2] == (6003, 5), "the forged registration's own answer, read with its own text"


def test_a_persisted_registration_whose_answer_is_skipped_is_still_kept(osmox, make_receiver, make_envoy,
                                                                     filter_wasm):
    """A review: a registration's text is kept even when its own answer is skipped (too
    large here; equally a full VM buffer under load, a compressed answer): the server will
    not ask this client for the text again, so every later hash-only poll would be unread."""
    crm = make_receiver("crm")
    cfg = filter_config([endpoint("crm", crm)], tick_ms=TICK_MS,
                        watch={"graphqlPaths": ["/graphql"], "restPathPrefixes": ["/notifications"],
                               "maxBodyBytes": 1024})
    envoy = start(make_envoy, osmox, cfg, {"crm": crm})
    query = "query Poll { notifications { notifications { id providerId deliveryStatus updatedOn data } } }"
    digest = hashlib.sha256(query.encode()).hexdigest()
    by_hash = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}}

    def page(id_, status, at, pad=0):
        row = {"id": id_, "providerId": 7, "deliveryStatus": status, "updatedOn": at, "data": {"pad": "p" * pad}}
        return osmox.set_json("POST", "/graphql", {"data": {"notifications": {"notifications": [row]}}})

    # The registration's answer happens to be large (skipped: that is fine)...
    sent = page(7001, 5, "2026-04-20T09:15:01.000Z", pad=2000)
    r = envoy.client.post("/graphql", {"query": query, **by_hash})
    assert r.status == 200 and r.body == sent
    envoy.wait_metric("bodies_skipped_too_large", 1, timeout=EXPECT_S)
    # ...but later, small answers to the same query sent by hash should be read.
    sent = page(7002, 5, "2026-04-20T09:16:01.000Z")
    r = envoy.client.post("/graphql", by_hash)
    assert r.status == 200 and r.body == sent
    assert envoy.metric("persisted_queries_kept") == 1, (
        f"text not kept; bodies_skipped_no_query={envoy.metric('bodies_skipped_no_query')}")
    crm.wait_for(1, EXPECT_S)
    assert ids_statuses(assert_no_more(crm, 1)) == [(7002, 5)]


def test_a_hash_only_registration_is_not_learned(osmox, make_receiver, make_envoy, filter_wasm):
    """A review: learning reads a registration only from a text in the request itself. A
    hash-only `webhook(...)` mutation was learned from the kept text when its body happened to
    hold the bytes `webhook` (here in the URL variable), and not otherwise."""
    a, b = make_receiver("A"), make_receiver("B")
    envoy = start_learning(make_envoy, osmox)
    text = ("mutation R($u: String!) { webhook(createWebhookInput: {providerId: 1, webhookUrl: $u}) "
            "{ id providerId webhookUrl status } }")
    digest = hashlib.sha256(text.encode()).hexdigest()
    ext = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    url_a, url_b = a.url("/osmox/status"), b.url("/osmox/webhook")
    sent = osmox.set_json("POST", "/graphql", register_answer(3, 1, url_a))
    r = envoy.client.post("/graphql", {"query": text, "variables": {"u": url_a}, "extensions": ext})
    assert r.status == 200 and r.body == sent
    envoy.wait_metric("registrations_learned", 1, timeout=EXPECT_S)
    assert envoy.metric("persisted_queries_kept") == 1
    # The same mutation by hash alone, for another URL.
    sent = osmox.set_json("POST", "/graphql", register_answer(4, 1, url_b))
    r = envoy.client.post("/graphql", {"variables": {"u": url_b}, "extensions": ext})
    assert r.status == 200 and r.body == sent
    b.settle(1.0)
    assert envoy.metric("registrations_learned") == 1, "a hash-only registration was learned"


def test_a_persisted_text_the_server_refused_is_not_kept(osmox, make_receiver, make_envoy, filter_wasm):
    """A review: Apollo Server keeps a persisted query's text only once it parsed and
    validated; so does the filter (here a 400 to a text of control characters)."""
    crm = make_receiver("crm")
    envoy = start(make_envoy, osmox, filter_config([endpoint("crm", crm)], tick_ms=TICK_MS), {"crm": crm})
    junk = "\x01\x02\x03\x04"
    digest = hashlib.sha256(junk.encode()).hexdigest()
    registration = {"query": junk, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}}
    osmox.set_json("POST", "/graphql", {"errors": [{"message": "Syntax Error: Unexpected character"}]}, status=400)
    r = envoy.client.post("/graphql", registration)
    assert r.status == 400
    envoy.wait_metric("bodies_skipped_status", 1, timeout=EXPECT_S)  # the answer was read, and judged
    assert envoy.metric("persisted_queries_kept") == 0
    # Control: the very same text, answered 2xx, is kept; its status alone kept it out above.
    osmox.set_json("POST", "/graphql", {"data": {"notifications": {"notifications": []}}})
    assert envoy.client.post("/graphql", registration).status == 200
    envoy.wait_metric("persisted_queries_kept", 1, timeout=EXPECT_S)


def test_graphql_requests_osmox_may_read_otherwise_are_not_read(osmox, make_receiver, make_envoy, filter_wasm):
    """A second review: OsmoX's server also reads a form-encoded body (`query` from a pair the
    JSON reading hides in a string), a GET's query string, any `utf-*` charset and compressed
    bodies. Each ran a forged query while the JSON of the bytes showed a harmless one, so only a
    POST of JSON in UTF-8 is read."""
    crm = make_receiver("crm")
    envoy = start(make_envoy, osmox, filter_config([endpoint("crm", crm)], tick_ms=TICK_MS), {"crm": crm})
    row = {"id": 1042, "providerId": 7, "channelType": 3, "deliveryStatus": 5, "retryCount": 0,
           "updatedOn": "2026-04-20T09:20:19.000Z"}
    answer = {"data": {"notifications": {"notifications": [row]}}}
    plain = json.dumps({"query": "{ notifications { notifications { id providerId channelType deliveryStatus "
                                 "retryCount updatedOn } } }"}).encode()
    for method in ("POST", "GET"):
        osmox.set_json(method, "/graphql", answer)
    sent = []
    for method, headers in [
        ("POST", {"content-type": "application/x-www-form-urlencoded", "apollo-require-preflight": "1"}),
        ("POST", {"content-type": "application/json; charset=utf-7"}),
        ("POST", {"content-type": "application/json", "content-encoding": "gzip"}),
        ("GET", {"content-type": "application/json"}),
    ]:
        r = envoy.client.request(method, "/graphql", plain, headers=headers)
        assert r.status == 200
        sent.append(r.body)
    assert len(set(sent)) == 1 and json.loads(sent[0]) == answer
    envoy.wait_metric("bodies_skipped_no_query", 4, timeout=EXPECT_S)
    assert_no_more(crm, 0)
    # The same bytes as a JSON POST are read, and the row is delivered.
    envoy.client.request("POST", "/graphql", plain, headers={"content-type": "application/json; charset=utf-8"})
    crm.wait_for(1, EXPECT_S)
    assert ids_statuses(assert_no_more(crm, 1)) == [(1042, 5)]


def test_status_and_head_are_read_only_when_an_answer_calls_for_something(osmox, make_receiver, make_envoy,
                                                                          filter_wasm):
    """The filter reads a GraphQL request's body as a JSON POST's, and asks the answer's status
    and the request's headers only when the answer calls for something (four hostcalls fewer
    on a poll whose page moved). An answer holding only rows this VM took in already is
    passed over, whatever those say; an answer with news is still not read from an error
    answer, nor from a request OsmoX reads otherwise than as JSON. One worker, so that every
    request meets the VM that took the row in."""
    crm = make_receiver("crm")
    envoy = start(make_envoy, osmox, filter_config([endpoint("crm", crm)], tick_ms=TICK_MS), {"crm": crm},
                  concurrency=1)
    row = {"id": 1042, "providerId": 7, "channelType": 3, "deliveryStatus": 6, "retryCount": 0,
           "updatedOn": "2026-04-20T09:20:19.000Z"}
    query = json.dumps({"query": "{ notifications { notifications { id providerId channelType deliveryStatus "
                                 "retryCount updatedOn } total } }"}).encode()
    as_json = {"content-type": "application/json"}
    form = {"content-type": "application/x-www-form-urlencoded", "apollo-require-preflight": "1"}

    def page(rows, total):
        return {"data": {"notifications": {"notifications": rows, "total": total}}}

    osmox.set_json("POST", "/graphql", page([row], 1))
    envoy.client.request("POST", "/graphql", query, headers=as_json)
    crm.wait_for(1, EXPECT_S)
    counted = ("events_passed_over", "bodies_skipped_no_query", "bodies_skipped_status")
    before = {k: envoy.metric(k) for k in counted}
    seen = dict.fromkeys(counted, 0)

    def poll(rows, total, status, headers, counts_in):
        osmox.set_json("POST", "/graphql", page(rows, total), status=status)
        envoy.client.request("POST", "/graphql", query, headers=headers)
        seen[counts_in] += 1
        envoy.wait_metric(counts_in, before[counts_in] + seen[counts_in], timeout=EXPECT_S)
        assert {k: envoy.metric(k) - before[k] for k in counted} == seen

    # The page moved, the row did not: nothing to take in, so neither the status nor the
    # headers are asked, and an error answer or a form-encoded request is passed over.
    poll([row], 2, 503, as_json, "events_passed_over")
    poll([row], 3, 200, form, "events_passed_over")
    # The row's next state (OsmoX tried again, and failed again) is news: the status is asked,
    # and an error answer is not read; then the headers are, and a form-encoded request is
    # not read either.
    retried = dict(row, retryCount=1, updatedOn="2026-04-20T09:21:00.000Z")
    poll([retried], 3, 503, as_json, "bodies_skipped_status")
    poll([retried], 4, 200, form, "bodies_skipped_no_query")
    assert ids_statuses(assert_no_more(crm, 1)) == [(1042, 6)]
    # The same answer to a JSON POST is read and the new state delivered.
    envoy.client.request("POST", "/graphql", query, headers=as_json)
    crm.wait_for(2, EXPECT_S)
    assert ids_statuses(assert_no_more(crm, 2)) == [(1042, 6), (1042, 6)]


def test_skipped_or_aliased_webhook_field_is_not_learned(osmox, make_receiver, make_envoy, filter_wasm):
    a = make_receiver("A")
    envoy = start_learning(make_envoy, osmox)
    url = a.url("/attacker")
    # `webhook(...) @skip(if: true)` does not run; the answer is another field's, aliased.
    skipped = ('mutation { webhook(createWebhookInput: {providerId: 1, webhookUrl: "x"}) @skip(if: true) { id } '
               'r: createNotification(createNotificationInput: {providerId: 7, data: {}}) '
               '{ providerId webhookUrl: createdBy } }')
    sent = osmox.set_json("POST", "/graphql", {"data": {"r": {"providerId": 7, "webhookUrl": url}}})
    r = envoy.client.graphql(skipped)
    assert r.status == 200 and r.body == sent
    # A real `webhook` field whose answer renames another field to `webhookUrl`.
    osmox.set_json("POST", "/graphql", {"data": {"webhook": {"id": 9, "providerId": 7, "webhookUrl": url}}})
    envoy.client.graphql('mutation { webhook(createWebhookInput: {providerId: 7, webhookUrl: "x"}) '
                         '{ id providerId webhookUrl: createdBy } }')
    envoy.wait_metric("responses_watched", 2, timeout=EXPECT_S)
    # An aliased `webhook` field that renames nothing is still learned.
    good = a.url("/osmox/status")
    osmox.set_json("POST", "/graphql", {"data": {"w": {"id": 3, "providerId": 1, "webhookUrl": good, "status": 1}}})
    envoy.client.graphql(f'mutation {{ w: webhook(createWebhookInput: {{providerId: 1, webhookUrl: "{good}"}}) '
                         '{ id providerId webhookUrl status } }')
    envoy.wait_metric("registrations_learned", 1, timeout=EXPECT_S)
    assert envoy.metric("registrations_learned") == 1
    wait_metric_eq(envoy, "learned_endpoints", 1)


# ---- https endpoints: TLS is the cluster's, as README's deploy step 4 shows ----

TLS_HOST = "hooks.test"


def make_certificates(workdir) -> dict[str, str]:
    """A throwaway CA and a server certificate for TLS_HOST signed by it (openssl, bounded)."""
    paths = {k: str(workdir / f"{k}.pem") for k in ("ca", "ca_key", "cert", "key", "csr")}
    ext = workdir / "san.cnf"
    ext.write_text(f"subjectAltName=DNS:{TLS_HOST}\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in (
        ["req", "-x509", *ec, "-keyout", paths["ca_key"], "-out", paths["ca"], "-days", "2", "-subj", "/CN=test ca"],
        ["req", *ec, "-keyout", paths["key"], "-out", paths["csr"], "-subj", f"/CN={TLS_HOST}"],
        ["x509", "-req", "-in", paths["csr"], "-CA", paths["ca"], "-CAkey", paths["ca_key"], "-CAcreateserial",
         "-out", paths["cert"], "-days", "2", "-extfile", str(ext)],
    ):
        subprocess.run(["openssl", *cmd], check=True, capture_output=True, timeout=30)
    return paths


class TlsReceiver(Receiver):
    """A receiver that serves HTTPS with `certificates` and records the SNI each client sent."""

    def __init__(self, name: str, certificates: dict[str, str], **kw):
        super().__init__(name, **kw)
        self.server_names: list[str | None] = []
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certificates["cert"], certificates["key"])
        self.context.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)

    def wrap_listener(self, sock):
        return self.context.wrap_socket(sock, server_side=True)


def tls_cluster(name: str, port: int, ca: str, san: str) -> dict:
    """README's deploy step 4 cluster, pointed at the loopback receiver."""
    return {
        "name": name, "type": "STATIC", "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": HOST, "port_value": port}}}}]}]},
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": TLS_HOST,
            "common_tls_context": {"validation_context": {
                "trusted_ca": {"filename": ca},
                "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": san}}]}}}},
    }


@pytest.mark.parametrize("san,delivered", [(TLS_HOST, True), ("other.test", False)], ids=["verified", "wrong-name"])
def test_an_https_endpoint_goes_over_tls_when_its_cluster_has_the_readme_s_tls_socket(
        osmox, make_receiver, make_envoy, filter_wasm, tmp_path, san, delivered):
    certificates = make_certificates(tmp_path)
    receiver = make_receiver("tls", cls=TlsReceiver, certificates=certificates)
    cfg = filter_config([endpoint("tls", receiver, secret=new_secret())], tick_ms=TICK_MS)
    cfg["endpoints"][0]["url"] = f"https://{TLS_HOST}/hooks"
    envoy = make_envoy(osmox.port, cfg, extra_clusters=[
        tls_cluster(cfg["endpoints"][0]["cluster"], receiver.port, certificates["ca"], san)])
    # Envoy writes its log file behind the events: wait for the configure line.
    wait_until(lambda: "encrypted only if that cluster has a TLS transport_socket" in envoy.logs(), EXPECT_S,
               what="the configure log's note on https")
    poll_rows(envoy, osmox, [sample_row(1042, 1, 5)])
    if delivered:
        got = receiver.wait_for(1, EXPECT_S)
        assert ids_statuses(got) == [(1042, 5)]
        assert got[0].headers.get("host") == TLS_HOST
        assert set(receiver.server_names) == {TLS_HOST}
    else:
        # The receiver's certificate does not name the host the cluster expects: Envoy
        # refuses the connection, and the attempt fails instead of going out unverified.
        wait_metric_eq(envoy, "deliveries_failed", 1)
        assert receiver.count() == 0


def h2c_post_with_trailers(port: int, path: str, body: bytes, trailers: dict[str, str], timeout: float = 10.0) -> bytes:
    """A prior-knowledge HTTP/2 POST whose body is followed by request trailers (gRPC-style;
    no HTTP/2 library in the venv): returns the raw frames read until the stream ended."""
    import socket
    import struct

    def hpack(headers):  # literal header fields without indexing, no Huffman
        out = b""
        for k, v in headers:
            k, v = k.encode(), v.encode()
            assert len(k) < 127 and len(v) < 127
            out += b"\x00" + bytes([len(k)]) + k + bytes([len(v)]) + v
        return out

    def frame(kind, flags, stream, payload):
        return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

    with socket.create_connection((HOST, port), timeout=timeout) as s:
        head = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", f"{HOST}:{port}"),
                ("content-type", "application/json"), ("content-length", str(len(body)))]
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"")
                  + frame(1, 0x4, 1, hpack(head))            # HEADERS, END_HEADERS
                  + frame(0, 0 if trailers else 0x1, 1, body)  # DATA, END_STREAM unless trailers follow
                  + (frame(1, 0x5, 1, hpack(trailers.items())) if trailers else b""))  # END_HEADERS | END_STREAM
        got = b""
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            assert chunk, "connection closed before the response ended"
            buf += chunk
            while len(buf) >= 9:
                n = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + n:
                    break
                kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                payload, buf = buf[9:9 + n], buf[9 + n:]
                if kind == 4 and not flags & 1:
                    s.sendall(frame(4, 1, 0, b""))  # SETTINGS ACK
                if kind == 0 and stream == 1:
                    got += payload
                if stream == 1 and kind in (0, 1) and flags & 1:
                    return got
        raise AssertionError(f"the response did not end within {timeout} s")


@pytest.mark.parametrize("trailers", [{}, {"x-trace": "1"}], ids=["control", "trailers"])
def test_a_persisted_registration_sent_with_request_trailers_is_kept(osmox, make_receiver, make_envoy, filter_wasm,
                                                                     trailers):
    """A request followed by trailers never sees end_of_stream in the body callback; the
    trailers callback says its body is whole, so the text of a persisted query it registers is
    kept (a review found it was not, and every later hash-only poll of that query unread)."""
    crm = make_receiver("crm")
    envoy = start(make_envoy, osmox, filter_config([endpoint("crm", crm)], tick_ms=TICK_MS), {"crm": crm})
    query = "query Poll { notifications { notifications { id providerId deliveryStatus updatedOn } } }"
    digest = hashlib.sha256(query.encode()).hexdigest()
    by_hash = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}}
    row = {"id": 6101, "providerId": 7, "deliveryStatus": 5, "updatedOn": "2026-04-20T09:15:01.000Z"}
    sent = osmox.set_json("POST", "/graphql", {"data": {"notifications": {"notifications": [row]}}})
    body = json.dumps({"query": query, **by_hash}).encode()
    assert h2c_post_with_trailers(envoy.listener_port, "/graphql", body, trailers) == sent
    crm.wait_for(1, EXPECT_S)  # the registration's own answer is read (its text is in the request)
    # The count reaches Envoy at the VM's next tick, which can come after the webhook arrived:
    # wait for it (bounded) rather than for a fixed while.
    with contextlib.suppress(AssertionError):  # should it never move, the assertion says why
        envoy.wait_metric("persisted_queries_kept", 1, timeout=EXPECT_S)
    assert envoy.metric("persisted_queries_kept") == 1, "a registration followed by trailers was not kept"


def dfp_cluster(preresolve: list[tuple[str, int]], name: str = "egress") -> dict:
    """A dynamic_forward_proxy cluster (HTTP/1.1), as the README's learn section advises for
    hostnames; `preresolve` are the (host, port) pairs its DNS cache resolves at start."""
    return {
        "name": name,
        "connect_timeout": "1s",
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {
            "name": "envoy.clusters.dynamic_forward_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig",
                # Plain HTTP on loopback; a real one keeps auto_sni and auto_san_validation.
                "allow_insecure_cluster_options": True,
                "dns_cache_config": {
                    "name": f"{name}_dns", "dns_lookup_family": "V4_ONLY",
                    "preresolve_hostnames": [{"address": h, "port_value": p} for h, p in preresolve],
                },
            },
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {}},
            }
        },
    }


def test_a_learned_hostname_is_delivered_through_a_dynamic_forward_proxy_cluster(osmox, make_receiver, make_envoy,
                                                                                 filter_wasm):
    """README's route for learned hostnames: a `dynamic_forward_proxy` egress cluster, no
    `originalDstHeader`. `localhost` stands for a partner's hostname (allowed with
    `allowPrivate`, as every loopback name is refused without it). A host the cluster's DNS
    cache preresolved takes the first attempt; Envoy refuses the first call to any other
    (the cache only starts resolving it then), and the retry delivers, as README says."""
    a, b = make_receiver("A"), make_receiver("B")
    cfg = filter_config([], tick_ms=TICK_MS, learn={
        "enabled": True, "cluster": "egress", "allowPrivate": True,
        "allowHosts": [f"localhost:{a.port}", f"localhost:{b.port}"]})
    envoy = make_envoy(osmox.port, cfg, extra_clusters=[dfp_cluster([("localhost", a.port)])])
    register_graphql(envoy, osmox, 3, 1, f"http://localhost:{a.port}/osmox/status")
    register_graphql(envoy, osmox, 4, 2, f"http://localhost:{b.port}/osmox/status")
    envoy.wait_metric("registrations_learned", 2, timeout=EXPECT_S)
    poll_rows(envoy, osmox, [sample_row(3101, 1, 5), sample_row(3102, 2, 5)])
    (req,) = a.wait_for(1, EXPECT_S)
    assert_learned_webhook(req)
    assert req.headers["host"] == f"localhost:{a.port}"
    assert ids_statuses([req]) == [(3101, 5)]
    # The learned endpoint's default backoff: the retry comes about 5 s later.
    (req,) = b.wait_for(1, EXPECT_S + 5)
    assert_learned_webhook(req)
    assert ids_statuses([req]) == [(3102, 5)]
    refused = [line for line in wasm_lines(envoy.logs()) if "could not dispatch to cluster egress" in line]
    assert len(refused) == 1 and "msg_3102_5_" in refused[0], refused
    envoy.wait_metric("deliveries_succeeded", 2, timeout=EXPECT_S)
    assert envoy.metric("deliveries_succeeded_after_retry") == 1


@pytest.mark.parametrize("buffered", [False, True], ids=["bare", "buffer_filter_in_front"])
def test_slow_request_bodies_hold_no_copy_room_behind_a_buffer_filter(osmox, make_receiver, make_envoy,
                                                                       filter_wasm, buffered):
    """A client on a watched GraphQL path that sends most of a request body and then waits
    holds what the filter copied of it (up to 64 KiB a request) within the VM's
    `watch.maxBufferedBytes` until its stream ends, and answers that find no room are not
    read (README Security, slow clients). With Envoy's `buffer` filter ahead of this one, the
    filter sees a request body only once it is whole, so slow requests hold none of its room."""
    crm = make_receiver("crm")
    max_body = 4096
    cfg = filter_config([endpoint("crm", crm)], tick_ms=TICK_MS,
                        watch={"graphqlPaths": ["/graphql"], "restPathPrefixes": ["/notifications"],
                               "maxBodyBytes": max_body, "maxBufferedBytes": 1 << 20})
    before = [{"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": 1 << 20}}] if buffered else []
    envoy = make_envoy(osmox.port, cfg, clusters=clusters_for(cfg, {"crm": crm}), concurrency=1,
                       filters_before=before)
    row = load_sample("rest-create-notification-response.v8.json")
    row["delivery_status"] = 5
    sent = osmox.set_json("GET", f"/notifications/{row['id']}", row)
    assert len(sent) <= max_body

    # Sixteen slow requests, each with 64 KiB of a body that never ends (the most the filter
    # copies of a request): when the filter copies them, they take all of the VM's 1 MiB.
    slow = []
    received = "http.ingress.downstream_cx_rx_bytes_total"
    with contextlib.ExitStack() as stack:
        for body_bytes in [64 * 1024] * 16:
            s = stack.enter_context(socket.create_connection((HOST, envoy.listener_port), timeout=10))
            head = (f"POST /graphql HTTP/1.1\r\nhost: osmox\r\ncontent-type: application/json\r\n"
                    f"content-length: {body_bytes + 1000}\r\n\r\n").encode()
            s.sendall(head + b"{" + b" " * (body_bytes - 1))
            slow.append(len(head) + body_bytes)
            # Envoy counts bytes as it reads them and hands them to the filters in the same
            # callback, on its one worker: once counted, they were offered to the filter.
            envoy.wait_stat(received, sum(slow), timeout=EXPECT_S)
        r = envoy.client.get(f"/notifications/{row['id']}")
        assert r.status == 200 and r.body == sent
        if buffered:
            assert crm.wait_for(1, EXPECT_S)[0].json()["id"] == row["id"]
            assert envoy.metric("bodies_skipped_buffer_full") == 0
        else:
            envoy.wait_metric("bodies_skipped_buffer_full", 1, timeout=EXPECT_S)
            assert crm.settle(SETTLE_S) == []
    # The slow requests are gone and their room given back: the same answer is read now.
    if not buffered:
        r = envoy.client.get(f"/notifications/{row['id']}")
        assert r.status == 200 and r.body == sent
        assert crm.wait_for(1, EXPECT_S)[0].json()["id"] == row["id"]
