"""The chart's alerting rules, unit-tested with the real `promtool test rules` (Debian's
prometheus package; hack/install-promtool.sh). That every series the rules and the Grafana
dashboard query is one the code exports is test_chart_render.py's
test_alerts_only_use_metrics_the_code_exports.

The rules are the ones `helm template` renders with `metrics.prometheusRule.enabled`; each
case feeds promtool input series and says which alerts must fire, with which labels and
annotations, at which time (promtool compares labels and annotations exactly)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.integration.chart import chart_support as chart

RELEASE = "co"
JOB = f"{RELEASE}-continue-orchestrator-operator-metrics"
FINISHED = 'orchestrator_agentruns_finished_total{phase="Succeeded",reason="Verified"}'
DENIED = 'orchestrator_gateway_tool_decisions_total{effect="Deny"}'
ALLOWED = 'orchestrator_gateway_tool_decisions_total{effect="Allow"}'
STOPS = 'orchestrator_interventions_total{kind="stop"}'
JSON = dict[str, Any]


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: run hack/install-promtool.sh (make test does)")
    return found


@pytest.fixture(scope="module")
def rules() -> list[JSON]:
    """The alerting rules as the chart renders them (default threshold)."""
    docs = chart.documents(
        chart.template(values={"metrics.prometheusRule.enabled": "true"}, release=RELEASE).stdout
    )
    groups: list[JSON] = chart.find(docs, "PrometheusRule")["spec"]["groups"]
    return groups


def _alert(groups: list[JSON], name: str) -> JSON:
    found = [r for g in groups for r in g["rules"] if r.get("alert") == name]
    assert len(found) == 1, name
    return found[0]


def _expected(rule: JSON, **labels: str) -> JSON:
    """What promtool must see of one firing alert: the rule's labels plus the series'
    labels, and its annotations with `{{ $labels.x }}` filled in."""

    def fill(text: str) -> str:
        return re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels[m.group(1)], text)

    return {
        "exp_labels": {**rule.get("labels", {}), **labels},
        "exp_annotations": {k: fill(v) for k, v in rule.get("annotations", {}).items()},
    }


def _promtool_test(tmp_path: Path, groups: list[JSON], tests: list[JSON]) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    check = subprocess.run(
        [_promtool(), "check", "rules", "rules.yaml"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    (tmp_path / "test.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests})
    )
    result = subprocess.run(
        [_promtool(), "test", "rules", "test.yaml"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def _series(**series: str) -> list[JSON]:
    return [{"series": name, "values": values} for name, values in series.items()]


def test_intervention_rate_fires_on_denials_alone(tmp_path: Path, rules: list[JSON]) -> None:
    """No run was stopped (the interventions counter has no series at all), but the
    gateway denies 10 tool calls a minute for one finished run a minute."""
    rule = _alert(rules, "OrchestratorInterventionRateHigh")
    tests = [
        {
            "interval": "1m",
            "input_series": [
                {"series": DENIED, "values": "0+10x120"},
                {"series": FINISHED, "values": "0+1x120"},
            ],
            "alert_rule_test": [
                # increase over 1h ≈ 10 per run > 0.5 from ~1 min on; `for: 30m`
                {"eval_time": "20m", "alertname": rule["alert"], "exp_alerts": []},
                {"eval_time": "90m", "alertname": rule["alert"], "exp_alerts": [_expected(rule)]},
            ],
        }
    ]
    _promtool_test(tmp_path, rules, tests)


def test_intervention_rate_fires_on_stops_alone_and_stays_quiet_below_threshold(
    tmp_path: Path, rules: list[JSON]
) -> None:
    rule = _alert(rules, "OrchestratorInterventionRateHigh")
    tests = [
        {  # every run stopped by a person, no tool call denied (no Deny series)
            "interval": "1m",
            "input_series": [
                {"series": STOPS, "values": "0+1x120"},
                {"series": FINISHED, "values": "0+1x120"},
            ],
            "alert_rule_test": [
                {"eval_time": "90m", "alertname": rule["alert"], "exp_alerts": [_expected(rule)]}
            ],
        },
        {  # one denial in ten runs, none stopped: 0.1 per run, below 0.5
            "interval": "1m",
            "input_series": [
                {"series": DENIED, "values": "0+1x120"},
                {"series": ALLOWED, "values": "0+50x120"},
                {"series": STOPS, "values": "0x120"},
                {"series": FINISHED, "values": "0+10x120"},
            ],
            "alert_rule_test": [{"eval_time": "90m", "alertname": rule["alert"], "exp_alerts": []}],
        },
    ]
    _promtool_test(tmp_path, rules, tests)


def test_the_other_alerts_fire_on_what_they_name_and_not_before(
    tmp_path: Path, rules: list[JSON]
) -> None:
    errors = _alert(rules, "OrchestratorReconcileErrors")
    signing = _alert(rules, "OrchestratorAttestationSigningFailing")
    refused = _alert(rules, "OrchestratorGatewayRefusingCalls")
    down = _alert(rules, "OrchestratorOperatorDown")
    tests = [
        {
            "interval": "1m",
            "input_series": [
                {
                    "series": 'orchestrator_reconcile_errors_total{handler="create"}',
                    "values": "0+2x60",
                },
                {
                    "series": 'orchestrator_reconcile_errors_total{handler="delete"}',
                    "values": "0x60",
                },
                {
                    "series": "orchestrator_attestation_signing_failures_total"
                    '{mode="key",stage="sign"}',
                    "values": "0+1x60",
                },
                {
                    "series": 'orchestrator_gateway_refused_calls_total{reason="unknown-token"}',
                    "values": "0+12x60",
                },  # 0.2/s
                {
                    "series": 'orchestrator_gateway_refused_calls_total{reason="expired-token"}',
                    "values": "0+1x60",
                },  # 1/min: below 0.1/s
                {"series": f'up{{job="{JOB}"}}', "values": "1x20 0x40"},
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": errors["alert"], "exp_alerts": []},
                {
                    "eval_time": "40m",
                    "alertname": errors["alert"],
                    "exp_alerts": [_expected(errors, handler="create")],
                },
                {
                    "eval_time": "40m",
                    "alertname": signing["alert"],
                    "exp_alerts": [_expected(signing, mode="key", stage="sign")],
                },
                {
                    "eval_time": "40m",
                    "alertname": refused["alert"],
                    "exp_alerts": [_expected(refused, reason="unknown-token")],
                },
                {"eval_time": "15m", "alertname": down["alert"], "exp_alerts": []},
                {"eval_time": "25m", "alertname": down["alert"], "exp_alerts": []},
                {"eval_time": "40m", "alertname": down["alert"], "exp_alerts": [_expected(down)]},
            ],
        },
    ]
    _promtool_test(tmp_path, rules, tests)
