"""scalekit.pagination and scalekit.sync: the public names exist, and nothing imports
asyncpg until a query runs (``import scalekit`` works without the postgres extra)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import scalekit.pagination
import scalekit.sync


def test_exported_members_exist() -> None:
    for module in (scalekit.pagination, scalekit.sync):
        for name in module.__all__:
            assert getattr(module, name) is not None, name


def test_no_asyncpg_needed_to_import_or_build() -> None:
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "asyncpg" or name.startswith("asyncpg."):
                    raise ImportError("asyncpg blocked")
        sys.meta_path.insert(0, Block())
        import scalekit, scalekit.pagination, scalekit.sync, scalekit.testing
        from scalekit import CursorError, MustRefetch
        scalekit.pagination.Keyset("SELECT id FROM t", [("id", "asc")], secret="s" * 16)
        scalekit.sync.ChangeFeed("t", secret="s" * 16)
        assert "asyncpg" not in sys.modules
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr
