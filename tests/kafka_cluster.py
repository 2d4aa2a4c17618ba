"""A local three-node Kafka cluster (deploy/local/kafka.sh, HOOKLINE_KAFKA_NODES=3) that a
test or the bench can break: kill -9 a node, find the active controller and who leads
what, restart a node. Its own HOOKLINE_HOME and ports, apart from the single test broker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from tests.infra import ROOT

SCRIPT = ROOT / "deploy" / "local" / "kafka.sh"


@dataclass
class KafkaCluster:
    home: Path
    port: int  # node i listens on port + 2(i-1), its controller on the port after
    nodes: int = 3

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOOKLINE_HOME": str(self.home),
            "HOOKLINE_KAFKA_PORT": str(self.port),
            "HOOKLINE_KAFKA_NODES": str(self.nodes),
        }

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.port + 2 * i}" for i in range(self.nodes))

    def node_dir(self, node: int) -> Path:
        return self.home / "kafka" / f"node-{node}"

    def _run(self, *args: str) -> None:
        subprocess.run([str(SCRIPT), *args], env=self.env, check=True, stdout=subprocess.DEVNULL)

    def start(self, *, fresh: bool = True) -> KafkaCluster:
        """`fresh`: a stopped cluster's data is wiped first (leaders spread evenly again)."""
        if fresh and not any(self.alive(n) for n in range(1, self.nodes + 1)):
            shutil.rmtree(self.home / "kafka", ignore_errors=True)
        self._run("start")
        return self

    def stop(self) -> None:
        subprocess.run([str(SCRIPT), "stop"], env=self.env, check=False)

    def restart(self, node: int) -> None:
        self._run("start-node", str(node))

    def kill9(self, node: int) -> None:
        pidfile = self.node_dir(node) / "kafka.pid"
        pid = int(pidfile.read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # init reaps it: kafka.sh started it detached
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        pidfile.unlink()

    def alive(self, node: int) -> bool:
        pidfile = self.node_dir(node) / "kafka.pid"
        try:
            os.kill(int(pidfile.read_text()), 0)
        except (OSError, ValueError):
            return False
        return True

    def active_controller(self) -> int:
        """The quorum's leader, from the live nodes' quorum-state files (newest epoch)."""
        best = (-1, -1)
        for node in range(1, self.nodes + 1):
            if not self.alive(node):
                continue
            path = self.node_dir(node) / "data" / "__cluster_metadata-0" / "quorum-state"
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if state.get("leaderId", -1) >= 0:
                best = max(best, (state["leaderEpoch"], state["leaderId"]))
        return best[1]

    async def leaders(self, *topics: str) -> Counter[int]:
        """How many partitions of `topics` each broker leads."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            described = await admin.describe_topics(list(topics))
        finally:
            await admin.close()
        return Counter(p["leader"] for t in described for p in t["partitions"] if p["leader"] >= 0)

    async def in_sync(self, *topics: str) -> bool:
        """Every partition of `topics` has all its replicas in sync (False while the
        cluster cannot say: a metadata request during an election)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        try:
            await admin.start()
            described = await admin.describe_topics(list(topics))
        except (KafkaError, OSError):
            return False
        finally:
            await admin.close()
        return all(len(p["isr"]) == len(p["replicas"]) for t in described for p in t["partitions"])
