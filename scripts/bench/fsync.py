#!/usr/bin/env python3
"""Measures how long this disk takes to make an append durable: 4 KiB
written at the end of a file, then fdatasync, 300 times, in DIR. Prints one
JSON line in `stompbox bench --json`'s shape, for report.py.

    fsync.py DIR
"""

import json
import os
import statistics
import sys
import time


def main(directory):
    path = os.path.join(directory, "fsync-probe")
    block = b"\x01" * 4096
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(300):
            os.write(fd, block)
            start = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()
    print(json.dumps({
        "scenario": "fsync", "broker": "disk", "transport": "tcp",
        "params": {"writes": len(times), "bytes": len(block)},
        "results": {"median_ms": statistics.median(times),
                    "p90_ms": times[int(len(times) * 0.9)]},
    }))


if __name__ == "__main__":
    main(sys.argv[1])
