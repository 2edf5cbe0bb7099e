"""The operations CLI in a subprocess (``python -m scalekit ...``) against the suite's
real Redis: state set with the library, read and changed with the CLI (and back)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scalekit import RateLimiter
from scalekit.cache import Cache
from scalekit.errors import CircuitOpenError
from scalekit.resilience import CircuitBreaker, State

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SCALEKIT_")}
    out = subprocess.run(
        [sys.executable, "-m", "scalekit", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**base, **(env or {})},
        timeout=60,
    )
    assert "Traceback" not in out.stderr, out.stderr
    return out


def as_json(out: subprocess.CompletedProcess[str]) -> Any:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- help and usage ------------------------------------------------------------------------------
def test_without_a_command_lists_the_commands() -> None:
    out = cli()
    assert out.returncode == 2
    for name in ("demo", "capacity", "limits", "breaker", "cache", "health", "exit codes"):
        assert name in out.stderr
    assert "``" not in out.stderr and ":class:" not in out.stderr  # no reST markup


def test_a_group_without_its_subcommand_shows_its_help() -> None:
    out = cli("limits")
    assert out.returncode == 2
    assert "show" in out.stderr and "reset" in out.stderr


def test_help_is_plain_text() -> None:
    for args in (("--help",), ("limits", "show", "--help"), ("cache", "purge", "--help")):
        out = cli(*args)
        assert out.returncode == 0
        assert "``" not in out.stdout and ":class:" not in out.stdout
        assert "exit codes" in out.stdout


def test_usage_errors_exit_2() -> None:
    assert cli("limits", "show").returncode == 2  # argparse: missing arguments
    out = cli("limits", "show", "chat", "u", "--redis-url", "redis://127.0.0.1:1/0")
    assert out.returncode == 2 and "--policy" in out.stderr  # the policy is unknown
    out = cli("cache", "get", "k")  # no Redis URL anywhere
    assert out.returncode == 2 and "SCALEKIT_REDIS_URL" in out.stderr
    out = cli("limits", "show", "chat", "u", "--redis-url", "memcached://h", "--policy", "1/s")
    assert out.returncode == 2 and "unsupported backend URL" in out.stderr
    closed = ("--redis-url", "redis://127.0.0.1:1/0")  # refused before connecting
    for args in (
        ("breaker", "open", "llm", "--for", "nan"),
        ("breaker", "open", "llm", "--for", "-1"),
        ("cache", "purge", "--namespace", ""),
        ("health", "--timeout", "inf"),
        ("limits", "show", "chat", "u", "--policy", "60/fortnight"),
        ("limits", "show", "chat", "u", "--policy", "1/s", "--algorithm", "nope"),
        ("bogus",),
    ):
        out = cli(*args, *closed)
        assert out.returncode == 2, (args, out.stderr)
        assert "unreachable" not in out.stderr


def test_unreachable_redis_exits_3_without_its_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{closed_port()}/0?connect_timeout=0.5"
    for args in (
        ("limits", "show", "chat", "u", "--policy", "5/minute"),
        ("limits", "reset", "chat", "u", "--policy", "5/minute"),
        ("breaker", "show", "llm"),
        ("cache", "get", "k"),
        ("cache", "purge", "--tag", "t"),
    ):
        out = cli(*args, "--redis-url", url)
        assert out.returncode == 3, (args, out.stderr)
        assert "unreachable" in out.stderr
        assert "hunter2" not in out.stderr + out.stdout


# -- limits ----------------------------------------------------------------------------------
def test_limits_show_and_reset(fresh_redis_url: str) -> None:
    lim = RateLimiter(fresh_redis_url, "5/minute", name="chat")
    for _ in range(3):
        assert lim.hit("user:42").allowed
    shown = as_json(
        cli("limits", "show", "chat", "user:42", "--policy", "5/minute", "--json",
            "--redis-url", fresh_redis_url)
    )  # fmt: skip
    assert shown["limit"] == 5 and shown["remaining"] == 2 and shown["allowed"] is True
    assert shown["algorithm"] == "sliding_window"
    assert lim.peek("user:42").remaining == 2  # show consumed nothing

    env = {"SCALEKIT_REDIS_URL": fresh_redis_url, "SCALEKIT_LIMITER__CHAT__POLICY": "5/minute"}
    out = cli("limits", "reset", "chat", "user:42", env=env)  # policy from the environment
    assert out.returncode == 0, out.stderr
    assert "forgotten" in out.stdout
    assert lim.peek("user:42").remaining == 5
    text = cli("limits", "show", "chat", "user:42", env=env)
    assert text.returncode == 0 and "5/5 left" in text.stdout


def test_limits_exhausted_key_with_tier_and_algorithm(fresh_redis_url: str) -> None:
    lim = RateLimiter(
        fresh_redis_url, {"free": "2/hour", "paid": "100/hour"}, name="api", algorithm="gcra"
    )
    while lim.hit("user:7", tier="free").allowed:
        pass
    args = ("limits", "show", "api", "user:7", "--tier", "free", "--policy", "2/hour")
    shown = as_json(cli(*args, "--algorithm", "gcra", "--json", "--redis-url", fresh_redis_url))
    assert shown["allowed"] is False and shown["remaining"] == 0
    assert 0 < shown["retry_after"] <= 1800
    # another algorithm has other keys: nothing spent there
    other = as_json(cli(*args, "--json", "--redis-url", fresh_redis_url))
    assert other["allowed"] is True and other["remaining"] == 2
    out = cli("limits", "reset", "api", "user:7", "--tier", "free", "--policy", "2/hour",
              "--algorithm", "gcra", "--redis-url", fresh_redis_url)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert lim.hit("user:7", tier="free").allowed


# -- breaker ---------------------------------------------------------------------------------
def test_breaker_show_open_close(fresh_redis_url: str) -> None:
    breaker = CircuitBreaker(
        "llm", record=RuntimeError, failure_threshold=1, open_duration=60, shared=fresh_redis_url
    )
    assert as_json(cli("breaker", "show", "llm", "--json", "--redis-url", fresh_redis_url)) == {
        "breaker": "llm",
        "state": "closed",
        "retry_after": 0.0,
        "stored": False,  # nothing recorded yet: said, not guessed
    }
    with pytest.raises(RuntimeError):
        breaker.call(_fail)
    shown = as_json(cli("breaker", "show", "llm", "--json", "--redis-url", fresh_redis_url))
    assert shown["state"] == "open" and 0 < shown["retry_after"] <= 60 and shown["stored"]

    out = cli("breaker", "close", "llm", "--redis-url", fresh_redis_url)
    assert out.returncode == 0 and "llm: closed" in out.stdout
    assert breaker._shared is not None and breaker._shared.refresh() is State.CLOSED
    assert breaker.call(lambda: "ok") == "ok"

    opened = as_json(cli("breaker", "open", "llm", "--json", "--redis-url", fresh_redis_url))
    assert opened["state"] == "forced_open" and opened["retry_after"] is None
    breaker._shared.refresh()
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: "ok")
    timed = as_json(
        cli("breaker", "open", "llm", "--for", "30", "--json", "--redis-url", fresh_redis_url)
    )
    assert timed["state"] == "open" and 0 < timed["retry_after"] <= 30


def _fail() -> None:
    raise RuntimeError("provider down")


# -- cache -----------------------------------------------------------------------------------
def test_cache_get_and_purge(fresh_redis_url: str) -> None:
    cache = Cache(fresh_redis_url)
    cache.set("conv:7", {"id": 7, "title": "hi"}, tags=["user:42"])
    cache.set("conv:8", [1, 2], tags=["user:43"])
    cache.set("scalekit:cache:conversation_meta:1", "a")
    cache.set("scalekit:cache:conversation_meta:2", "b")
    url = ("--redis-url", fresh_redis_url)

    got = as_json(cli("cache", "get", "conv:7", "--json", *url))
    assert got == {"key": "conv:7", "found": True, "value": {"id": 7, "title": "hi"}}
    out = cli("cache", "get", "conv:8", *url)
    assert out.returncode == 0 and json.loads(out.stdout) == [1, 2]

    purged = as_json(cli("cache", "purge", "--tag", "user:42", "--json", *url))
    assert purged == {"tags": ["user:42"], "dropped": 1}
    missing = cli("cache", "get", "conv:7", "--json", *url)
    assert missing.returncode == 1 and json.loads(missing.stdout)["found"] is False
    assert cache.get("conv:7") is None and cache.get("conv:8") == [1, 2]

    out = cli("cache", "purge", "--namespace", "conversation_meta", *url)
    assert out.returncode == 0 and out.stdout.startswith("2 entries dropped")
    assert cache.get("scalekit:cache:conversation_meta:1") is None
    assert cli("cache", "purge", "--tag", "t", "--namespace", "n", *url).returncode == 2


def test_cache_get_of_a_foreign_value_is_a_miss(fresh_redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(fresh_redis_url)
    try:
        for key in client.scan_iter():
            client.delete(key)
        cache = Cache(fresh_redis_url)
        cache.set("k", 1)
        for key in client.scan_iter():  # garbage where the entry was
            client.set(key, b"\xff garbage")
    finally:
        client.close()
    out = cli("cache", "get", "k", "--redis-url", fresh_redis_url)
    assert out.returncode == 1, out.stderr


# -- health ----------------------------------------------------------------------------------
def test_health_against_redis(redis_url: str) -> None:
    report = as_json(cli("health", "--json", env={"SCALEKIT_REDIS_URL": redis_url}))
    assert report["ready"] is True
    names = {c["name"] for c in report["checks"]}
    assert {"redis.memory", "redis.clients", "redis.evictions"} <= names
    text = cli("health", "--redis-url", redis_url)
    assert text.returncode == 0 and "redis.memory" in text.stdout


def test_health_unreachable_is_unhealthy(redis_url: str) -> None:
    out = cli("health", "--json", "--timeout", "0.5", "--redis-url",
              f"redis://127.0.0.1:{closed_port()}/0")  # fmt: skip
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["ready"] is False and report["status"] == "critical"
    assert cli("health").returncode == 2  # nothing to probe


@pytest.mark.postgres
def test_health_against_postgres(postgres_dsn: str) -> None:
    out = cli("health", "--json", env={"SCALEKIT_DATABASE_URL": postgres_dsn})
    report = json.loads(out.stdout)
    assert out.returncode == (0 if report["status"] != "critical" else 1), out.stderr
    assert report["ready"] is True
    assert any(c["name"].startswith("postgres.") for c in report["checks"])


def test_existing_commands_still_work() -> None:
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("scalekit ")
    plans = sorted((ROOT / "examples" / "capacity").glob("*.toml"))
    if plans:
        out = cli("capacity", str(plans[0]), "--json")
        assert out.returncode == 0, out.stderr
        json.loads(out.stdout)


def test_cache_of_another_backend_namespace(fresh_redis_url: str) -> None:
    from scalekit.cache import RedisCacheBackend

    Cache(RedisCacheBackend(fresh_redis_url, namespace="app2")).set("k", "v2")
    url = ("--redis-url", fresh_redis_url)
    assert cli("cache", "get", "k", *url).returncode == 1  # not under the default "sk"
    out = cli("cache", "get", "k", "--backend-namespace", "app2", *url)
    assert out.returncode == 0 and json.loads(out.stdout) == "v2"


def test_a_wrong_type_under_a_breaker_key_exits_4(fresh_redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(fresh_redis_url)
    try:
        client.rpush("scalekit:cb:{llm}:s", "not a breaker")  # SharedState's state key
    finally:
        client.close()
    out = cli("breaker", "close", "llm", "--redis-url", fresh_redis_url)
    assert out.returncode == 4, out.stderr
    assert "data error" in out.stderr
