"""The shape of the code, checked with the tests (issue #19's done-criteria): the import
contracts in pyproject.toml (lint-imports), a gateway/ one can take in at a glance, modules
and functions short enough to read, and no `if TYPE_CHECKING:` import that hides a cycle.

Each test names every offender in its failure message.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "common", "cdc", "cli", "demo", "legacy_monolith", "new_services")
PROJECT = {*PACKAGES, "bench", "tests"}  # what an import may name to be the project's own
MAX_TOP_LEVEL = 12
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def sources(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_import_contracts_are_kept() -> None:
    # The console script next to this interpreter: import-linter has no `python -m` entry.
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-logo", "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_gateway_has_at_most_a_dozen_entries_at_its_top_level() -> None:
    entries = sorted(p.name for p in (ROOT / "gateway").iterdir() if p.name != "__pycache__")
    assert len(entries) <= MAX_TOP_LEVEL, f"{len(entries)} entries in gateway/: {entries}"


def test_no_module_is_over_450_lines() -> None:
    offenders = [
        f"{relative(path)}: {lines} lines"
        for path in sources(*PACKAGES)
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not offenders, "\n".join(offenders)


def test_no_function_is_over_60_lines_outside_bench() -> None:
    django_site = ROOT / "tests" / "django_site"  # as `startproject` wrote it
    offenders = []
    for path in sources(*PACKAGES, "tests"):
        if path.is_relative_to(django_site):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    offenders.append(f"{relative(path)}:{node.lineno} {node.name}: {lines} lines")
    assert not offenders, "\n".join(offenders)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _project_imports(block: ast.If) -> Iterator[str]:
    """The modules of the project that the block imports (relative imports are the project's)."""
    for node in ast.walk(block):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = ["." * node.level + (node.module or "")]
        else:
            continue
        yield from (n for n in names if n.startswith(".") or n.split(".")[0] in PROJECT)


def test_no_type_checking_block_imports_the_project() -> None:
    # An import the type checker needs and the interpreter must not run is, for a module of
    # the project, a cycle being hidden; third-party ones (e.g. redis, imported late) are fine.
    offenders = []
    for path in sources(*PACKAGES, "bench", "tests"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                offenders.extend(
                    f"{relative(path)}:{node.lineno} imports {name}"
                    for name in _project_imports(node)
                )
    assert not offenders, "\n".join(offenders)
