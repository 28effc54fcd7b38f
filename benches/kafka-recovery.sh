#!/usr/bin/env bash
# Kafka ingest, checkpoints and node failover, end to end on one machine.
#
# Usage (from the workspace root, after a release build):
#   cargo build --release -p vigil-gateway -p cep-engine -p vigil-replay --bins
#   bash benches/kafka-recovery.sh
# Binaries are taken from $BIN (default: ${CARGO_TARGET_DIR:-target}/release).
# Knobs (environment): EVENTS (first batch, default 1000000), SECOND (second
# batch, 500000), CARDS (100000), NODE_TIMEOUT (2s), CHECKPOINT_EVERY (2s),
# KEEP=1 keeps the temporary directory with the logs (kept anyway on failure).
# Needs: tansu (~/.cargo/bin/tansu, see .ci/test.sh), curl, jq.
#
# What it does: starts tansu (memory storage) on a free loopback port, creates
# a 4-partition topic and produces EVENTS generated events (`vigil-replay
# produce`, keyed by card); starts 2 `vigil-node` processes and a gateway
# consuming the topic (benches/w1.vgl, --idle 0s) and polls /v1/cluster:
#  (a) ingest: events/s from the first poll that sees accepted events to the
#      first that sees all EVENTS accepted and every node at lag 0;
#  (b) every checkpoint seen (distinct ids): bytes, shards, duration_ms
#      (barrier -> durable), snapshot_ms; median and max;
#  (c) recovery: SECOND more events are produced; once they flow, node-1 gets
#      kill -9; time from the kill to node-1 holding no shard (failover), and
#      to checkpoint.last_recovery_ms appearing (the node that took over has
#      replayed and caught up), plus that figure itself.
# Then the results table and a summary of the gateway's WARN/ERROR lines.
# wait_for's conditions are single-quoted on purpose (evaluated after each
# poll), so the variables they read look unused to shellcheck:
# shellcheck disable=SC2016,SC2034
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
TANSU=${TANSU:-${CARGO_HOME:-$HOME/.cargo}/bin/tansu}
EVENTS=${EVENTS:-1000000}
SECOND=${SECOND:-500000}
CARDS=${CARDS:-100000}
NODE_TIMEOUT=${NODE_TIMEOUT:-2s}
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-2s}
TOPIC=events
POLL=0.05

for b in vigil-gateway vigil-node vigil-replay; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: build it with --release first" >&2; exit 2; }
done
[ -x "$TANSU" ] || { echo "missing the tansu broker at $TANSU (see .ci/test.sh)" >&2; exit 2; }
for t in curl jq; do
  command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 2; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/vigil-kafka-bench.XXXXXX")
PIDS=()
cleanup() {
  local rc=$?
  local i p
  # Newest first: producer, gateway (drains, last checkpoint), nodes, broker.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    p=${PIDS[i]}
    kill "$p" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
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

# A loopback port nothing listens on (and not handed out before).
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

wait_port() { # port, what, seconds
  local i
  for i in $(seq $(($3 * 10))); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for $2 on port $1" >&2
  exit 1
}

now_ms() { date +%s%3N; }

KAFKA_PORT=$(free_port)
HTTP_PORT=$(free_port)
N0_PORT=$(free_port)
N1_PORT=$(free_port)
BROKERS=127.0.0.1:$KAFKA_PORT
HTTP=127.0.0.1:$HTTP_PORT
# The operations listener: /v1/cluster and /metrics without an API key.
OPS=127.0.0.1:$(free_port)

echo "== tansu broker on $BROKERS (memory storage)"
"$TANSU" broker \
  --listener-url "tcp://$BROKERS" --advertised-listener-url "tcp://$BROKERS" \
  --storage-engine memory://tansu/ >"$TMP/tansu.log" 2>&1 &
PIDS+=($!)
wait_port "$KAFKA_PORT" tansu 30

echo "== produce $EVENTS generated events to $TOPIC (4 partitions)"
"$BIN/vigil-replay" produce --brokers "$BROKERS" --topic "$TOPIC" --partitions 4 \
  --generate "$EVENTS" --cards "$CARDS" | tee "$TMP/produce1.txt"

echo "== 2 vigil-node processes, gateway (--node-timeout $NODE_TIMEOUT, --checkpoint-every $CHECKPOINT_EVERY)"
"$BIN/vigil-node" --bind "tcp://127.0.0.1:$N0_PORT" --name node-0 --http off \
  >"$TMP/node0.log" 2>&1 &
NODE0=$!
PIDS+=("$NODE0")
"$BIN/vigil-node" --bind "tcp://127.0.0.1:$N1_PORT" --name node-1 --http off \
  >"$TMP/node1.log" 2>&1 &
NODE1=$!
PIDS+=("$NODE1")
GW_ARGS=(--rules "$ROOT/benches/w1.vgl" --data-dir "$TMP/data"
  --kafka "$BROKERS" --topic "$TOPIC" --group vigil-bench --idle 0s
  --http "$HTTP" --metrics-addr "$OPS" --zmq-pull "tcp://127.0.0.1:$(free_port)"
  --zmq-router "tcp://127.0.0.1:$(free_port)" --zmq-pub "tcp://127.0.0.1:$(free_port)"
  --node "tcp://127.0.0.1:$N0_PORT" --node "tcp://127.0.0.1:$N1_PORT"
  --node-timeout "$NODE_TIMEOUT" --checkpoint-every "$CHECKPOINT_EVERY")
echo "   vigil-gateway ${GW_ARGS[*]}"
"$BIN/vigil-gateway" "${GW_ARGS[@]}" >"$TMP/gateway.log" 2>&1 &
PIDS+=($!)

# One poll of /v1/cluster as a tab-separated line:
# ms accepted rejected all_up_lag0 n0_shards n1_shards n1_state
# ck_id ck_bytes ck_shards ck_duration ck_snapshot last_recovery_ms
# buffered (events the nodes hold for the watermark) active_runs
# alerts_published alerts_deduplicated copies_shed
JQ='[ .events_accepted,
      ([.events_rejected // {} | .[]] | add // 0),
      ([.nodes[] | select(.state == "up") | (.lag_events == 0 and .queued_copies == 0)] | all),
      .nodes[0].shards, .nodes[1].shards, .nodes[1].state,
      .checkpoint.id, .checkpoint.bytes, .checkpoint.shards,
      .checkpoint.duration_ms, .checkpoint.snapshot_ms,
      (.checkpoint.last_recovery_ms // "none"),
      ([.nodes[].buffered] | add), ([.nodes[].active_runs] | add),
      .alerts_published, .alerts_deduplicated, .copies_shed ] | @tsv'
SAMPLES=$TMP/samples.tsv
: >"$SAMPLES"
poll() {
  local t body
  t=$(now_ms)
  body=$(curl -s --max-time 2 "http://$OPS/v1/cluster") || return 1
  S=$(printf '%s' "$body" | jq -r "$JQ") || return 1
  S="$t	$S"
  printf '%s\n' "$S" >>"$SAMPLES"
  IFS=$'\t' read -r S_MS S_ACC S_REJ S_DONE S_N0 S_N1 _ _ _ _ _ _ S_REC _ _ \
    S_ALERTS S_DEDUP S_SHED <<<"$S"
}

wait_for() { # seconds, what, condition (evaluated after each poll)
  local deadline=$(($(now_ms) + $1 * 1000))
  while [ "$(now_ms)" -lt $deadline ]; do
    if poll && eval "$3"; then return 0; fi
    sleep "$POLL"
  done
  echo "timed out after $1 s waiting for $2; last sample: ${S:-none}" >&2
  exit 1
}

# (a) ingest of the backlog.
wait_for 60 "the first accepted event" '[ "$S_ACC" -gt 0 ]'
A_T0=$S_MS A_ACC0=$S_ACC
wait_for 180 "all $EVENTS events accepted" '[ "$S_ACC" -ge "$EVENTS" ]'
A_TACC=$S_MS
wait_for 180 "all $EVENTS events processed" \
  '[ "$S_ACC" -ge "$EVENTS" ] && [ "$S_DONE" = true ]'
A_T1=$S_MS
[ "$S_ACC" -eq "$EVENTS" ] || echo "note: accepted $S_ACC, produced $EVENTS" >&2
[ "$S_REJ" -eq 0 ] || echo "note: $S_REJ events rejected" >&2
A_RATE=$(((EVENTS - A_ACC0) * 1000 / (A_T1 - A_T0)))
A_ACC_RATE=$(((EVENTS - A_ACC0) * 1000 / (A_TACC - A_T0)))
echo "   ingest: $((EVENTS - A_ACC0)) events in $((A_T1 - A_T0)) ms after the first poll that saw $A_ACC0 -> $A_RATE events/s"
A_END_LINE=$(wc -l <"$SAMPLES")

# (c) recovery: the second batch flows, node-1 is killed.
echo "== produce $SECOND more events (ids continue), kill -9 node-1 once they flow"
"$BIN/vigil-replay" produce --brokers "$BROKERS" --topic "$TOPIC" \
  --generate "$SECOND" --from "$EVENTS" --cards "$CARDS" >"$TMP/produce2.txt" 2>&1 &
PRODUCER=$!
PIDS+=("$PRODUCER")
FLOWING=$((EVENTS + SECOND / 10))
wait_for 120 "the second batch flowing" '[ "$S_ACC" -ge "$FLOWING" ]'
REC_BEFORE=$S_REC
KILL_ACC=$S_ACC
kill -9 "$NODE1"
T_KILL=$(now_ms)
{ wait "$NODE1"; } 2>/dev/null || true
echo "   killed node-1 at $KILL_ACC accepted events"
wait_for 60 "failover (node-1 holding no shard)" '[ "$S_N1" -eq 0 ]'
T_FAILOVER=$S_MS
FAILOVER_N0=$S_N0
wait_for 120 "the shards' new node caught up (last_recovery_ms)" \
  '[ "$S_REC" != none ] && [ "$S_REC" != "$REC_BEFORE" ]'
T_RECOVERED=$S_MS
REC_MS=$S_REC
if ! wait "$PRODUCER"; then
  echo "the second producer failed:" >&2
  cat "$TMP/produce2.txt" >&2
  exit 1
fi
cat "$TMP/produce2.txt"
TOTAL=$((EVENTS + SECOND))
wait_for 180 "all $TOTAL events processed" \
  '[ "$S_ACC" -ge "$TOTAL" ] && [ "$S_DONE" = true ]'
C_T1=$S_MS
C_ACC=$S_ACC
C_REJ=$S_REJ
C_ALERTS="$S_ALERTS published, $S_DEDUP emitted again and dropped; $S_SHED copies shed"

# (b) checkpoints seen (distinct ids, id 0 = none yet).
ck_stats() { # lines of samples -> "count bytes_med bytes_max shards_med shards_max dur_med dur_max snap_med snap_max"
  awk -F'\t' '$8 > 0 && !seen[$8]++ { print $9, $10, $11, $12 }' |
    sort -n | awk '
      { for (i = 1; i <= 4; i++) v[i, NR] = $i; n = NR }
      function med(c,   a, i, j, t, k) {
        for (i = 1; i <= n; i++) a[i] = v[c, i]
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        k = int((n + 1) / 2); return (n % 2) ? a[k] : (a[k] + a[k + 1]) / 2
      }
      function mx(c,   i, m) { m = v[c, 1]; for (i = 2; i <= n; i++) if (v[c, i] > m) m = v[c, i]; return m }
      END {
        if (n == 0) { print 0, "-", "-", "-", "-", "-", "-", "-", "-"; exit }
        print n, med(1), mx(1), med(2), mx(2), med(3), mx(3), med(4), mx(4)
      }'
}
read -r CK_N CK_BMED CK_BMAX CK_SMED CK_SMAX CK_DMED CK_DMAX CK_PMED CK_PMAX \
  < <(ck_stats <"$SAMPLES")
read -r CKA_N CKA_BMED CKA_BMAX _ _ CKA_DMED CKA_DMAX CKA_PMED CKA_PMAX \
  < <(head -n "$A_END_LINE" "$SAMPLES" | ck_stats)

mib() { awk -v b="$1" 'BEGIN { if (b == "-") print "-"; else printf "%.1f MiB", b / 1048576 }'; }

GW_LOG=$TMP/gateway.log
WARNS=$(grep -c ' WARN ' "$GW_LOG" || true)
ERRORS=$(grep -c ' ERROR ' "$GW_LOG" || true)

echo
echo "== results (gateway + 2 vigil-node processes, benches/w1.vgl, $CARDS cards, 4 partitions, one machine)"
printf '| %-52s | %s |\n' "measurement" "result"
printf '|%s|%s|\n' "------------------------------------------------------" "------------------------------"
printf '| %-52s | %s |\n' \
  "produce (vigil-replay produce, 1st batch)" "$(sed -n 's/.*(\([0-9]*\) messages\/s).*/\1 messages\/s/p' "$TMP/produce1.txt")" \
  "Kafka ingest, $EVENTS events (backlog), all processed" "$A_RATE events/s ($((A_T1 - A_T0)) ms)" \
  "  of which: all accepted by the gateway" "$A_ACC_RATE events/s ($((A_TACC - A_T0)) ms; nodes at lag 0 $((A_T1 - A_TACC)) ms later)" \
  "checkpoints seen (all run / during ingest)" "$CK_N / $CKA_N (every $CHECKPOINT_EVERY)" \
  "checkpoint size, median / max" "$(mib "$CK_BMED") / $(mib "$CK_BMAX") ($CK_SMED / $CK_SMAX shards)" \
  "checkpoint duration_ms (barrier->durable), med / max" "$CK_DMED / $CK_DMAX ms (during ingest: $CKA_DMED / $CKA_DMAX)" \
  "checkpoint snapshot_ms, median / max" "$CK_PMED / $CK_PMAX ms (during ingest: $CKA_PMED / $CKA_PMAX)" \
  "node killed (kill -9) at" "$KILL_ACC of $TOTAL accepted; --node-timeout $NODE_TIMEOUT" \
  "kill -> failover detected (node-1 0 shards)" "$((T_FAILOVER - T_KILL)) ms (node-0 then holds $FAILOVER_N0)" \
  "kill -> taken-over shards caught up (observed)" "$((T_RECOVERED - T_KILL)) ms" \
  "checkpoint.last_recovery_ms (restore+replay->caught up)" "$REC_MS ms" \
  "second batch after the kill, all processed" "accepted $C_ACC (rejected $C_REJ), $((C_T1 - T_KILL)) ms after the kill" \
  "alerts (whole run)" "$C_ALERTS" \
  "gateway log" "$WARNS WARN, $ERRORS ERROR lines"
POLL_MED=$(awk -F'\t' 'NR > 1 { print $1 - p } { p = $1 }' "$SAMPLES" | sort -n |
  awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
echo "(/v1/cluster polled with curl+jq, $(wc -l <"$SAMPLES") polls, median $POLL_MED ms apart: times are that coarse)"
if [ "$((WARNS + ERRORS))" -gt 0 ]; then
  echo
  echo "== gateway WARN/ERROR lines (count, level, message without timestamps)"
  { grep -E ' (WARN|ERROR) ' "$GW_LOG" |
    sed -E 's/^[^ ]+ +//; s/ [a-z_]+=[^ ]+//g' |
    sort | uniq -c | sort -rn | head -20; } || true
fi
