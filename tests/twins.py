"""One test body for sync and async code: :class:`AsyncTwins` shows an object's
awaitable twins (``ahit``, ``aacquire``, ``ahold``, ...) under the sync names, so a
body written as ``await call(limiter.hit(key))`` drives ``hit`` in sync mode and
``ahit`` in async mode of one and the same object (the library's convention: an
``a``-prefixed method is the awaitable twin of the method without it)."""

from __future__ import annotations

from typing import Any


class AsyncTwins:
    """``obj`` seen from async code: ``view.hit`` is ``obj.ahit`` (when ``obj`` has
    one), every other attribute is ``obj``'s own."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __getattr__(self, name: str) -> Any:
        twin = getattr(self.obj, "a" + name, None)
        if twin is not None and callable(twin) and not name.startswith("_"):
            return twin
        return getattr(self.obj, name)

    def __repr__(self) -> str:
        return f"AsyncTwins({self.obj!r})"


def in_mode(obj: Any, mode: str) -> Any:
    """``obj`` itself in ``"sync"`` mode, its :class:`AsyncTwins` in ``"async"`` mode."""
    return AsyncTwins(obj) if mode == "async" else obj
