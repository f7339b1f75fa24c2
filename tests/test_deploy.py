"""deploy/: what can be checked without Docker or a cluster.

The files parse; workloads, Services and probes fit together; every container runs the same
`ponder serve` / `ponder engine` command the tests run, with flags the real parser accepts; Prometheus
scrapes the compose services; and every metric a dashboard, an alert or the autoscaler queries exists
in what Ponder's `/metrics` really exports (or, for `vllm:*`, in the installed vLLM's metrics code).
The compose file validates against the compose specification's JSON schema (as vendored by
check-jsonschema) and every Kubernetes resource against the Kubernetes API's schemas (kubernetes-validate,
strict: unknown fields fail), all offline; each validator is shown to reject a broken copy, so a
validator that accepts everything cannot pass. The two custom resources (Kustomization, ServiceMonitor)
have no schema there and get structural checks.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import vllm
import yaml
from deploy_files import DEPLOY, K8S, exported_names, k8s_docs, of_kind, queried_metrics
from fake_engine import FakeEngine
from fake_prm import FakePRM

from ponder.cli import build_parser
from server.main import create_app
from server.settings import ServerSettings


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


def compose_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads(
        files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_validates_against_the_compose_spec() -> None:
    assert compose_errors(compose()) == []
    unknown_key, bad_condition = compose(), compose()
    unknown_key["services"]["policy"]["restart_policy"] = "always"  # a deploy key, not a service key
    bad_condition["services"]["ponder"]["depends_on"]["prm"]["condition"] = "when_ready"
    assert compose_errors(unknown_key) and compose_errors(bad_condition)


CUSTOM_RESOURCES = {"ServiceMonitor"}  # CRDs: the Kubernetes API's schemas do not cover them


@pytest.mark.parametrize("version", ["1.30.0", kubernetes_validate.latest_version()])
def test_manifests_validate_against_the_kubernetes_api(version: str) -> None:
    checked = set()
    for doc in k8s_docs():
        if doc["kind"] not in CUSTOM_RESOURCES:
            kubernetes_validate.validate(doc, version, strict=True)
            checked.add(doc["kind"])
    assert checked == {
        "Namespace",
        "Secret",
        "ConfigMap",
        "StatefulSet",
        "Service",
        "Deployment",
        "HorizontalPodAutoscaler",
    }
    (controller,) = copy.deepcopy(of_kind("Deployment"))
    controller["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [8000]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(controller, version, strict=True)
    controller = copy.deepcopy(of_kind("Deployment")[0])
    controller["spec"]["replica"] = 2  # a typo strict validation must catch
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(controller, version, strict=True)


def test_the_service_monitor_scrapes_the_controller_and_both_engines() -> None:
    (monitor,) = of_kind("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    selected = [s for s in of_kind("Service") if wanted <= s["metadata"].get("labels", {}).items()]
    assert {s["metadata"]["name"] for s in selected} == {"ponder", "policy", "prm"}
    for service in selected:
        ports = {p["name"] for p in service["spec"]["ports"]}
        assert all(e["port"] in ports and e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])


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


def test_the_dashboard_covers_what_operators_look_at() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "ponder-dashboard.json").read_text())
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("accuracy", "tokens per second", "latency", "budget", "queued", "vllm"):
        assert topic in titles


async def test_every_ponder_metric_queried_is_exported() -> None:
    app = create_app(ServerSettings(models=Path("/nonexistent")), FakeEngine(), FakePRM())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        body = {
            "model": "ponder-default",
            "messages": [{"role": "user", "content": "3 7 9 13 -> 24"}],
            "search": {"strategy": "best_of_n", "reference": "24"},
        }
        assert (await http.post("/v1/chat/completions", json=body)).status_code == 200
        await http.get("/health")
        exported = (await http.get("/metrics")).text
    ponder = {n for n in queried_metrics() if n.startswith("ponder_")}
    assert ponder and ponder <= exported_names(exported)


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


MODEL_SETTINGS = {"PONDER_POLICY", "PONDER_PRM", "PONDER_PRM_FORMAT", "PONDER_STEP_DELIMITER"}


def test_the_models_are_settings_every_workload_reads() -> None:
    """Compose and Kubernetes choose the models with the same settings as the command line."""
    services = compose()["services"]
    for name in ("ponder", "policy", "prm"):
        assert set(services[name]["environment"]) >= MODEL_SETTINGS, name
    (models,) = [c for c in of_kind("ConfigMap") if c["metadata"]["name"] == "ponder-models"]
    assert set(models["data"]) >= MODEL_SETTINGS
    for w in of_kind("Deployment") + of_kind("StatefulSet"):
        refs = w["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        assert {"configMapRef": {"name": "ponder-models"}} in refs, w["metadata"]["name"]


def test_model_settings_come_from_the_environment_and_empty_means_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PONDER_POLICY", "/models/qwen")
    monkeypatch.setenv("PONDER_PRM", "/models/qwen-prm")
    monkeypatch.setenv("PONDER_PRM_FORMAT", "qwen")
    monkeypatch.setenv("PONDER_STEP_DELIMITER", "\\n\\n")
    monkeypatch.setenv("PONDER_MODEL_NAME", "")  # compose's ${PONDER_MODEL_NAME:-}: the default
    args = parses(["serve"])
    settings = args.settings_of(args)
    assert (settings.policy_dir, settings.prm_dir) == ("/models/qwen", "/models/qwen-prm")
    assert settings.prm_format == "qwen" and settings.step_delimiter == "\n\n"
    assert settings.model_name == "ponder-default" and settings.auto_table is None
