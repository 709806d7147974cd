"""``python -m strands_valkey_session_manager.cli``: the same as ``strands-valkey``."""

from . import main

main()
