#!/usr/bin/env bash
# Backtest speed through the HTTP API: a stored sample of generated events,
# one rule version run over it (alone, then diffed against a second version,
# then scored against labels), timed by the report's own `secs` (engine time,
# without the HTTP round trips).
#
# Usage (from the workspace root, after a release build):
#   cargo build --release -p vigil-gateway -p vigil-replay --bins
#   bash benches/backtest.sh
# Knobs (environment): EVENTS (default 500000), CARDS (50000).
# Needs: curl, jq.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
EVENTS=${EVENTS:-500000}
CARDS=${CARDS:-50000}
WORK=$(mktemp -d /tmp/vigil-backtest-bench.XXXXXX)
trap 'kill "${GW:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP=127.0.0.1:$(port)

mkdir -p "$WORK/rules"
cp "$ROOT/benches/w1.vgl" "$WORK/rules/"
"$BIN/vigil-replay" gen --events "$EVENTS" --cards "$CARDS" --out "$WORK/events.jsonl"
BYTES=$(stat -c %s "$WORK/events.jsonl")

"$BIN/vigil-gateway" --rules "$WORK/rules" --data-dir "$WORK/data" --http "$HTTP" \
  --zmq-pull "tcp://127.0.0.1:$(port)" --zmq-router "tcp://127.0.0.1:$(port)" \
  --zmq-pub "tcp://127.0.0.1:$(port)" --max-body-bytes $((BYTES + 1024)) \
  >"$WORK/gateway.log" 2>&1 &
GW=$!
for _ in $(seq 100); do curl -sf "http://$HTTP/readyz" >/dev/null && break; sleep 0.1; done
KEY=$(grep -A1 'shown only this once' "$WORK/gateway.log" | tail -n1 | tr -d ' ')
auth=(-H "Authorization: Bearer $KEY")

curl -sf "${auth[@]}" -X PUT -H 'Content-Type: application/x-ndjson' \
  --data-binary "@$WORK/events.jsonl" "http://$HTTP/v1/samples/bench" >/dev/null
# Version 2: rule w1 without its schema, asking for x4 instead of x5, so the
# diff has work on both sides.
V2=$(grep -v '^event' "$ROOT/benches/w1.vgl" | sed 's/a.amount \* 5/a.amount * 4/')
curl -sf "${auth[@]}" -H 'Content-Type: text/plain' --data-binary "$V2" \
  "http://$HTTP/v1/rules" >/dev/null
# Labels: every 50th card.
seq 0 50 "$CARDS" | awk '{printf "{\"key\":\"card-%d\"}\n", $1}' >"$WORK/labels.jsonl"

run() { # $1: label, $2: request JSON
  local id state
  id=$(curl -sf "${auth[@]}" -H 'Content-Type: application/json' -d "$2" \
    "http://$HTTP/v1/backtests" | jq -r .id)
  while :; do
    state=$(curl -sf "${auth[@]}" "http://$HTTP/v1/backtests/$id")
    [ "$(jq -r .state <<<"$state")" = running ] || break
    sleep 0.2
  done
  jq -r --arg l "$1" --argjson n "$EVENTS" \
    '"\($l): \(.state), \(.report.events) events, \(.report.alerts) alerts, \(.report.secs * 1000 | floor) ms, \($n / .report.secs | floor) events/s"' <<<"$state"
}
echo "sample: $EVENTS events, $((BYTES / 1048576)) MiB, $CARDS cards; rule w1"
run "one version" '{"rule":"w1","version":2,"sample":"bench"}'
run "diffed against v1" '{"rule":"w1","version":2,"sample":"bench","against":1}'
run "scored against labels" "$(jq -n --rawfile l "$WORK/labels.jsonl" '{rule:"w1",version:2,sample:"bench",labels:$l}')"
