"""OAuth 2.0 for buyers' programs: client credentials, RFC 9068 JWT access tokens, revocation, metadata."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from joserfc import jwt
from litestar.testing import TestClient
from sqlalchemy import Engine

from marketplace.core.keys import load_signing_key
from marketplace.core.principal import OrgKind, Role
from marketplace.core.settings import Settings
from tests.factories import MadeClient, make_api_client, make_login_session, make_org, make_user
from tests.helpers import assert_problem, use_session


def _token(client: TestClient, made: MadeClient, *, method: str = "basic", secret: str | None = None, **form: str) -> Any:
    data = {"grant_type": "client_credentials", **form}
    secret = made.secret if secret is None else secret
    if method == "basic":
        return client.post("/oauth/token", data=data, auth=(made.client_id, secret))
    return client.post("/oauth/token", data={**data, "client_id": made.client_id, "client_secret": secret})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("method", ["basic", "post"])
def test_token_issued_for_both_client_auth_methods(client: TestClient, engine: Engine, settings: Settings, method: str) -> None:
    org = make_org(engine, OrgKind.buyer)
    made = make_api_client(engine, org)
    response = _token(client, made, method=method)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.access_token_ttl_seconds
    header = jwt.decode(body["access_token"], load_signing_key(settings).key, algorithms=["ES256"]).header
    claims = jwt.decode(body["access_token"], load_signing_key(settings).key, algorithms=["ES256"]).claims
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "ES256"
    assert header["kid"] == load_signing_key(settings).kid
    assert claims["iss"] == settings.issuer
    assert claims["aud"] == settings.issuer
    assert claims["client_id"] == made.client_id
    assert claims["sub"] == made.client_id
    assert claims["exp"] - claims["iat"] == settings.access_token_ttl_seconds
    assert set(claims["scope"].split()) == set(made.record.scope.split())
    me = client.get("/api/me", headers=_bearer(body["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json()["kind"] == "client"
    assert me.json()["client_id"] == made.client_id
    assert me.json()["org"]["id"] == str(org.id)
    assert me.json()["user"] is None


def test_token_narrowed_to_requested_scope(client: TestClient, engine: Engine) -> None:
    made = make_api_client(engine, make_org(engine, OrgKind.buyer))
    response = _token(client, made, scope="profile")
    assert response.status_code == 200
    assert response.json()["scope"] == "profile"


def test_scope_beyond_the_client_is_refused(client: TestClient, engine: Engine) -> None:
    made = make_api_client(engine, make_org(engine, OrgKind.buyer), scopes=["data:read"])
    assert_problem(_token(client, made, scope="data:read data:export"), 400, "invalid_scope")
    assert_problem(_token(client, made, scope="admin"), 400, "invalid_scope")


def test_token_without_profile_scope_cannot_read_me(client: TestClient, engine: Engine) -> None:
    made = make_api_client(engine, make_org(engine, OrgKind.buyer), scopes=["data:read"])
    token = _token(client, made).json()["access_token"]
    assert_problem(client.get("/api/me", headers=_bearer(token)), 403, "insufficient_scope")


@pytest.mark.parametrize("method", ["basic", "post"])
def test_wrong_secret_is_refused(client: TestClient, engine: Engine, method: str) -> None:
    made = make_api_client(engine, make_org(engine, OrgKind.buyer))
    response = _token(client, made, method=method, secret=made.secret + "x")
    body = assert_problem(response, 401, "invalid_client")
    assert body["error"] == "invalid_client"
    assert "access_token" not in response.text


def test_unknown_client_and_revoked_client_are_refused(client: TestClient, engine: Engine) -> None:
    org = make_org(engine, OrgKind.buyer)
    revoked = make_api_client(engine, org, revoked=True)
    assert_problem(_token(client, revoked), 401, "invalid_client")
    ghost = MadeClient(record=make_api_client(engine, org).record.model_copy(update={"client_id": "mkc_nobody"}), secret="x")
    assert_problem(_token(client, ghost), 401, "invalid_client")


def test_other_grant_types_and_bad_requests_are_refused(client: TestClient, engine: Engine) -> None:
    made = make_api_client(engine, make_org(engine, OrgKind.buyer))
    assert_problem(
        client.post(
            "/oauth/token", data={"grant_type": "password", "username": "a", "password": "b"}, auth=(made.client_id, made.secret)
        ),
        400,
        "unsupported_grant_type",
    )
    assert_problem(
        client.post("/oauth/token", data={"scope": "profile"}, auth=(made.client_id, made.secret)), 400, "unsupported_grant_type"
    )
    assert_problem(client.post("/oauth/token", data={}, auth=(made.client_id, made.secret)), 400, "invalid_request")
    assert_problem(client.post("/oauth/token", json={"grant_type": "client_credentials"}), 400, "invalid_request")
    garbage = client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": "Basic %%%"})
    assert_problem(garbage, 401, "invalid_client")


def test_revoking_a_client_stops_its_live_tokens(client: TestClient, engine: Engine) -> None:
    org = make_org(engine, OrgKind.buyer)
    admin = make_user(engine, org, Role.admin)
    made = make_api_client(engine, org)
    token = _token(client, made).json()["access_token"]
    assert client.get("/api/me", headers=_bearer(token)).status_code == 200
    with TestClient(app=client.app, base_url=str(client.base_url)) as person:
        headers = use_session(person, make_login_session(engine, admin))
        assert person.post(f"/api/buyers/clients/{made.record.id}/revoke", headers=headers).status_code == 200
    assert_problem(client.get("/api/me", headers=_bearer(token)), 401, "invalid_token")
    assert_problem(_token(client, made), 401, "invalid_client")


def test_token_revocation_rfc7009(client: TestClient, engine: Engine) -> None:
    org = make_org(engine, OrgKind.buyer)
    made = make_api_client(engine, org)
    other = make_api_client(engine, make_org(engine, OrgKind.buyer))
    token = _token(client, made).json()["access_token"]
    second = _token(client, made).json()["access_token"]
    # Another client cannot revoke this client's token.
    refused = client.post("/oauth/revoke", data={"token": token}, auth=(other.client_id, other.secret))
    assert refused.status_code == 400
    assert client.get("/api/me", headers=_bearer(token)).status_code == 200
    # The owner of the token can; unknown tokens answer 200 too (RFC 7009 §2.2).
    assert (
        client.post(
            "/oauth/revoke", data={"token": token, "token_type_hint": "access_token"}, auth=(made.client_id, made.secret)
        ).status_code
        == 200
    )
    assert client.post("/oauth/revoke", data={"token": token}, auth=(made.client_id, made.secret)).status_code == 200
    assert client.post("/oauth/revoke", data={"token": "not-a-token"}, auth=(made.client_id, made.secret)).status_code == 200
    assert_problem(client.get("/api/me", headers=_bearer(token)), 401, "invalid_token")
    assert client.get("/api/me", headers=_bearer(second)).status_code == 200
    assert_problem(client.post("/oauth/revoke", data={"token": second}, auth=(made.client_id, "wrong")), 401, "invalid_client")
    assert client.get("/api/me", headers=_bearer(second)).status_code == 200


def _claims(settings: Settings, made: MadeClient, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": settings.issuer,
        "aud": settings.issuer,
        "exp": now + 600,
        "iat": now,
        "jti": f"forged-{now}",
        "client_id": made.client_id,
        "sub": made.client_id,
        "scope": "profile",
    }
    claims.update(overrides)
    return claims


def _forge(settings: Settings, made: MadeClient, *, header: dict[str, Any] | None = None, **claims: Any) -> str:
    key = load_signing_key(settings)
    payload = _claims(settings, made, **claims)
    return jwt.encode(header or {"alg": "ES256", "typ": "at+jwt", "kid": key.kid}, payload, key.key, algorithms=["ES256"])


def test_our_own_forged_baseline_is_accepted(client: TestClient, engine: Engine, settings: Settings) -> None:
    made = make_api_client(engine, make_org(engine, OrgKind.buyer))
    assert client.get("/api/me", headers=_bearer(_forge(settings, made))).status_code == 200


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, id="expired"),
        pytest.param({"aud": "https://elsewhere.example.cn"}, id="wrong-aud"),
        pytest.param({"iss": "https://impostor.example.cn"}, id="wrong-iss"),
        pytest.param({"client_id": "mkc_nobody", "sub": "mkc_nobody"}, id="unknown-client"),
    ],
)
def test_tokens_with_bad_claims_are_refused(
    client: TestClient, engine: Engine, settings: Settings, claims: dict[str, Any]
) -> None:
    made = make_api_client(engine, make_org(engine, OrgKind.buyer))
    response = client.get("/api/me", headers=_bearer(_forge(settings, made, **claims)))
    assert_problem(response, 401, "invalid_token")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_token_without_access_token_type_is_refused(client: TestClient, engine: Engine, settings: Settings) -> None:
    made = make_api_client(engine, make_org(engine, OrgKind.buyer))
    key = load_signing_key(settings)
    token = _forge(settings, made, header={"alg": "ES256", "typ": "JWT", "kid": key.kid})
    assert_problem(client.get("/api/me", headers=_bearer(token)), 401, "invalid_token")


def test_alg_none_token_is_refused(client: TestClient, engine: Engine, settings: Settings) -> None:
    made = make_api_client(engine, make_org(engine, OrgKind.buyer))
    claims = _claims(settings, made, jti="n1")
    unsigned = f"{_b64({'alg': 'none', 'typ': 'at+jwt'})}.{_b64(claims)}."
    assert_problem(client.get("/api/me", headers=_bearer(unsigned)), 401, "invalid_token")


def test_hs256_token_signed_with_the_public_key_is_refused(client: TestClient, engine: Engine, settings: Settings) -> None:
    made = make_api_client(engine, make_org(engine, OrgKind.buyer))
    public_jwk = client.get("/.well-known/jwks.json").json()["keys"][0]
    public_pem = load_signing_key(settings).key.as_pem(private=False)
    claims = _claims(settings, made, jti="h1")
    for secret in (public_pem, json.dumps(public_jwk).encode()):
        # Signed by hand: JOSE libraries rightly refuse to use a public key as an HMAC secret.
        signing_input = f"{_b64({'alg': 'HS256', 'typ': 'at+jwt'})}.{_b64(claims)}"
        signature = (
            base64.urlsafe_b64encode(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
        )
        token = f"{signing_input}.{signature}"
        assert_problem(client.get("/api/me", headers=_bearer(token)), 401, "invalid_token")


def test_tampered_token_is_refused(client: TestClient, engine: Engine) -> None:
    made = make_api_client(engine, make_org(engine, OrgKind.buyer))
    token = _token(client, made).json()["access_token"]
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "profile data:read data:export data:query admin"
    assert_problem(client.get("/api/me", headers=_bearer(f"{head}.{_b64(claims)}.{signature}")), 401, "invalid_token")
    assert_problem(client.get("/api/me", headers=_bearer("garbage")), 401, "invalid_token")


def test_programs_cannot_use_people_routes(client: TestClient, engine: Engine) -> None:
    made = make_api_client(engine, make_org(engine, OrgKind.buyer))
    token = _token(client, made).json()["access_token"]
    assert_problem(client.get("/api/buyers/clients", headers=_bearer(token)), 403, "token_not_accepted")
    assert_problem(client.post("/api/buyers/clients", json={"name": "x"}, headers=_bearer(token)), 403, "token_not_accepted")
    assert_problem(client.get("/api/users", headers=_bearer(token)), 403, "token_not_accepted")


def test_metadata_and_jwks(client: TestClient, settings: Settings) -> None:
    meta = client.get("/.well-known/oauth-authorization-server").json()
    assert meta["issuer"] == settings.issuer
    assert meta["token_endpoint"] == f"{settings.issuer}/oauth/token"
    assert meta["revocation_endpoint"] == f"{settings.issuer}/oauth/revoke"
    assert meta["jwks_uri"] == f"{settings.issuer}/.well-known/jwks.json"
    assert meta["grant_types_supported"] == ["client_credentials"]
    assert set(meta["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "client_secret_post"}
    keys = client.get("/.well-known/jwks.json").json()["keys"]
    assert len(keys) == 1
    assert keys[0]["kty"] == "EC"
    assert keys[0]["alg"] == "ES256"
    assert "d" not in keys[0], "the private part must never be published"


def test_buyer_creates_client_and_secret_is_shown_once(client: TestClient, engine: Engine) -> None:
    org = make_org(engine, OrgKind.buyer)
    headers = use_session(client, make_login_session(engine, make_user(engine, org, Role.member)))
    created = client.post("/api/buyers/clients", json={"name": "Risk model", "scope": ["profile", "data:read"]}, headers=headers)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["client_secret"].startswith("mks_")
    assert body["scope"] == "data:read profile"
    listed = client.get("/api/buyers/clients").json()
    assert listed["total"] == 1
    assert "client_secret" not in listed["items"][0]
    assert body["client_secret"] not in json.dumps(listed)
    made = MadeClient(
        record=make_api_client(engine, org).record.model_copy(update={"client_id": body["client_id"]}),
        secret=body["client_secret"],
    )
    assert _token(client, made).status_code == 200


@pytest.mark.parametrize(
    "payload",
    [{"name": ""}, {"name": "x", "scope": ["root"]}, {"name": "x", "scope": []}, {"name": "x" * 200}, {"name": "x", "extra": 1}],
)
def test_bad_client_requests_are_400_and_store_nothing(client: TestClient, engine: Engine, payload: dict[str, Any]) -> None:
    org = make_org(engine, OrgKind.buyer)
    headers = use_session(client, make_login_session(engine, make_user(engine, org)))
    assert_problem(client.post("/api/buyers/clients", json=payload, headers=headers), 400, "invalid_input")
    assert client.get("/api/buyers/clients").json()["total"] == 0


def test_programs_may_use_public_endpoints(client: TestClient, engine: Engine) -> None:
    made = make_api_client(engine, make_org(engine, OrgKind.buyer))
    headers = _bearer(_token(client, made).json()["access_token"])
    for path in ("/health", "/.well-known/jwks.json", "/.well-known/oauth-authorization-server", "/api/auth/csrf"):
        assert client.get(path, headers=headers).status_code == 200, path


def test_nul_in_client_id_is_an_oauth_error_not_a_crash(client: TestClient) -> None:
    response = client.post(
        "/oauth/token", data={"grant_type": "client_credentials", "client_id": "nul\x00probe", "client_secret": "x"}
    )
    assert_problem(response, 400, "invalid_client")  # RFC 6749 §5.2: 401 only when the client used the Authorization header
    basic = client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": "Basic AAAA"})
    assert_problem(basic, 401, "invalid_client")


def test_a_remembered_token_is_refused_once_it_expires(engine: Engine, settings: Settings) -> None:
    """The verifier remembers verified tokens (a program presents one many times a second) but still checks expiry."""
    from marketplace.core.errors import NotAuthenticated
    from marketplace.core.identity.oauth import TokenVerifier

    made = make_api_client(engine, make_org(engine, OrgKind.buyer))
    verifier = TokenVerifier(signing_key=load_signing_key(settings), issuer=settings.issuer, audience=settings.issuer)
    fresh = _forge(settings, made, jti="remembered-1")
    claims = verifier.verify(fresh)
    assert claims["jti"] == "remembered-1"
    claims["scope"] = "altered by the caller"
    assert verifier.verify(fresh)["scope"] == "profile"  # callers get a copy of what is remembered
    # A token verified while valid and presented again after its expiry (plus leeway): refused.
    past = int(time.time()) - TokenVerifier.LEEWAY_S - 60
    stale = _forge(settings, made, jti="remembered-2", exp=past, iat=past - 600)
    verifier._verified[stale] = {**_claims(settings, made, jti="remembered-2"), "exp": past}
    with pytest.raises(NotAuthenticated):
        verifier.verify(stale)
    assert stale not in verifier._verified
    with pytest.raises(NotAuthenticated):
        verifier.verify(fresh[:-4] + ("AAAA" if not fresh.endswith("AAAA") else "BBBB"))
