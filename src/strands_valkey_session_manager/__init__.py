"""Strands Agents sessions in Valkey: ``ValkeySessionManager`` and ``ValkeyStorage``."""

__version__ = "0.2.0"  # first: the modules below read it

from .directory import SessionAccessError, SessionDirectory, SessionInfo
from .lock import SessionBusyError
from .session_manager import ValkeySessionManager
from .storage import ValkeyStorage
from .values import Keyring

__all__ = [
    "Keyring",
    "SessionAccessError",
    "SessionBusyError",
    "SessionDirectory",
    "SessionInfo",
    "ValkeySessionManager",
    "ValkeyStorage",
]
