"""The in-process backend: ``memory://``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MemoryBackend"]

DEFAULT_MAX_KEYS = 1_000_000


@dataclass(frozen=True, slots=True)
class MemoryBackend:
    """State in this process only. ``max_keys`` bounds each store (per window).

    URL form: ``memory://`` or ``memory://?max_keys=100000``.
    """

    max_keys: int = DEFAULT_MAX_KEYS

    def __post_init__(self) -> None:
        from scalekit.errors import ConfigurationError

        if isinstance(self.max_keys, bool) or not isinstance(self.max_keys, int):
            raise ConfigurationError(f"max_keys must be an int >= 1, got {self.max_keys!r}")
        if self.max_keys < 1:
            raise ConfigurationError(f"max_keys must be >= 1, got {self.max_keys}")

    @property
    def url(self) -> str:
        return f"memory://?max_keys={self.max_keys}"
