#!/usr/bin/env bash
# The engine benchmark (issue 17): in one run on one machine, the
# hand-written floor and the engine on the same generated events, so the
# ratios survive a noisy shared machine. Prints:
#   - the floor's W1 and W2 (../shared/bench/floor, built outside the tree);
#   - the engine's W1 and W2 on pre-decoded events (one core);
#   - `vigil-replay run` W1 and W2 from JSONL, one thread and all cores;
#   - the decoder on serde_json, sonic-rs and simd-json (events/s);
#   - heap allocations per event in steady state (W1, W2);
#   - bytes per open partial match; the Kleene case's state at 1k/2k/3k events;
#   - a node's redeploy time and memory with 1,024 vs 16 live shards;
#   - every engine/floor ratio.
#
# Usage (from the workspace root):  bash benches/engine.sh
# Knobs (environment): EVENTS (default 2000000), CARDS (100000),
#   FLOOR (the floor's directory, default ../shared/bench/floor),
#   FLOOR_TARGET (its build directory, default /tmp/vigil-floor-target).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
EVENTS=${EVENTS:-2000000}
CARDS=${CARDS:-100000}
FLOOR=${FLOOR:-$ROOT/../shared/bench/floor}
FLOOR_TARGET=${FLOOR_TARGET:-/tmp/vigil-floor-target}
WORK=$(mktemp -d /tmp/vigil-engine-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

echo "== building (release)"
cargo build -q --release -p vigil-replay --bins
cargo build -q --release -p cep-engine --examples
# A copy: cargo writes a lock file next to the manifest, and shared/ is
# read-only in CI.
cp -r "$FLOOR" "$WORK/floor"
CARGO_TARGET_DIR=$FLOOR_TARGET cargo build -q --release --manifest-path "$WORK/floor/Cargo.toml"
FLOOR_BIN=$(find "$FLOOR_TARGET/release" -maxdepth 1 -type f -executable -name 'vigil-floor*' | head -n1)

"$BIN/vigil-replay" gen --events "$EVENTS" --cards "$CARDS" --out "$WORK/gen.jsonl"
CORES=$(nproc)
echo "== $EVENTS events over $CARDS cards; $CORES cores; $(date -u +%FT%TZ)"

out() { tee -a "$WORK/results"; }
"$FLOOR_BIN" "$WORK/gen.jsonl" | out
"$BIN/examples/engine_bench" "$WORK/gen.jsonl" "$ROOT/benches/w1.vgl" "$ROOT/benches/w2.vgl" | out

# Replay from JSONL: the summary's own events/s (decode + engine + alert
# output to a file), best of 3.
replay() { # rules threads
  local best=0 eps args=(--threads "$2")
  for _ in 1 2 3; do
    if ! "$BIN/vigil-replay" run --rules "$1" --events "$WORK/gen.jsonl" --out "$WORK/alerts.jsonl" \
        --json-summary "${args[@]}" 2>"$WORK/summary.json"; then
      echo "n/a ($(tail -n1 "$WORK/summary.json"))"
      return
    fi
    eps=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["events_per_sec"]))' "$WORK/summary.json")
    [ "$eps" -gt "$best" ] && best=$eps
  done
  echo "$best"
}
for w in w1 w2; do
  for threads in 1 "$CORES"; do
    echo "replay $w threads $threads: $(replay "$ROOT/benches/$w.vgl" "$threads") events/s" | out
  done
done

"$BIN/examples/json_bench" "$WORK/gen.jsonl" "$ROOT/benches/w1.vgl" | out
"$BIN/examples/alloc_per_event" "$WORK/gen.jsonl" "$ROOT/benches/w1.vgl" "$ROOT/benches/w2.vgl" | out
"$BIN/examples/mem_per_run" | out
"$BIN/examples/deploy_cost" | out
"$BIN/examples/kleene_state" | out

python3 - "$WORK/results" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def eps(pattern):
    m = re.search(pattern + r".*?([0-9]+) events/s", text)
    return float(m.group(1)) if m else None
floor = {"w1": eps(r"floor w1:"), "w2": eps(r"floor w2:")}
engine = {"w1": eps(r"engine \S*w1\.vgl:"), "w2": eps(r"engine \S*w2\.vgl:")}
print("== ratios (engine / floor, same run; the target is >= 0.33)")
for w in ("w1", "w2"):
    if floor[w] and engine[w]:
        print(f"{w}: engine {engine[w]:,.0f} / floor {floor[w]:,.0f} = {engine[w] / floor[w]:.3f}")
    for m in re.finditer(rf"replay {w} threads (\d+): ([0-9]+) events/s", text):
        print(f"{w}: replay from JSONL, {m.group(1)} thread(s) {float(m.group(2)):,.0f} / floor = {float(m.group(2)) / floor[w]:.3f}")
deploys = {int(m.group(1)): (float(m.group(2)), int(m.group(3))) for m in re.finditer(
    r"(\d+) live shards: redeploy of 40 rules ([0-9.]+) ms; node heap (\d+) kB", text)}
if 16 in deploys and 1024 in deploys:
    (t16, r16), (t1k, r1k) = deploys[16], deploys[1024]
    print(f"node with 1024 vs 16 live shards (the target is <= 2): redeploy {t1k / t16:.2f}x, heap {r1k / max(r16, 1):.2f}x")
PY
