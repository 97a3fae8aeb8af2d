"""The agent's shared token: generated once, kept in a 0600 file or in the environment.

Never on the command line: argv is world-readable in ``/proc/PID/cmdline`` and lands in shell
histories. The agent reads the token from ``--token-file`` or ``HSLAB_AGENT_TOKEN``; if neither
gives one it generates 32 random bytes (64 hex digits) and writes them to the token file with
mode 0600, for the user to copy to the client machine.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from handshake_lab.errors import HandshakeLabError, NetworkError

TOKEN_ENV = "HSLAB_AGENT_TOKEN"
TOKEN_BYTES = 32
MIN_TOKEN_CHARS = 32
MAX_TOKEN_CHARS = 128


class TokenError(HandshakeLabError):
    """No usable token (missing, unreadable, too open a file, too short)."""

    exit_status = NetworkError.exit_status


def default_token_file() -> Path:
    """``$XDG_CONFIG_HOME/handshake-lab/agent.token`` (``~/.config/...`` by default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "handshake-lab" / "agent.token"


def generate_token() -> str:
    """32 random bytes as 64 hex digits."""
    return secrets.token_hex(TOKEN_BYTES)


def check_token(token: str, where: str) -> str:
    token = token.strip()
    if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS or not token.isprintable():
        raise TokenError(
            f"the token from {where} must be {MIN_TOKEN_CHARS}..{MAX_TOKEN_CHARS} printable "
            "characters (generate one with 'handshake-lab agent')"
        )
    if any(c.isspace() for c in token):
        raise TokenError(f"the token from {where} contains whitespace")
    return token


def write_token_file(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` with mode 0600 (created so, never widened in between)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise TokenError(f"cannot write token file {path}: {exc.strerror or exc}") from exc
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (token + "\n").encode("ascii"))
    finally:
        os.close(fd)


def read_token_file(path: Path) -> str:
    """The token in ``path``; refused if group or others may read it (like ssh keys)."""
    try:
        info = path.stat()
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise TokenError(f"token file {path} is readable by others: run 'chmod 600 {path}'")
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise TokenError(f"token file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise TokenError(f"cannot read token file {path}: {reason}") from exc
    return check_token(raw, str(path))


def load_token(path: Path | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The token from ``path`` if given, else from ``HSLAB_AGENT_TOKEN``, else None."""
    env = os.environ if environ is None else environ
    if path is not None:
        return read_token_file(path)
    value = env.get(TOKEN_ENV)
    if value:
        return check_token(value, TOKEN_ENV)
    return None


def agent_token(path: Path | None, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The agent's token and where it came from; generated into a file if there is none.

    Order: ``path`` if it exists; ``HSLAB_AGENT_TOKEN`` (when no ``path`` is given); the
    default token file if it exists; else a new token written to ``path`` or the default file.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get(TOKEN_ENV):
        return check_token(env[TOKEN_ENV], TOKEN_ENV), TOKEN_ENV
    target = path or default_token_file()
    if target.exists():
        return read_token_file(target), f"token file {target}"
    token = generate_token()
    write_token_file(target, token)
    return token, f"new token written to {target} (mode 0600); copy it to the client machine"


__all__ = [
    "TOKEN_ENV",
    "TokenError",
    "agent_token",
    "check_token",
    "default_token_file",
    "generate_token",
    "load_token",
    "read_token_file",
    "write_token_file",
]
