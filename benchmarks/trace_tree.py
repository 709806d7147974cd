"""Print the real span tree of a two-agent session: ``python -m benchmarks.trace_tree`` (docs/observability.md).

A researcher (one tool call) and a writer share a session on a throwaway valkey-server, each invoked
inside a request span, then a second manager restores the researcher inside another. The spans come
from the SDK's in-memory exporter (testing/telemetry.py); the tree shows each span's name, duration and
the attributes this library sets (server address and port left out: they are on every span).
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from strands import Agent, tool

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing.model import ScriptedModel
from strands_valkey_session_manager.testing.server import LocalValkey
from strands_valkey_session_manager.testing.telemetry import capture

SHOWN = ("gen_ai.agent.id", "strands_valkey.", "error.type")


@tool
def lookup(topic: str) -> str:
    """Look a topic up.

    Args:
        topic: The topic.
    """
    return f"facts about {topic}"


def render(spans: list[ReadableSpan]) -> list[str]:
    """Return the spans as an indented tree, children in start order."""
    ids = {span.context.span_id for span in spans}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None and span.parent.span_id in ids else None
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda found: found.start_time or 0):
            attributes = {
                key.removeprefix("strands_valkey."): value
                for key, value in (span.attributes or {}).items()
                if key.startswith(SHOWN)
            }
            shown = " ".join(f"{key}={value}" for key, value in attributes.items())
            took = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
            lines.append(f"{'  ' * depth}{span.name} ({took:.2f} ms) {shown}".rstrip())
            walk(span.context.span_id, depth + 1)

    walk(None, 0)
    return lines


def main() -> None:
    """Run the session and print its trace."""
    request = trace.get_tracer("my-app").start_as_current_span
    with LocalValkey() as server, capture() as seen:
        client = server.client()
        manager = ValkeySessionManager("user-42", client)
        with request("POST /chat"):
            replies = [{"tool": "lookup", "input": {"topic": "valkey"}}, "Valkey is fast."]
            researcher = Agent(
                agent_id="researcher",
                model=ScriptedModel(replies),
                tools=[lookup],
                session_manager=manager,
                callback_handler=None,
            )
            writer = Agent(
                agent_id="writer", model=ScriptedModel(["A report."]), session_manager=manager, callback_handler=None
            )
            researcher("Research Valkey.")
            writer("Write it up.")
        with request("GET /chat/history"):
            Agent(agent_id="researcher", session_manager=ValkeySessionManager("user-42", client), callback_handler=None)
    print("\n".join(render(seen.spans())))


if __name__ == "__main__":
    main()
