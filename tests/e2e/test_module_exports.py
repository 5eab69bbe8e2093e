"""The shipped module exports only the callbacks the filter answers (build/wasm_exports.py),
and the trimming step refuses what it cannot trim safely."""
from __future__ import annotations

import importlib.util
import re
import sys

import pytest

import harness

_spec = importlib.util.spec_from_file_location("wasm_exports", harness.REPO_ROOT / "build" / "wasm_exports.py")
wasm_exports = importlib.util.module_from_spec(_spec)
sys.modules["wasm_exports"] = wasm_exports
_spec.loader.exec_module(wasm_exports)


def u32(n: int) -> bytes:
    return wasm_exports.write_u32(n)


def module_with_exports(*names: str) -> bytes:
    """A valid module: one type `() -> ()`, one empty function, exported under each name."""
    def section(sid: int, payload: bytes) -> bytes:
        return bytes([sid]) + u32(len(payload)) + payload
    types = section(1, u32(1) + b"\x60\x00\x00")
    funcs = section(3, u32(1) + u32(0))
    entries = b"".join(u32(len(n)) + n.encode() + b"\x00" + u32(0) for n in names)
    export = section(7, u32(len(names)) + entries)
    code = section(10, u32(1) + u32(2) + b"\x00\x0b")
    return wasm_exports.MAGIC + types + funcs + export + code


def test_the_shipped_module_exports_exactly_the_filters_callbacks(filter_wasm):
    names = wasm_exports.export_names(filter_wasm.read_bytes())
    assert sorted(names) == sorted(wasm_exports.FILTER_EXPORTS)
    assert len(names) == len(set(names))
    for unused in ("proxy_on_downstream_data", "proxy_on_grpc_receive", "proxy_on_response_trailers",
                   "proxy_on_request_headers", "proxy_on_response_headers"):
        assert unused not in names


def callbacks_implemented() -> set[str]:
    """The exports the SDK dispatches to each `on_…` method the host shell implements."""
    names = set()
    for source in (harness.REPO_ROOT / "src" / "host").glob("*.rs"):
        names.update(re.findall(r"\bfn (on_\w+)\s*\(", source.read_text()))
    exports = set()
    for name in names:
        http = re.fullmatch(r"on_http_(request|response)_(headers|body|trailers|metadata)", name)
        exports.add("proxy_on_" + (f"{http[1]}_{http[2]}" if http else name.removeprefix("on_")))
    return exports


def test_every_callback_the_shell_implements_stays_exported():
    implemented = callbacks_implemented()
    # The walk finds the callbacks it must: a broken pattern would pass vacuously.
    assert {"proxy_on_log", "proxy_on_request_body", "proxy_on_configure", "proxy_on_tick"} <= implemented
    dropped = implemented - wasm_exports.HTTP3_EXPORTS
    assert not dropped, f"implemented in src/host but not exported (build/wasm_exports.py): {sorted(dropped)}"
    # The one the module for HTTP/1.1 and HTTP/2 leaves out on purpose (README, Limits).
    assert implemented - wasm_exports.FILTER_EXPORTS == {"proxy_on_request_headers"}


def test_the_http3_module_differs_only_by_the_request_headers_callback(filter_wasm, http3_wasm):
    names = wasm_exports.export_names(http3_wasm.read_bytes())
    assert sorted(names) == sorted(wasm_exports.HTTP3_EXPORTS)
    assert set(names) - set(wasm_exports.export_names(filter_wasm.read_bytes())) == {"proxy_on_request_headers"}


def test_trimming_keeps_the_listed_exports_and_every_other_section_byte_for_byte():
    extra = ("proxy_on_new_connection", "proxy_on_grpc_close")
    source = module_with_exports(*sorted(wasm_exports.FILTER_EXPORTS), *extra)
    trimmed = wasm_exports.keep_exports(source, wasm_exports.FILTER_EXPORTS)
    assert sorted(wasm_exports.export_names(trimmed)) == sorted(wasm_exports.FILTER_EXPORTS)
    before = [s for s in wasm_exports.sections(source) if s[0] != wasm_exports.EXPORT_SECTION]
    after = [s for s in wasm_exports.sections(trimmed) if s[0] != wasm_exports.EXPORT_SECTION]
    assert before == after
    # Nothing to drop: the module comes back unchanged.
    untouched = module_with_exports(*sorted(wasm_exports.FILTER_EXPORTS))
    assert wasm_exports.keep_exports(untouched, wasm_exports.FILTER_EXPORTS) == untouched


def test_trimming_refuses_a_module_missing_a_callback_or_malformed(tmp_path):
    short = module_with_exports(*sorted(wasm_exports.FILTER_EXPORTS - {"proxy_on_log"}))
    with pytest.raises(wasm_exports.ModuleError, match="proxy_on_log"):
        wasm_exports.keep_exports(short, wasm_exports.FILTER_EXPORTS)
    whole = module_with_exports(*sorted(wasm_exports.FILTER_EXPORTS))
    for bad in (b"not wasm", whole[:-3], whole[:8] + b"\x07\xff\xff\xff\xff\xff"):
        with pytest.raises(wasm_exports.ModuleError):
            wasm_exports.keep_exports(bad, wasm_exports.FILTER_EXPORTS)
    # The command line fails loudly and writes nothing.
    src, out = tmp_path / "in.wasm", tmp_path / "out.wasm"
    src.write_bytes(short)
    assert wasm_exports.main([str(src), str(out)]) == 1
    assert not out.exists()
