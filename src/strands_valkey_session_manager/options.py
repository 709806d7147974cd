"""Options shared by every part: the client types, the ttl and the one check for numeric settings."""

from __future__ import annotations

import math
from datetime import timedelta

import valkey
from valkey.cluster import ValkeyCluster

#: The synchronous clients ``ValkeySessionManager`` (and the CLI) work with.
Client = valkey.Valkey | ValkeyCluster

#: The longest ttl accepted: 10 years. Longer is almost surely a unit mistake (ms for s); use ``ttl=None``.
MAX_TTL = timedelta(days=3650)


def number(name: str, value: object, *, least: float, integer: bool = False, most: float = math.inf) -> float:
    """Return ``value`` if it is a finite number (an ``int`` if ``integer``) in ``[least, most]``, else ``ValueError``.

    ``bool`` is refused although Python counts it as an ``int``: ``ttl=True`` is a mistake, not one second.
    """
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not least <= value <= most:
        what = "an integer" if integer else "a finite number"
        bound = f"from {least:g} to {most:g}" if most < math.inf else f">= {least:g}"
        raise ValueError(f"{name}=<{value!r}> | must be {what} {bound}")
    return value


def ttl_ms(ttl: int | float | timedelta | None) -> int:
    """Normalise a ttl (seconds or a ``timedelta``; ``None`` = never expires) to ms (0 = none).

    Raises:
        ValueError: If ``ttl`` is not a positive, finite number of seconds up to ``MAX_TTL`` (10 years), a
            ``timedelta`` within it, or ``None``.
    """
    if ttl is None:
        return 0
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
    most = MAX_TTL.total_seconds()
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= most:
        raise ValueError(
            f"ttl=<{ttl!r}> | must be a positive number of seconds up to {most:.0f} (10 years), a timedelta "
            "within that, or None for no expiry"
        )
    return max(1, round(seconds * 1000))
