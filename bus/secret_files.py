"""Password files of the service users: one file per user in a directory only its owner may read.

A file that exists is the password to set (so a deployment can make them beforehand, e.g.
as Docker secrets); a missing one is made here from ``secrets`` and written owner-only.  A
file or directory that others may change is refused: the password could be swapped.  A file
others may read is refused too, unless it is read-only for everyone (0444): that is how
Docker and Kubernetes present a mounted secret, inside a container that holds only its own
(docker/make-secrets writes them so, in a folder only their owner may open).  Nothing here
prints or logs a password.
"""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from bus.errors import ConfigError

MAX_LENGTH = 1024  # RabbitMQ takes longer ones; a file this long is a mistake, not a password


def _refuse_open_to_others(path: Path, what: str, mask: int) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & mask:
        raise ConfigError(f"{what} {path} is open to other users (mode {mode:04o}); "
                          f"chmod {'700' if path.is_dir() else '600'} {path} (it holds broker passwords)")


def directory(path: Path) -> Path:
    """``path``, made owner-only (0700) if missing; refused if others may change it."""
    path = Path(path)
    if not path.exists():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)
    if not path.is_dir():
        raise ConfigError(f"{path} is not a directory (the password files go there)")
    _refuse_open_to_others(path, "password directory", stat.S_IWGRP | stat.S_IWOTH)
    return path


def password(folder: Path, user: str) -> tuple[str, bool]:
    """The password of ``user`` in ``folder``, and whether it was made now.  A file another
    ``sync`` writes meanwhile wins: the new file appears whole (written aside, then linked),
    and a file already there is never replaced."""
    path = folder / user
    if not path.exists():
        made = secrets.token_urlsafe(32)
        aside = folder / f".{user}.{os.getpid()}.{secrets.token_hex(4)}.part"
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(made + "\n")
            try:
                os.link(aside, path)  # fails if another sync made it first: its password stands
                return made, True
            except FileExistsError:
                pass
        finally:
            aside.unlink(missing_ok=True)
    writable = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    mounted = not stat.S_IMODE(path.stat().st_mode) & writable  # a read-only secret, as mounted
    _refuse_open_to_others(path, "password file", (stat.S_IWGRP | stat.S_IWOTH) if mounted
                           else stat.S_IRWXG | stat.S_IRWXO)
    text = path.read_text().strip()
    if not text or len(text) > MAX_LENGTH or any(c.isspace() for c in text):
        raise ConfigError(f"password file {path} must hold one password (1-{MAX_LENGTH} characters, no spaces)")
    return text, False
