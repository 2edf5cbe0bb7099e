"""Keys, backends by URL, the error tree, the public API and optional imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types

import pytest

import scalekit
from scalekit import (
    BackendError,
    ConfigurationError,
    MemoryBackend,
    MissingDependency,
    RateLimitExceeded,
    RedisBackend,
    ScalekitError,
    backend_from_url,
    errors,
)
from scalekit._keys import build_key, escape, unescape


@pytest.mark.parametrize(
    "part",
    [
        "plain",
        "a:b",
        "{tag}",
        "50%",
        "new\nline",
        "tab\tx",
        "ключ",
        "a b",
        "}{",
        "",
        "\ud800x",
        "c1\x85",
    ],
)
def test_escape_is_reversible_and_neutralises_separators(part: str) -> None:
    e = escape(part)
    assert unescape(e) == part
    e.encode("utf-8")  # always sendable
    for ch in ":{} \n\t":
        assert ch not in e


def test_escape_keeps_distinct_parts_distinct() -> None:
    parts = ["a:b", "a%3Ab", "a", "a}", "{a", "a%"]
    assert len({escape(p) for p in parts}) == len(parts)


def test_build_key_puts_the_escaped_tag_in_braces() -> None:
    assert build_key("sk", "rl", "chat", tag="user:{1}") == "sk:rl:chat:{user%3A%7B1%7D}"
    with pytest.raises(ConfigurationError):
        escape(42)  # type: ignore[arg-type]


def test_backend_from_url() -> None:
    assert backend_from_url("memory://") == MemoryBackend()
    assert backend_from_url("memory://?max_keys=10").max_keys == 10  # type: ignore[union-attr]
    for url in ["redis://127.0.0.1:6390/0", "rediss://h:6380", "unix:///tmp/r.sock?db=1"]:
        b = backend_from_url(url)
        assert isinstance(b, RedisBackend) and not b.cluster
    c = backend_from_url("redis+cluster://127.0.0.1:7000?socket_timeout=0.5&connect_timeout=0.1")
    assert isinstance(c, RedisBackend) and c.cluster
    assert (c.socket_timeout, c.connect_timeout) == (0.5, 0.1)
    for bad, fragment in [
        ("memcached://x", "unsupported backend URL 'memcached://'"),
        ("memory://?max_keys=lots", "max_keys must be an integer"),
        ("memory://?max_keys=0", "max_keys must be >= 1"),
        ("memory://?size=3", "unknown option"),
        ("redis://h?socket_timeout=soon", "socket_timeout"),
        ("nonsense", "unsupported backend URL"),
    ]:
        with pytest.raises(ConfigurationError, match=fragment):
            backend_from_url(bad)


def test_redis_backend_repr_hides_the_password() -> None:
    b = backend_from_url("redis://:s3cret@127.0.0.1:6390/0")
    assert "s3cret" not in repr(b)
    assert "***" in repr(b)


def test_error_tree() -> None:
    assert issubclass(ConfigurationError, ScalekitError) and issubclass(
        ConfigurationError, ValueError
    )
    assert issubclass(MissingDependency, ConfigurationError) and issubclass(
        MissingDependency, ImportError
    )
    assert issubclass(BackendError, ScalekitError)
    assert issubclass(RateLimitExceeded, errors.LimitExceeded)
    assert issubclass(errors.ConcurrencyLimitExceeded, errors.LimitExceeded)
    for name in errors.__all__:
        assert name in (errors.__doc__ or ""), f"{name} is missing from the drawn tree"


def test_public_api_is_exactly_all() -> None:
    # subpackages appear as attributes once imported anywhere; they are not API names
    public = {
        n
        for n, v in vars(scalekit).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
    }
    assert public == set(scalekit.__all__) - {"__version__"}
    for name in scalekit.__all__:
        assert getattr(scalekit, name) is not None
    assert sorted(scalekit.__all__) == scalekit.__all__


def test_ratelimit_all_is_importable() -> None:
    from scalekit import ratelimit

    for name in ratelimit.__all__:
        assert hasattr(ratelimit, name), name


def test_import_without_optional_drivers() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["redis"] = None      # as if the extra were not installed
        sys.modules["asyncpg"] = None
        import scalekit
        lim = scalekit.RateLimiter("memory://", "2/minute")
        assert lim.hit("k").allowed
        try:
            scalekit.RateLimiter("redis://127.0.0.1:1/0", "2/minute")
        except scalekit.MissingDependency as exc:
            assert "pip install 'scalekit-primitives[redis]'" in str(exc), exc
            print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_url_timeouts_and_keyword_timeouts_agree() -> None:
    b = backend_from_url("redis://127.0.0.1:1/0?socket_timeout=0.5", socket_timeout=2.0)
    assert isinstance(b, RedisBackend)
    assert b.socket_timeout == 2.0
    client = b.sync_client
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 2.0
    u = backend_from_url("unix:///tmp/x.sock?db=3&socket_timeout=0.7")
    assert isinstance(u, RedisBackend)
    kwargs = u.sync_client.connection_pool.connection_kwargs
    assert kwargs["path"] == "/tmp/x.sock"
    assert (kwargs["db"], kwargs["socket_timeout"]) == (3, 0.7)


def test_redis_backend_accepts_a_clock_object() -> None:
    from scalekit.testing import FakeClock

    clock = FakeClock()
    b = RedisBackend("redis://127.0.0.1:1/0", clock=clock)
    assert b.server_now is not None
    assert b.server_now() == clock.now()
