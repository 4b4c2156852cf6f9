"""OAuth 2.0 for buyers' programs, on Authlib: client credentials grant, RFC 9068 JWT access tokens,
RFC 7009 revocation and RFC 8414 metadata. Framework-free: the web layer hands in method, URL,
headers and form, and gets back status, body and headers.
"""

from __future__ import annotations

import base64
import contextvars
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Request
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc import jwt
from joserfc.errors import JoseError
from sqlmodel.ext.asyncio.session import AsyncSession

from marketplace.core.errors import NotAuthenticated
from marketplace.core.identity import services
from marketplace.core.identity.models import ApiClient
from marketplace.core.identity.passwords import digest_matches
from marketplace.core.identity.schemas import CLIENT_SCOPES
from marketplace.core.keys import TOKEN_ALGORITHM, SigningKey

AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})

# The client looked up (asynchronously) before Authlib's synchronous flow asks for it, per request.
_current_client: contextvars.ContextVar[ApiClient | None] = contextvars.ContextVar("oauth_client", default=None)
_revoked: contextvars.ContextVar[list[_RevocableToken] | None] = contextvars.ContextVar("oauth_revoked", default=None)


class _Client(ClientMixin):
    def __init__(self, record: ApiClient) -> None:
        self.record = record

    def get_client_id(self) -> str:
        return self.record.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        allowed = self.record.scope.split()
        if not scope:
            return " ".join(allowed)
        return " ".join(s for s in scope.split() if s in allowed)

    def check_client_secret(self, client_secret: str) -> bool:
        return digest_matches(client_secret, self.record.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in AUTH_METHODS

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class _ClientCredentialsGrant(ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS


@dataclass
class _RevocableToken:
    jti: str
    client_id: str
    expires_at: datetime

    def check_client(self, client: _Client) -> bool:
        return client.get_client_id() == self.client_id


class _Request(OAuth2Request):
    """An OAuth2Request built from already-parsed parts (transport security is the deployment's job)."""

    def __init__(self, method: str, uri: str, headers: Mapping[str, str], form: dict[str, str]) -> None:
        self.method = method
        self.uri = uri
        self.headers = headers
        self._body = None
        self._form = form
        self.payload = BasicOAuth2Payload(form)
        self.client = None
        self.auth_method = None
        self.user = None
        self.authorization_code = None
        self.refresh_token = None
        self.credential = None
        self._scope = None

    @property
    def form(self) -> dict[str, str]:
        return self._form

    @property
    def args(self) -> dict[str, str]:
        return {}


@dataclass(frozen=True)
class TokenVerifier:
    """Checks access tokens presented to the platform: signature (algorithm pinned), type, iss, aud, exp."""

    signing_key: SigningKey
    issuer: str
    audience: str
    #: Tokens already verified, with their claims: a program presents the same token many times a second, and
    #: checking its ES256 signature costs more than the rest of a small call. Same bytes, same verdict; only the
    #: expiry needs checking again (revocation is the caller's check, on every call).
    _verified: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False, repr=False)

    LEEWAY_S = 30
    MAX_REMEMBERED = 10_000

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or :class:`NotAuthenticated` with code ``invalid_token``."""
        known = self._verified.get(token)
        if known is not None:
            if time.time() <= int(known["exp"]) + self.LEEWAY_S:
                return dict(known)
            del self._verified[token]
        claims = self._verify_signed(token)
        if len(self._verified) >= self.MAX_REMEMBERED:
            self._verified.clear()
        self._verified[token] = claims
        return dict(claims)

    def _verify_signed(self, token: str) -> dict[str, Any]:
        try:
            decoded = jwt.decode(token, self.signing_key.key, algorithms=[TOKEN_ALGORITHM])
            if decoded.header.get("typ", "").lower() not in ACCESS_TOKEN_TYPES:
                raise NotAuthenticated("Not an access token.", code="invalid_token")
            jwt.JWTClaimsRegistry(
                leeway=self.LEEWAY_S,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.audience},
                exp={"essential": True},
                iat={"essential": True},
                jti={"essential": True},
                client_id={"essential": True},
                sub={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise NotAuthenticated(f"The access token is not valid: {exc.__class__.__name__}.", code="invalid_token") from None
        return dict(decoded.claims)


class _Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = AUTH_METHODS
    SUPPORTED_TOKEN_TYPES = ("access_token",)

    def __init__(self, server: TokenServer) -> None:
        super().__init__(server=server)
        self._verifier = server.verifier

    def query_token(self, token_string: str, token_type_hint: str | None) -> _RevocableToken | None:
        try:
            claims = self._verifier.verify(token_string)
        except NotAuthenticated:
            return None  # RFC 7009 §2.2: an invalid token needs no revocation
        return _RevocableToken(
            jti=str(claims["jti"]), client_id=str(claims["client_id"]), expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC)
        )

    def revoke_token(self, token: _RevocableToken, request: Any) -> None:
        pending = _revoked.get()
        if pending is not None:
            pending.append(token)


class TokenServer(AuthorizationServer):
    """The authorization server of the platform (client credentials only)."""

    def __init__(self, *, signing_key: SigningKey, issuer: str, access_token_ttl: int) -> None:
        super().__init__(scopes_supported=list(CLIENT_SCOPES))
        self.issuer = issuer
        self.audience = issuer
        self.verifier = TokenVerifier(signing_key=signing_key, issuer=issuer, audience=self.audience)
        generator = JWTBearerTokenGenerator(issuer, alg=TOKEN_ALGORITHM, expires_generator=lambda _c, _g: access_token_ttl)
        generator.get_jwks = signing_key.private_jwks  # type: ignore[method-assign]
        generator.get_audiences = lambda _client, _user, _scope: self.audience  # type: ignore[method-assign]
        self.register_token_generator("default", generator)
        self.register_grant(_ClientCredentialsGrant)
        self.register_endpoint(_Revocation(self))

    def query_client(self, client_id: str) -> _Client | None:
        record = _current_client.get()
        if record is None or record.client_id != client_id or record.revoked_at is not None:
            return None
        return _Client(record)

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        """JWT access tokens are self-contained: nothing to store."""

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No signal listeners."""

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, Any]:
        return status, body, headers

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 authorization server metadata."""
        return {
            "issuer": self.issuer,
            "token_endpoint": f"{self.issuer}/oauth/token",
            "revocation_endpoint": f"{self.issuer}/oauth/revoke",
            "jwks_uri": f"{self.issuer}/.well-known/jwks.json",
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": [],
            "scopes_supported": list(CLIENT_SCOPES),
            "token_endpoint_auth_methods_supported": AUTH_METHODS,
            "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
            "token_endpoint_auth_signing_alg_values_supported": [TOKEN_ALGORITHM],
            "service_documentation": f"{self.issuer}/schema",
        }


def _client_id_of(headers: Mapping[str, str], form: Mapping[str, str]) -> str | None:
    client_id = _claimed_client_id(headers, form)
    return client_id if client_id and "\x00" not in client_id and len(client_id) <= 64 else None


def _claimed_client_id(headers: Mapping[str, str], form: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization") or ""
    if auth[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        return unquote(decoded.partition(":")[0]) or None
    return form.get("client_id") or None


async def _run(
    session: AsyncSession, server: TokenServer, endpoint: str, *, uri: str, headers: Mapping[str, str], form: dict[str, str]
) -> tuple[int, dict[str, Any], list[tuple[str, str]], ApiClient | None]:
    client_id = _client_id_of(headers, form)
    record = await services.find_client(session, client_id) if client_id else None
    token = _current_client.set(record)
    try:
        request = _Request("POST", uri, headers, form)
        if endpoint == "token":
            status, body, out_headers = server.create_token_response(request)
        else:
            status, body, out_headers = server.create_endpoint_response(endpoint, request)
    finally:
        _current_client.reset(token)
    payload = body if isinstance(body, dict) else json.loads(body or "{}")
    return status, payload, list(out_headers or []), record


async def issue_token(
    session: AsyncSession, server: TokenServer, *, uri: str, headers: Mapping[str, str], form: dict[str, str]
) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
    """Run the token endpoint; answers (status, JSON body, headers) exactly as RFC 6749 §5 says."""
    requested = set((form.get("scope") or "").split())
    status, body, headers_out, record = await _run(session, server, "token", uri=uri, headers=headers, form=form)
    if status == 200 and record is not None:
        if not requested <= set(record.scope.split()):
            return 400, {"error": "invalid_scope", "error_description": "The client may not ask for these scopes."}, headers_out
        await services.note_client_used(session, record)
    return status, body, headers_out


async def revoke_token(
    session: AsyncSession, server: TokenServer, *, uri: str, headers: Mapping[str, str], form: dict[str, str]
) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
    """Run the RFC 7009 revocation endpoint and persist what it revoked."""
    pending: list[_RevocableToken] = []
    marker = _revoked.set(pending)
    try:
        status, body, headers_out, _record = await _run(session, server, "revocation", uri=uri, headers=headers, form=form)
    finally:
        _revoked.reset(marker)
    for revoked in pending:
        await services.revoke_access_token(session, jti=revoked.jti, client_id=revoked.client_id, expires_at=revoked.expires_at)
    return status, body, headers_out
