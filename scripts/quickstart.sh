#!/usr/bin/env bash
# Try Adze on this machine: dependencies, build, migrate, a tenant and token, the four
# services behind one nginx address, the Rust example worker, one document-pipeline run and
# one run of the smart orchestrator (a durable task).
# Everything it starts is stopped by scripts/stop.sh; everything it writes is under .adze/.
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/nginx.sh
. "$ADZE_REPO/scripts/lib/nginx.sh"
# shellcheck source=lib/fleet.sh
. "$ADZE_REPO/scripts/lib/fleet.sh"

# The one address for the SDKs (gRPC, h2c) and, on its own port, REST: nginx 1.22 cannot
# serve prior-knowledge h2c and HTTP/1.1 on one plaintext port (see deploy/nginx).
GRPC_ADDR=127.0.0.1:7077
REST_ADDR=127.0.0.1:7080
REST_URL="http://$REST_ADDR"
INGEST_ADDR=127.0.0.1:7078
DISPATCHER_ADDR=127.0.0.1:7079
# scheduler, reaper and ratelimit take no client traffic; distinct addresses keep any listener they
# open (metrics) from colliding with each other or with the ports above.
SCHEDULER_ADDR=127.0.0.1:7081
REAPER_ADDR=127.0.0.1:7082
RATELIMIT_ADDR=127.0.0.1:7083
WORKFLOW=document-pipeline
ORCHESTRATOR=document-orchestrator
ADZE="$ADZE_BIN_DIR/adze"
CLI_LOG="$ADZE_LOG_DIR/cli.log"

STEP=0
STEPS=9
step() {
  STEP=$((STEP + 1))
  say "[$STEP/$STEPS] $*"
}

# Failures the script did not foresee still end with where it stopped.
trap 'printf "error: quickstart stopped at step %s (line %s: %s)\n" "$STEP" "$LINENO" "$BASH_COMMAND" >&2' ERR
# After a failure, whatever did start is left running for inspection; say how to stop it.
trap '(($? == 0)) || ((STEP < 5)) || echo "Processes started so far are still running; scripts/stop.sh stops them." >&2' EXIT

# cli LABEL ARGS...: run the adze CLI; stdout is the result, stderr goes to cli.log.
cli() {
  local label="$1"
  shift
  printf '==== adze %s ====\n' "$label" >>"$CLI_LOG"
  "$ADZE" "$@" 2>>"$CLI_LOG"
}

UUID_RE='[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}'
JWT_RE='ey[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+'

# last_match REGEX TEXT: the last match in TEXT (so a log line before the value is harmless).
last_match() { grep -oE "$1" <<<"$2" | tail -n 1 | grep .; }

# The signing secret is made once and kept, so tokens from earlier runs stay valid.
ensure_secret() {
  local file="$ADZE_HOME/secret"
  if [[ ! -s "$file" ]]; then
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$file")
  fi
  ADZE_AUTH__SECRET="$(cat "$file")"
  export ADZE_AUTH__SECRET
}

write_quickstart_env() {
  (
    umask 077
    cat >"$ADZE_HOME/quickstart.env" <<EOF
# Written by scripts/quickstart.sh (sourced by .adze/env).
export ADZE_AUTH__SECRET=$ADZE_AUTH__SECRET
export ADZE_TENANT_ID=$TENANT_ID
export ADZE_TOKEN=$TOKEN
export ADZE_HOST_PORT=$GRPC_ADDR
export HATCHET_CLIENT_TOKEN=$TOKEN
export HATCHET_CLIENT_TLS_STRATEGY=none
EOF
  )
}

# wait_listening NAME ADDR: wait for NAME's port, failing at once if the process has died.
wait_listening() {
  wait_until 60 "$1 on $2" "$ADZE_LOG_DIR/$1.log" --pid "$ADZE_RUN_DIR/$1.pid" "$ADZE_BIN_DIR/" \
    tcp_open "${2%:*}" "${2##*:}"
}

# A port still taken after fleet_stop belongs to something else; the waits below would
# mistake it for ours.
ensure_ports_free() {
  local addr
  for addr in "$@"; do
    ! tcp_open "${addr%:*}" "${addr##*:}" || die "$addr is in use by another program (ss -ltnp | grep ${addr##*:})"
  done
}

start_service() {
  local svc="$1" listen="$2"
  start_bg "$svc" "$ADZE_LOG_DIR/$svc.log" env ADZE_SERVER__LISTEN="$listen" "$ADZE_BIN_DIR/adze-$svc"
}

# The trigger needs the workflow registered, which the worker does right after it connects.
# Ask Postgres (the source of truth) until the workflow row exists.
wait_workflow_registered() {
  local deadline=$((SECONDS + 60)) body
  while ((SECONDS < deadline)); do
    # Asked twice: while the worker is between execs (setsid, env, the binary) its
    # command line can read empty for a moment.
    pid_alive "$ADZE_RUN_DIR/worker.pid" "$ADZE_BIN_DIR/" ||
      { sleep 0.5 && pid_alive "$ADZE_RUN_DIR/worker.pid" "$ADZE_BIN_DIR/"; } ||
      die "the example worker exited" "$ADZE_LOG_DIR/worker.log"
    body="$(psql "$ADZE_DATABASE_URL" -tAc \
      "SELECT 1 FROM workflows WHERE tenant_id = '$TENANT_ID' AND name = '$WORKFLOW'" 2>/dev/null || true)"
    [[ "$body" == "1" ]] && return 0
    sleep 0.2
  done
  warn "$WORKFLOW was not registered after 60s; triggering anyway"
}

main() {
  cd "$ADZE_REPO"
  local build_log="$ADZE_LOG_DIR/build.log" started=$SECONDS
  mkdir -p "$ADZE_RUN_DIR"
  rotate_log "$CLI_LOG"

  step "dependencies: PostgreSQL, Redis, NATS JetStream, nginx"
  # shellcheck source=deps.sh
  source scripts/deps.sh
  command -v curl >/dev/null || apt_install curl # asks the REST API whether the worker registered

  step "building the workspace (cargo build --workspace --bins; minutes the first time, log: $build_log)"
  cargo build --workspace --bins >"$build_log" 2>&1 || die "cargo build failed" "$build_log"
  ok "built"

  step "migrating $ADZE_DATABASE_URL"
  cli migrate migrate >/dev/null || die "adze migrate failed" "$CLI_LOG"
  ok "schema up to date"

  step "tenant and API token"
  ensure_secret
  local out
  out="$(cli "tenant create" tenant create --name default)" || die "adze tenant create failed" "$CLI_LOG"
  TENANT_ID="$(last_match "$UUID_RE" "$out")" ||
    die "adze tenant create printed no tenant UUID: '$out'" "$CLI_LOG"
  out="$(cli "token create" token create --tenant "$TENANT_ID" --name quickstart \
    --server-url "$REST_URL" --grpc-address "$GRPC_ADDR")" || die "adze token create failed" "$CLI_LOG"
  TOKEN="$(last_match "$JWT_RE" "$out")" || die "adze token create printed no JWT: '$out'" "$CLI_LOG"
  write_quickstart_env
  ok "tenant $TENANT_ID"

  step "services: ingest $INGEST_ADDR, dispatcher $DISPATCHER_ADDR, scheduler, reaper, ratelimit (logs: $ADZE_LOG_DIR)"
  fleet_stop >/dev/null # whatever a previous quickstart left running
  ensure_ports_free "$GRPC_ADDR" "$REST_ADDR" "$INGEST_ADDR" "$DISPATCHER_ADDR"
  export ADZE_PREFIX=adze
  export ADZE_SERVER__PUBLIC_URL="$REST_URL"
  export ADZE_SERVER__PUBLIC_GRPC_ADDRESS="$GRPC_ADDR"
  # Plaintext behind the local nginx gateway, said explicitly (README: TLS).
  export ADZE_SERVER__TLS__MODE=none
  export RUST_LOG="${RUST_LOG:-info}"
  start_service ingest "$INGEST_ADDR"
  start_service dispatcher "$DISPATCHER_ADDR"
  start_service scheduler "$SCHEDULER_ADDR"
  start_service reaper "$REAPER_ADDR"
  start_service ratelimit "$RATELIMIT_ADDR"
  wait_listening ingest "$INGEST_ADDR"
  wait_listening dispatcher "$DISPATCHER_ADDR"
  local svc
  for svc in scheduler reaper ratelimit; do
    pid_alive "$ADZE_RUN_DIR/$svc.pid" "$ADZE_BIN_DIR/" || die "$svc exited during startup" "$ADZE_LOG_DIR/$svc.log"
  done
  ok "services up"

  step "nginx: gRPC (h2c) on $GRPC_ADDR, REST on $REST_URL"
  nginx_render "$GRPC_ADDR" "$REST_ADDR" "$INGEST_ADDR" "$DISPATCHER_ADDR"
  nginx_start
  wait_until 15 "nginx on $GRPC_ADDR" "$ADZE_LOG_DIR/nginx.log" tcp_open "${GRPC_ADDR%:*}" "${GRPC_ADDR##*:}"
  wait_until 15 "nginx on $REST_ADDR" "$ADZE_LOG_DIR/nginx.log" tcp_open "${REST_ADDR%:*}" "${REST_ADDR##*:}"
  ok "proxy up"

  step "example worker ($WORKFLOW, log: $ADZE_LOG_DIR/worker.log)"
  # It also reads ADZE_DATABASE_URL (it saves parsed documents) from the environment.
  start_bg worker "$ADZE_LOG_DIR/worker.log" env HATCHET_CLIENT_TOKEN="$TOKEN" \
    HATCHET_CLIENT_TLS_STRATEGY=none "$ADZE_BIN_DIR/document-pipeline" worker
  wait_workflow_registered
  ok "worker running"

  step "triggering $WORKFLOW and waiting for the result"
  local result rc=0
  printf '==== adze trigger ====\n' >>"$CLI_LOG"
  result="$(ADZE_TOKEN="$TOKEN" ADZE_HOST_PORT="$GRPC_ADDR" timeout 180 \
    "$ADZE" trigger "$WORKFLOW" --input '{"documentId":"doc-1"}' --wait 2>>"$CLI_LOG")" || rc=$?
  if ((rc != 0)); then
    [[ -z "$result" ]] || printf '%s\n' "$result"
    ((rc != 124)) || die "no result from $WORKFLOW after 180s (worker log: $ADZE_LOG_DIR/worker.log)" "$CLI_LOG"
    die "adze trigger $WORKFLOW failed with exit code $rc (worker log: $ADZE_LOG_DIR/worker.log)" "$CLI_LOG"
  fi
  printf '%s\n' "$result"
  ok "run finished in a quickstart of $((SECONDS - started))s"

  # The seed's smart orchestrator: a durable task that parses each page in a child run.
  step "triggering $ORCHESTRATOR (a durable task) and waiting for the result"
  local answer
  rc=0
  printf '==== adze trigger %s ====\n' "$ORCHESTRATOR" >>"$CLI_LOG"
  answer="$(ADZE_TOKEN="$TOKEN" ADZE_HOST_PORT="$GRPC_ADDR" timeout 180 \
    "$ADZE" trigger "$ORCHESTRATOR" --input '{"documentId":"doc-1"}' --wait 2>>"$CLI_LOG")" || rc=$?
  if ((rc != 0)); then
    [[ -z "$answer" ]] || printf '%s\n' "$answer"
    die "adze trigger $ORCHESTRATOR failed with exit code $rc (worker log: $ADZE_LOG_DIR/worker.log)" "$CLI_LOG"
  fi
  printf '%s\n' "$answer"
  ok "orchestrator finished"

  local run_id
  run_id="$(grep -oE "\"(runId|run_id|workflowRunId|id)\"[[:space:]]*:[[:space:]]*\"$UUID_RE\"" <<<"$result" |
    head -n 1 | grep -oE "$UUID_RE" || true)"
  # The pipeline run's trace: its id is in the run's traceparent (00-<trace id>-<span>-<flags>).
  local trace_id=""
  if [[ -n "$run_id" ]]; then
    trace_id="$(psql "$ADZE_DATABASE_URL" -tAc \
      "SELECT split_part(traceparent, '-', 2) FROM runs WHERE id = '$run_id'" 2>/dev/null || true)"
  fi
  cat <<EOF

Adze is running: gRPC for the SDKs at $GRPC_ADDR (h2c), REST at $REST_URL.

  Dashboard   $REST_URL/   (sign in with the token below)
  Token       $TOKEN
              (source .adze/env to get it as HATCHET_CLIENT_TOKEN / ADZE_TOKEN, with the
              dependencies' addresses and HATCHET_CLIENT_TLS_STRATEGY=none)
  Logs        $ADZE_LOG_DIR/{ingest,dispatcher,scheduler,reaper,ratelimit,worker,nginx,cli}.log
  A run       source .adze/env && target/debug/adze runs get ${run_id:-<run-id>}
  Its trace   ${trace_id:-<trace id>}: run the services with OTEL_EXPORTER_OTLP_ENDPOINT=http://<collector>:4317
              OTEL_EXPORTER_OTLP_PROTOCOL=grpc (or :4318 and http/protobuf) to export every run's spans
  Health      curl $REST_URL/readyz   (and /healthz, /metrics; scheduler, reaper, ratelimit on $SCHEDULER_ADDR, $REAPER_ADDR, $RATELIMIT_ADDR)
  Trigger     source .adze/env && target/debug/adze trigger $WORKFLOW --input '{"documentId":"doc-2"}' --wait
  Python      python3 -m venv .adze/venv && .adze/venv/bin/pip install -r examples/python/requirements.txt
              source .adze/env && .adze/venv/bin/python examples/python/worker.py
  TypeScript  cd examples/typescript && npm ci
              source ../../.adze/env && npx tsx worker.ts
  Stop        scripts/stop.sh
EOF
}

main "$@"
