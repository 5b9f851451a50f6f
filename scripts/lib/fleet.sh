# shellcheck shell=bash
# The processes scripts/quickstart.sh starts, and how to stop them. Needs lib/common.sh and
# lib/nginx.sh.

# Every fleet process runs a binary from this directory; stop_pidfile checks a pid's command
# line for it, so a recycled pid that now belongs to something else is never signalled.
ADZE_BIN_DIR="$ADZE_REPO/target/debug"
ADZE_SERVICES=(ingest dispatcher scheduler reaper ratelimit)

# Stop the worker first (so it does not spin on reconnects), then the proxy, then the services.
fleet_stop() {
  local svc
  stop_pidfile "$ADZE_RUN_DIR/worker.pid" "$ADZE_BIN_DIR/"
  nginx_stop
  for svc in "${ADZE_SERVICES[@]}"; do
    stop_pidfile "$ADZE_RUN_DIR/$svc.pid" "$ADZE_BIN_DIR/adze-$svc"
  done
}
