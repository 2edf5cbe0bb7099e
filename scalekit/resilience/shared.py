"""Deprecated: import :class:`SharedState` from :mod:`scalekit.resilience`.

This path was documented; it keeps working, with a ``DeprecationWarning``, for one
release and then goes. The implementation is private (``_shared``).
"""

from __future__ import annotations

import warnings

from scalekit.resilience._shared import OnBackendError, SharedState

__all__ = ["OnBackendError", "SharedState"]

warnings.warn(
    "scalekit.resilience.shared is deprecated and goes in the next release; "
    "import SharedState from scalekit.resilience",
    DeprecationWarning,
    stacklevel=2,
)
