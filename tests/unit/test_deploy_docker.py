"""The container image's Dockerfile, parsed (no Docker engine here): a pinned slim base, a
non-root user, one entrypoint for every process, a healthcheck."""

from __future__ import annotations

import json
import re

from dockerfile_parse import DockerfileParser

from shared.config import Settings
from tests.infra import ROOT

DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
# An exact patch version on a slim variant, or a digest.
PINNED = re.compile(
    r"^python:\d+\.\d+\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?$|@sha256:[0-9a-f]{64}$"
)


def _parsed() -> DockerfileParser:
    return DockerfileParser(str(DOCKERFILE))


def _instructions(name: str) -> list[str]:
    return [i["value"] for i in _parsed().structure if i["instruction"] == name]


def test_every_stage_is_on_a_pinned_slim_python_base() -> None:
    parser = _parsed()
    assert parser.is_multistage
    for image in parser.parent_images:
        assert PINNED.search(image), f"{image} is not pinned to an exact slim tag or digest"


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    user = _instructions("USER")[-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user
    # Nothing after the last USER switches back to root.
    kinds = [i["instruction"] for i in _parsed().structure]
    assert "RUN" not in kinds[len(kinds) - kinds[::-1].index("USER") :]


def test_one_entrypoint_runs_every_process_by_module() -> None:
    entrypoint = json.loads(_instructions("ENTRYPOINT")[-1])
    assert entrypoint == ["python", "-m"]
    (default,) = json.loads(_instructions("CMD")[-1])
    assert (ROOT / default.replace(".", "/") / "__main__.py").exists()
    for name in ("api", "inbound", "relay", "matcher", "sender"):
        assert (ROOT / "services" / name / "__main__.py").exists()
    assert (ROOT / "shared" / "migrate.py").exists()


def test_the_healthcheck_asks_the_process_own_health_server() -> None:
    (check,) = _instructions("HEALTHCHECK")
    command = json.loads(check.split("CMD", 1)[1])
    assert command[:3] == ["python", "-m", "shared.probe"]
    assert (ROOT / "shared" / "probe.py").exists()
    env = _parsed().envs  # the last stage's environment
    assert int(env["HOOKLINE_METRICS_PORT"]) > 0


def test_every_hookline_variable_the_image_sets_is_a_setting() -> None:
    known = {f.metadata["env"] for f in Settings.__dataclass_fields__.values()}
    for name in _parsed().envs:
        assert not name.startswith("HOOKLINE_") or name in known, name
    assert Settings.from_env(_parsed().envs)  # and each value parses
