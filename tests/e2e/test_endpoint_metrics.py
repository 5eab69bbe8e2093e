"""End-to-end tests of the per-endpoint metrics: each configured endpoint's own counters and
histograms (attempt duration, delivery delay), in `/stats` and, with the tag rule the deploy
guide gives, as a Prometheus `endpoint` label.

Needs dist/osmox-webhook-filter.wasm (./build.sh).
"""
from __future__ import annotations

import re
import time

from harness import REPO_ROOT, METRIC_PREFIX, endpoint, filter_config
from retry_helpers import notification_row
from test_retries import EXPECT_S, observe, start

SUCCESS = 5
RETRY = {"maxAttempts": 3, "initialDelayMs": 200, "multiplier": 1.0, "maxDelayMs": 200, "jitter": 0}


def shipped_stats_tags() -> list[dict]:
    """The `stats_tags` of envoy/envoy-demo.yaml, as the deploy guide tells users to copy them."""
    text = (REPO_ROOT / "envoy" / "envoy-demo.yaml").read_text()
    name = re.search(r"stats_tags:\n\s*- tag_name: (\S+)\n\s*regex: '([^']+)'", text)
    assert name, "envoy/envoy-demo.yaml has no stats_tags rule"
    return [{"tag_name": name.group(1), "regex": name.group(2)}]


def wait_counts(envoy, want: dict[str, int], timeout: float = EXPECT_S) -> dict[str, int]:
    """Wait until every stat in `want` (full names) has its value; the last values read."""
    deadline = time.monotonic() + timeout
    while True:
        stats = envoy.stats()
        got = {name: stats.get(name, 0) for name in want}
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_each_endpoint_counts_its_own_attempts_durations_and_delays(osmox, make_receiver,
                                                                    make_envoy, filter_wasm):
    crm, billing = make_receiver("crm"), make_receiver("billing")
    crm.script([503])  # the first attempt to crm fails; its retry and the rest succeed
    # A name with a dot: the tag rule must keep it whole.
    cfg = filter_config([endpoint("crm", crm, retry=RETRY),
                         endpoint("billing.v2", billing, cluster="webhook_billing", retry=RETRY)],
                        tick_ms=50)
    # Buckets of the deploy's choosing for the delivery delay (README, Metrics).
    delay_buckets = {"match": {"suffix": "delivery_delay_ms"}, "buckets": [100, 3600000, 86400000]}
    envoy = start(make_envoy, osmox, cfg, {"crm": crm, "billing.v2": billing},
                  bootstrap_extra={"stats_config": {"stats_tags": shipped_stats_tags(),
                                                    "histogram_bucket_settings": [delay_buckets]},
                                   "stats_flush_on_admin": True})
    observe(envoy, osmox, [notification_row(3100, SUCCESS), notification_row(3101, SUCCESS)])
    crm.wait_for(3, EXPECT_S)
    billing.wait_for(2, EXPECT_S)

    def per(name: str, metric: str) -> str:
        return f"{METRIC_PREFIX}endpoint.{name}.{metric}"

    want = {
        per("crm", "deliveries_sent"): 3,
        per("crm", "deliveries_succeeded"): 2,
        per("crm", "deliveries_failed"): 1,
        per("crm", "retries_scheduled"): 1,
        per("crm", "deliveries_succeeded_after_retry"): 1,
        per("crm", "deliveries_exhausted"): 0,
        per("billing.v2", "deliveries_sent"): 2,
        per("billing.v2", "deliveries_succeeded"): 2,
        per("billing.v2", "deliveries_failed"): 0,
        per("billing.v2", "retries_scheduled"): 0,
        METRIC_PREFIX + "deliveries_sent": 5,
        METRIC_PREFIX + "deliveries_succeeded": 4,
        METRIC_PREFIX + "deliveries_failed": 1,
    }
    assert wait_counts(envoy, want) == want
    # Every per-endpoint counter is defined at configure, so a dashboard sees zeros, not gaps.
    assert per("billing.v2", "circuits_opened") in envoy.stats()

    # Prometheus: one family per metric, the endpoint as a label (the shipped tag rule), and
    # the attempt-duration histogram with one sample per attempt answered.
    prom = envoy.admin("GET", "/stats/prometheus").body.decode()
    samples = dict(re.findall(r"^(osmox_webhook_\S+) (\S+)$", prom, re.M))
    assert samples.get('osmox_webhook_endpoint_deliveries_sent{endpoint="crm"}') == "3", prom
    assert samples.get('osmox_webhook_endpoint_deliveries_sent{endpoint="billing.v2"}') == "2", prom
    assert samples.get('osmox_webhook_endpoint_deliveries_failed{endpoint="crm"}') == "1", prom
    assert samples.get('osmox_webhook_endpoint_attempt_duration_ms_count{endpoint="crm"}') == "3", prom
    assert samples.get('osmox_webhook_endpoint_attempt_duration_ms_count{endpoint="billing.v2"}') == "2", prom
    assert samples.get("osmox_webhook_attempt_duration_ms_count{}") == "5", prom
    # The delivery delay: one sample per webhook delivered, none for the failed attempt. crm's
    # first delivery waited for its retry, 200 ms after the 503, so at most one of its two
    # delays is within 100 ms.
    delay = "osmox_webhook_endpoint_delivery_delay_ms"
    assert samples.get(f'{delay}_count{{endpoint="crm"}}') == "2", prom
    assert samples.get(f'{delay}_count{{endpoint="billing.v2"}}') == "2", prom
    assert samples.get("osmox_webhook_delivery_delay_ms_count{}") == "4", prom
    within_100 = samples.get(f'{delay}_bucket{{endpoint="crm",le="100"}}')
    assert within_100 in ("0", "1"), prom
    assert samples.get(f'{delay}_bucket{{endpoint="crm",le="86400000"}}') == "2", prom
