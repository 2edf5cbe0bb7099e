"""One URL grammar: every scheme declares its options; unknown ones are refused."""

from __future__ import annotations

import pytest

from scalekit.backends import MemoryBackend, RedisBackend, backend_from_url, parse_backend_url
from scalekit.errors import ConfigurationError


def test_parse_backend_url_types_each_option() -> None:
    assert parse_backend_url("memory://?max_keys=5") == ("memory", {"max_keys": 5})
    scheme, options = parse_backend_url(
        "redis://h:6379/0?socket_timeout=0.5&connect_timeout=2&max_connections=32"
        "&pool_timeout=3&max_idle=60&autopipeline=off&db=2"
    )
    assert scheme == "redis"
    assert options == {
        "socket_timeout": 0.5,
        "connect_timeout": 2.0,
        "max_connections": 32,
        "pool_timeout": 3.0,
        "max_idle": 60.0,
        "autopipeline": False,
        "db": "2",
    }
    assert parse_backend_url("redis+cluster://h:7000")[0] == "redis+cluster"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        (
            "memory://?max_key=5",
            "unknown option 'max_key' in a memory:// URL; allowed: max_entries, max_keys",
        ),
        ("memory://?max_keys=5&max_keys=6", "appears twice"),
        ("redis://h?sockettimeout=1", "allowed: autopipeline, client_name, connect_timeout"),
        ("redis://h?decode_responses=true", "unknown option 'decode_responses'"),
        ("redis://h?autopipeline=maybe", "autopipeline must be true or false"),
        ("redis://h?max_connections=many", "max_connections must be an integer"),
        ("unix:///tmp/r.sock?socket_timeout=soon", "socket_timeout must be a number"),
        ("memcached://h", "unsupported backend URL 'memcached://'"),
    ],
)
def test_unknown_or_malformed_options_are_refused(url: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment.replace("(", r"\(")):
        parse_backend_url(url)
    with pytest.raises(ConfigurationError):
        backend_from_url(url)


def test_the_url_options_reach_the_backend_and_keywords_win() -> None:
    b = backend_from_url("redis://h/0?autopipeline=false&max_connections=4&pool_timeout=0.5")
    assert isinstance(b, RedisBackend)
    assert (b.autopipeline, b.max_connections, b.pool_timeout) == (False, 4, 0.5)
    b = backend_from_url("redis://h/0?max_connections=4", max_connections=8)
    assert isinstance(b, RedisBackend) and b.max_connections == 8 and b.autopipeline
    m = backend_from_url("memory://?max_keys=5")
    assert m == MemoryBackend(max_keys=5)
    # the options this backend applies never reach redis-py
    assert RedisBackend._driver_url("redis://h/0?socket_timeout=1&db=3") == "redis://h/0?db=3"
    assert RedisBackend._driver_url("redis+cluster://h:7000?autopipeline=0") == "redis://h:7000"


def test_cluster_and_own_clients_are_not_auto_pipelined() -> None:
    assert not RedisBackend("redis+cluster://h:7000").autopipeline
    assert not RedisBackend("redis://h", async_client_factory=lambda: None).autopipeline


@pytest.mark.parametrize(
    "options",
    [
        {"max_connections": 0},
        {"max_connections": True},
        {"pool_timeout": 0},
        {"socket_timeout": float("nan")},
        {"connect_timeout": -1},
        {"max_idle": 0},
        {"autopipeline": "yes"},
        {"decode_responses": True},
    ],
)
def test_bad_settings_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        RedisBackend("redis://h", **options)  # type: ignore[arg-type]


def test_cache_urls_use_the_one_grammar() -> None:
    """``Cache("memory://?max_keys=5")`` used to mean 10,000 entries, misspelt options
    were accepted; the cache now parses its URL with the registry's grammar."""
    from scalekit.cache import Cache

    assert Cache("memory://?max_keys=5").backend.max_entries == 5  # type: ignore[attr-defined]
    assert Cache("memory://?max_entries=7").backend.max_entries == 7  # type: ignore[attr-defined]
    for bad, match in (
        ("memory://?max_entrys=5", "unknown option 'max_entrys'"),
        ("memory://?max_keys=2&max_entries=3", "one bound"),
        ("memory://?max_entries=x", "integer"),
    ):
        with pytest.raises(ConfigurationError, match=match):
            Cache(bad)
