"""Starts the real `stompbox` binary (STOMPBOX_BIN) for the compatibility tests
and reads the ports it bound from its log, so every test uses port 0."""

import os
import re
import subprocess
import threading
import time

WAIT = 10.0


def start(args, ports):
    """Runs the broker with `args` and waits, at most WAIT seconds, until its
    log has named every port in `ports` (log field -> key, e.g.
    {"tcp_addr": "tcp"}). Returns the process and a dict key -> port."""
    binary = os.environ.get("STOMPBOX_BIN", "target/debug/stompbox")
    proc = subprocess.Popen([binary, *args, "--log", "info"], stderr=subprocess.PIPE, text=True)
    found = {}
    deadline = time.monotonic() + WAIT
    while len(found) < len(ports) and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        for field, key in ports.items():
            match = re.search(field + r"=127\.0\.0\.1:(\d+)", line)
            if match:
                found[key] = int(match.group(1))
    missing = set(ports.values()) - set(found)
    if missing:
        proc.kill()
        raise AssertionError(f"the broker did not report its ports: {sorted(missing)}")
    # Keep draining the log so the broker never blocks on a full pipe.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, found


def stop(proc):
    """Asks the broker to stop (SIGTERM) and checks that it exits cleanly."""
    proc.terminate()
    assert proc.wait(timeout=WAIT) == 0, "the broker did not shut down cleanly"
