"""``orchestrator policy replay``: decide a ledger's recorded tool calls again under a policy.

The gateway writes a ``policy.decision`` entry for every tool call a model asked for (the
tool, its arguments as the gateway parsed them, the effect, rule and reason) before the
agent sees any of it; ``tool.call`` follows only for the calls it handed over. Replaying
takes each such decision, decides the call again with the same engine and the same run
context the gateway used (``policy.decide_subject`` with the namespace and name of the
run's ``run.created`` entry, its uid, ``/workspace`` as the workspace root), and compares
the effects: a stricter effect (Deny > RequireApproval > Allow) is *tighter*, a laxer one
*looser*. What was decided before the policy ran (arguments that were not a JSON object)
is decided the same way again. A redacted decision has no payload left to decide: it is
listed as redacted, never guessed.

The ledger is verified first (``ledger.verify``, one pass) unless ``--no-verify``: a
what-if over a history that has been altered would answer for calls that never happened.
Only the entries the verification covered are read.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from continue_orchestrator import api, errors, ledger, policy

TIGHTER, LOOSER, UNCHANGED, REDACTED = "tighter", "looser", "unchanged", "redacted"
_DURATION = re.compile(r"(\d+)([wdhms])")
_DURATIONS = re.compile(r"(?:\d+[wdhms])+")
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_GATEWAY_WORKSPACE = "/workspace"


@dataclasses.dataclass(frozen=True)
class Replayed:
    """One recorded tool call decision and what the new policy set decides for it."""

    sequence: int
    time: str
    run_uid: str
    run: str
    """``namespace/name`` from the run's ``run.created``, or the uid when that is unknown."""
    change: str
    """``tighter``, ``looser``, ``unchanged`` or ``redacted`` (not replayable)."""
    tool: str = ""
    arguments: Any = None
    was: str = ""
    now: str = ""
    rule: str = ""
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "time": self.time,
            "runUid": self.run_uid,
            "run": self.run,
            "change": self.change,
            "tool": self.tool,
            "arguments": self.arguments,
            "was": self.was,
            "now": self.now,
            "rule": self.rule,
            "reason": self.reason,
        }


def parse_since(text: str, *, now: datetime.datetime | None = None) -> datetime.datetime:
    """An RFC 3339 time with an offset (``2026-12-01T00:00:00Z``), or a duration back from
    ``now`` made of ``N`` + ``w``/``d``/``h``/``m``/``s`` (``24h``, ``7d``, ``1h30m``)."""
    text = text.strip()
    if _DURATIONS.fullmatch(text):
        seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION.findall(text))
        return (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(seconds=seconds)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise errors.PolicyError(
            f"--since {text!r} is neither an RFC 3339 time with an offset nor a duration",
            where="--since",
            fix="give e.g. 2026-12-01T00:00:00Z, or 24h, 7d, 1h30m (w, d, h, m, s)",
        )
    return moment.astimezone(datetime.UTC)


def _time_of(entry: ledger.Entry) -> datetime.datetime:
    return datetime.datetime.fromisoformat(entry.time).astimezone(datetime.UTC)


def _effect(text: Any) -> api.Effect | None:
    try:
        return api.Effect(str(text))
    except ValueError:
        return None


def _context(run_uid: str, created: Mapping[str, Any] | None) -> policy.RunContext:
    """The run as the gateway's ``policy_decider`` describes it to the policy."""
    created = created or {}
    return policy.RunContext(
        namespace=str(created.get("namespace") or ""),
        name=str(created.get("name") or ""),
        uid=run_uid,
        workspace_root=_GATEWAY_WORKSPACE,
    )


def decide_again(
    policy_set: policy.PolicySet, payload: Mapping[str, Any], run: policy.RunContext
) -> tuple[api.Effect, str, str]:
    """The effect, rule and reason the gateway would give the recorded call now."""
    arguments = payload.get("arguments")
    rule = str(payload.get("rule") or "")
    if rule.startswith("gateway.") and rule != "gateway.policy-error":
        # The gateway denied the call before any policy ran (``_gate.Gate``): a call not
        # of the API's shape, arguments that were not JSON text of an object.
        return api.Effect.DENY, rule, str(payload.get("reason") or "")
    if not isinstance(arguments, dict):
        return api.Effect.DENY, "gateway.arguments", "the arguments are not a JSON object"
    mcp_server = payload.get("mcpServer")
    call = policy.ToolCall(
        name=str(payload.get("tool") or ""),
        arguments=arguments,
        run=run,
        mcp_server=mcp_server if isinstance(mcp_server, str) and mcp_server else None,
    )
    try:
        decision = policy.decide_subject(policy_set, call)
    except Exception as error:  # as the gateway: a policy that fails denies
        return api.Effect.DENY, "gateway.policy-error", f"the policy failed: {error}"
    return decision.effect, decision.rule or "", decision.reason


def replay(
    entries: Iterable[ledger.Entry],
    policy_set: policy.PolicySet,
    *,
    since: datetime.datetime | None = None,
    run_uid: str | None = None,
) -> list[Replayed]:
    """Every recorded tool call decision of ``entries`` (from ``since``, of ``run_uid``),
    decided again under ``policy_set``, in ledger order; redacted decisions as such."""
    created: dict[str, Mapping[str, Any] | None] = {}
    replayed: list[Replayed] = []
    for entry in entries:
        if run_uid is not None and entry.run_uid != run_uid:
            continue
        if entry.kind is ledger.Kind.RUN_CREATED:
            created.setdefault(entry.run_uid, entry.payload)
            continue
        if entry.kind is not ledger.Kind.POLICY_DECISION:
            continue
        if since is not None and _time_of(entry) < since:
            continue
        known = created.get(entry.run_uid)
        shown = (
            f"{known.get('namespace') or ''}/{known.get('name') or ''}"
            if known and known.get("name")
            else entry.run_uid
        )
        payload = entry.payload
        if payload is None:
            replayed.append(
                Replayed(
                    entry.sequence,
                    entry.time,
                    entry.run_uid,
                    shown,
                    REDACTED,
                    reason="redacted by a tombstone: the decision's payload is gone "
                    "(a tool call or another decision), so it cannot be decided again",
                )
            )
            continue
        if "tool" not in payload:
            continue  # a decision of the git endpoint, not of a tool call
        was = _effect(payload.get("effect"))
        now, rule, reason = decide_again(policy_set, payload, _context(entry.run_uid, known))
        if was is None or policy.STRICTNESS[now] == policy.STRICTNESS[was]:
            change = UNCHANGED
        else:
            change = TIGHTER if policy.STRICTNESS[now] > policy.STRICTNESS[was] else LOOSER
        replayed.append(
            Replayed(
                entry.sequence,
                entry.time,
                entry.run_uid,
                shown,
                change,
                tool=str(payload.get("tool") or ""),
                arguments=payload.get("arguments"),
                was=str(payload.get("effect") or ""),
                now=now.value,
                rule=rule,
                reason=reason,
            )
        )
    return replayed


def read(
    url: str, *, verify: bool, public_key: ledger.PublicKey | None = None
) -> tuple[list[ledger.Entry], tuple[str, ...]]:
    """The entries of the ledger at ``url`` (those a verification covered when ``verify``),
    and its warnings; a ledger that fails verification raises ``LedgerIntegrityError``."""
    with ledger.open(url, create=False) as book:
        warnings: tuple[str, ...] = ()
        stop = None
        if verify:
            report = ledger.verify(book, public_key=public_key)
            failure = report.error()
            if failure is not None:
                raise failure
            warnings, stop = report.warnings, report.size
        return list(book.entries(stop=stop)), warnings


def arguments_summary(arguments: Any, limit: int = 60) -> str:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
