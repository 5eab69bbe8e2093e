"""End-to-end test of an endpoint's `rateLimit` on a real Envoy with two workers: the webhooks
to a rate-limited endpoint arrive no faster than its bucket allows, every one of them once,
while an endpoint without a limit is not held back by it.

Needs dist/osmox-webhook-filter.wasm (./build.sh).
"""
from __future__ import annotations

from harness import METRIC_PREFIX, endpoint, filter_config
from retry_helpers import notification_row
from test_endpoint_metrics import wait_counts
from test_retries import observe, start

SUCCESS = 5
PER_SECOND, BURST = 5, 2
COUNT = 12
# The bucket lets BURST go at once, then one every 1 / PER_SECOND s: 2.0 s for the rest.
SPAN_S = (COUNT - BURST) / PER_SECOND
# Arrivals are timed at the receiver, after the network: allow them that much jitter.
JITTER_S = 0.2


def test_a_rate_limited_endpoint_gets_its_webhooks_at_the_configured_pace(osmox, make_receiver, make_envoy,
                                                                          filter_wasm):
    slow, fast = make_receiver("slow"), make_receiver("fast")
    cfg = filter_config([endpoint("slow", slow, rateLimit={"perSecond": PER_SECOND, "burst": BURST}),
                         endpoint("fast", fast)], tick_ms=50)
    envoy = start(make_envoy, osmox, cfg, {"slow": slow, "fast": fast})
    observe(envoy, osmox, [notification_row(4000 + i, SUCCESS) for i in range(COUNT)])

    fast_got = fast.wait_for(COUNT, 10.0)
    slow_got = slow.wait_for(COUNT, 10.0 + SPAN_S)
    slow_got = slow.settle(1.0)
    assert len(fast_got) == COUNT and len(slow_got) == COUNT, (len(fast_got), len(slow_got))
    ids = [r.headers["webhook-id"] for r in slow_got]
    assert len(set(ids)) == COUNT, "each webhook once"

    times = sorted(r.time for r in slow_got)
    span = times[-1] - times[0]
    assert span >= SPAN_S - JITTER_S, f"{COUNT} webhooks within {span:.2f} s: {times}"
    for i, t in enumerate(times):
        in_second = sum(1 for u in times[i:] if u < t + 1.0 - JITTER_S)
        assert in_second <= BURST + PER_SECOND, f"{in_second} webhooks in a second from {t}: {times}"
    # The endpoint without a limit was not held behind the one with it.
    assert max(r.time for r in fast_got) < times[-1]

    per = f"{METRIC_PREFIX}endpoint."
    want = {per + "slow.deliveries_succeeded": COUNT, per + "fast.deliveries_succeeded": COUNT,
            per + "fast.deliveries_rate_limited": 0}
    assert wait_counts(envoy, want) == want
    assert envoy.stats().get(per + "slow.deliveries_rate_limited", 0) > 0
