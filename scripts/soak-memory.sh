#!/usr/bin/env bash
# Memory soak: fills queues past a queue byte limit and past the broker's
# memory watermark while a bystander keeps doing round trips, and prints
# resident memory against the limit, the bystander's latency and the
# counts; then a backlog of 1M small messages drains and RSS is read again
# ten seconds later. Loopback only, bounded in count and time (a few
# minutes). Not part of the test command: figures go in the README.
#
#   scripts/soak-memory.sh            # 256 MiB watermark
#   LIMIT=1GiB scripts/soak-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."

LIMIT=${LIMIT:-256MiB}
TCP=${TCP:-47613}
HTTP=${HTTP:-47674}
WORK=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT

cargo build --release -p stompbox --locked -q
BIN=target/release/stompbox

cat > "$WORK/stompbox.toml" <<TOML
[[queues]]
pattern = "/queue/soak.bounded"
max_length_bytes = 67108864   # 64 MiB
overflow = "reject-publish"
TOML

start() {
  "$BIN" --config "$WORK/stompbox.toml" --tcp-listen 127.0.0.1:$TCP --http-listen 127.0.0.1:$HTTP \
    --memory-limit "$1" --data-dir "$WORK/data" --log warn "${@:2}" 2> "$WORK/broker.log" &
  PID=$!
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$TCP") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "the broker did not start" >&2; cat "$WORK/broker.log" >&2; exit 1
}

run() {
  echo "== $1"
  shift
  "$BIN" bench --url stomp://127.0.0.1:$TCP --timeout 300 memory --pid "$PID" "$@"
  curl -s "http://127.0.0.1:$HTTP/health" 2>/dev/null || true
  echo
}

start "$LIMIT"
run "a queue with max_length_bytes 64 MiB, 4 producers of 1 KiB, slow consumer" \
  --queue /queue/soak.bounded -s 1024 -t 20 --drain-rate 2000
run "past the $LIMIT watermark: 4 producers of 1 KiB, slow consumer" \
  -s 1024 -t 20 --drain-rate 2000
run "past the $LIMIT watermark: 4 producers of 16 KiB, slow consumer" \
  -s 16384 -t 20 --drain-rate 200
run "past the $LIMIT watermark: 8 producers of 128 bytes, slow consumer" \
  -p 8 -s 128 -t 20 --drain-rate 5000
echo "== past the $LIMIT watermark: 128-byte, 1 KiB and 16 KiB producers at once, each with its consumer"
for size in 128 1024 16384; do
  "$BIN" bench --url stomp://127.0.0.1:$TCP --timeout 300 memory --pid "$PID" -p 2 -s $size -t 20 \
    --drain-rate $((2000000 / size / 4 + 50)) > "$WORK/mixed.$size" 2>&1 &
done
wait_ok=0
for job in $(jobs -p); do [ "$job" = "$PID" ] || wait "$job" || wait_ok=1; done
for size in 128 1024 16384; do echo "-- $size bytes"; cat "$WORK/mixed.$size"; done
[ $wait_ok = 0 ] || { echo "a mixed run failed" >&2; exit 1; }
kill $PID; wait $PID 2>/dev/null || true

# A backlog of 1M small messages, durable (paged to disk past the window)
# and then in memory (packed past it), each on a fresh broker after a
# 10,000-message warm-up: "before" is an idle broker that has served, so
# first-use costs (code pages, thread stacks) are not counted as what the
# backlog left behind (the warm-up alone leaves 1.1-1.3x the cold figure).
for mode in durable in-memory; do
  if [ $mode = durable ]; then start 2GiB; else start 2GiB --in-memory; fi
  run "warm-up ($mode): 10,000 messages of 128 bytes, drained" \
    -s 128 -n 10000 -t 120 --drain-rate 0 --settle 10
  run "1M messages of 128 bytes ($mode) queued with no consumer, then drained; RSS 10 s later" \
    -s 128 -n 1000000 -t 120 --drain-rate 0 --settle 10
  kill $PID; wait $PID 2>/dev/null || true
done
