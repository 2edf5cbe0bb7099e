"""The measured demo (``scalekit demo``): its figures are what PostgreSQL and the
primitives counted, they move with the workload, and its report files stand alone.

The counting layer is checked exactly against a workload the test makes itself (on
``pg_stat_database`` and, on a server that loads it, ``pg_stat_statements``); the demo
itself runs in ``--quick`` mode twice on the suite's PostgreSQL with different
``--requests``; the embedded server is started and removed, also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from scalekit.__main__ import main
from scalekit._demo._postgres import HOUSEKEEPING, Counts, DemoDatabases, demo_databases

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("chat", "feed", "sync", "directory")


# -- the counting layer ------------------------------------------------------------------------
async def _table(dbs: DemoDatabases, what: str) -> str:
    name = await dbs.create(what)
    con = await asyncpg.connect(dbs.dsn(name))
    try:
        await con.execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false);"
            "INSERT INTO t SELECT i, 'x' FROM generate_series(1, 1000) i;"
            "ANALYZE t"  # plans known in advance: count(*) scans, id = / id <= use the index
        )
    finally:
        await con.close()
    return name


@pytest.fixture(scope="module")
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A PostgreSQL of this module's own, without autovacuum (whose workers visit every
    database and commit transactions there), so counts can be checked exactly."""
    from servers import ServerUnavailable, start_postgres

    try:
        server = start_postgres(tmp_path_factory.mktemp("pg"), methods=("pg_ctl",))
    except ServerUnavailable as exc:
        pytest.skip(f"no pg_ctl PostgreSQL here: {exc}")
    try:
        yield server
    finally:
        server.close()


async def _alter_system(dsn: str, *settings: str) -> None:
    con = await asyncpg.connect(dsn)
    try:
        for setting in settings:
            await con.execute(f"ALTER SYSTEM SET {setting}")
        await con.execute("SELECT pg_reload_conf()")
    finally:
        await con.close()


async def test_snapshots_count_exactly_what_the_server_did(private_postgres: Any) -> None:
    await _alter_system(private_postgres.dsn, "autovacuum = off")
    async with demo_databases(private_postgres.dsn) as dbs:
        dbs.query_source = "pg_stat_database"  # whether or not the server loads pgss
        name = await _table(dbs, "count")
        zero = await dbs.snapshot(name)
        first = await dbs.snapshot(name)
        assert first.since(zero) == Counts(0, 0, 0)  # the snapshots' own reads are not counted

        con = await asyncpg.connect(dbs.dsn(name))  # a new connection: one transaction
        for _ in range(7):
            await con.execute("SELECT count(*) FROM t")  # a sequential scan: 1,000 rows
        await con.execute("INSERT INTO t VALUES (1001, 'y'), (1002, 'z')")
        await con.fetch("SELECT v FROM t WHERE id = $1", 5)  # one index entry
        await con.close()
        second = await dbs.snapshot(name)
        assert second.since(first) == Counts(queries=1 + 7 + 1 + 1, rows_read=7001, rows_written=2)

        con = await asyncpg.connect(dbs.dsn(name))
        await con.execute("UPDATE t SET v = 'w' WHERE id <= 10")
        await con.close()
        third = await dbs.snapshot(name)
        assert third.since(second) == Counts(2, 10, 10)

        # a dropped table (a partition the maintenance job removed) keeps what it had
        # counted: the sums never go down
        con = await asyncpg.connect(dbs.dsn(name))
        await con.execute("DROP TABLE t")
        await con.close()
        assert (await dbs.snapshot(name)).since(third) == Counts(2, 0, 0)


async def test_pg_stat_statements_counts_the_services_statements_only(
    private_postgres: Any,
) -> None:
    """On a server that preloads pg_stat_statements, queries are the statements' calls:
    the pool's resets (four statements per release) and the demo's reads are left out."""
    from scalekit.pools import PgPool

    await _alter_system(
        private_postgres.dsn, "autovacuum = off", "shared_preload_libraries = 'pg_stat_statements'"
    )
    private_postgres.restart()
    async with demo_databases(private_postgres.dsn) as dbs:
        assert dbs.query_source == "pg_stat_statements"
        name = await _table(dbs, "pgss")
        await dbs.prepare_template(name)
        if dbs.query_source != "pg_stat_statements":
            pytest.skip("this PostgreSQL has no pg_stat_statements extension files")
        first = await dbs.snapshot(name)
        async with PgPool(dbs.dsn(name)) as pool:
            for i in range(5):
                await pool.fetch("SELECT v FROM t WHERE id = $1", i)  # ids 1-4 exist
            await pool.execute("SELECT count(*) FROM t")
        got = (await dbs.snapshot(name)).since(first)
        assert got == Counts(queries=6, rows_read=4 + 1000, rows_written=0)


@pytest.mark.parametrize(
    ("query", "housekeeping"),
    [
        ("SELECT pg_advisory_unlock_all()", True),
        ("CLOSE ALL", True),
        ("UNLISTEN *", True),
        ("RESET ALL", True),
        ("BEGIN ISOLATION LEVEL READ COMMITTED", True),
        ("COMMIT", True),
        ("SELECT $1", True),
        ("SELECT t.oid FROM pg_catalog.pg_type AS t", True),
        ("SELECT id FROM messages WHERE conversation_id = $1", False),
        ("INSERT INTO users (id) VALUES ($1)", False),
        ("SELECT $1 AS resetting, id FROM t", False),
        ("UPDATE settings SET value = $1", False),
    ],
)
def test_what_counts_as_housekeeping(query: str, housekeeping: bool) -> None:
    assert bool(HOUSEKEEPING.search(query)) is housekeeping


# -- the demo, end to end ----------------------------------------------------------------------
def _demo(out: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["demo", "--no-progress", "--out", str(out), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def two_runs(
    postgres_dsn: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], dict[str, Any], Path, str]:
    """Two quick demos on the suite's PostgreSQL, 25 requests per service and phase
    in memory, then 50 with the limits and caches on the suite's Redis (database 14,
    emptied first; the demo empties it again at the end)."""
    import redis

    scratch = urlunsplit(urlsplit(redis_url)._replace(path="/14"))
    client = redis.Redis.from_url(scratch)
    client.flushdb()
    runs: list[dict[str, Any]] = []
    out = tmp_path_factory.mktemp("demo")
    text = ""
    for n, backend in ((25, []), (50, ["--redis-url", scratch])):
        target = out / str(n)
        args = ["demo", "--no-progress", "--quick", "--users", "120", "--requests", str(n)]
        with _captured() as buf:
            code = main([*args, *backend, "--database-url", postgres_dsn, "--out", str(target)])
        assert code == 0, buf.getvalue()
        text = buf.getvalue()
        runs.append(json.loads((target / "demo.json").read_text()))
    assert client.dbsize() == 0  # what the demo wrote to Redis is gone
    client.close()
    return runs[0], runs[1], out / "50", text


@contextlib.contextmanager
def _captured() -> Iterator[Any]:
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        yield buf


def _services(report: dict[str, Any], phase: str) -> dict[str, Any]:
    services: dict[str, Any] = report["phases"][phase]["services"]
    return services


def test_the_demo_measures_every_service_in_both_phases(two_runs: Any) -> None:
    small, big, out, text = two_runs
    for report in (small, big):
        assert set(_services(report, "off")) == set(_services(report, "on")) == set(SERVICES)
        assert "pg_stat_database" in report["counted_by"]["DB queries"]
        for phase in ("off", "on"):
            for name, svc in _services(report, phase).items():
                assert svc["requests"] >= 1, name
                assert svc["latency_p50_ms"] <= svc["latency_p95_ms"], name
                assert svc["db_queries"] > 0, name
                assert svc["db_rows_read"] > 0 and svc["db_rows_written"] >= 0, name
    assert "\n  DB queries: pg_stat_database: xact_commit + xact_rollback" in text
    assert small["settings"]["backend"] == "memory://"
    assert big["settings"]["backend"].startswith("redis://") and "/14" in big["settings"]["backend"]
    assert "The plans' claims" in text and str(out / "demo.html") in text


def test_the_figures_are_counted_not_constant(two_runs: Any) -> None:
    """Twice the requests: more queries, rows, LLM and extraction calls, as counted
    by the server and the services; the first page's rows stay what they are."""
    small, big, _, _ = two_runs
    for phase in ("off", "on"):
        a, b = small["phases"][phase]["total"], big["phases"][phase]["total"]
        assert b["requests"] > a["requests"]
        assert b["db_queries"] > a["db_queries"]
        assert b["db_rows_read"] > a["db_rows_read"]
    chat_small, chat_big = _services(small, "off")["chat"], _services(big, "off")["chat"]
    assert chat_big["service_figures"]["llm_calls"] > chat_small["service_figures"]["llm_calls"]
    # without a cache every chat request reads the database: at least one query each
    assert chat_small["db_queries"] >= chat_small["requests"]
    # OFFSET reads every row before the deep page; keyset about a page
    deep_off = _services(big, "off")["directory"]["service_figures"]
    deep_on = _services(big, "on")["directory"]["service_figures"]
    assert deep_off["deep_page_rows_read"] >= deep_off["deep_page_depth"]
    assert deep_on["deep_page_rows_read"] < 2 * 50 + 10


def test_the_claims_are_judged_from_the_measurement(two_runs: Any) -> None:
    _, big, _, text = two_runs
    claims = {c["key"]: c for c in big["claims"]}
    assert set(claims) == {"caching", "sampling", "delta_sync", "keyset"}
    for c in claims.values():
        assert c["verdict"] in ("reproduced", "not reproduced"), c
        expected = 1 - c["with_primitives"] / c["without"]
        assert c["reduction"] == pytest.approx(expected)
        assert (c["verdict"] == "reproduced") is (c["reduction"] >= c["claimed_low"])
        line = next(x for x in text.splitlines() if x.strip().startswith(c["claim"]))
        assert f"{c['reduction']:.0%}" in line and c["verdict"] in line
    caching = claims["caching"]
    chat_off, chat_on = _services(big, "off")["chat"], _services(big, "on")["chat"]
    assert (caching["without"], caching["with_primitives"]) == (
        chat_off["db_queries"],
        chat_on["db_queries"],
    )


def test_the_report_files_work_offline(two_runs: Any) -> None:
    _, big, out, _ = two_runs
    page = (out / "demo.html").read_text()
    assert page.startswith("<!doctype html>")
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page, re.IGNORECASE)
    assert not re.search(r"<script|<link|@import", page, re.IGNORECASE)
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) >= 3 and all(s.startswith("data:image/svg+xml;base64,") for s in sources)
    for claim in big["claims"]:
        assert claim["claim"] in page
    assert f"{big['phases']['off']['total']['db_queries']:,}" in page


# -- the embedded server -----------------------------------------------------------------------
def _postmaster_pids(root: Path) -> list[int]:
    pids = []
    for pidfile in root.glob("scalekit-demo-pg-*/pgdata/postmaster.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pids.append(int(pidfile.read_text().split()[0]))
    return pids


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    return True


@pytest.mark.slow
def test_ctrl_c_stops_and_removes_the_embedded_server(tmp_path: Path) -> None:
    pytest.importorskip("pgserver")
    # short: the server's unix socket lives under it (pytest's tmp_path is too long)
    temp = Path(tempfile.mkdtemp(prefix="skdemo-t"))
    try:
        _interrupt_the_demo(temp, tmp_path)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _interrupt_the_demo(temp: Path, tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(temp)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "scalekit", "demo", "--quick", "--out", str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        pids: list[int] = []
        while not pids and proc.poll() is None and time.monotonic() < deadline:
            pids = _postmaster_pids(temp)
            time.sleep(0.05)  # polling for a file another process writes
        assert pids, "the embedded server did not start"
        # wait until the demo is connected to it (its databases exist), then interrupt
        while proc.poll() is None and time.monotonic() < deadline:
            if any((p / "base").is_dir() and len(list((p / "base").iterdir())) > 3
                   for p in temp.glob("scalekit-demo-pg-*/pgdata")):  # fmt: skip
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not list(temp.glob("scalekit-demo-pg-*")), "the data directory was left behind"
    assert not any(_alive(pid) for pid in pids), "the server is still running"


@pytest.mark.slow
def test_an_error_mid_run_still_removes_the_embedded_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("pgserver")
    from scalekit._demo import _runner

    temp = Path(tempfile.mkdtemp(prefix="skdemo-e"))
    seen: list[int] = []

    async def broken(*args: Any, **kwargs: Any) -> Any:
        seen.extend(_postmaster_pids(temp))
        raise RuntimeError("a service failed")

    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setattr(_runner, "_run_service", broken)
    try:
        with pytest.raises(RuntimeError, match="a service failed"), _captured():
            main(["demo", "--quick", "--no-progress", "--out", str(tmp_path)])
        assert seen, "the embedded server was not running when the service failed"
        assert not list(temp.glob("scalekit-demo-pg-*")), "the data directory was left behind"
        assert not any(_alive(pid) for pid in seen), "the server is still running"
    finally:
        shutil.rmtree(temp, ignore_errors=True)


# -- usage -------------------------------------------------------------------------------------
def test_the_command_line_in_the_report_hides_passwords() -> None:
    from scalekit._demo import _command_line

    line = _command_line(
        [
            "demo",
            "--database-url",
            "postgresql://me:s3cret@db/x",
            "--redis-url=redis://:pw@r:6379/1",
        ]
    )
    assert "s3cret" not in line and ":pw@" not in line
    assert line.startswith("scalekit demo --database-url postgresql://me:***@db/x")
    # a URL that does not parse is masked whole, never echoed with its password
    assert _command_line(["demo", "--database-url=postgresql://u:pw@[bad/x"]) == (
        "scalekit demo --database-url=***"
    )


def test_import_scalekit_imports_none_of_the_demo_dependencies() -> None:
    code = (
        "import sys, scalekit, scalekit.__main__, scalekit._demo\n"
        "heavy = {'fastapi', 'httpx', 'asyncpg', 'pgserver', 'matplotlib', 'rich'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--requests", "0"])
    assert exc.value.code == 2
    code, _, err = _demo(tmp_path, "--redis-url", "http://example.invalid/", capsys=capsys)
    assert code == 2 and "redis://" in err


def test_a_redis_that_is_not_empty_is_refused(
    fresh_redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import redis

    client = redis.Redis.from_url(fresh_redis_url)
    client.set("someone-elses-key", "1")
    client.close()
    code, _, err = _demo(tmp_path, "--redis-url", fresh_redis_url, capsys=capsys)
    assert code == 2 and "not empty" in err
    assert redis.Redis.from_url(fresh_redis_url).get("someone-elses-key") == b"1"


def test_an_unreachable_database_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://postgres:secret@127.0.0.1:{port}/postgres"
    code, _, err = _demo(tmp_path, "--database-url", url, capsys=capsys)
    assert code == 3 and "could not reach" in err and "secret" not in err
