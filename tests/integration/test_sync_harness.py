"""The shipped correctness harness: the xid8 feed loses nothing under 12 concurrent
writers holding transactions open, over several seeds and through PgBouncer; the
naive ``updated_at >`` cursor, run the same way, loses rows (the harness can fail)."""

from __future__ import annotations

import pytest

from scalekit.testing import check_change_feed

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_xid8_feed_converges_exactly(postgres_dsn: str, seed: int) -> None:
    result = await check_change_feed(postgres_dsn, writers=12, duration=2.0, seed=seed)
    assert result.commits > 50 and result.passes > 5, result
    assert (result.missing, result.stale, result.undeleted) == (0, 0, 0), result
    assert result.ok


async def test_xid8_feed_through_pgbouncer(postgres_dsn: str, pgbouncer_dsn: str) -> None:
    result = await check_change_feed(
        postgres_dsn, reader_dsn=pgbouncer_dsn, writers=12, duration=2.0, seed=7
    )
    assert result.commits > 50 and result.ok, result


async def test_naive_timestamp_cursor_loses_rows(postgres_dsn: str) -> None:
    result = await check_change_feed(postgres_dsn, writers=12, duration=2.0, seed=1, method="naive")
    assert result.commits > 50, result
    # rows committed after a later-stamped row was read are never seen again
    assert result.missing + result.stale > 0, result
    assert not result.ok
