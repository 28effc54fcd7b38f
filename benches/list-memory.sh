#!/usr/bin/env bash
# Memory and checkpoint cost of one large reference-list entry with every
# shard live (issue 15, item 2). A gateway with rule W1 and two
# in-process nodes gets ~20,000 cards of traffic (all 1,024 shards hold an
# engine), then one 1 MB list entry; the script prints the gateway's RSS and
# the durable checkpoint's size before and after.
#
# Usage (from the workspace root, after a release build):
#   cargo build --release -p vigil-gateway -p vigil-replay --bins
#   bash benches/list-memory.sh
# Knobs (environment): CARDS (default 20000), EVENTS (100000), ENTRY_BYTES
# (1000000; 10 gives the control run: the same steps with a tiny entry), FIVE_MB=1 also
# puts a 5 MB entry (the gateway then runs with --max-list-entry-bytes 8 MiB;
# by default an entry over 1 MiB is refused with 400 list_entry_too_long).
# BIN=target/debug measures a debug build instead.
# Needs: curl, jq.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
CARDS=${CARDS:-20000}
EVENTS=${EVENTS:-100000}
FIVE_MB=${FIVE_MB:-0}
# The `gen` workload fits the W1 schema (the library rules want more fields).
RULES=${RULES:-$ROOT/benches/w1.vgl}
WORK=$(mktemp -d /tmp/vigil-list-memory.XXXXXX)
trap 'kill "${GW:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP=127.0.0.1:$(port)
PULL=tcp://127.0.0.1:$(port)
PUB=tcp://127.0.0.1:$(port)
extra=()
[ "$FIVE_MB" = 1 ] && extra=(--max-list-entry-bytes $((8 << 20)))

"$BIN/vigil-gateway" --rules "$RULES" --data-dir "$WORK/data" --http "$HTTP" \
  --zmq-pull "$PULL" --zmq-router "tcp://127.0.0.1:$(port)" --zmq-pub "$PUB" \
  "${extra[@]}" >"$WORK/gateway.log" 2>&1 &
GW=$!
for _ in $(seq 300); do curl -sf "http://$HTTP/readyz" >/dev/null && break; sleep 0.1; done
KEY=$(grep -A1 'shown only this once' "$WORK/gateway.log" | tail -n1 | tr -d ' ')
auth=(-H "Authorization: Bearer $KEY")

rss_mb() { echo $(($(ps -o rss= -p "$GW") / 1024)); }
cluster() { curl -sf "${auth[@]}" "http://$HTTP/v1/cluster"; }
# Waits for a checkpoint newer than $1 that covers every event accepted so
# far; prints "id bytes shards ms".
next_checkpoint() {
  local c want
  want=$(cluster | jq .events_accepted)
  while :; do
    c=$(cluster)
    if [ "$(jq -r .checkpoint.id <<<"$c")" -gt "$1" ] &&
      [ "$(jq -r .checkpoint.seq <<<"$c")" -ge "$want" ]; then
      jq -r '"\(.checkpoint.id) \(.checkpoint.bytes) \(.checkpoint.shards) \(.checkpoint.duration_ms)"' <<<"$c"
      return
    fi
    sleep 0.2
  done
}

"$BIN/vigil-replay" load --generate "$EVENTS" --cards "$CARDS" --push "$PULL" \
  --sub "$PUB" --http "$HTTP" --api-key "$KEY" >"$WORK/load.txt"
read -r id bytes shards ms < <(next_checkpoint 0)
echo "traffic: $EVENTS events over $CARDS cards; shards in the checkpoint: $shards"
echo "before:        RSS $(rss_mb) MB, checkpoint $bytes bytes ($ms ms)"

put_entry() { # $1: list name, $2: entry bytes
  head -c "$2" /dev/zero | tr '\0' x | jq -Rs '[., "bench-merchant"]' >"$WORK/list.json"
  curl -s -o "$WORK/put.json" -w '%{http_code}' "${auth[@]}" -X PUT \
    -H 'Content-Type: application/json' --data-binary "@$WORK/list.json" \
    "http://$HTTP/v1/lists/$1"
}

# A little traffic after each change, so a checkpoint follows it even where
# an unchanged state is not checkpointed again.
touch_state() {
  "$BIN/vigil-replay" load --generate 1000 --cards "$CARDS" --push "$PULL" \
    --sub "$PUB" --http "$HTTP" --api-key "$KEY" >/dev/null
}

code=$(put_entry bench-1mb "${ENTRY_BYTES:-1000000}")
[ "$code" = 200 ] || { echo "PUT 1 MB entry: $code $(cat "$WORK/put.json")"; exit 1; }
touch_state
read -r id bytes1 _ ms1 < <(next_checkpoint "$id")
sleep 2
echo "1 MB entry:    RSS $(rss_mb) MB, checkpoint $bytes1 bytes ($ms1 ms), +$((bytes1 - bytes)) bytes"

if [ "$FIVE_MB" = 1 ]; then
  code=$(put_entry bench-5mb 5000000)
  [ "$code" = 200 ] || { echo "PUT 5 MB entry: $code $(cat "$WORK/put.json")"; exit 1; }
  touch_state
  read -r id bytes5 _ ms5 < <(next_checkpoint "$id")
  sleep 2
  echo "+5 MB entry:   RSS $(rss_mb) MB, checkpoint $bytes5 bytes ($ms5 ms), +$((bytes5 - bytes)) bytes"
else
  code=$(put_entry bench-5mb 5000000)
  echo "5 MB entry with the default caps: $code $(jq -c .error "$WORK/put.json")"
fi
