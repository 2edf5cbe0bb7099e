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
    """Whether an ``If-None-Match`` header names ``etag`` (``*`` names anything). The
    comparison is the weak one RFC 9110 prescribes for ``If-None-Match``: ``W/``
    prefixes are ignored on both sides."""
    if not if_none_match:
        return False
    mine = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == mine:
            return True
    return False


def cacheable(
    request: Request,
    payload: Any,
    *,
    max_age: int,
    public: bool,
    validators: bool,
    same_as: Any = None,
) -> Response:
    """``payload`` as JSON; with ``validators``, an ``ETag`` and ``Cache-Control``, and
    a bodiless 304 when the client already holds this version (``If-None-Match``).

    ``same_as``: what decides whether two answers are the same, when not every byte
    does. A page's ``next`` cursor records when it was minted, so two answers of the
    same page differ in bytes while either cursor continues the same way: the tag is
    then the weak (``W/``) tag of ``same_as`` (the page's items).

    Without ``validators`` (the service built with ``primitives=False``) the answer
    is the plain body every time, as a service without HTTP caching sends it.
    """
    body = json_bytes(payload)
    if not validators:
        return Response(body, media_type="application/json")
    etag = etag_of(body) if same_as is None else "W/" + etag_of(json_bytes(same_as))
    headers = {
        "ETag": etag,
        "Cache-Control": f"{'public' if public else 'private'}, max-age={max_age}",
    }
    if matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
