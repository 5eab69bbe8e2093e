"""pytest fixtures around tests/e2e/harness.py.

Each test gets its own tmp dir, free loopback ports and its own processes, all stopped in
teardown (by PID), so `pytest -n 2` is safe. When a test fails, the tail of each of its
Envoy logs is printed in the teardown section of the report.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import EnvoyProcess, OsmoxStub, Receiver  # noqa: E402

PROBE_DIR = Path(__file__).resolve().parent / "fixtures" / "probe_filter"


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


@pytest.fixture
def osmox():
    """A started OsmoX stand-in (scripted responses, recorded requests)."""
    stub = OsmoxStub().start()
    try:
        yield stub
    finally:
        stub.stop(keep_port=False)


@pytest.fixture
def make_receiver():
    """Factory: make_receiver(name='receiver', default=200, cls=Receiver) -> started receiver
    (cls may be a Receiver subclass)."""
    made: list[Receiver] = []

    def make(name: str = "receiver", cls: type[Receiver] = Receiver, **kw) -> Receiver:
        r = cls(name, **kw).start()
        made.append(r)
        return r

    try:
        yield make
    finally:
        for r in made:
            r.stop(keep_port=False)


@pytest.fixture
def receiver(make_receiver):
    return make_receiver("receiver")


@pytest.fixture
def make_envoy(tmp_path, request):
    """Factory: make_envoy(upstream_port, filter_config=None, start=True, **EnvoyProcess kw)."""
    made: list[EnvoyProcess] = []

    def make(upstream_port: int, filter_config=None, start: bool = True, **kw) -> EnvoyProcess:
        kw.setdefault("name", f"envoy{len(made)}")
        e = EnvoyProcess(tmp_path / kw["name"], upstream_port, filter_config, **kw)
        made.append(e)
        if start:
            e.start()
        return e

    try:
        yield make
    finally:
        failed = _failed(request)
        for e in made:
            e.stop()
            if failed:
                tail = "\n".join(e.logs().splitlines()[-150:])
                sys.stderr.write(f"\n===== {e.name} (pid {e.pid}) log tail: {e.log_path}\n{tail}\n")


@pytest.fixture(scope="session")
def filter_wasm() -> Path:
    """The built filter (dist/osmox-webhook-filter.wasm or $OSMOX_FILTER_WASM)."""
    p = harness.filter_wasm_path()
    if not p.exists():
        pytest.fail(f"filter wasm not found at {p}: run ./build.sh first", pytrace=False)
    return p


@pytest.fixture(scope="session")
def http3_wasm() -> Path:
    """The module for HTTP/3 listeners (dist/osmox-webhook-filter-http3.wasm, or
    $OSMOX_FILTER_HTTP3_WASM): the same code, the request-headers callback exported."""
    p = Path(os.environ.get("OSMOX_FILTER_HTTP3_WASM",
                            harness.REPO_ROOT / "dist" / "osmox-webhook-filter-http3.wasm")).resolve()
    if not p.exists():
        pytest.fail(f"HTTP/3 filter wasm not found at {p}: run ./build.sh first", pytrace=False)
    return p


def _build_wasm(what: str, crate_dir: Path, target: Path, name: str, *args: str) -> Path:
    """Build a wasm32 release module once into its own target dir, lock-protected against
    parallel xdist workers; fails the test (not skips it) when the build fails."""
    target.mkdir(parents=True, exist_ok=True)
    wasm = target / "wasm32-wasip1" / "release" / name
    with open(target / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            r = subprocess.run(
                ["cargo", "build", "--release", "--target", "wasm32-wasip1", "--quiet", *args],
                cwd=crate_dir, env=dict(os.environ, CARGO_TARGET_DIR=str(target)),
                capture_output=True, text=True, timeout=600,
            )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if r.returncode != 0 or not wasm.exists():
        pytest.fail(f"building {what} failed:\n{r.stderr[-3000:]}", pytrace=False)
    return wasm


@pytest.fixture(scope="session")
def fault_wasm(tmp_path_factory) -> Path:
    """The filter built with the `fault-injection` feature: a request whose body carries
    `x-osmox-filter-fault` traps the VM."""
    built = _build_wasm("the fault-injection filter", harness.REPO_ROOT, harness.REPO_ROOT / "target" / "e2e-fault",
                        "osmox_webhook_filter.wasm", "--features", "fault-injection")
    # Trimmed as build.sh trims the shipped module, so the faults hit the same shape of module.
    # In this session's own temp dir: another xdist worker may be writing its own copy.
    trimmed = tmp_path_factory.mktemp("fault-wasm") / "osmox_webhook_filter.wasm"
    r = subprocess.run([sys.executable, str(harness.REPO_ROOT / "build" / "wasm_exports.py"), str(built), str(trimmed)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"trimming the fault-injection filter failed: {r.stderr}", pytrace=False)
    return trimmed


@pytest.fixture(scope="session")
def probe_wasm(tmp_path_factory) -> Path:
    """A tiny proxy-wasm module (tests/e2e/fixtures/probe_filter). It refuses any
    configuration containing "reject"."""
    target = Path(os.environ.get("PROBE_TARGET_DIR", harness.REPO_ROOT / "target" / "e2e-probe"))
    return _build_wasm("the probe filter", PROBE_DIR, target, "probe_filter.wasm")
