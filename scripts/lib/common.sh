# shellcheck shell=bash disable=SC2034  # the variables are for the scripts that source this
# Helpers shared by scripts/*.sh. Source it; it defines functions and paths, runs nothing.
#
# Every path the scripts write lives under $ADZE_HOME (<repo>/.adze, git-ignored), so
# `rm -rf .adze` after `scripts/stop.sh` returns a checkout to its pristine state.

ADZE_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ADZE_HOME="${ADZE_HOME:-$ADZE_REPO/.adze}"
ADZE_LOG_DIR="$ADZE_HOME/logs"
ADZE_RUN_DIR="$ADZE_HOME/run"

# Debian installs nginx and nats-server in /usr/sbin, which a non-root PATH often lacks.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac

# ---- output -------------------------------------------------------------------------

if [[ -t 1 ]]; then
  _c_bold=$'\e[1m' _c_red=$'\e[31m' _c_green=$'\e[32m' _c_yellow=$'\e[33m' _c_off=$'\e[0m'
else
  _c_bold='' _c_red='' _c_green='' _c_yellow='' _c_off=''
fi

# One-line status, e.g. `say "building"`.
say() { printf '%s==>%s %s\n' "$_c_bold" "$_c_off" "$*"; }
ok() { printf '%s ok%s  %s\n' "$_c_green" "$_c_off" "$*"; }
warn() { printf '%swarn%s %s\n' "$_c_yellow" "$_c_off" "$*" >&2; }

# die MESSAGE [LOGFILE]: print the message (and the tail of LOGFILE, if given) and exit 1.
die() {
  printf '%serror:%s %s\n' "$_c_red" "$_c_off" "$1" >&2
  if [[ -n "${2:-}" ]]; then
    show_log_tail "$2"
  fi
  exit 1
}

# show_log_tail FILE [LINES]
show_log_tail() {
  local file="$1" lines="${2:-40}"
  if [[ -r "$file" ]]; then
    printf -- '---- last %s lines of %s ----\n' "$lines" "$file" >&2
    tail -n "$lines" "$file" >&2
    printf -- '----\n' >&2
  else
    printf '(no log at %s)\n' "$file" >&2
  fi
}

# ---- probes -------------------------------------------------------------------------

# tcp_open HOST PORT: true if something accepts a TCP connection there (bash's /dev/tcp,
# so no netcat is needed on a fresh machine).
tcp_open() {
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# wait_until SECONDS DESCRIPTION LOGFILE [--pid PIDFILE NAME] CMD...: poll CMD every 0.5 s;
# die with the log tail if it never succeeds, or at once if the process in PIDFILE (see
# pid_alive) has exited. Used for every "is it up yet" wait, so no bare sleeps.
wait_until() {
  local secs="$1" what="$2" log="$3" pidfile="" name=""
  shift 3
  if [[ "$1" == --pid ]]; then
    pidfile="$2" name="$3"
    shift 3
  fi
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [[ -n "$pidfile" ]] && ! pid_alive "$pidfile" "$name"; then
      die "$what exited during startup (log: $log)" "$log"
    fi
    if ((SECONDS >= deadline)); then
      die "$what did not come up within ${secs}s (log: $log)" "$log"
    fi
    sleep 0.5
  done
}

# ---- processes started by the scripts -----------------------------------------------

# pid_alive PIDFILE NAME: true if the pid in PIDFILE runs a command containing NAME.
# Checking the command line guards against killing an unrelated process that reused the pid.
pid_alive() {
  local pidfile="$1" name="$2" pid cmdline
  pid="$(tr -dc '0-9' 2>/dev/null <"$pidfile")" || return 1
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  # Read whole, not piped into `grep -q`: grep leaves at its first match, the writer can
  # then die of SIGPIPE, and under pipefail a live process would look dead.
  cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
  [[ "$cmdline" == *"$name"* ]]
}

# stop_pidfile PIDFILE NAME: SIGTERM the process (if pid_alive), wait up to 15 s, then SIGKILL.
stop_pidfile() {
  local pidfile="$1" name="$2" pid i label
  label="$(basename "$pidfile" .pid)"
  if pid_alive "$pidfile" "$name"; then
    pid="$(tr -dc '0-9' 2>/dev/null <"$pidfile")" || return 0 # it exited meanwhile
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
      pid_alive "$pidfile" "$name" || break
      sleep 0.5
    done
    if pid_alive "$pidfile" "$name"; then
      warn "$label (pid $pid) ignored SIGTERM for 15s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "stopped $label (pid $pid)"
  fi
  rm -f "$pidfile"
}

# rotate_log FILE: keep the previous run's log as FILE.prev and start FILE afresh, so the
# tail shown on a failure is this run's.
rotate_log() {
  mkdir -p "$(dirname "$1")"
  if [[ -s "$1" ]]; then mv -f "$1" "$1.prev"; fi
  : >"$1"
}

# start_bg NAME LOGFILE CMD...: start CMD detached in its own session (so a Ctrl-C in the
# terminal that ran the script does not reach it), stdout+stderr to a fresh LOGFILE, pid
# written to $ADZE_RUN_DIR/NAME.pid.
start_bg() {
  local name="$1" log="$2"
  shift 2
  mkdir -p "$ADZE_RUN_DIR"
  rotate_log "$log"
  setsid "$@" >>"$log" 2>&1 </dev/null &
  echo $! >"$ADZE_RUN_DIR/$name.pid"
}

# as_pg_user CMD...: PostgreSQL refuses to run as root, so as root a private cluster
# belongs to the `postgres` user.
as_pg_user() {
  if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# ---- packages -----------------------------------------------------------------------

# apt_install PKG...: install Debian packages (as root, or through sudo).
_apt_updated=0
apt_install() {
  local sudo=()
  if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null || die "need root (or sudo) to install: $*"
    sudo=(sudo)
  fi
  command -v apt-get >/dev/null || die "apt-get not found; install these yourself: $*"
  echo "installing Debian packages: $*"
  if ((_apt_updated == 0)); then
    "${sudo[@]}" apt-get update -qq >/dev/null || warn "apt-get update failed; trying the install anyway"
    _apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
    die "apt-get install $* failed"
}

# npm_pinned DIR WHAT: installs DIR's package.json (from its lockfile when there is
# one) into DIR/node_modules, again only when package.json or the lockfile changed.
npm_pinned() {
  local dir="$1" what="$2"
  command -v npm >/dev/null || apt_install nodejs npm
  local stamp="$dir/node_modules/.adze-installed" sum
  sum="$(cat "$dir/package.json" "$dir/package-lock.json" 2>/dev/null | cksum)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$sum" ]]; then
    ok "$what: installed in $dir/node_modules"
    return
  fi
  say "installing $what in $dir"
  (
    cd "$dir"
    if [[ -f package-lock.json ]]; then
      npm ci --no-audit --no-fund --loglevel=error
    else
      npm install --no-audit --no-fund --loglevel=error
    fi
  ) || die "npm install in $dir failed"
  echo "$sum" >"$stamp"
  ok "$what: installed in $dir/node_modules"
}
