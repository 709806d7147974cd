"""Benchmarks of strands-valkey-session-manager against the alternatives and the floor (``python -m benchmarks``)."""
