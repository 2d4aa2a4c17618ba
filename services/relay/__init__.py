"""The outbox relay service: outbox rows to Kafka, marked after the broker's ack."""
