#!/usr/bin/env python3
"""Sorts the samples of `perf script` (a pinned gateway, frame-pointer stacks) into the parts of a
request, and prints each part's share and its CPU microseconds per request.

Each sample goes to the first frame, from the leaf up, that a rule below claims: a sample in `memcpy`
called by hyper's request parser is hyper's; one in the allocator is the allocator's, whoever called it;
one in the kernel is its system call's.

Usage: perf script -i perf.data | profile.py --requests N --cpu-seconds S
"""

import argparse
import collections
import re
import sys

# (part, pattern on the demangled symbol), tried in order on each frame.
RULES = [
    ("allocations (mimalloc)", re.compile(r"^_?mi_|^__rust_(alloc|dealloc|realloc)|^__rdl_|^alloc::alloc::")),
    ("HMAC and SHA-256 (signature, replay guard)", re.compile(r"^(<)?(hmac|sha2|sha1|digest|block_buffer)::")),
    ("event id", re.compile(r"hookgate::verify::event_id|^(<)?serde_json::")),
    ("verify: headers, hex, compare", re.compile(r"hookgate::verify::|^(<)?hex::|^(<)?subtle::")),
    ("dedup: the layer and the store", re.compile(r"hookgate::dedup::|foldhash|hashbrown")),
    ("Redis client", re.compile(r"hookgate::redis_client|^(<)?redis::|^(<)?combine::")),
    ("metrics", re.compile(r"^(<)?metrics(_exporter_prometheus|_util)?::|hookgate::metrics")),
    ("tracing", re.compile(r"^(<)?tracing(_core|_subscriber)?::")),
    ("tower-http layers", re.compile(r"^(<)?tower_http::")),
    ("downstream: pool and hyper client",
     re.compile(r"hookgate::forward::|proto::h1::role::Client|^(<)?hyper::client::|^(<)?hyper_util::client::")),
    ("hyper server: parse, encode, connection",
     re.compile(r"proto::h1::role::Server|^(<)?hyper::server::|^(<)?hyper_util::server::|hookgate::server::")),
    ("runtime: scheduling, wake-ups, timers", re.compile(r"^(<)?tokio::(runtime|sync|task|time|util)::")),
    ("I/O driver (tokio, mio)", re.compile(r"^(<)?(tokio::(io|net)|mio)::")),
    ("hookgate: stack, peer, respond (other)", re.compile(r"hookgate::|^(<)?tower::|^(<)?http::|^(<)?bytes::")),
]

FRAME = re.compile(r"^\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$")


def kernel_part(frames):
    """The system call a kernel sample is under, named by the C library's wrapper that entered the kernel
    (the kernel's own entry functions are often inlined away)."""
    for symbol, dso in frames:
        if dso.startswith("[kernel"):
            continue
        name = re.sub(r"\+0x[0-9a-f]+$", "", symbol).lower()
        if "epoll" in name:
            return "kernel: epoll"
        if re.search(r"writev|write|send", name):
            return "kernel: socket writes (loopback delivery included)"
        if re.search(r"readv|read|recv", name):
            return "kernel: socket reads"
        break
    return "kernel: page faults and interrupts"


def own_path(symbol):
    """The path of the function itself: `<A<X> as Trait<Y>>::call` becomes `A::call`, and generic arguments
    go, so that a rule matches where the code is, never a type it is generic over (a layer's
    `Service<hookgate::verify::event_id::Event>` is the layer's code, not the event id's)."""
    if symbol.startswith("<"):
        depth = 0
        for close, ch in enumerate(symbol):
            depth += (ch == "<") - (ch == ">")
            if depth == 0:
                break
        inner, rest = symbol[1:close], symbol[close + 1:]
        depth = 0
        for i, ch in enumerate(inner):
            depth += (ch == "<") - (ch == ">")
            if depth == 0 and inner.startswith(" as ", i):
                inner = inner[:i]
                break
        symbol = inner + rest
    kept, depth = [], 0
    for ch in symbol:
        if ch == "<":
            depth += 1
        elif ch == ">" and depth > 0:
            depth -= 1
        elif depth == 0:
            kept.append(ch)
    return "".join(kept)


def part_of(frames):
    if not frames:
        return "unknown"
    if frames[0][1].startswith("[kernel"):
        return kernel_part(frames)
    for symbol, _ in frames:
        symbol = own_path(re.sub(r"\+0x[0-9a-f]+$", "", symbol))
        for part, pattern in RULES:
            if pattern.search(symbol):
                return part
    return "other (libc, unresolved)"


def samples(lines):
    frames = []
    for line in lines:
        if not line.strip():
            if frames:
                yield frames
            frames = []
            continue
        m = FRAME.match(line)
        if m:
            frames.append((m.group(1), m.group(2)))
    if frames:
        yield frames


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=float, required=True)
    parser.add_argument("--cpu-seconds", type=float, required=True)
    args = parser.parse_args()
    counts = collections.Counter(part_of(f) for f in samples(sys.stdin))
    total = sum(counts.values())
    if total == 0 or args.requests <= 0:
        sys.exit("profile: no samples or no requests")
    per_request_us = args.cpu_seconds / args.requests * 1e6
    print(f"{int(args.requests)} requests, {per_request_us:.1f} µs of gateway CPU each, {total} samples\n")
    print("| part | share | µs / request |")
    print("|---|---|---|")
    for part, n in counts.most_common():
        print(f"| {part} | {100 * n / total:.1f} % | {per_request_us * n / total:.2f} |")


if __name__ == "__main__":
    main()
