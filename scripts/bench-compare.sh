#!/usr/bin/env bash
# Stompbox side by side with RabbitMQ 3.10 (STOMP and Web-STOMP plugins) and
# ActiveMQ Classic 5.17, all from Debian's packages, on this machine's
# loopback only. Installs what is missing, starts each broker by hand on its
# own ports, runs the same `stompbox bench` scenarios against each, stops
# what it started, and writes docs/benchmarks.md and docs/benchmarks.svg.
#
# Usage: scripts/bench-compare.sh            (about 15 minutes on 2 cores)
#        QUICK=1 scripts/bench-compare.sh    (smaller runs, to check the script)
#        ONLY=durable scripts/bench-compare.sh (durable messages alone; the
#             page then shows only those rows)
#        ONLY=delivery scripts/bench-compare.sh (what priorities, ack
#             deadlines and wildcard subscriptions cost; docs/benchmarks-delivery.md)
#        ONLY=tls scripts/bench-compare.sh (STOMP over TLS against RabbitMQ's
#             TLS listener; docs/benchmarks-tls.md)
#        ONLY=cli scripts/bench-compare.sh (`stompbox send`/`subscribe`
#             against RabbitMQ: the command-line client works with a peer)
#        ONLY=limit scripts/bench-compare.sh (Stompbox against `stompbox
#             relay`, a do-nothing relay: each figure as a fraction of what
#             this machine moves with the same load tool; docs/benchmarks-limit.md)
#        ONLY=cluster scripts/bench-compare.sh (three nodes on one Redis:
#          queue, fan-out and latency across nodes, a plain node and RabbitMQ
#          in the same run; writes docs/benchmarks-cluster.md)
#        ONLY=metrics scripts/bench-compare.sh (queue throughput with /metrics
#             and the management API polled every second, against none, in
#             one run; docs/benchmarks-metrics.md)
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=target/bench-compare
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
WORK=$(mktemp -d /tmp/stompbox-compare.XXXXXX)
PIDS=()

if [ -n "${QUICK:-}" ]; then
  QUEUE_N=20000 FANOUT_N=300 LAT_SECS=3 CHAT_SECS=3 CONNS=2000 DURABLE_N=5000
else
  QUEUE_N=200000 FANOUT_N=2000 LAT_SECS=10 CHAT_SECS=10 CONNS=9000 DURABLE_N=50000
fi

# One descriptor per connection, in the broker and in the tool: take the
# hard limit (both also raise their own soft limit). The broker keeps a
# tenth of its limit, 32 to 1,024, in reserve; the tool needs 256 spare.
HARD=$(ulimit -Hn)
[ "$HARD" = unlimited ] && HARD=1048576
ulimit -n "$HARD"
RESERVE=$(( HARD / 10 )); [ "$RESERVE" -lt 32 ] && RESERVE=32; [ "$RESERVE" -gt 1024 ] && RESERVE=1024
MOST=$(( HARD - RESERVE - 64 )); [ "$MOST" -gt 100000 ] && MOST=100000
[ -n "${QUICK:-}" ] && [ "$MOST" -gt 3000 ] && MOST=3000

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 2
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  # RabbitMQ's Erlang port mapper outlives the node.
  pkill -f "epmd.*-address 127.0.0.1" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '\n== %s\n' "$*" >&2; }

install_missing() {
  local need=()
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
  [ -f /usr/share/activemq/bin/activemq.jar ] || need+=(activemq)
  if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]} from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}"
  fi
}

wait_port() {
  local port=$1
  for _ in $(seq 1 120); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.5
  done
  echo "nothing listens on 127.0.0.1:$port after 60 s" >&2
  return 1
}

# Ports: Stompbox 62613/25674, RabbitMQ 62614/25675, ActiveMQ 62615.
# The main comparison runs Stompbox in memory, as the peers keep
# non-persistent messages; the durable section starts it with a journal.
start_stompbox() {
  # A fresh journal each start, on the same disk as the peers' data.
  rm -rf "$WORK/stompbox-data"
  local tls=()
  [ -n "${WITH_TLS:-}" ] && tls=(--tls-cert "$WORK/tls/server.pem" --tls-key "$WORK/tls/server.key" --tls-listen 127.0.0.1:62616 --https-listen 127.0.0.1:25676)
  target/release/stompbox --tcp-listen 127.0.0.1:62613 --http-listen 127.0.0.1:25674 --log warn \
    --max-connections-per-ip 1000000 --data-dir "$WORK/stompbox-data" ${STOMPBOX_MODE:---in-memory} \
    "${tls[@]}" ${STOMPBOX_EXTRA:-} 2> "$WORK/stompbox.log" &
  PIDS+=($!)
  BROKER_PID=$!
  wait_port 62613
}

start_rabbitmq() {
  local dir="$WORK/rabbitmq"
  mkdir -p "$dir"
  sed -e 's/@AMQP_PORT@/5673/; s/@STOMP_PORT@/62614/; s/@WS_PORT@/25675/' scripts/bench/rabbitmq.conf > "$dir/rabbitmq.conf"
  if [ -n "${WITH_TLS:-}" ]; then
    # The same certificate as Stompbox's; no client certificates asked for.
    {
      echo "stomp.listeners.ssl.1 = 127.0.0.1:62617"
      echo "ssl_options.cacertfile = $WORK/tls/ca.pem"
      echo "ssl_options.certfile = $WORK/tls/server.pem"
      echo "ssl_options.keyfile = $WORK/tls/server.key"
      echo "ssl_options.verify = verify_none"
      echo "ssl_options.fail_if_no_peer_cert = false"
    } >> "$dir/rabbitmq.conf"
  fi
  cp scripts/bench/enabled_plugins "$dir/enabled_plugins"
  env HOME="$dir" ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_NODENAME=stompbox-compare@localhost \
    RABBITMQ_DIST_PORT=25673 RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_PID_FILE="$dir/pid" \
    /usr/lib/rabbitmq/bin/rabbitmq-server > "$dir/out.log" 2>&1 &
  PIDS+=($!)
  wait_port 62614
  wait_port 25675
  if [ -n "${WITH_TLS:-}" ]; then wait_port 62617; fi
  # The Erlang VM is a child of the start script: measure its memory.
  BROKER_PID=$(pgrep -f "beam.smp.*stompbox-compare" | head -1)
}

start_activemq() {
  local dir="$WORK/activemq"
  mkdir -p "$dir/data"
  sed -e 's/@STOMP_PORT@/62615/' scripts/bench/activemq.xml > "$dir/activemq.xml"
  cp /etc/activemq/instances-available/main/log4j2.properties "$dir/"
  (cd "$dir" && exec java -Xms1G -Xmx1G -Dactivemq.home=/usr/share/activemq -Dactivemq.base="$dir" \
    -Dactivemq.conf="$dir" -Dactivemq.data="$dir/data" -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -jar /usr/share/activemq/bin/activemq.jar start "xbean:file:$dir/activemq.xml" > "$dir/out.log" 2>&1) &
  PIDS+=($!)
  BROKER_PID=$!
  wait_port 62615
}

stop_broker() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 3
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  PIDS=()
  pkill -9 -f "beam.smp.*stompbox-compare" 2>/dev/null || true
}

# run BROKER TRANSPORT -- bench arguments...: records one JSON line (or the error).
run() {
  local broker=$1 transport=$2
  shift 3
  log "$broker over $transport: $*"
  local line err
  if line=$(target/release/stompbox bench --json --timeout 300 "$@" 2> "$WORK/err"); then
    python3 scripts/bench/report.py record "$RESULTS" "$broker" "$transport" "$line" "${SCENARIO_AS:-}"
  else
    err=$(tail -1 "$WORK/err")
    echo "failed: $err" >&2
    python3 scripts/bench/report.py record-error "$RESULTS" "$broker" "$transport" "$*" "$err"
  fi
}

# The scenarios, for one broker reachable at URL with extra CONNECT options.
scenarios() {
  local broker=$1 transport=$2 url=$3
  shift 3
  local opts=("$@")
  # Warm-up, not recorded: JIT compilation (ActiveMQ) and first-use allocations.
  target/release/stompbox bench --url "$url" "${opts[@]}" queue -n 20000 > /dev/null 2>&1 || true
  run "$broker" "$transport" -- --url "$url" "${opts[@]}" queue -p 2 -c 2 -n "$QUEUE_N" -s 128
  run "$broker" "$transport" -- --url "$url" "${opts[@]}" fanout -k 100 -n "$FANOUT_N" -s 128
  # Latency three times: the report takes the run with the median p99.
  for _ in 1 2 3; do
    run "$broker" "$transport" -- --url "$url" "${opts[@]}" latency -r 5000 -t "$LAT_SECS" -s 128
  done
  run "$broker" "$transport" -- --url "$url" "${opts[@]}" chat --rooms 10 --users 10 --rate 2 -t "$CHAT_SECS" -s 128
}

# connections BROKER TRANSPORT URL COUNT [CONNECT options]
connections() {
  local broker=$1 transport=$2 url=$3 count=$4
  shift 4
  run "$broker" "$transport" -- --url "$url" "$@" connections -m "$count" --pid "$BROKER_PID" --hold 1
}

# Journal counters of the Stompbox under test, from /health.
journal_counters() {
  curl -sf http://127.0.0.1:25674/health | python3 -c \
    'import json,sys; j=json.load(sys.stdin)["journal"]; print(j["syncs"], j["records"])'
}

# Durable messages: Stompbox's journal against RabbitMQ's durable classic
# queue and its quorum queue (Raft log, fsynced), persistent SENDs with a
# window of 256 unconfirmed per producer, every RECEIPT checked. Runs
# alternate, three of each; the report shows the median. The disk's own
# sync time is measured first, in the same directory, so the figures can be read.
durable() {
  log "durable messages: sync time of this disk"
  mkdir -p "$WORK/stompbox-data"
  python3 scripts/bench/fsync.py "$WORK" >> "$RESULTS"
  log "durable messages: Stompbox"
  STOMPBOX_MODE=" " start_stompbox
  target/release/stompbox bench --url stomp://127.0.0.1:62613 queue -n 20000 --persistent > /dev/null 2>&1 || true
  for _ in 1 2 3; do
    SCENARIO_AS=queue-memory run stompbox tcp -- --url stomp://127.0.0.1:62613 queue -p 2 -c 2 -n "$DURABLE_N" -s 128 --transient
    read -r syncs0 records0 < <(journal_counters)
    SCENARIO_AS=queue-persistent run stompbox tcp -- --url stomp://127.0.0.1:62613 queue -p 2 -c 2 -n "$DURABLE_N" -s 128 --persistent --window 256
    read -r syncs1 records1 < <(journal_counters)
    python3 scripts/bench/report.py annotate "$RESULTS" syncs=$((syncs1 - syncs0)) records=$((records1 - records0))
  done
  stop_broker
  log "durable messages: RabbitMQ"
  start_rabbitmq
  target/release/stompbox bench --url stomp://127.0.0.1:62614 "${RABBIT[@]}" queue -n 5000 --persistent > /dev/null 2>&1 || true
  for _ in 1 2 3; do
    SCENARIO_AS=queue-persistent run rabbitmq tcp -- --url stomp://127.0.0.1:62614 "${RABBIT[@]}" queue -p 2 -c 2 -n "$DURABLE_N" -s 128 --persistent --window 256
    SCENARIO_AS=queue-quorum run rabbitmq tcp -- --url stomp://127.0.0.1:62614 "${RABBIT[@]}" queue -p 2 -c 2 -n "$DURABLE_N" -s 128 --persistent --window 256 --header x-queue-type:quorum
  done
  stop_broker
}

# Delivery terms: a queue with priorities, and client acks with an ack
# deadline, against the plain queue in the same run; RabbitMQ's priority
# queue alongside. Alternating, three of each; the report shows the median.
delivery() {
  local url=stomp://127.0.0.1:62613 q=(queue -p 2 -c 2 -n "$QUEUE_N" -s 128)
  log "delivery terms: Stompbox"
  start_stompbox
  target/release/stompbox bench --url "$url" queue -n 20000 > /dev/null 2>&1 || true
  for _ in 1 2 3; do
    SCENARIO_AS=queue-plain run stompbox tcp -- --url "$url" "${q[@]}"
    SCENARIO_AS=queue-header run stompbox tcp -- --url "$url" "${q[@]}" --header x-tag:5
    SCENARIO_AS=queue-priorities run stompbox tcp -- --url "$url" "${q[@]}" --priorities
    SCENARIO_AS=queue-client-ack run stompbox tcp -- --url "$url" "${q[@]}" --ack client-individual
    SCENARIO_AS=queue-ack-deadline run stompbox tcp -- --url "$url" "${q[@]}" --ack client-individual --ack-timeout 60000
    SCENARIO_AS=fanout-exact run stompbox tcp -- --url "$url" fanout -k 100 -n "$FANOUT_N" -s 128
    SCENARIO_AS=fanout-wildcard run stompbox tcp -- --url "$url" fanout -k 100 -n "$FANOUT_N" -s 128 --wildcard
  done
  stop_broker
  log "delivery terms: RabbitMQ"
  start_rabbitmq
  url=stomp://127.0.0.1:62614
  target/release/stompbox bench --url "$url" "${RABBIT[@]}" queue -n 20000 > /dev/null 2>&1 || true
  for _ in 1 2 3; do
    SCENARIO_AS=queue-plain run rabbitmq tcp -- --url "$url" "${RABBIT[@]}" "${q[@]}"
    SCENARIO_AS=queue-priorities run rabbitmq tcp -- --url "$url" "${RABBIT[@]}" "${q[@]}" --priorities --header x-max-priority:10
    SCENARIO_AS=queue-client-ack run rabbitmq tcp -- --url "$url" "${RABBIT[@]}" "${q[@]}" --ack client-individual
    SCENARIO_AS=fanout-exact run rabbitmq tcp -- --url "$url" "${RABBIT[@]}" fanout -k 100 -n "$FANOUT_N" -s 128
    SCENARIO_AS=fanout-wildcard run rabbitmq tcp -- --url "$url" "${RABBIT[@]}" fanout -k 100 -n "$FANOUT_N" -s 128 --wildcard
  done
  stop_broker
}

# A CA and a P-256 certificate for localhost and 127.0.0.1, both brokers' for the TLS runs.
make_certificates() {
  local d="$WORK/tls"
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/ca.key" \
    -out "$d/ca.pem" -days 2 -subj "/CN=stompbox bench CA" 2> /dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/server.key" \
    -out "$d/server.csr" -subj "/CN=localhost" 2> /dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$d/ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -out "$d/server.pem" -days 2 -extfile "$d/ext" 2> /dev/null
  # RabbitMQ may run as another user and reads the key too; this is a throwaway.
  chmod 644 "$d/server.key"
}

# TLS: queue throughput over stomp+ssl and plain TCP, alternating, and
# memory per idle TLS connection on fresh brokers; RabbitMQ's TLS listener alongside.
tls() {
  make_certificates
  local q=(queue -p 2 -c 2 -n "$QUEUE_N" -s 128) ca=(--tls-ca "$WORK/tls/ca.pem")
  export WITH_TLS=1
  log "TLS: Stompbox"
  start_stompbox
  wait_port 62616
  target/release/stompbox bench --url stomp+ssl://localhost:62616 "${ca[@]}" queue -n 20000 > /dev/null 2>&1 || true
  for _ in 1 2 3; do
    run stompbox tcp -- --url stomp://127.0.0.1:62613 "${q[@]}"
    run stompbox tls -- --url stomp+ssl://localhost:62616 "${ca[@]}" "${q[@]}"
  done
  stop_broker
  start_stompbox
  wait_port 62616
  connections stompbox tls stomp+ssl://localhost:62616 "$CONNS" "${ca[@]}"
  stop_broker
  start_stompbox
  connections stompbox tcp stomp://127.0.0.1:62613 "$CONNS"
  stop_broker
  log "TLS: RabbitMQ"
  start_rabbitmq
  target/release/stompbox bench --url stomp+ssl://localhost:62617 "${ca[@]}" "${RABBIT[@]}" queue -n 20000 > /dev/null 2>&1 || true
  for _ in 1 2 3; do
    run rabbitmq tcp -- --url stomp://127.0.0.1:62614 "${RABBIT[@]}" "${q[@]}"
    run rabbitmq tls -- --url stomp+ssl://localhost:62617 "${ca[@]}" "${RABBIT[@]}" "${q[@]}"
  done
  stop_broker
  start_rabbitmq
  connections rabbitmq tls stomp+ssl://localhost:62617 "$CONNS" "${ca[@]}" "${RABBIT[@]}"
  stop_broker
  start_rabbitmq
  connections rabbitmq tcp stomp://127.0.0.1:62614 "$CONNS" "${RABBIT[@]}"
  stop_broker
}

# The machine's limit: `stompbox relay` (no queues, ids, acks or checks)
# next to Stompbox, both running, runs alternating, three of each.
limit() {
  log "limit: Stompbox and the do-nothing relay"
  start_stompbox
  target/release/stompbox relay --listen 127.0.0.1:62618 2> "$WORK/relay.log" &
  PIDS+=($!)
  wait_port 62618
  local who url
  for who in stompbox relay; do
    url=stomp://127.0.0.1:$([ "$who" = stompbox ] && echo 62613 || echo 62618)
    target/release/stompbox bench --url "$url" queue -n 20000 > /dev/null 2>&1 || true
  done
  # Each scenario's two runs back to back, the first of the pair taking
  # turns: on shared cores the load from elsewhere drifts over tens of
  # seconds, and a pair measured minutes apart compared two machines.
  local round order scenario
  for round in 1 2 3; do
    order="stompbox relay"
    [ $(( round % 2 )) = 0 ] && order="relay stompbox"
    for scenario in queue queue-ack fanout-100 fanout-1000 latency; do
      for who in $order; do
        url=stomp://127.0.0.1:$([ "$who" = stompbox ] && echo 62613 || echo 62618)
        case $scenario in
          queue) SCENARIO_AS=limit-queue run "$who" tcp -- --url "$url" queue -p 2 -c 2 -n "$QUEUE_N" -s 128 ;;
          queue-ack) SCENARIO_AS=limit-queue-ack run "$who" tcp -- --url "$url" queue -p 2 -c 2 -n "$QUEUE_N" -s 128 --ack client-individual ;;
          fanout-100) SCENARIO_AS=limit-fanout-100 run "$who" tcp -- --url "$url" fanout -k 100 -n "$FANOUT_N" -s 128 ;;
          fanout-1000) SCENARIO_AS=limit-fanout-1000 run "$who" tcp -- --url "$url" fanout -k 1000 -n $(( FANOUT_N / 4 )) -s 128 ;;
          latency) SCENARIO_AS=limit-latency run "$who" tcp -- --url "$url" latency -r 5000 -t "$LAT_SECS" -s 128 ;;
        esac
      done
    done
  done
  stop_broker
}

# Several nodes on one Redis: queue, fan-out and latency with publishers
# and receivers on the same node, on another, on two others; a plain node
# and RabbitMQ in the same run. Redis and the nodes on loopback ports
# 62619-62622.
cluster() {
  [ -x /usr/bin/redis-server ] || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y -qq redis-server; }
  log "cluster: Redis, three nodes, a plain node, RabbitMQ"
  /usr/bin/redis-server --bind 127.0.0.1 --port 62619 --save "" --appendonly no --dir "$WORK" > "$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  wait_port 62619
  start_stompbox
  local i
  for i in 1 2 3; do
    target/release/stompbox --tcp-listen 127.0.0.1:6262$((i - 1)) --http-listen 127.0.0.1:2568$i --log warn \
      --max-connections-per-ip 1000000 --in-memory --cluster redis://127.0.0.1:62619 2> "$WORK/node$i.log" &
    PIDS+=($!)
    wait_port 6262$((i - 1))
  done
  start_rabbitmq
  local n1=stomp://127.0.0.1:62620 n2=stomp://127.0.0.1:62621 n3=stomp://127.0.0.1:62622
  local setup args
  declare -A SETUP=(
    [stompbox]="--url stomp://127.0.0.1:62613"
    [cluster-1]="--url $n1"
    [cluster-2]="--url $n1 --receive-url $n2"
    [cluster-3]="--url $n1 --receive-url $n2 --receive-url $n3"
    [rabbitmq]="--url stomp://127.0.0.1:62614 --login guest --passcode guest --host /"
  )
  for setup in stompbox cluster-1 cluster-3 rabbitmq; do
    target/release/stompbox bench ${SETUP[$setup]} queue -n 20000 > /dev/null 2>&1 || true
  done
  for _ in 1 2 3; do
    for setup in stompbox cluster-1 cluster-2 cluster-3 rabbitmq; do
      args=${SETUP[$setup]}
      SCENARIO_AS=cluster-queue run "$setup" tcp -- $args queue -p 2 -c 2 -n "$QUEUE_N" -s 128
      # persistent:true: in cluster mode always through Redis (no local preference).
      SCENARIO_AS=cluster-queue-persistent run "$setup" tcp -- $args queue -p 2 -c 2 -n "$QUEUE_N" -s 128 --persistent
      SCENARIO_AS=cluster-fanout run "$setup" tcp -- $args fanout -k 100 -n "$FANOUT_N" -s 128
      SCENARIO_AS=cluster-latency run "$setup" tcp -- $args latency -r 5000 -t "$LAT_SECS" -s 128
    done
  done
  # Redis' ceiling: its own CPU (INFO cpu, microseconds) around one run of
  # each kind, apart from the alternating runs above.
  redis_cpu() { redis-cli -p 62619 INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.6f", s }'; }
  local before queue_us=null topic_us=null
  before=$(redis_cpu)
  if target/release/stompbox bench ${SETUP[cluster-1]} queue -p 2 -c 2 -n "$QUEUE_N" -s 128 --persistent > /dev/null 2>&1; then
    queue_us=$(python3 -c "print(round(($(redis_cpu) - $before) * 1e6 / $QUEUE_N, 2))")
  fi
  before=$(redis_cpu)
  if target/release/stompbox bench ${SETUP[cluster-3]} fanout -k 100 -n "$FANOUT_N" -s 128 > /dev/null 2>&1; then
    topic_us=$(python3 -c "print(round(($(redis_cpu) - $before) * 1e6 / $FANOUT_N, 2))")
  fi
  echo "{\"broker\": \"stompbox\", \"transport\": \"tcp\", \"scenario\": \"cluster-redis-cost\", \"results\": {\"queue_us\": $queue_us, \"topic_us\": $topic_us}}" >> "$RESULTS"
  stop_broker
}

# What collecting metrics costs: queue throughput while a scraper reads
# /metrics and the admin page's three API calls every second (Prometheus'
# usual interval is 15 s; the admin page polls every 2 s), against the same
# broker unobserved, alternating, five runs each, with 1,000 other queues
# holding a message each so that every scrape has destinations to walk.
metrics_cost() {
  # Runs of several seconds, so each observed one sees several scrapes.
  local q=(queue -p 2 -c 2 -n $(( QUEUE_N * 10 )) -s 128) token="$WORK/api.token"
  head -c 48 /dev/urandom | base64 | tr -d '\n' > "$token"
  log "metrics: Stompbox with /metrics and the management API polled"
  STOMPBOX_EXTRA="--management-listen 127.0.0.1:25670 --management-token-file $token" start_stompbox
  wait_port 25670
  python3 - <<'PY'
import socket
s = socket.create_connection(("127.0.0.1", 62613))
s.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
s.sendall(b"".join(b"SEND\ndestination:/queue/metrics-pad-%d\n\nx\0" % i for i in range(1000)))
s.sendall(b"DISCONNECT\nreceipt:done\n\n\0")
got = b""
while b"receipt-id:done" not in got:
    chunk = s.recv(65536)
    if not chunk:
        raise SystemExit("the broker closed before the receipt")
    got += chunk
PY
  target/release/stompbox bench --url stomp://127.0.0.1:62613 queue -n 20000 > /dev/null 2>&1 || true
  local scraper
  # The broker's CPU time for 100 rounds, read from /proc: what one costs.
  local ticks_before ticks_after hz
  hz=$(getconf CLK_TCK)
  ticks_before=$(awk '{print $14 + $15}' "/proc/$BROKER_PID/stat")
  python3 scripts/bench/scrape.py 127.0.0.1:25674 127.0.0.1:25670 "$token" 600 100
  ticks_after=$(awk '{print $14 + $15}' "/proc/$BROKER_PID/stat")
  local round_ms=$(( (ticks_after - ticks_before) * 1000 * 10 / hz / 100 ))
  for _ in 1 2 3 4 5 6 7; do
    SCENARIO_AS=queue-unobserved run stompbox tcp -- --url stomp://127.0.0.1:62613 "${q[@]}"
    # One process with kept-alive connections, as Prometheus scrapes: a
    # curl forked per call would cost this 2-core machine more than the scrape.
    python3 scripts/bench/scrape.py 127.0.0.1:25674 127.0.0.1:25670 "$token" 600 &
    scraper=$!
    SCENARIO_AS=queue-observed run stompbox tcp -- --url stomp://127.0.0.1:62613 "${q[@]}"
    kill "$scraper" 2>/dev/null || true
    wait "$scraper" 2>/dev/null || true
  done
  local series
  series=$(curl -sf http://127.0.0.1:25674/metrics | grep -vc '^#' || true)
  echo "{\"broker\": \"stompbox\", \"transport\": \"tcp\", \"scenario\": \"metrics-series\", \"results\": {\"series\": $series, \"round_ms_x10\": $round_ms}}" >> "$RESULTS"
  stop_broker
}

# The command-line client against RabbitMQ: a message sent with
# `stompbox send` comes back out of `stompbox subscribe`, headers and all.
cli_check() {
  log "command-line client against RabbitMQ"
  start_rabbitmq
  local url=stomp://127.0.0.1:62614 body="cli check $$"
  target/release/stompbox send /queue/stompbox-cli-check "$body" -H x-check:yes \
    --url "$url" "${RABBIT[@]}" --timeout 20
  local got
  got=$(target/release/stompbox subscribe /queue/stompbox-cli-check -n 1 --json --idle-timeout 20 \
    --url "$url" "${RABBIT[@]}")
  echo "$got"
  python3 -c 'import json,sys; m=json.loads(sys.argv[1]); assert m["body"]==sys.argv[2] and m["headers"]["x-check"]=="yes", m' "$got" "$body"
  log "command-line client: round trip through RabbitMQ ok"
  stop_broker
}

install_missing
log "building Stompbox (release)"
cargo build --release -p stompbox --locked

RABBIT=(--login guest --passcode guest --host /)

if [ "${ONLY:-}" = delivery ]; then
  delivery
  python3 scripts/bench/report.py render "$RESULTS" docs/benchmarks-delivery.md docs/benchmarks-delivery.svg
  log "wrote docs/benchmarks-delivery.md"
  exit 0
fi

if [ "${ONLY:-}" = limit ]; then
  limit
  python3 scripts/bench/report.py render "$RESULTS" docs/benchmarks-limit.md docs/benchmarks-limit.svg
  log "wrote docs/benchmarks-limit.md"
  exit 0
fi

if [ "${ONLY:-}" = cluster ]; then
  cluster
  python3 scripts/bench/report.py render "$RESULTS" docs/benchmarks-cluster.md docs/benchmarks-cluster.svg
  log "wrote docs/benchmarks-cluster.md"
  exit 0
fi

if [ "${ONLY:-}" = metrics ]; then
  metrics_cost
  python3 scripts/bench/report.py render "$RESULTS" docs/benchmarks-metrics.md docs/benchmarks-metrics.svg
  log "wrote docs/benchmarks-metrics.md"
  exit 0
fi

if [ "${ONLY:-}" = cli ]; then
  cli_check
  exit 0
fi

if [ "${ONLY:-}" = tls ]; then
  tls
  python3 scripts/bench/report.py render "$RESULTS" docs/benchmarks-tls.md docs/benchmarks-tls.svg
  log "wrote docs/benchmarks-tls.md"
  exit 0
fi

if [ "${ONLY:-}" = durable ]; then
  durable
  python3 scripts/bench/report.py render "$RESULTS" docs/benchmarks-durable.md docs/benchmarks-durable.svg
  log "wrote docs/benchmarks-durable.md"
  exit 0
fi

cli_check
log "Stompbox"
start_stompbox
scenarios stompbox tcp stomp://127.0.0.1:62613
scenarios stompbox ws ws://127.0.0.1:25674/ws
stop_broker
# Memory per connection is measured on a fresh process: one that has run
# the other scenarios reuses memory it already holds and looks cheaper.
start_stompbox
connections stompbox tcp stomp://127.0.0.1:62613 "$CONNS"
stop_broker
start_stompbox
connections stompbox ws ws://127.0.0.1:25674/ws "$CONNS"
stop_broker
# And as many as this machine allows, up to the 100,000 of the target.
start_stompbox
SCENARIO_AS=connections-most connections stompbox tcp stomp://127.0.0.1:62613 "$MOST"
stop_broker
start_stompbox
SCENARIO_AS=connections-most connections stompbox ws ws://127.0.0.1:25674/ws "$MOST"
stop_broker

log "RabbitMQ"
start_rabbitmq
scenarios rabbitmq tcp stomp://127.0.0.1:62614 "${RABBIT[@]}"
scenarios rabbitmq ws ws://127.0.0.1:25675/ws "${RABBIT[@]}"
stop_broker
start_rabbitmq
connections rabbitmq tcp stomp://127.0.0.1:62614 "$CONNS" "${RABBIT[@]}"
stop_broker
start_rabbitmq
connections rabbitmq ws ws://127.0.0.1:25675/ws "$CONNS" "${RABBIT[@]}"
stop_broker

log "ActiveMQ"
start_activemq
scenarios activemq tcp stomp://127.0.0.1:62615
stop_broker
start_activemq
connections activemq tcp stomp://127.0.0.1:62615 "$CONNS"
stop_broker

durable

python3 scripts/bench/report.py render "$RESULTS" docs/benchmarks.md docs/benchmarks.svg
log "wrote docs/benchmarks.md and docs/benchmarks.svg"
