"""Certificate callers have a namespace of their own (``cert:<CN>``) unless mapped on purpose."""

from __future__ import annotations

import pytest

from server.auth import AuthConfigError, Authenticator, Caller, parse_identities
from server.errors import Unauthenticated

ALICE_TOKEN = "alice-0123456789abcdef"


def _auth(text: str, *, mtls: bool = True) -> Authenticator:
    return Authenticator(parse_identities(text, "test"), mtls=mtls)


def test_a_wildcard_certificate_with_cn_alice_is_not_the_token_user_alice():
    auth = _auth(f"alice run,code {ALICE_TOKEN}\ncert:* run")
    token_alice = auth.authenticate(f"Bearer {ALICE_TOKEN}")
    cert_alice = auth.authenticate(None, "alice")
    assert token_alice == Caller("alice", frozenset({"run", "code"}))
    assert cert_alice == Caller("cert:alice", frozenset({"run"}))
    assert cert_alice.name != token_alice.name, "they would see and cancel each other's jobs"


def test_a_named_certificate_is_named_in_the_cert_namespace():
    auth = _auth(f"worker-7 run {ALICE_TOKEN}\ncert:worker-7 run,code")
    assert auth.authenticate(None, "worker-7").name == "cert:worker-7"
    assert auth.authenticate(f"Bearer {ALICE_TOKEN}").name == "worker-7"
    assert auth.caller_named("worker-7") == Caller("worker-7", frozenset({"run"}))
    assert auth.caller_named("cert:worker-7") == Caller("cert:worker-7", frozenset({"run", "code"}))


def test_an_entry_maps_a_cn_to_a_name_on_purpose():
    auth = _auth(f"ci-bot run {ALICE_TOKEN}\ncert:ci-7=ci-bot code\ncert:* run")
    assert auth.authenticate(None, "ci-7") == Caller("ci-bot", frozenset({"code"}))
    # The name's permissions gather its token and its mapped certificates.
    assert auth.caller_named("ci-bot") == Caller("ci-bot", frozenset({"run", "code"}))
    # The mapped CN is no longer the caller cert:ci-7 (even though cert:* would admit it).
    assert auth.caller_named("cert:ci-7") is None
    assert auth.caller_named("cert:other") == Caller("cert:other", frozenset({"run"}))


def test_caller_named_follows_the_namespace():
    """Stored jobs are re-admitted by owner name: a plain name is never a certificate's."""
    auth = _auth("cert:* run,code\ncert:worker-7 run")
    assert auth.caller_named("alice") is None, "cert:* must not grant any plain name"
    assert auth.caller_named("worker-7") is None
    assert auth.caller_named("cert:alice") == Caller("cert:alice", frozenset({"run", "code"}))
    assert auth.caller_named("cert:worker-7") == Caller("cert:worker-7", frozenset({"run"}))
    assert auth.caller_named("cert:bad cn") is None
    assert auth.caller_named("cert:*") is None
    # Without mutual TLS no certificate is a caller, mapped or not.
    plain = _auth(f"alice run {ALICE_TOKEN}\ncert:x=alice code\ncert:* run", mtls=False)
    assert plain.caller_named("alice") == Caller("alice", frozenset({"run"}))
    assert plain.caller_named("cert:y") is None


@pytest.mark.parametrize(
    "common_name", ["al ice", "cert:alice", "a/b", "CN=x,O=y", "*", "", "é", "a" * 129]
)
def test_a_cn_outside_the_name_pattern_is_refused(common_name):
    auth = _auth("cert:* run")
    with pytest.raises(Unauthenticated, match="subject CN"):
        auth.authenticate(None, common_name)


@pytest.mark.parametrize(
    "text, message",
    [
        ("cert:a/b run", "a certificate's CN must be 1 to 128"),
        ("cert:x:y run", "a certificate's CN must be 1 to 128"),
        ("cert:*=alice run", "maps one CN"),
        ("cert:x=a:b run", "maps one CN"),
        ("cert:x= run", "maps one CN"),
        ("cert:x=alice run\ncert:x run", "listed twice"),
    ],
)
def test_certificate_entries_follow_the_name_pattern(text, message):
    with pytest.raises(AuthConfigError, match=message):
        parse_identities(text, "tokens file t")
