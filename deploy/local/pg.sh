#!/usr/bin/env bash
# A PostgreSQL cluster of Hookline's own under $HOOKLINE_HOME/pg (Debian's packages).
# Usage: pg.sh start|stop|status|url
source "$(dirname "$0")/common.sh"
PGROOT="$HOOKLINE_HOME/pg"
# The role's password, this state directory's own: local users other than the server's
# cannot connect without it (no trust authentication, no socket they can reach).
PWFILE="$HOOKLINE_HOME/pg.password"
ROOTFILE="$HOOKLINE_HOME/pg.root"  # where the cluster lives when not under $HOOKLINE_HOME

password() {
  [[ -s "$PWFILE" ]] || (umask 077; od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$PWFILE")
  cat "$PWFILE"
}
db_url() { echo "postgresql://hookline:$(password)@127.0.0.1:$PG_PORT/hookline"; }

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
    chown -h "$user" "$PGROOT"  # never through a symlink planted there
    if ! "${RUN_AS[@]}" test -w "$PGROOT"; then
      # The checkout sits where that user cannot reach (e.g. under /root): keep the
      # cluster in a fresh directory of its own (an unpredictable name, recorded here).
      if [[ -s "$ROOTFILE" && -d "$(cat "$ROOTFILE")" && ! -L "$(cat "$ROOTFILE")" ]]; then
        PGROOT="$(cat "$ROOTFILE")"
      else
        PGROOT="$(mktemp -d /var/tmp/hookline-pg.XXXXXXXXXX)"
        echo "$PGROOT" >"$ROOTFILE"
      fi
      chown -h "$user" "$PGROOT"
      chmod 0700 "$PGROOT"
      log "PostgreSQL cluster kept in $PGROOT ($user cannot reach $HOOKLINE_HOME)"
    fi
    chown -R -h "$user" "$PGROOT"
  fi
  PGDATA="$PGROOT/data"
  PGLOG="$PGROOT/postgres.log"
}

pg_ready() { "${RUN_AS[@]}" "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

start() {
  ensure_installed
  mkdir -p "$PGROOT"
  pick_user
  local pw; pw="$(password)"
  if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    log "initialising cluster in $PGDATA"
    local pwcopy="$PGROOT/initdb.pw"
    (umask 077; echo "$pw" >"$pwcopy")
    [[ ${#RUN_AS[@]} -gt 0 ]] && chown -h postgres "$pwcopy"
    "${RUN_AS[@]}" "$PGBIN/initdb" -D "$PGDATA" -U hookline --auth-local=peer \
      --auth-host=scram-sha-256 --pwfile="$pwcopy" -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwcopy"
    cat >>"$PGDATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
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
  # The server's socket in a directory only its user can enter (it was /tmp, where every
  # local user could connect, before passwords were required).
  mkdir -p "$PGROOT/sock"
  [[ ${#RUN_AS[@]} -gt 0 ]] && chown -h postgres "$PGROOT/sock"
  chmod 0700 "$PGROOT/sock"
  local conf="$PGDATA/postgresql.conf" changed=0
  # The port too: a state directory first made for other ports starts on this one.
  for setting in "port = $PG_PORT" "synchronous_commit = on" "max_wal_size = 4GB" \
      "checkpoint_timeout = 15min" "unix_socket_directories = '$PGROOT/sock'" \
      "unix_socket_permissions = 0700"; do
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
  require_passwords "$pw"
  # A setting that only a restart applies (the socket's directory, on an old cluster).
  if [[ "$("${RUN_AS[@]}" env PGPASSWORD="$pw" "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" \
      -U hookline -d postgres -tAc "SELECT count(*) FROM pg_settings WHERE pending_restart")" != 0 ]]; then
    log "restarting PostgreSQL on 127.0.0.1:$PG_PORT to apply its new settings"
    "${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGLOG" -m fast -w -t 60 restart >/dev/null
  fi
  if ! "${RUN_AS[@]}" env PGPASSWORD="$pw" "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U hookline \
      -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='hookline'" | grep -q 1; then
    "${RUN_AS[@]}" env PGPASSWORD="$pw" "$PGBIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U hookline hookline
  fi
  db_url
}

# Clusters made before passwords were required trusted every local connection: give the
# role its password, then require it (scram) over TCP and peer on the socket.
require_passwords() {
  local hba="$PGDATA/pg_hba.conf"
  "${RUN_AS[@]}" grep -qE '^[^#]*[[:space:]]trust[[:space:]]*$' "$hba" || return 0
  log "requiring passwords on the existing cluster"
  "${RUN_AS[@]}" "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U hookline -d postgres -qc \
    "ALTER ROLE hookline PASSWORD '$1'" >/dev/null
  printf '%s\n' "local all all peer" "host all all 127.0.0.1/32 scram-sha-256" \
    "host all all ::1/128 scram-sha-256" | "${RUN_AS[@]}" tee "$hba" >/dev/null
  "${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" reload >/dev/null
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
  url) db_url ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
