//! Native micro-benchmarks of the filter's pure core: extraction, request facts, the
//! unchanged-response hash, routing, signing and the dedupe path of intake.
//!
//! No bench framework: `std::time::Instant` loops and `std::hint::black_box`. Run with
//!
//!     cargo bench --bench core
//!
//! after adding to Cargo.toml:
//!
//!     [[bench]]
//!     name = "core"
//!     path = "tests/bench/core.rs"
//!     harness = false
//!
//! Prints a table; with OSMOX_BENCH_JSON set, also one `BENCHROW {json}` line per row
//! (tests/bench/run.py reads those).
//! Samples are read from tests/fixtures/osmox (or /work/shared/osmox-samples); the large
//! pages are generated here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use osmox_webhook_filter::config::Config;
use osmox_webhook_filter::delivery::ledger::Ledger;
use osmox_webhook_filter::delivery::outcome::AttemptResponse;
use osmox_webhook_filter::delivery::sender::{Dispatch, Io, Sender};
use osmox_webhook_filter::events::{Memory, RecentResponses};
use osmox_webhook_filter::extract::{
    extract, graphql_request_facts, read, QueryFacts, RequestFacts, WatchKind,
};
use osmox_webhook_filter::intake;
use osmox_webhook_filter::metrics::CountingMetrics;
use osmox_webhook_filter::routing::matches;
use osmox_webhook_filter::signing::{sign, Secret};
use osmox_webhook_filter::store::{MemStore, Store};

/// Each measurement runs at least this long (after a short warm-up).
const TARGET: Duration = Duration::from_millis(700);

/// The configuration shipped in envoy/envoy-demo.yaml, minus nothing that matters here.
const CONFIG: &str = r#"{
  "endpoints": [{
    "name": "demo",
    "url": "http://127.0.0.1:8089/webhooks/osmox?src=demo",
    "cluster": "webhook_demo",
    "deliveryStatuses": ["PENDING", "IN_PROGRESS", "AWAITING_CONFIRMATION",
                         "QUEUED_CONFIRMATION", "SUCCESS", "FAILED"],
    "timeoutMs": 5000,
    "headers": {"x-osmox-env": "demo"},
    "secret": "whsec_ZGVtby1zZWNyZXQtbm90LWZvci1wcm9kdWN0aW9uIQ==",
    "retry": {"maxAttempts": 5, "initialDelayMs": 1000, "multiplier": 2.0,
              "maxDelayMs": 60000, "jitter": 0.2}
  }],
  "watch": {"graphqlPaths": ["/graphql"], "restPathPrefixes": ["/notifications"],
            "maxBodyBytes": 8388608},
  "limits": {"maxPending": 10000, "maxRemembered": 65536},
  "tickMs": 100
}"#;

const QUERY: &str = r#"{"query":"query Poll { notifications(options: {limit: 10, offset: 0}) { notifications { id providerId providerChainId channelType applicationId deliveryStatus status retryCount data result createdBy updatedBy createdOn updatedOn notificationSentOn } total offset limit } }","variables":{}}"#;

/// A compact GraphQL notification row (the WhatsApp sample), ~800 bytes.
fn graphql_row(id: u64, status: u64) -> String {
    format!(
        r#"{{"id":{id},"providerId":3,"providerChainId":null,"channelType":3,"applicationId":2,"deliveryStatus":{status},"status":1,"retryCount":0,"data":{{"messaging_product":"whatsapp","to":"15555550147","type":"template","template":{{"namespace":"a1b2c3d4_e5f6_4a7b_8c9d_0e1f2a3b4c5d","name":"order_shipped","language":{{"policy":"deterministic","code":"en"}},"components":[{{"type":"body","parameters":[{{"type":"text","text":"Jane"}},{{"type":"text","text":"ORD-88213"}}]}}]}}}},"result":{{"result":{{"apiId":"7c1d2e3f-4a5b-11ef-9c6d-0242ac110002","message":"message(s) queued","messageUuid":["7c20a1b2-4a5b-11ef-9c6d-0242ac110002"]}}}},"createdBy":"ops-dashboard","updatedBy":"ops-dashboard","createdOn":"2026-04-20T09:20:11.730Z","updatedOn":"2026-04-20T09:20:15.004Z","notificationSentOn":null}}"#
    )
}

fn graphql_page(rows: usize, first_id: u64) -> Vec<u8> {
    let body: Vec<String> = (0..rows as u64)
        .map(|i| graphql_row(first_id + i, 1 + i % 6))
        .collect();
    format!(
        r#"{{"data":{{"notifications":{{"notifications":[{}],"total":{rows},"offset":0,"limit":{rows}}}}}}}"#,
        body.join(",")
    )
    .into_bytes()
}

fn graphql_page_of(bytes: usize) -> (Vec<u8>, usize) {
    let one = graphql_row(1_000_000, 5).len() + 1;
    let rows = bytes.div_ceil(one);
    (graphql_page(rows, 1_000_000), rows)
}

fn sample(name: &str) -> Option<(PathBuf, Vec<u8>)> {
    let root = Path::new(option_env!("CARGO_MANIFEST_DIR").unwrap_or("."));
    let dirs = [
        root.join("tests/fixtures/osmox"),
        PathBuf::from("tests/fixtures/osmox"),
        PathBuf::from("/work/shared/osmox-samples"),
    ];
    dirs.iter()
        .map(|d| d.join(name))
        .find_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
}

/// A store holding every key the filter creates at configure time, as in Envoy.
fn prepared_store(config: &Config) -> MemStore {
    let store = MemStore::new();
    for (k, v) in Ledger::new(config.limits.max_pending).keys() {
        store.set(&k, v, None).unwrap();
    }
    for k in Memory::new(config.limits.max_remembered).keys() {
        store.set(&k, b"", None).unwrap();
    }
    for k in Sender::keys(&config.endpoints) {
        store.set(&k, b"{}", None).unwrap();
    }
    store
}

/// A network that accepts every request at once and hands out tokens.
#[derive(Default)]
struct NullNet {
    next: u32,
    bytes: usize,
}

impl Dispatch for NullNet {
    fn dispatch(
        &mut self,
        _cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        _timeout_ms: u64,
    ) -> Result<u32, String> {
        self.bytes += black_box(headers.len() + body.len());
        self.next = self.next.wrapping_add(1);
        Ok(self.next)
    }
}

struct Row {
    name: String,
    ns_per_op: f64,
    bytes: usize,
    items: usize,
    note: String,
}

/// Time `f` (one operation per call): warm up, then double the batch until TARGET passes.
fn measure(mut f: impl FnMut()) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < TARGET / 10 {
        f();
    }
    let mut batch: u64 = 1;
    loop {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        let e = t.elapsed();
        if e >= TARGET {
            return e.as_nanos() as f64 / batch as f64;
        }
        batch = if e.as_nanos() == 0 {
            batch * 16
        } else {
            let want = (TARGET.as_nanos() as f64 * 1.2 / e.as_nanos() as f64 * batch as f64) as u64;
            want.clamp(batch * 2, batch * 100)
        };
    }
}

fn main() {
    let config = Config::from_json(CONFIG.as_bytes(), &|_| None).expect("bench config");
    let endpoint = &config.endpoints[0];
    // A read query that renames nothing, as a poll's.
    let none = RequestFacts::Plain(QueryFacts::default());
    let mut rows: Vec<Row> = Vec::new();

    // -- extraction -----------------------------------------------------------------
    // What every unrecognised response costs: the parse and the notifications found in it.
    // Webhook bodies are written later, per delivery; `written` adds them all, as a response
    // that is all new events costs.
    let mut extract_row =
        |name: &str, kind: WatchKind, body: &[u8], note: String, written: bool| {
            let found = extract(kind, body, &none)
                .expect("sample parses")
                .notifications
                .len();
            let ns = measure(|| {
                if written {
                    black_box(extract(black_box(kind), black_box(body), black_box(&none)).ok());
                } else {
                    let x = read(black_box(kind), black_box(body), black_box(&none), |x| {
                        black_box(x.notifications.len())
                    });
                    black_box(x.ok());
                }
            });
            rows.push(Row {
                name: name.to_string(),
                ns_per_op: ns,
                bytes: body.len(),
                items: found,
                note,
            });
        };
    if let Some((p, b)) = sample("graphql-notifications-query-response.json") {
        extract_row(
            "extract graphql sample",
            WatchKind::Graphql,
            &b,
            format!("{} (pretty-printed)", p.display()),
            false,
        );
    }
    let page10 = graphql_page(10, 5001);
    extract_row(
        "extract graphql 10 rows",
        WatchKind::Graphql,
        &page10,
        "compact; rows like Envoy scenario 3's, not the same page".into(),
        false,
    );
    extract_row(
        "extract graphql 10 rows, all bodies",
        WatchKind::Graphql,
        &page10,
        "the same page with every webhook body written, as when all its rows are new events".into(),
        true,
    );
    let (page1m, _) = graphql_page_of(1_000_000);
    extract_row(
        "extract graphql 1 MB",
        WatchKind::Graphql,
        &page1m,
        "generated".into(),
        false,
    );
    for (file, label) in [
        (
            "rest-notifications-list-response.v8.json",
            "extract rest v8 list",
        ),
        (
            "rest-create-notification-response.v8.json",
            "extract rest v8 row",
        ),
        (
            "rest-notifications-list-response.real.json",
            "extract rest list (real)",
        ),
    ] {
        if let Some((p, b)) = sample(file) {
            extract_row(label, WatchKind::Rest, &b, p.display().to_string(), false);
        }
    }

    // -- request facts (runs on every watched GraphQL response) ----------------------
    let ns = measure(|| {
        black_box(graphql_request_facts(black_box(QUERY.as_bytes())));
    });
    rows.push(Row {
        name: "graphql request facts".into(),
        ns_per_op: ns,
        bytes: QUERY.len(),
        items: 1,
        note: "the poll's query text".into(),
    });

    // -- unchanged-response hash (runs on every watched response) --------------------
    for (label, body) in [
        ("response hash 8 KB", &page10),
        ("response hash 1 MB", &page1m),
    ] {
        let ns = measure(|| {
            black_box(RecentResponses::hash(
                black_box(QUERY.as_bytes()),
                black_box(&[&body[..]]),
            ));
        });
        rows.push(Row {
            name: label.into(),
            ns_per_op: ns,
            bytes: body.len() + QUERY.len(),
            items: 1,
            note: "RecentResponses::hash(request, body)".into(),
        });
    }

    // -- routing ---------------------------------------------------------------------
    let notes = extract(WatchKind::Graphql, &page10, &none)
        .unwrap()
        .notifications;
    let ns = measure(|| {
        let mut n = 0usize;
        for x in &notes {
            n += usize::from(matches(black_box(endpoint), black_box(x)));
        }
        black_box(n);
    }) / notes.len() as f64;
    rows.push(Row {
        name: "routing::matches".into(),
        ns_per_op: ns,
        bytes: 0,
        items: 1,
        note: "per notification, one endpoint".into(),
    });

    // -- signing ---------------------------------------------------------------------
    let secret = Secret::parse("whsec_ZGVtby1zZWNyZXQtbm90LWZvci1wcm9kdWN0aW9uIQ==").unwrap();
    let body = notes[0].webhook_body().into_owned();
    let ns = measure(|| {
        black_box(sign(
            black_box(&secret),
            black_box("msg_5001_1_0123456789abcdef"),
            black_box(1_780_000_000),
            black_box(body.as_bytes()),
        ));
    });
    rows.push(Row {
        name: "signing::sign".into(),
        ns_per_op: ns,
        bytes: body.len(),
        items: 1,
        note: "HMAC-SHA256 + base64, one webhook body".into(),
    });

    // -- intake: a response whose notifications were all seen before ------------------
    let store = prepared_store(&config);
    let metrics = CountingMetrics::default();
    let first = intake::take_in(
        None,
        &config,
        &config.endpoints,
        Memory::new(config.limits.max_remembered),
        &store,
        &metrics,
        &notes,
        1_000,
        7,
    );
    assert_eq!(
        first.wake.len(),
        notes.len(),
        "first sight places every event"
    );
    // The dedupe memory's answer for each of `notes`, asked every time (no per-VM pass-over).
    let duplicates = |store: &MemStore| {
        measure(|| {
            let r = intake::take_in(
                None,
                black_box(&config),
                &config.endpoints,
                Memory::new(config.limits.max_remembered),
                store,
                &metrics,
                black_box(&notes),
                2_000,
                7,
            );
            black_box(r);
        })
    };
    let ns = duplicates(&store);
    rows.push(Row {
        name: "intake, all duplicates".into(),
        ns_per_op: ns,
        bytes: 0,
        items: notes.len(),
        note: "10 notifications, in-memory store (Envoy: shared data)".into(),
    });

    // -- the same, once the dedupe memory is full, as after a while in service ---------
    // Twice `maxRemembered` other notifications, remembered only (no endpoint takes them):
    // every bucket then holds its most, and each observation reads a full one.
    let others: Vec<_> = (0..2 * u64::from(config.limits.max_remembered))
        .map(|i| {
            let mut n = notes[0].clone();
            n.id = 10_000_000 + i;
            n
        })
        .collect();
    for batch in others.chunks(1000) {
        let mem = Memory::new(config.limits.max_remembered);
        intake::take_in(None, &config, &[], mem, &store, &metrics, batch, 1_500, 7);
    }
    let ns = duplicates(&store);
    rows.push(Row {
        name: "intake, all duplicates, full memory".into(),
        ns_per_op: ns,
        bytes: 0,
        items: notes.len(),
        note: format!(
            "the same, after {} other notifications filled every bucket",
            others.len()
        ),
    });

    // -- intake: new events (first sight), one at a time -----------------------------
    // A ledger large enough that no event is dropped during the measurement.
    let big = CONFIG.replace(
        r#""limits": {"maxPending": 10000, "maxRemembered": 65536}"#,
        r#""limits": {"maxPending": 300000, "maxRemembered": 1000000}"#,
    );
    assert_ne!(big, CONFIG);
    let config = Config::from_json(big.as_bytes(), &|_| None).expect("bench config");
    let store = prepared_store(&config);
    let mut next_id = 10_000_000u64;
    let template = notes[0].clone();
    let ns = measure(|| {
        let mut n = template.clone();
        n.id = next_id;
        next_id += 1;
        let r = intake::take_in(
            None,
            &config,
            &config.endpoints,
            Memory::new(config.limits.max_remembered),
            &store,
            &metrics,
            std::slice::from_ref(&n),
            3_000,
            next_id,
        );
        black_box(r);
    });
    rows.push(Row {
        name: "intake, new event".into(),
        ns_per_op: ns,
        bytes: template.webhook_body().len(),
        items: 1,
        note: format!(
            "dedupe + ledger slot + body, in-memory store; {} events, maxPending {}, dropped {}",
            next_id - 10_000_000,
            config.limits.max_pending,
            metrics.get(osmox_webhook_filter::metrics::Metric::DeliveriesDropped)
        ),
    });

    // -- one whole delivery: intake of a new event, wake, dispatch (signed), 200 reply --
    let store = prepared_store(&config);
    let mut sender = Sender::new(1, Ledger::new(config.limits.max_pending), 256);
    let mut net = NullNet::default();
    let ok = AttemptResponse {
        num_headers: 3,
        status: Some(200),
        retry_after: None,
        local_failure: None,
    };
    let before = metrics.get(osmox_webhook_filter::metrics::Metric::DeliveriesSucceeded);
    let mut cycles = 0u64;
    let ns = measure(|| {
        let mut n = template.clone();
        n.id = next_id;
        next_id += 1;
        cycles += 1;
        let now = 4_000 + cycles;
        let intake = intake::take_in(
            None,
            &config,
            &config.endpoints,
            Memory::new(config.limits.max_remembered),
            &store,
            &metrics,
            std::slice::from_ref(&n),
            now,
            next_id,
        );
        for slot in intake.wake {
            let mut io = Io {
                store: &store,
                metrics: &metrics,
                net: &mut net,
                now_ms: now,
            };
            sender.wake(&config, &config.endpoints, &mut io, slot);
        }
        let token = net.next;
        let mut io = Io {
            store: &store,
            metrics: &metrics,
            net: &mut net,
            now_ms: now,
        };
        sender.on_response(&config, &config.endpoints, &mut io, token, &ok);
    });
    let delivered =
        metrics.get(osmox_webhook_filter::metrics::Metric::DeliveriesSucceeded) - before;
    rows.push(Row {
        name: "whole delivery, core only".into(),
        ns_per_op: ns,
        bytes: template.webhook_body().len(),
        items: 1,
        note: format!(
            "intake + wake + sign + dispatch + 200 reply, in-memory store; {delivered} of {cycles} delivered"
        ),
    });

    // -- print ------------------------------------------------------------------------
    println!(
        "{:<28} {:>12} {:>12} {:>10} {:>12}  note",
        "benchmark", "time/op", "ops/s", "MB/s", "per item"
    );
    for r in &rows {
        let per_op = if r.ns_per_op >= 1e6 {
            format!("{:.2} ms", r.ns_per_op / 1e6)
        } else if r.ns_per_op >= 1e3 {
            format!("{:.2} µs", r.ns_per_op / 1e3)
        } else {
            format!("{:.1} ns", r.ns_per_op)
        };
        let mbs = if r.bytes > 0 {
            format!("{:.1}", r.bytes as f64 / r.ns_per_op * 1e3)
        } else {
            "-".into()
        };
        let per_item = if r.items > 1 {
            format!("{:.2} µs", r.ns_per_op / r.items as f64 / 1e3)
        } else {
            "-".into()
        };
        println!(
            "{:<28} {:>12} {:>12.0} {:>10} {:>12}  {} ({} B, {} items)",
            r.name,
            per_op,
            1e9 / r.ns_per_op,
            mbs,
            per_item,
            r.note,
            r.bytes,
            r.items
        );
    }
    if std::env::var_os("OSMOX_BENCH_JSON").is_none() {
        return;
    }
    for r in &rows {
        println!(
            "BENCHROW {{\"name\":{:?},\"ns_per_op\":{:.1},\"bytes\":{},\"items\":{},\"mb_per_s\":{},\"note\":{:?}}}",
            r.name,
            r.ns_per_op,
            r.bytes,
            r.items,
            if r.bytes > 0 {
                format!("{:.2}", r.bytes as f64 / r.ns_per_op * 1e3)
            } else {
                "null".into()
            },
            r.note
        );
    }
}
