"""Readiness probes, shared with the workers' health server (shared/health.py)."""

from shared.health import KafkaProbe, database_ready

__all__ = ["KafkaProbe", "database_ready"]
