"""Keys cannot escape their namespace: ``_keys.escape`` is injective for every separator."""

from __future__ import annotations

import enum
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

import scalekit
from scalekit._keys import SEPARATORS, build_key, escape, unescape
from scalekit.errors import ConfigurationError

# every character the library joins key parts with, plus what escape() uses itself
_HOSTILE = st.lists(st.sampled_from([*SEPARATORS, "%3A", "%25", "%", "a", " ", "é"])).map("".join)
_PART = st.one_of(st.text(), _HOSTILE)


@given(_PART)
def test_escape_round_trips_and_leaves_no_separator(part: str) -> None:
    e = escape(part)
    assert unescape(e) == part
    assert not any(c in SEPARATORS[1:] or c.isspace() for c in e)
    assert re.fullmatch(r"([^%]|%[0-9A-F]{2})*", e)  # '%' only as %XX
    e.encode("utf-8")  # valid UTF-8 for every client


@given(st.lists(_PART, max_size=4), st.lists(_PART, max_size=4))
def test_distinct_tuples_of_parts_give_distinct_keys(a: list[str], b: list[str]) -> None:
    """For every separator the library uses: join escaped parts with it, compare."""
    for sep in SEPARATORS[1:]:
        ka = sep.join(escape(p) for p in a)
        kb = sep.join(escape(p) for p in b)
        # () and ("",) both join to "": only the empty tuple is ambiguous, and
        # every key builder frames its parts with a prefix and a tag
        assert (ka == kb) == (a == b) or ({len(a), len(b)} <= {0, 1} and not ka + kb)


@given(_PART, _PART)
def test_build_key_is_injective_in_its_tag(x: str, y: str) -> None:
    assert (build_key("sk:rl", "n", tag=x) == build_key("sk:rl", "n", tag=y)) == (x == y)


@given(_PART.filter(bool))
def test_the_hash_tag_keeps_a_subjects_keys_on_one_cluster_slot(tag: str) -> None:
    base = build_key("sk:rl", "chat", tag=tag)
    assert base.count("{") == 1 and base.count("}") == 1
    slots = {key_slot(f"{base}:{s}".encode()) for s in ("z", "m", "60", "3600")}
    assert len(slots) == 1
    assert key_slot(base.encode()) == key_slot(escape(tag).encode())


def test_bang_in_a_namespace_cannot_reach_another_namespaces_internal_keys() -> None:
    # the cache's internal keys are "<ns>!t:<tag>", "<ns>!l:<key>", "<ns>!f:..."
    victim, attacker = escape("tenant1"), escape("tenant1!t")
    assert attacker + ":x" != victim + "!t:x"
    assert "!" not in attacker and "#" not in escape("#digest")


def test_common_parts_are_returned_unchanged() -> None:
    for part in ("42", "user", "10.0.0.1", "3f2a-uuid", "ключ", "é"):
        assert escape(part) is part
    assert escape("user:42") == "user%3A42"


def test_str_subclass_is_its_value_and_other_types_are_refused() -> None:
    class Tier(enum.StrEnum):
        FREE = "free:1"

    assert escape(Tier.FREE) == "free%3A1" and type(escape(Tier.FREE)) is str
    for bad in (42, None, b"k"):
        with pytest.raises(ConfigurationError, match="must be str"):
            escape(bad)  # type: ignore[arg-type]


def test_a_brace_in_a_trusted_part_is_refused() -> None:
    for prefix, parts in (("sk{x}", ()), ("sk", ("a}",)), ("sk", ("{",))):
        with pytest.raises(ConfigurationError, match="hash tag"):
            build_key(prefix, *parts, tag="t")


def test_every_key_builder_uses_only_escaped_separators() -> None:
    """Grep the package: a literal key separator outside SEPARATORS would be a hole."""
    root = Path(scalekit.__file__).parent
    internal = re.compile(r"""["'](![a-z]+[:*]?|![a-z]+:[a-z]:|#)["']""")
    found = set()
    for path in root.rglob("*.py"):
        for m in internal.finditer(path.read_text()):
            found.update(c for c in m.group(1) if not c.isalnum())
    assert found  # the grep still finds the cache's internal separators
    assert found <= set(SEPARATORS) | {"*"}  # '*' only ever follows '!f:'
