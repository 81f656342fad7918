"""How the audit log names who made a change from a shell.

A management command is run by whoever can reach the database's credentials; what the log
can say for sure is the operating-system account that ran it (``cli:<os user>``). A label
the caller adds (``--actor alice``) is kept beside it as a claim, not a verified identity:
``cli:deploy (claims: alice)``."""

from __future__ import annotations

import os

CLAIM_MAX = 64


def os_user() -> str:
    """The account the process runs as (its real uid's name; the uid when it has none)."""
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        import getpass

        try:
            return getpass.getuser()
        except OSError:
            return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def cli_actor(*, claimed: str = "") -> str:
    """``cli:<os user>``, with ``(claims: <label>)`` when a label is given. ValueError for a
    label that is too long or carries control characters."""
    actor = f"cli:{os_user()}"
    claimed = claimed.strip()
    if not claimed:
        return actor
    if len(claimed) > CLAIM_MAX or not claimed.isprintable():
        raise ValueError(f"--actor must be at most {CLAIM_MAX} printable characters")
    return f"{actor} (claims: {claimed})"
