#!/usr/bin/env python3
"""Unauthenticated memory pressure on a running hookgate, from loopback only; prints the server's RSS growth.

    bench/flood.py PID PORT heads    # 250 connections, each sending 120 KB of a request head that never ends
    bench/flood.py PID PORT bodies   # 200 requests promising 1 MiB, each stalled 64 KiB short

Every loop is bounded; the sockets are held for 3 s, then closed.
"""
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    pid, port, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    before = rss_kib(pid)
    held, refused = [], 0
    for _ in range(250 if mode == "heads" else 200):
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.settimeout(2)
        try:
            if mode == "heads":
                s.sendall(b"POST /webhooks/demo HTTP/1.1\r\nhost: x\r\n")
                for i in range(120):
                    s.sendall(b"x-pad-%d: %s\r\n" % (i, b"a" * 990))
            else:
                s.sendall(b"POST /webhooks/demo HTTP/1.1\r\nhost: x\r\ncontent-length: 1048576\r\n\r\n")
                chunk = b"a" * 65536
                for _ in range(15):
                    s.sendall(chunk)
        except OSError:
            refused += 1
        held.append(s)
    time.sleep(3)
    peak = rss_kib(pid)
    for s in held:
        s.close()
    print(f"{mode}: {len(held)} connections, {refused} cut or refused by the server; "
          f"RSS {before // 1024} MiB -> {peak // 1024} MiB (+{(peak - before) // 1024} MiB)")


if __name__ == "__main__":
    main()
