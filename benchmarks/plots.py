"""PNG plots of the results (matplotlib, from the ``bench`` extra), one per scenario."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .config import STORE_LABEL, STORE_ORDER  # noqa: E402

COLOR = {
    "library": "C0",
    "naive": "C3",
    "file": "C2",
    "bare": "C1",
    "bare-script": "C4",
    "floor": "C7",
    "floor-mget": "C8",
    "none": "k",
}
SERVER_OPS = ("turn", "append", "sync", "restore", "delete")


def draw_all(out: Path, results: dict[str, Any]) -> dict[str, str]:
    """Draw every plot the results have data for; returns name -> file name."""
    drawn = {}
    for name, draw in (
        ("turn", _turn),
        ("restore_n", _restore_n),
        ("restore_k", _restore_k),
        ("delete", _delete),
        ("concurrency", _concurrency),
        ("memory", _memory),
        ("server", _server),
        ("saturation", _saturation),
    ):
        figure = draw(results)
        if figure is not None:
            file_name = f"benchmarks-{name}.png"
            figure.savefig(out / file_name, dpi=110, bbox_inches="tight")
            plt.close(figure)
            drawn[name] = file_name
    return drawn


def _lines(axes: Any, rows: list[dict[str, Any]], x: str, y: str, stores: tuple[str, ...] = STORE_ORDER) -> None:
    for store in stores:
        points = sorted((row[x], row[y]) for row in rows if row["store"] == store and row[y] is not None)
        if points:
            xs, ys = zip(*points, strict=True)
            axes.plot(xs, ys, marker="o", label=STORE_LABEL[store], color=COLOR[store])


def _turn(results: dict[str, Any]) -> Any:
    rows = (results.get("turn") or {}).get("buckets")
    if not rows:
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    stores = ("library", "naive", "file", "bare", "floor")
    _lines(left, rows, "from_messages", "hooks_median_ms", stores)
    left.set(title="time in session-manager hooks per turn", xlabel="messages in conversation", ylabel="ms")
    _lines(right, rows, "from_messages", "overhead_ms", stores)
    right.set(title="turn time minus no-session-manager turn", xlabel="messages in conversation", ylabel="ms")
    left.legend()
    return figure


def _per_k(rows: list[dict[str, Any]], title: str) -> Any:
    """One log-log pane of median ms against N for each K (unrelated keys in the server)."""
    if not rows:
        return None
    ks = sorted({row["k"] for row in rows})
    figure, panes = plt.subplots(1, len(ks), figsize=(5.5 * len(ks), 4), squeeze=False)
    for axes, k in zip(panes[0], ks, strict=True):
        _lines(axes, [row for row in rows if row["k"] == k], "n", "median_ms")
        axes.set(xscale="log", yscale="log", title=f"{title}, K={k:,} other keys", xlabel="N", ylabel="ms")
    panes[0][0].legend()
    return figure


def _restore_n(results: dict[str, Any]) -> Any:
    rows = [row for row in results.get("restore") or [] if row["level"] == "messages"]
    return _per_k(rows, "restore N messages")


def _restore_k(results: dict[str, Any]) -> Any:
    rows = [row for row in results.get("restore") or [] if row["level"] == "messages"]
    if len({row["k"] for row in rows}) < 2:
        return None
    n = max(row["n"] for row in rows if row["n"] <= 1000)
    figure, axes = plt.subplots(figsize=(6, 4))
    _lines(axes, [{**row, "k": max(row["k"], 1)} for row in rows if row["n"] == n], "k", "median_ms")
    axes.set(xscale="log", yscale="log", title=f"restore {n} messages vs keys in the server", xlabel="K (0 shown at 1)")
    axes.set_ylabel("ms")
    axes.legend()
    return figure


def _delete(results: dict[str, Any]) -> Any:
    return _per_k(results.get("delete") or [], "delete_session")


def _bars(axes: Any, rows: list[dict[str, Any]], groups: list[Any], group_of: Any, value: str) -> None:
    """Draw grouped bars: one group per entry of ``groups`` (``group_of(row)``), one bar per store in it."""
    stores = [store for store in STORE_ORDER if any(row["store"] == store for row in rows)]
    width = 0.8 / len(stores)
    by_key = {(row["store"], group_of(row)): row for row in rows}
    for index, store in enumerate(stores):
        values = [by_key[(store, group)][value] if (store, group) in by_key else 0 for group in groups]
        positions = [position + index * width for position in range(len(groups))]
        axes.bar(positions, values, width, label=STORE_LABEL[store], color=COLOR[store])
    axes.set_xticks([position + 0.4 - width / 2 for position in range(len(groups))])


def _concurrency(results: dict[str, Any]) -> Any:
    rows = results.get("concurrency")
    if not rows:
        return None
    configs = sorted({(row["processes"], row["threads"]) for row in rows})
    figure, axes = plt.subplots(figsize=(max(6, 1.6 * len(configs)), 4))
    _bars(axes, rows, configs, lambda row: (row["processes"], row["threads"]), "turns_per_s")
    axes.set_xticklabels([f"{p} x {t}" for p, t in configs])
    axes.set(title="turns/s, P processes x T threads", ylabel="turns/s")
    axes.legend(fontsize="small")
    return figure


def _server(results: dict[str, Any]) -> Any:
    rows = [row for row in (results.get("server") or {}).get("rows") or [] if row["store"] != "file"]
    if not rows:
        return None
    figure, panes = plt.subplots(1, 2, figsize=(12, 4))
    for axes, value, title in (
        (panes[0], "cpu_us", "server CPU per operation (net of idle)"),
        (panes[1], "exec_us", "command execution per operation (top-level, commandstats)"),
    ):
        _bars(axes, rows, list(SERVER_OPS), lambda row: row["op"], value)
        axes.set_xticklabels(SERVER_OPS)
        axes.set(yscale="log", title=title, ylabel="µs")
    panes[0].legend(fontsize="small")
    return figure


def _saturation(results: dict[str, Any]) -> Any:
    rows = (results.get("saturation") or {}).get("rows")
    if not rows:
        return None
    configs = sorted({(row["processes"], row["threads"], row["io_threads"]) for row in rows})
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    _bars(left, rows, configs, lambda row: (row["processes"], row["threads"], row["io_threads"]), "turns_per_s")
    left.set(title="turns/s at saturation", ylabel="turns/s")
    _bars(right, rows, configs, lambda row: (row["processes"], row["threads"], row["io_threads"]), "server_main_cpu")
    right.set(title="server main thread CPU (1.0 = one core)", ylabel="share of a core")
    for axes in (left, right):
        axes.set_xticklabels([f"{p} x {t}\nio-threads {io}" for p, t, io in configs])
    left.legend(fontsize="small")
    return figure


def _memory(results: dict[str, Any]) -> Any:
    rows = results.get("memory")
    if not rows:
        return None
    sizes = sorted({row["text_size"] for row in rows})
    figure, axes = plt.subplots(figsize=(7, 4))
    by_key = {(row["store"], row["text_size"]): row for row in rows}
    labels = ["JSON", "library", "floor"]
    for index, label in enumerate(labels):
        if label == "JSON":
            values = [by_key[("library", size)]["json_bytes"] for size in sizes]
        else:
            values = [by_key[(label, size)]["total_per_message"] for size in sizes]
        axes.bar([p + index * 0.27 for p in range(len(sizes))], values, 0.27, label=label)
    axes.set_xticks([p + 0.27 for p in range(len(sizes))])
    axes.set_xticklabels([f"{size:,} chars" for size in sizes])
    axes.set(yscale="log", title="bytes per stored message (MEMORY USAGE + bookkeeping)", ylabel="bytes")
    axes.legend()
    return figure
