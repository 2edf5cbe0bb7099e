"""Automatic pipelining for asyncio over redis-py's connections (one event loop).

Every command issued by the tasks of one loop during one tick is queued; a callback
scheduled with ``call_soon`` at the end of the tick packs the queue into one write on
one connection, and a reader task per connection reads the replies in order and
hands each to the future of the caller that sent it (ioredis' and node-redis'
technique, built here on redis-py's ``Connection`` so that TLS, unix sockets, AUTH,
SELECT and the RESP parser stay redis-py's).

Connections come from the backend's bounded pool (:mod:`scalekit.pools._redis`) and
go back to it once idle for half a second (at once if others wait for one). A batch goes to a free
connection, else to one still being opened, else to a new one while the pool has
room, else behind the shortest queue of replies: a burst of any size needs one
connection, and never more than the pool's bound.

Guarantees (tested in ``tests/integration/test_redis_layer.py``):

- a cancelled caller never corrupts another's reply: its command, if already
  written, keeps its place and its reply is read and dropped; if not yet written, it
  is never sent;
- a connection error or a reply later than ``socket_timeout`` (measured from the
  last reply read on that connection) fails every caller waiting on that
  connection with the driver's error, which the backend maps to
  :class:`~scalekit.errors.BackendError`; the connection is closed, never reused;
- nothing waits without a deadline: the pool's ``acquire_timeout`` bounds the wait
  for a connection, ``connect_timeout`` the connect, ``socket_timeout`` each reply.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

__all__ = ["AutoPipeline"]

#: queue behind a busy connection rather than open another, up to this many replies
_DEPTH_BEFORE_NEW_CONNECTION = 256
#: seconds an idle connection stays with the pipeline before going back to the pool
#: (at once when the pool has waiters)
_LINGER = 0.5


def _packer(data_error: type[Exception]) -> Any:
    """RESP encoding of one command, as redis-py's encoder does it for UTF-8 clients
    (bytes as is, str as UTF-8, int and float by ``repr``; bool and others refused
    with redis-py's ``DataError``), in one pass and one bytes object."""

    def pack(args: tuple[Any, ...]) -> bytes:
        first = args[0]
        if isinstance(first, str) and " " in first:  # "SCRIPT LOAD": two words
            args = (*first.split(), *args[1:])
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            elif isinstance(a, bytes | memoryview):
                pass
            elif isinstance(a, bool) or not isinstance(a, int | float):
                raise data_error(
                    f"Invalid input of type: '{type(a).__name__}'. "
                    "Convert to a bytes, string, int or float first."
                )
            else:
                a = repr(a).encode()
            out.append(b"$%d\r\n%b\r\n" % (len(a), a))
        return b"".join(out)

    return pack


class _Pipe:
    """One pooled connection lent to the pipeline, and the callers waiting on it."""

    __slots__ = ("conn", "fifo", "pending", "progress", "reader", "timed_out", "wakeup", "watch")

    def __init__(self) -> None:
        self.conn: Any = None  # None while being acquired / connected
        self.fifo: deque[asyncio.Future[Any]] = deque()
        self.pending: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self.reader: asyncio.Task[None] | None = None
        self.wakeup: asyncio.Future[bool] | None = None  # set while the reader idles
        self.progress = 0.0  # loop time of the last reply (or of the start of reading)
        self.watch: asyncio.TimerHandle | None = None
        self.timed_out = False


class PipelineCounters:
    """What the auto-pipelines of one backend did, across every event loop (a loop's
    pipeline goes when its loop ends; its counts stay). :meth:`RedisBackend.stats`
    reads them and the metrics registry exports them (``scalekit_redis_*``)."""

    __slots__ = ("batches", "commands", "errors", "max_depth")

    def __init__(self) -> None:
        from scalekit.observability._metrics import Counter

        self.commands = Counter()
        self.batches = Counter()
        self.errors = Counter()
        self.max_depth = 0


class AutoPipeline:
    """The auto-pipeliner of one asyncio client (one event loop)."""

    def __init__(
        self, client: Any, socket_timeout: float, counters: PipelineCounters | None = None
    ) -> None:
        import redis.exceptions

        self._response_error: type[Exception] = redis.exceptions.ResponseError
        self._connection_error: type[Exception] = redis.exceptions.ConnectionError
        self._timeout_error: type[Exception] = redis.exceptions.TimeoutError
        self._pool = client.connection_pool
        kwargs = self._pool.connection_kwargs
        utf8 = str(kwargs.get("encoding", "utf-8")).lower().replace("_", "-") in ("utf-8", "utf8")
        self._pack: Any = (
            _packer(redis.exceptions.DataError)
            if utf8 and kwargs.get("encoding_errors", "strict") == "strict"
            else None  # another encoding: redis-py's own packer
        )
        self._callbacks: Any = client.response_callbacks  # case-insensitive, like redis-py
        self._loop = asyncio.get_running_loop()
        self._timeout = socket_timeout
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._pipes: list[_Pipe] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        # counters for stats(), shared by the backend's pipelines of every loop
        self.counters = counters if counters is not None else PipelineCounters()

    # -- the caller's side ---------------------------------------------------------
    async def execute(self, *args: Any) -> Any:
        """Send one command in the current tick's batch and wait for its reply."""
        if self.closed:
            raise self._connection_error("the auto-pipeline of this event loop is closed")
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._queue.append((args, fut))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)
        reply = await fut
        callback = self._callbacks.get(args[0]) if isinstance(args[0], str) else None
        return reply if callback is None else callback(reply)

    @property
    def in_flight(self) -> int:
        return sum(len(p.fifo) + len(p.pending) for p in self._pipes) + len(self._queue)

    @property
    def connections(self) -> int:
        return len(self._pipes)

    # -- batching ------------------------------------------------------------------
    def _flush(self) -> None:
        self._scheduled = False
        batch = [item for item in self._queue if not item[1].done()]
        self._queue = []
        if not batch:
            return
        counters = self.counters
        counters.batches.inc()
        counters.commands.add(len(batch))
        pipe = self._pick()
        if pipe is None:
            pipe = _Pipe()
            pipe.pending = batch
            self._pipes.append(pipe)
            self._spawn(self._open(pipe))
        elif pipe.conn is None:
            pipe.pending.extend(batch)
        else:
            self._write(pipe, batch)

    def _pick(self) -> _Pipe | None:
        """The connection for the next batch; None: open another one."""
        best: _Pipe | None = None
        for pipe in self._pipes:
            if pipe.conn is None or not pipe.fifo:
                return pipe  # being opened (join its first batch), or free
            if best is None or len(pipe.fifo) < len(best.fifo):
                best = pipe
        if best is None:
            return None
        if len(best.fifo) >= _DEPTH_BEFORE_NEW_CONNECTION and self._pool.sk_has_room():
            return None
        return best

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _open(self, pipe: _Pipe) -> None:
        try:
            conn = await self._pool.get_connection()
        except BaseException as exc:
            self._pipes.remove(pipe)
            batch, pipe.pending = pipe.pending, []
            self._fail([f for _, f in batch], exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        pipe.conn = conn
        batch, pipe.pending = pipe.pending, []
        self._write(pipe, batch)
        if not pipe.fifo and pipe.reader is None:  # every caller left meanwhile
            self._pipes.remove(pipe)
            await self._pool.release(conn)

    def _write(self, pipe: _Pipe, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        conn = pipe.conn
        pack = self._pack
        chunks: list[bytes] = []
        futures: list[asyncio.Future[Any]] = []
        for args, fut in batch:
            if fut.done():
                continue  # cancelled before it was sent: never sent
            try:
                if pack is not None:
                    chunks.append(pack(args))
                else:
                    chunks.extend(conn.pack_command(*args))
            except Exception as exc:  # a value that cannot be encoded: that caller's
                fut.set_exception(exc)
                continue
            futures.append(fut)
        if not futures:
            return
        writer = conn._writer
        if writer is None or writer.transport.is_closing():
            self._fail(futures, self._connection_error("Connection closed before write"))
            return
        try:
            writer.write(b"".join(chunks))
        except Exception as exc:
            self._fail(futures, exc)
            return
        pipe.fifo.extend(futures)
        depth = len(pipe.fifo)
        if depth > self.counters.max_depth:
            self.counters.max_depth = depth
        if pipe.reader is None:
            pipe.reader = self._spawn(self._read(pipe))
        elif pipe.wakeup is not None and not pipe.wakeup.done():
            pipe.wakeup.set_result(True)

    async def _read(self, pipe: _Pipe) -> None:
        """Read replies in order for as long as there are any, then linger idle
        (``_LINGER`` s, holding the connection so that the next batch needs no pool
        round trip) unless the pool has waiters; then give the connection back.

        Deadlines cost no timer per reply: each reply stamps ``pipe.progress`` and a
        watchdog (:meth:`_watch`), armed once per socket timeout or idle period,
        cancels the reader when no reply came for ``socket_timeout``."""
        conn = pipe.conn
        parser = conn._parser
        fifo = pipe.fifo
        loop = self._loop
        error_type = self._response_error
        pool = self._pool
        pipe.progress = loop.time()
        pipe.watch = loop.call_at(pipe.progress + self._timeout, self._watch, pipe)
        try:
            while True:
                while fifo:
                    reply = await parser.read_response()
                    pipe.progress = loop.time()
                    fut = fifo.popleft()
                    if fut.done():
                        continue  # its caller was cancelled: the reply is dropped
                    if isinstance(reply, error_type):
                        fut.set_exception(reply)
                    else:
                        fut.set_result(reply)
                if self.closed or getattr(pool, "_sk_queue", None):
                    break  # others wait for a connection: no lingering
                wakeup = pipe.wakeup = loop.create_future()
                pipe.watch.cancel()
                pipe.watch = loop.call_at(pipe.progress + _LINGER, self._watch, pipe)
                try:
                    more = await wakeup
                finally:
                    pipe.wakeup = None
                pipe.progress = loop.time()  # reading again: the deadline restarts
                if not more:  # idle for _LINGER: the watchdog is no longer armed
                    if not fifo:
                        break
                    # a batch was written as the idle time ran out: read it first
                    pipe.watch = loop.call_at(pipe.progress + self._timeout, self._watch, pipe)
        except BaseException as exc:
            pipe.watch.cancel()
            self._pipes.remove(pipe)
            failed = list(fifo)
            fifo.clear()
            if pipe.timed_out and isinstance(exc, asyncio.CancelledError):
                exc = self._timeout_error(f"Timeout reading from {conn.host}:{conn.port}")
            self._fail(failed, exc)
            try:  # never reuse a connection whose replies are out of step
                await conn.disconnect(nowait=True)
                await self._pool.release(conn)
            finally:
                if isinstance(exc, asyncio.CancelledError):
                    raise
            return
        pipe.watch.cancel()
        self._pipes.remove(pipe)
        pipe.reader = None
        await self._pool.release(conn)

    def _watch(self, pipe: _Pipe) -> None:
        """The reader's deadline: cancel it when a reply is ``socket_timeout`` late,
        end its idle time after ``_LINGER``; else look again when either could be due."""
        now = self._loop.time()
        wakeup = pipe.wakeup
        if wakeup is not None and not wakeup.done():  # idle
            due = pipe.progress + _LINGER
            if now >= due:
                wakeup.set_result(False)
                return
        else:  # reading, or woken and about to read: the deadline restarts then
            due = pipe.progress + self._timeout if wakeup is None else now + self._timeout
            if now >= due:
                if pipe.fifo and pipe.reader is not None:
                    pipe.timed_out = True
                    pipe.reader.cancel()
                    return
                due = now + self._timeout
        pipe.watch = self._loop.call_at(due, self._watch, pipe)

    def _fail(self, futures: list[asyncio.Future[Any]], exc: BaseException) -> None:
        if not isinstance(exc, Exception):  # cancellation of the pipeline's own task
            exc = self._connection_error(f"the auto-pipeline stopped ({exc!r})")
        for fut in futures:
            if not fut.done():
                self.counters.errors.inc()
                fut.set_exception(exc)

    # -- shutdown --------------------------------------------------------------------
    async def aclose(self) -> None:
        """Fail what is queued, stop the readers; the pool closes the connections."""
        self.closed = True
        queued, self._queue = self._queue, []
        self._fail([f for _, f in queued], self._connection_error("the backend was closed"))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
