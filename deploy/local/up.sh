#!/usr/bin/env bash
# `make up` / `make down`: the same as `make run`, in the background, tracked by pid files.
source "$(dirname "$0")/common.sh"
RUN="$HOOKLINE_HOME/run"
LOGS="$HOOKLINE_HOME/logs"
mkdir -p "$RUN" "$LOGS"

up() {
  [[ -f "$RUN/infra.started" ]] || {
    "$ROOT/deploy/local/pg.sh" status >/dev/null 2>&1 || touch "$RUN/pg.ours"
    "$ROOT/deploy/local/kafka.sh" status >/dev/null 2>&1 || touch "$RUN/kafka.ours"
  }
  "$ROOT/deploy/local/infra.sh" up
  touch "$RUN/infra.started"
  source "$ROOT/deploy/local/env.sh"
  cd "$ROOT"
  local n=0 svc pidfile
  for svc in $(service_list); do
    n=$((n + 1))
    pidfile="$RUN/$svc-$n.pid"
    if pid_alive "$pidfile"; then continue; fi
    HOOKLINE_INSTANCE="$svc-$n" HOOKLINE_METRICS_PORT="$(metrics_port "$svc" "$n")" \
      nohup "$PY" -m "services.$svc" >>"$LOGS/$svc-$n.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    log "started $svc-$n (pid $!, log $LOGS/$svc-$n.log)"
  done
  wait_for 60 "the API and the edge to answer /readyz, and each worker /healthz" api_ready
  print_token_help
  print_endpoints
  log "Hookline is up; 'make down' stops it"
}

down() {
  local f pid
  for f in "$RUN"/*.pid; do
    [[ -e "$f" ]] || continue
    if pid_alive "$f"; then
      pid=$(cat "$f"); kill -TERM "$pid"
      wait_for 30 "pid $pid to exit" bash -c "! kill -0 $pid 2>/dev/null" || kill -9 "$pid" 2>/dev/null || true
      log "stopped $(basename "$f" .pid)"
    fi
    rm -f "$f"
  done
  [[ -f "$RUN/kafka.ours" ]] && "$ROOT/deploy/local/kafka.sh" stop && rm -f "$RUN/kafka.ours"
  [[ -f "$RUN/pg.ours" ]] && "$ROOT/deploy/local/pg.sh" stop && rm -f "$RUN/pg.ours"
  rm -f "$RUN/infra.started"
  return 0
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
