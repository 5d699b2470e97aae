from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.db.models import Role


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    role: Role
    locale: str | None
    is_active: bool
    created_at: datetime


class UserCreate(BaseModel):
    email: str = Field(min_length=3, max_length=320, description="Login e-mail address.")
    password: str = Field(min_length=10, max_length=1000, description="At least 10 characters.")
    role: Role = Field(default=Role.member, description="admin or member.")


class ApiKeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreate(BaseModel):
    name: str = Field(default="default", min_length=1, max_length=100, description="What the key is for.")


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The secret key. It is shown only this once; store it now.")


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=1000, description="Your password now.")
    new_password: str = Field(min_length=10, max_length=1000, description="At least 10 characters.")


class SessionsEnded(BaseModel):
    ended: int = Field(description="Login sessions that ended (their cookies no longer work).")
