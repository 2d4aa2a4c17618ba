"""The sender service: POSTs deliveries, retries through delay topics, logs every attempt."""
