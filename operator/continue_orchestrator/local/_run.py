"""``orchestrator run``: the operator's pipeline for one AgentRun, on one machine.

The pieces are the operator's own: the policy snapshot, inputs digest and runner bundle
come from ``runs``, the gateway is ``gateway.Gateway``, the sandbox runs the same
``python -m continue_orchestrator.runner`` a pod runs, with the run directory and
workspace at the pod's paths. Only the surroundings differ: gVisor in a network
namespace instead of a pod and NetworkPolicy, a SQLite ledger and a record store under
the state directory, approvals through the gateway's local admin endpoint, and an
attestation signed with a development key that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import hashlib
import json
import os
import pathlib
import signal
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from continue_orchestrator import (
    api,
    attest,
    errors,
    gateway,
    ledger,
    policy,
    records,
    runner,
    runs,
)
from continue_orchestrator.local import _digests, _inputs, _report, _sandbox, _scripted

Approvals = Literal["ask", "approve", "deny"]
Say = Callable[[str], None]

CN_VERSION = "1.5.47"
RUNNER_IMAGE_NAME = "local/continue-orchestrator-runner"
_SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclasses.dataclass(frozen=True)
class Options:
    """How to run: where state lives, which sandbox, which model, who decides approvals."""

    state_dir: pathlib.Path
    sandbox: _sandbox.Mode = "gvisor"
    model_script: pathlib.Path | None = None
    """Play this scripted model instead of calling the config's real providers."""
    approvals: Approvals = "ask"
    """ask: wait for ``orchestrator approve|deny``; approve / deny: decide every one."""
    cn: str | None = None
    """The Continue CLI; default: the pinned one hack/install-cn.sh installs."""
    decided_by: str = ""
    """Name recorded for --approve-all / --deny-all decisions (default: login name)."""
    uid: str | None = None
    """The run's uid; default: its name and a random suffix."""
    model: ModelServer | None = None
    """Play this upstream (``records.ReplayModel``) instead of the config's providers."""


class ModelServer(Protocol):
    """An OpenAI-compatible upstream the pipeline starts and stops (``ScriptedModel``)."""

    port: int

    async def start(self, host: str = ..., port: int = ...) -> str: ...

    async def stop(self) -> None: ...


def default_state_dir() -> pathlib.Path:
    """``.orchestrator/`` in the working directory."""
    return pathlib.Path.cwd() / ".orchestrator"


def default_cn() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(
        cache, "continue-orchestrator", "npm", f"continuedev-cli-{CN_VERSION}",
        "node_modules", ".bin", "cn",
    )  # fmt: skip


def runner_image() -> str:
    """What plays the runner image here: the package source, pinned by its digest."""
    package = pathlib.Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return f"{RUNNER_IMAGE_NAME}@sha256:{digest.hexdigest()}"


def run(inputs: _inputs.Inputs, options: Options, *, say: Say = print) -> _report.Report:
    """Run ``inputs`` end to end and return the report (also written as report.json)."""
    try:
        return asyncio.run(_Pipeline(inputs, options, say).main())
    except asyncio.CancelledError:  # SIGTERM: stopped, recorded and cleaned up like Ctrl-C
        raise KeyboardInterrupt from None


class _Pipeline:
    def __init__(self, inputs: _inputs.Inputs, options: Options, say: Say) -> None:
        self.inputs = inputs
        self.options = options
        self.say = say
        self.uid = options.uid or f"{inputs.name}-{uuid.uuid4().hex[:8]}"
        self._cn = ""
        self.state = options.state_dir.resolve()
        self.run_root = self.state / "runs" / self.uid
        self.ledger_url = f"sqlite:///{self.state / 'ledger.db'}"
        self.actor = f"local:{getpass.getuser()}"
        self.started = datetime.now(UTC)
        self._seen = 0
        self._decided: set[str] = set()
        self._announced: set[str] = set()
        self._brokered: frozenset[str] = frozenset()
        self._literals = runner.LiteralKeys(text=inputs.config, values={})

    # -- the whole run --------------------------------------------------------------------

    async def main(self) -> _report.Report:
        inputs, options = self.inputs, self.options
        # SIGTERM (kill, systemd) stops the run as Ctrl-C does: recorded, sandbox removed.
        main_task = asyncio.current_task()
        if main_task is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
        policy_set = self._check_policy()
        cn = self._cn = self._find_cn()
        script = _scripted.Script.from_file(options.model_script) if options.model_script else None
        image = runner_image()
        snapshot = runs.snapshot(
            policy.snapshot_content(inputs.policies), runtime_class=runs.RUNTIME_CLASS
        )
        (self.run_root / "run").mkdir(parents=True, exist_ok=True)
        workspace = self.run_root / "workspace"
        workspace.mkdir(exist_ok=True)
        book = ledger.open(self.ledger_url)
        model: ModelServer | None = None
        model_base = ""
        server: gateway.Gateway | None = None
        try:
            with _sandbox.Sandbox(mode=options.sandbox) as box:
                if options.model is not None:
                    model = options.model
                    model_base = await model.start()
                    self.say(f"model: {type(model).__name__} at {model_base}")
                elif script is not None:
                    model = _scripted.ScriptedModel(script)
                    model_base = await model.start()
                    self.say(f"model: scripted ({options.model_script}) at {model_base}")
                admin_token = gateway.new_token()
                server = gateway.Gateway(
                    record_root=str(self.state / "records"),
                    ledger=book,
                    admin_token=admin_token,
                    decide=self._decider(policy_set, workspace),
                )
                base_url = await server.start(host=box.host_address)
                box.allow_tcp(int(base_url.rsplit(":", 1)[1]))
                plan = self._plan(snapshot, image, policy_set, token=gateway.new_token())
                bundle = self._bundle(plan, base_url, cn, workspace)
                server.register_run(self._registration(plan, bundle, model, model_base))
                token_file = self.run_root / "admin-token"
                _write_private(token_file, admin_token)
                self._write_run_dir(bundle, plan.token)
                self._record_start(book, plan, image)
                self.say(f"gateway: {base_url} (run {self.uid})")
                self.say(
                    f"approvals: orchestrator approvals {self.uid} --gateway {base_url} "
                    f"--admin-token-file {token_file}"
                )
                try:
                    completed = await self._execute(box, bundle, cn, server, book, token_file)
                except asyncio.CancelledError:
                    await self._stopped(server, book, plan)
                    raise
                await self._drain_progress(server, book, token_file)
                record_digest = await server.unregister_run(self.uid)
        finally:
            if server is not None:
                await server.stop()
            if model is not None:
                await model.stop()
        try:
            report = self._finish(book, plan, image, base_url, completed, record_digest)
        finally:
            book.close()
        (self.run_root / "report.json").write_text(
            report.model_dump_json(by_alias=True, indent=2), encoding="utf-8"
        )
        return report

    # -- before the sandbox ----------------------------------------------------------------

    def _check_policy(self) -> policy.PolicySet:
        """The operator's admission checks: policy compiles, timeout, repository, secrets."""
        inputs = self.inputs
        spec = inputs.run.spec
        where = f"{inputs.manifest} (AgentRun/{inputs.name})"
        policy_set = policy.compile(list(inputs.policies))
        limit = min(p.spec.sandbox.max_timeout_seconds for p in inputs.policies)
        if spec.timeout_seconds > limit:
            raise errors.PolicyError(
                f"spec.timeoutSeconds {spec.timeout_seconds} exceeds the policy's "
                f"sandbox.maxTimeoutSeconds of {limit}",
                where=where,
            )
        context = policy.RunContext(namespace=inputs.namespace, name=inputs.name, uid=self.uid)
        requests = [
            ("spec.repository.url", policy.Request(
                action=api.Action.REPOSITORY_ACCESS, repository=spec.repository.url, run=context
            )),
            *((f"spec.secrets[{i}].name", policy.Request(
                action=api.Action.SECRET_READ, secret=m.name, run=context
            )) for i, m in enumerate(spec.secrets)),
        ]  # fmt: skip
        self._literals = runner.broker_literal_keys(inputs.config, where=f"{where}: config.yaml")
        self._brokered = runner.brokered_secrets(self._literals.text, where=f"{where}: config.yaml")
        unmapped = sorted(
            self._brokered - {m.name for m in spec.secrets} - {*self._literals.values}
        )
        if unmapped:
            raise errors.ManifestError(
                f"a model's apiKey uses secret {unmapped[0]!r}, which spec.secrets does not map",
                where=where,
                fix="add it to spec.secrets and pass --secret NAME=env:VARIABLE",
            )
        for field, request in requests:
            decision = policy.decide(policy_set, request)
            if decision.effect is not api.Effect.ALLOW:
                raise errors.PolicyError(
                    f"{field}: {request.describe()} is {decision.effect.value} "
                    f"(rule {decision.rule or 'default'}: {decision.reason})",
                    where=where,
                    fix="change the AgentRun or ask the policy's owner",
                )
        return policy_set

    def _find_cn(self) -> str:
        cn = self.options.cn or os.environ.get("ORCHESTRATOR_CN") or default_cn()
        if not os.access(cn, os.X_OK):
            raise errors.OrchestratorError(
                f"the Continue CLI is not at {cn}",
                where="orchestrator run",
                fix="run hack/install-cn.sh (make cn), or pass --cn PATH",
            )
        return os.path.realpath(cn)

    def _registration(
        self,
        plan: runs.Plan,
        bundle: runner.RunBundle,
        model: ModelServer | None,
        model_base: str,
    ) -> gateway.RunRegistration:
        """The run as the operator registers it: the same admin-API body, parsed by the
        gateway's own parser (policy recompiled and checked against its digest)."""
        source = runs.registration(plan, expires_at=time.time() + plan.timeout_seconds + 300)
        models = None
        if model is not None:
            # A local model stands in for every upstream, and is handed the credential the
            # real one would get (the gateway's Authorization header), as a provider is.
            real = gateway.upstreams_from_config(plan.config, source.secrets)
            models = {
                name: gateway.Upstream(model_base, upstream.api_key, upstream.provider)
                for name, upstream in real.items()
            }
        body = gateway.registration_body(
            source,
            models=models,
            workspace=bundle.paths.workspace,
            approval_timeout=float(self.inputs.run_policy.spec.approval_timeout_seconds),
        )
        if model is not None:
            body["allowedEgress"] = sorted({*body["allowedEgress"], f"127.0.0.1:{model.port}"})
        return gateway.parse_registration(body)

    def _decider(
        self, policy_set: policy.PolicySet, workspace: pathlib.Path
    ) -> gateway.ToolDecider:
        context = policy.RunContext(
            namespace=self.inputs.namespace, name=self.inputs.name, uid=self.uid,
            workspace_root="/workspace" if self.options.sandbox != "none" else str(workspace),
        )  # fmt: skip

        def decide(
            registration: gateway.RunRegistration, tool: str, arguments: Mapping[str, Any]
        ) -> gateway.Decision:
            decision: gateway.Decision = policy.decide_tool_call(
                policy_set, tool, arguments, run=context, workspace=workspace
            )
            return decision

        return decide

    def _plan(
        self, snapshot: runs.Snapshot, image: str, policy_set: policy.PolicySet, *, token: str
    ) -> runs.Plan:
        run = self.inputs.run
        return runs.Plan(
            run=run,
            uid=self.uid,
            namespace=self.inputs.namespace,
            name=self.uid,
            snapshot=snapshot,
            config=self._literals.text,
            secret_values={
                m.name: self.inputs.secrets[m.name].encode()
                for m in run.spec.secrets
                if m.name not in self._brokered
            },
            brokered_values={
                **{
                    m.name: self.inputs.secrets[m.name].encode()
                    for m in run.spec.secrets
                    if m.name in self._brokered
                },
                **{name: value.encode() for name, value in self._literals.values.items()},
            },
            inputs_digest=runs.inputs_digest(
                run,
                config=self._literals.text,
                snapshot=snapshot,
                runner_image=image,
                runner_command=runs.RUNNER_COMMAND,
            ),
            token=token,
            permissions_yaml=policy.to_permissions_yaml(policy_set),
        )

    def _bundle(
        self, plan: runs.Plan, gateway_url: str, cn: str, workspace: pathlib.Path
    ) -> runner.RunBundle:
        """The operator's bundle; local mode changes only where things are."""
        bundle = runs.bundle(plan, gateway_url=gateway_url)
        update: dict[str, Any] = {"run": self.uid}
        if self.options.sandbox == "none":
            run_dir = self.run_root / "run"
            update.update(
                secrets_dir=str(run_dir / "secrets"),
                token_file=str(run_dir / "token"),
                paths=runner.Paths(
                    workspace=str(workspace), home=str(self.run_root / "home"), cn=cn
                ),
            )
        else:
            update["paths"] = runner.Paths(cn=cn)
        return bundle.model_copy(update=update)

    def _write_run_dir(self, bundle: runner.RunBundle, token: str) -> None:
        """The pod's run directory: token, bundle and delivered secrets, one file each (the
        brokered model credentials stay with the gateway, as the operator keeps them)."""
        run_dir = self.run_root / "run"
        _write_private(run_dir / "token", token)
        _write_private(run_dir / "bundle.json", bundle.model_dump_json(by_alias=True))
        (run_dir / "secrets").mkdir(exist_ok=True)
        for mapping in self.inputs.run.spec.secrets:
            if mapping.name not in self._brokered:
                secret = run_dir / "secrets" / mapping.name
                _write_private(secret, self.inputs.secrets[mapping.name])

    def _record_start(self, book: ledger.Ledger, plan: runs.Plan, image: str) -> None:
        spec = self.inputs.run.spec
        base = {"name": self.inputs.name, "namespace": self.inputs.namespace}
        items = [
            ledger.Append(self.uid, ledger.Kind.RUN_CREATED, self.actor, {
                **base,
                "repository": spec.repository.url,
                "policyRef": spec.policy_ref.name,
                "inputsDigest": plan.inputs_digest,
                "policyDigest": plan.snapshot.digest,
                "policies": list(plan.snapshot.sources),
                "runnerImage": image,
                "sandbox": self.options.sandbox,
                "secrets": sorted({*plan.secret_values, *plan.brokered_values}),
                "mode": "local",
                **_digests.run_created_fields(
                    self.inputs, records.BlobStore(str(self.state / "records")),
                    policy_digest=plan.snapshot.digest, runner_image=image,
                    cli=_digests.cli_version(self._cn, CN_VERSION),
                ),
            }),
            *(ledger.Append(self.uid, ledger.Kind.SECRET_READ, self.actor, {
                "name": m.name,
                "namespace": self.inputs.namespace,
                "purpose": runs.secret_purpose(i, m.name, self._brokered),
            }) for i, m in enumerate(spec.secrets)),
            ledger.Append(self.uid, ledger.Kind.RUN_STARTED, self.actor, {
                **base, "startTime": self.started.isoformat(), "sandbox": self.options.sandbox,
            }),
        ]  # fmt: skip
        book.append_many(items)
        where = "gVisor sandbox" if self.options.sandbox != "none" else "NO SANDBOX"
        self.say(f"phase: Running ({where})")

    # -- the sandbox and progress ------------------------------------------------------------

    async def _execute(
        self,
        box: _sandbox.Sandbox,
        bundle: runner.RunBundle,
        cn: str,
        server: gateway.Gateway,
        book: ledger.Ledger,
        token_file: pathlib.Path,
    ) -> Any:
        run_dir = self.run_root / "run"
        argv = [sys.executable, "-m", "continue_orchestrator.runner"]
        timeout = float(self.inputs.run.spec.timeout_seconds + 120)
        if self.options.sandbox == "none":
            (self.run_root / "home").mkdir(exist_ok=True)
            env = {"PATH": os.environ.get("PATH", _SANDBOX_PATH),
                   runner.BUNDLE_FILE_ENV: str(run_dir / "bundle.json")}  # fmt: skip
            binds: list[_sandbox.Bind] = []
        else:
            pod_run_dir = str(pathlib.PurePosixPath(str(bundle.token_file)).parent)
            python = _sandbox.python_binds()
            pycache = await asyncio.to_thread(
                _sandbox.bytecode_cache,
                _sandbox.default_bytecode_cache(),
                [bind.source for bind in python],
            )
            env = {"PATH": _SANDBOX_PATH, runner.BUNDLE_FILE_ENV: f"{pod_run_dir}/bundle.json",
                   "PYTHONPYCACHEPREFIX": str(pycache)}  # fmt: skip
            binds = [
                _sandbox.Bind(str(self.run_root / "workspace"), bundle.paths.workspace, True),
                _sandbox.Bind(str(run_dir), pod_run_dir),
                _sandbox.Bind(str(pathlib.Path(cn).parents[2])),
                *python,
                _sandbox.Bind(str(pycache)),
            ]
            origin = _local_origin(bundle.repository.url)
            if origin is not None:
                binds.append(_sandbox.Bind(origin))
        self.say("sandbox: starting the runner (clone, agent, verify)")
        task = asyncio.ensure_future(
            asyncio.to_thread(
                box.run, argv, env=env, cwd="/" if binds else str(self.run_root),
                binds=binds, timeout=timeout,
            )
        )  # fmt: skip
        try:
            while not task.done():
                await self._progress(server, book, token_file)
                await asyncio.wait({task}, timeout=0.25)
        except asyncio.CancelledError:
            _stop_children()
            raise
        completed = task.result()
        self.say(f"sandbox: runner exited {completed.exit_code}")
        if completed.exit_code not in (0, None) and completed.stderr:
            tail = completed.stderr.decode(errors="replace").strip().splitlines()[-8:]
            for line in tail:
                self.say(f"  | {line}")
        return completed

    async def _drain_progress(
        self, server: gateway.Gateway, book: ledger.Ledger, token_file: pathlib.Path
    ) -> None:
        await self._progress(server, book, token_file)

    async def _progress(
        self, server: gateway.Gateway, book: ledger.Ledger, token_file: pathlib.Path
    ) -> None:
        """Say what the ledger gained since last time; decide approvals if told to."""
        entries = await asyncio.to_thread(
            lambda: list(book.entries(run_uid=self.uid, start=self._seen))
        )
        for entry in entries:
            self._seen = entry.sequence + 1
            self._announce(entry)
        for approval in server.pending_approvals(self.uid):
            if approval.id in self._decided:
                continue
            if self.options.approvals == "ask":
                if approval.id not in self._announced:
                    self._announced.add(approval.id)
                    self._ask(approval, server.base_url, token_file)
                continue
            self._decided.add(approval.id)
            approve = self.options.approvals == "approve"
            by = self.options.decided_by or getpass.getuser()
            flag = "--approve-all" if approve else "--deny-all"
            assert isinstance(server.broker, gateway.LocalApprovalBroker)
            server.broker.decide(self.uid, approval.id, approved=approve, by=f"{by} ({flag})",
                   reason=f"decided by {flag}")  # fmt: skip

    def _ask(self, approval: gateway.Approval, base_url: str, token_file: pathlib.Path) -> None:
        common = f"{self.uid} {approval.id} --gateway {base_url} --admin-token-file {token_file}"
        self.say(
            f"\n  WAITING FOR APPROVAL: {approval.tool} {_brief_json(approval.arguments)}\n"
            f"    rule {approval.rule}: {approval.reason}\n"
            f"    approve:  orchestrator approve {common}\n"
            f"    deny:     orchestrator deny {common}\n"
            f"    (denied automatically after {approval.timeout:g} s)\n"
        )

    def _announce(self, entry: ledger.Entry) -> None:
        payload = entry.payload or {}
        kind = entry.kind
        if kind is ledger.Kind.POLICY_DECISION and "tool" in payload:
            effect = str(payload.get("effect"))
            mark = {"Allow": "allow", "Deny": "DENY", "RequireApproval": "HOLD"}.get(effect, effect)
            rule = payload.get("rule") or "default"
            self.say(
                f"  [{entry.sequence}] {mark:<5} {payload.get('tool')} "
                f"{_brief_json(payload.get('arguments'))}  ({rule}: {payload.get('reason')})"
            )
        elif kind is ledger.Kind.POLICY_DECISION:
            self.say(f"  [{entry.sequence}] {payload.get('effect')} {payload.get('action')} "
                     f"{payload.get('host')}:{payload.get('port')}")  # fmt: skip
        elif kind is ledger.Kind.APPROVAL_GRANTED:
            self.say(f"  [{entry.sequence}] approved {payload.get('tool')} by {payload.get('by')}")
        elif kind is ledger.Kind.APPROVAL_DENIED:
            self.say(f"  [{entry.sequence}] refused {payload.get('tool')} by {payload.get('by')}")
        elif kind is ledger.Kind.RUN_FINISHED and entry.actor == "runner":
            self.say(f"  [{entry.sequence}] runner reported {payload.get('status')}")

    async def _stopped(self, server: gateway.Gateway, book: ledger.Ledger, plan: runs.Plan) -> None:
        """Ctrl-C: held calls are refused, and the run ends Cancelled, as a manual stop."""
        broker = server.broker
        if isinstance(broker, gateway.LocalApprovalBroker):
            for approval in broker.pending(self.uid):
                broker.decide(self.uid, approval.id, approved=False, by=self.actor,
                              reason="the run was stopped")  # fmt: skip
        await asyncio.sleep(0.5)  # let the gateway record the refusals and answer
        finish = runs.Finish(
            phase=api.Phase.CANCELLED, reason="ManualStop",
            message="interrupted by the person running orchestrator run",
            started_at=self.started, finished_at=datetime.now(UTC),
            inputs_digest=plan.inputs_digest, policy_digest=plan.snapshot.digest,
        )  # fmt: skip
        payload = finish.payload(name=self.inputs.name, namespace=self.inputs.namespace)
        book.append(self.uid, ledger.Kind.RUN_FINISHED, self.actor, payload)
        self.say("phase: Cancelled (ManualStop); the sandbox is being torn down")

    # -- after the sandbox --------------------------------------------------------------------

    def _finish(
        self,
        book: ledger.Ledger,
        plan: runs.Plan,
        image: str,
        gateway_url: str,
        completed: Any,
        record_digest: str | None,
    ) -> _report.Report:
        evidence = runs.read_evidence(records.BlobStore(str(self.state / "records")), self.uid)
        evidence = evidence or runs.Evidence()
        outcome = evidence.outcome
        if completed.timed_out:
            phase, reason = api.Phase.TIMED_OUT, "DeadlineExceeded"
        else:
            reported = outcome.exit_code if outcome is not None else completed.exit_code
            phase, reason = runs.phase_of(reported)
        if outcome is None and phase is api.Phase.SUCCEEDED:
            phase, reason = api.Phase.FAILED, "NoOutcome"
        end = runs.Finish(
            phase=phase, reason=reason, message=outcome.message if outcome is not None else "",
            started_at=self.started, finished_at=datetime.now(UTC),
            inputs_digest=plan.inputs_digest, policy_digest=plan.snapshot.digest,
            record_digest=record_digest,
        )  # fmt: skip
        payload = end.payload(name=self.inputs.name, namespace=self.inputs.namespace)
        book.append(self.uid, ledger.Kind.RUN_FINISHED, self.actor, payload)
        self.say(f"phase: {phase.value} ({reason})")
        entries = list(book.entries(run_uid=self.uid))
        calls = runs.tool_calls(entries)
        allowed, denied, approved = runs.counts(calls)
        # The checkpoint the attestation cites is signed with the same development key.
        dev_key = attest.ensure_dev_key(self.state / "keys")
        signing_key = attest.load_private_key(
            dev_key.private_key_path.read_bytes(), where=str(dev_key.private_key_path)
        )
        checkpoint = book.checkpoint(ledger.KeySigner(signing_key))
        first, last = entries[0], entries[-1]
        summary = _report.LedgerSummary(
            url=self.ledger_url, first=first.sequence, last=last.sequence,
            head_sequence=last.sequence, head_hash=last.entry_hash,
            merkle_root=checkpoint.root_hash,
        )  # fmt: skip
        diff = outcome.diff if outcome is not None else None
        report = _report.Report(
            run=self.inputs.name, uid=self.uid, namespace=self.inputs.namespace,
            sandbox=self.options.sandbox, phase=phase.value, reason=reason, message=end.message,
            exit_code=completed.exit_code, gateway=gateway_url,
            tool_calls=calls, allowed=allowed, denied=denied, approved=approved,
            verify=[
                _report.VerifyLine(
                    name=v.name, command=v.command, exit_code=v.result.exit_code,
                    passed=v.passed, duration_seconds=v.result.duration_seconds,
                )
                for v in (outcome.verify if outcome is not None else [])
            ],
            diff_files=[_report.ChangedFile(status=f.status, path=f.path)
                        for f in (diff.files if diff is not None else [])],
            diff_digest=diff.digest if diff is not None else None,
            record_digest=record_digest, ledger=summary, state_dir=str(self.state),
        )  # fmt: skip
        facts = runs.facts(
            self.inputs.run,
            uid=self.uid,
            finish=end,
            entries=entries,
            evidence=evidence,
            merkle_root=checkpoint.root_hash,
            runner_image=image,
            builder_id=f"urn:continue-orchestrator:local:{os.uname().nodename}",
            stopped_by=self.actor,
        )
        report.attestation = self._attest(book, facts)
        head = list(book.entries(run_uid=self.uid, start=last.sequence + 1))
        if head:
            summary.head_sequence, summary.head_hash = head[-1].sequence, head[-1].entry_hash
        checked = ledger.verify(book, public_key=signing_key.public_key())
        summary.verified = checked.ok
        summary.problems = [f"entry {p.sequence}: {p.what}" for p in checked.problems]
        return report

    def _attest(self, book: ledger.Ledger, facts: attest.RunFacts) -> _report.AttestationSummary:
        key = attest.ensure_dev_key(self.state / "keys")
        signer = attest.KeySigner.from_pem(key.private_key_path.read_bytes(),
                                           where=str(key.private_key_path))  # fmt: skip
        statement = attest.build_statement(facts)
        status = attest.publish(
            statement,
            signer=signer,
            store=attest.FileStore(self.state / "attestations"),
            name=f"{self.uid}.sigstore.json",
            attempts=2,
            backoff_seconds=0.1,
        )
        summary = _report.AttestationSummary(
            signed=status.signed,
            public_key=str(key.public_key_path),
            location=status.location,
            bundle_digest=status.bundle_digest,
            statement_digest=status.statement_digest,
            reason=status.reason,
        )
        if status.signed and status.location:
            try:
                attest.verify_bundle(
                    pathlib.Path(status.location).read_bytes(),
                    public_key=key.public_key_path.read_bytes(),
                )
                summary.verified = True
            except errors.AttestationError as error:
                summary.reason = f"re-verification failed: {error.message}"
        book.append(self.uid, ledger.Kind.ATTESTATION_PUBLISHED, self.actor, {
            "name": self.inputs.name, "namespace": self.inputs.namespace,
            "signed": status.signed, "mode": "key", "key": _report.DEV_KEY_LABEL,
            "keyHint": signer.hint, "bundleDigest": status.bundle_digest,
            "statementDigest": status.statement_digest, "location": status.location,
            "reason": status.reason,
        })  # fmt: skip
        return summary


def _stop_children() -> None:
    """Kill the process groups of this process's own children (the sandboxed runner).

    ``Sandbox.run`` blocks in a worker thread; on Ctrl-C nothing else would stop it
    before the sandbox's network is torn down under it.
    """
    me = os.getpid()
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            with contextlib.suppress(OSError):
                os.killpg(int(entry.name), signal.SIGKILL)


def _local_origin(url: str) -> str | None:
    """The directory of a file:// repository, which the sandbox must be able to read."""
    if url.startswith("file://"):
        return url.removeprefix("file://")
    if url.startswith("/"):
        return url
    return None


def _brief_json(value: Any, limit: int = 90) -> str:
    if isinstance(value, dict) and "command" in value:
        text = "$ " + str(value["command"])
    elif isinstance(value, dict) and ("filepath" in value or "file_path" in value):
        text = str(value.get("filepath") or value.get("file_path"))
    else:
        text = json.dumps(value, sort_keys=True)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _write_private(path: pathlib.Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
