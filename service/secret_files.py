"""Reading configured secrets so that a broken one stops the service instead of opening it.

A secret that is configured (a variable or a ``*_FILE`` setting) but empty, unreadable,
only comments or too short is an error with a one-line reason: the service refuses to
start rather than run with signature checks, API keys or the admin token silently off.
The local signing key (``default_signing_key_file``) is created by the commands that
publish (``train-demo``, ``publish``, ``signing-key init``) when no key is configured.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

MIN_SECRET_BYTES = 32


class SecretError(ValueError):
    """A configured secret is unusable; the message is the one line a user sees."""


def read_secret_file(path: Path, what: str) -> bytes:
    """The secret in ``path`` (first non-comment line, stripped); raises SecretError."""
    lines = _lines(path, what)
    if not lines:
        raise SecretError(f"{what} file {path} is empty (or holds only comments)")
    if len(lines) > 1:
        raise SecretError(f"{what} file {path} holds {len(lines)} lines; expected one secret")
    return lines[0].encode()


def read_lines_file(path: Path, what: str) -> list[str]:
    """The non-comment lines of ``path``; at least one, else SecretError."""
    lines = _lines(path, what)
    if not lines:
        raise SecretError(f"{what} file {path} is empty (or holds only comments)")
    return lines


def check_length(value: bytes, what: str) -> bytes:
    if len(value) < MIN_SECRET_BYTES:
        raise SecretError(
            f"{what} is {len(value)} bytes; at least {MIN_SECRET_BYTES} are required "
            "(make one with: predictor signing-key new)"
        )
    return value


def _lines(path: Path, what: str) -> list[str]:
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError:
        raise SecretError(f"{what} file {path} is not text") from None
    except OSError as exc:
        raise SecretError(f"{what} file {path} cannot be read: {exc.strerror or exc}") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def default_signing_key_file() -> Path:
    """Where the local signing key lives when none is configured: the user's config dir."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "predictor" / "signing.key"


def new_secret() -> str:
    """A fresh random secret: 32 random bytes, hex (64 characters)."""
    return secrets.token_hex(32)


def create_secret_file(path: Path) -> bool:
    """Write a new secret to ``path`` (mode 0600) unless it exists; True when created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(new_secret() + "\n")
    return True
