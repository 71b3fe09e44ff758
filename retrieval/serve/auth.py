"""Bearer-token authentication of ``braid serve`` (RFC 6750 ``Authorization: Bearer TOKEN``).

Off unless a token is configured. When it is, every endpoint requires it (``/health``, ``/info``
and the OpenAPI pages included; only the search page's own static files, ``/`` and ``/static/*``,
load without it, and the page then asks for the token): a request without an ``Authorization: Bearer`` header gets 401
(with ``WWW-Authenticate``), one with a different token gets 403. Tokens are compared as SHA-256
digests with :func:`hmac.compare_digest`, so the comparison takes the same time whatever the
presented token is.

Scopes. Each endpoint needs one scope: ``read`` (search, health, info, docs) or ``write``
(``POST /documents``, ``DELETE /documents``). ``write_token`` grants ``write`` (and ``read``);
``token`` is read-only. Writes are off unless a write token is configured: then a write request
without a bearer token gets 401, one with another token (the read token included) 403.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from braid.data.errors import OptionError

SCOPES = ("read", "write")
MIN_TOKEN_CHARS = 16
# RFC 6750's b64token: the characters a bearer token may hold in an Authorization header.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
TOKEN_HINT = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def _digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode("utf-8") if isinstance(token, str) else token).digest()


@dataclass(frozen=True, repr=False)
class AuthConfig:
    """Who may call the service. ``token``: the bearer token every endpoint requires (None: no
    authentication). The repr never shows a token."""

    token: str | None = None
    write_token: str | None = None

    def __post_init__(self) -> None:
        if self.token is not None:
            check_token(self.token, "token")
        if self.write_token is not None:
            check_token(self.write_token, "write_token")
            if self.write_token == self.token:
                raise OptionError("write_token", "(hidden)", "a token other than the read token")

    def __repr__(self) -> str:
        return f"AuthConfig(token={'set' if self.token else None}, write_token={'set' if self.write_token else None})"

    @property
    def enabled(self) -> bool:
        return self.token is not None or self.write_token is not None

    @property
    def writes(self) -> bool:
        """Whether write endpoints are on (a write token is configured)."""
        return self.write_token is not None

    def accepted(self, scope: str) -> tuple[bytes, ...]:
        """Digests of the tokens that grant ``scope``; empty when no token is needed."""
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; known: {', '.join(SCOPES)}")
        if scope == "write":
            return (_digest(self.write_token),) if self.write_token is not None else ()
        if self.token is None:
            return ()
        return (_digest(self.token),) + ((_digest(self.write_token),) if self.write_token is not None else ())

    def check(self, scope: str, authorization: bytes | None) -> tuple[int, str, str] | None:
        """None when a request with this ``Authorization`` header value may use ``scope``, else
        ``(status, code, detail)``: 401 without a bearer token, 403 with a wrong one (and 403 for
        any write when writes are off)."""
        scheme, _, presented = (authorization or b"").strip().partition(b" ")
        presented = presented.strip()
        bare = scheme.lower() != b"bearer" or not presented
        if scope == "write" and self.write_token is None:
            if bare and self.token is not None:  # a server behind a token: 401 first, as for every endpoint
                return 401, "unauthorized", "this server requires a bearer token: send 'Authorization: Bearer TOKEN'"
            return 403, "writes_disabled", "this server takes no writes: start braid serve with --write-token (or BRAID_WRITE_TOKEN)"
        accepted = self.accepted(scope)
        if not accepted:
            return None
        if bare:
            return 401, "unauthorized", "this server requires a bearer token: send 'Authorization: Bearer TOKEN'"
        digest = _digest(presented)
        ok = False
        for want in accepted:  # every digest is compared, so the time does not say which matched
            ok |= hmac.compare_digest(digest, want)
        if not ok:
            return 403, "forbidden", "the bearer token is not valid for this server"
        return None


def check_token(token: str, name: str = "token") -> str:
    """``token`` if it can be a bearer token (RFC 6750 characters, at least 16 of them), else OptionError."""
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise OptionError(name, "(hidden)", "letters, digits and - . _ ~ + / (then = padding) only, no spaces; " + TOKEN_HINT)
    if len(token) < MIN_TOKEN_CHARS:
        raise OptionError(name, f"({len(token)} characters)", f"at least {MIN_TOKEN_CHARS} characters; " + TOKEN_HINT)
    return token


def load_auth(token: str | None = None, token_file: str | Path | None = None, write_token: str | None = None) -> AuthConfig:
    """The AuthConfig of ``token`` or of the first line of ``token_file`` (not both); neither: none.
    ``write_token``: the token of the write endpoints (None: writes off)."""
    if write_token is not None:
        base = load_auth(token, token_file)
        return AuthConfig(token=base.token, write_token=check_token(write_token.strip(), "--write-token"))
    if token is not None and token_file is not None:
        raise OptionError("--token/--token-file", "both given", "one of them (BRAID_TOKEN counts as --token)")
    if token_file is not None:
        path = Path(token_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise OptionError("--token-file", str(path), f"a readable UTF-8 file holding the token ({type(exc).__name__})") from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) != 1:
            raise OptionError("--token-file", str(path), f"one line holding the token (it has {len(lines)} non-empty lines)")
        return AuthConfig(token=check_token(lines[0], "--token-file"))
    if token is not None:
        return AuthConfig(token=check_token(token.strip(), "--token"))
    return AuthConfig()
