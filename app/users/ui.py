"""Pages: first-run admin creation, login/logout, language, API keys, users (admins)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.core import i18n
from app.core.deps import PageUser, SessionDep, csrf_protect, optional_user
from app.core.errors import Forbidden, RefineryError
from app.core.security import new_csrf_token
from app.core.templating import render
from app.db.models import Role, User
from app.users import service

router = APIRouter(dependencies=[Depends(csrf_protect)], include_in_schema=False)


def _start_session(request: Request, user: User) -> None:
    # A fresh session on login defeats session fixation; keep the chosen language.
    locale = request.session.get("locale")
    request.session.clear()
    request.session.update({"user_id": str(user.id), "csrf": new_csrf_token()})
    if user.locale or locale:
        request.session["locale"] = user.locale or locale


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
    _start_session(request, user)
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
    request: Request, session: SessionDep, email: Annotated[str, Form()], password: Annotated[str, Form()]
) -> Response:
    try:
        user = service.authenticate(session, email=email, password=password)
    except RefineryError as exc:
        return render(request, "login.html", {"error": exc.message, "email": email}, status_code=401)
    _start_session(request, user)
    return RedirectResponse("/models", status_code=303)


@router.post("/logout")
def logout(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


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
