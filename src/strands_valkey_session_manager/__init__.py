"""Strands Agents sessions in Valkey: ``ValkeySessionManager`` and ``ValkeyStorage``."""

from .session_manager import ValkeySessionManager
from .storage import ValkeyStorage

__all__ = ["ValkeySessionManager", "ValkeyStorage"]
__version__ = "0.1.0"
