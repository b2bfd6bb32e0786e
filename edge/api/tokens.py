"""API tokens: a file of SHA-256 hashes of random tokens, each with a role (viewer or operator).

One token per line, ``name:role:sha256$<hex>``, comments with ``#``; the same roles as the
OPC UA users file (:mod:`edge.security.users`). Tokens are 32 random bytes (``secrets.token_urlsafe``),
so a plain SHA-256 is enough (no password stretching is needed for high-entropy secrets) and
each request is checked in microseconds. Only hashes are stored; :func:`add_token` returns the
token once (``edge provision token CONFIG NAME --role R`` prints it; ``--list``, ``--revoke``).
The file is rewritten atomically with mode 0600.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from edge.security.users import NAME_RE, Role, write_secret_file


class TokensFileError(ValueError):
    """The tokens file or an entry is malformed (the message says where and what is allowed)."""


@dataclass(frozen=True, slots=True)
class TokenEntry:
    name: str
    role: Role
    digest: str  # hex SHA-256 of the token


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load_tokens(path: Path) -> dict[str, TokenEntry]:
    """name -> entry; raises :class:`TokensFileError` naming the line that is wrong."""
    out: dict[str, TokenEntry] = {}
    for lineno, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        where = f"{path}:{lineno}"
        if len(parts) != 3:
            raise TokensFileError(f"{where}: expected 'name:role:sha256$hex', got {len(parts)} fields")
        name, role, hashed = parts
        if not NAME_RE.match(name):
            raise TokensFileError(f"{where}: token name {name!r} must be 1-64 of letters, digits, '_', '.', '@', '-'")
        try:
            r = Role(role)
        except ValueError:
            raise TokensFileError(f"{where}: role {role!r} is not one of viewer, operator") from None
        scheme, _, digest = hashed.partition("$")
        if scheme != "sha256" or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise TokensFileError(f"{where}: the hash of {name!r} must be 'sha256$' and 64 lower-case hex digits")
        out[name] = TokenEntry(name, r, digest)
    return out


class TokenTable:
    """Looks a presented token up by its digest (constant-time compare against every entry)."""

    def __init__(self, entries: dict[str, TokenEntry]):
        self.entries = list(entries.values())

    def find(self, token: str) -> TokenEntry | None:
        digest = token_digest(token)
        found = None
        for e in self.entries:
            if hmac.compare_digest(e.digest, digest):
                found = e
        return found


def list_tokens(path: Path) -> list[TokenEntry]:
    """The tokens of a file (names and roles; the tokens themselves are not stored)."""
    path = Path(path)
    return list(load_tokens(path).values()) if path.exists() else []


def revoke_token(path: Path, name: str) -> bool:
    """Remove token ``name``; False if there was none. A running appliance stops accepting it at its
    next reload (SIGHUP / ``edge reload``)."""
    path = Path(path)
    entries = load_tokens(path) if path.exists() else {}
    if entries.pop(name, None) is None:
        return False
    _write(path, entries)
    return True


def _write(path: Path, entries: dict[str, TokenEntry]) -> None:
    text = "# edge API tokens: name:role:sha256 of the token (edit with 'edge provision token')\n"
    text += "".join(f"{e.name}:{e.role.value}:sha256${e.digest}\n" for e in entries.values())
    write_secret_file(path, text)


def add_token(path: Path, name: str, role: str) -> str:
    """Create (or replace) token ``name`` with ``role``; returns the new token, stored only as a hash."""
    if not NAME_RE.match(name):
        raise TokensFileError(f"token name {name!r} must be 1-64 of letters, digits, '_', '.', '@', '-'")
    try:
        r = Role(role)
    except ValueError:
        raise TokensFileError(f"role {role!r} is not one of viewer, operator") from None
    path = Path(path)
    entries = load_tokens(path) if path.exists() else {}
    token = secrets.token_urlsafe(32)
    entries[name] = TokenEntry(name, r, token_digest(token))
    _write(path, entries)
    return token


def main(argv: list[str] | None = None) -> int:
    """``python -m edge.api.tokens FILE NAME ROLE``: add a token and print it once (``edge provision token``
    does the same from the site's configuration, and lists and revokes tokens)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m edge.api.tokens", description=main.__doc__)
    parser.add_argument("file", type=Path, help="tokens file (api.tokens_file)")
    parser.add_argument("name", help="who or what uses the token")
    parser.add_argument("role", choices=[r.value for r in Role])
    args = parser.parse_args(argv)
    try:
        token = add_token(args.file, args.name, args.role)
    except TokensFileError as exc:
        print(f"error: {exc}")
        return 2
    print(token)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
