"""scalekit.maintenance without a server: input refused at construction, lock keys,
quoting, and importing without asyncpg."""

from __future__ import annotations

import pickle
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

import scalekit.maintenance as m
from scalekit.errors import ConfigurationError, MaintenanceRefused
from scalekit.maintenance._db import ident
from scalekit.maintenance._partitions import _parse, _shift
from scalekit.maintenance._runner import lock_key


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: m.Retention("t", "at"), "exactly one of keep= or cutoff="),
        (lambda: m.Retention("t", "at", keep=1, cutoff=datetime.now(UTC)), "exactly one"),
        (lambda: m.Retention("t", "at", keep=-1), "keep must be > 0"),
        (lambda: m.Retention("t", "at", keep=float("nan")), "keep must be > 0"),
        (lambda: m.Retention("t", "at", cutoff=datetime(2020, 1, 1)), "timezone-aware"),
        (lambda: m.Retention("t", "at", keep=1, batch_size=0), "batch_size must be an int >= 1"),
        (lambda: m.Retention("t", "at", keep=1, batch_size=True), "batch_size must be an int"),
        (lambda: m.Retention("", "at", keep=1), "table must be a non-empty str"),
        (lambda: m.Retention("t", "at", keep=1, lock_timeout=0), "lock_timeout must be > 0"),
        (
            lambda: m.Archival("t", parent="p", order_by="o", keep=0, archive_table="a"),
            "keep must be an int >= 1",
        ),
        (lambda: m.Archival("t", parent="p", order_by="o", keep=5), "exactly one of"),
        (
            lambda: m.Archival(
                "t", parent="p", order_by="o", keep=5, archive_table="a", soft_column="s"
            ),
            "exactly one of",
        ),
        (lambda: m.Partitions("t", period="week"), "period must be"),  # type: ignore[arg-type]
        (lambda: m.Partitions("t", keep=1, rollup="INSERT INTO x SELECT 1"), "{partition}"),
        (lambda: m.Partitions("t", rollup="SELECT {partition}"), "set keep="),
        (lambda: m.Runner(lambda db: None, 0, pool=object()), "interval must be > 0"),  # type: ignore[arg-type,return-value]
        (lambda: m.Runner(lambda db: None, 1, pool=object(), lock="x"), "lock must be"),  # type: ignore[arg-type,return-value]
    ],
)
def test_bad_settings_are_refused_at_construction(build: object, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        build()  # type: ignore[operator]
    assert message in str(info.value)


def test_settings_are_normalised() -> None:
    job = m.Retention("t", "at", keep=3600, pause=timedelta(milliseconds=20))
    assert job.keep == timedelta(hours=1) and job.pause == 0.02
    assert job.name == "retention:t" and job.job_name == "retention:t"
    assert m.Archival("t", parent="p", order_by="o", keep=3, soft_column="s").name == ("archival:t")


def test_maintenance_refused_carries_its_fix_and_pickles() -> None:
    exc = MaintenanceRefused("no index", fix="CREATE INDEX ...;")
    assert isinstance(exc, ConfigurationError) and exc.fix == "CREATE INDEX ...;"
    assert str(exc) == "no index\nfix: CREATE INDEX ...;"
    back = pickle.loads(pickle.dumps(exc))
    assert str(back) == str(exc) and back.fix == exc.fix


@given(st.text(min_size=1).filter(lambda s: "\x00" not in s))
def test_identifiers_are_quoted_so_the_name_round_trips(name: str) -> None:
    quoted = ident(name)
    assert quoted[0] == quoted[-1] == '"'
    assert quoted[1:-1].replace('""', '"') == name
    assert '"' not in quoted[1:-1].replace('""', "")


def test_lock_keys_are_stable_signed_64_bit() -> None:
    assert lock_key("a") == lock_key("a") != lock_key("b")
    assert -(2**63) <= lock_key("x" * 1000) < 2**63


def test_partition_bounds_and_months() -> None:
    assert _parse("'2026-01-01 00:00:00+00'") == datetime(2026, 1, 1)
    assert _parse("'2026-01-01'") == datetime(2026, 1, 1)
    assert _parse("MINVALUE") is None
    assert _shift(datetime(2026, 11, 1), "month", 3) == datetime(2027, 2, 1)
    assert _shift(datetime(2026, 12, 31), "day", 1) == datetime(2027, 1, 1)


def test_import_works_without_asyncpg() -> None:
    code = (
        "import sys; sys.modules['asyncpg'] = None\n"
        "import scalekit, scalekit.maintenance as m\n"
        "m.Retention('t', 'at', keep=1)\n"
        "assert 'asyncpg' not in [k for k, v in sys.modules.items() if v is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names_are_exactly_all() -> None:
    import types

    public = {
        n
        for n, v in vars(m).items()
        if not n.startswith("_") and n != "annotations" and not isinstance(v, types.ModuleType)
    }
    assert public == set(m.__all__) and sorted(m.__all__) == m.__all__
