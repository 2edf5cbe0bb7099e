"""``scalekit demo``: the example services measured with the primitives off and on.

The demo starts an embedded PostgreSQL (the ``pgserver`` wheel) unless
``--database-url`` names a server, seeds one template database through every example
service's ``install``/``seed``, and then drives the chat, feed, sync and directory
services in-process twice, each time on a fresh copy of the template: once built
with ``ServiceConfig(primitives=False)`` and once with ``primitives=True``. It
prints what PostgreSQL and scalekit's registry counted, next to the figures the
scaling plans claimed, and writes the same figures as JSON and as an HTML page.

Everything heavy (asyncpg, FastAPI, httpx, pgserver, matplotlib, rich) is imported
only when the demo runs, so ``import scalekit`` never pays for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["add_parser", "cmd_demo"]

DEFAULTS = {"users": 1000, "requests": 400}
QUICK = {"users": 200, "requests": 60}

_NEEDS = {
    "asyncpg": "asyncpg",
    "fastapi": "fastapi",
    "httpx": "httpx",
    "matplotlib": "matplotlib",
    "rich": "rich",
}
_HINT = "pip install 'scalekit-primitives[demo]' (from a checkout: python3 dev.py demo)"


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if value < 1 or value > 1_000_000:
        raise argparse.ArgumentTypeError(f"expected 1 to 1,000,000, got {value}")
    return value


def add_parser(sub: Any) -> None:
    """Add ``demo`` to a subparsers object."""
    demo = sub.add_parser(
        "demo",
        help="run the example services with the primitives off and on; measure the savings",
        description="Seed a PostgreSQL database, drive the chat, feed, sync and directory "
        "example services in-process with a synthetic population, once with every "
        "scalekit primitive off and once on, and report what the database and the "
        "primitives counted next to the scaling plans' claims. Writes demo.json and "
        "demo.html to --out. Without --database-url an embedded PostgreSQL (the pgserver "
        "wheel) is started and removed at the end.",
    )
    demo.add_argument(
        "--users",
        type=_positive,
        help=f"users to seed (default {DEFAULTS['users']:,}; --quick {QUICK['users']})",
    )
    demo.add_argument(
        "--requests",
        type=_positive,
        help=f"requests per service and phase (default {DEFAULTS['requests']}; "
        f"--quick {QUICK['requests']})",
    )
    demo.add_argument("--seed", type=int, default=1, help="seed of the data and workload")
    demo.add_argument("--quick", action="store_true", help="a smaller population and workload")
    demo.add_argument(
        "--database-url",
        metavar="DSN",
        help="a PostgreSQL server to use instead of the embedded one; the demo creates "
        "databases named scalekit_demo_* there (CREATEDB needed) and drops them",
    )
    demo.add_argument(
        "--redis-url",
        metavar="URL",
        help="keep limits, caches and budgets in this Redis database (it must be empty; "
        "the demo flushes it between phases and at the end) instead of in memory",
    )
    demo.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        default=Path("scalekit-demo"),
        help="where demo.json and demo.html go (default ./scalekit-demo)",
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)


class _Usage(Exception):
    """A usage or environment problem: its message on stderr, exit status 2."""


class _Unreachable(Exception):
    """A server given on the command line did not answer: exit status 3."""


def _check_dependencies(embedded: bool) -> None:
    needed = dict(_NEEDS)
    if embedded:
        needed["pgserver"] = "pgserver"
    missing = [pkg for mod, pkg in needed.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise _Usage(f"the demo needs {', '.join(missing)}: {_HINT}")


def _check_redis_url(url: str) -> None:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise _Usage(f"--redis-url takes a redis://, rediss:// or unix:// URL, got {url[:40]!r}")
    if importlib.util.find_spec("redis") is None:
        raise _Usage("--redis-url needs redis-py: pip install 'scalekit-primitives[redis]'")


async def _redis_is_empty(url: str) -> bool:
    import redis.asyncio

    client: Any = redis.asyncio.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        return int(await client.dbsize()) == 0
    finally:
        await client.aclose()


def _check_redis(url: str) -> None:
    """An empty Redis database we can reach, or a one-line reason (exit 2 or 3)."""
    import redis

    from scalekit.pools import PoolSettings

    label = PoolSettings.from_url(url).label
    try:
        empty = asyncio.run(_redis_is_empty(url))
    except (redis.RedisError, OSError) as exc:
        raise _Unreachable(f"could not reach {label}: {exc}") from None
    if not empty:
        raise _Usage(
            f"{label} is not empty; point --redis-url at an empty database "
            "(e.g. redis://localhost:6379/15): the demo flushes it between phases"
        )


async def _check_postgres(dsn: str) -> None:
    """A server we can reach, as a role that may create databases."""
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except asyncpg.PostgresError as exc:  # refused: no such database, bad password, ...
        raise _Usage(f"PostgreSQL refused the connection: {exc}") from None
    try:
        may_create = await conn.fetchval(
            "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
        )
    finally:
        await conn.close()
    if not may_create:
        raise _Usage(
            "--database-url: the demo creates (and drops) databases named scalekit_demo_*; "
            "its role needs CREATEDB"
        )


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the demo like Ctrl-C does, so its cleanup runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Progress:
    """A rich progress bar on stderr: one line per service and phase."""

    def __init__(self, enabled: bool) -> None:
        self._bar: Any = None
        self._tasks: dict[tuple[str, str], Any] = {}
        self._stage: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description:<32}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def stage(self, text: str) -> None:
        if self._bar is None:
            return
        if self._stage is not None:
            self._bar.update(self._stage, total=1, completed=1)
        self._stage = self._bar.add_task(text, total=None)

    def plan(self, phases: list[tuple[str, str]], services: list[str], requests: int) -> None:
        if self._bar is None:
            return
        for phase, label in phases:
            for name in services:
                self._tasks[phase, name] = self._bar.add_task(
                    f"{name} ({label})", total=requests, start=False
                )

    def tick(self, phase: str, service: str, n: int) -> None:
        if self._bar is None:
            return
        if self._stage is not None:
            self._bar.update(self._stage, total=1, completed=1)
            self._stage = None
        task = self._tasks[phase, service]
        self._bar.start_task(task)
        current = self._bar.tasks[task]
        if current.total is not None and current.completed + n > current.total:
            self._bar.update(task, total=current.completed + n)
        self._bar.advance(task, n)


def _command_line(argv: list[str]) -> str:
    """The command as typed, with the passwords of the URLs in it masked (a URL that
    cannot be parsed is masked whole: never printed with its password)."""
    from scalekit._urls import redact as redact_url

    def redact(arg: str) -> str:
        option, eq, value = arg.partition("=")
        if eq and option in ("--database-url", "--redis-url"):
            return f"{option}={redact(value)}"
        if "://" in arg:
            try:
                return redact_url(arg)
            except ValueError:
                return "***"
        return arg

    return " ".join(["scalekit", *(redact(a) for a in argv)])


async def _run(args: argparse.Namespace, dsn: str, database: str, timings: dict[str, float]) -> Any:
    from scalekit import __version__
    from scalekit._demo import _report, _runner
    from scalekit._demo._postgres import demo_databases
    from scalekit._demo._services import load_services
    from scalekit.pools import PoolSettings

    services, absent, origin = load_services()
    options = _runner.RunOptions(
        users=args.users, requests=args.requests, seed=args.seed, redis_url=args.redis_url
    )
    progress = _Progress(enabled=not args.no_progress and sys.stderr.isatty())
    async with demo_databases(dsn) as dbs:
        with progress:
            progress.stage("seeding the database")
            t = time.perf_counter()
            template, population = await _runner.seed(dbs, services, options)
            timings["seed_seconds"] = time.perf_counter() - t
            progress.plan(
                [(p, label) for p, label, _ in _runner.PHASES],
                [s.name for s in services],
                args.requests,
            )
            t = time.perf_counter()
            try:
                runs = await _runner.run_phases(
                    dbs, services, options, population, template, progress.tick, timings
                )
            finally:
                if args.redis_url is not None:
                    with contextlib.suppress(Exception):
                        await _runner._flush_redis(args.redis_url)
            timings["phases_seconds"] = time.perf_counter() - t
        if dbs.query_source == "pg_stat_statements":
            queries = (
                "pg_stat_statements: calls of the services' statements (the pool's resets, "
                "asyncpg's type introspection and the demo's own reads left out)"
            )
        else:
            why = (
                "the pgserver wheel does not ship pg_stat_statements"
                if args.database_url is None
                else "this server does not load pg_stat_statements"
            )
            queries = (
                f"pg_stat_database: xact_commit + xact_rollback ({why}): each statement "
                "outside a transaction block counts one, as do each explicit transaction, "
                "each new connection and the pool's reset at each release"
            )
        server = f"PostgreSQL {dbs.server_version}"
    meta = {
        "scalekit_version": __version__,
        "command": _command_line(args.argv),
        "settings": {
            "users": args.users,
            "requests": args.requests,
            "seed": args.seed,
            "quick": args.quick,
            "active_share": options.active_share,
            "database": f"{server}, {database}",
            "backend": PoolSettings.from_url(args.redis_url).label
            if args.redis_url
            else "memory://",
            "services_from": origin,
            "services_absent": absent,
        },
        "population": {
            "users": population.users,
            "active": len(population.active),
            "paid": len(population.paid),
        },
        "counted_by": {
            "DB queries": queries,
            "rows read": "pg_stat_user_tables.seq_tup_read + pg_stat_user_indexes.idx_tup_read "
            "of the phase's database (rows read by sequential scans, index entries read)",
            "rows written": "pg_stat_user_tables: n_tup_ins + n_tup_upd + n_tup_del",
            "cache hit ratio": "scalekit's metrics registry: scalekit_cache_hits_total and "
            "scalekit_cache_stale_served_total over those plus scalekit_cache_misses_total",
            "429 responses": "the HTTP status of each response the workload received",
            "latency": "each request timed by the service's workload (time.perf_counter)",
            "LLM, extraction and sync figures": "the services' own counters "
            "(their fake LLM, their extractor, their syncing clients)",
        },
        "timings": timings,
    }
    return _report.build(runs, meta)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the measured demo; 0 when done, 2 for a usage or installation problem."""
    began = time.perf_counter()
    defaults = QUICK if args.quick else DEFAULTS
    args.users = args.users or defaults["users"]
    args.requests = args.requests or defaults["requests"]
    if not hasattr(args, "argv"):
        args.argv = ["demo"]
    embedded = None
    timings: dict[str, float] = {}
    try:
        _check_dependencies(embedded=args.database_url is None)
        if args.redis_url is not None:
            _check_redis_url(args.redis_url)
        from scalekit._demo._report import render_text, write_html, write_json
        from scalekit._demo._services import ExamplesMissing, load_services

        try:
            load_services()
        except ExamplesMissing as exc:
            raise _Usage(str(exc)) from None
        if args.redis_url is not None:
            _check_redis(args.redis_url)
        if args.database_url is not None:
            from scalekit.pools import PoolSettings

            try:
                asyncio.run(_check_postgres(args.database_url))
            except (OSError, TimeoutError) as exc:
                label = PoolSettings.from_url(args.database_url).label
                raise _Unreachable(f"could not reach {label}: {exc}") from None
        out: Path = args.out
        out.mkdir(parents=True, exist_ok=True)
        with _sigterm_as_interrupt():
            try:
                if args.database_url is None:
                    from scalekit._demo._postgres import EmbeddedPostgres

                    embedded = EmbeddedPostgres()
                    print("starting an embedded PostgreSQL (pgserver)...", file=sys.stderr)
                    t = time.perf_counter()
                    dsn, database = embedded.start(), "embedded (pgserver wheel)"
                    asyncio.run(embedded.tune(dsn))
                    timings["server_start_seconds"] = time.perf_counter() - t
                else:
                    from scalekit.pools import PoolSettings

                    dsn = args.database_url
                    database = PoolSettings.from_url(dsn).label
                report = asyncio.run(_run(args, dsn, database, timings))
            finally:
                if embedded is not None:
                    t = time.perf_counter()
                    embedded.close()
                    timings["server_stop_seconds"] = time.perf_counter() - t
    except _Usage as exc:
        print(f"scalekit: error: {exc}", file=sys.stderr)
        return 2
    except _Unreachable as exc:
        print(f"scalekit: error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("\nscalekit demo: interrupted; its databases were dropped", file=sys.stderr)
        return 130
    report["elapsed_seconds"] = time.perf_counter() - began
    write_json(report, out / "demo.json")
    write_html(report, out / "demo.html")
    print(render_text(report))
    print(f"\nwrote {out / 'demo.json'} and {out / 'demo.html'}")
    return 0
