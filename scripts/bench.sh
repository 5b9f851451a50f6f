#!/usr/bin/env bash
# Benchmark Adze on this machine (issue 3): dependencies, a release build, then adze-bench.
#
#   scripts/bench.sh                       every scenario at full scale (10 min on the dev machine)
#   scripts/bench.sh noop latency          some scenarios
#   scripts/bench.sh --quick               every scenario, small (< 3 minutes), a smoke test
#   scripts/bench.sh noop --rates 2000,4000 --sustain-secs 30    any adze-bench flag
#   scripts/bench.sh compare               Adze, BullMQ and pg-boss side by side (issue 18)
#
# Scenarios: noop dag3 latency fanout backlog wire timeouts keyed limited sticky events
# children durable. Each one starts its own fleet (a fresh
# database adze_bench_*, NATS prefix, secret and free ports; the four release service
# binaries as child processes), prints one summary line on stdout and writes
# bench/results/<scenario>-<timestamp>.json; service logs go to bench/results/logs/.
# Everything it starts is stopped and its database dropped when it ends.
# `target/release/adze-bench --help` lists the flags, including --grpc/--dispatcher/--token
# to measure a fleet that is already running.
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

main() {
  cd "$ADZE_REPO"
  say "dependencies: PostgreSQL, Redis, NATS JetStream"
  # shellcheck source=deps.sh
  source scripts/deps.sh
  local build_log="$ADZE_LOG_DIR/bench-build.log"
  mkdir -p "$ADZE_LOG_DIR"
  say "cargo build --release (log: $build_log)"
  cargo build --release -p adze-cli -p adze-ingest -p adze-dispatcher -p adze-scheduler \
    -p adze-reaper -p adze-ratelimit -p adze-bench >"$build_log" 2>&1 || die "cargo build --release failed" "$build_log"
  ok "built"
  if [[ " $* " == *" compare "* ]]; then
    # The peers' npm packages, pinned by bench/compare's lockfile.
    npm_pinned bench/compare "BullMQ and pg-boss"
  fi
  [[ -x .adze/venv/bin/python ]] ||
    warn "no .adze/venv: the wire scenario needs hatchet-sdk==1.43.1 there (scripts/test.sh installs it)"
  exec target/release/adze-bench "$@"
}

main "$@"
