import ctypes
import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli import main


def test_openapi_command_writes_the_document(tmp_path: Path) -> None:
    out = tmp_path / "openapi.json"
    assert main(["openapi", "--out", str(out)]) == 0
    assert '"operationId": "createCall"' in out.read_text()


def test_bad_configuration_exits_2_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHBOARD_STORAGE_URL", "gopher://nowhere")
    assert main(["migrate"]) == 2
    error = capsys.readouterr().err
    assert "SWITCHBOARD_STORAGE_URL" in error
    assert "unknown storage scheme 'gopher'" in error


def test_migrate_creates_the_embedded_database(tmp_path: Path) -> None:
    database = tmp_path / "nested" / "switchboard.db"
    env = {"SWITCHBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{database}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert database.is_file()
    assert "database is up to date" in result.stderr


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys)
    for command in ("serve", "migrate", "apikeys", "rules", "openapi", "simulate"):
        assert re.search(rf"^\s+{command}\s+\w", text, re.MULTILINE), f"{command} is not described"
    assert "Commands: serve, migrate, apikeys, rules, openapi, simulate." in " ".join(text.split())


def test_serve_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(_help(capsys, "serve").split())
    assert "--host HOST address to listen on (default: 127.0.0.1)" in text
    assert "--port PORT port to listen on (default: 8000)" in text
    assert "SWITCHBOARD_*" in text


ARENAS_AFTER_THREADS = """
import ctypes, sys, tempfile, threading
from service.cli import _one_malloc_arena
if sys.argv[1] == "one":
    _one_malloc_arena()
def work():
    held = [bytes(2048) for _ in range(200)]  # larger than pymalloc's blocks: from the thread's arena
threads = [threading.Thread(target=work) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
with tempfile.NamedTemporaryFile() as out:
    stream = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(open(out.name).read().count("<heap nr="))
"""


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "malloc_info"), reason="glibc's malloc only")
def test_serve_threads_share_one_malloc_arena() -> None:
    """Threads get arenas of their own by default (each keeping its own free memory); serve's share one."""

    def arenas(mode: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", ARENAS_AFTER_THREADS, mode], capture_output=True, text=True, check=True
        )
        return int(done.stdout)

    assert arenas("default") > 1
    assert arenas("one") == 1
