"""Issue 25's findings 1 and 5 in-process: a copied cookie dies with logout, a password change or an
administrator's "sign out everywhere"; wrong logins slow down their account and address with a clear
"try again in N s"; an unknown e-mail costs what a known one does. (The flood against a real web process is
tests/reliability/test_login_flood.py.)"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import csrf_of, login, make_admin


def _copy(client: Any) -> TestClient:
    """A second client holding a copy of the first one's session cookie (a stolen or shared cookie)."""
    other = TestClient(client.app)
    other.cookies.update(client.cookies)
    return other


@pytest.mark.postgres_too
def test_a_copied_cookie_stops_working_when_its_session_logs_out(client: Any) -> None:
    make_admin(client)
    thief = _copy(client)
    assert thief.get("/api/v1/me").status_code == 200
    client.post("/logout", data={"csrf_token": csrf_of(client, "/models")})
    assert thief.get("/api/v1/me").status_code == 401
    # nor can the copy create an API key with the token it had read before
    token = csrf_of(thief, "/login")
    created = thief.post("/api/v1/keys", json={"name": "stolen"}, headers={"X-CSRF-Token": token})
    assert created.status_code in (401, 403)
    login(client, "admin@example.com", "correct-horse-1")
    assert client.get("/api/v1/keys").json() == []
    from sqlalchemy import func, select

    from app.db.models import LoginSession
    from app.db.session import session_scope

    with session_scope() as db:  # a new login clears the ended sessions away
        assert db.scalar(select(func.count()).select_from(LoginSession)) == 1


@pytest.mark.postgres_too
def test_a_password_change_ends_the_other_sessions_and_an_admin_signs_a_user_out_everywhere(client: Any) -> None:
    make_admin(client)
    token = csrf_of(client, "/settings/users")
    made = client.post(
        "/api/v1/users",
        json={"email": "bob@example.com", "password": "bob-password-1"},
        headers={"X-CSRF-Token": token},
    )
    assert made.status_code == 201
    bob = TestClient(client.app)
    login(bob, "bob@example.com", "bob-password-1")
    bob_copy = _copy(bob)
    bob_laptop = TestClient(client.app)
    login(bob_laptop, "bob@example.com", "bob-password-1")

    page = bob.post(
        "/settings/password",
        data={
            "current_password": "bob-password-1",
            "new_password": "bob-password-2",
            "new_password_again": "bob-password-2",
            "csrf_token": csrf_of(bob, "/settings/password"),
        },
    )
    assert page.status_code == 200 and "Password changed" in page.text
    assert bob.get("/api/v1/me").status_code == 200  # the session that changed it stays
    assert bob_copy.get("/api/v1/me").status_code == 200  # a copy of that same cookie too (same session)
    assert bob_laptop.get("/api/v1/me").status_code == 401  # every other session ended
    wrong = bob.post(
        "/api/v1/me/password",
        json={"current_password": "not-it", "new_password": "whatever-123"},
        headers={"X-CSRF-Token": csrf_of(bob, "/settings/password")},
    )
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "current_password"

    users = client.get("/api/v1/users").json()
    bob_id = next(u["id"] for u in users if u["email"] == "bob@example.com")
    page = client.post(f"/settings/users/{bob_id}/sign-out", data={"csrf_token": token})
    assert page.status_code == 200 and "Ended 1 login session." in page.text
    assert bob.get("/api/v1/me").status_code == 401 and bob_copy.get("/api/v1/me").status_code == 401
    # a member cannot sign the administrator out
    login(bob, "bob@example.com", "bob-password-2")
    admin_id = next(u["id"] for u in users if u["email"] == "admin@example.com")
    refused = bob.delete(f"/api/v1/users/{admin_id}/sessions", headers={"X-CSRF-Token": csrf_of(bob, "/models")})
    assert refused.status_code == 404
    assert client.get("/api/v1/me").status_code == 200


def _try(client: Any, email: str, password: str) -> Any:
    return client.post("/login", data={"email": email, "password": password, "csrf_token": csrf_of(client)})


def test_wrong_passwords_slow_the_account_down_with_a_clear_wait(client: Any) -> None:
    make_admin(client)
    client.post("/logout", data={"csrf_token": csrf_of(client, "/models")})
    for _ in range(5):  # the free failures
        assert _try(client, "admin@example.com", "wrong-password").status_code == 401
    throttled = _try(client, "admin@example.com", "wrong-password")
    assert throttled.status_code == 401  # the sixth is checked, and starts a wait
    locked = _try(client, "Admin@Example.com", "correct-horse-1")  # even the right password waits
    assert locked.status_code == 429
    wait = int(locked.headers["Retry-After"])
    assert 1 <= wait <= 2 and f"Try again in {wait} s" in locked.text
    assert client.get("/api/v1/me").status_code == 401
    time.sleep(wait + 0.1)
    login(client, "admin@example.com", "correct-horse-1")  # after the wait, the right password works


def test_an_address_that_guesses_many_accounts_is_slowed_down(client: Any, configure: Any) -> None:
    make_admin(client)
    client.post("/logout", data={"csrf_token": csrf_of(client, "/models")})
    statuses = [_try(client, f"user{i}@example.com", "wrong-password").status_code for i in range(22)]
    assert statuses[:21] == [401] * 21 and statuses[21] == 429, statuses


@pytest.mark.serial  # compares timings
def test_an_unknown_email_takes_as_long_as_a_known_one(client: Any) -> None:
    make_admin(client)
    client.post("/logout", data={"csrf_token": csrf_of(client, "/models")})
    token = csrf_of(client)

    def timed(email: str) -> float:
        start = time.perf_counter()
        answer = client.post("/login", data={"email": email, "password": "wrong-password", "csrf_token": token})
        assert answer.status_code == 401
        return time.perf_counter() - start

    known = statistics.median(timed("admin@example.com") for _ in range(4))
    unknown = statistics.median(timed(f"nobody{i}@example.com") for i in range(4))
    # both verify an Argon2 hash (tens of milliseconds); before, an unknown e-mail answered in ~3 ms
    assert unknown > 0.4 * known, (known, unknown)
