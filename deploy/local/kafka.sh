#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft, combined broker+controller) from Maven Central's jars,
# its data under $HOOKLINE_HOME/kafka. Usage: kafka.sh fetch|start|stop|status
source "$(dirname "$0")/common.sh"
KDIR="$HOOKLINE_HOME/kafka"
JARS="${HOOKLINE_KAFKA_JARS:-$ROOT/.hookline/kafka-jars}"
PIDFILE="$KDIR/kafka.pid"
PROPS="$KDIR/server.properties"
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

write_config() {
  mkdir -p "$KDIR/data"
  cat >"$PROPS" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KDIR/data
num.partitions=1
message.max.bytes=8454144
replica.fetch.max.bytes=8454144
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
num.network.threads=2
num.io.threads=4
PROPS
  cat >"$KDIR/log4j2.yaml" <<'YAML'
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

java_cmd() {
  java -Xms1G -Xmx1G -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KDIR/log4j2.yaml" -cp "$JARS/*" "$@"
}

broker_ready() { port_open 127.0.0.1 "$KAFKA_PORT" && grep -q "Transition from STARTING to STARTED" "$KDIR/kafka.log" 2>/dev/null; }

start() {
  if pid_alive "$PIDFILE"; then log "Kafka already running on 127.0.0.1:$KAFKA_PORT"; return 0; fi
  if port_open 127.0.0.1 "$KAFKA_PORT"; then
    log "port $KAFKA_PORT is taken by another process: stop it or set HOOKLINE_KAFKA_PORT"; exit 1
  fi
  fetch
  write_config
  if [[ ! -f "$KDIR/data/meta.properties" ]]; then
    log "formatting Kafka storage in $KDIR/data"
    java_cmd kafka.tools.StorageTool format -t "$(java_cmd kafka.tools.StorageTool random-uuid)" \
      -c "$PROPS" --standalone >/dev/null
  fi
  log "starting Kafka on 127.0.0.1:$KAFKA_PORT"
  : >"$KDIR/kafka.log"
  nohup java -Xms1G -Xmx1G -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KDIR/log4j2.yaml" -cp "$JARS/*" kafka.Kafka "$PROPS" \
    >>"$KDIR/kafka.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  if ! wait_for 90 "Kafka to accept connections" broker_ready; then
    tail -n 30 "$KDIR/kafka.log" >&2; stop; exit 1
  fi
  echo "127.0.0.1:$KAFKA_PORT"
}

stop() {
  pid_alive "$PIDFILE" || { log "Kafka not running"; rm -f "$PIDFILE"; return 0; }
  local pid; pid=$(cat "$PIDFILE")
  kill "$pid"
  wait_for 60 "Kafka to stop" bash -c "! kill -0 $pid 2>/dev/null" || kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  log "Kafka stopped"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) pid_alive "$PIDFILE" && echo running || { echo stopped; exit 1; } ;;
  *) echo "usage: $0 fetch|start|stop|status" >&2; exit 2 ;;
esac
