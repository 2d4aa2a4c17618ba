"""What lets one broker of three go with nothing acknowledged lost: every topic on three
replicas needs two in sync (min.insync.replicas=2), producers wait for all of them
(acks=all, idempotent), and `make cluster`'s environment asks for three replicas."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from shared.kafka import make_producer, topic_specs
from tests.infra import ROOT


def test_on_three_replicas_every_topic_needs_two_in_sync() -> None:
    specs = topic_specs(partitions=12, replication=3)
    assert len(specs) > 5
    for spec in specs:
        assert spec.replication == 3, spec.name
        assert spec.config["min.insync.replicas"] == "2", spec.name


def test_on_a_single_broker_no_topic_asks_for_more_in_sync_than_it_has() -> None:
    for spec in topic_specs():
        assert spec.replication == 1, spec.name
        assert "min.insync.replicas" not in spec.config, spec.name


async def test_producers_wait_for_every_in_sync_replica_and_are_idempotent() -> None:
    producer = make_producer("127.0.0.1:1", client_id="t")  # not started: no broker needed
    assert producer._sender._acks == -1  # acks=all
    assert producer._txn_manager is not None  # enable_idempotence


def _cluster_env(tmp_path: Path, nodes: str) -> dict[str, str]:
    env = {
        **os.environ,
        "HOOKLINE_HOME": str(tmp_path),
        "HOOKLINE_KAFKA_NODES": nodes,
        "HOOKLINE_KAFKA_PORT": "19092",
        # Set, so that sourcing env.sh makes no key, token or database of its own.
        "HOOKLINE_DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
        "HOOKLINE_SECRET_KEY": "k",
        "HOOKLINE_ADMIN_TOKEN": "t",
    }
    for name in ("HOOKLINE_KAFKA_BOOTSTRAP", "HOOKLINE_KAFKA_REPLICATION"):
        env.pop(name, None)
    local = ROOT / "deploy" / "local"
    out = subprocess.run(
        [
            "bash",
            "-c",
            f"source {local}/common.sh; source {local}/env.sh;"
            ' echo "$HOOKLINE_KAFKA_BOOTSTRAP|${HOOKLINE_KAFKA_REPLICATION:-}"',
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    bootstrap, replication = out.split("|")
    return {"bootstrap": bootstrap, "replication": replication}


def test_make_cluster_points_the_services_at_three_nodes_and_three_replicas(
    tmp_path: Path,
) -> None:
    got = _cluster_env(tmp_path, "3")
    assert got["bootstrap"] == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    assert got["replication"] == "3"  # read by shared.provision when it creates the topics
    single = _cluster_env(tmp_path, "1")
    assert single == {"bootstrap": "127.0.0.1:19092", "replication": ""}
