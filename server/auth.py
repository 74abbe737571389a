"""Who is calling, what they may do, and the server's access policy.

The core asks :func:`current_caller` for the identity of the call it serves;
the transport layer (:mod:`server.interceptors`) sets it with
:func:`caller_scope` after :meth:`Authenticator.authenticate` named the caller.
With no credentials configured every call is :data:`ANONYMOUS`, which may do
everything (unless the policy takes pickled work away).

Permissions:
    ``run``: call named functions, read own jobs and results, read cluster info.
    ``code``: also submit pickled callables and Dask graphs, and upload objects.
    ``admin``: see and cancel every caller's jobs.

Any permission implies ``run``; ``code`` is never implied, so that running
arbitrary Python is always granted on purpose (an ``admin`` token without
``code`` cannot send code), and so that ``--no-pickled-work`` can take it from
everyone by removing it.

Tokens file format (also the value of ``DASK_COMPUTE_TOKENS``), one entry per
line, ``#`` starts a comment, fields separated by whitespace::

    # name          permissions   secret
    alice           run,code      Zq3vY0r1Wq5Xb6Zt9fP2cQ
    ci-bot          run           sha256:3f0a...e1 (hex SHA-256 of the token)
    cert:worker-7   run,code      (no secret: a client certificate whose CN is worker-7)
    cert:*          run           (no secret: any certificate the client CA signed)
    cert:ci-7=ci-bot run          (no secret: the certificate with CN ci-7 is the caller ci-bot)

A certificate with CN ``worker-7`` is the caller ``cert:worker-7``, a name no
token can have (names have no ``:``), unless ``cert:<CN>=<name>`` maps it to
a plain name on purpose. CNs follow the name pattern, or are refused.

This module never imports ``grpc``: the core imports it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import hmac
import logging
import os
import pathlib
import re
import stat
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from server.errors import Unauthenticated
from server.network import is_loopback

if TYPE_CHECKING:
    from server.config import Settings

logger = logging.getLogger(__name__)

PERMISSIONS = ("run", "code", "admin")

#: Shortest plaintext token accepted in a tokens file.
MIN_TOKEN_LENGTH = 16
#: Prefix of a tokens-file entry that names a client certificate, not a token.
CERT_PREFIX = "cert:"

# RFC 6750's b64token: what may follow "Bearer ".
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_NAME_CHARS = re.compile(r"[A-Za-z0-9._@+\-]{1,128}")
_NAME_RULE = "1 to 128 of A-Z a-z 0-9 . _ @ + -"
_SHA256 = re.compile(r"sha256:([0-9a-fA-F]{64})")
_BEARER = re.compile(r"Bearer +(\S+) *", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Caller:
    """An authenticated caller.

    Attributes:
        name: Who it is (a token's name, ``cert:<CN>``, or the name a
            ``cert:<CN>=<name>`` entry maps a CN to). Jobs belong to it.
        permissions: A subset of :data:`PERMISSIONS`.
    """

    name: str
    permissions: frozenset[str]

    def can(self, permission: str) -> bool:
        """Whether the caller holds ``permission``; any permission implies ``run``."""
        if permission == "run":
            return bool(self.permissions)
        return permission in self.permissions

    @property
    def is_admin(self) -> bool:
        """Whether the caller sees every caller's jobs."""
        return "admin" in self.permissions

    def without(self, permissions: Iterable[str]) -> Caller:
        """The same caller with ``permissions`` taken away (``run`` stays)."""
        removed = frozenset(permissions)
        if not removed & self.permissions:
            return self
        kept = self.permissions - removed
        return Caller(self.name, kept | ({"run"} if self.permissions else set()))


#: The caller when no credentials are configured.
ANONYMOUS = Caller("anonymous", frozenset(PERMISSIONS))

_current: contextvars.ContextVar[Caller] = contextvars.ContextVar("dask_caller", default=ANONYMOUS)


def current_caller() -> Caller:
    """The caller of the call being served."""
    return _current.get()


def set_caller(caller: Caller) -> None:
    """Make ``caller`` the current caller for the rest of the running task.

    For handlers that yield (streams), where a :func:`caller_scope` would be
    reset wherever the generator is closed. Each gRPC call has its own task.
    """
    _current.set(caller)


@contextlib.contextmanager
def caller_scope(caller: Caller) -> Iterator[Caller]:
    """Make ``caller`` the current caller inside the block."""
    token = _current.set(caller)
    try:
        yield caller
    finally:
        _current.reset(token)


# -- the tokens file -----------------------------------------------------------


class AuthConfigError(RuntimeError):
    """The credentials or the access policy cannot be used; the message (never a token) says why."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclasses.dataclass(frozen=True)
class Identities:
    """The callers a tokens file defines.

    Attributes:
        tokens: ``(SHA-256 of the token, caller)`` pairs; only digests are kept.
        certs: Callers by client certificate subject CN; ``"*"`` is any
            certificate the client CA signed (the caller ``cert:<its CN>``).
    """

    tokens: tuple[tuple[bytes, Caller], ...] = ()
    certs: Mapping[str, Caller] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tokens) + len(self.certs)

    def by_token(self, token: str) -> Caller | None:
        """The caller of ``token``, compared in constant time.

        Every entry is compared (no early exit, no dict lookup keyed by a
        secret), so the time taken does not tell how much of a guess matched.
        """
        presented = _digest(token)
        found: Caller | None = None
        for digest, caller in self.tokens:
            if hmac.compare_digest(digest, presented):
                found = caller
        return found

    def by_certificate(self, common_name: str) -> Caller | None:
        """The caller of a verified client certificate with CN ``common_name``, if admitted."""
        if not _NAME_CHARS.fullmatch(common_name):  # "*" included
            return None
        caller, anyone = self.certs.get(common_name), self.certs.get("*")
        if caller is None and anyone is not None:
            caller = Caller(CERT_PREFIX + common_name, anyone.permissions)
        return caller

    def named(self, name: str) -> Caller | None:
        """The caller ``name`` now: its tokens and mapped certificates, or ``cert:<CN>``'s."""
        callers = [c for _, c in self.tokens] + [c for cn, c in self.certs.items() if cn != "*"]
        permissions = [c.permissions for c in callers if c.name == name]
        if permissions:
            return Caller(name, frozenset().union(*permissions))
        caller = self.by_certificate(name.removeprefix(CERT_PREFIX))
        return caller if caller is not None and caller.name == name else None

    def without(self, permissions: Iterable[str]) -> Identities:
        """Every caller with ``permissions`` taken away."""
        removed = frozenset(permissions)
        return Identities(
            tokens=tuple((d, c.without(removed)) for d, c in self.tokens),
            certs={cn: c.without(removed) for cn, c in self.certs.items()},
        )

    def describe(self) -> str:
        """``tokens(3)``, ``tokens(3)+certs(1)`` or ``certs(1)``: counts, never secrets."""
        counts = (("tokens", len(self.tokens)), ("certs", len(self.certs)))
        parts = [f"{kind}({n})" for kind, n in counts if n]
        return "+".join(parts) or "none"


def _entries(text: str) -> Iterator[tuple[int, list[str]]]:
    # Newlines separate entries; so does ";" (handy in a one-line environment
    # variable), which no token can contain.
    for number, line in enumerate(re.split(r"[\n;]", text), start=1):
        fields = line.split("#", 1)[0].split()
        if fields:
            yield number, fields


def _permissions(raw: str, where: str) -> frozenset[str]:
    wanted = frozenset(p.strip() for p in raw.split(",") if p.strip())
    unknown = sorted(wanted - set(PERMISSIONS))
    if unknown or not wanted:
        raise AuthConfigError(
            f"{where}: permissions must be a comma-separated subset of {','.join(PERMISSIONS)}, "
            f"got {raw!r}"
        )
    return wanted


def parse_identities(text: str, source: str) -> Identities:
    """Parse a tokens file (see the module docstring for the format).

    Args:
        text: The file's content.
        source: Where it came from, for messages ("tokens file /etc/x").

    Raises:
        AuthConfigError: A malformed entry; the message names the line and
            the entry's name, never its token.
    """
    tokens: list[tuple[bytes, Caller]] = []
    certs: dict[str, Caller] = {}
    for number, fields in _entries(text):
        where = f"{source}, entry {number}"
        name = fields[0]
        if name.startswith(CERT_PREFIX):
            common_name, mapped, caller_name = name[len(CERT_PREFIX) :].partition("=")
            if len(fields) != 2 or not common_name:
                raise AuthConfigError(
                    f"{where}: a certificate entry reads 'cert:<subject CN>[=<name>] "
                    "<permissions>' (no token: the certificate is the credential)"
                )
            if common_name != "*" and not _NAME_CHARS.fullmatch(common_name):
                raise AuthConfigError(f"{where}: a certificate's CN must be {_NAME_RULE} or '*'")
            if mapped and (common_name == "*" or not _NAME_CHARS.fullmatch(caller_name)):
                raise AuthConfigError(f"{where}: 'cert:<CN>=<name>' maps one CN to {_NAME_RULE}")
            if common_name in certs:
                raise AuthConfigError(f"{where}: cert:{common_name} is listed twice")
            caller_name = caller_name if mapped else CERT_PREFIX + common_name
            certs[common_name] = Caller(caller_name, _permissions(fields[1], where))
            continue
        if not _NAME_CHARS.fullmatch(name):
            raise AuthConfigError(
                # Not quoted: a token put in the name's place would end up in a log.
                f"{where}: the name must be 1 to 128 of A-Z a-z 0-9 . _ @ + - (entries read "
                "'<name> <permissions> <token>')"
            )
        if len(fields) != 3:
            raise AuthConfigError(
                f"{where}: the entry of {name!r} must read '<name> <permissions> <token>'"
            )
        secret = fields[2]
        hashed = _SHA256.fullmatch(secret)
        if hashed:
            digest = bytes.fromhex(hashed.group(1))
        elif not _TOKEN_CHARS.fullmatch(secret):
            raise AuthConfigError(
                f"{where}: the token of {name!r} has characters a bearer token cannot carry "
                "(use A-Z a-z 0-9 - . _ ~ + /, e.g. from `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`)"
            )
        elif len(secret) < MIN_TOKEN_LENGTH:
            raise AuthConfigError(
                f"{where}: the token of {name!r} is shorter than {MIN_TOKEN_LENGTH} characters"
            )
        else:
            digest = _digest(secret)
        for other_digest, other in tokens:
            if hmac.compare_digest(other_digest, digest):
                raise AuthConfigError(
                    f"{where}: the token of {name!r} is already the token of {other.name!r}"
                )
        tokens.append((digest, Caller(name, _permissions(fields[1], where))))
    if not tokens and not certs:
        raise AuthConfigError(f"{source} has no entries; every call would be refused")
    return Identities(tuple(tokens), certs)


def read_tokens_file(path: str) -> Identities:
    """Read and parse a tokens file.

    Raises:
        AuthConfigError: It cannot be read, or :func:`parse_identities` refuses it.
    """
    source = f"tokens file {path}"
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
        mode = os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthConfigError(f"cannot read {source}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("%s is open to other users (mode %o); chmod 600 it", source, mode & 0o777)
    return parse_identities(text, source)


# -- the policy ------------------------------------------------------------------


def _no_auth_message(host: str) -> str:
    return (
        f"refusing to listen on {host} without authentication: anyone who can reach the port "
        "could run code here; configure tokens (--tokens-file or DASK_COMPUTE_TOKENS), "
        "listen on loopback (--host 127.0.0.1), or pass --insecure-no-auth-on-network"
    )


class Authenticator:
    """Turns a call's credentials into a :class:`Caller`, under the server's policy.

    Build it with :meth:`from_settings`. The identities can be swapped while
    the server runs (:meth:`reload`, on SIGHUP); running jobs are unaffected.

    Args:
        identities: The tokens and certificate identities, or ``None`` when no
            credentials are configured (every call is the anonymous caller).
        anonymous: The caller of every call when ``identities`` is ``None``.
        removed: Permissions taken from every caller (``code`` with
            ``--no-pickled-work``).
        tokens_file: Where :meth:`reload` reads from ("" when the tokens came
            from the environment).
        mtls: Whether client certificates are verified (their CN may stand in
            for a token).
    """

    def __init__(
        self,
        identities: Identities | None,
        *,
        anonymous: Caller = ANONYMOUS,
        removed: frozenset[str] = frozenset(),
        tokens_file: str = "",
        mtls: bool = False,
    ) -> None:
        self.removed = removed
        self.anonymous = anonymous.without(removed)
        self.tokens_file = tokens_file
        self.mtls = mtls
        self._identities = None if identities is None else identities.without(removed)

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        """Load the credentials and apply the safe defaults.

        Raises:
            AuthConfigError: Unreadable or malformed tokens, mTLS without
                certificate identities, or a non-loopback address without
                authentication (unless ``insecure_no_auth_on_network``).
        """
        s = settings
        if s.tokens_file:
            identities: Identities | None = read_tokens_file(s.tokens_file)
        elif s.tokens:
            identities = parse_identities(s.tokens, "DASK_COMPUTE_TOKENS")
        else:
            identities = None
        mtls = bool(s.tls_client_ca)
        if mtls and identities is None:
            raise AuthConfigError(
                "--tls-client-ca needs identities for the certificates: a tokens file (or "
                "DASK_COMPUTE_TOKENS) with 'cert:<subject CN> <permissions>' or 'cert:* "
                "<permissions>' entries"
            )
        if identities is not None and identities.certs and not mtls:
            logger.warning("cert: entries have no effect without --tls-client-ca (mutual TLS)")
        removed = set() if s.pickled_work else {"code"}
        if identities is None and not is_loopback(s.host):
            if not s.insecure_no_auth_on_network:
                raise AuthConfigError(_no_auth_message(s.host))
            if not s.allow_pickled_work_without_auth:
                removed.add("code")
            logger.warning(
                "INSECURE: listening on %s with no authentication (--insecure-no-auth-on-network)",
                s.host,
            )
        return cls(identities, removed=frozenset(removed), tokens_file=s.tokens_file, mtls=mtls)

    @property
    def identities(self) -> Identities | None:
        """The identities in force, or ``None`` when no credentials are configured."""
        return self._identities

    @property
    def required(self) -> bool:
        """Whether calls need credentials."""
        return self._identities is not None

    def describe(self) -> str:
        """The ``auth=`` part of the policy line."""
        return "none" if self._identities is None else self._identities.describe()

    def pickled_work(self) -> str:
        """The ``pickled-work=`` part of the policy line."""
        if "code" in self.removed:
            return "off"
        return "code-permission" if self.required else "anyone"

    def reload(self) -> str:
        """Re-read the tokens file and put it in force.

        Returns:
            The new :meth:`describe` text.

        Raises:
            AuthConfigError: Nothing to reload, or the file is unreadable or
                malformed; the identities in force stay.
        """
        if not self.tokens_file:
            raise AuthConfigError(
                "no tokens file to reload (tokens come from DASK_COMPUTE_TOKENS, or none are "
                "configured); restart the server to change them"
            )
        self._identities = read_tokens_file(self.tokens_file).without(self.removed)
        return self.describe()

    def caller_named(self, name: str) -> Caller | None:
        """The caller called ``name`` as the credentials in force define it now.

        For a job accepted earlier and run again (after a restart, or adopted
        from another replica): it runs with its owner's current permissions,
        or not at all if the owner is no longer known (``None``). Certificate
        callers count only under mutual TLS; see :meth:`Identities.named`.
        """
        identities = self._identities
        if identities is None:
            return self.anonymous if name == self.anonymous.name else None
        return (identities if self.mtls else Identities(identities.tokens)).named(name)

    def authenticate(self, authorization: str | None, common_name: str | None = None) -> Caller:
        """The caller of a call.

        Args:
            authorization: The call's ``authorization`` metadata, if any.
            common_name: The subject CN of the verified client certificate,
                if the connection has one (mutual TLS).

        Raises:
            Unauthenticated: Credentials are required and missing or invalid;
                the message says what to send.
        """
        identities = self._identities
        if identities is None:
            return self.anonymous
        if authorization is not None:
            match = _BEARER.fullmatch(authorization)
            if match is None:
                raise Unauthenticated(
                    "the authorization metadata must read 'Bearer <token>'",
                    reason="MALFORMED_AUTHORIZATION",
                )
            caller = identities.by_token(match.group(1))
            if caller is None:
                raise Unauthenticated(
                    "the bearer token is not valid (unknown, revoked or mistyped); "
                    "ask the server's operator for a current one",
                    reason="INVALID_TOKEN",
                )
            return caller
        if common_name is not None and self.mtls:
            caller = identities.by_certificate(common_name)
            if caller is not None:
                return caller
            if not _NAME_CHARS.fullmatch(common_name):
                raise Unauthenticated(
                    f"the client certificate's subject CN is not {_NAME_RULE}",
                    reason="INVALID_CERTIFICATE_NAME",
                )
            raise Unauthenticated(
                f"the client certificate's subject CN {common_name[:64]!r} has no "
                f"'cert:{common_name[:64]}' entry in the server's tokens file, and the call "
                "carries no bearer token",
                reason="UNKNOWN_CERTIFICATE",
            )
        raise Unauthenticated(
            "this server needs a credential: send the metadata 'authorization: Bearer <token>' "
            "(ComputeClient(token=...), or --token / DASK_COMPUTE_TOKEN on the command line)"
        )
