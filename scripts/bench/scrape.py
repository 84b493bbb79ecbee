#!/usr/bin/env python3
"""Reads /metrics and the management API's overview, destinations and
connections once a second, over kept-alive connections, for at most
SECONDS seconds (the benchmark kills it sooner).

    scrape.py HTTP_HOST:PORT API_HOST:PORT TOKEN_FILE SECONDS [ROUNDS]

With ROUNDS, makes that many rounds back to back instead, and exits.
"""

import http.client
import sys
import time


def main(http_addr, api_addr, token_file, seconds, rounds=None):
    token = open(token_file).read().strip()
    metrics = http.client.HTTPConnection(*http_addr.split(":"), timeout=10)
    api = http.client.HTTPConnection(*api_addr.split(":"), timeout=10)
    calls = [(metrics, "/metrics", {})] + [
        (api, f"/api/{c}", {"Authorization": f"Bearer {token}"})
        for c in ("overview", "destinations", "connections")
    ]
    end = time.monotonic() + float(seconds)
    left = int(rounds) if rounds else None
    while time.monotonic() < end and left != 0:
        for conn, path, headers in calls:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                sys.exit(f"{path}: HTTP {response.status}")
        if left is None:
            time.sleep(1)
        else:
            left -= 1


if __name__ == "__main__":
    main(*sys.argv[1:6])
