"""The ``switchboard`` command: serve, migrate, apikeys, rules, archive, openapi, simulate."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.settings import ConfigurationError, Settings, load_settings, unknown_variables

if TYPE_CHECKING:
    from litestar import Litestar

_PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies
_M_ARENA_MAX = -8  # mallopt(3)


def _one_malloc_arena() -> None:
    """Every thread of ``serve`` allocates from glibc's main arena (as ``MALLOC_ARENA_MAX=1``).

    By default glibc gives each new thread an arena of its own, up to eight per core: the SQLite reader
    threads, the worker threads of file reads and checkpoints. Each arena keeps the high-water mark of
    its own thread's transient allocations (result rows, read buffers), free but resident and usable by
    no other thread. One arena shares that free memory: a burst of 200 calls (``bench/listen.py
    --burst``, three runs each, alternated) grew the process by 17.8-18.8 MiB instead of 19.8-21.2, with
    the same CPU (the threads allocate mostly while holding the GIL, so they hardly contend for the
    arena's lock). Called before the threads start; a no-op where the C library has no ``mallopt``.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, 1)


def _start_logging(settings: Settings) -> None:
    """Logging first, so that everything after it (warnings, migrations) is in the configured format."""
    import structlog

    from service.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    for warning in unknown_variables():
        structlog.get_logger("service.settings").warning(warning)


def _ready_database(settings: Settings) -> None:
    """Reach the database, migrate it when the settings say so, and refuse one that is not migrated."""
    from service.db.migrate import upgrade
    from service.preflight import check_database_migrated, check_database_reachable

    revision = check_database_reachable(settings.database_url)
    if settings.should_auto_migrate:
        upgrade(settings.database_url)
    else:
        check_database_migrated(settings.database_url, revision)


def _frozen_app(settings: Settings) -> Litestar:
    from service.app import create_app

    app = create_app(settings)
    # Everything built so far (modules, mappers, routes) lives as long as the process: keep it out of
    # the collector's full passes, which otherwise stall the event loop for 50-130 ms under load.
    gc.collect()
    gc.freeze()
    return app


def _uvicorn_options(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    return {
        "host": args.host,
        "port": args.port,
        "log_config": None,  # service.logging renders uvicorn's lines too
        "access_log": settings.access_log,
        "lifespan": "on",
        "ws": "websockets-sansio",
    }


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    _one_malloc_arena()
    import structlog
    import uvicorn

    from service.preflight import bind_port, check_redis_reachable, check_storage_writable, check_workers

    _start_logging(settings)
    check_workers(settings.database_url, settings.redis_url, args.workers)
    # The port first: a busy port is refused before anything starts, not after "switchboard started".
    sock = bind_port(args.host, args.port)
    check_storage_writable(settings.storage_url)
    if settings.redis_url:
        check_redis_reachable(settings.redis_url)
    _ready_database(settings)  # once, in this process: workers find the database migrated
    log = structlog.get_logger(__name__)
    if args.workers > 1:
        from service.rules.files import load_configured_rules

        load_configured_rules(settings.rules_file)  # a rules file with errors: refused here, not by each worker
        log.info("listening", host=args.host, port=args.port, workers=args.workers)
        return _run_workers(args, settings, sock)
    config = uvicorn.Config(_frozen_app(settings), **_uvicorn_options(args, settings))
    log.info("listening", host=args.host, port=args.port)
    # uvicorn re-raises the signal that stopped it once it has shut down: a clean stop, not an error.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])
    return 0


def _run_workers(args: argparse.Namespace, settings: Settings, sock: socket.socket) -> int:
    """``serve --workers N``: uvicorn's supervisor runs N worker processes that accept on ``sock``.

    Each worker builds its own app (:func:`worker_app`): a replica with its own event loop, database
    pool and leases, sharing live audio and console changes with its siblings through Redis. The
    supervisor restarts a worker that dies, stops them all on SIGTERM or SIGINT (each shuts down as
    ``serve`` does), replaces them one by one on SIGHUP, and stops if a worker fails before it serves.
    """
    import structlog
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(
        f"{__name__}:worker_app", factory=True, workers=args.workers, **_uvicorn_options(args, settings)
    )
    supervisor = Multiprocess(config, sockets=[sock])
    supervisor.run()
    if failed := [process.pid for process in supervisor.processes if process.exitcode == STARTUP_FAILURE]:
        structlog.get_logger(__name__).error("a worker failed to start (see its lines above): stopped", pids=failed)
        return 1
    return 0


def worker_app() -> Litestar:
    """The app of one worker of ``serve --workers N``, which uvicorn calls in each process it starts.

    The parent has already checked the configuration and migrated the database; a worker dies with it
    (Linux), so that a supervisor killed with SIGKILL leaves no worker serving on its port.
    """
    from multiprocessing import parent_process

    from service.logging import configure_logging

    _one_malloc_arena()
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    parent = parent_process()
    if sys.platform == "linux" and parent is not None:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent.pid:  # the parent died before prctl
            raise SystemExit(0)
    return _frozen_app(settings)


def _migrate(_args: argparse.Namespace, settings: Settings) -> int:
    import structlog

    from service.db.migrate import upgrade
    from service.preflight import check_database_reachable

    _start_logging(settings)
    check_database_reachable(settings.database_url)
    upgrade(settings.database_url)
    structlog.get_logger(__name__).info("database is up to date")
    return 0


def _apikeys(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from service.apikeys.service import ApiKeyService
    from service.db.engine import Database
    from service.errors import DomainError

    _ready_database(settings)

    async def run() -> int:
        db = Database(settings.database_url)
        keys = ApiKeyService(db, admin_key=None)
        try:
            if args.action == "create":
                row, key = await keys.create(args.name, args.scopes)
                print(f"created key {row.prefix}… ({row.id}) with scopes {','.join(row.scopes)}", file=sys.stderr)
                print("it is shown once: store it now", file=sys.stderr)
                print(key)
            elif args.action == "list":
                for row in await keys.list():
                    state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
                    used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
                    print(f"{row.id}  {row.prefix}…  {row.name:<24} {','.join(row.scopes):<40} {state:<18} used {used}")
            else:
                row = await keys.revoke(args.key)
                print(f"revoked {row.prefix}… ({row.name})", file=sys.stderr)
        except DomainError as exc:
            print(f"switchboard: {exc.detail}", file=sys.stderr)
            return 1
        finally:
            await db.dispose()
        return 0

    return asyncio.run(run())


def _archive(_args: argparse.Namespace, settings: Settings) -> int:
    """Re-encode every finished raw recording as a lossless FLAC archive, with a progress line."""
    import asyncio

    from service.db.engine import Database
    from service.db.migrate import upgrade
    from service.lifecycle.archive import Archiver
    from service.logging import configure_logging
    from service.recordings.storage import build_storage

    configure_logging("warning", settings.log_format)  # the progress line is the output
    if settings.should_auto_migrate:
        upgrade(settings.database_url)

    def progress(done: int, total: int, raw: int, stored: int) -> None:
        ratio = f"{stored / raw:.0%} of raw" if raw else "-"
        print(
            f"\rarchived {done}/{total}: {raw / 1e6:,.1f} MB raw -> {stored / 1e6:,.1f} MB ({ratio})",
            end="",
            file=sys.stderr,
        )

    async def run() -> int:
        db = Database(settings.database_url)
        storage = build_storage(settings.storage_url)
        try:
            archiver = Archiver(db, storage)
            print(f"{await archiver.pending()} recording(s) to archive", file=sys.stderr)
            done, failed = await archiver.archive_all(progress)
        finally:
            await storage.close()
            await db.dispose()
        print(f"\n{done} archived, {failed} failed (kept raw; see the log)", file=sys.stderr)
        return 1 if failed else 0

    return asyncio.run(run())


def openapi_document() -> str:
    """The OpenAPI document as stable, sorted JSON (what ``openapi/openapi.json`` holds)."""
    from service.app import create_app

    settings = Settings(_env_file=None, database_url="sqlite+aiosqlite:///:memory:", storage_url="memory://")
    schema = create_app(settings).openapi_schema.to_schema()
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def _openapi(args: argparse.Namespace, _settings: Settings | None) -> int:
    document = openapi_document()
    if args.out:
        Path(args.out).write_text(document)
    else:
        sys.stdout.write(document)
    return 0


def _simulate(args: argparse.Namespace, _settings: Settings | None) -> int:
    from service.logging import configure_logging
    from service.preflight import bind_port
    from service.simulator import run_simulator

    configure_logging("info")
    bind_port(args.host, args.port).close()  # a busy port: one line, not a traceback
    run_simulator(
        host=args.host,
        port=args.port,
        server_url=args.server_url,
        secret=args.secret,
        pace=args.pace,
        talk_seconds=args.talk_seconds,
    )
    return 0


def _rules_check(args: argparse.Namespace, _settings: Settings | None) -> int:
    """Print each rule's compiled form (JSON) on standard output, or every error on standard error."""
    from service.rules.files import parse_rules_text

    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"switchboard: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    rules, errors = parse_rules_text(text, source=str(path))
    if errors:
        for error in errors:
            print(f"{path}:{error.line or '?'}: {error.without_line()}", file=sys.stderr)
        print(f"{len(errors)} error(s) in {path}", file=sys.stderr)
        return 1
    print(json.dumps({"rules": [rule.compiled_form() for rule in rules]}, indent=2))
    print(f"{len(rules)} rule(s) OK", file=sys.stderr)
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard",
        description="Switchboard: call tracking, durable recordings, live control and rules for Vapi calls. "
        "Commands: serve, migrate, apikeys, rules, openapi, simulate.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the API, webhook receiver and listen sessions",
        description="Run the service. Everything else is configured with SWITCHBOARD_* variables (see the README).",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="processes serving the port, one per core to use (default: %(default)s). Each is a replica with its "
        "own leases; N > 1 needs PostgreSQL and SWITCHBOARD_REDIS_URL. A worker that dies is restarted; "
        "SIGTERM stops them all",
    )
    serve.set_defaults(handler=_serve, needs_settings=True)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(handler=_migrate, needs_settings=True)

    apikeys = commands.add_parser("apikeys", help="create, list and revoke API keys")
    actions = apikeys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key; prints it once, alone on the last line")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--scopes",
        required=True,
        help="comma-separated: calls:read, calls:write, calls:delete, recordings:read, rules:read, rules:write, "
        "webhooks:write, admin",
    )
    actions.add_parser("list", help="list keys (never the keys themselves)")
    revoke = actions.add_parser("revoke", help="revoke a key by id or prefix")
    revoke.add_argument("key", help="the key's id or its prefix as listed (sb_xxxxxxx…, with or without the …)")
    apikeys.set_defaults(handler=_apikeys, needs_settings=True)

    archive = commands.add_parser("archive", help="re-encode finished raw recordings as lossless FLAC archives")
    archive.set_defaults(handler=_archive, needs_settings=True)

    openapi = commands.add_parser("openapi", help="write the OpenAPI document")
    openapi.add_argument("--out", help="file to write (default: standard output)")
    openapi.set_defaults(handler=_openapi, needs_settings=False)

    simulate = commands.add_parser("simulate", help="run the built-in Vapi simulator")
    simulate.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    simulate.add_argument("--port", type=int, default=8001, help="port to listen on (default: %(default)s)")
    simulate.add_argument("--server-url", help="where to POST server messages (webhooks)")
    simulate.add_argument("--secret", help="sent as X-Vapi-Secret with every server message")
    simulate.add_argument(
        "--pace", type=float, default=1.0, help="audio speed: 1 = real time, 10 = 10x (default: %(default)s)"
    )
    simulate.add_argument("--talk-seconds", type=float, default=None, help="how long each call talks")
    simulate.set_defaults(handler=_simulate, needs_settings=False)

    rules = commands.add_parser("rules", help="work with rules files")
    rules_commands = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_commands.add_parser("check", help="validate a rules file: compiled form, or errors with lines")
    check.add_argument("file", help="the YAML rules file")
    check.set_defaults(handler=_rules_check, needs_settings=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a configuration or start-up check that fails exits 2 with its message alone."""
    args = build_parser().parse_args(argv)
    settings: Settings | None = None
    try:
        settings = load_settings() if args.needs_settings else None
        return int(args.handler(args, settings))
    except ConfigurationError as exc:
        if settings is not None and settings.log_format == "json":  # log shippers read JSON lines only
            import structlog

            from service.logging import configure_logging

            configure_logging(settings.log_level, "json")
            structlog.get_logger(__name__).error(str(exc))
        else:
            print(f"switchboard: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
