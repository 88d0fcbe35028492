"""deploy/ checked by tools, offline: the Kubernetes manifests (deploy/k8s/) against the API
schemas kubernetes-validate ships, docker-compose.yml against the compose-spec schema
check-jsonschema vendors, nginx.conf by `nginx -t` once rendered for loopback
(tests/nginx_balancer.py). Then what a schema cannot see: the manifests fit the server (probes
on /health, GPU per pod, the shared store mounted where the image looks, the ConfigMap's
config.yaml loads). Each validator is also shown a broken file, so a pass means something."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from persona_steer.config import PROJECT_ROOT, load_config
from tests.nginx_balancer import check_config, nginx_binary, write_config

K8S = PROJECT_ROOT / "deploy" / "k8s"
COMPOSE = PROJECT_ROOT / "deploy" / "docker-compose.yml"
K8S_VERSION = "1.30"        # the oldest Kubernetes these manifests are checked against ...
LATEST = kubernetes_validate.latest_version()   # ... and the newest the validator knows


def manifests() -> dict[str, dict]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


@pytest.mark.parametrize("version", [K8S_VERSION, LATEST])
def test_kubernetes_manifests_pass_the_api_schemas(version):
    docs = manifests()
    assert set(docs) == {"Deployment", "Service", "PersistentVolumeClaim", "ConfigMap"}
    for kind, doc in docs.items():
        # strict: an unknown or misspelt field is an error, not silently dropped
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_kubernetes_validator_refuses_a_broken_manifest():
    deploy = manifests()["Deployment"]
    broken = yaml.safe_load(yaml.safe_dump(deploy))
    broken["spec"]["replicas"] = "two"
    broken["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, LATEST, strict=True)


def test_kubernetes_manifests_fit_the_server():
    from server.app import create_app
    docs = manifests()
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    app = create_app(load_config(PROJECT_ROOT / "config.yaml", environ={}))
    routes = {getattr(r, "path", "") for r in app.routes}
    port_names = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == "/health" and get["path"] in routes
        assert port_names[get["port"]] == 8000
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    # the liveness probe lets a stopping pod drain (docs/operations.md)
    live = c["livenessProbe"]
    settings = load_config(PROJECT_ROOT / "config.yaml", environ={})
    assert live["periodSeconds"] * live["failureThreshold"] > settings.server.shutdown_grace_s
    assert pod["terminationGracePeriodSeconds"] > settings.server.shutdown_grace_s

    # the shared store: a ReadWriteMany claim, mounted where the image keeps vectors
    pvc = docs["PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    dockerfile = (PROJECT_ROOT / "deploy" / "Dockerfile").read_text()
    assert "PERSONA_STEER_PATHS__VECTORS=/data/vectors" in dockerfile
    claim = volumes[mounts["/data/vectors"]]["persistentVolumeClaim"]["claimName"]
    assert claim == pvc["metadata"]["name"]
    assert "emptyDir" in volumes[mounts["/data/jobs"]]          # job records: per pod

    # the ConfigMap's config.yaml is a valid config, mounted where PERSONA_STEER_CONFIG points
    env = {e["name"]: e for e in c["env"]}
    config_path = Path(env["PERSONA_STEER_CONFIG"]["value"])
    cm = docs["ConfigMap"]
    volume = volumes[mounts[str(config_path.parent)]]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    assert config_path.name in cm["data"]
    assert "PERSONA_STEER_SERVER__API_KEY" in env                # a Secret, optional


def test_the_configmaps_config_loads(tmp_path):
    cm = manifests()["ConfigMap"]
    (tmp_path / "config.yaml").write_text(cm["data"]["config.yaml"])
    settings = load_config(tmp_path / "config.yaml", environ={})
    assert settings.model.name == "Qwen/Qwen3-8B" and settings.server.port == 8000


def test_service_selects_the_pods_on_their_port():
    docs = manifests()
    svc, deploy = docs["Service"], docs["Deployment"]
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port_names = {p["name"] for p in deploy["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names


def check_compose(path: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "check-jsonschema"
    return subprocess.run([str(exe), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_compose_file_passes_the_compose_spec(tmp_path):
    ok = check_compose(COMPOSE)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["steer-a"]["restart_policy"] = "always"      # not a service key
    (tmp_path / "compose.yml").write_text(yaml.safe_dump(broken))
    bad = check_compose(tmp_path / "compose.yml")
    assert bad.returncode != 0 and "restart_policy" in bad.stdout + bad.stderr


@pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed (scripts/setup.sh)")
def test_nginx_accepts_the_rendered_config(tmp_path):
    write_config(tmp_path / "ok", {"steer-a": 18001, "steer-b": 18002}, 18000)
    ok = check_config(tmp_path / "ok")
    assert ok.returncode == 0 and "test is successful" in ok.stderr, ok.stderr
    root = tmp_path / "bad"
    write_config(root, {"steer-a": 18001, "steer-b": 18002}, 18000)
    site = root / "site.conf"
    site.write_text(site.read_text().replace("proxy_buffering off;", "proxy_buffering of;"))
    bad = check_config(root)
    assert bad.returncode != 0 and "proxy_buffering" in bad.stderr, bad.stderr
