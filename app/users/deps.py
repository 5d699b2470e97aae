"""Who is asking: the current user from the session cookie (a server-side login session) or an API key, as
request dependencies for the routes (CurrentUser for APIs, PageUser for pages, AdminUser)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.core.deps import SessionDep, bearer_token, end_reads
from app.core.errors import NotFound, Unauthorized
from app.core.i18n import _
from app.db.models import User
from app.users import service as users
from app.users.service import live_login_session


def login_session_id(request: Request) -> uuid.UUID | None:
    """The server-side login session the cookie names (None for API keys and anonymous requests)."""
    if bearer_token(request) is not None:
        return None
    try:
        return uuid.UUID(str(request.session.get("sid", "")))
    except ValueError:
        return None


def optional_user(request: Request, session: SessionDep) -> User | None:
    """Who is asking; the lookup's transaction ends here, so a body read after it (app/core/forms.py) never
    arrives while a transaction is open."""
    user = _who(request, session)
    end_reads(session)
    return user


def _who(request: Request, session: Session) -> User | None:
    token = bearer_token(request)
    if token is not None:
        user = users.user_for_api_key(session, token)
        if user is None:
            raise Unauthorized(_("The API key is invalid or revoked."))
        request.state.auth = "key"
        return user
    raw = request.session.get("sid")
    if not raw:
        return None
    try:
        user = live_login_session(session, uuid.UUID(str(raw)))
    except ValueError:
        user = None
    if user is None:  # logged out, signed out everywhere, expired, or a deactivated account
        request.session.clear()
        return None
    request.state.auth = "session"
    return user


@dataclass(frozen=True)
class UserView:
    """What pages show of the logged-in user; survives the request's session closing (error pages)."""

    id: uuid.UUID
    email: str
    is_admin: bool


def _remember(request: Request, user: User) -> None:
    request.state.user = UserView(id=user.id, email=user.email, is_admin=user.is_admin)


class LoginRequired(Exception):
    """Raised for pages (not APIs) when nobody is logged in; the app redirects to the login page."""


def current_user(request: Request, user: Annotated[User | None, Depends(optional_user)]) -> User:
    if user is None:
        raise Unauthorized(_("Log in or send an API key as 'Authorization: Bearer <key>'."))
    _remember(request, user)
    return user


def page_user(request: Request, user: Annotated[User | None, Depends(optional_user)]) -> User:
    if user is None:
        raise LoginRequired()
    _remember(request, user)
    return user


def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    if not user.is_admin:
        raise NotFound(_("Not found."))
    return user


CurrentUser = Annotated[User, Depends(current_user)]
PageUser = Annotated[User, Depends(page_user)]
AdminUser = Annotated[User, Depends(admin_user)]
