"""The sticky key: the token's user, else the gateway's cookie, else the client's address."""

from __future__ import annotations

import ipaddress

from gateway.config.rollout import StickySettings
from gateway.rollout import sticky

SETTINGS = StickySettings(cookie="strangler_sticky", max_age=3600, secret=b"k" * 32)
PROXY = ipaddress.ip_network("10.0.0.0/8")


def trusted(address: str | None) -> bool:
    return address is not None and ipaddress.ip_address(address) in PROXY


def key(
    sub: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    peer: str | None = "203.0.113.7",
    scheme: str = "http",
) -> tuple[bytes, bytes | None]:
    return sticky.key(SETTINGS, sub, headers or [], peer, scheme, trusted)


def test_the_tokens_user_comes_first_and_needs_no_cookie() -> None:
    cookie = [(b"cookie", b"strangler_sticky=" + sticky.value_for(b"x", "1.2.3.4"))]
    assert key("alice", cookie) == (b"sub:alice", None)


def test_without_a_token_the_cookie_is_the_key() -> None:
    value = sticky.value_for(b"other-secret", "198.51.100.1")
    headers = [(b"cookie", b"theme=dark; strangler_sticky=" + value + b"; lang=en")]
    assert key(None, headers) == (b"c:" + value, None)


def test_a_first_visit_is_assigned_by_address_as_its_cookie_will_be() -> None:
    first, set_cookie = key()
    assert set_cookie is not None
    value = set_cookie.split(b";")[0].removeprefix(b"strangler_sticky=")
    assert first == b"c:" + value
    later, again = key(None, [(b"cookie", b"strangler_sticky=" + value)], peer="192.0.2.99")
    assert later == first and again is None  # the cookie keeps the user when the IP changes
    assert key()[0] == first  # a client that drops cookies stays put by its address
    assert key(peer="203.0.113.8")[0] != first


def test_the_cookie_value_is_unguessable_but_stable() -> None:
    value = sticky.value_for(SETTINGS.secret, "203.0.113.7")
    assert value == sticky.value_for(SETTINGS.secret, "203.0.113.7")
    assert value != sticky.value_for(b"another key", "203.0.113.7")
    assert len(value) == 32 and int(value, 16) >= 0  # 128 bits, hex: nothing of the address


def test_the_cookie_has_secure_attributes() -> None:
    _, plain = key()
    assert plain is not None
    attributes = plain.decode().split("; ")[1:]
    assert attributes == ["Path=/", "Max-Age=3600", "HttpOnly", "SameSite=Lax"]
    _, tls = key(scheme="https")
    assert tls is not None and tls.endswith(b"; Secure")
    behind_tls = [(b"x-forwarded-proto", b"https")]
    _, proxied = key(None, behind_tls, peer="10.0.0.5")
    assert proxied is not None and proxied.endswith(b"; Secure")
    _, forged = key(None, behind_tls)  # an untrusted peer's X-Forwarded-Proto is not believed
    assert forged is not None and not forged.endswith(b"; Secure")


def test_malformed_cookies_are_ignored() -> None:
    for bad in (
        b"strangler_sticky=short",
        b"strangler_sticky=" + b"G" * 32,
        b"xstrangler_sticky=a",
    ):
        _, set_cookie = key(None, [(b"cookie", bad)])
        assert set_cookie is not None, bad


def test_behind_trusted_proxies_the_nearest_untrusted_hop_is_the_client() -> None:
    xff = [(b"x-forwarded-for", b"198.51.100.1, 203.0.113.50, 10.1.1.1")]
    assert sticky.client_address("10.0.0.1", xff, trusted) == "203.0.113.50"
    assert sticky.client_address("203.0.113.9", xff, trusted) == "203.0.113.9"  # not trusted
    assert sticky.client_address("10.0.0.1", [], trusted) == "10.0.0.1"
    assert sticky.client_address(None, xff, trusted) == "unknown"
    via_proxy = key(None, xff, peer="10.0.0.1")[0]
    assert via_proxy == key(peer="203.0.113.50")[0]
