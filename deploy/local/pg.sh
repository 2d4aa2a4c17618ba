#!/usr/bin/env bash
# A PostgreSQL cluster of Hookline's own under $HOOKLINE_HOME/pg (Debian's packages).
# Usage: pg.sh start|stop|status|url
source "$(dirname "$0")/common.sh"
PGROOT="$HOOKLINE_HOME/pg"
DB_URL="postgresql://hookline@127.0.0.1:$PG_PORT/hookline"

find_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && { echo "$d"; return 0; }
  done
  return 1
}

ensure_installed() {
  if PGBIN=$(find_bindir); then return 0; fi
  if [[ $(id -u) -ne 0 ]]; then
    log "PostgreSQL server binaries not found; install Debian's 'postgresql' package"; exit 1
  fi
  log "installing PostgreSQL from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq postgresql >/dev/null
  PGBIN=$(find_bindir)
}

# The server refuses to run as root: run it as an unprivileged user that owns the cluster.
RUN_AS=()
pick_user() {
  if [[ $(id -u) -eq 0 ]]; then
    local user=postgres
    id -u "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
    RUN_AS=(runuser -u "$user" --)
    mkdir -p "$PGROOT"
    chown "$user" "$PGROOT"
    if ! "${RUN_AS[@]}" test -w "$PGROOT"; then
      # The checkout sits where that user cannot reach (e.g. under /root): keep the
      # cluster in a directory of its own, named after this state directory.
      PGROOT="/var/tmp/hookline-pg-$(printf %s "$HOOKLINE_HOME" | md5sum | cut -c1-12)"
      mkdir -p "$PGROOT"
      chown "$user" "$PGROOT"
      log "PostgreSQL cluster kept in $PGROOT ($user cannot reach $HOOKLINE_HOME)"
    fi
    chown -R "$user" "$PGROOT"
  fi
  PGDATA="$PGROOT/data"
  PGLOG="$PGROOT/postgres.log"
}

pg_ready() { "${RUN_AS[@]}" "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

start() {
  ensure_installed
  mkdir -p "$PGROOT"
  pick_user
  if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    log "initialising cluster in $PGDATA"
    "${RUN_AS[@]}" "$PGBIN/initdb" -D "$PGDATA" -U hookline --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >>"$PGDATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '/tmp'
max_connections = 200
shared_buffers = 256MB
fsync = on
wal_level = replica
log_min_messages = warning
CONF
  fi
  # Applied to new and existing clusters alike (appended: the last occurrence wins).
  # - A commit is durable when it returns: the relay, the senders' offset commits and the
  #   API's 202 rely on it (clusters made before this had synchronous_commit off).
  # - The delivery log is write-heavy: checkpoints far apart (each one is followed by
  #   full-page writes), so that their writeback does not stall commits.
  local conf="$PGDATA/postgresql.conf" changed=0
  for setting in "synchronous_commit = on" "max_wal_size = 4GB" "checkpoint_timeout = 15min"; do
    if [[ "$(grep "^${setting%% *} " "$conf" | tail -1 || true)" != "$setting" ]]; then
      echo "$setting" | "${RUN_AS[@]}" tee -a "$conf" >/dev/null
      changed=1
    fi
  done
  if [[ $changed == 1 ]] && pg_ready; then
    "${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" reload >/dev/null \
      || log "could not reload the server on port $PG_PORT; the new settings apply at its next start"
  fi
  if pg_ready; then log "PostgreSQL already running on 127.0.0.1:$PG_PORT"; else
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    "${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGLOG" -w -t 60 start >/dev/null
  fi
  if ! "${RUN_AS[@]}" "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U hookline -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname='hookline'" | grep -q 1; then
    "${RUN_AS[@]}" "$PGBIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U hookline hookline
  fi
  echo "$DB_URL"
}

stop() {
  PGBIN=$(find_bindir) || exit 0
  pick_user
  [[ -s "$PGDATA/postmaster.pid" ]] || { log "PostgreSQL not running"; return 0; }
  "${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null && log "PostgreSQL stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) PGBIN=$(find_bindir) && pg_ready && echo running || { echo stopped; exit 1; } ;;
  url) echo "$DB_URL" ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
