"""The assigner's two stages on their own: the split's pick before the policy, the tester's
override after it."""

from __future__ import annotations

import time

import pytest

from gateway.base.errors import BadTarget
from gateway.config.table import RouteTable, parse
from gateway.identity.guard import Access
from gateway.identity.policy import Decision
from gateway.request.context import RequestContext
from gateway.rollout.assignment import Assigner

ROUTES = b"""upstreams:
  legacy: {url: "http://127.0.0.1:9"}
  search: {url: "http://127.0.0.1:8"}
  other: {url: "http://127.0.0.1:7"}
default: legacy
auth: {default: none}
authz: none
routes:
  - {name: search, path: /search, upstream: {legacy: 50, search: 50}}
  - {name: products, path: /products, upstream: legacy}
"""


def context(table: RouteTable, route: str, *headers: tuple[bytes, bytes]) -> RequestContext:
    scope = {"method": "GET", "headers": list(headers), "client": ("192.0.2.9", 1)}
    ctx = RequestContext(scope, table, "r", time.perf_counter(), path="/" + route)
    ctx.route = next(r for r in table.routes if r.name == route)
    ctx.upstream = table.upstreams[ctx.route.upstream]
    return ctx


def allowed(override: bool) -> Access:
    return Access(None, Decision(allow=True, override=override), 0.0)


def test_the_split_picks_sticks_and_sets_a_cookie_for_a_new_visitor() -> None:
    table, assigner = parse(ROUTES), Assigner()
    ctx = context(table, "search")
    assigner.split(ctx)
    assert ctx.upstream is not None and ctx.upstream.name in ("legacy", "search")
    assert ctx.cookie is not None and ctx.override is None
    assert assigner.stats["search"].assigned[ctx.upstream.name] == 1
    ctx.access = allowed(False)
    assigner.choose(ctx)
    assert ctx.measured  # the split's own pick: evidence of it
    plain = context(table, "products")
    assigner.split(plain)
    plain.access = allowed(False)
    assigner.choose(plain)
    assert plain.cookie is None and not plain.measured and "products" not in assigner.stats


def test_an_override_is_honoured_only_when_the_policy_says_so() -> None:
    table, assigner = parse(ROUTES), Assigner()
    ctx = context(table, "products", (b"x-strangler-target", b"search"))
    assigner.split(ctx)
    assert ctx.override == "search"
    ctx.access = allowed(False)
    assigner.choose(ctx)
    assert ctx.upstream is not None and ctx.upstream.name == "legacy"
    assert assigner.stats["products"].overrides_ignored == 1
    split = context(table, "search", (b"x-strangler-target", b"search"))
    assigner.split(split)
    assert split.upstream is not None
    picked = split.upstream.name
    split.access = allowed(True)
    assigner.choose(split)
    assert split.upstream.name == "search"
    assert assigner.stats["search"].overrides["search"] == 1
    assert split.measured == (picked == "search")  # a tester's choice is not evidence
    unknown = context(table, "search", (b"x-strangler-target", b"other"))
    assigner.split(unknown)
    unknown.access = allowed(True)
    with pytest.raises(BadTarget):
        assigner.choose(unknown)
