"""TTL query cache: under construction.

Nothing is exported yet. The modules of this package are the building blocks of the
upcoming ``@cached`` decorator; its public names will be listed in ``__all__`` once
the decorator lands.
"""

from __future__ import annotations

__all__: list[str] = []
