"""Two rules of the code's shape that review alone kept missing (issue 13).

* No class under operator/ is longer than 300 lines: a class that grows past that has
  more than one job, and splitting it later costs more than keeping it small.
* No digest text is built by hand: ``digest.Digest`` (``digest.text``) is the one place
  that writes ``sha256:<hex>``, so its form and its checks cannot drift between copies.

Each failure names the file and line.
"""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "continue_orchestrator"
MAX_CLASS_LINES = 300
# "sha256:" + ..., f"sha256:{...hexdigest()}", "sha256:%s" % ...: a digest text built by hand.
_HAND_BUILT = re.compile(r"""["']sha256:["']\s*\+|f["']sha256:\{[^}]*hexdigest\(\)|["']sha256:%s""")


def _modules() -> list[pathlib.Path]:
    found = sorted(PACKAGE.rglob("*.py"))
    assert len(found) > 50, f"expected the package's modules under {PACKAGE}"
    return found


def test_no_class_is_longer_than_300_lines() -> None:
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines}")
    assert not long, f"classes over {MAX_CLASS_LINES} lines: {long}"


def test_no_digest_text_is_built_by_hand() -> None:
    built = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _modules()
        if path.name != "digest.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _HAND_BUILT.search(line)
    ]
    assert not built, f"use digest.text / digest.Digest instead: {built}"


def test_the_hand_built_pattern_catches_what_it_is_for() -> None:
    assert _HAND_BUILT.search('x = "sha256:" + hashlib.sha256(b).hexdigest()')
    assert _HAND_BUILT.search('x = f"sha256:{hashlib.sha256(b).hexdigest()}"')
    assert not _HAND_BUILT.search("x = digest.text(b)")
