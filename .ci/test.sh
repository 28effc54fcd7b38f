#!/usr/bin/env bash
# The project's test command (README): installs and starts what the tests need,
# then runs formatting, lint and the whole test suite. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

# Redis (the store tests start their own redis-server on a free loopback
# port) and headless Chromium with its WebDriver (the console's browser
# tests, tests/console.rs): Debian packages.
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  # Debian starts a system Redis on 6379; the tests do not use it.
fi
redis-server --version
chromium --version 2>/dev/null || true

# A Kafka-compatible broker for the Kafka tests (tests/kafka.rs): tansu from
# the crates registry, pinned to the version the tests were written against
# (about 10-12 minutes on 2 cores the first time;
# `dynostore` is needed for its in-memory storage).
if ! command -v tansu >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]; then
  echo "== installing the tansu broker (cargo install)"
  cargo install --locked tansu --version 0.6.0 --features dynostore
fi

echo "== rustfmt"
cargo fmt --all --check

echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings

# Fuzz targets (fuzz/README.md): stable toolchain, no sanitizer; each runs a
# few seconds over its committed corpus (new inputs go to a temporary
# directory). cargo-fuzz is installed once per machine (about 2 minutes);
# building the targets takes about 6 minutes from scratch.
if ! command -v cargo-fuzz >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-fuzz" ]; then
  echo "== installing cargo-fuzz (cargo install)"
  cargo install --locked cargo-fuzz --version 0.13.2
fi
echo "== fuzz (5 s per target)"
cargo fuzz build -s none -O --debug-assertions
for target in parse_rules check_rules decode_event wire_decode; do
  scratch="$(mktemp -d)"
  if ! cargo fuzz run -s none -O --debug-assertions "$target" "$scratch" "fuzz/corpus/$target" -- \
      -max_total_time=5 -max_len=4096 -print_final_stats=1 >"$scratch.log" 2>&1; then
    tail -n 80 "$scratch.log"
    echo "fuzz target $target failed"
    exit 1
  fi
  echo "$target: $(grep -E '^Done' "$scratch.log" || echo 'no stats')"
  rm -rf "$scratch" "$scratch.log"
done

echo "== tests"
# The fault suite's full-disk test mounts a small tmpfs: as root (CI) a
# failed mount is an error, not a skip.
if [ "$(id -u)" = 0 ]; then export VIGIL_FAULTS_REQUIRE_TMPFS=1; fi
cargo test --workspace
