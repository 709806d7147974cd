"""The issue's targets, judged from one run's results: met or missed, with the numbers."""

from __future__ import annotations

import statistics
from typing import Any

RESTORE_N = 1000
DELETE_N = 1000


def _pick(rows: list[dict[str, Any]], wanted: int, **match: Any) -> dict[str, Any] | None:
    """Pick the row matching ``match`` with ``n`` == wanted, else the one with the largest n (smaller runs)."""
    found = [row for row in rows if all(row.get(key) == value for key, value in match.items())]
    exact = [row for row in found if row["n"] == wanted]
    return (exact or sorted(found, key=lambda row: row["n"]))[-1] if found else None


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def evaluate(results: dict[str, Any]) -> list[dict[str, str]]:
    """One entry per target that this run has data for."""
    targets: list[dict[str, str]] = []
    restore = results.get("restore") or []
    if restore:
        k_min = min(row["k"] for row in restore)
        k_max = max(row["k"] for row in restore)
        lib = _pick(restore, RESTORE_N, level="messages", store="library", k=k_min)
        floor = _pick(restore, RESTORE_N, level="messages", store="floor", k=k_min)
        mget = _pick(restore, RESTORE_N, level="messages", store="floor-mget", k=k_min)
        if lib and floor and mget:
            ratio = lib["median_ms"] / floor["median_ms"]
            targets.append(
                {
                    "target": f"restore of {lib['n']} messages <= 1.5x the floor's MGET + json.loads (K={k_min:,})",
                    "measured": f"{lib['median_ms']:.2f} ms vs {floor['median_ms']:.2f} ms = {ratio:.2f}x "
                    f"(MGET alone: {mget['median_ms']:.2f} ms, {lib['median_ms'] / mget['median_ms']:.2f}x)",
                    "verdict": _verdict(ratio <= 1.5),
                }
            )
        far = _pick(restore, RESTORE_N, level="messages", store="library", k=k_max)
        if lib and far and k_max > k_min:
            ratio = far["median_ms"] / lib["median_ms"]
            targets.append(
                {
                    "target": f"restore of {lib['n']} messages within 1.2x between K={k_min:,} and K={k_max:,}",
                    "measured": f"{lib['median_ms']:.2f} ms -> {far['median_ms']:.2f} ms = {ratio:.2f}x",
                    "verdict": _verdict(ratio <= 1.2),
                }
            )
        naive = _pick(restore, RESTORE_N, level="messages", store="naive", k=k_max)
        if far and naive:
            ratio = naive["median_ms"] / far["median_ms"]
            targets.append(
                {
                    "target": f"at K={k_max:,}, restore >= 50x faster than the SCAN baseline ({far['n']} messages)",
                    "measured": f"{far['median_ms']:.2f} ms vs {naive['median_ms']:.1f} ms = {ratio:.0f}x faster",
                    "verdict": _verdict(ratio >= 50),
                }
            )
    targets += _turn_targets(results.get("turn") or {})
    delete = results.get("delete") or []
    if delete:
        k_min = min(row["k"] for row in delete)
        lib = _pick(delete, DELETE_N, store="library", k=k_min)
        floor = _pick(delete, DELETE_N, store="floor", k=k_min)
        if lib and floor:
            ratio = lib["median_ms"] / floor["median_ms"]
            targets.append(
                {
                    "target": f"delete_session of {lib['n']} messages <= 2x a plain DEL of the same keys",
                    "measured": f"{lib['median_ms']:.2f} ms vs {floor['median_ms']:.2f} ms = {ratio:.2f}x",
                    "verdict": _verdict(ratio <= 2),
                }
            )
    return targets


def _turn_targets(turn: dict[str, Any]) -> list[dict[str, str]]:
    buckets = turn.get("buckets") or []
    lib = sorted((row for row in buckets if row["store"] == "library"), key=lambda row: row["from_messages"])
    floor = {row["from_messages"]: row for row in buckets if row["store"] == "floor"}
    if not lib or not floor:
        return []
    atomic = {row["from_messages"]: row for row in buckets if row["store"] == "floor-atomic"}
    ratios = [row["hooks_median_ms"] / floor[row["from_messages"]]["hooks_median_ms"] for row in lib]
    first, last = lib[0], lib[-1]
    floor_first, floor_last = floor[first["from_messages"]], floor[last["from_messages"]]
    growth = last["hooks_median_ms"] / first["hooks_median_ms"]
    floor_growth = floor_last["hooks_median_ms"] / floor_first["hooks_median_ms"]
    span = f"{first['from_messages']}-{first['to_messages']} -> {last['from_messages']}-{last['to_messages']} messages"
    return [
        {
            "target": "per-turn session overhead <= 1.5x the floor's (two SET EX), at every conversation size",
            "measured": f"in hooks: {first['hooks_median_ms']:.3f} ms vs floor {floor_first['hooks_median_ms']:.3f} ms "
            f"at {first['from_messages']}-{first['to_messages']} messages; {last['hooks_median_ms']:.3f} ms vs "
            f"{floor_last['hooks_median_ms']:.3f} ms at {last['from_messages']}-{last['to_messages']}; ratio "
            f"{min(ratios):.2f}x to {max(ratios):.2f}x (median {statistics.median(ratios):.2f}x)",
            "verdict": _verdict(max(ratios) <= 1.5),
        },
        {
            "target": f"per-turn overhead flat as the conversation grows to {last['to_messages']} messages "
            "(last bucket <= 1.2x first, net of the floor's own drift)",
            "measured": f"{span}: library {first['hooks_median_ms']:.3f} -> {last['hooks_median_ms']:.3f} ms "
            f"({growth:.2f}x), floor {floor_first['hooks_median_ms']:.3f} -> {floor_last['hooks_median_ms']:.3f} ms "
            f"({floor_growth:.2f}x): net {growth / floor_growth:.2f}x",
            "verdict": _verdict(growth / floor_growth <= 1.2),
        },
        {
            "target": "(proposed instead) per-turn overhead <= 2x the floor's two SET EX, at every conversation size",
            "measured": f"ratio {min(ratios):.2f}x to {max(ratios):.2f}x",
            "verdict": _verdict(max(ratios) <= 2),
        },
        *_atomic_target(lib, atomic),
    ]


def _atomic_target(lib: list[dict[str, Any]], atomic: dict[int, dict[str, Any]]) -> list[dict[str, str]]:
    if not all(row["from_messages"] in atomic for row in lib):
        return []
    ratios = [row["hooks_median_ms"] / atomic[row["from_messages"]]["hooks_median_ms"] for row in lib]
    return [
        {
            "target": "(proposed instead) per-turn overhead <= 1.5x the floor + atomic index (one script: SET + ZADD)",
            "measured": f"ratio {min(ratios):.2f}x to {max(ratios):.2f}x (median {statistics.median(ratios):.2f}x)",
            "verdict": _verdict(max(ratios) <= 1.5),
        }
    ]
