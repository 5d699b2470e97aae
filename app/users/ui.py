"""Pages: first-run admin creation, login/logout, language, API keys, users (admins)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from app.core import i18n
from app.core.deps import SessionDep, csrf_protect
from app.core.errors import Forbidden, RefineryError
from app.core.security import HashingBusy, new_csrf_token
from app.core.templating import render
from app.db.models import Role, User
from app.db.session import session_scope
from app.users import service
from app.users.deps import PageUser, login_session_id, optional_user
from app.users.throttle import login_throttle

router = APIRouter(dependencies=[Depends(csrf_protect)], include_in_schema=False)


def _start_session(request: Request, session: Session, user: User) -> None:
    """A fresh cookie naming a new server-side login session (defeats session fixation; logout ends the
    record, so a copied cookie dies with it); the chosen language is kept."""
    locale = request.session.get("locale")
    record = service.start_login_session(session, user_id=user.id)
    request.session.clear()
    request.session.update({"sid": str(record.id), "csrf": new_csrf_token()})
    if user.locale or locale:
        request.session["locale"] = user.locale or locale


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.get("/")
def home(user: PageUser) -> Response:
    return RedirectResponse("/models", status_code=303)


@router.get("/setup")
def setup_page(request: Request, session: SessionDep) -> Response:
    if service.user_count(session) > 0:
        return RedirectResponse("/login", status_code=303)
    return render(request, "setup.html")


@router.post("/setup")
def setup_submit(
    request: Request,
    session: SessionDep,
    email: Annotated[str, Form()],
    password: Annotated[str, Form()],
    password_again: Annotated[str, Form()],
) -> Response:
    try:
        if password != password_again:
            raise RefineryError(i18n._("The two passwords differ."), field="password_again")
        user = service.create_first_admin(session, email=email, password=password)
    except Forbidden:
        return RedirectResponse("/login", status_code=303)
    except RefineryError as exc:
        return render(request, "setup.html", {"error": exc.message, "email": email}, status_code=exc.status_code)
    _start_session(request, session, user)
    return RedirectResponse("/models", status_code=303)


@router.get("/login")
def login_page(request: Request, session: SessionDep, user: Annotated[User | None, Depends(optional_user)]) -> Response:
    if service.user_count(session) == 0:
        return RedirectResponse("/setup", status_code=303)
    if user is not None:
        return RedirectResponse("/models", status_code=303)
    return render(request, "login.html")


@router.post("/login")
def login_submit(
    request: Request,
    email: Annotated[str, Form(max_length=1000)],
    password: Annotated[str, Form(max_length=1000)],
) -> Response:
    """No database connection is held while the password is hashed, and a throttled address or account is
    answered before any database or hashing work: a flood of wrong logins costs the server almost nothing."""
    throttle = login_throttle()
    address = _client_address(request)
    wait = throttle.retry_after(address=address, email=email)
    if wait:
        message = i18n._("Too many failed logins. Try again in %(n)s s.", n=wait)
        context = {"error": message, "email": email}
        return render(request, "login.html", context, status_code=429, headers={"Retry-After": str(wait)})
    try:
        user_id = service.authenticate(email=email, password=password)
    except HashingBusy:
        message = i18n._("The server is busy checking other logins. Try again in a few seconds.")
        context = {"error": message, "email": email}
        return render(request, "login.html", context, status_code=503, headers={"Retry-After": "2"})
    except RefineryError as exc:
        throttle.failed(address=address, email=email)
        return render(request, "login.html", {"error": exc.message, "email": email}, status_code=401)
    throttle.succeeded(email=email)
    with session_scope() as session:
        user = session.get(User, user_id)
        assert user is not None
        _start_session(request, session, user)
    return RedirectResponse("/models", status_code=303)


@router.post("/logout")
def logout(request: Request, session: SessionDep) -> Response:
    """Ends the server-side login session: every copy of this cookie stops working."""
    sid = login_session_id(request)
    if sid is not None:
        service.end_login_session(session, sid)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/settings/password")
def password_page(request: Request, user: PageUser) -> Response:
    return render(request, "settings/password.html")


@router.post("/settings/password")
def password_change(
    request: Request,
    session: SessionDep,
    user: PageUser,
    current_password: Annotated[str, Form(max_length=1000)],
    new_password: Annotated[str, Form(max_length=1000)],
    new_password_again: Annotated[str, Form(max_length=1000)],
) -> Response:
    try:
        if new_password != new_password_again:
            raise RefineryError(i18n._("The two passwords differ."), field="new_password_again")
        service.change_password(
            session, user=user, current=current_password, new=new_password, keep_session=login_session_id(request)
        )
    except HashingBusy:
        error = i18n._("The server is busy checking other logins. Try again in a few seconds.")
        return render(request, "settings/password.html", {"error": error}, status_code=503)
    except RefineryError as exc:
        return render(request, "settings/password.html", {"error": exc.message}, status_code=exc.status_code)
    return render(request, "settings/password.html", {"changed": True})


@router.post("/locale")
def choose_locale(
    request: Request,
    session: SessionDep,
    locale: Annotated[str, Form()],
    user: Annotated[User | None, Depends(optional_user)],
) -> Response:
    if locale not in i18n.LOCALES:
        locale = i18n.DEFAULT_LOCALE
    request.session["locale"] = locale
    if user is not None:
        service.set_locale(session, user=user, locale=locale)
    back = request.headers.get("referer", "/")
    target = back if back.startswith(str(request.base_url)) else "/"
    return RedirectResponse(target, status_code=303)


@router.get("/settings/keys")
def keys_page(request: Request, session: SessionDep, user: PageUser) -> Response:
    return render(request, "settings/keys.html", {"keys": service.list_api_keys(session, user=user)})


@router.post("/settings/keys")
def keys_create(request: Request, session: SessionDep, user: PageUser, name: Annotated[str, Form()] = "") -> Response:
    key, secret = service.create_api_key(session, user=user, name=name[:100])
    return render(
        request,
        "settings/keys.html",
        {"keys": service.list_api_keys(session, user=user), "new_key": secret, "new_key_name": key.name},
    )


@router.post("/settings/keys/{key_id}/revoke")
def keys_revoke(request: Request, session: SessionDep, user: PageUser, key_id: uuid.UUID) -> Response:
    service.revoke_api_key(session, user=user, key_id=key_id)
    return RedirectResponse("/settings/keys", status_code=303)


@router.get("/settings/users")
def users_page(request: Request, session: SessionDep, user: PageUser) -> Response:
    if not user.is_admin:
        return render(request, "error.html", {"message": i18n._("Not found."), "status": 404}, status_code=404)
    return render(request, "settings/users.html", {"users": service.list_users(session, actor=user)})


@router.post("/settings/users")
def users_create(
    request: Request,
    session: SessionDep,
    user: PageUser,
    email: Annotated[str, Form()],
    password: Annotated[str, Form()],
    role: Annotated[str, Form()] = "member",
) -> Response:
    if not user.is_admin:
        return render(request, "error.html", {"message": i18n._("Not found."), "status": 404}, status_code=404)
    context: dict[str, object] = {}
    try:
        created = service.create_user_as(
            session,
            actor=user,
            email=email,
            password=password,
            role=Role.admin if role == "admin" else Role.member,
        )
        context["created"] = created.email
    except RefineryError as exc:
        context.update(error=exc.message, email=email)
    context["users"] = service.list_users(session, actor=user)
    return render(request, "settings/users.html", context, status_code=200 if "created" in context else 422)


@router.post("/settings/users/{user_id}/sign-out")
def users_sign_out(request: Request, session: SessionDep, user: PageUser, user_id: uuid.UUID) -> Response:
    """An administrator ends every login session of a user (their cookies stop working everywhere)."""
    if not user.is_admin:
        return render(request, "error.html", {"message": i18n._("Not found."), "status": 404}, status_code=404)
    ended = service.sign_out_everywhere(session, actor=user, user_id=user_id)
    context: dict[str, object] = {"signed_out": ended, "users": service.list_users(session, actor=user)}
    return render(request, "settings/users.html", context)
