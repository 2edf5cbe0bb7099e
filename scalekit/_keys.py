"""Key building: one place that escapes user-supplied parts and adds hash tags.

Redis keys are ``prefix:part:part:{tag}:part``. User-supplied parts are escaped so
that ``:`` cannot forge another key's namespace and ``{``/``}`` cannot move the
Redis Cluster hash tag; the escaping is reversible (percent-encoding of the few
characters that matter plus whitespace and control characters).

All keys of one subject share its ``{tag}``, so a multi-key Lua script on that
subject runs on one Redis Cluster slot.
"""

from __future__ import annotations

import re

__all__ = ["escape", "unescape", "build_key"]

# separators, whitespace, C0/C1 controls and lone surrogates (which no Redis client
# can send as UTF-8)
_SPECIAL = re.compile(r"[%:{}\s\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_RARE = re.compile(r"[{}\s\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _encode(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in match.group().encode("utf-8", "surrogatepass"))


def escape(part: str) -> str:
    """Escape one user-supplied key part (``%``, ``:``, braces, whitespace, controls)."""
    if not isinstance(part, str):
        from scalekit.errors import ConfigurationError

        raise ConfigurationError(f"key parts must be str, got {type(part).__name__}: {part!r}")
    if _SPECIAL.search(part) is None:
        return part
    # "user:42" is the common case: two plain replaces, the regex only for the rest
    part = part.replace("%", "%25").replace(":", "%3A")
    if _RARE.search(part) is None:
        return part
    return _RARE.sub(_encode, part)


def unescape(part: str) -> str:
    """Invert :func:`escape`."""
    from urllib.parse import unquote

    return unquote(part, errors="surrogatepass")


def build_key(prefix: str, *parts: str, tag: str) -> str:
    """``prefix:part…:{tag}`` with ``tag`` escaped; ``parts`` are trusted names.

    ``prefix`` and ``parts`` come from code (a limiter name, a window), ``tag`` from
    users (a user id, an IP address).
    """
    head = ":".join((prefix, *parts)) if parts else prefix
    return f"{head}:{{{escape(tag)}}}"
