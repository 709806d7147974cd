"""Strands Agents sessions in Valkey: ``ValkeySessionManager``."""

from .session_manager import ValkeySessionManager

__all__ = ["ValkeySessionManager"]
__version__ = "0.1.0"
