#!/usr/bin/env bash
# `make run`: infrastructure plus every service in the foreground; Ctrl-C stops everything.
source "$(dirname "$0")/common.sh"
"$ROOT/deploy/local/infra.sh" up
source "$ROOT/deploy/local/env.sh"
cd "$ROOT"
pids=()
stop_all() {
  trap - INT TERM EXIT
  log "stopping services"
  ((${#pids[@]})) && kill -TERM "${pids[@]}" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null || true
  "$ROOT/deploy/local/infra.sh" down
  exit 0
}
trap stop_all INT TERM EXIT
n=0
for svc in $(service_list); do
  n=$((n + 1))
  HOOKLINE_INSTANCE="$svc-$n" HOOKLINE_METRICS_PORT="$(metrics_port "$svc" "$n")" \
    "$PY" -m "services.$svc" &
  pids+=($!)
  log "started $svc (pid $!)"
done
wait_for 60 "the API and the edge to be ready, and each worker to answer /healthz" api_ready || true
print_token_help
print_endpoints
log "Hookline is running (${#pids[@]} processes); Ctrl-C stops it"
wait -n "${pids[@]}" 2>/dev/null || true
log "a service exited; stopping the rest"
stop_all
