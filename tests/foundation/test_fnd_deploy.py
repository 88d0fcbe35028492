"""deploy/ cannot run here (no docker engine, no GPU, no systemd), so these tests hold its files
to the code they describe: every PERSONA_STEER_* variable is a real config key and lands where
it says, the image copies every package and asks for extras that exist, nginx and the health
checks point at routes and ports the server really has, and every file they mention exists."""
from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from persona_steer.config import CONFIG_ENV, PROJECT_ROOT, load_config

DEPLOY = PROJECT_ROOT / "deploy"
DOCKERFILE = (DEPLOY / "Dockerfile").read_text()
COMPOSE_TEXT = (DEPLOY / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
NGINX = (DEPLOY / "nginx.conf").read_text()
UNIT = (DEPLOY / "persona-steer.service").read_text()
PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


def _compose_default(value: str) -> str:
    """${MODEL:-Qwen/Qwen3-8B} -> Qwen/Qwen3-8B (what compose uses when MODEL is unset)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


def deploy_env() -> list[tuple[str, str, str]]:
    """(file, variable, value) for every PERSONA_STEER_* variable the deploy files set."""
    code = "\n".join(line for line in DOCKERFILE.splitlines() if not line.startswith("#"))
    out = [("Dockerfile", k, v) for k, v in re.findall(r"\b(PERSONA_STEER_\w+)=(\S+)", code)]
    out += [("docker-compose.yml", k, _compose_default(v))
            for k, v in COMPOSE["x-steer"]["environment"].items() if k.startswith("PERSONA_STEER_")]
    out += [("persona-steer.service", k, v)
            for k, v in re.findall(r"^Environment=(PERSONA_STEER_\w+)=(\S+)", UNIT, re.M)]
    return out


@pytest.fixture(scope="module")
def routes() -> set[str]:
    from server.app import create_app       # builds the app; the engine starts only in lifespan
    app = create_app(load_config(PROJECT_ROOT / "config.yaml", environ={}))
    return {getattr(r, "path", "") for r in app.routes}


def test_every_deploy_variable_is_a_config_key_and_lands_there():
    env = deploy_env()
    assert len(env) >= 10, env                  # the parser found them
    for where, name, value in env:
        if name == CONFIG_ENV:                  # the config file's path, read by the CLI
            continue
        section, key = name[len("PERSONA_STEER_"):].lower().split("__")
        settings = load_config(PROJECT_ROOT / "config.yaml", environ={name: value})
        got = getattr(getattr(settings, section), key)
        assert str(got) == value, (where, name, value, got)


def test_the_image_copies_every_package_and_installs_the_lock():
    copied = {p for line in re.findall(r"^COPY (.+)$", DOCKERFILE, re.M) for p in line.split()[:-1]}
    for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, pattern
    for needed in ("pyproject.toml", "README.md", "config.yaml", "requirements"):
        assert needed in copied
    assert all((PROJECT_ROOT / p).exists() for p in copied), copied
    # the image installs the same lock as make serve, for each flavour it can build
    assert '--require-hashes --no-deps -r "requirements/$FLAVOUR.txt"' in DOCKERFILE
    flavours = re.search(r"^ARG FLAVOUR=(\w+)$", DOCKERFILE, re.M).group(1)
    for flavour in {flavours, "cpu", "gpu"}:
        assert (PROJECT_ROOT / "requirements" / f"{flavour}.txt").is_file(), flavour
    assert "download." not in DOCKERFILE          # no index host names: a build argument


def test_health_checks_and_ports_match_the_server(routes):
    port = dict((k, v) for _, k, v in deploy_env())["PERSONA_STEER_SERVER__PORT"]
    checks = re.findall(r"http://127\.0\.0\.1:(\d+)(/\S*)", DOCKERFILE + COMPOSE_TEXT)
    assert len(checks) == 2, checks
    for p, path in checks:
        assert p == port and path.strip('"],') in routes, (p, path)
    assert re.search(rf"^EXPOSE {port}$", DOCKERFILE, re.M)


def test_nginx_routes_to_real_paths_services_and_limits(routes):
    locations = re.findall(r"location (=\s*)?(\S+) \{", NGINX)
    assert len(locations) >= 4
    for exact, path in locations:
        if exact:
            assert path in routes, path
        else:
            assert any(r.startswith(path) for r in routes), path
    services = set(COMPOSE["services"])
    port = dict((k, v) for _, k, v in deploy_env())["PERSONA_STEER_SERVER__PORT"]
    for host, p in re.findall(r"server ([\w-]+):(\d+)", NGINX):
        assert host in services and p == port, (host, p)
    size = re.search(r"client_max_body_size (\d+)m;", NGINX)
    settings = load_config(PROJECT_ROOT / "config.yaml", environ={})
    assert int(size.group(1)) * 1024 * 1024 == settings.server.max_body_bytes
    assert "proxy_buffering off" in NGINX                      # SSE
    assert re.search(r"location /ws/ \{[^}]*Upgrade", NGINX)    # WebSocket chat


def test_files_the_deploy_files_mention_exist():
    build = COMPOSE["x-steer"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    for vol in COMPOSE["services"]["lb"]["volumes"]:
        assert (DEPLOY / vol.split(":")[0]).is_file(), vol
    text = DOCKERFILE + COMPOSE_TEXT + NGINX + UNIT
    mentioned = set(re.findall(r"\b((?:docs|scripts|deploy)/[\w./-]+\w|README\.md)", text))
    assert mentioned, "no file references found"
    for path in mentioned:
        assert (PROJECT_ROOT / path).exists(), path
    assert "ExecReload=/bin/kill -HUP $MAINPID" in UNIT        # the server re-reads its key on HUP


def test_replica_volumes_hold_the_folders_the_image_configures():
    """Each replica mounts its volumes where the image's paths point (vectors shared, jobs per
    replica, the Hugging Face cache), so nothing is written inside the container by mistake."""
    image_dirs = {v for _, k, v in deploy_env() if k.startswith("PERSONA_STEER_PATHS__")}
    image_dirs.add(re.search(r"HF_HOME=(\S+)", DOCKERFILE).group(1))
    replicas = [s for name, s in COMPOSE["services"].items() if name.startswith("steer-")]
    assert len(replicas) == 2
    targets = [{v.split(":")[1] for v in s["volumes"]} for s in replicas]
    for t in targets:
        assert t <= image_dirs, (t, image_dirs)
        assert {"/data/vectors", "/data/jobs"} <= t
    sources = [{v.split(":")[0]: v.split(":")[1] for v in s["volumes"]} for s in replicas]
    shared = set(sources[0].items()) & set(sources[1].items())
    assert ("vectors", "/data/vectors") in shared                       # one store for all
    assert not any(target == "/data/jobs" for _, target in shared)      # jobs per replica
