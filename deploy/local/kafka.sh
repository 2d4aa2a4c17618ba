#!/usr/bin/env bash
# Apache Kafka (KRaft, combined broker+controller nodes) from Maven Central's jars, its data
# under $HOOKLINE_HOME/kafka: one node, or HOOKLINE_KAFKA_NODES of them.
# Usage: kafka.sh fetch|start|stop|status|bootstrap|start-node I
source "$(dirname "$0")/common.sh"
KDIR="$HOOKLINE_HOME/kafka"
JARS="${HOOKLINE_KAFKA_JARS:-$ROOT/.hookline/kafka-jars}"
# HOOKLINE_KAFKA_NODES=3: a cluster of three combined broker+controller nodes.
NODES="${HOOKLINE_KAFKA_NODES:-1}"
POM="$ROOT/deploy/kafka/pom.xml"

fetch() {
  if [[ -f "$JARS/.complete" && "$JARS/.complete" -nt "$POM" ]]; then return 0; fi
  command -v mvn >/dev/null || { log "Maven (mvn) is required to fetch Kafka's jars"; exit 1; }
  command -v java >/dev/null || { log "a JDK 17+ is required to run Kafka"; exit 1; }
  log "fetching Apache Kafka's jars from Maven Central into $JARS"
  rm -rf "$JARS"; mkdir -p "$JARS"
  mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$JARS"
  touch "$JARS/.complete"
}

# Node I of N (1-based). One node: broker PLAINTEXT on $KAFKA_PORT, controller on
# $KAFKA_CONTROLLER_PORT, data in $KDIR/data (unchanged layout). N nodes: node I listens on
# $KAFKA_PORT+2(I-1) and the port after it, data in $KDIR/node-I; all three roles combined
# on each, a static quorum of N voters.
broker_port() { if ((NODES == 1)); then echo "$KAFKA_PORT"; else echo $((KAFKA_PORT + 2 * ($1 - 1))); fi; }
controller_port() { if ((NODES == 1)); then echo "$KAFKA_CONTROLLER_PORT"; else echo $((KAFKA_PORT + 2 * ($1 - 1) + 1)); fi; }
node_dir() { if ((NODES == 1)); then echo "$KDIR"; else echo "$KDIR/node-$1"; fi; }

write_config() {
  local i=$1 dir; dir=$(node_dir "$i")
  local rf=$((NODES < 3 ? NODES : 3)) isr=$((NODES < 3 ? 1 : 2)) quorum j voters="" servers=""
  mkdir -p "$dir/data"
  if ((NODES == 1)); then
    quorum="controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT"
  else
    for ((j = 1; j <= NODES; j++)); do voters+="${voters:+,}$j@127.0.0.1:$(controller_port "$j")"; done
    # A fenced broker leaves every ISR, so acks=all writes go on with the other two soon
    # after a kill -9: heartbeats every 0.5 s, fenced after 4 s without one.
    quorum="controller.quorum.voters=$voters
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=4000
# A restarted node takes back the partitions it prefers to lead within seconds, not 5 min.
leader.imbalance.check.interval.seconds=5
min.insync.replicas=$isr
default.replication.factor=$rf"
  fi
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$i
$quorum
listeners=PLAINTEXT://127.0.0.1:$(broker_port "$i"),CONTROLLER://127.0.0.1:$(controller_port "$i")
advertised.listeners=PLAINTEXT://127.0.0.1:$(broker_port "$i")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
message.max.bytes=8454144
replica.fetch.max.bytes=8454144
auto.create.topics.enable=false
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
log.retention.hours=168
num.network.threads=2
num.io.threads=4
# The active controller appends a no-op record to the metadata log when it has been idle
# this long (default 500 ms), only so that the metadata log's lag can be monitored; at rest
# those appends and their fetches were about 2 % of a core of an idle node's ~4.7 %.
metadata.max.idle.interval.ms=5000
PROPS
  cat >"$dir/log4j2.yaml" <<'YAML'
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaServer
        level: INFO
      - name: kafka.server.BrokerServer
        level: INFO
      # Why a consumer group rebalanced (a member joined, left or timed out).
      - name: org.apache.kafka.coordinator.group
        level: INFO
YAML
}

HEAP="${HOOKLINE_KAFKA_HEAP:-$((NODES == 1 ? 1024 : 512))m}"
java_cmd() {
  java -Xms"$HEAP" -Xmx"$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$(node_dir 1)/log4j2.yaml" -cp "$JARS/*" "$@"
}

node_ready() {
  port_open 127.0.0.1 "$(broker_port "$1")" && grep -q "Transition from STARTING to STARTED" "$(node_dir "$1")/kafka.log" 2>/dev/null
}

# Formats node I's storage on first start; every node of a cluster shares one cluster id.
format_node() {
  local i=$1 dir; dir=$(node_dir "$i")
  [[ -f "$dir/data/meta.properties" ]] && return 0
  if [[ ! -s "$KDIR/cluster.id" ]]; then
    java_cmd kafka.tools.StorageTool random-uuid >"$KDIR/cluster.id"
  fi
  log "formatting Kafka storage in $dir/data"
  if ((NODES == 1)); then
    java_cmd kafka.tools.StorageTool format -t "$(cat "$KDIR/cluster.id")" -c "$dir/server.properties" --standalone >/dev/null
  else
    java_cmd kafka.tools.StorageTool format -t "$(cat "$KDIR/cluster.id")" -c "$dir/server.properties" >/dev/null
  fi
}

# Launches node I in the background (no wait).
launch_node() {
  local i=$1 dir; dir=$(node_dir "$i")
  if pid_alive "$dir/kafka.pid"; then return 0; fi
  if port_open 127.0.0.1 "$(broker_port "$i")"; then
    log "port $(broker_port "$i") is taken by another process: stop it or set HOOKLINE_KAFKA_PORT"; exit 1
  fi
  write_config "$i"
  format_node "$i"
  : >"$dir/kafka.log"
  nohup java -Xms"$HEAP" -Xmx"$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$dir/log4j2.yaml" -cp "$JARS/*" kafka.Kafka "$dir/server.properties" \
    >>"$dir/kafka.log" 2>&1 </dev/null &
  echo $! >"$dir/kafka.pid"
}

bootstrap() {
  local i out=""
  for ((i = 1; i <= NODES; i++)); do out+="${out:+,}127.0.0.1:$(broker_port "$i")"; done
  echo "$out"
}

start() {
  local i
  fetch
  mkdir -p "$KDIR"
  if ((NODES == 1)) && pid_alive "$KDIR/kafka.pid"; then log "Kafka already running on 127.0.0.1:$KAFKA_PORT"; echo "127.0.0.1:$KAFKA_PORT"; return 0; fi
  ((NODES == 1)) || log "starting a $NODES-node Kafka cluster (KRaft, a quorum of $NODES) on $(bootstrap)"
  ((NODES == 1)) && log "starting Kafka on 127.0.0.1:$KAFKA_PORT"
  for ((i = 1; i <= NODES; i++)); do launch_node "$i"; done
  for ((i = 1; i <= NODES; i++)); do
    if ! wait_for 120 "Kafka node $i to accept connections" node_ready "$i"; then
      tail -n 30 "$(node_dir "$i")/kafka.log" >&2; stop; exit 1
    fi
  done
  bootstrap
}

# start-node I: (re)starts one node of the cluster and waits until it serves.
start_node() {
  launch_node "$1"
  wait_for 120 "Kafka node $1 to accept connections" node_ready "$1" || { tail -n 30 "$(node_dir "$1")/kafka.log" >&2; exit 1; }
}

# Stops every node this directory holds, whatever HOOKLINE_KAFKA_NODES says now: all at
# once (a node stopped alone would wait for the quorum it is leaving), then SIGKILL after 60 s.
stop() {
  local f pids=()
  for f in "$KDIR/kafka.pid" "$KDIR"/node-*/kafka.pid; do
    [[ -e "$f" ]] || continue
    if pid_alive "$f"; then pids+=("$(cat "$f")"); kill "$(cat "$f")"; fi
    rm -f "$f"
  done
  if ((${#pids[@]} == 0)); then log "Kafka not running"; return 0; fi
  all_gone() { local p; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && return 1; done; return 0; }
  wait_for 60 "Kafka to stop" all_gone || kill -9 "${pids[@]}" 2>/dev/null || true
  log "Kafka stopped"
}

running() {
  local i
  for ((i = 1; i <= NODES; i++)); do pid_alive "$(node_dir "$i")/kafka.pid" || return 1; done
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  start-node) start_node "${2:?node number}" ;;
  bootstrap) bootstrap ;;
  status) running && echo running || { echo stopped; exit 1; } ;;
  *) echo "usage: $0 fetch|start|stop|status|bootstrap|start-node I" >&2; exit 2 ;;
esac
