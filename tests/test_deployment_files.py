"""The Dockerfile, compose.yaml and the README agree with the code (Docker itself cannot run here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from service.settings import variable_names

ROOT = Path(__file__).resolve().parents[1]
VARIABLE = re.compile(r"\bSWITCHBOARD_[A-Z][A-Z0-9_]*[A-Z0-9]\b")
NOT_SETTINGS = ("SWITCHBOARD_TEST_", "SWITCHBOARD_BENCH_")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = YAML(typ="safe").load((ROOT / "compose.yaml").read_text())
    return document


def test_every_variable_the_deployment_files_and_readme_name_is_a_setting() -> None:
    known = set(variable_names())
    for name in ("Dockerfile", "compose.yaml", "README.md"):
        named = set(VARIABLE.findall((ROOT / name).read_text())) - known
        assert {variable for variable in named if not variable.startswith(NOT_SETTINGS)} == set(), name


def test_compose_runs_replicas_on_postgresql_with_a_volume_the_image_owns() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--uid 10001" in dockerfile
    assert "chown switchboard /data" in dockerfile
    services = compose()["services"]
    switchboard = services["switchboard"]
    assert switchboard["deploy"]["replicas"] >= 2
    assert switchboard["environment"]["SWITCHBOARD_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert services["db"]["image"].startswith("postgres:")
    # Mounted on /data itself: a new named volume takes the owner of the image's /data (uid 10001).
    assert any(volume.endswith(":/data") for volume in switchboard["volumes"])
    assert switchboard["environment"]["SWITCHBOARD_STORAGE_URL"].startswith("file:///data/")
    assert "EXPOSE 8000" in dockerfile
    assert "proxy_pass http://switchboard;" in compose()["configs"]["nginx"]["content"]
    assert services["proxy"]["ports"] == ["8000:8000"]
