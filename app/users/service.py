"""Accounts, passwords and API keys. Keyword-only functions; the caller commits."""

from __future__ import annotations

import logging
import re
import uuid
from datetime import timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from app.core.i18n import LOCALES, _
from app.core.security import dummy_password_hash, hash_api_key, hash_password, new_api_key, verify_password
from app.db.base import utcnow
from app.db.models import ApiKey, LoginSession, Role, User
from app.db.session import get_sessionmaker

log = logging.getLogger(__name__)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
MIN_PASSWORD = 10


def user_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(User)) or 0)


def create_user(session: Session, *, email: str, password: str, role: Role) -> User:
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise InvalidInput(_("Enter an e-mail address such as name@example.com."), field="email")
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(_("The password needs at least %(n)s characters.", n=MIN_PASSWORD), field="password")
    if session.scalar(select(User).where(User.email == email)) is not None:
        raise Conflict(_("A user with this e-mail address already exists."), field="email")
    user = User(email=email, password_hash=hash_password(password), role=role)
    session.add(user)
    session.flush()
    return user


def create_first_admin(session: Session, *, email: str, password: str) -> User:
    if user_count(session) > 0:
        raise Forbidden(_("The administrator account already exists; log in instead."))
    return create_user(session, email=email, password=password, role=Role.admin)


def create_user_as(session: Session, *, actor: User, email: str, password: str, role: Role) -> User:
    if not actor.is_admin:
        raise Forbidden(_("Only an administrator can create users."))
    return create_user(session, email=email, password=password, role=role)


def list_users(session: Session, *, actor: User) -> list[User]:
    if not actor.is_admin:
        raise Forbidden(_("Only an administrator can list users."))
    return list(session.scalars(select(User).order_by(User.created_at)))


def authenticate(*, email: str, password: str) -> uuid.UUID:
    """The id of the active user with this e-mail and password. The database is read in a short
    transaction of its own and released before the password is hashed (hashing waits for one of two
    slots); an unknown e-mail is hashed against a dummy, so both answers take the same time."""
    with get_sessionmaker()() as session:
        row = session.execute(
            select(User.id, User.password_hash, User.is_active).where(User.email == email.strip().lower()[:320])
        ).first()
        session.rollback()
    stored = row.password_hash if row is not None else dummy_password_hash()
    matches = verify_password(stored, password)
    if row is None or not row.is_active or not matches:
        raise Unauthorized(_("Wrong e-mail address or password."))
    return uuid.UUID(str(row.id))


def start_login_session(session: Session, *, user_id: uuid.UUID) -> LoginSession:
    """A new login session; the user's ended and expired ones are deleted, so the table does not grow."""
    expired = utcnow() - timedelta(seconds=get_settings().session_max_age_seconds)
    session.execute(
        delete(LoginSession).where(
            LoginSession.user_id == user_id,
            or_(LoginSession.ended_at.is_not(None), LoginSession.created_at < expired),
        )
    )
    record = LoginSession(user_id=user_id)
    session.add(record)
    session.flush()
    return record


def live_login_session(session: Session, session_id: uuid.UUID) -> User | None:
    """The user of a login session that has not ended or expired."""
    record = session.get(LoginSession, session_id)
    if record is None or record.ended_at is not None:
        return None
    if utcnow() - record.created_at > timedelta(seconds=get_settings().session_max_age_seconds):
        return None
    user = session.get(User, record.user_id)
    return user if user is not None and user.is_active else None


def end_login_session(session: Session, session_id: uuid.UUID) -> None:
    session.execute(
        update(LoginSession)
        .where(LoginSession.id == session_id, LoginSession.ended_at.is_(None))
        .values(ended_at=utcnow())
    )


def end_login_sessions(session: Session, *, user_id: uuid.UUID, keep: uuid.UUID | None = None) -> int:
    """End every login session of a user (but ``keep``): every copy of their cookies stops working."""
    stmt = update(LoginSession).where(LoginSession.user_id == user_id, LoginSession.ended_at.is_(None))
    if keep is not None:
        stmt = stmt.where(LoginSession.id != keep)
    return int(session.execute(stmt.values(ended_at=utcnow())).rowcount or 0)  # type: ignore[attr-defined]


def change_password(
    session: Session, *, user: User, current: str, new: str, keep_session: uuid.UUID | None = None
) -> int:
    """Check the current password, store the new one and end the user's other login sessions."""
    if not verify_password(user.password_hash, current):
        raise InvalidInput(_("The current password is wrong."), field="current_password")
    if len(new) < MIN_PASSWORD:
        raise InvalidInput(_("The password needs at least %(n)s characters.", n=MIN_PASSWORD), field="new_password")
    user.password_hash = hash_password(new)
    return end_login_sessions(session, user_id=user.id, keep=keep_session)


def sign_out_everywhere(session: Session, *, actor: User, user_id: uuid.UUID) -> int:
    """An administrator (or the user themself) ends all of a user's login sessions."""
    if not actor.is_admin and actor.id != user_id:
        raise NotFound(_("Not found."))
    if session.get(User, user_id) is None:
        raise NotFound(_("No such user."))
    return end_login_sessions(session, user_id=user_id)


def set_locale(session: Session, *, user: User, locale: str) -> None:
    if locale not in LOCALES:
        raise InvalidInput(_("Unknown language."), field="locale")
    user.locale = locale


def create_api_key(session: Session, *, user: User, name: str) -> tuple[ApiKey, str]:
    secret = new_api_key()
    key = ApiKey(user_id=user.id, name=name.strip() or "default", prefix=secret[:10], key_hash=hash_api_key(secret))
    session.add(key)
    session.flush()
    return key, secret


def list_api_keys(session: Session, *, user: User) -> list[ApiKey]:
    stmt = select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.created_at.desc())
    return list(session.scalars(stmt))


def revoke_api_key(session: Session, *, user: User, key_id: uuid.UUID) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None or key.user_id != user.id:
        raise NotFound(_("No such API key."))
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def user_for_api_key(session: Session, secret: str) -> User | None:
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(secret)))
    if key is None or key.revoked_at is not None:
        return None
    user = session.get(User, key.user_id)
    if user is None or not user.is_active:
        return None
    _note_key_use(key)
    return user


KEY_USE_PRECISION = timedelta(minutes=5)


def _note_key_use(key: ApiKey) -> None:
    """Record when a key was last used, to the nearest few minutes, in a transaction of its own.

    Written in the request's session, every API call would hold SQLite's one write lock from its
    authentication to its end (a whole upload, say) and callers would queue behind it until
    "database is locked". A lost update here costs nothing: it is a hint shown beside the key."""
    now = utcnow()
    if key.last_used_at is not None and now - key.last_used_at < KEY_USE_PRECISION:
        return
    try:
        with get_sessionmaker()() as own, own.begin():
            own.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
    except OperationalError as exc:
        log.warning("could not record the use of API key %s: %s", key.prefix, exc)
