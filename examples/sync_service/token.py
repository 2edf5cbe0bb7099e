"""The sync token a client sends back: both feeds' cursors and where the pass is.

One ``/sync`` response can carry a page of conversations and a page of messages, so
the client keeps one opaque token for both. The token also says whether a pass is
still under way (a feed has more pages): the next call then continues that pass and
is not counted as a new sync by the per-tier interval. That flag decides what the
rate limit charges, so the token is signed (HMAC-SHA256 with the service's
``cursor_secret``) and bound to its user: a client can neither set the flag itself
nor borrow another user's token. The feeds' own cursors inside are signed and bound
to the user's filter by :class:`scalekit.sync.ChangeFeed` as well.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

from scalekit.errors import CursorError

#: the longest token accepted (two feed cursors and a little JSON around them)
MAX_TOKEN_CHARS = 8192


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class SyncToken:
    """``cursors``: one ChangeFeed cursor per feed (conversations, messages);
    ``more``: per feed, whether its pass has more pages."""

    cursors: tuple[str, str]
    more: tuple[bool, bool]

    @property
    def continues(self) -> bool:
        """Whether the next call continues a pass (rather than starting a sync)."""
        return any(self.more)


class TokenCodec:
    """Signs and checks :class:`SyncToken` strings for one secret."""

    __slots__ = ("_key",)

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"sync-service token\x00" + secret.encode()).digest()

    def _mac(self, body: str) -> str:
        return _b64e(hmac.digest(self._key, body.encode("ascii"), "sha256"))

    def encode(self, token: SyncToken, *, user_id: int) -> str:
        blob = json.dumps([user_id, *token.cursors, *token.more], separators=(",", ":"))
        body = _b64e(blob.encode())
        return f"{body}.{self._mac(body)}"

    def decode(self, text: str, *, user_id: int) -> SyncToken:
        """The token in ``text``; :class:`CursorError` unless it is intact, ours and
        minted for ``user_id``."""
        if len(text) > MAX_TOKEN_CHARS:
            raise CursorError("malformed sync token: too long")
        body, _, mac = text.rpartition(".")
        if not body or not hmac.compare_digest(mac.encode(), self._mac(body).encode()):
            raise CursorError("malformed sync token")
        try:
            values = json.loads(_b64d(body))
        except (ValueError, binascii.Error):  # our own MAC over bytes we did not write
            raise CursorError("malformed sync token") from None
        if not (
            isinstance(values, list)
            and len(values) == 5
            and all(isinstance(v, str) for v in values[1:3])
            and all(isinstance(v, bool) for v in values[3:])
        ):
            raise CursorError("malformed sync token")
        if values[0] != user_id:
            raise CursorError("this sync token belongs to another user")
        return SyncToken((values[1], values[2]), (values[3], values[4]))
