#!/usr/bin/env bash
# The project's test command (README): installs and starts what the tests need,
# then runs formatting, lint and the whole test suite. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== rustfmt"
cargo fmt --all --check

echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== tests"
cargo test --workspace
