"""A testing kit for agents that keep sessions in Valkey: an offline model, throwaway servers and clusters.

- :class:`ScriptedModel`: a Strands model that streams canned replies (text, tool calls), offline.
- :class:`LocalValkey`: a throwaway ``valkey-server`` on a free loopback port, stopped by its pid.
- :class:`LocalCluster`: a throwaway Valkey Cluster (3 primaries + 3 replicas) of such servers.
"""

from .cluster import LocalCluster
from .model import ScriptedModel
from .server import LocalValkey

__all__ = ["LocalCluster", "LocalValkey", "ScriptedModel"]
