"""A chat request shaped like the Continue CLI's, for tests and benchmarks that need one.

cn sends about 15 tool definitions, a long system prompt holding the date and the
working directory, and the whole conversation on every turn (~56 KB here); matching,
hashing and forwarding costs are measured on that, not on a one-line request.
"""

from __future__ import annotations

from typing import Any


def continue_sized_request() -> dict[str, Any]:
    """15 tools, a long system prompt, 30 turns."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": f"Tool{index}",
                "description": "Reads or changes files in the workspace. " * 30,
                "parameters": {
                    "type": "object",
                    "properties": {f"arg{n}": {"type": "string"} for n in range(5)},
                },
            },
        }
        for index in range(15)
    ]
    system = "You are an agent in /workspace. Today is 2026-11-23. " * 200
    history = [
        {"role": "user" if n % 2 else "assistant", "content": "some text - with dashes " * 60}
        for n in range(30)
    ]
    return {"messages": [{"role": "system", "content": system}, *history], "tools": tools}
