# Environment for `make run` / `make up` (sourced after common.sh). A variable already set
# in the environment wins, even when empty.
PY="$ROOT/.venv/bin/python"
HOOKLINE_DATABASE_URL="${HOOKLINE_DATABASE_URL-$("$ROOT/deploy/local/pg.sh" url)}"
export HOOKLINE_DATABASE_URL
if ((${HOOKLINE_KAFKA_NODES:-1} > 1)); then
  # A local cluster (kafka.sh): every node's listener, and topics on three replicas.
  export HOOKLINE_KAFKA_BOOTSTRAP="${HOOKLINE_KAFKA_BOOTSTRAP-$("$ROOT/deploy/local/kafka.sh" bootstrap)}"
  export HOOKLINE_KAFKA_REPLICATION="${HOOKLINE_KAFKA_REPLICATION-$((HOOKLINE_KAFKA_NODES < 3 ? HOOKLINE_KAFKA_NODES : 3))}"
else
  export HOOKLINE_KAFKA_BOOTSTRAP="${HOOKLINE_KAFKA_BOOTSTRAP-127.0.0.1:$KAFKA_PORT}"
fi
export HOOKLINE_ALLOWED_TARGETS="${HOOKLINE_ALLOWED_TARGETS-127.0.0.0/8,::1/128}"
export HOOKLINE_SENDERS="${HOOKLINE_SENDERS-2}"
if [[ -z "${HOOKLINE_SECRET_KEY+x}" ]]; then
  # A key of this machine's own, kept beside the data it encrypts.
  [[ -s "$HOOKLINE_HOME/secret.key" ]] || (umask 077; "$PY" -c \
    'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())' >"$HOOKLINE_HOME/secret.key")
  HOOKLINE_SECRET_KEY="$(cat "$HOOKLINE_HOME/secret.key")"
  export HOOKLINE_SECRET_KEY
fi
if [[ -z "${HOOKLINE_ADMIN_TOKEN+x}" ]]; then
  [[ -s "$HOOKLINE_HOME/admin.token" ]] || (umask 077; "$PY" -c \
    'import secrets; print("hla_" + secrets.token_urlsafe(32))' >"$HOOKLINE_HOME/admin.token")
  HOOKLINE_ADMIN_TOKEN="$(cat "$HOOKLINE_HOME/admin.token")"
  export HOOKLINE_ADMIN_TOKEN
  ADMIN_TOKEN_FILE="$HOOKLINE_HOME/admin.token"
fi

# The services that exist in this tree, senders repeated HOOKLINE_SENDERS times.
service_list() {
  local s n
  for s in relay matcher api inbound; do
    [[ -f "$ROOT/services/$s/__main__.py" ]] && echo "$s"
  done
  if [[ -f "$ROOT/services/sender/__main__.py" ]]; then
    for ((n = 1; n <= HOOKLINE_SENDERS; n++)); do echo "sender"; done
  fi
  return 0
}

# Every worker serves /healthz, /readyz and /metrics on a port of its own: the base plus
# its place in service_list (relay 9461, matcher 9462, inbound 9464, senders 9465, 9466, …).
# The API has none: its /metrics is on its own port.
METRICS_BASE_PORT="${HOOKLINE_METRICS_BASE_PORT:-9460}"
metrics_port() {  # $1 the service, $2 its place in service_list
  if [[ $1 == api ]]; then echo 0; else echo $((METRICS_BASE_PORT + $2)); fi
}

print_token_help() {
  log "web console: http://$HOOKLINE_API_HOST_PORT/console/ (sign in with the admin token or an org token)"
  if [[ -n "${ADMIN_TOKEN_FILE:-}" ]]; then
    log "admin token (HOOKLINE_ADMIN_TOKEN was not set): $(cat "$ADMIN_TOKEN_FILE")"
    log "  export HOOKLINE_ADMIN_TOKEN=\$(cat $ADMIN_TOKEN_FILE)"
    log "  make an org token: curl -s -X POST -H \"Authorization: Bearer \$HOOKLINE_ADMIN_TOKEN\" \\"
    log "    -d '{\"org\":\"acme\",\"name\":\"ci\"}' http://$HOOKLINE_API_HOST_PORT/api/v1/tokens"
  fi
}
HOOKLINE_API_HOST_PORT="${HOOKLINE_API_HOST:-127.0.0.1}:${HOOKLINE_API_PORT:-8080}"

HOOKLINE_INBOUND_HOST_PORT="${HOOKLINE_INBOUND_HOST:-127.0.0.1}:${HOOKLINE_INBOUND_PORT:-8081}"

# The API's and the inbound edge's /readyz answer 200, and so does every worker's /healthz
# (its probe server, on the port print_endpoints names): "up" means every URL it prints
# answers.
api_ready() {
  [[ -f "$ROOT/services/api/__main__.py" ]] || return 0
  local n=0 svc port urls=("http://$HOOKLINE_API_HOST_PORT/readyz" "http://$HOOKLINE_INBOUND_HOST_PORT/readyz")
  for svc in $(service_list); do
    n=$((n + 1))
    port=$(metrics_port "$svc" "$n")
    if ((port)); then urls+=("http://127.0.0.1:$port/healthz"); fi
  done
  "$PY" - "${urls[@]}" <<'PYEOF'
import sys, urllib.request
try:
    for url in sys.argv[1:]:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status != 200:
                sys.exit(1)
except Exception:
    sys.exit(1)
PYEOF
}

print_endpoints() {
  log "REST API: http://$HOOKLINE_API_HOST_PORT/api/v1   inbound edge: http://$HOOKLINE_INBOUND_HOST_PORT/hooks/in/{id}"
  local n=0 svc port line="metrics: api http://$HOOKLINE_API_HOST_PORT/metrics"
  for svc in $(service_list); do
    n=$((n + 1))
    port=$(metrics_port "$svc" "$n")
    if ((port)); then line+="  $svc-$n http://127.0.0.1:$port/metrics"; fi
  done
  log "$line"
  log "  (scrape config and alert rules: deploy/observability/)"
}
