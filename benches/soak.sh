#!/usr/bin/env bash
# Soak: a long run at a steady rate, to show memory stays flat and nothing is
# lost or invented while lists churn and the API is polled.
#
# Usage (from the workspace root, after a release build):
#   cargo build --release -p vigil-gateway -p vigil-replay --bins
#   bash benches/soak.sh
# Binaries are taken from $BIN (default: ${CARGO_TARGET_DIR:-target}/release).
# Knobs (environment): MINUTES (20), RATE (events/s, 50000), CARDS (100000),
# LIST_ENTRIES (entries of each list replacement, 50000), SAMPLE_EVERY
# (seconds between RSS samples, 10), KEEP=1 keeps the temporary directory.
# Needs: curl, jq.
#
# What it does: starts the gateway on its embedded default (two in-process
# engine nodes, the 24 rules of rules/, redb under a temporary directory,
# checkpoints every 2 s) and pushes generated events of every type the rule
# library reads (`vigil-replay load --flavor library --rate RATE`, streamed,
# not held in memory) over ZeroMQ PUSH for MINUTES minutes, with event time
# 50 ms apart (about 35 days in all at the defaults, so the library's longest
# window, 7 days, is full after a quarter of the run) and ending before the
# wall clock. When the gateway
# cannot take RATE, ingest pushes back and fewer events are sent: the report
# gives the rate reached.
# Meanwhile:
#  - every minute both reference lists of the rule library are replaced with
#    LIST_ENTRIES fresh entries (the workload has no Login or Order events,
#    so the lists change memory and checkpoints, never the alerts);
#  - every 5 s the alert API is read (GET /v1/alerts?limit=100);
#  - every SAMPLE_EVERY s the gateway's RSS, events accepted and the last
#    checkpoint's size are written to rss.csv.
# Afterwards the same events are regenerated (`vigil-replay gen --flavor
# library --base-ms`, as many as were sent)
# and replayed (`vigil-replay run`); the ids of the alerts published by the
# gateway (its alert PUB) must equal replay's. Prints the RSS curve a minute a
# line, the checkpoint sizes, and the comparison; exits 1 on a mismatch.
# shellcheck disable=SC2016
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
MINUTES=${MINUTES:-20}
RATE=${RATE:-50000}
CARDS=${CARDS:-100000}
LIST_ENTRIES=${LIST_ENTRIES:-50000}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}
# At most this many events (the run stops after MINUTES anyway).
EVENTS=$((RATE * MINUTES * 60))

for b in vigil-gateway vigil-replay; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: build it with --release first" >&2; exit 2; }
done
for t in curl jq; do
  command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 2; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/vigil-soak.XXXXXX")
PIDS=()
cleanup() {
  local rc=$?
  local i p
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    p=${PIDS[i]}
    kill "$p" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
    echo "logs kept in $TMP" >&2
  else
    rm -rf "$TMP"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

USED=" "
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    case "$USED" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      USED="$USED$p "
      echo "$p"
      return
    fi
  done
}

HTTP=127.0.0.1:$(free_port)
PULL=tcp://127.0.0.1:$(free_port)
ROUTER=tcp://127.0.0.1:$(free_port)
PUB=tcp://127.0.0.1:$(free_port)

echo "== gateway: embedded store, 2 in-process nodes, rules/ ($HTTP)"
"$BIN/vigil-gateway" --rules "$ROOT/rules" --data-dir "$TMP/data" --http "$HTTP" \
  --zmq-pull "$PULL" --zmq-router "$ROUTER" --zmq-pub "$PUB" \
  --checkpoint-every 2s >"$TMP/gateway.log" 2>&1 &
GW=$!
PIDS+=("$GW")
KEY=""
for _ in $(seq 300); do
  KEY=$(grep -o 'vk_[A-Za-z0-9_]*' "$TMP/gateway.log" | head -1 || true)
  [ -n "$KEY" ] && curl -fsS "http://$HTTP/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
[ -n "$KEY" ] || { echo "the gateway printed no admin key" >&2; exit 1; }
AUTH="Authorization: Bearer $KEY"
api() { curl -fsS -H "$AUTH" "$@"; }

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$GW/status" 2>/dev/null || echo 0; }

# Event time: 50 ms apart (replay-tool/src/library.rs, STEP_MS), the last
# event a minute before the start.
BASE_MS=$(($(date +%s%3N) - EVENTS * 50 - 60000))

echo "== library workload at $RATE/s for $MINUTES min ($CARDS cards), base $BASE_MS"
START=$(date +%s)
"$BIN/vigil-replay" load --flavor library --generate "$EVENTS" --cards "$CARDS" \
  --base-ms "$BASE_MS" --rate "$RATE" --max-secs $((MINUTES * 60)) --batch 100 \
  --push "$PULL" --sub "$PUB" --http "$HTTP" --api-key "$KEY" --json \
  --alerts-out "$TMP/gateway-alerts.jsonl" >"$TMP/load.json" 2>"$TMP/load.err" &
LOAD=$!
PIDS+=("$LOAD")

# A list replacement: LIST_ENTRIES entries unique to this round.
replace_lists() {
  local round=$1 name
  for name in restricted_symbols known_devices; do
    seq 1 "$LIST_ENTRIES" | sed "s/^/$name-$round-/" | jq -R . | jq -s . >"$TMP/list.json"
    api -X PUT -H 'Content-Type: application/json' --data-binary "@$TMP/list.json" \
      "http://$HTTP/v1/lists/$name" >/dev/null
  done
}

echo "elapsed_s,rss_kb,events_accepted,checkpoint_id,checkpoint_bytes" >"$TMP/rss.csv"
ROUND=0
NEXT_LIST=0
NEXT_POLL=0
NEXT_SAMPLE=0
POLLS=0
POLL_FAIL=0
while kill -0 "$LOAD" 2>/dev/null; do
  NOW=$(($(date +%s) - START))
  if [ "$NOW" -ge "$NEXT_LIST" ]; then
    replace_lists "$ROUND" || echo "list replacement $ROUND failed" >&2
    ROUND=$((ROUND + 1))
    NEXT_LIST=$((NEXT_LIST + 60))
  fi
  if [ "$NOW" -ge "$NEXT_POLL" ]; then
    if api "http://$HTTP/v1/alerts?limit=100" >/dev/null; then POLLS=$((POLLS + 1)); else POLL_FAIL=$((POLL_FAIL + 1)); fi
    NEXT_POLL=$((NEXT_POLL + 5))
  fi
  if [ "$NOW" -ge "$NEXT_SAMPLE" ]; then
    C=$(api "http://$HTTP/v1/cluster" 2>/dev/null || echo '{}')
    echo "$NOW,$(rss_kb),$(jq -r '.events_accepted // 0' <<<"$C"),$(jq -r '.checkpoint.id // 0' <<<"$C"),$(jq -r '.checkpoint.bytes // 0' <<<"$C")" >>"$TMP/rss.csv"
    NEXT_SAMPLE=$((NEXT_SAMPLE + SAMPLE_EVERY))
  fi
  sleep 1
done
wait "$LOAD" || { cat "$TMP/load.err"; echo "load generator failed" >&2; exit 1; }
SENT=$(jq -r .events "$TMP/load.json")
jq -r '"events sent \(.events) in \(.send_secs | floor) s (\(.send_rate | floor)/s), through the cluster \(.cluster_rate | floor)/s, alerts received \(.alerts)\ningest->alert latency us: p50 \(.latency_us_p50)  p99 \(.latency_us_p99)  p99.9 \(.latency_us_p999)  max \(.latency_us_max)"' "$TMP/load.json"
echo "$(($(date +%s) - START)),$(rss_kb),$(api "http://$HTTP/v1/cluster" | jq -r '.events_accepted'),," >>"$TMP/rss.csv"

echo "== replay of the same events"
"$BIN/vigil-replay" gen --flavor library --events "$SENT" --cards "$CARDS" --base-ms "$BASE_MS" |
  "$BIN/vigil-replay" run --rules "$ROOT/rules" --events - --out "$TMP/replay-alerts.jsonl" \
    >"$TMP/replay.txt" 2>&1
jq -r .id "$TMP/gateway-alerts.jsonl" | sort >"$TMP/gateway-ids"
jq -r .id "$TMP/replay-alerts.jsonl" | sort >"$TMP/replay-ids"
ONLY_GW=$(comm -23 "$TMP/gateway-ids" "$TMP/replay-ids" | wc -l)
ONLY_RP=$(comm -13 "$TMP/gateway-ids" "$TMP/replay-ids" | wc -l)
DUPS=$(uniq -d "$TMP/gateway-ids" | wc -l)

echo
echo "== RSS of the gateway process (gateway + 2 nodes), one line a minute"
awk -F, 'NR > 1 && $1 != "" { m = int($1 / 60); last[m] = $0 } END {
  printf "%-6s %10s %14s %12s\n", "minute", "RSS MiB", "events", "checkpoint"
  for (i = 0; i in last; i++) { split(last[i], f, ",")
    printf "%-6d %10.1f %14d %12s\n", i, f[2] / 1024, f[3], (f[5] == "" ? "-" : sprintf("%.1f MiB", f[5] / 1048576)) } }' "$TMP/rss.csv"
WARM=$(awk -F, -v w=300 'NR > 1 && $1 >= w { print $2; exit }' "$TMP/rss.csv")
awk -F, -v w=300 'NR > 1 && $1 >= w && $2 > 0 { if (min == "" || $2 < min) min = $2; if ($2 > max) max = $2 } END {
  printf "RSS after warm-up (from 5 min): min %.1f MiB, max %.1f MiB\n", min / 1024, max / 1024 }' "$TMP/rss.csv"
awk -F, 'NR > 1 && $5 > 0 { print $5 }' "$TMP/rss.csv" | sort -n | awk '{ s[NR] = $1 } END {
  if (NR) printf "checkpoints sampled: %d, size median %.1f MiB, max %.1f MiB\n", NR, s[int((NR + 1) / 2)] / 1048576, s[NR] / 1048576 }'
echo "list replacements: $ROUND (x2 lists of $LIST_ENTRIES entries); alert API polls: $POLLS ok, $POLL_FAIL failed"
echo "alerts: gateway $(wc -l <"$TMP/gateway-ids"), replay $(wc -l <"$TMP/replay-ids"), only gateway $ONLY_GW, only replay $ONLY_RP, duplicated $DUPS"
echo "warm-up RSS sample: ${WARM:-?} kB; full samples in rss.csv (KEEP=1 keeps $TMP)"
cp "$TMP/rss.csv" "${SOAK_CSV:-$ROOT/target/soak-rss.csv}" 2>/dev/null || true
if [ "$ONLY_GW" != 0 ] || [ "$ONLY_RP" != 0 ] || [ "$DUPS" != 0 ] || [ "$POLL_FAIL" != 0 ]; then
  echo "MISMATCH" >&2
  exit 1
fi
