"""The embedded engine: loading, reloading, and the last good policy that keeps serving."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from gateway.identity.decision import PolicyError, PolicyLoadError
from gateway.identity.embedded_policy import EmbeddedPolicy
from tests.support import ROOT

pytestmark = pytest.mark.anyio

POLICIES = ROOT / "policies"
PROMO_RULE = '\nallow if segments == ["promo"]\n'


def request(*segments: str, method: str = "GET") -> dict[str, object]:
    return {
        "attributes": {"request": {"http": {"method": method, "headers": {}}}},
        "parsed_path": list(segments),
        "claims": {},
    }


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    shutil.copytree(POLICIES, directory)
    return directory


async def test_good_change_swaps_and_broken_file_keeps_the_last_good_policy(
    policies: Path, caplog: pytest.LogCaptureFixture
) -> None:
    swaps: list[str] = []
    engine = EmbeddedPolicy(policies, on_swap=swaps.append)
    first = engine.version
    assert (await engine.decide(request("promo"))).allow is False

    with (policies / "authz.rego").open("a") as file:
        file.write(PROMO_RULE)
    assert engine.changed()
    assert engine.reload() is True
    assert not engine.changed()
    good = engine.version
    assert good != first and swaps == [good]
    assert (await engine.decide(request("promo"))).allow is True

    (policies / "extra.rego").write_text("package strangler.authz\n\nallow if {\n  true\n")
    with caplog.at_level(logging.ERROR, logger="strangler.policy"):
        assert engine.reload() is False
    assert f"keeping version {good}" in caplog.text
    assert engine.version == good and swaps == [good]
    assert engine.last_failure is not None
    assert any(e.startswith("extra.rego:3:10: ") for e in engine.last_failure.errors)
    assert (await engine.decide(request("promo"))).allow is True

    (policies / "extra.rego").unlink()
    assert engine.reload() is False  # valid again, and the same files as the serving version
    assert engine.last_failure is None


async def test_errors_found_only_by_evaluating_are_rejected_too(policies: Path) -> None:
    engine = EmbeddedPolicy(policies)
    (policies / "extra.rego").write_text(
        "package strangler.authz\n\nallow if no_such_function(1)\n"
    )
    assert engine.reload() is False
    assert engine.last_failure is not None
    assert engine.last_failure.errors == ["Function not found: no_such_function"]
    assert (await engine.decide(request("products"))).allow is True


def test_a_broken_policy_at_startup_fails_with_every_error(tmp_path: Path) -> None:
    (tmp_path / "a.rego").write_text("package strangler.authz\nallow if {\n")
    (tmp_path / "b.rego").write_text("package strangler.authz\nallow if input.x ==\n")
    with pytest.raises(PolicyLoadError) as caught:
        EmbeddedPolicy(tmp_path)
    files = {error.split(":")[0] for error in caught.value.errors}
    assert files == {"a.rego", "b.rego"}


def test_an_empty_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match=r"no \.rego files"):
        EmbeddedPolicy(tmp_path)


def test_a_directory_without_the_package_is_refused(tmp_path: Path) -> None:
    (tmp_path / "other.rego").write_text("package other\n\nallow := true\n")
    with pytest.raises(PolicyLoadError, match=r"no file defines package strangler\.authz"):
        EmbeddedPolicy(tmp_path)


async def test_test_files_are_not_loaded(policies: Path) -> None:
    (policies / "broken_test.rego").write_text("package strangler.authz_test\ntest_x if {\n")
    (policies / "nested").mkdir()
    (policies / "nested" / "promo.rego").write_text(f"package strangler.authz\n{PROMO_RULE}")
    engine = EmbeddedPolicy(policies)
    assert (await engine.decide(request("promo"))).allow is True


def test_version_is_a_hash_of_the_files(policies: Path) -> None:
    assert EmbeddedPolicy(policies).version == EmbeddedPolicy(POLICIES).version
    (policies / "authz.rego").write_text((POLICIES / "authz.rego").read_text() + "\n# note\n")
    assert EmbeddedPolicy(policies).version != EmbeddedPolicy(POLICIES).version


async def test_an_evaluation_error_is_a_policy_error(tmp_path: Path) -> None:
    (tmp_path / "conflict.rego").write_text(
        "package strangler.authz\n\nallow := input.a\n\nallow := input.b\n"
    )
    engine = EmbeddedPolicy(tmp_path)
    assert (await engine.decide({"a": True, "b": True})).allow is True
    with pytest.raises(PolicyError, match="policy evaluation failed"):
        await engine.decide({"a": True, "b": False})  # two values for one complete rule


async def test_an_input_that_is_not_json_is_a_policy_error() -> None:
    engine = EmbeddedPolicy(POLICIES)
    with pytest.raises(PolicyError):
        await engine.decide({"claims": {"when": object()}})


async def test_undefined_allow_is_a_deny(tmp_path: Path) -> None:
    (tmp_path / "partial.rego").write_text("package strangler.authz\n\nallow if input.ok\n")
    engine = EmbeddedPolicy(tmp_path)
    assert (await engine.decide({"ok": True})).allow is True
    decision = await engine.decide({"ok": False})
    assert decision.allow is False
    assert decision.reason == "policy without allow: data.strangler.authz"


async def test_changed_files_are_noticed_and_reloaded(policies: Path) -> None:
    swapped: list[str] = []
    engine = EmbeddedPolicy(policies, on_swap=swapped.append)
    assert not engine.changed()
    with (policies / "authz.rego").open("a") as file:
        file.write(PROMO_RULE)
    assert engine.changed()
    assert engine.reload() and swapped == [engine.version]
    assert not engine.changed()
    assert (await engine.decide(request("promo"))).allow is True
