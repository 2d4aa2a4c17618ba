#!/usr/bin/env bash
# Starts (or stops) PostgreSQL and Kafka, then applies migrations and creates topics.
# Usage: infra.sh up|down
source "$(dirname "$0")/common.sh"
case "${1:-}" in
  up)
    "$ROOT/deploy/local/pg.sh" start >/dev/null
    "$ROOT/deploy/local/kafka.sh" start >/dev/null
    source "$ROOT/deploy/local/env.sh"
    "$PY" -m shared.provision
    ;;
  down)
    "$ROOT/deploy/local/kafka.sh" stop
    "$ROOT/deploy/local/pg.sh" stop
    ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
