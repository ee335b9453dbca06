"""The Helm chart (helm/otlp-gateway): `helm lint` and `helm template` over the default values
and the production values file; every rendered object validated against the Kubernetes JSON
schemas (kubernetes-validate, bundled, offline) for the oldest and newest Kubernetes the chart
supports; custom resources (Gateway API routes, ServiceMonitor: no bundled schema) checked
against the Services they point at; and the rendered configuration accepted by the real
production settings. Skips, saying why, where no helm binary is found."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "otlp-gateway"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
VALUE_SETS = {"default": [], "production": ["-f", str(PRODUCTION_VALUES)]}
# The chart's kubeVersion floor, and the newest schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.27.0", "1.33.0", "1.37.0")
CUSTOM_RESOURCES = {
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("gateway.networking.k8s.io/v1", "GRPCRoute"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}
NAMESPACE = "telemetry"


def _find_helm() -> str | None:
    for candidate in (os.environ.get("HELM"), shutil.which("helm"), str(Path.home() / ".local" / "bin" / "helm")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


HELM = _find_helm()
pytestmark = pytest.mark.skipif(
    HELM is None,
    reason="no helm binary on PATH, in $HELM or ~/.local/bin (../shared/tools/install-helm or "
    ".ci/install-helm installs one)",
)


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=60)


def render(values: str, *extra: str, release: str = "gw") -> list[dict]:
    out = helm("template", release, str(CHART), "--namespace", NAMESPACE, *VALUE_SETS[values], *extra)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module", params=list(VALUE_SETS))
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(request.param)


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def pod_specs(objects: list[dict]) -> dict[str, dict]:
    specs = {}
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            specs[f"{obj['kind']}/{obj['metadata']['name']}"] = obj["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            specs[f"Pod/{obj['metadata']['name']}"] = obj["spec"]
    return specs


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_helm_lint(values):
    out = helm("lint", "--strict", str(CHART), *VALUE_SETS[values])
    assert out.returncode == 0, out.stdout + out.stderr


def test_values_schema_refuses_typos_and_bad_values():
    for bad in ("imag.tag=1", "config.logFormat=xml", "http.replicas=-1", "secrets.databaseUrl=mysql://x"):
        out = helm("template", "gw", str(CHART), "--set", bad)
        assert out.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in out.stderr, out.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_kubernetes(rendered, version):
    import kubernetes_validate

    _, objects = rendered
    checked = 0
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_RESOURCES:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} is not valid for Kubernetes {version}: {exc}")
        checked += 1
    assert checked >= 12


def test_the_objects_each_values_file_renders(rendered):
    values, objects = rendered
    kinds = sorted(f"{obj['kind']}/{obj['metadata']['name'].removeprefix('gw-otlp-gateway')}" for obj in objects)
    common = [
        "ConfigMap/",
        "Deployment/-grpc",
        "Deployment/-http",
        "Job/-migrations",
        "PodDisruptionBudget/-grpc",
        "PodDisruptionBudget/-http",
        "Pod/-test-readyz",
        "Service/-console",
        "Service/-grpc",
        "Service/-http",
        "ServiceAccount/",
    ]
    if values == "default":
        # The chart's own Secret, and its copy for the migrations hook.
        assert kinds == sorted(common + ["Secret/", "Secret/-migrations"])
    else:
        assert kinds == sorted(
            common
            + [
                "GRPCRoute/-grpc",
                "HTTPRoute/-http",
                "HorizontalPodAutoscaler/-grpc",
                "HorizontalPodAutoscaler/-http",
                "Ingress/-grpc",
                "Ingress/-http",
                "NetworkPolicy/-grpc",
                "NetworkPolicy/-http",
                "ServiceMonitor/",
                "ConfigMap/-dashboards",
            ]
        )
        # Replicas belong to the autoscaler.
        assert all("replicas" not in d["spec"] for d in by_kind(objects, "Deployment").values())


def test_pods_run_locked_down(rendered):
    _, objects = rendered
    for name, spec in pod_specs(objects).items():
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] > 0, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert container["resources"]["limits"] and container["resources"]["requests"], name
            if not name.startswith("Pod/"):
                mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
                assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_probes_use_healthz_readyz_and_grpc_health(rendered):
    _, objects = rendered
    deployments = by_kind(objects, "Deployment")
    http = deployments["gw-otlp-gateway-http"]["spec"]["template"]["spec"]["containers"][0]
    grpc = deployments["gw-otlp-gateway-grpc"]["spec"]["template"]["spec"]["containers"][0]
    assert http["args"] == ["http"] and grpc["args"] == ["grpc"]
    assert http["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert http["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert grpc[probe]["grpc"] == {"port": 4317}
    # Probes and scrapes come with the pod IP as Host; production settings allow it from here.
    for container in (http, grpc):
        pod_ip = next(env for env in container["env"] if env["name"] == "GATEWAY_POD_IP")
        assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}


def test_migrations_run_as_a_hook_before_install_and_upgrade(rendered):
    values, objects = rendered
    job = by_kind(objects, "Job")["gw-otlp-gateway-migrations"]
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["migrate"]
    secret_refs = {env["valueFrom"]["secretKeyRef"]["name"] for env in container["env"] if "valueFrom" in env}
    if values == "default":
        hook_secret = by_kind(objects, "Secret")["gw-otlp-gateway-migrations"]
        assert secret_refs == {"gw-otlp-gateway-migrations"}
        assert hook_secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
            annotations["helm.sh/hook-weight"]
        )
    else:
        assert secret_refs == {"otlp-gateway-secrets"}
        assert job["spec"]["template"]["spec"]["serviceAccountName"] == "otlp-gateway-migrations"


def test_routes_ingresses_and_service_monitor_point_at_rendered_service_ports():
    objects = render("production")
    services = by_kind(objects, "Service")
    ports = {
        (name, port[key]) for name, svc in services.items() for port in svc["spec"]["ports"] for key in ("name", "port")
    }
    for ingress in by_kind(objects, "Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert (backend["name"], backend["port"]["name"]) in ports
    assert (
        by_kind(objects, "Ingress")["gw-otlp-gateway-grpc"]["metadata"]["annotations"][
            "nginx.ingress.kubernetes.io/backend-protocol"
        ]
        == "GRPC"
    )
    routes = [obj for obj in objects if obj["apiVersion"] == "gateway.networking.k8s.io/v1"]
    assert {route["kind"] for route in routes} == {"HTTPRoute", "GRPCRoute"}
    for route in routes:
        assert route["spec"]["parentRefs"] == [
            {"name": "public", "namespace": "gateway-system", "sectionName": "https"}
        ]
        for rule in route["spec"]["rules"]:
            for ref in rule["backendRefs"]:
                assert (ref["name"], ref["port"]) in ports
    grpc_route = next(route for route in routes if route["kind"] == "GRPCRoute")
    assert {m["method"]["service"] for m in grpc_route["spec"]["rules"][0]["matches"]} == {
        "opentelemetry.proto.collector.trace.v1.TraceService",
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
        "opentelemetry.proto.collector.logs.v1.LogsService",
    }
    monitor = by_kind(objects, "ServiceMonitor")["gw-otlp-gateway"]
    selected = [
        svc
        for svc in services.values()
        if monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
        and svc["metadata"]["labels"]["app.kubernetes.io/component"] in ("http", "grpc")
    ]
    assert {svc["metadata"]["name"] for svc in selected} == {"gw-otlp-gateway-http", "gw-otlp-gateway-grpc"}
    named_ports = {port["name"] for svc in selected for port in svc["spec"]["ports"]}
    assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= named_ports


def test_network_policy_admits_otlp_and_scrapes_and_restricts_egress():
    policies = by_kind(render("production"), "NetworkPolicy")
    http, grpc = policies["gw-otlp-gateway-http"]["spec"], policies["gw-otlp-gateway-grpc"]["spec"]
    assert http["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "http"
    assert [rule["ports"] for rule in grpc["ingress"]] == [
        [{"port": "grpc", "protocol": "TCP"}],
        [{"port": "metrics", "protocol": "TCP"}],
    ]
    assert [rule["ports"] for rule in http["ingress"]] == [[{"port": "http", "protocol": "TCP"}]] * 2
    monitoring = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert http["ingress"][1]["from"] == grpc["ingress"][1]["from"] == monitoring
    assert grpc["policyTypes"] == ["Ingress", "Egress"]
    egress_ports = {port["port"] for rule in grpc["egress"] for port in rule["ports"]}
    assert egress_ports == {53, 5432, 6379, 8443}


def test_chart_made_secret_holds_given_values_and_generates_only_replaceable_keys():
    objects = render(
        "default",
        "--set",
        "secrets.databaseUrl=postgres://gw:pw@db:5432/gw",
        "--set",
        "secrets.masterKey=kept-by-the-operator",
    )
    data = by_kind(objects, "Secret")["gw-otlp-gateway"]["data"]
    decoded = {key: base64.b64decode(value).decode() for key, value in data.items()}
    assert decoded["DATABASE_URL"] == "postgres://gw:pw@db:5432/gw"
    assert decoded["GATEWAY_MASTER_KEY"] == "kept-by-the-operator"
    assert len(decoded["DJANGO_SECRET_KEY"]) == 64
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    assert isinstance(load_pem_private_key(decoded["audit-signing-key.pem"].encode(), None), Ed25519PrivateKey)
    # The master key is never made up: without it there is no such key at all.
    default = by_kind(render("default"), "Secret")["gw-otlp-gateway"]["data"]
    assert "GATEWAY_MASTER_KEY" not in default and "DATABASE_URL" not in default
    assert by_kind(objects, "Secret")["gw-otlp-gateway"]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_rendered_configuration_passes_production_deploy_checks(values, tmp_path):
    objects = render(values)
    config = by_kind(objects, "ConfigMap")["gw-otlp-gateway"]["data"]
    http = by_kind(objects, "Deployment")["gw-otlp-gateway-http"]["spec"]["template"]["spec"]["containers"][0]
    literal = {env["name"]: env["value"] for env in http["env"] if "value" in env}
    env = {
        **{
            k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "DJANGO_", "DATABASE_", "PROMETHEUS_"))
        },
        **config,
        **literal,
        # What the Secret and the downward API provide.
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "GATEWAY_POD_IP": "10.1.2.3",
        "DATABASE_URL": "postgres://gw:pw@db:5432/gw",
        "GATEWAY_CACHE_URL": "redis://redis:6379/0",
        "GATEWAY_CLICKHOUSE_URL": "https://gw:pw@clickhouse:8443/otel",
        # Paths the pod has and this machine does not.
        "GATEWAY_DATA_DIR": str(tmp_path / "data"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
    }
    out = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "gw-otlp-gateway-http.telemetry.svc.cluster.local" in config["DJANGO_ALLOWED_HOSTS"].split(",")
    if values == "production":
        assert config["GATEWAY_CLICKHOUSE_CLUSTER"] == "otel"
        assert config["GATEWAY_CLICKHOUSE_ASYNC_INSERT"] == "true"
        assert {"otlp.example.com", "console.otlp.example.com"} <= set(config["DJANGO_ALLOWED_HOSTS"].split(","))


def test_notes_print_the_exporter_settings():
    out = helm("install", "--dry-run=client", "gw", str(CHART), "--namespace", NAMESPACE, *VALUE_SETS["production"])
    assert out.returncode == 0, out.stderr
    notes = out.stdout[out.stdout.index("NOTES:") :]
    assert "export OTEL_EXPORTER_OTLP_ENDPOINT=https://otlp-grpc.example.com\n" in notes
    assert "export OTEL_EXPORTER_OTLP_ENDPOINT=https://otlp.example.com\n" in notes
    assert "export OTEL_EXPORTER_OTLP_PROTOCOL=grpc" in notes and "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf" in notes
    assert "OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<api key>" in notes
    default = helm("install", "--dry-run=client", "gw", str(CHART), "--namespace", NAMESPACE)
    assert (
        f"OTEL_EXPORTER_OTLP_ENDPOINT=http://gw-otlp-gateway-grpc.{NAMESPACE}.svc.cluster.local:4317" in default.stdout
    )
    assert "WARNING: not set: secrets.databaseUrl" in default.stdout


def test_connection_and_call_caps_reach_the_pods():
    objects = render("default", "--set", "http.maxConnections=300", "--set", "grpc.maxInFlight=64")
    deployments = by_kind(objects, "Deployment")

    def env(name: str) -> dict[str, str]:
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        return {item["name"]: item["value"] for item in container["env"] if "value" in item}

    assert env("gw-otlp-gateway-http")["GATEWAY_HTTP_MAX_CONNECTIONS"] == "300"
    assert env("gw-otlp-gateway-grpc")["GATEWAY_GRPC_MAX_IN_FLIGHT"] == "64"


def _exposed_series() -> dict[str, set[str]]:
    """Every series name the gateway exposes, with the labels it carries (from its own metric
    definitions, registered in a registry of their own)."""
    from prometheus_client import CollectorRegistry

    from gateway.metrics import GatewayMetrics

    registry = CollectorRegistry()
    GatewayMetrics(registry=registry, tenant_label=False)
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    series = {}
    for family in registry.collect():
        labels = set(getattr(registry._names_to_collectors[family.name + suffixes[family.type][0]], "_labelnames", ()))
        for suffix in suffixes[family.type]:
            series[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def test_grafana_dashboard_ships_for_the_sidecar_and_queries_real_series():
    import json
    import re

    objects = render("production")
    config_map = by_kind(objects, "ConfigMap")["gw-otlp-gateway-dashboards"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Telemetry"}
    dashboard = json.loads(config_map["data"]["otlp-gateway.json"])
    assert dashboard["uid"] == "otlp-gateway"
    titles = " | ".join(panel["title"] for panel in dashboard["panels"])
    for topic in ("Items accepted", "by reason", "latency", "writer queue", "INSERT latency"):
        assert topic.lower() in titles.lower(), titles

    exposed = _exposed_series()
    checked = 0
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            expr = target["expr"]
            names = re.findall(r"\b(otlp_gateway_[a-z_]+)\b", expr)
            assert names, expr
            for name in names:
                assert name in exposed, f"{panel['title']}: {name} is not a series the gateway exposes"
                grouped = re.findall(r"by \(([^)]*)\)", expr)
                used = {label.strip() for group in grouped for label in group.split(",")}
                used |= set(re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)\s*\"", expr))
                assert used - {"namespace"} <= exposed[name], f"{panel['title']}: {used - exposed[name]}"
                checked += 1
    assert checked >= 10
    # Off by default: a cluster without Grafana's sidecar gets no ConfigMap it does not use.
    assert "gw-otlp-gateway-dashboards" not in by_kind(render("default"), "ConfigMap")
