"""The OPA adapter's failure modes and transport, against a loopback Data API server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.identity.decision import PolicyError
from gateway.identity.opa import OpaPolicy
from gateway.identity.policy import create_engine
from tests.support import ROOT
from tests.support.opa_server import OpaStandIn, refused_url, serve_opa

pytestmark = pytest.mark.anyio

POLICIES = ROOT / "policies"
INPUT = {
    "attributes": {"request": {"http": {"method": "GET", "headers": {}}}},
    "parsed_path": ["products"],
    "claims": {},
}


@pytest.fixture
async def opa() -> AsyncIterator[OpaStandIn]:
    async with serve_opa(POLICIES) as server:
        yield server


@pytest.fixture
async def engine(opa: OpaStandIn) -> AsyncIterator[OpaPolicy]:
    policy = OpaPolicy(opa.url, timeout=2)
    await policy.start()
    yield policy
    await policy.close()


async def test_allows_and_denies_through_the_data_api(engine: OpaPolicy, opa: OpaStandIn) -> None:
    assert (await engine.decide(INPUT)).allow is True
    denied = await engine.decide({**INPUT, "parsed_path": ["orders"]})
    assert denied.allow is False and denied.reason == "orders need a signed-in buyer"
    assert opa.requests == 2


async def test_one_kept_alive_connection_serves_every_decision(
    engine: OpaPolicy, opa: OpaStandIn
) -> None:
    for _ in range(20):
        await engine.decide(INPUT)
    assert opa.requests == 20
    assert opa.connections == 1


async def test_timeout_is_a_policy_error(opa: OpaStandIn) -> None:
    opa.mode = "stall"
    policy = OpaPolicy(opa.url, timeout=0.05)
    await policy.start()
    try:
        with pytest.raises(PolicyError, match="unreachable"):
            await policy.decide(INPUT)
        assert opa.entered.is_set()  # it reached the server, which never answered in time
    finally:
        await policy.close()


async def test_server_error_is_a_policy_error(engine: OpaPolicy, opa: OpaStandIn) -> None:
    opa.mode = "error"
    with pytest.raises(PolicyError, match="OPA answered 500"):
        await engine.decide(INPUT)
    assert opa.requests == 1  # no retry: the route's fail-closed/open rule decides


async def test_undefined_result_is_a_deny_not_an_error(engine: OpaPolicy, opa: OpaStandIn) -> None:
    opa.mode = "undefined"
    decision = await engine.decide(INPUT)
    assert decision.allow is False
    assert decision.reason == "policy undefined: data.strangler.authz"


async def test_a_package_opa_does_not_have_is_a_deny(opa: OpaStandIn) -> None:
    policy = OpaPolicy(opa.url, package="strangler/missing", timeout=2)
    await policy.start()
    try:
        decision = await policy.decide(INPUT)
    finally:
        await policy.close()
    assert decision.allow is False
    assert decision.reason == "policy undefined: data.strangler.missing"


async def test_garbage_json_is_a_policy_error(engine: OpaPolicy, opa: OpaStandIn) -> None:
    opa.mode = "garbage"
    with pytest.raises(PolicyError, match="OPA exchange failed"):
        await engine.decide(INPUT)


async def test_refused_connection_is_a_policy_error() -> None:
    policy = OpaPolicy(refused_url(), timeout=2)
    await policy.start()
    try:
        with pytest.raises(PolicyError, match="unreachable"):
            await policy.decide(INPUT)
    finally:
        await policy.close()


async def test_input_that_is_not_json_is_a_policy_error(engine: OpaPolicy) -> None:
    with pytest.raises(PolicyError):
        await engine.decide({**INPUT, "claims": {"when": object()}})


async def test_decision_id_comes_from_opa_when_it_sends_one(
    engine: OpaPolicy, opa: OpaStandIn
) -> None:
    opa.decision_ids = True
    assert (await engine.decide(INPUT)).decision_id == "opa-1"


async def test_deciding_before_start_is_a_policy_error(opa: OpaStandIn) -> None:
    with pytest.raises(PolicyError, match="not started"):
        await OpaPolicy(opa.url).decide(INPUT)


async def test_close_then_start_again(engine: OpaPolicy) -> None:
    await engine.close()
    with pytest.raises(PolicyError, match="not started"):
        await engine.decide(INPUT)
    await engine.start()
    assert (await engine.decide(INPUT)).allow is True


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("http://opa.internal:8181", "http://opa.internal:8181"),
        ("https://opa.internal", "https://opa.internal:8181"),
        ("http://[::1]:9000/", "http://[::1]:9000"),
    ],
)
def test_urls(url: str, normal: str) -> None:
    assert OpaPolicy(url).url == normal


@pytest.mark.parametrize(
    "url", ["opa.internal:8181", "ftp://opa.internal", "http://opa/v1/data", "http://:80"]
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="invalid OPA URL"):
        OpaPolicy(url)


@pytest.mark.parametrize("package", ["strangler.authz", "/strangler", "a//b", "a/b?c", ""])
def test_bad_packages_are_refused(package: str) -> None:
    with pytest.raises(ValueError, match="invalid policy package"):
        OpaPolicy("http://opa:8181", package=package)


def test_factory_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="needs the OPA server's URL"):
        create_engine("opa", policies=None, url=None)
    with pytest.raises(ValueError, match="needs a policy directory"):
        create_engine("embedded", policies=None, url="http://opa:8181")
    with pytest.raises(ValueError, match="unknown policy engine 'wasm'"):
        create_engine("wasm", policies=POLICIES, url=None)
    assert isinstance(create_engine("opa", policies=None, url="http://opa:8181"), OpaPolicy)
