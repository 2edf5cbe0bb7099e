"""The operations commands of ``scalekit`` / ``python -m scalekit``: limits, breaker,
cache and health, against a Redis URL (``--redis-url`` or ``SCALEKIT_REDIS_URL``).

Every state is read and changed through the library's own objects (a limiter's
``peek``/``reset``, a shared breaker's ``open``/``close``, the cache's invalidation
methods), so the CLI sees what the application sees. Expected failures print one
line on stderr and exit with a documented code; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections.abc import Callable
from typing import Any

from scalekit.errors import BackendDataError, BackendError, ConfigurationError

__all__ = ["EXIT_CODES", "add_commands", "run"]

OK, NOT_FOUND, USAGE, UNREACHABLE, DATA_ERROR = 0, 1, 2, 3, 4
EXIT_CODES = {
    OK: "done; for health: every check ok or warning",
    NOT_FOUND: "not found (a cache miss) or unhealthy (a critical check, a probe that failed)",
    USAGE: "usage or configuration error (bad arguments, no Redis URL, unknown policy)",
    UNREACHABLE: "the backend could not be reached (connection refused, timeout)",
    DATA_ERROR: "the key's value on the server is not what scalekit wrote (wrong type)",
}
EPILOG = "exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())

Handler = Callable[[argparse.Namespace], int]


class _Fail(Exception):
    """An expected failure: its message on stderr, its code as the exit status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _help(parser: argparse.ArgumentParser) -> Handler:
    def show(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return USAGE

    return show


def _duration(raw: str) -> float:
    """An argparse type: seconds, finite and positive (a usage error otherwise)."""
    from scalekit import _validate

    try:
        return float(_validate.duration(float(raw), "a duration"))
    except (ValueError, ConfigurationError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _nonempty(raw: str) -> str:
    if not raw:
        raise argparse.ArgumentTypeError("must not be empty")
    return raw


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--redis-url", metavar="URL", help="the Redis to act on (default: SCALEKIT_REDIS_URL)"
    )
    common.add_argument("--json", action="store_true", help="print the result as JSON")
    return common


def add_commands(sub: Any) -> None:
    """Add ``limits``, ``breaker``, ``cache`` and ``health`` to a subparsers object."""
    common = _common()
    fmt = argparse.RawDescriptionHelpFormatter

    def group(name: str, help: str, description: str) -> Any:
        p = sub.add_parser(
            name, help=help, description=description, epilog=EPILOG, formatter_class=fmt
        )
        p.set_defaults(func=_help(p))
        return p, p.add_subparsers(dest=f"{name}_command", metavar="{...}")

    def leaf(group_sub: Any, name: str, help: str, func: Handler, description: str) -> Any:
        p = group_sub.add_parser(
            name,
            help=help,
            description=description,
            epilog=EPILOG,
            formatter_class=fmt,
            parents=[common],
        )
        p.set_defaults(func=func)
        return p

    # -- limits ---------------------------------------------------------------------------
    _, limits = group(
        "limits",
        "show or reset one key of a rate limiter",
        "Show or reset one key of a rate limiter on Redis.\n\n"
        "The limiter is rebuilt from its name, policy, algorithm and tier, exactly as\n"
        "the application builds it (the policy is part of its Redis keys): pass\n"
        "--policy, or set SCALEKIT_LIMITER__<NAME>__POLICY as the application does.\n\n"
        "example:\n"
        "  scalekit limits show chat user:42 --policy '60/hour'\n"
        "  scalekit limits reset chat user:42",
    )
    for name, help, func in (
        ("show", "what the key may still do (reads with peek, consumes nothing)", _limits_show),
        ("reset", "forget the key's usage in every window", _limits_reset),
    ):
        p = leaf(limits, name, help, func, f"{help[0].upper()}{help[1:]}.")
        p.add_argument("name", help="the limiter's name (name= of RateLimiter)")
        p.add_argument("key", help="the key, e.g. user:42")
        p.add_argument("--policy", help="the limiter's policy, e.g. '60/hour; 1000/day'")
        p.add_argument("--tier", help="the tier, for a tiered limiter")
        p.add_argument("--algorithm", help="the limiter's algorithm (default: sliding_window)")
        p.add_argument("--prefix", help="the limiter's key prefix (default: scalekit:rl)")

    # -- breaker --------------------------------------------------------------------------
    _, breaker = group(
        "breaker",
        "show, open or close a shared circuit breaker",
        "Show, open or close a circuit breaker whose state is shared on Redis\n"
        "(CircuitBreaker(name, shared=...)). Opening or closing acts on the whole fleet.\n\n"
        "example:\n"
        "  scalekit breaker open llm --for 300\n"
        "  scalekit breaker close llm",
    )
    for name, help, func in (
        ("show", "the fleet's state of the breaker", _breaker_show),
        ("open", "open it for the fleet (until closed, or --for SECONDS)", _breaker_open),
        ("close", "close it for the fleet, forgetting failures", _breaker_close),
    ):
        p = leaf(breaker, name, help, func, f"{help[0].upper()}{help[1:]}.")
        p.add_argument("name", help="the breaker's name")
        p.add_argument("--prefix", default="scalekit", help="SharedState's prefix (scalekit)")
        if name == "open":
            p.add_argument("--for", dest="duration", type=_duration, metavar="SECONDS")

    # -- cache ----------------------------------------------------------------------------
    _, cache = group(
        "cache",
        "read an entry, or purge by tag or namespace",
        "Read one entry of a Redis cache, or purge entries by tag or @cached namespace.\n\n"
        "example:\n"
        "  scalekit cache get 'scalekit:cache:conversation_meta:7'\n"
        "  scalekit cache purge --tag user:42\n"
        "  scalekit cache purge --namespace conversation_meta",
    )
    p = leaf(cache, "get", "print an entry's value", _cache_get, "Print an entry's value.")
    p.add_argument("key", help="the cache key")
    ns_help = "the prefix of the cache's Redis keys (RedisCacheBackend's namespace: sk)"
    p.add_argument("--backend-namespace", default="sk", help=ns_help)
    p.add_argument(
        "--serializer",
        choices=("json", "msgpack"),
        default="json",
        help="how the application stores values (json)",
    )
    p = leaf(
        cache,
        "purge",
        "drop every entry of some tags or of a namespace",
        _cache_purge,
        "Drop every entry tagged with any --tag, or every @cached entry of --namespace.",
    )
    p.add_argument("--backend-namespace", default="sk", help=ns_help)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--tag", action="append", type=_nonempty, help="a tag (repeatable)")
    what.add_argument("--namespace", type=_nonempty, help="an @cached namespace")
    p.add_argument("--version", help="only this version of the namespace")

    # -- health ---------------------------------------------------------------------------
    p = sub.add_parser(
        "health",
        help="probe Redis and PostgreSQL and rate what they report",
        description="Probe Redis (memory, clients, evictions) and PostgreSQL (size,\n"
        "connections, oldest transaction, replication lag, default partitions) and\n"
        "rate each figure ok, warning or critical. Exits 1 when a check is critical\n"
        "or a probe failed.",
        epilog=EPILOG,
        formatter_class=fmt,
        parents=[common],
    )
    p.add_argument(
        "--database-url",
        metavar="URL",
        help="the PostgreSQL to probe (default: SCALEKIT_DATABASE_URL)",
    )
    p.add_argument("--timeout", type=_duration, default=2.0, help="seconds per probe (2)")
    p.set_defaults(func=_health)


def run(func: Handler, args: argparse.Namespace) -> int:
    """Run a command; expected failures become one line on stderr and an exit code."""
    try:
        return func(args)
    except _Fail as exc:
        code, message = exc.code, str(exc)
    except BackendDataError as exc:
        code, message = DATA_ERROR, f"data error: {exc}"
    except BackendError as exc:
        code, message = UNREACHABLE, f"backend unreachable: {exc}"
    except ConfigurationError as exc:
        code, message = USAGE, str(exc)
    print(f"scalekit: error: {message}", file=sys.stderr)
    return code


# -- helpers --------------------------------------------------------------------------------
def _settings() -> Any:
    from scalekit.config import from_env

    return from_env()


def _redis_url(args: argparse.Namespace) -> str:
    if args.redis_url:
        return str(args.redis_url)
    url: str | None = _settings().redis_url
    if url is None:
        raise _Fail(USAGE, "no Redis URL: pass --redis-url or set SCALEKIT_REDIS_URL")
    return url


def _redis(args: argparse.Namespace) -> Any:
    """The Redis backend, pinged (unreachable: exit 3 before anything is decided)."""
    from scalekit.backends import RedisBackend, backend_from_url

    backend = backend_from_url(_redis_url(args))
    if not isinstance(backend, RedisBackend):
        raise _Fail(USAGE, f"the CLI acts on a Redis backend, got {backend!r}")
    backend.execute("PING")
    return backend


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, default=_jsonable, allow_nan=False) if args.json else text)


def _jsonable(value: object) -> object:
    return str(value)


def _seconds(value: float) -> float | None:
    return None if math.isinf(value) else value


# -- limits ---------------------------------------------------------------------------------
def _limiter(args: argparse.Namespace) -> Any:
    from scalekit.ratelimit import RateLimiter

    overrides = None
    policy = args.policy
    algorithm = args.algorithm
    prefix = args.prefix
    if policy is None or algorithm is None or prefix is None:
        overrides = _settings().limiter(args.name)
        policy = policy if policy is not None else overrides.policy
        algorithm = algorithm if algorithm is not None else overrides.algorithm
        prefix = prefix if prefix is not None else overrides.prefix
    if policy is None:
        raise _Fail(
            USAGE,
            f"the policy of limiter {args.name!r} is unknown (it is part of its keys): "
            f"pass --policy or set SCALEKIT_LIMITER__{args.name.upper()}__POLICY",
        )
    options: dict[str, Any] = {"name": args.name, "on_backend_error": "fail_closed"}
    if algorithm is not None:
        options["algorithm"] = algorithm
    if prefix is not None:
        options["prefix"] = prefix
    shape = {args.tier: policy} if args.tier is not None else policy
    RateLimiter("memory://", shape, **options)  # a usage error (exit 2) before connecting
    return RateLimiter(_redis(args), shape, **options)


def _limits_show(args: argparse.Namespace) -> int:
    limiter = _limiter(args)
    d = limiter.peek(args.key, tier=args.tier)
    if limiter.stats()["degraded"]:  # the guard answered, not Redis
        raise _Fail(UNREACHABLE, "backend unreachable: the limiter could not read Redis")
    data = {
        "limiter": args.name,
        "key": args.key,
        "tier": args.tier,
        "algorithm": limiter.algorithm,
        "policy": str(limiter.policy if limiter.policy is not None else limiter.tiers),
        "allowed": d.allowed,
        "limit": d.limit,
        "remaining": d.remaining,
        "reset_after": d.reset_after,
        "retry_after": _seconds(d.retry_after),
        "period": d.period,
    }
    retry = "never" if math.isinf(d.retry_after) else f"{d.retry_after:.3f}s"
    text = (
        f"{args.name} {args.key}: {d.remaining}/{d.limit} left in the {d.period:g}s window, "
        f"full again in {d.reset_after:.3f}s; "
        + ("a hit is allowed now" if d.allowed else f"refused, retry after {retry}")
    )
    _emit(args, data, text)
    return OK


def _limits_reset(args: argparse.Namespace) -> int:
    limiter = _limiter(args)
    limiter.reset(args.key, tier=args.tier)
    _emit(
        args,
        {"limiter": args.name, "key": args.key, "tier": args.tier, "reset": True},
        f"{args.name} {args.key}: usage forgotten in every window",
    )
    return OK


# -- breaker --------------------------------------------------------------------------------
def _breaker(args: argparse.Namespace) -> Any:
    from scalekit.resilience import CircuitBreaker
    from scalekit.resilience._shared import SharedState

    shared = SharedState(_redis(args), prefix=args.prefix)
    return CircuitBreaker(args.name, record=Exception, shared=shared), shared


def _breaker_report(args: argparse.Namespace, shared: Any) -> int:
    shared.refresh()
    state, retry_after = shared.view()
    # no state hash: no process recorded an outcome within its TTL, or a misspelt name
    stored = bool(shared.backend.execute("EXISTS", shared._keys[0]))
    data = {
        "breaker": args.name,
        "state": state.value,
        "retry_after": _seconds(retry_after),
        "stored": stored,
    }
    extra = "" if state.value == "closed" else f" (retry after {retry_after:.1f}s)"
    if math.isinf(retry_after):
        extra = " (until closed by hand)"
    if not stored:
        extra += " (no state on Redis: nothing recorded yet, expired, or a misspelt name)"
    _emit(args, data, f"{args.name}: {state.value}{extra}")
    return OK


def _breaker_show(args: argparse.Namespace) -> int:
    _, shared = _breaker(args)
    return _breaker_report(args, shared)


def _breaker_open(args: argparse.Namespace) -> int:
    breaker, shared = _breaker(args)
    breaker.open(args.duration)
    return _breaker_report(args, shared)


def _breaker_close(args: argparse.Namespace) -> int:
    breaker, shared = _breaker(args)
    breaker.close()
    return _breaker_report(args, shared)


# -- cache ----------------------------------------------------------------------------------
def _cache(args: argparse.Namespace, serializer: str = "json") -> Any:
    from scalekit.cache import Cache, RedisCacheBackend

    backend = RedisCacheBackend(
        _redis(args),  # reachable, or exit 3 (a cache read degrades to a miss)
        namespace=args.backend_namespace,
        serializer=serializer,
    )
    return Cache(backend, name="scalekit-cli")


_MISSING = object()


def _cache_get(args: argparse.Namespace) -> int:
    cache = _cache(args, args.serializer)
    value = cache.get(args.key, _MISSING)
    stats = cache.stats()
    if stats.backend_errors:
        raise _Fail(UNREACHABLE, "backend unreachable: the cache could not read Redis")
    if value is _MISSING:
        if args.json:
            print(json.dumps({"key": args.key, "found": False}))
        else:
            print(f"{args.key}: not found", file=sys.stderr)
        return NOT_FOUND
    if args.json:
        print(json.dumps({"key": args.key, "found": True, "value": value}, default=_jsonable))
    else:
        print(json.dumps(value, default=_jsonable, indent=2))
    return OK


def _cache_purge(args: argparse.Namespace) -> int:
    cache = _cache(args)
    if args.tag:
        if args.version is not None:
            raise _Fail(USAGE, "--version applies to --namespace only")
        n = cache.invalidate_tags(*args.tag)
        data: dict[str, Any] = {"tags": args.tag, "dropped": n}
        what = "tag" + ("s " if len(args.tag) > 1 else " ") + ", ".join(args.tag)
    else:
        n = cache.invalidate_namespace(args.namespace, args.version)
        data = {"namespace": args.namespace, "version": args.version, "dropped": n}
        what = f"namespace {args.namespace}"
    _emit(args, data, f"{n} entries dropped ({what})")
    return OK


# -- health ---------------------------------------------------------------------------------
def _health(args: argparse.Namespace) -> int:
    from scalekit.observability import PostgresProbe, RedisProbe, health_report

    redis_url, database_url = args.redis_url, args.database_url
    if redis_url is None or database_url is None:
        settings = _settings()
        redis_url = redis_url or settings.redis_url
        database_url = database_url or settings.database_url
    probes: list[Any] = []
    if redis_url:
        probes.append(RedisProbe(redis_url, timeout=args.timeout))
    if database_url:
        probes.append(PostgresProbe(database_url, timeout=args.timeout))
    if not probes:
        raise _Fail(
            USAGE,
            "nothing to probe: pass --redis-url / --database-url or set "
            "SCALEKIT_REDIS_URL / SCALEKIT_DATABASE_URL",
        )
    report = asyncio.run(health_report(*probes))
    if args.json:
        print(report.to_json())
    else:
        for c in report.checks:
            line = f"{c.status:>8}  {c.name}"
            if c.error:
                line += f"  error: {c.error}"
            elif c.detail:
                line += f"  {c.detail}"
            print(line)
        print(f"status: {report.status}, ready: {report.ready}")
    return NOT_FOUND if report.status == "critical" or not report.ready else OK
