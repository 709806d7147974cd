"""``strands-valkey``: the tutorial's demo, and commands to inspect and manage stored sessions.

The CLI needs the ``cli`` extra (click, rich); without it, :func:`main` says how to install it.
"""

from __future__ import annotations

import sys

EXTRA_HINT = (
    "strands-valkey needs the 'cli' extra (click, rich), which is not installed. Install it with:\n"
    "    pip install 'strands-valkey-session-manager[cli]'"
)


def main() -> None:
    """Console-script entry point (``strands-valkey``)."""
    try:
        from .app import app
    except ImportError as error:
        if str(error.name).partition(".")[0] not in ("click", "rich"):
            raise
        print(f"{EXTRA_HINT}\n(missing module: {error.name})", file=sys.stderr)
        sys.exit(2)
    app(prog_name="strands-valkey")
