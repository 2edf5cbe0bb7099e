"""Feed service: keyset pages with batched authors, a precomputed trending list, HTTP
caching and a monthly-partitioned views table kept by a maintenance job.

See README.md in this directory. The demo (and the tests) use::

    app = create_app(ServiceConfig(database_url=..., redis_url=...))
    await install(conn); await seed(conn, users=1000, seed=1)
    result = await run_workload(client, user_ids=..., paid_ids=..., requests=500, seed=1)
"""

from ._app import create_app
from ._db import VIEW_PARTITIONS, install, seed
from ._workload import run_workload

__all__ = ["VIEW_PARTITIONS", "create_app", "install", "run_workload", "seed"]
