"""Terminal output: colour and tables on a TTY, aligned plain text when piped, JSON on request.

Results go to stdout; progress and notes go to stderr, so ``--json`` output stays clean.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

#: ``tick(advance=1, text=None)``: move a progress display on (a no-op when stderr is no TTY).
Tick = Callable[..., None]


def plural(count: int, word: str) -> str:
    """``1 session``, ``2 sessions``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


#: Ids longer than this are shortened in messages: head, an ellipsis, tail (together this long).
ID_LIMIT = 60
#: Ids named in one message at most; the rest are counted.
IDS_NAMED = 5


def shorten(text: str, limit: int = ID_LIMIT) -> str:
    """Keep a long id readable in a message: its first two thirds and last third around ``…``, ``limit`` long.

    ``user-0123…cdef``: both ends stay, since ids tend to differ at the start (a tenant) or the end (a counter).
    """
    if len(text) <= limit:
        return text
    tail = (limit - 1) // 3
    return f"{text[: limit - 1 - tail]}…{text[-tail:]}"


def named(ids: Sequence[str]) -> str:
    """Name ids in a message: ``a, b, c``, each shortened; past ``IDS_NAMED``, ``a, b, c, d, e and 7 more``."""
    shown = ", ".join(shorten(session_id) for session_id in ids[:IDS_NAMED])
    return shown if len(ids) <= IDS_NAMED else f"{shown} and {len(ids) - IDS_NAMED} more"


def seconds(ttl_ms: int | None) -> str:
    """Format a remaining life for people: ``3598s``, or ``none`` for no expiry (rounded as TTL rounds)."""
    return "none" if ttl_ms is None else f"{(ttl_ms + 500) // 1000}s"


def ttl_seconds(ttl_ms: int | None) -> int | None:
    """Give a remaining life for JSON: whole seconds (rounded as TTL rounds), ``null`` for no expiry."""
    return None if ttl_ms is None else (ttl_ms + 500) // 1000


class Output:
    """Where a command writes: one per command run."""

    def __init__(self, as_json: bool = False) -> None:
        """``as_json``: results are printed as JSON (``--json``)."""
        self.as_json = as_json
        self.console = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)
        for console in (self.console, self.err):
            console.soft_wrap = not console.is_terminal  # piped: one line per line, never re-wrapped

    @property
    def tty(self) -> bool:
        """True when stdout is a terminal: colour and tables."""
        return self.console.is_terminal

    def say(self, markup: str = "") -> None:
        """Print a line of rich markup: styled on a TTY, plain text when piped."""
        self.console.print(markup)

    def note(self, markup: str) -> None:
        """Print a line for people to stderr (never mixed into results)."""
        self.err.print(markup)

    def heading(self, text: str) -> None:
        """Print a section heading: a rule on a TTY, an underlined line when piped."""
        if self.tty:
            self.console.print()
            self.console.rule(f"[bold]{escape(text)}[/bold]", align="left")
        else:
            self.console.print(f"\n{text}\n{'-' * len(text)}")

    def labelled(self, label: str, markup: str, indent: int = 2) -> None:
        """Print ``label  text`` (both rich markup); on a TTY the text wraps under itself, not under the label."""
        if not self.tty:
            self.console.print(f"{' ' * indent}{label}  {markup}")
            return
        grid = Table.grid(padding=(0, 2), pad_edge=False)
        grid.add_column(no_wrap=True)
        grid.add_column()
        grid.add_row(label, markup)
        self.console.print(Padding(grid, (0, 0, 0, indent)))

    def json(self, data: Any) -> None:
        """Print a JSON document (the result of a ``--json`` command); ASCII-escaped if it holds what UTF-8 cannot.

        Bytes that are not UTF-8 (a binary value shown with ``--raw``) are surrogate escapes, as in the export file.
        """
        text = json.dumps(data, indent=2, ensure_ascii=False)
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                text = json.dumps(data, indent=2)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[str] = ()) -> None:
        """Print a table: boxed on a TTY; when piped, a header and space-aligned columns (awk-friendly)."""
        cells = [[str(cell) for cell in row] for row in rows]
        if self.tty:
            table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
            for column in columns:
                table.add_column(column, justify="right" if column in right else "left", overflow="fold")
            for row in cells:
                table.add_row(*(escape(cell) for cell in row))
            self.console.print(table)
            return
        widths = [max(len(text) for text in column) for column in zip(columns, *cells, strict=True)]
        for row in [list(columns), *cells]:
            line = "  ".join(
                text.rjust(width) if name in right else text.ljust(width)
                for name, text, width in zip(columns, row, widths, strict=True)
            )
            self.console.out(line.rstrip(), highlight=False)

    @contextmanager
    def progress(self, text: str, total: int | None = None) -> Iterator[Tick]:
        """Show a progress bar (or spinner, without ``total``) on stderr, shown only on a TTY."""
        if not self.err.is_terminal:
            yield lambda advance=1, text=None: None
            return
        columns = [SpinnerColumn(), TextColumn("{task.description}")]
        if total is not None:
            columns += [BarColumn(), MofNCompleteColumn()]
        with Progress(*columns, TimeElapsedColumn(), console=self.err, transient=True) as bar:
            task = bar.add_task(text, total=total)

            def tick(advance: int = 1, text: str | None = None) -> None:
                if text is None:
                    bar.update(task, advance=advance)
                else:
                    bar.update(task, advance=advance, description=text)

            yield tick
