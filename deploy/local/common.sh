# Shared settings for the local PostgreSQL and Kafka scripts (sourced, not run).
# HOOKLINE_HOME is the state directory; tests use their own one and their own ports.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HOOKLINE_HOME="${HOOKLINE_HOME:-$ROOT/.hookline}"
case "$HOOKLINE_HOME" in /*) ;; *) HOOKLINE_HOME="$ROOT/$HOOKLINE_HOME" ;; esac
PG_PORT="${HOOKLINE_PG_PORT:-54329}"
KAFKA_PORT="${HOOKLINE_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${HOOKLINE_KAFKA_CONTROLLER_PORT:-9093}"
mkdir -p "$HOOKLINE_HOME"

log() { printf '[hookline] %s\n' "$*" >&2; }

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s.
wait_for() {
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    if ((SECONDS >= deadline)); then log "timed out after ${limit}s waiting for $what"; return 1; fi
    sleep 0.2
  done
}

# pid_alive FILE: true when FILE holds the pid of a running process.
pid_alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
