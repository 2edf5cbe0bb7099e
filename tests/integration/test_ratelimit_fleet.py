"""A fleet: two uvicorn worker processes share the suite's Redis; exactly the limit is
allowed across both, driven through httpx over loopback (issue 15's proof)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.redis]

LIMIT = 25

APP = textwrap.dedent(
    f"""
    import os

    from fastapi import Depends, FastAPI, HTTPException

    from scalekit.ratelimit import RateLimiter
    from scalekit.ratelimit.fastapi import install_handler, lifespan_check, limit

    chat = RateLimiter(os.environ["FLEET_REDIS_URL"], "{LIMIT}/hour", name="fleet")
    app = FastAPI(lifespan=lifespan_check(chat))
    install_handler(app)
    spend = Depends(limit(chat, key=lambda r: r.headers["x-user"], refund_on=(503,)))


    @app.get("/pid")
    async def pid() -> int:
        return os.getpid()


    @app.post("/messages", dependencies=[spend])
    async def send(fail: bool = False) -> int:
        if fail:
            raise HTTPException(503, "the model is overloaded")
        return os.getpid()
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def fleet(fresh_redis_url: str, tmp_path: Path) -> Iterator[str]:
    (tmp_path / "fleet_app.py").write_text(APP)
    port = free_port()
    env = {**os.environ, "FLEET_REDIS_URL": fresh_redis_url, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "fleet_app:app", "--workers", "2",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # a subprocess' boot cannot be awaited: poll its port
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(f"{base}/pid", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "uvicorn did not start within 60 s"
            time.sleep(0.1)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


async def test_exactly_the_limit_across_two_workers(fleet: str) -> None:
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=0)  # new connections
    async with httpx.AsyncClient(base_url=fleet, limits=limits, timeout=30) as client:
        # both workers answer (the kernel spreads new connections over them)
        pids: set[int] = set()
        for _ in range(20):
            got = await asyncio.gather(*(client.get("/pid") for _ in range(16)))
            pids |= {r.json() for r in got}
            if len(pids) == 2:
                break
        assert len(pids) == 2, f"one worker answered everything: {pids}"

        # failures refunded on whichever worker: they spend nothing
        failed = await asyncio.gather(
            *(client.post("/messages?fail=true", headers={"x-user": "u1"}) for _ in range(10))
        )
        assert {r.status_code for r in failed} == {503}

        got = await asyncio.gather(
            *(client.post("/messages", headers={"x-user": "u1"}) for _ in range(3 * LIMIT))
        )
        codes = [r.status_code for r in got]
        assert codes.count(200) == LIMIT and codes.count(429) == 2 * LIMIT
        assert all(int(r.headers["retry-after"]) >= 1 for r in got if r.status_code == 429)
        served = {r.json() for r in got if r.status_code == 200}
        assert served <= pids
