"""Key building: one place that escapes user-supplied parts and adds hash tags.

Redis keys are ``prefix:part:part:{tag}:suffix``; the cache's internal keys add
``namespace!l:``, ``namespace!f:t:`` and the like, and a hashed cache tag is
``#digest``. :func:`escape` percent-encodes, in every user-supplied part, each
character the library uses as a separator — ``%`` (the escape itself), ``:``,
``!``, ``#``, ``{`` and ``}`` — plus whitespace, C0/C1 controls and lone
surrogates (which no Redis client can send as UTF-8). The encoding is injective
(:func:`unescape` inverts it), so distinct parts give distinct keys and no part can
forge another namespace, another tenant's internal keys or move the Redis Cluster
hash tag.

An empty tag would give ``{}``, which Redis Cluster ignores as a hash tag: the
primitives refuse empty keys before building one.

Cost: a part with none of these characters (``42``, an IPv4 address, a UUID) is
returned as is after one regex scan; ``user:42``, ``user#42`` or an IPv6 address
cost a few ``str.replace`` calls more; only braces, whitespace and controls go
through a per-character substitution.

All keys of one subject share its ``{tag}``, so a multi-key Lua script on that
subject runs on one Redis Cluster slot.
"""

from __future__ import annotations

import re

__all__ = ["escape", "unescape", "build_key", "SEPARATORS"]

#: the characters the library uses to join key parts; :func:`escape` removes them all
SEPARATORS = "%:!#{}"

# separators, whitespace, C0/C1 controls and lone surrogates
_SPECIAL = re.compile(r"[%:!#{}\s\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_RARE = re.compile(r"[{}\s\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _encode(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in match.group().encode("utf-8", "surrogatepass"))


def escape(part: str) -> str:
    """Escape one user-supplied key part (separators, whitespace, controls)."""
    if type(part) is not str:
        if not isinstance(part, str):
            from scalekit.errors import ConfigurationError

            raise ConfigurationError(f"key parts must be str, got {type(part).__name__}: {part!r}")
        part = str.__str__(part)  # a StrEnum member: its value, not its __str__
    if _SPECIAL.search(part) is None:
        return part
    # "user:42", "user#42" are the common cases: plain replaces, the regex for the rest
    part = part.replace("%", "%25").replace(":", "%3A")
    if "#" in part:
        part = part.replace("#", "%23")
    if "!" in part:
        part = part.replace("!", "%21")
    if _RARE.search(part) is None:
        return part
    return _RARE.sub(_encode, part)


def unescape(part: str) -> str:
    """Invert :func:`escape`."""
    from urllib.parse import unquote

    return unquote(part, errors="surrogatepass")


def build_key(prefix: str, *parts: str, tag: str) -> str:
    """``prefix:part…:{tag}`` with ``tag`` escaped; ``prefix`` and ``parts`` are trusted.

    ``prefix`` and ``parts`` come from code (a limiter name, a window; escape a name
    given by users before passing it), ``tag`` from users (a user id, an IP address).
    A brace in ``prefix`` or ``parts`` would move the Redis Cluster hash tag and is
    refused.
    """
    head = ":".join((prefix, *parts)) if parts else prefix
    if "{" in head or "}" in head:
        from scalekit.errors import ConfigurationError

        raise ConfigurationError(
            f"a key prefix or name must not contain '{{' or '}}' (it would move the "
            f"Redis Cluster hash tag), got {head!r}"
        )
    return f"{head}:{{{escape(tag)}}}"
