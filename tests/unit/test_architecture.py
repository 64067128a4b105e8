"""docs/architecture.md's "may import" table is the import graph the code has.

The table says, for each subpackage of ``continue_orchestrator`` (and each top-level
module), which others it may import. Every module under operator/continue_orchestrator is
read with ``ast``; each ``from continue_orchestrator import X``, ``from
continue_orchestrator.X... import``, ``import continue_orchestrator.X`` and relative
import must be allowed by its subpackage's row. A failure names the module, the line and
the import, and what the row allows.
"""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "continue_orchestrator"
DOC = ROOT / "docs" / "architecture.md"
_NAME = re.compile(r"`([^`]+)`")


def _table() -> dict[str, frozenset[str]]:
    """Subpackage -> what it may import, from the table whose last column is "may import"."""
    rows: dict[str, frozenset[str]] = {}
    lines = DOC.read_text(encoding="utf-8").splitlines()
    header = next(
        i for i, line in enumerate(lines) if line.startswith("|") and "may import" in line
    )
    assert lines[header].rstrip(" |").endswith("may import"), "the last column is 'may import'"
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        (name,) = _NAME.findall(cells[0])
        allowed = cells[-1]
        rows[name] = frozenset() if allowed == "—" else frozenset(_NAME.findall(allowed))
    return rows


def _units() -> set[str]:
    """The subpackages and top-level modules of the package."""
    found = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    found |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return found


def _owner(path: pathlib.Path) -> str:
    """The subpackage (or top-level module) a module belongs to."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imported(path: pathlib.Path, source: str) -> list[tuple[int, str, str]]:
    """(line, what the source says, the unit of the package it imports) for each import
    in ``source``, the text of the module at ``path``."""
    tree = ast.parse(source, filename=str(path))
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    out: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "continue_orchestrator" and len(parts) > 1:
                    out.append((node.lineno, f"import {alias.name}", parts[1]))
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            parts = [*base, *(node.module.split(".") if node.module else [])]
            if not parts or parts[0] != "continue_orchestrator":
                continue
            names = ", ".join(alias.name for alias in node.names)
            text = f"from {'.' * node.level}{node.module or ''} import {names}"
            if len(parts) > 1:
                out.append((node.lineno, text, parts[1]))
            else:  # from continue_orchestrator import api, ledger
                out.extend((node.lineno, text, alias.name) for alias in node.names)
    return out


def test_every_subpackage_has_a_row_and_every_row_a_subpackage() -> None:
    table, units = _table(), _units()
    assert set(table) == units, (
        f"docs/architecture.md's table names {sorted(set(table) - units)} that do not exist "
        f"and lacks {sorted(units - set(table))}"
    )
    for name, allowed in table.items():
        assert allowed <= units, f"the row of `{name}` allows unknown {sorted(allowed - units)}"


def test_every_import_is_one_the_table_allows() -> None:
    table, units = _table(), _units()
    wrong: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "__init__.py":
            continue  # the package itself: its docstring and version, nothing imported
        owner = _owner(path)
        for line, text, unit in _imported(path, path.read_text(encoding="utf-8")):
            if unit == owner or unit not in units:  # its own modules; a name like __version__
                continue
            if unit not in table.get(owner, frozenset()):
                allowed = ", ".join(sorted(table.get(owner, ()))) or "nothing"
                wrong.append(
                    f"{path.relative_to(ROOT)}:{line}: {text} (imports `{unit}`; "
                    f"docs/architecture.md says `{owner}` may import {allowed})"
                )
    assert not wrong, "imports the architecture does not allow:\n" + "\n".join(wrong)


def test_the_scan_sees_every_form_of_import() -> None:
    source = (
        "from continue_orchestrator import controller, errors\n"
        "from continue_orchestrator.gateway import _server\n"
        "import continue_orchestrator.cli\n"
        "from . import _run\n"
        "from .. import runs\n"
        "from ..ledger import _entry\n"
        "import json\n"
    )
    found = _imported(PACKAGE / "local" / "_probe.py", source)
    assert [(line, unit) for line, _, unit in found] == [
        (1, "controller"), (1, "errors"), (2, "gateway"), (3, "cli"), (4, "local"), (5, "runs"),
        (6, "ledger"),
    ]  # fmt: skip
