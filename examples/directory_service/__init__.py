"""Directory service: search a school of 50,000 members, filtered and keyset-paginated,
instead of loading every id into memory.

See README.md in this directory. The demo (and the tests) use ``create_app(config)``,
``install(conn)``, ``seed(conn, users=..., seed=...)`` and ``run_workload(client, ...)``,
whose figures carry the deep-page comparison (``deep_page_ms``,
``deep_page_rows_read``).
"""

from ._app import create_app, plan_figures, prefix_end
from ._db import BIG_SCHOOL, BIG_SCHOOL_MEMBERS, install, seed
from ._workload import run_workload

__all__ = [
    "BIG_SCHOOL",
    "BIG_SCHOOL_MEMBERS",
    "create_app",
    "install",
    "plan_figures",
    "prefix_end",
    "run_workload",
    "seed",
]
