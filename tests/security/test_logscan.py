"""Item 9: a test whose logs carry an API key fails (the scan of tests/security/logscan.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.security.logscan import leaked_lines

ROOT = Path(__file__).resolve().parents[2]
LEAKY_TEST = """
import logging
import structlog

def test_logs_the_admin_key():
    structlog.get_logger("x").info("authenticated", token="test-admin-key")

def test_logs_a_stored_key():
    logging.getLogger("uvicorn.access").warning('"GET /v1/calls/x/listen?token=sb_%s" 101', "A" * 43)

def test_logs_nothing_secret():
    structlog.get_logger("x").info("authenticated", key_prefix="sb_abc")
"""


def test_key_shapes_are_recognised() -> None:
    assert leaked_lines("ok\nBearer test-admin-key\nfine") == ["Bearer test-admin-key"]
    assert leaked_lines("GET /listen?token=sb_" + "x" * 43) != []
    assert leaked_lines("prefix=sb_abcdefg (shown prefixes are short)") == []


def test_a_test_that_logs_a_key_fails(tmp_path: Path) -> None:
    (tmp_path / "test_leaky.py").write_text(LEAKY_TEST)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.security.logscan", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
        timeout=120,
    )
    assert "2 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    assert "an API key appeared in the captured logs" in result.stdout
    assert "test-admin-key" not in result.stdout, "the report masks the key"
