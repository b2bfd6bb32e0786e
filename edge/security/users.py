"""Users of the OPC UA server: a file of salted password hashes with roles viewer and operator.

One user per line, ``name:role:scrypt$n$r$p$salt$hash`` (salt and hash base64), comments
with ``#``. Passwords are never stored, only scrypt hashes with a random 16-byte salt
(``hashlib.scrypt``, standard library). ``edge provision user`` calls :func:`add_user`.
The file is rewritten atomically with mode 0600.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD_LEN = 8


class Role(StrEnum):
    """viewer: read, browse, subscribe, history; operator: the same and write."""

    VIEWER = "viewer"
    OPERATOR = "operator"

    @property
    def may_write(self) -> bool:
        return self is Role.OPERATOR


class UsersFileError(ValueError):
    """The users file or a user entry is malformed (the message says where and what is allowed)."""


@dataclass(frozen=True, slots=True)
class UserEntry:
    name: str
    role: Role
    hashed: str  # scrypt$n$r$p$salt$hash

    def check(self, password: str) -> bool:
        """True if ``password`` matches (constant-time compare)."""
        return verify_password(password, self.hashed)


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """A salted scrypt hash of ``password`` in the file's ``scrypt$n$r$p$salt$hash`` form."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=128 * n * r * p * 2, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """True if ``password`` matches ``hashed``; False for any malformed hash."""
    try:
        scheme, n_s, r_s, p_s, salt_b64, digest_b64 = hashed.split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt, digest = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=128 * n * r * p * 2, dklen=len(digest))
    return hmac.compare_digest(got, digest)


def load_users(path: Path) -> dict[str, UserEntry]:
    """Read a users file; raises :class:`UsersFileError` naming the line that is wrong."""
    users: dict[str, UserEntry] = {}
    for lineno, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3:
            raise UsersFileError(f"{path}:{lineno}: expected 'name:role:hash', got {len(parts)} fields")
        name, role, hashed = parts
        _check_name(name, f"{path}:{lineno}")
        users[name] = UserEntry(name, _role(role, f"{path}:{lineno}"), hashed)
        if not hashed.startswith("scrypt$"):
            raise UsersFileError(f"{path}:{lineno}: the password of {name!r} is not a scrypt hash")
    return users


def add_user(users_file: Path, name: str, role: str, password: str) -> UserEntry:
    """Add or replace user ``name`` with ``role`` (viewer or operator); stores only the hash."""
    _check_name(name, "user name")
    entry_role = _role(role, "role")
    if len(password) < MIN_PASSWORD_LEN:
        raise UsersFileError(f"password must have at least {MIN_PASSWORD_LEN} characters")
    users_file = Path(users_file)
    users = load_users(users_file) if users_file.exists() else {}
    entry = UserEntry(name, entry_role, hash_password(password))
    users[name] = entry
    _write(users_file, users)
    return entry


def remove_user(users_file: Path, name: str) -> bool:
    """Remove user ``name``; False if there was none."""
    users = load_users(users_file)
    if users.pop(name, None) is None:
        return False
    _write(Path(users_file), users)
    return True


def _write(path: Path, users: dict[str, UserEntry]) -> None:
    text = "# edge OPC UA users: name:role:scrypt hash (edit with 'edge provision user')\n"
    text += "".join(f"{u.name}:{u.role.value}:{u.hashed}\n" for u in users.values())
    write_secret_file(path, text)


def write_secret_file(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, readable by its owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_name(name: str, where: str) -> None:
    if not NAME_RE.match(name):
        raise UsersFileError(f"{where}: user name {name!r} must be 1-64 of letters, digits, '_', '.', '@', '-'")


def _role(role: str, where: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise UsersFileError(f"{where}: role {role!r} is not one of viewer, operator") from None
