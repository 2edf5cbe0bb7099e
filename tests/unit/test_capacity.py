"""Capacity plans: the assessment's figures, the sweep, malformed plans, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit.__main__ import main
from scalekit.capacity import PlanError, load_plan, parse_plan, project, render_html
from scalekit.capacity._project import load_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "capacity"
LAUNCH = EXAMPLES / "chat-launch.toml"


def test_launch_plan_reproduces_the_assessment() -> None:
    plan = load_plan(LAUNCH)
    p = project(plan)
    # 10,000 users, 10 % concurrent, 70 % free at 20/min, 30 % paid at 100/min
    assert p.load.concurrent_users == 1000
    assert p.load.requests_per_second == pytest.approx(733.33, abs=0.01)
    assert p.load.requests_per_second_by_tier == pytest.approx(
        {"free": 233.33, "paid": 500.0}, abs=0.01
    )
    # 200 connections per instance against a 3,000-connection limit
    conns = p.limit("db_connections")
    assert plan.app is not None and plan.app.db_connections_per_instance == 200
    assert conns.limit == 3000
    assert conns.load == p.load.instances * 200 == 1600
    breaks = conns.breaks_at_users
    assert breaks is not None
    assert load_for(plan, breaks).instances == 15  # 15 x 200 = 3,000: the limit reached
    assert load_for(plan, breaks - 1).db_connections < 3000
    # 390K of 1M monthly edge invocations: 61 % headroom
    fn = p.limit("monthly_function_invocations")
    assert (fn.load, fn.limit) == (390_000, 1_000_000)
    assert fn.headroom == pytest.approx(0.61)
    assert fn.status == "ok"
    # memory extraction sampled at 20-30 %: 300K candidate calls a month -> 60K-90K
    [mem] = p.load.sampled
    assert mem.candidates_per_month == 300_000
    assert (mem.calls_per_month_low, mem.calls_per_month_high) == pytest.approx((60_000, 90_000))
    assert p.first_to_break == "db_connections"
    assert p.first_break_users == breaks


def test_growth_plan_is_over_its_function_quota() -> None:
    p = project(load_plan(EXAMPLES / "chat-growth.toml"))
    fn = p.limit("monthly_function_invocations")
    # 50,000 x 39 + a daily digest to every user (30 runs x 50,000)
    assert fn.load == 50_000 * 39 + 30 * 50_000
    assert fn.status == "over" and fn.headroom < 0
    assert p.limit("db_connections").load == 22 * 50 + 4
    assert p.limit("sampled:memory extraction").status == "critical"
    assert p.first_to_break == "monthly_function_invocations"
    assert p.first_break_users is not None and p.first_break_users < 50_000


def test_users_override_and_thresholds() -> None:
    plan = load_plan(LAUNCH)
    p = project(plan, users=16_000)
    assert p.limit("db_connections").status == "warning"  # 12 instances: 2,400 of 3,000
    assert (
        p.limit("db_connections").warns_at_users
        == project(plan).limit("db_connections").warns_at_users
    )
    with pytest.raises(ValueError, match="users"):
        project(plan, users=0)


def _base() -> dict[str, Any]:
    return {
        "users": 1000,
        "peak_concurrency": 0.1,
        "tiers": [{"name": "all", "share": 1.0, "requests_per_minute": 10}],
        "app": {"requests_per_second_per_instance": 10, "db_connections_per_instance": 20},
        "limits": {"db_connections": 500},
    }


@pytest.mark.parametrize(
    ("patch", "named"),
    [
        ({"users": "many"}, "users"),
        ({"users": 0}, "users"),
        ({"tiers": [{"name": "a", "share": 1.5, "requests_per_minute": 1}]}, "tiers.0.share"),
        ({"tiers": [{"name": "a", "share": 1, "requests_per_min": 1}]}, "tiers.0.requests_per_min"),
        (
            {"tiers": [{"name": "a", "share": 0.5, "requests_per_minute": 1},
                       {"name": "b", "share": 0.4, "requests_per_minute": 1}]},
            "tiers: the shares add up to 0.9",
        ),
        ({"limits": {"db_size": "8 GX"}}, "limits.db_size"),
        ({"limits": {"db_connections": -1}}, "limits.db_connections"),
        ({"jobs": [{"name": "j", "every": "soon"}]}, "jobs.0.every"),
        ({"sampled": [{"name": "s", "calls_per_user_per_month": 1, "rate": [0.3, 0.2]}]},
         "rate: [low, high]"),
        ({"peak_concurrency": float("nan")}, "peak_concurrency"),
        ({"colour": "blue"}, "colour"),
    ],
)  # fmt: skip
def test_a_malformed_plan_names_the_field(patch: dict[str, Any], named: str) -> None:
    data = {**_base(), **patch}
    with pytest.raises(PlanError) as info:
        parse_plan(data, source="plan.toml")
    assert named in str(info.value)
    assert str(info.value).startswith("plan.toml:")


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read"):
        load_plan(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("users = [\n")
    with pytest.raises(PlanError, match="not valid TOML"):
        load_plan(bad)


def test_sizes_and_durations() -> None:
    data = _base() | {
        "database": {"base_size": "1.5 GiB", "bytes_per_user": 2048},
        "jobs": [{"name": "j", "every": "15m", "db_connections": 1}],
        "limits": {"db_size": "8 GB"},
    }
    p = project(parse_plan(data))
    assert p.limit("db_size").load == 1.5 * 2**30 + 1000 * 2048
    assert p.load.job_runs_per_month == {"j": 30 * 24 * 4}


@settings(max_examples=60, deadline=None)
@given(
    rpm=st.floats(0.1, 500),
    concurrency=st.floats(0.01, 1),
    per_instance=st.integers(0, 400),
    capacity=st.floats(1, 1000),
    limit=st.integers(1, 100_000),
    fn=st.floats(0, 100),
)
def test_the_sweep_finds_the_first_user_count_over_each_limit(
    rpm: float, concurrency: float, per_instance: int, capacity: float, limit: int, fn: float
) -> None:
    plan = parse_plan({
        "users": 1000,
        "peak_concurrency": concurrency,
        "tiers": [{"name": "t", "share": 1, "requests_per_minute": rpm}],
        "app": {"requests_per_second_per_instance": capacity,
                "db_connections_per_instance": per_instance},
        "functions": {"invocations_per_user_per_month": fn},
        "limits": {"db_connections": limit, "monthly_function_invocations": limit * 100},
    })  # fmt: skip
    p = project(plan)
    for use in p.limits:
        at = use.breaks_at_users

        def used(users: int, name: str = use.name) -> float:
            return project(plan, users=users).limit(name).used

        if at is None:
            assert used(10**9) < 1
        else:
            assert used(at) >= 1
            assert at == 1 or used(at - 1) < 1
        if use.warns_at_users is not None and at is not None:
            assert use.warns_at_users <= at


def test_cli_table_json_html(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["capacity", str(LAUNCH)]) == 0
    text = capsys.readouterr().out
    assert "733.3/s" in text and "First to break: db_connections" in text
    assert main(["capacity", str(LAUNCH), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["load"]["requests_per_second"] == pytest.approx(733.33, abs=0.01)
    assert {u["name"] for u in data["limits"]} >= {"db_connections", "redis_memory"}
    assert main(["capacity", str(LAUNCH), "--html", "--users", "20000"]) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!doctype html>") and "<svg" in page
    for outside in ("<script", "<link", "src=", "@import"):  # offline: nothing fetched
        assert outside not in page
    assert "db_connections" in page


def test_cli_reports_a_bad_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "plan.toml"
    bad.write_text('users = 10\npeak_concurrency = 0.1\n[[tiers]]\nname = "a"\nshare = 1\n')
    assert main(["capacity", str(bad)]) == 2
    assert "tiers.0.requests_per_minute" in capsys.readouterr().err


def test_html_escapes_the_plan() -> None:
    data = _base() | {"name": "<script>x</script>"}
    page = render_html(project(parse_plan(data)))
    assert "<script>" not in page and "&lt;script&gt;" in page
