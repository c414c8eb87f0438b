"""The policies' own Rego unit tests (`policies/*_test.rego`), run through regopy.

This is the suite's `opa test policies/`: every `test_*` rule of every test file is one
pytest test, named after the rule, that passes when the rule evaluates to true.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

from gateway.identity.rego import Bundle, Interpreter, LogLevel
from tests.support import ROOT

POLICIES = ROOT / "policies"

_PACKAGE = re.compile(r"^package\s+([\w.]+)", re.MULTILINE)
_TEST_RULE = re.compile(r"^(test_\w+)", re.MULTILINE)
# regopy 1.5.2 dies with SIGSEGV on `with input as {...}` when the rule under test reads
# another rule; refuse it here with a message rather than lose the whole test run.
_WHOLE_INPUT_WITH = re.compile(r"\bwith\s+input\s+as\b")
_COMMENT = re.compile(r"#.*")


def rego_tests(directory: Path) -> list[tuple[str, str]]:
    """(package, rule) of every test rule in the directory's `*_test.rego` files."""
    found = []
    for file in sorted(directory.rglob("*_test.rego")):
        text = file.read_text()
        if _WHOLE_INPUT_WITH.search(_COMMENT.sub("", text)):
            raise AssertionError(f"{file}: write `with input.<key> as ...`, not `with input as`")
        package = _PACKAGE.search(text)
        assert package is not None, f"{file}: no package line"
        found += [(package[1], rule) for rule in _TEST_RULE.findall(text)]
    return found


@cache
def compiled(directory: Path) -> tuple[Interpreter, Bundle]:
    """Every module of the directory, tests included, compiled once with each test rule as an
    entrypoint (a plain query would compile everything again for every rule)."""
    rego = Interpreter()
    rego.log_level = LogLevel.NONE
    for file in sorted(directory.rglob("*.rego")):
        rego.add_module(str(file.relative_to(directory)), file.read_text())
    entrypoints = [f"{package.replace('.', '/')}/{rule}" for package, rule in rego_tests(directory)]
    return rego, rego.build(None, entrypoints)


def run(directory: Path, package: str, rule: str) -> str | None:
    """None when the rule is true, else what it evaluated to."""
    rego, bundle = compiled(directory)
    output = rego.query_bundle_entrypoint(bundle, f"{package.replace('.', '/')}/{rule}")
    if not output.ok():
        return f"error: {output}"
    values = output.results[0].expressions if output.results else []
    return None if values == [True] else f"{values[0] if values else 'undefined'}"


@pytest.mark.parametrize(
    ("package", "rule"),
    rego_tests(POLICIES),
    ids=[f"{package}.{rule}" for package, rule in rego_tests(POLICIES)],
)
def test_rego(package: str, rule: str) -> None:
    outcome = run(POLICIES, package, rule)
    assert outcome is None, f"{package}.{rule} failed: it evaluated to {outcome}"


def test_there_are_rego_tests() -> None:
    assert len(rego_tests(POLICIES)) >= 20


def test_the_runner_reports_a_failing_rule(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text("package p\n\nimport rego.v1\n\nx := 1\n")
    (tmp_path / "p_test.rego").write_text(
        "package p_test\n\nimport rego.v1\n\n"
        "test_passes if data.p.x == 1\n\ntest_fails if data.p.x == 2\n"
    )
    tests = rego_tests(tmp_path)
    assert tests == [("p_test", "test_passes"), ("p_test", "test_fails")]
    assert run(tmp_path, "p_test", "test_passes") is None
    assert run(tmp_path, "p_test", "test_fails") == "undefined"


def test_the_runner_refuses_a_whole_input_with(tmp_path: Path) -> None:
    (tmp_path / "p_test.rego").write_text("package p_test\n\ntest_x if data.p.x with input as {}\n")
    with pytest.raises(AssertionError, match="not `with input as`"):
        rego_tests(tmp_path)
