#!/usr/bin/env bash
# Run every check: formatting, clippy, the build, and all tests (unit, end-to-end against
# real PostgreSQL/NATS/Redis, and conformance with the pinned Hatchet Python and TypeScript
# SDKs). The README's second command; .ci/run runs exactly this. Exits non-zero on any
# failure, after running the remaining checks so one run reports everything.
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

PY_SDK="hatchet-sdk==1.43.1"
VENV="$ADZE_HOME/venv"
TS_DIR="$ADZE_REPO/tests/conformance/ts"
BROWSER_DIR="$ADZE_REPO/tests/browser"
TEST_THREADS=2 # the machine has 2 cores; each e2e test also spawns services
FAILED=()
STARTED=$SECONDS

report() {
  local rc=$? secs=$((SECONDS - STARTED))
  local took="$((secs / 60))m$((secs % 60))s"
  if ((rc == 0)); then
    ok "all checks passed in $took"
  else
    printf 'FAILED after %s: %s\n' "$took" "${FAILED[*]:-setup}" >&2
  fi
}
trap report EXIT

# check NAME CMD...: run a check; remember a failure and carry on with the others.
check() {
  local name="$1"
  shift
  say "$name: $*"
  if ! "$@"; then
    FAILED+=("$name")
    warn "$name failed"
  fi
}

# The Python conformance tests run the pinned SDK from a private virtualenv.
ensure_python_sdk() {
  local py="$VENV/bin/python"
  # The pinned version, with its `otel` extra (the tracing conformance test).
  if [[ -x "$py" ]] && "$py" -c 'import importlib.metadata as m, sys
import opentelemetry.exporter.otlp.proto.grpc.trace_exporter, opentelemetry.sdk.trace
sys.exit(m.version("hatchet-sdk") != sys.argv[1])' "${PY_SDK#*==}" 2>/dev/null; then
    ok "Python SDK: $PY_SDK in $VENV"
    return
  fi
  command -v python3 >/dev/null || apt_install python3 python3-venv
  if [[ ! -x "$py" ]]; then
    # Debian's python3 makes venvs only with python3-venv installed (ensurepip).
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
      rm -rf "$VENV"
      apt_install python3-venv
      python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
    fi
  fi
  say "installing $PY_SDK into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_SDK/==/[otel]==}" ||
    die "pip install ${PY_SDK/==/[otel]==} failed"
  ok "Python SDK: $PY_SDK in $VENV"
}

# The TypeScript conformance tests run from tests/conformance/ts, whose package.json pins the
# SDK and tsx.
ensure_ts_sdk() {
  if [[ ! -f "$TS_DIR/package.json" ]]; then
    warn "no $TS_DIR/package.json; the TypeScript conformance tests have no SDK to run"
    return
  fi
  npm_pinned "$TS_DIR" "TypeScript SDK"
}

# The examples' own dependencies (the orchestrator examples store their totals with
# psycopg / pg), for the test that runs them.
ensure_examples() {
  if ! "$VENV/bin/python" -c 'import psycopg' 2>/dev/null; then
    say "installing examples/python/requirements.txt into $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r examples/python/requirements.txt ||
      die "pip install -r examples/python/requirements.txt failed"
  fi
  ok "Python examples' packages in $VENV"
  npm_pinned examples/typescript "TypeScript examples' packages"
}

# The dashboard's browser test drives Debian's chromium with playwright-core, pinned in
# tests/browser's lockfile.
ensure_browser() {
  if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    apt_install chromium
  fi
  npm_pinned "$BROWSER_DIR" "browser test's playwright-core"
}

test_command() {
  if cargo nextest --version >/dev/null 2>&1; then
    TEST_CMD=(cargo nextest run --workspace --no-fail-fast --test-threads "$TEST_THREADS" --no-tests=warn)
  else
    TEST_CMD=(cargo test --workspace --no-fail-fast -- --test-threads="$TEST_THREADS")
  fi
}

main() {
  cd "$ADZE_REPO"
  say "dependencies"
  # shellcheck source=deps.sh
  source scripts/deps.sh

  say "SDKs for the conformance tests"
  ensure_python_sdk
  ensure_ts_sdk
  ensure_examples
  ensure_browser
  export ADZE_TEST_PYTHON="$VENV/bin/python"
  export ADZE_TEST_TS_DIR="$TS_DIR"

  check fmt cargo fmt --all -- --check
  check clippy cargo clippy --workspace --all-targets -- -D warnings
  check build cargo build --workspace --bins
  test_command
  check tests "${TEST_CMD[@]}"

  ((${#FAILED[@]} == 0))
}

main "$@"
