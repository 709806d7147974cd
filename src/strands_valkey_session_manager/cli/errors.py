"""Exit codes (0 is success) and the one error type the commands raise for a user to read."""

from __future__ import annotations

NOT_FOUND = 1  # a session (or file) that does not exist
USAGE = 2  # bad arguments or options, an unusable --model; also click's own usage errors
UNAVAILABLE = 3  # Valkey unreachable or failing, or no valkey-server for the demo
REFUSED = 4  # would overwrite an existing session (import without --force), deletion not confirmed, or a
# session key holds a value this library did not write (another application's, or 0.1.0's RedisJSON)
INTERRUPTED = 130  # Ctrl-C


class CliError(Exception):
    """An error for the user: what happened and what to do, and the exit code to leave with."""

    def __init__(self, message: str, code: int) -> None:
        """Keep the message and the exit code."""
        super().__init__(message)
        self.code = code
