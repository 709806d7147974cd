"""Strands Agents sessions in Valkey: ``ValkeySessionManager``."""

from .lock import SessionBusyError
from .session_manager import ValkeySessionManager

__all__ = ["SessionBusyError", "ValkeySessionManager"]
__version__ = "0.1.0"
