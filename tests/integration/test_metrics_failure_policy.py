"""One failure-policy vocabulary (issue 10): the old spellings of the shared breaker
state and the sampling budget are deprecated aliases for one release, warned once."""

from __future__ import annotations

import warnings

import pytest

from scalekit import _validate
from scalekit.errors import ConfigurationError
from scalekit.resilience._shared import SharedState
from scalekit.sampling import Budget


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_validate, "_warned_aliases", set())


def test_budget_skip_is_fail_closed_and_warns_once() -> None:
    with pytest.warns(DeprecationWarning, match="'skip' is deprecated.*'fail_closed'"):
        b = Budget("10/hour", name="b1", on_backend_error="skip")
    assert b.on_backend_error == "fail_closed"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        assert Budget("10/hour", name="b1", on_backend_error="skip").on_backend_error == (
            "fail_closed"
        )
        assert Budget("10/hour").on_backend_error == "fail_closed"  # the default, no warning
        assert Budget("10/hour", on_backend_error="local_fallback").on_backend_error == (
            "local_fallback"
        )


@pytest.mark.parametrize("bad", ["fail_open", "local", "", None, 1])
def test_budget_refuses_other_policies(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="fail_closed, local_fallback"):
        Budget("10/hour", on_backend_error=bad)  # type: ignore[arg-type]


def test_shared_state_local_is_local_fallback_and_warns_once(redis_url: str) -> None:
    with pytest.warns(DeprecationWarning, match="'local' is deprecated.*'local_fallback'"):
        s = SharedState(redis_url, on_backend_error="local")
    assert s.on_backend_error == "local_fallback"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SharedState(redis_url, on_backend_error="local").on_backend_error == (
            "local_fallback"
        )
        assert SharedState(redis_url).on_backend_error == "local_fallback"
    with pytest.raises(ConfigurationError, match="fail_open, fail_closed, local_fallback"):
        SharedState(redis_url, on_backend_error="skip")  # type: ignore[arg-type]


def test_the_vocabulary_is_the_limiters() -> None:
    from typing import get_args

    from scalekit.ratelimit import FailurePolicy

    assert set(get_args(FailurePolicy)) == set(_validate.FAILURE_POLICIES)
