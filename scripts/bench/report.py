#!/usr/bin/env python3
"""Collects `stompbox bench --json` lines and renders the comparison page.

    report.py record FILE BROKER TRANSPORT JSON_LINE [SCENARIO]
    report.py record-error FILE BROKER TRANSPORT ARGS ERROR
    report.py annotate FILE KEY=NUMBER...   (adds results to the last line)
    report.py render FILE OUT.md OUT.svg
"""

import datetime
import html
import json
import os
import platform
import subprocess
import sys

BROKERS = ["stompbox", "rabbitmq", "activemq"]
NAMES = {"stompbox": "Stompbox", "rabbitmq": "RabbitMQ", "activemq": "ActiveMQ"}

# (scenario, result key, label, higher is better)
METRICS = [
    ("queue", "msgs_per_sec", "queue, 2 producers → 2 consumers, msgs/s", True),
    ("fanout", "delivered_per_sec", "topic fan-out 1 → 100, delivered msgs/s", True),
    ("latency", "p50_us", "latency at 5k msgs/s, p50 µs", False),
    ("latency", "p99_us", "latency at 5k msgs/s, p99 µs", False),
    ("latency", "p99_9_us", "latency at 5k msgs/s, p99.9 µs", False),
    ("chat", "p99_us", "chat 10 rooms × 10 users × 2 msgs/s, p99 µs", False),
    ("connections", "kib_per_connection", "broker memory per idle connection, KiB", False),
    ("connections", "connects_per_sec", "connection setup, conn/s", True),
]

# Stompbox alone, at the most connections this machine allows (up to 100,000).
MOST = [
    ("connections-most", "opened", "idle connections held", True),
    ("connections-most", "kib_per_connection", "broker memory per idle connection, KiB", False),
    ("connections-most", "connects_per_sec", "connection setup, conn/s", True),
]


def record(path, broker, transport, line, scenario=None):
    data = json.loads(line)
    if scenario:
        data["scenario"] = scenario
    data["broker"] = broker
    data["transport"] = transport
    with open(path, "a") as f:
        f.write(json.dumps(data) + "\n")


def record_error(path, broker, transport, args, error):
    scenario = next((w for w in args.split() if w in {m[0] for m in METRICS}), "?")
    if os.environ.get("SCENARIO_AS"):
        scenario = os.environ["SCENARIO_AS"]
    with open(path, "a") as f:
        f.write(json.dumps({"broker": broker, "transport": transport, "scenario": scenario,
                            "error": error, "args": args}) + "\n")


# The result that orders repeated runs of a scenario; the median run is shown.
PRIMARY = {"queue": "msgs_per_sec", "fanout": "delivered_per_sec", "latency": "p99_us",
           "chat": "p99_us", "connections": "kib_per_connection",
           "connections-most": "kib_per_connection", "queue-memory": "msgs_per_sec",
           "queue-persistent": "msgs_per_sec", "queue-quorum": "msgs_per_sec", "fsync": "median_ms",
           "queue-plain": "msgs_per_sec", "queue-header": "msgs_per_sec",
           "queue-priorities": "msgs_per_sec", "queue-client-ack": "msgs_per_sec",
           "queue-ack-deadline": "msgs_per_sec", "fanout-exact": "delivered_per_sec",
           "fanout-wildcard": "delivered_per_sec", "queue-unobserved": "msgs_per_sec",
           "queue-observed": "msgs_per_sec", "limit-queue": "msgs_per_sec",
           "limit-queue-ack": "msgs_per_sec", "limit-fanout-100": "delivered_per_sec",
           "limit-fanout-1000": "delivered_per_sec", "limit-latency": "p99_us",
           "cluster-queue": "msgs_per_sec", "cluster-fanout": "delivered_per_sec",
           "cluster-latency": "p99_us", "cluster-queue-persistent": "msgs_per_sec"}

# The cluster comparison's setups, in table order: broker label, what it is.
CLUSTER_SETUPS = [
    ("stompbox", "one node, no cluster"),
    ("cluster-1", "cluster, 1 node (publish and receive on it)"),
    ("cluster-2", "cluster, publish on node 1, receive on node 2"),
    ("cluster-3", "cluster, publish on node 1, receive on nodes 2 and 3"),
    ("rabbitmq", "RabbitMQ, one node"),
]

DELIVERY = ("queue-plain", "queue-header", "queue-priorities", "queue-client-ack", "queue-ack-deadline",
            "fanout-exact", "fanout-wildcard")


def annotate(path, pairs):
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    last = json.loads(lines[-1])
    if "results" in last:
        for pair in pairs:
            key, value = pair.split("=", 1)
            last["results"][key] = float(value)
    lines[-1] = json.dumps(last) + "\n"
    with open(path, "w") as f:
        f.writelines(lines)


def delivery_section(rows):
    """What priorities and ack deadlines cost a queue, or nothing when not run."""
    if not any(k[2] in DELIVERY for k in rows):
        return []
    out = ["## Delivery terms\n",
           "`stompbox bench queue`, 2 producers, 2 consumers, 128-byte messages, TCP, in memory. Runs "
           "alternate between configurations, three of each; the median is shown. Priorities: the SENDs "
           "cycle `priority` 0 to 9 (`--priorities`); RabbitMQ's queue is declared with "
           "`x-max-priority:10`. The header row carries one passthrough header of about the same size, "
           "so the cost of ordering is told apart from the cost of a header on the wire. Ack deadline: "
           "`x-ack-timeout:60000` on the consumers' SUBSCRIBE (`--ack-timeout 60000`).\n"]
    cols = [("queue-plain", "plain queue, auto ack"),
            ("queue-header", "one extra header (`x-tag:5`)"),
            ("queue-priorities", "priorities 0 to 9"),
            ("queue-client-ack", "`client-individual` acks"),
            ("queue-ack-deadline", "`client-individual` acks with an ack deadline")]
    out.append("| configuration | Stompbox msgs/s | RabbitMQ msgs/s |")
    out.append("| --- | --- | --- |")
    for scenario, label in cols:
        ours = cell(rows, "stompbox", "tcp", scenario, "msgs_per_sec")[1]
        theirs = cell(rows, "rabbitmq", "tcp", scenario, "msgs_per_sec")[1]
        out.append(f"| {label} | {ours} | {theirs} |")
    v = lambda s: cell(rows, "stompbox", "tcp", s, "msgs_per_sec")[0]
    share = lambda a, b: f"{v(a) / v(b) * 100:.0f}%" if v(a) and v(b) else "not measured"
    out.append("\n| target | measured |")
    out.append("| --- | --- |")
    out.append(f"| priorities within 15% of the plain queue | {share('queue-priorities', 'queue-plain')} "
               f"(of the one-header queue: {share('queue-priorities', 'queue-header')}) |")
    out.append(f"| ack deadlines within 15% of client acks without | {share('queue-ack-deadline', 'queue-client-ack')} |")
    if any(k[2] in ("fanout-exact", "fanout-wildcard") for k in rows):
        out.append("\n### Wildcard subscriptions\n")
        out.append("`stompbox bench fanout -k 100`: one publisher, 100 subscribers, 128-byte messages, TCP; "
                   "with `--wildcard` the subscribers take `/topic/NAME.*` and the publisher sends to "
                   "`/topic/NAME.x`. Deliveries a second, median of three alternating runs.\n")
        out.append("| subscription | Stompbox | RabbitMQ |")
        out.append("| --- | --- | --- |")
        for scenario, label in (("fanout-exact", "the exact topic"), ("fanout-wildcard", "a wildcard pattern")):
            ours = cell(rows, "stompbox", "tcp", scenario, "delivered_per_sec")[1]
            theirs = cell(rows, "rabbitmq", "tcp", scenario, "delivered_per_sec")[1]
            out.append(f"| {label} | {ours} | {theirs} |")
        w = lambda s: cell(rows, "stompbox", "tcp", s, "delivered_per_sec")[0]
        ratio = f"{w('fanout-wildcard') / w('fanout-exact') * 100:.0f}%" if w("fanout-wildcard") and w("fanout-exact") else "not measured"
        out.append(f"\nTarget: wildcard fan-out within 15% of exact-topic fan-out; measured {ratio}.")
    return out + [""]


def tls_section(rows):
    """What TLS costs, next to RabbitMQ's TLS listener, or nothing when not run."""
    if not any(k[1] == "tls" for k in rows):
        return []
    out = ["## TLS\n",
           "`stompbox bench queue` (2 producers, 2 consumers, 128-byte messages) and `stompbox bench "
           "connections` over `stomp+ssl://` against each broker's STOMP-over-TLS listener, and over plain "
           "TCP in the same run. Both brokers use the same P-256 certificate, made by `openssl` for the run; "
           "the load tool (rustls) offers TLS 1.3 and 1.2 and each broker picks. Throughput runs alternate, three of each, median shown; memory "
           "per idle connection is measured on a freshly started broker.\n"]
    out.append("| | Stompbox TCP | Stompbox TLS | RabbitMQ TCP | RabbitMQ TLS |")
    out.append("| --- | --- | --- | --- | --- |")
    for scenario, key, label in (("queue", "msgs_per_sec", "queue, msgs/s"),
                                 ("connections", "kib_per_connection", "broker memory per idle connection, KiB"),
                                 ("connections", "connects_per_sec", "connection setup, conn/s")):
        cells = [cell(rows, b, t, scenario, key)[1]
                 for b in ("stompbox", "rabbitmq") for t in ("tcp", "tls")]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    ours, _ = cell(rows, "stompbox", "tls", "queue", "msgs_per_sec")
    plain, _ = cell(rows, "stompbox", "tcp", "queue", "msgs_per_sec")
    theirs, _ = cell(rows, "rabbitmq", "tls", "queue", "msgs_per_sec")
    kib, _ = cell(rows, "stompbox", "tls", "connections", "kib_per_connection")
    out.append("\n| target | measured |")
    out.append("| --- | --- |")
    out.append(f"| TLS queue throughput ≥ 10× RabbitMQ's TLS | "
               f"{f'{ours / theirs:.1f}×' if ours and theirs else 'not measured'} |")
    out.append(f"| under 16 KiB per idle TLS connection | {fmt(kib)} KiB |")
    out.append(f"| (TLS throughput as a share of plain TCP) | "
               f"{f'{ours / plain * 100:.0f}%' if ours and plain else 'not measured'} |")
    return out + [""]


def limit_section(rows):
    """Stompbox as a fraction of the do-nothing relay, or nothing when not run."""
    if not any(k[2] == "limit-queue" for k in rows):
        return []
    out = ["## Stompbox against the machine's limit\n",
           "`stompbox relay` is a do-nothing STOMP relay: it answers CONNECT and SUBSCRIBE, turns each "
           "SEND into a MESSAGE by putting two header lines in front of the SEND's own bytes, keeps no "
           "message, id or ack, and writes what is ready in one write. What it moves with the same load "
           "tool (`stompbox bench`, 128-byte messages, TCP) is what this machine can move; Stompbox's "
           "figure divided by it is the share of the machine Stompbox turns into broker work. Both run "
           "side by side; each scenario's two runs come back to back, which goes first taking turns, "
           "three rounds; median shown (range in brackets).\n",
           "| scenario | Stompbox | relay (limit) | Stompbox / limit | target |",
           "| --- | --- | --- | --- | --- |"]

    def spread(broker, scenario, key):
        runs = [d["results"].get(key) for d in RUNS.get((broker, "tcp", scenario), []) if "results" in d]
        runs = [r for r in runs if r]
        return f" ({fmt(min(runs))}–{fmt(max(runs))})" if len(runs) > 1 else ""

    for scenario, key, label, target, higher in (
            ("limit-queue", "msgs_per_sec", "queue 2P/2C auto, msgs/s", 0.5, True),
            ("limit-fanout-100", "delivered_per_sec", "fan-out 1 → 100, deliveries/s", 0.7, True),
            ("limit-fanout-1000", "delivered_per_sec", "fan-out 1 → 1000, deliveries/s", 0.7, True),
            ("limit-latency", "p99_us", "latency p99 at 5k msgs/s, µs", 1 / 1.3, False)):
        ours, ours_text = cell(rows, "stompbox", "tcp", scenario, key)
        limit, limit_text = cell(rows, "relay", "tcp", scenario, key)
        ratio = (ours / limit if higher else limit / ours) if ours and limit else None
        goal = f"≥ {target:.1f}" if higher else "p99 within 1.3× the relay's"
        shown = f"{ratio:.2f}" if ratio else "not measured"
        if not higher and ours and limit:
            shown = f"{ours / limit:.2f}× the relay's p99"
        out.append(f"| {label} | {ours_text}{spread('stompbox', scenario, key)} | "
                   f"{limit_text}{spread('relay', scenario, key)} | {shown} | {goal} |")
    auto, _ = cell(rows, "stompbox", "tcp", "limit-queue", "msgs_per_sec")
    acked, acked_text = cell(rows, "stompbox", "tcp", "limit-queue-ack", "msgs_per_sec")
    relay_acked, relay_acked_text = cell(rows, "relay", "tcp", "limit-queue-ack", "msgs_per_sec")
    out.append(f"| queue 2P/2C client-individual, msgs/s | {acked_text}{spread('stompbox', 'limit-queue-ack', 'msgs_per_sec')} | "
               f"{relay_acked_text} | {f'{acked / auto:.2f} of Stompbox auto' if acked and auto else 'not measured'} | ≥ 0.6 of auto |")
    return out + [""]


def cluster_section(rows):
    """Stompbox nodes on Redis, or nothing when not run."""
    if not any(k[2] == "cluster-queue" for k in rows):
        return []
    out = ["## Several nodes on one Redis\n",
           "Three Stompbox nodes (`--cluster`, release build, in memory) and one Debian `redis-server` "
           "(no persistence, as the in-memory comparison), all on this machine with the load tool. "
           "`stompbox bench ... --receive-url` puts the consumers or subscribers on other nodes than the "
           "publishers, so every message crosses Redis from one node to another. Runs alternate, three of "
           "each, median shown (range in brackets).\n",
           "The queue column sends `persistent:false` (a node delivers such a message to its own consumer "
           "without Redis when that consumer can take it at once); the persistent column sends "
           "`persistent:true`, which in cluster mode always goes through Redis (on the plain in-memory node "
           "and RabbitMQ it is what each does with a persistent message).\n",
           "| setup | queue 2P/2C, msgs/s | queue 2P/2C persistent, msgs/s | fan-out 1 → 100, deliveries/s "
           "| latency p50 µs | latency p99 µs |",
           "| --- | --- | --- | --- | --- | --- |"]

    def spread(broker, scenario, key):
        runs = [d["results"].get(key) for d in RUNS.get((broker, "tcp", scenario), []) if "results" in d]
        runs = [r for r in runs if r]
        return f" ({fmt(min(runs))}–{fmt(max(runs))})" if len(runs) > 1 else ""

    for broker, label in CLUSTER_SETUPS:
        cells = []
        for scenario, key in (("cluster-queue", "msgs_per_sec"), ("cluster-queue-persistent", "msgs_per_sec"),
                              ("cluster-fanout", "delivered_per_sec"),
                              ("cluster-latency", "p50_us"), ("cluster-latency", "p99_us")):
            _, text = cell(rows, broker, "tcp", scenario, key)
            cells.append(text + (spread(broker, scenario, key) if key != "p50_us" else ""))
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    fan3, _ = cell(rows, "cluster-3", "tcp", "cluster-fanout", "delivered_per_sec")
    fan2, _ = cell(rows, "cluster-2", "tcp", "cluster-fanout", "delivered_per_sec")
    rabbit_fan, _ = cell(rows, "rabbitmq", "tcp", "cluster-fanout", "delivered_per_sec")
    plain_q, _ = cell(rows, "stompbox", "tcp", "cluster-queue", "msgs_per_sec")
    one_q, _ = cell(rows, "cluster-1", "tcp", "cluster-queue", "msgs_per_sec")
    one_qp, _ = cell(rows, "cluster-1", "tcp", "cluster-queue-persistent", "msgs_per_sec")
    plain_f, _ = cell(rows, "stompbox", "tcp", "cluster-fanout", "delivered_per_sec")
    one_f, _ = cell(rows, "cluster-1", "tcp", "cluster-fanout", "delivered_per_sec")
    p50_plain, _ = cell(rows, "stompbox", "tcp", "cluster-latency", "p50_us")
    p99_plain, _ = cell(rows, "stompbox", "tcp", "cluster-latency", "p99_us")
    p50_hop, _ = cell(rows, "cluster-2", "tcp", "cluster-latency", "p50_us")
    p99_hop, _ = cell(rows, "cluster-2", "tcp", "cluster-latency", "p99_us")
    cross = max(v for v in (fan2, fan3, 0) if v is not None)
    out += ["\n| target | measured |", "| --- | --- |",
            f"| cross-node fan-out ≥ 5× RabbitMQ's single-node fan-out | "
            f"{f'{cross / rabbit_fan:.1f}×' if cross and rabbit_fan else 'not measured'} |",
            f"| one node with cluster on ≥ 0.5 of the plain node | "
            + (f"queue {one_q / plain_q:.2f}, fan-out {one_f / plain_f:.2f}" if one_q and plain_q and one_f and plain_f
               else "not measured")
            + (f" (persistent messages, through Redis: {one_qp / plain_q:.2f} of the plain node's queue)"
               if one_qp and plain_q else "") + " |",
            f"| added latency per hop (node 1 → Redis → node 2 against one plain node) | "
            + (f"p50 +{p50_hop - p50_plain:,.0f} µs, p99 +{p99_hop - p99_plain:,.0f} µs" if p50_hop and p50_plain and p99_hop and p99_plain
               else "not measured") + " |"]
    cost = rows.get(("stompbox", "tcp", "cluster-redis-cost"), {}).get("results", {})
    queue_us, topic_us = cost.get("queue_us"), cost.get("topic_us")
    if queue_us and topic_us:
        out += ["\n## The ceiling Redis puts on it\n",
                "Redis' own CPU (`INFO cpu` around one run of each, apart from the table): "
                f"{queue_us:.2f} µs per `persistent:true` queue message through one node "
                "(2P/2C; SENDs that reach Redis together share one Stream entry), "
                f"{topic_us:.2f} µs per topic message published on node 1 to 100 subscribers on nodes 2 "
                "and 3 (one script, then one pub/sub write per node that follows the topic: the nodes, "
                "not Redis, make the 100 deliveries). "
                f"So one Redis core carries about {1 / queue_us:.2f} M queue messages or "
                f"{1 / topic_us:.2f} M topic publishes a second before it is the limit; on this machine "
                "the two cores it shares with the nodes and the load tool run out first.\n",
                "Several Redis servers (`cluster = \"redis://a,redis://b\"`) each hold the destinations "
                "whose names hash to them, so the ceiling grows with the servers for traffic spread over "
                "many queues and topics, while one queue or topic is held to one server's.\n"]
    return out + [""]


def metrics_section(rows):
    """What scraping /metrics and polling the API cost, or nothing when not run."""
    if not any(k[2] == "queue-observed" for k in rows):
        return []
    ours, text_observed = cell(rows, "stompbox", "tcp", "queue-observed", "msgs_per_sec")
    base, text_base = cell(rows, "stompbox", "tcp", "queue-unobserved", "msgs_per_sec")
    extra = rows.get(("stompbox", "tcp", "metrics-series"), {}).get("results", {})
    series = extra.get("series")
    round_ms = extra.get("round_ms_x10", 0) / 10
    out = ["## What metrics cost\n",
           "`stompbox bench queue -p 2 -c 2 -s 128` against one Stompbox, alternating seven runs unobserved "
           "with seven runs while a scraper reads `/metrics` and the management API's overview, destinations "
           "and connections every second (Prometheus is usually set to 15 s, the admin page polls every 2 s). "
           "1,000 other queues hold a message each, so every scrape walks them"
           + (f" ({int(series):,} series per scrape)" if series else "") + ". Medians shown "
           "(alternating runs on these shared cores vary by ±10%).\n",
           f"One round (the scrape and the three API calls) costs the broker {round_ms:.1f} ms of CPU "
           "(its user and system time over 100 rounds, from /proc): once a second, "
           f"{round_ms / 10 / 2:.2f}% of this machine's two cores.\n" if round_ms else "",
           "| | msgs/s |", "| --- | --- |",
           f"| unobserved | {text_base} |", f"| scraped every second | {text_observed} |",
           "\n| target | measured |", "| --- | --- |",
           f"| collecting metrics costs under 3% of queue throughput | "
           f"{f'observed runs at {ours / base * 100:.1f}% of unobserved' if ours and base else 'not measured'} |",
           "\nThe counting itself (atomics and per-session tallies on every frame) cannot be switched off "
           "at run time; its cost is measured with callgrind against the build before it, see "
           "docs/architecture.md.\n"]
    return out


def durable_section(rows):
    """The durable-messages comparison, or nothing when it was not run."""
    if not any(k[2] in ("queue-persistent", "queue-quorum") for k in rows):
        return []
    out = ["## Durable messages\n"]
    fsync = rows.get(("disk", "tcp", "fsync"))
    if fsync and "results" in fsync:
        r = fsync["results"]
        out.append(f"This disk makes a 4 KiB append durable (write + fdatasync) in {r['median_ms']:.2f} ms "
                   f"(median of 300; p90 {r['p90_ms']:.2f} ms), measured by `scripts/bench/fsync.py` in the "
                   "directory the brokers keep their data in.\n")
    out.append("Persistent SENDs (`persistent:true`), 2 producers each keeping at most 256 unconfirmed "
               "(a RECEIPT per message, every one checked), 2 consumers, 128-byte messages, TCP. Runs "
               "alternate between configurations, three of each; the median is shown.\n")
    cols = [("stompbox", "queue-memory", "Stompbox, in memory (`persistent:false`)"),
            ("stompbox", "queue-persistent", "Stompbox, journal"),
            ("rabbitmq", "queue-persistent", "RabbitMQ, durable classic queue"),
            ("rabbitmq", "queue-quorum", "RabbitMQ, quorum queue (`x-queue-type:quorum`)")]
    out.append("| configuration | msgs/s |")
    out.append("| --- | --- |")
    for broker, scenario, label in cols:
        out.append(f"| {label} | {cell(rows, broker, 'tcp', scenario, 'msgs_per_sec')[1]} |")
    ours, _ = cell(rows, "stompbox", "tcp", "queue-persistent", "msgs_per_sec")
    memory, _ = cell(rows, "stompbox", "tcp", "queue-memory", "msgs_per_sec")
    classic, _ = cell(rows, "rabbitmq", "tcp", "queue-persistent", "msgs_per_sec")
    quorum, _ = cell(rows, "rabbitmq", "tcp", "queue-quorum", "msgs_per_sec")
    ratio = lambda a, b: f"{a / b:.1f}×" if a and b else "not measured"
    share = f"{ours / memory * 100:.0f}%" if ours and memory else "not measured"
    out.append("\n| target | measured |")
    out.append("| --- | --- |")
    out.append(f"| ≥ 10× RabbitMQ's quorum queue | {ratio(ours, quorum)} |")
    out.append(f"| ≥ 3× RabbitMQ's durable classic queue | {ratio(ours, classic)} |")
    out.append(f"| persistent ≥ 40% of Stompbox in memory | {share} |")
    d = rows.get(("stompbox", "tcp", "queue-persistent"))
    if d and "results" in d and d["results"].get("syncs"):
        r = d["results"]
        out.append(f"\nIn the median Stompbox run the journal synced {r['syncs'] / r['seconds']:,.0f} times a "
                   f"second, {r['records'] / r['syncs']:.0f} records per sync (an enqueue record per message, "
                   "settle records for the acknowledged ones, grouped).\n")
    return out


# Every run by (broker, transport, scenario), for ranges.
RUNS = {}


def load(path):
    runs = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                runs.setdefault((d["broker"], d["transport"], d["scenario"]), []).append(d)
    RUNS.clear()
    RUNS.update(runs)
    rows = {}
    for key, found in runs.items():
        ok = [d for d in found if "error" not in d]
        if not ok:
            rows[key] = found[-1]
            continue
        metric = PRIMARY.get(key[2])
        ok.sort(key=lambda d: d["results"].get(metric, 0))
        rows[key] = ok[(len(ok) - 1) // 2]
        rows[key]["runs"] = len(found)
    return rows


def fmt(v):
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}"


def cell(rows, broker, transport, scenario, key):
    d = rows.get((broker, transport, scenario))
    if d is None:
        return None, "not run"
    if "error" in d:
        return None, "failed: " + d["error"].replace("|", "/")[:80]
    v = d["results"].get(key)
    return v, fmt(v)


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB, {platform.system()} {platform.release()}"


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def render(path, md_path, svg_path):
    rows = load(path)
    columns = [(b, t) for b in BROKERS for t in ("tcp", "ws") if any(k[:2] == (b, t) for k in rows)]
    out = []
    out.append("# Benchmarks: Stompbox, RabbitMQ and ActiveMQ\n")
    out.append(f"Measured {datetime.date.today().isoformat()} by `scripts/bench-compare.sh` with `stompbox bench`, "
               "every broker on the same machine as the load tool, loopback only, one broker at a time, "
               "128-byte messages.\n")
    out.append(f"- Machine: {machine()}; the load tool and the broker share these cores.")
    out.append(f"- Stompbox {version(['git', 'rev-parse', '--short', 'HEAD'])} (release build, defaults, `--in-memory`: "
               "the peers keep these non-persistent messages in memory too; durable messages are compared below).")
    out.append(f"- RabbitMQ {version(['dpkg-query', '-W', '-f=${Version}', 'rabbitmq-server'])} (Debian), "
               "`rabbitmq_stomp` and `rabbitmq_web_stomp`, default settings.")
    out.append(f"- ActiveMQ Classic {version(['dpkg-query', '-W', '-f=${Version}', 'activemq'])} (Debian), "
               "`stomp+nio` connector, non-persistent, 1 GiB heap. Debian's build has no WebSocket transport, "
               "so ActiveMQ runs over TCP only.")
    out.append("- Every run checks that each message arrived exactly once; a run that lost or repeated a "
               "message is shown as failed. Latency runs three times and the run with the median p99 is "
               "shown; memory per connection is measured on a freshly started broker.\n")
    if any(k[2] == "limit-queue" for k in rows):
        out = ["# Benchmarks: Stompbox against the machine's limit\n",
               f"Measured {datetime.date.today().isoformat()} by `ONLY=limit scripts/bench-compare.sh`, "
               f"on {machine()}, loopback only.\n"]
        out += limit_section(rows)
        with open(md_path, "w") as f:
            f.write("\n".join(out) + "\n")
        return
    if any(k[2] == "cluster-queue" for k in rows):
        out = ["# Benchmarks: several Stompbox nodes on Redis\n",
               f"Measured {datetime.date.today().isoformat()} by `ONLY=cluster scripts/bench-compare.sh`, "
               f"on {machine()}, loopback only.\n"]
        out += cluster_section(rows)
        with open(md_path, "w") as f:
            f.write("\n".join(out) + "\n")
        return
    if any(k[2] == "queue-observed" for k in rows):
        out = ["# Benchmarks: what metrics cost\n",
               f"Measured {datetime.date.today().isoformat()} by `ONLY=metrics scripts/bench-compare.sh`, "
               f"on {machine()}, loopback only.\n"]
        out += metrics_section(rows)
        with open(md_path, "w") as f:
            f.write("\n".join(out) + "\n")
        return
    if any(k[1] == "tls" for k in rows):
        out = ["# Benchmarks: TLS, Stompbox and RabbitMQ\n",
               f"Measured {datetime.date.today().isoformat()} by `ONLY=tls scripts/bench-compare.sh`, "
               f"on {machine()}, loopback only, one broker at a time.\n"]
        out += tls_section(rows)
        with open(md_path, "w") as f:
            f.write("\n".join(out) + "\n")
        return
    if not any(k[2] in {m[0] for m in METRICS} for k in rows):
        # Only the durable or the delivery comparison was run.
        only = "delivery" if any(k[2] in DELIVERY for k in rows) else "durable"
        title = "delivery terms and routing" if only == "delivery" else "durable messages"
        out = [f"# Benchmarks: {title}, Stompbox and RabbitMQ\n",
               f"Measured {datetime.date.today().isoformat()} by `ONLY={only} scripts/bench-compare.sh`, "
               f"on {machine()}, loopback only, one broker at a time.\n"]
        out += durable_section(rows) + delivery_section(rows)
        with open(md_path, "w") as f:
            f.write("\n".join(out) + "\n")
        return
    head = "| scenario | " + " | ".join(f"{NAMES[b]} {t.upper()}" for b, t in columns) + " | Stompbox / best peer |"
    out.append(head)
    out.append("|" + " --- |" * (len(columns) + 2))
    ratios = {}
    for scenario, key, label, higher in METRICS:
        values = {}
        cells = []
        for b, t in columns:
            v, text = cell(rows, b, t, scenario, key)
            values[(b, t)] = v
            cells.append(text)
        ratio_parts = []
        for t in ("tcp", "ws"):
            ours = values.get(("stompbox", t))
            peers = [v for (b, tt), v in values.items() if tt == t and b != "stompbox" and v]
            if ours and peers:
                best = max(peers) if higher else min(peers)
                r = ours / best if higher else best / ours
                ratios[(scenario, key, t)] = r
                ratio_parts.append(f"{t.upper()} {r:.1f}×")
        out.append(f"| {label} | " + " | ".join(cells) + " | " + (", ".join(ratio_parts) or "–") + " |")
    out.append("\nRatios are how many times better Stompbox is than the best other broker on the same "
               "transport: higher throughput divided, or lower latency and memory inverted.\n")
    out.append("![Throughput, latency and memory by broker](benchmarks.svg)\n")
    out.append("## Per-peer ratios against the targets\n")
    def peer_ratio(scenario, key, transport, peer, higher=True):
        ours, _ = cell(rows, "stompbox", transport, scenario, key)
        theirs, _ = cell(rows, peer, transport, scenario, key)
        if not ours or not theirs:
            return "not measured"
        return f"{(ours / theirs if higher else theirs / ours):.1f}×"
    out.append("| target | measured |")
    out.append("| --- | --- |")
    out.append(f"| queue ≥ 10× RabbitMQ (TCP) | {peer_ratio('queue', 'msgs_per_sec', 'tcp', 'rabbitmq')} |")
    out.append(f"| queue ≥ 10× RabbitMQ (WebSocket) | {peer_ratio('queue', 'msgs_per_sec', 'ws', 'rabbitmq')} |")
    out.append(f"| queue ≥ 3× ActiveMQ (TCP) | {peer_ratio('queue', 'msgs_per_sec', 'tcp', 'activemq')} |")
    out.append(f"| fan-out 1 → 100 ≥ 10× RabbitMQ (TCP) | {peer_ratio('fanout', 'delivered_per_sec', 'tcp', 'rabbitmq')} |")
    p99, _ = cell(rows, "stompbox", "tcp", "latency", "p99_us")
    p999, _ = cell(rows, "stompbox", "tcp", "latency", "p99_9_us")
    out.append(f"| latency at 5k msgs/s: p99 < 250 µs | {fmt(p99)} µs |")
    out.append(f"| latency at 5k msgs/s: p99.9 < 1 ms | {fmt(p999)} µs |")
    most = {}
    for t in ("tcp", "ws"):
        kib, _ = cell(rows, "stompbox", t, "connections-most", "kib_per_connection")
        opened, _ = cell(rows, "stompbox", t, "connections-most", "opened")
        most[t] = (kib, opened)
        out.append(f"| 100,000 idle connections < 8 KiB each ({'TCP' if t == 'tcp' else 'WebSocket'}) | "
                   f"{fmt(kib)} KiB each over {fmt(opened)} connections |")
    out.append("\n## The most connections this machine allows\n")
    out.append("Stompbox alone, each transport on a freshly started broker, connections opened by one "
               "`stompbox bench connections` process spread over 127.0.0.x source addresses.\n")
    out.append("| | Stompbox TCP | Stompbox WS |")
    out.append("| --- | --- | --- |")
    for scenario, key, label, _ in MOST:
        out.append(f"| {label} | " + " | ".join(cell(rows, "stompbox", t, scenario, key)[1] for t in ("tcp", "ws")) + " |")
    hard = version(["sh", "-c", "ulimit -Hn"])
    if any((opened or 0) < 100_000 for _, opened in most.values()):
        out.append(f"\nFewer than 100,000: this machine's hard limit on open files is {hard} per process, "
                   "and it cannot be raised here (the process lacks CAP_SYS_RESOURCE, even as root). Every "
                   "connection needs one descriptor in the broker and one in the load tool; the broker keeps "
                   "a tenth of its limit (at most 1,024) in reserve. For 100,000 the tool needs an open-file "
                   "limit of 100,256 and the broker 101,024 (both raise their soft limit to the hard limit "
                   "themselves), and five source addresses at the default 20,000 per address.\n")
    out += [""] + durable_section(rows) + delivery_section(rows)
    with open(md_path, "w") as f:
        f.write("\n".join(out) + "\n")
    with open(svg_path, "w") as f:
        f.write(svg(rows, columns))


def svg(rows, columns):
    """One small bar group per metric; bars scaled to the group's largest value."""
    colors = {"stompbox": "#0b6e63", "rabbitmq": "#e07a1f", "activemq": "#5a55a8"}
    group_h, bar_h, left, width = 26 + 18 * len(columns), 16, 330, 420
    metrics = METRICS
    height = 40 + group_h * len(metrics)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 150}" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>',
             '<text x="10" y="22" font-size="15" font-weight="bold">Stompbox, RabbitMQ, ActiveMQ '
             '(↑ higher is better, ↓ lower is better)</text>']
    y = 40
    for scenario, key, label, higher in metrics:
        values = [(b, t, cell(rows, b, t, scenario, key)[0]) for b, t in columns]
        top = max([v for _, _, v in values if v] or [1])
        parts.append(f'<text x="10" y="{y + 14}" font-weight="bold">{html.escape(label)} {"↑" if higher else "↓"}</text>')
        yy = y + 20
        for b, t, v in values:
            w = 0 if not v else max(1, width * v / top)
            parts.append(f'<text x="{left - 8}" y="{yy + 12}" text-anchor="end">{NAMES[b]} {t.upper()}</text>')
            parts.append(f'<rect x="{left}" y="{yy}" width="{w:.1f}" height="{bar_h - 2}" fill="{colors[b]}"/>')
            parts.append(f'<text x="{left + w + 6:.1f}" y="{yy + 12}">{fmt(v) if v else "n/a"}</text>')
            yy += 18
        y += group_h
    parts.append("</svg>\n")
    return "\n".join(parts)


def main(argv):
    if len(argv) >= 6 and argv[1] == "record":
        record(argv[2], argv[3], argv[4], argv[5], argv[6] if len(argv) > 6 else None)
    elif len(argv) >= 7 and argv[1] == "record-error":
        record_error(argv[2], argv[3], argv[4], argv[5], argv[6])
    elif len(argv) >= 4 and argv[1] == "annotate":
        annotate(argv[2], argv[3:])
    elif len(argv) == 5 and argv[1] == "render":
        render(argv[2], argv[3], argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
