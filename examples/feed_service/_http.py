"""HTTP caching for the feed's read endpoints: ``ETag``, ``Cache-Control`` and 304s."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import Request, Response


def json_bytes(payload: Any) -> bytes:
    """``payload`` as compact JSON (the exact bytes the ETag is computed over)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def etag_of(body: bytes) -> str:
    """A strong validator for ``body``: equal bytes, equal tag."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (``*`` names anything; a
    weak ``W/`` prefix compares equal, as RFC 9110 asks for this weak comparison)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def cacheable(
    request: Request, payload: Any, *, max_age: int, public: bool, validators: bool
) -> Response:
    """``payload`` as JSON; with ``validators``, an ``ETag`` and ``Cache-Control``, and
    a bodiless 304 when the client already holds this version (``If-None-Match``).

    Without ``validators`` (the service built with ``primitives=False``) the answer
    is the plain body every time, as a service without HTTP caching sends it.
    """
    body = json_bytes(payload)
    if not validators:
        return Response(body, media_type="application/json")
    etag = etag_of(body)
    headers = {
        "ETag": etag,
        "Cache-Control": f"{'public' if public else 'private'}, max-age={max_age}",
    }
    if matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
