"""The sandbox's bytecode cache: what the sandboxed interpreter loads instead of compiling.

The interpreter is run the way the sandbox runs it (``PYTHONPYCACHEPREFIX`` set, nothing
written), and ``-v`` says whether each module came from a cached pyc or was compiled.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

from continue_orchestrator.local import _sandbox


def _load(cache: pathlib.Path, source_dir: pathlib.Path) -> str:
    """``python -v -c 'import probe'`` against ``cache``, read-only like in the sandbox."""
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(cache), "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": str(source_dir)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-v", "-c", "import probe; print(probe.VALUE)"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip() + "\n" + done.stderr


def _import_probe(source_dir: pathlib.Path) -> None:
    sys.path.insert(0, str(source_dir))
    try:
        sys.modules.pop("probe", None)
        __import__("probe")
    finally:
        sys.path.remove(str(source_dir))


def test_loaded_modules_are_served_from_the_cache_and_refreshed_when_edited(
    tmp_path: pathlib.Path,
) -> None:
    source_dir, cache = tmp_path / "src", tmp_path / "cache"
    source_dir.mkdir()
    probe = source_dir / "probe.py"
    probe.write_text("VALUE = 1\n")
    _import_probe(source_dir)
    try:
        _sandbox.bytecode_cache(cache, [str(source_dir)])
        out = _load(cache, source_dir)
        assert out.startswith("1\n")
        cached = cache / str(source_dir).lstrip("/") / f"probe.{sys.implementation.cache_tag}.pyc"
        assert f"code object from '{cached}'" in out

        # An edited source: the stale entry is replaced, and the new code is what runs.
        probe.write_text("VALUE = 22\n")
        later = time.time() + 5
        os.utime(probe, (later, later))
        _sandbox.bytecode_cache(cache, [str(source_dir)])
        out = _load(cache, source_dir)
        assert out.startswith("22\n") and f"code object from '{cached}'" in out
    finally:
        sys.modules.pop("probe", None)


def test_a_stale_entry_is_never_run(tmp_path: pathlib.Path) -> None:
    source_dir, cache = tmp_path / "src", tmp_path / "cache"
    source_dir.mkdir()
    probe = source_dir / "probe.py"
    probe.write_text("VALUE = 1\n")
    _import_probe(source_dir)
    try:
        _sandbox.bytecode_cache(cache, [str(source_dir)])
    finally:
        sys.modules.pop("probe", None)
    # Changed behind the cache's back (no refresh): the interpreter compiles the source.
    probe.write_text("VALUE = 333\n")
    assert _load(cache, source_dir).startswith("333\n")


def test_only_modules_under_the_roots_are_cached(tmp_path: pathlib.Path) -> None:
    cache = tmp_path / "cache"
    _sandbox.bytecode_cache(cache, [str(tmp_path / "nothing-here")])
    assert cache.is_dir() and not any(cache.rglob("*.pyc"))
