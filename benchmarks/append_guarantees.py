"""What each guarantee of an append costs the server: one write at a time, CPU per write against ``SET EX``.

``python -m benchmarks.append_guarantees [--writes N] [--rounds R] [--pace SECONDS]`` starts its own
valkey-server and prints a Markdown table: for each way of writing a message, from the floor's bare
``SET EX`` up to the block an append sends (store._append_plain), the server's CPU per write
(``INFO cpu``, net of idle, :mod:`benchmarks.serverstats`) and its ratio to the floor (the median of the
rounds' ratios, quartiles in brackets). The ways alternate within a round, the order flips every round.
``--pace``: a pause after each write, as an agent's writes come (the server idles between them).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from strands_valkey_session_manager.testing.server import LocalValkey

from .serverstats import CommandCounter, measure

SESSION, IDS = "session:s", "session:s:agent:a:messages"
MESSAGE = '{"message":{"role":"user","content":[{"text":"' + "hello there " * 20 + '"}]},"message_id":1}'


def ways(client: Any) -> dict[str, Callable[[int], Any]]:
    """Each way of writing message ``i`` (a session record and an id set with a deadline exist)."""
    deadline = int(time.time() * 1000) + 3_600_000
    client.set(SESSION, '{"session_id":"s"}', pxat=deadline)
    client.zadd(IDS, {"0": 0})
    client.pexpireat(IDS, deadline)
    sha = client.script_load("return redis.call('SET', KEYS[1], ARGV[1], 'EX', 3600)")

    def key(i: int) -> str:
        return f"session:s:agent:a:message:{i}"

    def block(*commands: tuple[Any, ...]) -> None:
        pipe = client.pipeline(transaction=True)
        for command in commands:
            pipe.execute_command(*command)
        pipe.execute()

    def write(i: int) -> tuple[Any, ...]:
        return ("SET", key(i), MESSAGE, "NX", "GET", "PXAT", deadline)

    return {
        "`SET EX` (the floor)": lambda i: client.set(key(i), MESSAGE, ex=3600),
        "+ the session's deadline, never over another message: `SET NX GET PXAT`": lambda i: client.execute_command(
            *write(i)
        ),
        "+ its id in the index, atomically: `MULTI`, that `SET`, `ZADD`, `EXEC`": lambda i: block(
            write(i), ("ZADD", IDS, i, i)
        ),
        "+ the session there, its deadline unmoved: `PEXPIRETIME` in the block (what ships)": lambda i: block(
            write(i), ("ZADD", IDS, i, i), ("PEXPIRETIME", SESSION)
        ),
        "for comparison: a script that only `SET`s (`EVALSHA`)": lambda i: client.evalsha(sha, 1, key(i), MESSAGE),
    }


def run(
    writes: int, rounds: int, pace: float, binary: str | None = None
) -> list[tuple[str, float, float, float, float]]:
    """Measure every way on a server of its own; returns (way, CPU µs per write, ratio to the floor, quartiles)."""
    counter = CommandCounter()
    with LocalValkey(binary) as server:
        client = counter.client(server.port, decode_responses=True)
        names = list(ways(client))
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for round_ in range(rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                client.flushall()
                write = ways(client)[name]

                def work(write: Callable[[int], Any] = write) -> None:
                    for i in range(1, writes + 1):
                        write(i)
                        if pace:
                            time.sleep(pace)

                cpu[name].append(measure(client, counter, writes, work).summary()["cpu_us"])
        client.close()
    rows = []
    for name in names:
        ratios = [mine / floor for mine, floor in zip(cpu[name], cpu[names[0]], strict=True)]
        low, high = statistics.quantiles(ratios, n=4)[::2] if len(ratios) > 1 else (ratios[0], ratios[0])
        rows.append((name, statistics.median(cpu[name]), statistics.median(ratios), low, high))
    return rows


def main(argv: list[str] | None = None) -> str:
    """Run and print the table; returns it."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.append_guarantees", description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=5000, help="writes per measurement (default 5000)")
    parser.add_argument("--rounds", type=int, default=9, help="rounds (default 9)")
    parser.add_argument("--pace", type=float, default=0.0, help="seconds to pause after each write (default 0)")
    args = parser.parse_args(argv)
    lines = ["| what the write does | server CPU per write, µs | ratio to `SET EX` |", "|---|---|---|"]
    for name, cpu_us, ratio, low, high in run(args.writes, args.rounds, args.pace):
        lines.append(f"| {name} | {cpu_us:.1f} | {ratio:.2f}x ({low:.2f}-{high:.2f}) |")
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
