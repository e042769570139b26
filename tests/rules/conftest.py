"""Helpers for rules tests: write a rules file, wait for firings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.deliveries.conftest import receiver, receiver_url  # noqa: F401 - fixtures: rules that notify
from tests.harness import Stack, eventually


@pytest.fixture
def write_rules(tmp_path: Path) -> Any:
    """``write_rules([{...}, …])`` → the path of a rules file holding them (YAML 1.2)."""

    def write(rules: list[dict[str, Any]]) -> Path:
        path = tmp_path / "rules.yaml"
        with path.open("w") as handle:
            YAML(typ="safe").dump({"rules": rules}, handle)
        return path

    return write


async def firings(stack: Stack, call_id: str) -> list[dict[str, Any]]:
    response = await stack.client.get(f"/v1/calls/{call_id}/firings")
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def wait_for_firings(
    stack: Stack, call_id: str, count: int, *, status: str = "fired", timeout: float = 10
) -> list[dict[str, Any]]:
    """The call's firings once ``count`` of them have ``status``."""

    async def enough() -> list[dict[str, Any]] | None:
        found = await firings(stack, call_id)
        return found if sum(1 for firing in found if firing["status"] == status) >= count else None

    return await eventually(enough, timeout, interval=0.05, what=f"{count} firings of {call_id} are {status}")


def says(stack: Stack, call_id: str) -> list[str]:
    """The content of every say the simulator received for the call."""
    return [str(m.get("content")) for m in stack.sim.control_received(call_id) if m.get("type") == "say"]
