"""JSON API: the current user, API keys, users (admins)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Request

from app.core.deps import SessionDep, csrf_protect
from app.users import service
from app.users.deps import AdminUser, CurrentUser, login_session_id
from app.users.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    PasswordChange,
    SessionsEnded,
    UserCreate,
    UserRead,
)

router = APIRouter(prefix="/api/v1", tags=["users"], dependencies=[Depends(csrf_protect)])


@router.get("/me", response_model=UserRead, summary="The authenticated user")
def me(user: CurrentUser) -> UserRead:
    return UserRead.model_validate(user)


@router.get("/keys", response_model=list[ApiKeyRead], summary="Your API keys")
def list_keys(session: SessionDep, user: CurrentUser) -> list[ApiKeyRead]:
    return [ApiKeyRead.model_validate(k) for k in service.list_api_keys(session, user=user)]


@router.post("/keys", response_model=ApiKeyCreated, status_code=201, summary="Create an API key (shown once)")
def create_key(body: ApiKeyCreate, session: SessionDep, user: CurrentUser) -> ApiKeyCreated:
    key, secret = service.create_api_key(session, user=user, name=body.name)
    return ApiKeyCreated.model_validate({**ApiKeyRead.model_validate(key).model_dump(), "key": secret})


@router.delete("/keys/{key_id}", response_model=ApiKeyRead, summary="Revoke an API key")
def revoke_key(key_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> ApiKeyRead:
    return ApiKeyRead.model_validate(service.revoke_api_key(session, user=user, key_id=key_id))


@router.get("/users", response_model=list[UserRead], summary="All users (administrators)")
def list_users(session: SessionDep, admin: AdminUser) -> list[UserRead]:
    return [UserRead.model_validate(u) for u in service.list_users(session, actor=admin)]


@router.post("/users", response_model=UserRead, status_code=201, summary="Create a user (administrators)")
def create_user(body: UserCreate, session: SessionDep, admin: AdminUser) -> UserRead:
    user = service.create_user_as(session, actor=admin, email=body.email, password=body.password, role=body.role)
    return UserRead.model_validate(user)


@router.post("/me/password", response_model=SessionsEnded, summary="Change your password (ends your login sessions)")
def change_password(request: Request, body: PasswordChange, session: SessionDep, user: CurrentUser) -> SessionsEnded:
    """Every other login session of yours ends (the one sending this, if any, stays)."""
    ended = service.change_password(
        session,
        user=user,
        current=body.current_password,
        new=body.new_password,
        keep_session=login_session_id(request),
    )
    return SessionsEnded(ended=ended)


@router.delete("/users/{user_id}/sessions", response_model=SessionsEnded, summary="Sign a user out everywhere")
def sign_out_everywhere(user_id: uuid.UUID, session: SessionDep, user: CurrentUser) -> SessionsEnded:
    """Administrators for anyone, members for themselves: every login session of the user ends."""
    return SessionsEnded(ended=service.sign_out_everywhere(session, actor=user, user_id=user_id))
