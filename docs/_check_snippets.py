"""Run the code examples of the documentation, so they stay true to the code.

    .venv/bin/python docs/_check_snippets.py                 # every page
    .venv/bin/python docs/_check_snippets.py how-to/testing-your-code.md
    SCALEKIT_DOCS_REDIS_URL=redis://127.0.0.1:6390/0 .venv/bin/python docs/_check_snippets.py

Every ```` ```python ```` block of a page runs, in order, in one namespace per page
(like one interpreter session); ```` ```pycon ```` blocks run as doctests in the same
namespace, so their shown output is checked. An HTML comment on the line before a
fence changes that:

- ``<!-- snippet: skip -->``   not run (needs a package the docs do not install,
  such as FastAPI, or is a fragment);
- ``<!-- snippet: fresh -->``  run in a new namespace.

Signatures and other Python that is not meant to run are fenced as ```` ```py ````
(highlighted the same) and never run.

A line ``<!-- run: STATEMENT -->`` runs ``STATEMENT`` there without showing it on the
page (e.g. to call a test function that the page shows).

Blocks that mention ``redis://localhost:6379`` run only when
``SCALEKIT_DOCS_REDIS_URL`` names a throwaway Redis server (its database is
flushed first); the URL is substituted. Otherwise they are reported as skipped.

This file is excluded from the built site (``exclude_docs`` in ``mkdocs.yml``).
"""

from __future__ import annotations

import doctest
import os
import re
import sys
import threading
import traceback
import types
from pathlib import Path

DOCS = Path(__file__).resolve().parent
FENCE = re.compile(
    r"(?:^<!-- snippet: (?P<mark>\w+) -->\n\n?)?^```(?P<lang>python|pycon)\n(?P<code>.*?)^```$"
    r"|^<!-- run: (?P<run>.+?) -->$",
    re.M | re.S,
)
REDIS = "redis://localhost:6379"
TIMEOUT = 30.0


class DoctestFailed(AssertionError):
    pass


def _run_block(lang: str, code: str, ns: dict[str, object], name: str, line: int) -> None:
    if lang == "python":
        exec(compile(code, f"{name}:{line}", "exec"), ns)
        return
    parser = doctest.DocTestParser()
    test = parser.get_doctest(code, ns, f"{name}:{line}", name, line)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    runner.run(test, clear_globs=False)
    ns.update(test.globs)  # DocTest works on a copy of the namespace
    if runner.failures:
        raise DoctestFailed(f"{runner.failures} doctest example(s) failed")


def _fresh_namespace() -> dict[str, object]:
    """A new module's namespace, registered in ``sys.modules`` as ``__docs__`` so that
    what inspects a class' module (dataclasses, pydantic, typing) finds it."""
    module = types.ModuleType("__docs__")
    sys.modules["__docs__"] = module
    return module.__dict__


def check(page: Path, redis_url: str | None) -> tuple[int, int, int]:
    text = page.read_text(encoding="utf-8")
    name = str(page.relative_to(DOCS))
    ran = skipped = failed = 0
    ns = _fresh_namespace()
    for m in FENCE.finditer(text):
        if m["run"] is not None:  # an invisible statement, e.g. calling a test shown above
            lang, code, mark = "python", m["run"] + "\n", None
            line = text.count("\n", 0, m.start("run")) + 1
        else:
            lang, code, mark = m["lang"], m["code"], m["mark"]
            line = text.count("\n", 0, m.start("code")) + 1
        if mark == "skip":
            skipped += 1
            continue
        if REDIS in code:
            if redis_url is None:
                print(f"  skip {name}:{line} (needs SCALEKIT_DOCS_REDIS_URL)")
                skipped += 1
                continue
            import redis

            redis.Redis.from_url(redis_url).flushdb()
            code = code.replace(REDIS + "/0", redis_url).replace(REDIS, redis_url)
        if mark == "fresh":
            ns = _fresh_namespace()
        error: list[BaseException] = []

        def target(lang: str = lang, code: str = code, line: int = line) -> None:
            try:
                _run_block(lang, code, ns, name, line)
            except BaseException as exc:
                error.append(exc)
                if not isinstance(exc, DoctestFailed):  # doctest printed its report
                    traceback.print_exc()

        t = threading.Thread(target=target, daemon=True)
        t.start()
        t.join(TIMEOUT)
        if t.is_alive():
            print(f"  FAIL {name}:{line}: still running after {TIMEOUT:.0f}s (a hang?)")
            failed += 1
            return ran, skipped, failed  # the namespace is unusable now
        if error:
            print(f"  FAIL {name}:{line}: {type(error[0]).__name__}: {error[0]}")
            failed += 1
        else:
            ran += 1
    return ran, skipped, failed


def main(argv: list[str]) -> int:
    redis_url = os.environ.get("SCALEKIT_DOCS_REDIS_URL")
    pages = [DOCS / a for a in argv] if argv else sorted(DOCS.rglob("*.md"))
    total = [0, 0, 0]
    for page in pages:
        ran, skipped, failed = check(page, redis_url)
        if ran or skipped or failed:
            print(f"{page.relative_to(DOCS)}: {ran} ran, {skipped} skipped, {failed} failed")
        for i, n in enumerate((ran, skipped, failed)):
            total[i] += n
    print(f"total: {total[0]} ran, {total[1]} skipped, {total[2]} failed")
    return 1 if total[2] else 0


if __name__ == "__main__":
    sys.path.insert(0, str(DOCS.parent))
    sys.exit(main(sys.argv[1:]))
