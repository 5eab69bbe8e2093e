#!/usr/bin/env python3
"""Keep only the exports of a wasm module that the filter answers.

The proxy-wasm SDK exports every callback of the ABI, network and gRPC ones included, so
each one keeps its dispatch code alive through any dead-code pass. Envoy looks every
callback up by name and skips the ones a module lacks, exactly as the SDK's defaults would
answer them (continue, nothing to do), without entering the VM. Dropping the exports this
HTTP filter never uses spares each watched stream the callbacks it would ignore, and lets
`wasm-opt` remove their code (14 KB after `wasm-opt -Oz`, the size the benchmark judges). The
shipped module is the linker's output with its export list trimmed: that code is still in
it, unreachable (V8 compiles wasm functions lazily, so it costs bytes, not time).

    wasm_exports.py IN OUT          write IN with only FILTER_EXPORTS exported to OUT
    wasm_exports.py --http3 IN OUT  the same with HTTP3_EXPORTS: the module for HTTP/3 listeners
    wasm_exports.py --list IN       print IN's export names, one per line

A name in FILTER_EXPORTS that IN does not export is an error (the SDK changed), as is a
module whose section framing or export section does not parse: the build stops instead of
shipping a module Envoy cannot run. Other sections are copied as they are, unvalidated.
"""

import sys

# What Envoy must be able to call: the WASI reactor's start, the allocator the host copies
# into, the VM and root callbacks (start, configure, timer, queue, HTTP callouts, done,
# delete) and the HTTP stream callbacks the filter implements (request trailers only end a
# body; Envoy calls that callback only for requests that have them). Request and response
# headers (it reads what it needs of them in on_log: src/host/http.rs), response trailers,
# network streams, gRPC and foreign functions are not among them.
FILTER_EXPORTS = frozenset(
    {
        "memory",
        "_initialize",
        "proxy_abi_version_0_2_1",
        "proxy_on_memory_allocate",
        "proxy_on_vm_start",
        "proxy_on_configure",
        "proxy_on_context_create",
        "proxy_on_tick",
        "proxy_on_queue_ready",
        "proxy_on_http_call_response",
        "proxy_on_done",
        "proxy_on_delete",
        "proxy_on_request_body",
        "proxy_on_request_trailers",
        "proxy_on_response_body",
        "proxy_on_log",
    }
)

# The module for HTTP/3 listeners also keeps the request's head as it passes: Envoy ends a
# QUIC stream without `on_log`, and in `on_done` no header can be read (src/host/http.rs).
HTTP3_EXPORTS = FILTER_EXPORTS | {"proxy_on_request_headers"}

MAGIC = b"\0asm\x01\0\0\0"
EXPORT_SECTION = 7


class ModuleError(Exception):
    pass


def read_u32(data: bytes, at: int) -> tuple[int, int]:
    """A LEB128 u32 at `at`: its value and the offset after it."""
    value = shift = 0
    for _ in range(5):
        if at >= len(data):
            raise ModuleError("truncated LEB128 number")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at
    raise ModuleError("LEB128 number longer than a u32")


def write_u32(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sections(module: bytes):
    """(id, payload) for each section, in order."""
    if not module.startswith(MAGIC):
        raise ModuleError("not a wasm 1.0 module")
    at = len(MAGIC)
    while at < len(module):
        section_id = module[at]
        size, start = read_u32(module, at + 1)
        end = start + size
        if end > len(module):
            raise ModuleError(f"section {section_id} runs past the end of the module")
        yield section_id, module[start:end]
        at = end


def exports(payload: bytes):
    """(name, encoded entry) for each export of an export section's payload."""
    count, at = read_u32(payload, 0)
    for _ in range(count):
        length, name_at = read_u32(payload, at)
        kind_at = name_at + length
        if kind_at >= len(payload):
            raise ModuleError("truncated export entry")
        _, end = read_u32(payload, kind_at + 1)  # the kind byte, then the index
        yield payload[name_at:kind_at].decode("utf-8"), payload[at:end]
        at = end
    if at != len(payload):
        raise ModuleError("bytes after the last export entry")


def export_names(module: bytes) -> list[str]:
    return [name for sid, payload in sections(module) if sid == EXPORT_SECTION
            for name, _ in exports(payload)]


def keep_exports(module: bytes, keep: frozenset[str]) -> bytes:
    out = bytearray(MAGIC)
    seen: set[str] = set()
    for section_id, payload in sections(module):
        if section_id == EXPORT_SECTION:
            kept = [entry for name, entry in exports(payload) if name in keep]
            seen.update(name for name, _ in exports(payload))
            payload = write_u32(len(kept)) + b"".join(kept)
        out += bytes([section_id]) + write_u32(len(payload)) + payload
    missing = sorted(keep - seen)
    if missing:
        raise ModuleError(f"the module does not export {', '.join(missing)}")
    return bytes(out)


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 2 and argv[0] == "--list":
            with open(argv[1], "rb") as f:
                print("\n".join(export_names(f.read())))
            return 0
        exports = FILTER_EXPORTS
        if argv[:1] == ["--http3"]:
            exports, argv = HTTP3_EXPORTS, argv[1:]
        if len(argv) != 2:
            print(__doc__.strip().splitlines()[0], file=sys.stderr)
            print("usage: wasm_exports.py [--http3] IN OUT | --list IN", file=sys.stderr)
            return 2
        with open(argv[0], "rb") as f:
            trimmed = keep_exports(f.read(), exports)
        with open(argv[1], "wb") as f:
            f.write(trimmed)
        return 0
    except (ModuleError, UnicodeDecodeError, OSError) as e:
        source = argv[1] if argv[0] == "--list" else argv[0]
        print(f"wasm_exports.py: {source}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
