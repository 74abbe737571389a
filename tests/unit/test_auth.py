"""Callers, the tokens file, the access policy and TLS settings, without a server."""

from __future__ import annotations

import hashlib
import os

import pytest

from server import tls
from server.auth import (
    ANONYMOUS,
    AuthConfigError,
    Authenticator,
    Caller,
    Identities,
    caller_scope,
    current_caller,
    is_loopback,
    parse_identities,
)
from server.config import Settings, SettingsError
from server.errors import Unauthenticated
from tests.tools.certs import CertificateAuthority

ALICE_TOKEN = "alice-0123456789abcdef"
BOB_TOKEN = "bob-0123456789abcdef01"
ROOT_TOKEN = "root-0123456789abcdef0"

TOKENS = f"""
# name   permissions  secret
alice    run,code     {ALICE_TOKEN}
bob      run          {BOB_TOKEN}
root     admin        sha256:{hashlib.sha256(ROOT_TOKEN.encode()).hexdigest()}
cert:worker-7  run,code
"""


def _bearer(token: str) -> str:
    return f"Bearer {token}"


def test_any_permission_implies_run_but_code_is_never_implied():
    assert Caller("a", frozenset({"admin"})).can("run")
    assert not Caller("a", frozenset({"admin"})).can("code")
    assert Caller("a", frozenset({"code"})).can("run")
    assert not Caller("a", frozenset()).can("run")
    assert ANONYMOUS.can("code") and ANONYMOUS.is_admin


def test_taking_code_away_keeps_run():
    assert Caller("a", frozenset({"code"})).without({"code"}).permissions == {"run"}
    assert ANONYMOUS.without({"code"}).permissions == {"run", "admin"}
    assert Caller("a", frozenset()).without({"code"}).permissions == frozenset()


def test_caller_scope_sets_and_restores():
    assert current_caller() is ANONYMOUS
    with caller_scope(Caller("x", frozenset({"run"}))) as caller:
        assert current_caller() is caller
    assert current_caller() is ANONYMOUS


def test_tokens_file_parses_names_permissions_hashes_and_certificates():
    identities = parse_identities(TOKENS, "test")
    assert identities.describe() == "tokens(3)+certs(1)"
    assert identities.by_token(ALICE_TOKEN) == Caller("alice", frozenset({"run", "code"}))
    assert identities.by_token(ROOT_TOKEN).name == "root"  # given as its SHA-256
    assert identities.by_token("alice-0123456789abcdeX") is None
    assert identities.by_token("") is None
    assert identities.by_certificate("worker-7").permissions == {"run", "code"}
    assert identities.by_certificate("worker-8") is None


def test_one_line_form_and_a_wildcard_certificate():
    identities = parse_identities(f"alice run {ALICE_TOKEN}; cert:* run", "env")
    assert identities.by_certificate("anyone") == Caller("cert:anyone", frozenset({"run"}))


def test_the_file_keeps_only_digests():
    identities = parse_identities(TOKENS, "test")
    assert ALICE_TOKEN not in repr(identities)
    assert all(len(digest) == 32 for digest, _ in identities.tokens)


def test_a_name_may_have_two_tokens_while_rotating():
    identities = parse_identities(f"alice run {ALICE_TOKEN}\nalice run {BOB_TOKEN}", "test")
    assert identities.by_token(ALICE_TOKEN).name == identities.by_token(BOB_TOKEN).name == "alice"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "has no entries"),
        ("# only a comment\n", "has no entries"),
        (f"alice {ALICE_TOKEN}", "must read '<name> <permissions> <token>'"),
        (f"alice run,fly {ALICE_TOKEN}", "permissions must be a comma-separated subset"),
        (f"alice , {ALICE_TOKEN}", "permissions must be"),
        ("alice run short", "shorter than 16 characters"),
        ("alice run tokenwith\x7fcontrolchar", "characters a bearer token cannot carry"),
        ("al ice run x", "must read"),
        (f"al!ce run {ALICE_TOKEN}", "the name must be 1 to 128"),
        (f"{ALICE_TOKEN}~ run alice", "the name must be"),  # swapped: the token is not quoted
        (f"alice run {ALICE_TOKEN}\nbob run {ALICE_TOKEN}", "already the token of 'alice'"),
        (f"cert:x run {ALICE_TOKEN}", "no token: the certificate is the credential"),
        ("cert:x run\ncert:x code", "listed twice"),
        ("cert: run", "certificate entry reads"),
    ],
)
def test_malformed_entries_are_refused_without_echoing_tokens(text, message):
    with pytest.raises(AuthConfigError, match=message) as info:
        parse_identities(text, "tokens file t")
    assert ALICE_TOKEN not in str(info.value)
    assert "tokenwith" not in str(info.value) and "short" not in str(info.value).replace(
        "shorter", ""
    )


def test_authenticate_names_the_caller_or_says_what_to_send():
    auth = Authenticator(parse_identities(TOKENS, "test"), mtls=True)
    assert auth.authenticate(_bearer(ALICE_TOKEN)).name == "alice"
    assert auth.authenticate(f"bearer  {BOB_TOKEN}").name == "bob"  # the scheme is case-insensitive
    assert auth.authenticate(None, "worker-7").name == "cert:worker-7"
    # A token wins over the certificate; a wrong token is refused even with a good certificate.
    assert auth.authenticate(_bearer(BOB_TOKEN), "worker-7").name == "bob"
    with pytest.raises(Unauthenticated, match="not valid"):
        auth.authenticate(_bearer("x" * 20), "worker-7")
    with pytest.raises(
        Unauthenticated, match="needs a credential: send the metadata 'authorization: Bearer"
    ):
        auth.authenticate(None)
    with pytest.raises(Unauthenticated, match="must read 'Bearer <token>'"):
        auth.authenticate(f"Basic {ALICE_TOKEN}")
    with pytest.raises(Unauthenticated, match="no 'cert:worker-8' entry"):
        auth.authenticate(None, "worker-8")


def test_certificates_count_only_under_mutual_tls():
    auth = Authenticator(parse_identities(TOKENS, "test"), mtls=False)
    with pytest.raises(Unauthenticated, match="needs a credential"):
        auth.authenticate(None, "worker-7")


def test_without_credentials_every_call_is_anonymous():
    auth = Authenticator.from_settings(Settings())
    assert not auth.required
    assert auth.authenticate(None) is ANONYMOUS
    assert auth.authenticate("Bearer whatever") is ANONYMOUS
    assert (auth.describe(), auth.pickled_work()) == ("none", "anyone")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.com", ""])
def test_a_network_address_without_credentials_is_refused(host):
    with pytest.raises(
        AuthConfigError, match=f"refusing to listen on {host} without authentication"
    ):
        Authenticator.from_settings(Settings(host=host))


def test_the_loud_flag_allows_it_but_takes_pickled_work_away():
    auth = Authenticator.from_settings(Settings(host="0.0.0.0", insecure_no_auth_on_network=True))
    assert auth.authenticate(None).permissions == {"run", "admin"}
    assert auth.pickled_work() == "off"
    auth = Authenticator.from_settings(
        Settings(
            host="0.0.0.0", insecure_no_auth_on_network=True, allow_pickled_work_without_auth=True
        )
    )
    assert auth.authenticate(None).can("code") and auth.pickled_work() == "anyone"


def test_no_pickled_work_takes_code_from_everyone():
    auth = Authenticator.from_settings(Settings(tokens=TOKENS, pickled_work=False))
    assert auth.authenticate(_bearer(ALICE_TOKEN)).permissions == {"run"}
    root = auth.authenticate(_bearer(ROOT_TOKEN))
    assert root.is_admin and root.can("run") and not root.can("code")
    assert auth.pickled_work() == "off"
    anonymous = Authenticator.from_settings(Settings(pickled_work=False))
    assert not anonymous.authenticate(None).can("code")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.9.9", "::1", "localhost", "[::1]"])
def test_loopback_addresses(host):
    assert is_loopback(host)


def test_tokens_from_the_environment_allow_a_network_address():
    settings = Settings.from_env({"DASK_COMPUTE_HOST": "0.0.0.0", "DASK_COMPUTE_TOKENS": TOKENS})
    auth = Authenticator.from_settings(settings)
    assert auth.describe() == "tokens(3)+certs(1)" and auth.pickled_work() == "code-permission"
    assert ALICE_TOKEN not in repr(settings)
    with pytest.raises(AuthConfigError, match="no tokens file to reload"):
        auth.reload()


def test_reload_swaps_tokens_and_keeps_them_when_the_file_is_bad(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    path.chmod(0o600)
    auth = Authenticator.from_settings(Settings(tokens_file=str(path), pickled_work=False))
    assert auth.authenticate(_bearer(ALICE_TOKEN)).name == "alice"
    path.write_text(f"alice run,code {BOB_TOKEN}\n")
    assert auth.reload() == "tokens(1)"
    assert auth.authenticate(_bearer(BOB_TOKEN)).permissions == {"run"}, (
        "the policy survives a reload"
    )
    with pytest.raises(Unauthenticated):
        auth.authenticate(_bearer(ALICE_TOKEN))
    path.write_text("alice run short\n")
    with pytest.raises(AuthConfigError, match="shorter"):
        auth.reload()
    assert auth.authenticate(_bearer(BOB_TOKEN)).name == "alice", "a bad file leaves the old tokens"


def test_mutual_tls_needs_identities_for_its_certificates():
    with pytest.raises(AuthConfigError, match="needs identities for the certificates"):
        Authenticator.from_settings(Settings(tls_cert="c", tls_key="k", tls_client_ca="ca"))
    auth = Authenticator.from_settings(
        Settings(tls_cert="c", tls_key="k", tls_client_ca="ca", tokens="cert:* run")
    )
    assert auth.mtls and auth.authenticate(None, "anyone").name == "cert:anyone"


def test_unreadable_tokens_file_is_one_clear_error(tmp_path):
    with pytest.raises(AuthConfigError, match="cannot read tokens file .*missing"):
        Authenticator.from_settings(Settings(tokens_file=str(tmp_path / "missing")))


def test_a_world_readable_tokens_file_is_warned_about(tmp_path, caplog):
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    os.chmod(path, 0o644)
    Authenticator.from_settings(Settings(tokens_file=str(path)))
    assert "is open to other users (mode 644)" in caplog.text
    assert ALICE_TOKEN not in caplog.text


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"tls_cert": "c.pem"}, "tls_cert and tls_key go together"),
        ({"tls_key": "k.pem"}, "tls_cert and tls_key go together"),
        ({"tls_client_ca": "ca.pem"}, "needs tls_cert and tls_key"),
        ({"tokens_file": "t", "tokens": TOKENS}, "tokens in one place"),
    ],
)
def test_tls_and_token_settings_are_validated(fields, message):
    with pytest.raises(SettingsError, match=message):
        Settings(**fields)


def test_settings_read_the_security_variables():
    s = Settings.from_env(
        {
            "DASK_COMPUTE_TOKENS_FILE": "/etc/tokens",
            "DASK_COMPUTE_TLS_CERT": "c.pem",
            "DASK_COMPUTE_TLS_KEY": "k.pem",
            "DASK_COMPUTE_TLS_CLIENT_CA": "ca.pem",
            "DASK_COMPUTE_PICKLED_WORK": "false",
            "DASK_COMPUTE_INSECURE_NO_AUTH_ON_NETWORK": "true",
            "DASK_COMPUTE_ALLOW_PICKLED_WORK_WITHOUT_AUTH": "yes",
        }
    )
    assert (s.tokens_file, s.tls_cert, s.tls_key, s.tls_client_ca) == (
        "/etc/tokens",
        "c.pem",
        "k.pem",
        "ca.pem",
    )
    assert (s.pickled_work, s.insecure_no_auth_on_network, s.allow_pickled_work_without_auth) == (
        False,
        True,
        True,
    )
    assert tls.describe(s) == "mtls"


def test_tls_files_are_checked_at_start_up(tmp_path):
    ca = CertificateAuthority(tmp_path)
    server = ca.issue("localhost", server=True)
    other = ca.issue("other", server=True)
    good = Settings(tls_cert=str(server.cert_path), tls_key=str(server.key_path))
    assert tls.server_credentials(good) is not None and tls.describe(good) == "tls"
    assert tls.server_credentials(Settings()) is None
    mismatched = Settings(tls_cert=str(server.cert_path), tls_key=str(other.key_path))
    with pytest.raises(tls.TLSConfigError, match="are not a PEM certificate and its private key"):
        tls.server_credentials(mismatched)
    with pytest.raises(tls.TLSConfigError, match="cannot read --tls-cert"):
        tls.server_credentials(
            Settings(tls_cert=str(tmp_path / "nope"), tls_key=str(server.key_path))
        )
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(tls.TLSConfigError, match="is not a PEM CA certificate"):
        tls.server_credentials(
            Settings(
                tls_cert=str(server.cert_path),
                tls_key=str(server.key_path),
                tls_client_ca=str(junk),
            )
        )


def test_identities_without_removes_from_every_caller():
    identities = parse_identities(TOKENS, "test").without({"code"})
    assert not any(c.can("code") for _, c in identities.tokens)
    assert not identities.by_certificate("worker-7").can("code")
    assert isinstance(identities, Identities)
