"""Rewrite a Continue config.yaml so every model call goes through the run's gateway.

Each model's ``apiBase`` becomes the gateway URL of this run and its ``apiKey`` the run
token; the real credential stays with the gateway. ``${{ secrets.NAME }}`` references
are checked against the secrets the policy grants before anything runs. A secret used
only as models' ``apiKey`` is *brokered*: the gateway holds its value and the sandbox
never gets it (``brokered_secrets`` tells the operator which ones); every other granted
reference is *delivered*, its value written into the agent's config. A model's literal
apiKey is taken out before the config reaches the sandbox (``broker_literal_keys``) and
brokered under a synthetic secret name. The text is
edited in place at the nodes that change, so comments, order and quoting of everything
else survive byte for byte; the result is re-parsed and compared with the intended
document, and only if an edit cannot be made in place is the document re-serialised.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Collection, Mapping
from typing import Any

import yaml

from continue_orchestrator import errors

SECRET_REFERENCE = re.compile(r"\$\{\{\s*secrets\.([A-Za-z0-9_.\-/]+)\s*\}\}")

# Providers whose client honours apiBase with the OpenAI or Anthropic wire API, the two
# the gateway speaks. Anything else could call its vendor directly, so it is refused.
GATEWAY_PROVIDERS = frozenset({"openai", "anthropic"})


@dataclasses.dataclass(frozen=True)
class SecretReference:
    """One ``${{ secrets.NAME }}`` in the config text."""

    name: str
    line: int
    """1-based line of the reference."""
    brokered: bool
    """True when it is a model's apiKey: the gateway holds its value, never the sandbox."""


@dataclasses.dataclass(frozen=True)
class RewrittenConfig:
    """The config.yaml the agent gets, and what the rewrite did."""

    text: str
    models: tuple[str, ...]
    """Names of the rewritten models, in order."""
    references: tuple[SecretReference, ...]
    """Every secret reference in the original text."""
    resolved: frozenset[str]
    """Secrets whose values were written into the agent's config."""
    in_place: bool
    """False when the document had to be re-serialised (comments lost)."""

    @property
    def brokered(self) -> frozenset[str]:
        """Secrets used as model credentials: the gateway's, never the sandbox's."""
        return frozenset(r.name for r in self.references if r.brokered)


def secret_references(
    text: str, *, brokered_spans: Collection[tuple[int, int]] = ()
) -> list[SecretReference]:
    """Every secret reference in ``text`` (comments included: Continue templates raw text)."""
    found: list[SecretReference] = []
    for match in SECRET_REFERENCE.finditer(text):
        at = match.start()
        brokered = any(start <= at < end for start, end in brokered_spans)
        found.append(SecretReference(match.group(1), text.count("\n", 0, at) + 1, brokered))
    return found


_MAX_VISITS = 100_000
"""Nodes visited through aliases before a config counts as an alias bomb."""
_KEY = object()
"""Path element of a mapping key (a key is never a model's apiKey)."""


def brokered_secrets(text: str, *, where: str = "config.yaml") -> frozenset[str]:
    """Secrets ``text`` uses only as models' ``apiKey``: the gateway's, never the sandbox's.

    Raises ``errors.ManifestError`` for text that is not a YAML mapping, and for a model
    credential that is also used anywhere else (another field, through a YAML alias or
    merge key, or a comment), which would hand its value to the sandbox.
    """
    root = _compose(text, where)
    references = _classify(text, root, where)
    _check_reuse(references, where)
    return frozenset(r.name for r in references if r.brokered)


def _classify(text: str, root: yaml.MappingNode, where: str) -> list[SecretReference]:
    """Every reference in ``text``, brokered when it sits in a node used only as a model
    apiKey. A key node also reached another way (alias, merge) is refused here."""
    uses: dict[int, tuple[yaml.ScalarNode, list[tuple[object, ...]]]] = {}
    for node, path in _walk(root, where):
        uses.setdefault(id(node), (node, []))[1].append(path)
    spans: list[tuple[int, int]] = []
    for node, paths in uses.values():
        if not any(_is_model_key(path) for path in paths):
            continue
        other = [path for path in paths if not _is_model_key(path)]
        names = SECRET_REFERENCE.findall(node.value)
        if other and names:
            raise errors.ManifestError(
                f"secret {names[0]!r} is a model credential (brokered by the gateway) and "
                f"is also used at {_describe(other[0])} through a YAML alias or merge key, "
                "which would hand it to the sandbox",
                where=f"{where}: line {node.start_mark.line + 1}",
                fix="use a separate secret for the other use",
            )
        spans.append((node.start_mark.index, node.end_mark.index))
    return secret_references(text, brokered_spans=spans)


def _check_reuse(references: Collection[SecretReference], where: str) -> None:
    brokered = {r.name for r in references if r.brokered}
    for reference in references:
        if not reference.brokered and reference.name in brokered:
            raise errors.ManifestError(
                f"secret {reference.name!r} is a model credential (brokered by the gateway) "
                "and is also used elsewhere, which would hand it to the sandbox",
                where=f"{where}: line {reference.line}",
                fix="use a separate secret for the other use",
            )


LITERAL_KEY_NAME = "MODEL_{index}_API_KEY"
"""Synthetic secret name under which a model's literal apiKey is brokered."""
_LITERAL_KEY = re.compile(r"MODEL_[0-9]+_API_KEY")
_MIN_CHECKED_KEY = 8


@dataclasses.dataclass(frozen=True)
class LiteralKeys:
    """A config whose literal model keys were taken out for the gateway."""

    text: str
    """The config for the sandbox: each literal apiKey replaced by a secret reference."""
    values: Mapping[str, str]
    """Synthetic secret name (``MODEL_<index>_API_KEY``) to the literal key it replaced."""


def broker_literal_keys(text: str, *, where: str = "config.yaml") -> LiteralKeys:
    """Replace each model's literal ``apiKey`` with ``${{ secrets.MODEL_<index>_API_KEY }}``.

    The reference is brokered like any model-key secret: the value goes to the gateway,
    the runner rewrites the apiKey to the run token, and the literal is in no text the
    sandbox gets. Raises ``errors.ManifestError`` when the literal is also used elsewhere
    in the config (a YAML alias, or the same text anywhere), or a synthetic name is taken.
    """
    root = _compose(text, where)
    for reference in secret_references(text):
        if _LITERAL_KEY.fullmatch(reference.name):
            raise errors.ManifestError(
                f"secret name {reference.name!r} is reserved for literal model keys",
                where=f"{where}: line {reference.line}",
                fix="rename the secret",
            )
    uses: dict[int, tuple[yaml.ScalarNode, list[tuple[object, ...]]]] = {}
    for node, path in _walk(root, where):
        uses.setdefault(id(node), (node, []))[1].append(path)
    edits: list[tuple[int, int, str]] = []
    values: dict[str, str] = {}
    by_index: dict[int, str] = {}
    for node, paths in uses.values():
        keys = [path for path in paths if _is_model_key(path)]
        if not keys or not node.value or SECRET_REFERENCE.search(node.value):
            continue
        line = f"{where}: line {node.start_mark.line + 1}"
        other = [path for path in paths if not _is_model_key(path)]
        if other:
            raise errors.ManifestError(
                f"the literal apiKey of models[{keys[0][1]}] is also used at "
                f"{_describe(other[0])} through a YAML alias or merge key, which would hand "
                "it to the sandbox",
                where=line,
                fix="move the key to a secret: apiKey: ${{ secrets.NAME }}",
            )
        index = min(int(str(path[1])) for path in keys)
        name = LITERAL_KEY_NAME.format(index=index)
        values[name] = node.value
        for path in keys:
            by_index[int(str(path[1]))] = name
        replacement = "${{ secrets." + name + " }}"
        edits.append((node.start_mark.index, node.end_mark.index, _quote(replacement, node, text)))
    if not values:
        return LiteralKeys(text=text, values={})

    expected = yaml.safe_load(text)
    for index, name in by_index.items():
        expected["models"][index]["apiKey"] = "${{ secrets." + name + " }}"
    result, _ = _edited(text, edits, expected)
    for name, value in values.items():
        # A short placeholder ("x", "none") is no credential and may well occur elsewhere.
        if len(value) >= _MIN_CHECKED_KEY and value in result:
            at = text.count("\n", 0, text.find(value)) + 1
            raise errors.ManifestError(
                f"the literal apiKey brokered as {name} also appears elsewhere in the "
                "config, which would hand it to the sandbox",
                where=f"{where}: line {at}",
                fix="move the key to a secret: apiKey: ${{ secrets.NAME }}",
            )
    return LiteralKeys(text=result, values=values)


def is_literal_key_name(name: str) -> bool:
    """True for a synthetic ``MODEL_<index>_API_KEY`` name of ``broker_literal_keys``."""
    return _LITERAL_KEY.fullmatch(name) is not None


def _is_model_key(path: tuple[object, ...]) -> bool:
    return (
        len(path) == 3
        and path[0] == "models"
        and isinstance(path[1], int)
        and (path[2] == "apiKey")
    )


def _describe(path: tuple[object, ...]) -> str:
    text = ""
    for part in path:
        if part is _KEY:
            text += " (a key)"
        elif isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "the top level"


def _walk(root: yaml.Node, where: str) -> list[tuple[yaml.ScalarNode, tuple[object, ...]]]:
    """Every scalar with the path it is reached by, once per path: aliases and merge keys
    are followed, so a node shared by two places is seen at both."""
    found: list[tuple[yaml.ScalarNode, tuple[object, ...]]] = []
    visits = 0

    def entries(node: yaml.MappingNode, seen: frozenset[int]) -> list[tuple[Any, Any]]:
        out: list[tuple[Any, Any]] = []
        for key_node, value_node in node.value:
            if key_node.tag != "tag:yaml.org,2002:merge":
                out.append((key_node, value_node))
                continue
            merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for mapping in merged:
                if isinstance(mapping, yaml.MappingNode) and id(mapping) not in seen:
                    out.extend(entries(mapping, seen | {id(mapping)}))
        return out

    def visit(node: yaml.Node, path: tuple[object, ...], seen: frozenset[int]) -> None:
        nonlocal visits
        visits += 1
        if visits > _MAX_VISITS:
            raise errors.ManifestError(
                f"config.yaml expands to more than {_MAX_VISITS} nodes through aliases",
                where=where,
                fix="write the config without nested aliases",
            )
        if isinstance(node, yaml.ScalarNode):
            found.append((node, path))
        elif id(node) in seen:
            return  # a recursive alias
        elif isinstance(node, yaml.SequenceNode):
            for index, child in enumerate(node.value):
                visit(child, (*path, index), seen | {id(node)})
        elif isinstance(node, yaml.MappingNode):
            for key_node, value_node in entries(node, seen | {id(node)}):
                visit(key_node, (*path, _KEY), seen | {id(node)})
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else _KEY
                visit(value_node, (*path, key), seen | {id(node)})

    visit(root, (), frozenset())
    return found


def rewrite_config(
    text: str,
    *,
    api_base: str,
    api_key: str,
    allowed_secrets: Collection[str],
    secret_values: Mapping[str, str],
    where: str = "config.yaml",
) -> RewrittenConfig:
    """Route every model through ``api_base`` with ``api_key``; resolve granted secrets.

    Raises ``errors.PolicyStopError`` for a secret the policy does not grant (naming it and
    its line) and ``errors.ManifestError`` for a config the gateway cannot front: a
    model without a supported provider, a hub ``uses:`` block, a brokered model
    credential also used elsewhere, or a granted secret without a value.
    """
    root = _compose(text, where)
    models_node = _mapping_get(root, "models")
    if models_node is None or not isinstance(models_node, yaml.SequenceNode):
        raise errors.ManifestError(
            "config.yaml has no 'models' list, so the agent would have no model to call",
            where=where,
            fix="add a models entry with provider openai or anthropic",
        )
    if not models_node.value:
        raise errors.ManifestError("config.yaml 'models' is empty", where=where)

    # Checks read the parsed data (merge keys and anchors resolved); edits use the nodes.
    data_models = yaml.safe_load(text)["models"]
    model_nodes: list[yaml.MappingNode] = []
    names: list[str] = []
    for index, (node, model) in enumerate(zip(models_node.value, data_models, strict=True)):
        place = f"{where}: models[{index}] (line {node.start_mark.line + 1})"
        if not isinstance(node, yaml.MappingNode) or not isinstance(model, dict):
            raise errors.ManifestError("a model must be a mapping", where=place)
        if "uses" in model:
            raise errors.ManifestError(
                "hub model blocks ('uses:') are resolved by Continue's hub over the network",
                where=place,
                fix="inline the model with provider, model, apiBase and apiKey",
            )
        provider = model.get("provider")
        if provider not in GATEWAY_PROVIDERS:
            raise errors.ManifestError(
                f"provider {provider!r} cannot be routed through the gateway",
                where=place,
                fix=f"use one of {', '.join(sorted(GATEWAY_PROVIDERS))} "
                "(any OpenAI-compatible server works as provider openai with its apiBase)",
            )
        model_nodes.append(node)
        names.append(str(model.get("name") or f"models[{index}]"))

    references = _classify(text, root, where)
    allowed = frozenset(allowed_secrets)
    for reference in references:
        if reference.name not in allowed:
            raise errors.PolicyStopError(
                f"config.yaml references secret {reference.name!r}, which the run's policy "
                "does not grant; the agent was not started",
                where=f"{where}: line {reference.line}",
                fix="add it to the RunPolicy's allowedSecrets, or remove the reference",
            )
    _check_reuse(references, where)
    to_resolve = {r.name for r in references if not r.brokered}
    missing = sorted(to_resolve - secret_values.keys())
    if missing:
        raise errors.ManifestError(
            f"granted secret(s) {', '.join(missing)} have no value in the run",
            where=where,
            fix="map them in the AgentRun's spec.secrets",
        )

    edits: list[tuple[int, int, str]] = []
    for node in model_nodes:
        for key, value in (("apiBase", api_base), ("apiKey", api_key)):
            edit = _set_key(text, node, key, value)
            if edit not in edits:  # one key node shared by two models
                edits.append(edit)
    for node in _scalars(root):
        if SECRET_REFERENCE.search(node.value) and not _inside(node, edits):
            value = _resolve(node.value, secret_values)
            edits.append((node.start_mark.index, node.end_mark.index, _quote(value, node, text)))

    expected = _expected(text, api_base, api_key, secret_values)
    result, in_place = _edited(text, edits, expected)
    return RewrittenConfig(
        text=result,
        models=tuple(names),
        references=tuple(references),
        resolved=frozenset(to_resolve),
        in_place=in_place,
    )


def _compose(text: str, where: str) -> yaml.MappingNode:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        raise errors.ManifestError(f"config.yaml is not valid YAML: {error}", where=where) from None
    if not isinstance(root, yaml.MappingNode):
        raise errors.ManifestError("config.yaml must be a YAML mapping", where=where)
    return root


def _mapping_get(node: yaml.Node, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return value_node  # type: ignore[no-any-return]
    return None


def _scalar(node: yaml.Node | None) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _scalars(node: yaml.Node) -> list[yaml.ScalarNode]:
    found: list[yaml.ScalarNode] = []
    stack = [node]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, yaml.ScalarNode):
            found.append(current)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
        elif isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                stack.extend((key_node, value_node))
    return found


def _inside(node: yaml.Node, edits: list[tuple[int, int, str]]) -> bool:
    start, end = node.start_mark.index, node.end_mark.index
    return any(a <= start and end <= b and a != b for a, b, _ in edits)


def _quote(value: str, node: yaml.Node, text: str) -> str:
    quoted = json.dumps(value, ensure_ascii=False)
    # A block scalar's span ends after its line break; keep one so the next key stays put.
    if text[node.start_mark.index : node.end_mark.index].endswith("\n"):
        quoted += "\n"
    return quoted


def _set_key(text: str, mapping: yaml.MappingNode, key: str, value: str) -> tuple[int, int, str]:
    existing = _mapping_get(mapping, key)
    if existing is not None:
        return (existing.start_mark.index, existing.end_mark.index, _quote(value, existing, text))
    entry = f"{key}: {json.dumps(value)}"
    if mapping.flow_style:
        end = mapping.end_mark.index - 1  # before the closing brace
        return (end, end, f", {entry}" if mapping.value else entry)
    first_key = mapping.value[0][0]
    last_value = mapping.value[-1][1]
    at = last_value.end_mark.index
    if at == 0 or text[at - 1] != "\n":
        newline = text.find("\n", at)
        at = len(text) if newline < 0 else newline + 1
    prefix = "" if at == 0 or text[at - 1] == "\n" else "\n"
    return (at, at, f"{prefix}{' ' * first_key.start_mark.column}{entry}\n")


def _edited(text: str, edits: list[tuple[int, int, str]], expected: Any) -> tuple[str, bool]:
    """``text`` with ``edits`` made in place (comments and layout kept) if that parses to
    ``expected``, else ``expected`` dumped afresh; and whether the edits held."""
    result = text
    for start, end, replacement in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        result = result[:start] + replacement + result[end:]
    try:
        if yaml.safe_load(result) == expected:
            return result, True
    except yaml.YAMLError:
        pass
    return yaml.safe_dump(expected, sort_keys=False, allow_unicode=True), False


def _resolve(value: str, secret_values: Mapping[str, str]) -> str:
    return SECRET_REFERENCE.sub(lambda m: secret_values[m.group(1)], value)


def _expected(text: str, api_base: str, api_key: str, secret_values: Mapping[str, str]) -> Any:
    """The document the rewrite must produce, built on parsed data as the reference."""

    def resolve(value: Any) -> Any:
        if isinstance(value, str):
            return _resolve(value, secret_values) if SECRET_REFERENCE.search(value) else value
        if isinstance(value, list):
            return [resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        return value

    document = yaml.safe_load(text)
    result: dict[str, Any] = {}
    for key, value in document.items():
        if key != "models":
            result[key] = resolve(value)
            continue
        result[key] = [
            {
                **resolve({k: v for k, v in model.items() if k not in ("apiBase", "apiKey")}),
                "apiBase": api_base,
                "apiKey": api_key,
            }
            for model in value
        ]
    return result
