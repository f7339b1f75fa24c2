"""deploy/: what can be checked without Docker or a cluster.

The files parse; workloads, Services and probes fit together; every container runs the same
`ponder serve` / `ponder engine` command the tests run, with flags the real parser accepts; Prometheus
scrapes the compose services; and every metric a dashboard, an alert or the autoscaler queries exists
in what Ponder's `/metrics` really exports (or, for `vllm:*`, in the installed vLLM's metrics code).
These are structural checks: no Kubernetes or compose JSON schema ships offline here.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import httpx
import pytest
import vllm
import yaml

from engines.fake import FakeEngine
from ponder.cli import build_parser
from server.main import ServerConfig, create_app
from verifiers.fake import FakePRM

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


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def parses(argv: list[str]) -> Any:
    """The real CLI parser accepts these arguments (argparse exits on anything it does not know)."""
    return build_parser().parse_args(argv)


def test_every_manifest_parses_and_is_listed() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    for doc in k8s_docs():
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]


def test_workloads_services_and_probes_fit_together() -> None:
    workloads = of_kind("Deployment") + of_kind("StatefulSet")
    services = {s["metadata"]["name"]: s for s in of_kind("Service")}
    assert {w["metadata"]["name"] for w in workloads} == {"ponder", "policy", "prm"}
    for w in workloads:
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert w["spec"]["selector"]["matchLabels"].items() <= labels.items()
        service = services[w["metadata"]["name"]]
        assert service["spec"]["selector"].items() <= labels.items()
        container = w["spec"]["template"]["spec"]["containers"][0]
        port_names = {p["name"] for p in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            check = container[probe]["httpGet"]
            assert check["path"] == "/health" and check["port"] in port_names
        assert w["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        if w["kind"] == "StatefulSet":  # engines: stable replica names behind a headless Service
            assert service["spec"]["clusterIP"] == "None"
            assert w["spec"]["serviceName"] == service["metadata"]["name"]
            assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_containers_run_the_real_commands_with_accepted_flags() -> None:
    engines = {w["metadata"]["name"]: w for w in of_kind("StatefulSet")}
    for w in of_kind("Deployment") + of_kind("StatefulSet"):
        container = w["spec"]["template"]["spec"]["containers"][0]
        assert container["command"][0] == "ponder"
        args = parses(container["command"][1:] + container["args"])
        if container["command"][1] == "serve":
            # Every replica URL names a real StatefulSet pod: <name>-<i>.<service>.
            for url in args.policy_url + args.prm_url:
                host = re.fullmatch(r"http://([a-z]+)-(\d+)\.([a-z]+):8000", url)
                assert host is not None, url
                engine = engines[host.group(1)]
                assert int(host.group(2)) < engine["spec"]["replicas"]
                assert host.group(3) == engine["spec"]["serviceName"]
            assert len(args.policy_url) == engines["policy"]["spec"]["replicas"]
            assert len(args.prm_url) == engines["prm"]["spec"]["replicas"]


def test_the_api_key_comes_from_the_secret() -> None:
    (secret,) = of_kind("Secret")
    (controller,) = of_kind("Deployment")
    refs = controller["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert {"secretRef": {"name": secret["metadata"]["name"]}} in refs
    assert "PONDER_API_KEY" in secret["stringData"]


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfiles_are_non_root_with_a_health_check_and_run_ponder_serve(name: str) -> None:
    text = (DEPLOY / "docker" / name).read_text()
    instructions = {
        line.split()[0]: line for line in text.replace("\\\n", " ").splitlines() if line[:1].isupper()
    }
    assert json.loads(instructions["ENTRYPOINT"].removeprefix("ENTRYPOINT")) == ["ponder", "serve"]
    parses(["serve", *json.loads(instructions["CMD"].removeprefix("CMD"))])
    assert instructions["USER"].split()[1] != "root"
    assert "/health" in instructions["HEALTHCHECK"]


def test_compose_services_run_accepted_commands_and_prometheus_scrapes_them() -> None:
    services = compose()["services"]
    assert {"ponder", "policy", "prm", "prometheus", "grafana"} <= services.keys()
    parses(["serve", *services["ponder"]["command"]])
    for role in ("policy", "prm"):
        entry = services[role]["entrypoint"]
        assert entry == ["ponder", "engine", role]
        parses([*entry[1:], *services[role]["command"]])
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prometheus["scrape_configs"] for s in job["static_configs"] for t in s["targets"]}
    assert targets == {"ponder:8000", "policy:8000", "prm:8000"}
    command = " ".join(services["ponder"]["command"])
    assert "--policy-url http://policy:8000" in command and "--prm-url http://prm:8000" in command
    for volume in services["grafana"]["volumes"] + services["prometheus"]["volumes"]:
        assert (DEPLOY / volume.split(":")[0]).exists(), volume


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


def test_the_dashboard_covers_what_operators_look_at() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "ponder-dashboard.json").read_text())
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("accuracy", "tokens per second", "latency", "budget", "queued", "vllm"):
        assert topic in titles


async def test_every_ponder_metric_queried_is_exported() -> None:
    app = create_app(ServerConfig(models=Path("/nonexistent")), FakeEngine(), FakePRM())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        body = {
            "model": "ponder-default",
            "messages": [{"role": "user", "content": "3 7 9 13 -> 24"}],
            "search": {"strategy": "best_of_n", "reference": "24"},
        }
        assert (await http.post("/v1/chat/completions", json=body)).status_code == 200
        await http.get("/health")
        exported = (await http.get("/metrics")).text
    families = {line.split()[2] for line in exported.splitlines() if line.startswith("# TYPE")}
    series = {re.split(r"[{ ]", line)[0] for line in exported.splitlines() if line and line[0] != "#"}
    ponder = {n for n in queried_metrics() if n.startswith("ponder_")}
    assert ponder and ponder <= series | families


def test_every_vllm_metric_queried_exists_in_the_installed_vllm() -> None:
    source = "".join(p.read_text() for p in (Path(vllm.__file__).parent / "v1" / "metrics").glob("*.py"))
    defined = set(re.findall(r'"(vllm:[a-z_]+)"', source))
    for name in (n for n in queried_metrics() if n.startswith("vllm:")):
        # prometheus-client adds _total to counters, and _bucket/_sum/_count to histograms.
        assert re.sub(r"_(total|bucket|sum|count)$", "", name) in defined, name


def test_compose_and_manifests_stay_shell_safe() -> None:
    # A command list must hold one argument per item (a space inside one is almost always a mistake).
    for doc in of_kind("Deployment") + of_kind("StatefulSet"):
        container = doc["spec"]["template"]["spec"]["containers"][0]
        for arg in container["command"] + container["args"]:
            assert shlex.split(arg) == [arg]
