"""The Continue ``config.yaml`` the tests give the runner, the gateway and ``cn``: one home.

Most tests want the same config: an unchanged user config with one OpenAI model whose
key is a secret reference, which the runner must route through the gateway. ``text``
writes it; a test passes only what it is about (the scripted model's ``apiBase``, a
literal key, its own names, extra top-level sections such as ``mcpServers`` or
``rules``). Tests of the config's own form (comments, block styles, anchors) keep their
literal text, since the form is what they check.
"""

from __future__ import annotations

OPENAI_BASE = "https://api.openai.com/v1"
KEY_REFERENCE = "${{ secrets.OPENAI_API_KEY }}"


def text(
    *,
    name: str = "fixer",
    version: str = "1.0.0",
    model_name: str = "fixer",
    model: str = "gpt-4.1",
    api_base: str = OPENAI_BASE,
    api_key: str = KEY_REFERENCE,
    roles: str | None = "[chat]",
    rest: str = "",
) -> str:
    """The config's YAML: its one ``openai`` model, then ``rest`` (whole YAML lines).

    ``roles`` is written as given (flow style, e.g. ``"[chat, edit]"``); None leaves
    the model without ``roles``.
    """
    lines = [
        f"name: {name}",
        f"version: {version}",
        "schema: v1",
        "models:",
        f"  - name: {model_name}",
        "    provider: openai",
        f"    model: {model}",
        f"    apiBase: {api_base}",
        f"    apiKey: {api_key}",
    ]
    if roles is not None:
        lines.append(f"    roles: {roles}")
    return "\n".join(lines) + "\n" + rest
