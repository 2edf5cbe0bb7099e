"""Delta sync of conversations and messages for mobile clients (see README.md).

``create_app(config)`` builds the FastAPI app; ``install(conn)`` adds change tracking
to the shared tables; ``seed`` has nothing to add (chat_service's seed fills the
shared tables); ``run_workload`` drives simulated phones and reports
``rows_synced`` against ``full_refetch_rows``.
"""

from .app import create_app, install, seed
from .workload import Phone, SyncOutcome, run_workload

__all__ = ["Phone", "SyncOutcome", "create_app", "install", "run_workload", "seed"]
