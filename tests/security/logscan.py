"""A pytest plugin: a test whose captured output or logs contain an API key fails.

Switchboard must never log a key (the test admin key, or any stored ``sb_…`` key): not in an access
log line, not in an error, not in a traceback. After each phase of each test this scans what pytest
captured (stdout, stderr: structlog's lines; and the log records of the logging plugin) and turns a
passing report into a failure naming the line. Wired from ``tests/conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import re
from collections.abc import Generator

import pytest

from tests.conftest import ADMIN_KEY

# A stored key: "sb_" and 43 URL-safe characters (secrets.token_urlsafe(32)); 20 is enough to tell.
_KEY = re.compile(rf"{re.escape(ADMIN_KEY)}|\bsb_[A-Za-z0-9_-]{{20,}}")


def leaked_lines(text: str) -> list[str]:
    """The lines of ``text`` that carry an API key."""
    return [line for line in text.splitlines() if _KEY.search(line)]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, None]:
    """Fail a test phase whose captured output logged an API key."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if item.get_closest_marker("logs_keys") or report.failed:
        return
    leaks = [(name, line) for name, text in report.sections for line in leaked_lines(text)]
    if leaks:
        report.outcome = "failed"
        # Shown masked in the failure report too: CI logs are logs.
        report.sections = [(name, _KEY.sub("<KEY>", text)) for name, text in report.sections]
        shown = "\n".join(f"  [{name}] {_KEY.sub('<KEY>', line)[:300]}" for name, line in leaks[:5])
        report.longrepr = f"an API key appeared in the captured logs ({len(leaks)} line(s)):\n{shown}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "logs_keys: the test prints a key on purpose (the log scan skips it)")
