"""Accounts, sessions, CSRF and API keys, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import csrf_of, login, make_admin

pytestmark = pytest.mark.postgres_too  # SQL dialects, locking and the schema: both databases


def test_first_visit_asks_for_the_admin_and_there_is_no_default_login(client: Any) -> None:
    first = client.get("/", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/setup"
    assert client.get("/login", follow_redirects=False).headers["location"] == "/setup"
    make_admin(client)
    me = client.get("/api/v1/me").json()
    assert me["email"] == "admin@example.com" and me["role"] == "admin"
    # setup is closed once an account exists
    assert client.get("/setup", follow_redirects=False).headers["location"] == "/login"


def test_session_cookie_is_httponly_and_samesite(client: Any) -> None:
    response = client.get("/setup")
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie


def test_login_and_wrong_password(client: Any) -> None:
    make_admin(client)
    client.post("/logout", data={"csrf_token": csrf_of(client, "/models")})
    assert client.get("/api/v1/me").status_code == 401
    token = csrf_of(client, "/login")
    bad = client.post("/login", data={"email": "admin@example.com", "password": "wrong-password", "csrf_token": token})
    assert bad.status_code == 401 and "Wrong e-mail address or password" in bad.text
    assert client.get("/api/v1/me").status_code == 401
    login(client, "admin@example.com", "correct-horse-1")
    assert client.get("/api/v1/me").status_code == 200


def test_state_changes_without_csrf_token_are_refused(client: Any) -> None:
    make_admin(client)
    no_token = client.post("/settings/keys", data={"name": "x"})
    assert no_token.status_code == 403
    wrong = client.post("/settings/keys", data={"name": "x", "csrf_token": "forged"})
    assert wrong.status_code == 403
    api = client.post("/api/v1/keys", json={"name": "x"})
    assert api.status_code == 403 and api.json()["error"]["code"] == "csrf"
    token = csrf_of(client, "/settings/keys")
    cross = client.post(
        "/api/v1/keys", json={"name": "x"}, headers={"X-CSRF-Token": token, "Origin": "http://evil.example"}
    )
    assert cross.status_code == 403
    null_origin = client.post("/settings/keys", data={"name": "x", "csrf_token": token}, headers={"Origin": "null"})
    assert null_origin.status_code == 403
    assert client.get("/api/v1/keys").json() == []  # nothing was created by the refused requests
    ok = client.post("/api/v1/keys", json={"name": "ok"}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 201


def test_api_key_shown_once_works_and_revoked_key_fails(client: Any) -> None:
    make_admin(client)
    token = csrf_of(client, "/settings/keys")
    page = client.post("/settings/keys", data={"name": "ci", "csrf_token": token})
    secret = page.text.split('id="new-key">', 1)[1].split("<", 1)[0]
    assert secret.startswith("rfy_")
    listing = client.get("/settings/keys")
    assert secret not in listing.text  # only the prefix is shown again
    bare = client.__class__(client.app)
    assert bare.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).json()["email"] == "admin@example.com"
    # API-key requests carry no ambient credential, so no CSRF token is needed
    created = bare.post("/api/v1/keys", json={"name": "second"}, headers={"Authorization": f"Bearer {secret}"})
    assert created.status_code == 201
    key_id = next(k["id"] for k in client.get("/api/v1/keys").json() if k["name"] == "ci")
    revoked = client.post(f"/settings/keys/{key_id}/revoke", data={"csrf_token": token})
    assert revoked.status_code == 200
    refused = bare.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert bare.get("/api/v1/me", headers={"Authorization": "Bearer rfy_made-up"}).status_code == 401


def test_admin_creates_users_and_members_cannot(client: Any) -> None:
    make_admin(client)
    token = csrf_of(client, "/settings/users")
    made = client.post(
        "/settings/users",
        data={
            "email": "bob@example.com",
            "password": "bob-password-1",
            "role": "member",
            "csrf_token": token,
        },
    )
    assert made.status_code == 200 and "bob@example.com" in made.text
    short = client.post(
        "/api/v1/users",
        json={"email": "eve@example.com", "password": "short"},
        headers={"X-CSRF-Token": token},
    )
    assert short.status_code == 422
    client.post("/logout", data={"csrf_token": token})
    login(client, "bob@example.com", "bob-password-1")
    token = csrf_of(client, "/models")
    assert client.get("/settings/users").status_code == 404
    assert client.get("/api/v1/users").status_code == 404
    denied = client.post(
        "/api/v1/users",
        json={"email": "eve@example.com", "password": "eve-password-1"},
        headers={"X-CSRF-Token": token},
    )
    assert denied.status_code == 404
    assert "Users" not in client.get("/models").text.split("<main", 1)[0]


def test_another_users_objects_answer_404(client: Any, tiny_model_dir: Any) -> None:
    make_admin(client)
    admin_token = csrf_of(client, "/settings/keys")
    admin_key = client.post("/api/v1/keys", json={"name": "mine"}, headers={"X-CSRF-Token": admin_token}).json()
    model = client.post(
        "/api/v1/models/local",
        json={"name": "tiny", "path": str(tiny_model_dir)},
        headers={"X-CSRF-Token": admin_token},
    )
    assert model.status_code == 202, model.text
    model_id, run_id = model.json()["id"], model.json()["import_run"]["id"]
    client.post(
        "/api/v1/users",
        json={"email": "bob@example.com", "password": "bob-password-1"},
        headers={"X-CSRF-Token": admin_token},
    )
    client.post("/logout", data={"csrf_token": admin_token})
    login(client, "bob@example.com", "bob-password-1")
    token = csrf_of(client, "/models")
    assert client.get(f"/api/v1/models/{model_id}").status_code == 404
    assert client.get(f"/models/{model_id}").status_code == 404
    assert client.get(f"/api/v1/runs/{run_id}").status_code == 404
    assert client.get(f"/api/v1/runs/{run_id}/events").status_code == 404
    assert client.post(f"/api/v1/runs/{run_id}/cancel", headers={"X-CSRF-Token": token}).status_code == 404
    assert client.post(f"/api/v1/models/{model_id}/retry", headers={"X-CSRF-Token": token}).status_code == 404
    assert client.delete(f"/api/v1/keys/{admin_key['id']}", headers={"X-CSRF-Token": token}).status_code == 404
    assert client.post(f"/settings/keys/{admin_key['id']}/revoke", data={"csrf_token": token}).status_code == 404
    assert all(m["id"] != model_id for m in client.get("/api/v1/models").json())
    # nothing changed for the owner
    client.post("/logout", data={"csrf_token": token})
    login(client, "admin@example.com", "correct-horse-1")
    keys = client.get("/api/v1/keys").json()
    assert [k["revoked_at"] for k in keys if k["id"] == admin_key["id"]] == [None]
    assert client.get(f"/api/v1/runs/{run_id}").json()["status"] == "queued"


def test_language_follows_accept_language_then_the_users_choice(client: Any) -> None:
    page = client.get("/setup", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
    assert "创建管理员" in page.text
    make_admin(client)
    token = csrf_of(client, "/models")
    client.post("/locale", data={"locale": "zh_Hans", "csrf_token": token})
    assert "基础模型" in client.get("/models", headers={"Accept-Language": "en"}).text
    assert client.get("/api/v1/me").json()["locale"] == "zh_Hans"


def test_the_api_key_help_shows_the_header_with_its_placeholder_in_both_languages(client: Any) -> None:
    make_admin(client)
    english = client.get("/settings/keys", headers={"Accept-Language": "en"}).text
    assert "Authorization: Bearer &lt;key&gt;" in english  # escaped text, not a vanished tag
    token = csrf_of(client, "/models")
    client.post("/locale", data={"locale": "zh_Hans", "csrf_token": token})
    chinese = client.get("/settings/keys").text
    assert "Authorization: Bearer &lt;key&gt;" in chinese and "<key>" not in chinese
