#!/usr/bin/env bash
# Build and check osmox-webhook-filter.
#
#   ./build.sh               build dist/osmox-webhook-filter.wasm (release, wasm32-wasip1)
#   ./build.sh test          build, cargo test, envoy --mode validate envoy/*.yaml, e2e tests (pytest -n 2)
#   ./build.sh demo [--keep] build, then run the demo story (OsmoX stand-in :3000, receiver :8089,
#                            Envoy :10000, admin :9901); --keep leaves it running until Ctrl-C
#   ./build.sh bench         the benchmark: plain Envoy against Envoy with the filter, delivery,
#                            memory, size, core micro-benchmarks; writes BENCHMARKS.md
#
# Environment: ENVOY_BIN overrides the Envoy binary (default .venv/bin/envoy);
# CARGO_TARGET_DIR is respected; PYTEST_ARGS adds arguments to the e2e pytest run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

TARGET=wasm32-wasip1
CRATE_WASM=osmox_webhook_filter.wasm
ARTEFACT=dist/osmox-webhook-filter.wasm
ARTEFACT_HTTP3=dist/osmox-webhook-filter-http3.wasm
VENV="$ROOT/.venv"
REQUIREMENTS="$ROOT/tests/e2e/requirements.txt"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

ensure_rust_target() {
    command -v cargo >/dev/null || die "cargo not found (install Rust via rustup)"
    if command -v rustup >/dev/null; then
        if ! rustup target list --installed | grep -qx "$TARGET"; then
            log "rustup target add $TARGET"
            rustup target add "$TARGET"
        fi
    fi
}

ensure_venv() {
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating $VENV"
        python3 -m venv "$VENV"
    fi
    # Reinstall only when requirements.txt changed (stamp = its sha256).
    local want have stamp="$VENV/.e2e-requirements.sha256"
    want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
    have="$(cat "$stamp" 2>/dev/null || true)"
    if [[ "$want" != "$have" ]]; then
        log "pip install -r tests/e2e/requirements.txt"
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQUIREMENTS"
        echo "$want" > "$stamp"
    fi
}

envoy_bin() { echo "${ENVOY_BIN:-$VENV/bin/envoy}"; }

size_of() { stat -c %s "$1"; }

build() {
    ensure_rust_target
    log "cargo build --release --target $TARGET"
    cargo build --release --target "$TARGET"
    local target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
    local built="$target_dir/$TARGET/release/$CRATE_WASM"
    [[ -f "$built" ]] || die "expected $built after the build (is the crate a cdylib?)"
    mkdir -p dist
    command -v python3 >/dev/null || die "python3 not found (needed to trim the module's exports)"
    # Only the callbacks the filter answers stay exported (see build/wasm_exports.py).
    python3 build/wasm_exports.py "$built" "$ARTEFACT.tmp"
    mv -f "$ARTEFACT.tmp" "$ARTEFACT"
    log "$ARTEFACT: $(size_of "$ARTEFACT") bytes"
    # The same code for HTTP/3 listeners, with the request-headers callback kept (README, Limits).
    python3 build/wasm_exports.py --http3 "$built" "$ARTEFACT_HTTP3.tmp"
    mv -f "$ARTEFACT_HTTP3.tmp" "$ARTEFACT_HTTP3"
    log "$ARTEFACT_HTTP3: $(size_of "$ARTEFACT_HTTP3") bytes"
    if command -v wasm-opt >/dev/null; then
        # Size report only; the artefact stays the cargo output.
        local tmp
        tmp="$(mktemp --suffix=.wasm)"
        if wasm-opt -Oz --strip-debug --strip-producers "$ARTEFACT" -o "$tmp" 2>/dev/null; then
            log "(wasm-opt -Oz would give $(size_of "$tmp") bytes; not used)"
        fi
        rm -f "$tmp"
    fi
}

validate_envoy_configs() {
    local envoy f vlog
    envoy="$(envoy_bin)"
    vlog="$(mktemp)"
    [[ -x "$envoy" ]] || command -v "$envoy" >/dev/null || die "envoy not found at $envoy"
    shopt -s nullglob
    for f in envoy/*.yaml; do
        log "envoy --mode validate $f"
        # From the repo root: the configs name the wasm as dist/... relative to the cwd.
        "$envoy" --mode validate -c "$f" -l warning --disable-hot-restart >"$vlog" 2>&1 \
            || { cat "$vlog" >&2; rm -f "$vlog"; die "envoy rejected $f"; }
    done
    rm -f "$vlog"
    shopt -u nullglob
}

cmd_test() {
    build
    log "cargo test"
    cargo test
    ensure_venv
    validate_envoy_configs
    log "pytest -n 2 tests/e2e"
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pytest -n 2 tests/e2e -p no:cacheprovider ${PYTEST_ARGS:-}
}

cmd_bench() {
    if ! command -v wrk >/dev/null || ! command -v wasm-opt >/dev/null; then
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
            log "apt-get install wrk binaryen"
            apt-get install -y -q wrk binaryen >/dev/null 2>&1 \
                || { apt-get update -q >/dev/null && apt-get install -y -q wrk binaryen >/dev/null; }
        fi
    fi
    build
    ensure_venv
    ENVOY_BIN="$(envoy_bin)" exec "$VENV/bin/python" "$ROOT/tests/bench/run.py" "$@"
}

cmd_demo() {
    build
    ensure_venv
    ENVOY_BIN="$(envoy_bin)" exec "$VENV/bin/python" "$ROOT/tests/e2e/demo.py" "$@"
}

case "${1:-build}" in
    build) build ;;
    test) cmd_test ;;
    demo) shift; cmd_demo "$@" ;;
    bench) shift; cmd_bench "$@" ;;
    -h|--help|help) sed -n '2,12p' "$0" ;;
    *) die "unknown command '$1' (build | test | demo [--keep] | bench)" ;;
esac
