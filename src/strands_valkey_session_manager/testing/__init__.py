"""A testing kit for agents that keep sessions in Valkey: an offline model, throwaway servers and clusters.

- :class:`ScriptedModel`: a Strands model that streams canned replies (text, tool calls), offline.
- :class:`LocalValkey`: a throwaway server on a free loopback port, stopped by its pid: ``valkey-server``
  on PATH, else the embedded one (:func:`embedded_server`, the ``embedded`` extra).
- :class:`LocalCluster`: a throwaway Valkey Cluster (3 primaries + 3 replicas) of such servers.
- pytest fixtures ``valkey_session_server``, ``valkey_session_client``, ``valkey_session_manager``
  (:mod:`.pytest_plugin`, registered with pytest when the package is installed).
"""

from .cluster import LocalCluster
from .model import ScriptedModel
from .server import LocalValkey, embedded_server

__all__ = ["LocalCluster", "LocalValkey", "ScriptedModel", "embedded_server"]
