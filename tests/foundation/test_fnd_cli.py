"""`persona-steer` end to end through subprocesses: --help, config show|set, import."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from persona_steer.cli import build_parser, main
from persona_steer.config import PROJECT_ROOT
from persona_steer.store import VectorStore

from .conftest import run_cli
from .test_fnd_importers import write_repeng_gguf


def _registered_commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return list(sub.choices)


def test_help_lists_commands():
    res = run_cli("--help")
    assert res.returncode == 0, res.stderr
    commands = _registered_commands()
    assert {"config", "import", "build-test-model"} <= set(commands)
    for cmd in commands:
        assert cmd in res.stdout, cmd
    assert "--config" in res.stdout and "--set" in res.stdout


@pytest.fixture
def cfg(tmp_path, tiny_model_dir):
    """A temp config (comments kept from the repo's) pointing at the tiny model and a temp store."""
    p = tmp_path / "config.yaml"
    shutil.copy(PROJECT_ROOT / "config.yaml", p)
    text = re.sub(r"(?m)^  name: \S+", f"  name: {tiny_model_dir}", p.read_text(), count=1)
    text = text.replace("  vectors: vectors", f"  vectors: {tmp_path / 'vectors'}")
    p.write_text(text)
    return p


def test_config_show_with_file_env_and_set(cfg):
    res = run_cli("--config", str(cfg), "--set", "server.port=9100", "config", "show",
                  env={"PERSONA_STEER_MODEL__DTYPE": "bfloat16",
                       "PERSONA_STEER_SERVER__PORT": "9000"})
    assert res.returncode == 0, res.stderr
    shown = yaml.safe_load(res.stdout)
    assert shown["server"]["port"] == 9100          # --set beats env
    assert shown["model"]["dtype"] == "bfloat16"     # env beats file
    assert shown["steering"]["safety"]["percentile"] == 25
    assert set(shown) == {"model", "extraction", "steering", "server", "clients", "tune",
                          "paths"}


def test_config_options_also_after_the_command(cfg, tmp_path):
    """`persona-steer serve --set ...` works as users type it: --config and --set after the
    command (nested ones too) merge with the global ones, the later --set winning."""
    res = run_cli("--set", "server.port=9100", "--set", "steering.default_strength=0.7",
                  "config", "show", "--config", str(cfg), "--set", "server.port=9101")
    assert res.returncode == 0, res.stderr
    shown = yaml.safe_load(res.stdout)
    assert shown["server"]["port"] == 9101 and shown["steering"]["default_strength"] == 0.7
    assert shown["model"]["name"] == yaml.safe_load(cfg.read_text())["model"]["name"]

    ns = build_parser().parse_args(["toy", "train", "--set", "a.b=1", "--config", "c.yaml"])
    assert ns.overrides_after == ["a.b=1"] and ns.config_after == "c.yaml"
    res = run_cli("config", "show", "--set", "model.dtype=int3")
    assert res.returncode == 2 and "model.dtype" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("argv,expected", [
    (["generate", "Hi", "--strength", "abc"], "argument --strength: invalid float value: 'abc'"),
    (["toy", "train", "--steps", "x"], "argument --steps: invalid int value: 'x'"),
    (["bogus"], "invalid choice: 'bogus'"),
    (["generate"], "the following arguments are required: prompt"),
])
def test_usage_errors_are_one_line(argv, expected):
    """Like every other CLI error: one line, exit 2, pointing at the command's --help."""
    res = run_cli(*argv)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "--help`)" in lines[0], res.stderr


def test_config_set_and_refusal(cfg):
    before_comments = [l for l in cfg.read_text().splitlines() if "#" in l and ":" not in l]
    res = run_cli("--config", str(cfg), "config", "set", "steering.layers", "[1, 2]")
    assert res.returncode == 0, res.stderr
    assert "steering.layers" in res.stdout
    assert yaml.safe_load(cfg.read_text())["steering"]["layers"] == [1, 2]
    assert "# layers the engine can steer" in cfg.read_text()
    assert [l for l in cfg.read_text().splitlines() if "#" in l and ":" not in l] == before_comments

    before = cfg.read_bytes()
    res = run_cli("--config", str(cfg), "config", "set", "server.port", "99999")
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and "server.port" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert cfg.read_bytes() == before

    res = run_cli("--config", str(cfg), "--set", "model.dtype=int3", "config", "show")
    assert res.returncode == 2 and "model.dtype" in res.stderr and "Traceback" not in res.stderr


def test_import_end_to_end(cfg, tmp_path, capsys):
    rng = np.random.default_rng(0)
    gguf_path = write_repeng_gguf(tmp_path / "cv.gguf",
                                  {i: rng.standard_normal(256).astype(np.float32) for i in (1, 2)})
    res = run_cli("--config", str(cfg), "import", str(gguf_path), "--name", "happy",
                  "--kind", "persona", "--description", "from repeng")
    assert res.returncode == 0, res.stderr
    assert "layers [1, 2]" in res.stdout and "hidden 256" in res.stdout
    store = VectorStore(tmp_path / "vectors")
    vec = store.load("persona", "happy")
    assert vec.layers.tolist() == [1, 2] and vec.description == "from repeng"

    # [L+1, hidden] file: the layer count comes from the configured model (4 layers)
    hs = torch.randn(5, 256)
    save_file({"v": hs}, str(tmp_path / "hs.safetensors"))
    res = run_cli("--config", str(cfg), "import", str(tmp_path / "hs.safetensors"),
                  "--name", "calm", "--kind", "trait")
    assert res.returncode == 0, res.stderr
    assert torch.equal(store.load("trait", "calm").vectors, hs[1:])

    # refusals: existing name, wrong hidden size for the configured model, bad name (bad files:
    # test_fnd_importers, in-process)
    res = run_cli("--config", str(cfg), "import", str(gguf_path), "--name", "happy", "--kind", "persona")
    assert res.returncode == 2 and "already exists (use --force" in res.stderr
    # (in-process: same code path, one torch start-up less)
    small = write_repeng_gguf(tmp_path / "small.gguf", {1: np.ones(8, np.float32)})
    assert main(["--config", str(cfg), "import", str(small), "--name", "small",
                 "--kind", "persona"]) == 2
    assert "hidden_size 8, the served model has 256" in capsys.readouterr().err
    res = run_cli("--config", str(cfg), "import", str(gguf_path), "--name", "../Up", "--kind", "persona")
    assert res.returncode == 2 and "invalid name" in res.stderr
    assert "Traceback" not in res.stderr
    assert sorted(store.names("persona")) == ["happy"] and store.names("trait") == ["calm"]


def test_cli_and_spec_modules_start_without_torch():
    """Config, spec parsing and the CLI core must not pay torch's start-up (fast `--help`)."""
    import subprocess
    import sys
    code = ("import sys, persona_steer.cli, persona_steer.cli_core, persona_steer.config, "
            "persona_steer.steering_spec, persona_steer.store, persona_steer.vector_format; "
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
