"""The files under deploy/ as the tests read them, and every metric name their queries use.

A helper module for tests/test_deploy.py and the live-scrape tests on real servers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
K8S = DEPLOY / "k8s"


def k8s_docs() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_docs() if d["kind"] == kind]


def queried_metrics() -> set[str]:
    """Every metric name in the dashboard's queries, the alert rules and the autoscaler."""
    dashboard = json.loads((DEPLOY / "grafana" / "ponder-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs += [r["expr"] for g in alerts["groups"] for r in g["rules"]]
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    exprs += [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]]
    names = {n for e in exprs for n in re.findall(r"\b(?:ponder_|vllm:)[a-z_:]+", e)}
    return names


def exported_names(exposition: str) -> set[str]:
    """Metric families and series names in a Prometheus text exposition (what /metrics returns)."""
    lines = exposition.splitlines()
    families = {line.split()[2] for line in lines if line.startswith("# TYPE")}
    series = {re.split(r"[{ ]", line)[0] for line in lines if line and line[0] != "#"}
    return families | series
