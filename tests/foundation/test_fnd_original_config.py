"""The original Persona Steering System's config.yaml (as its README documents it) loads here,
gives working settings, and `config check` warns about exactly what does not fit."""
from __future__ import annotations

import pytest

from persona_steer.config import ConfigError, load_config
from persona_steer.config_check import check_settings
from persona_steer.devices import check_engine_device, cuda_available, torch_device

from .conftest import run_cli

# Verbatim from the original README's "Configuration" section.
ORIGINAL_CONFIG = """\
model:
  name: "huihui-ai/Huihui-Qwen3-14B-abliterated-v2"
  device: "cuda"
  dtype: "float16"
  quantization: "4bit"  # Optional: "4bit", "8bit", or null
  
extraction:
  target_layers: [24, 26, 28, 30, 32, 34, 36, 38]
  max_new_tokens: 128
  temperature: 0.7
  batch_size: 10
  num_questions: 40
  
steering:
  default_strength: 1.0
  steering_scale: 0.1  # Global multiplier for steering effect

paths:
  datasets: ./datasets
  vectors: ./vectors
"""


@pytest.fixture
def original_cfg(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text(ORIGINAL_CONFIG)
    return p


def test_original_config_loads_with_its_values(original_cfg):
    s = load_config(original_cfg, environ={})
    assert s.model.name == "huihui-ai/Huihui-Qwen3-14B-abliterated-v2"
    assert (s.model.device, s.model.dtype, s.model.quantization) == ("cuda", "float16", "4bit")
    assert s.extraction.target_layers == [24, 26, 28, 30, 32, 34, 36, 38]
    assert (s.extraction.max_new_tokens, s.extraction.batch_size) == (128, 10)
    assert s.steering.steering_scale == 0.1 and s.steering.default_strength == 1.0
    assert s.path("vectors") == original_cfg.parent / "vectors"


@pytest.mark.parametrize("text,want", [("null", "none"), ("~", "none"), ('"8bit"', "8bit"),
                                       ("none", "none")])
def test_quantization_null_means_none(tmp_path, text, want):
    p = tmp_path / "config.yaml"
    p.write_text(f"model:\n  quantization: {text}\n")
    assert load_config(p, environ={}).model.quantization == want


def test_unknown_device_names_the_key(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text("model:\n  device: tpu\n")
    with pytest.raises(ConfigError, match=r"model\.device.*'tpu'"):
        load_config(p, environ={})


def test_check_warns_about_what_does_not_fit_the_served_model(original_cfg):
    """Against the toy model (6 layers) on a CPU-only machine: layers, device, quantization,
    scale; each warning names its key."""
    s = load_config(original_cfg, environ={})
    warnings = check_settings(s, num_layers=6, cuda=False, vllm_platform="cpu")
    text = "\n".join(warnings)
    assert "extraction.target_layers: layers [24, 26, 28, 30, 32, 34, 36, 38] do not exist" in text
    assert "model.device: cuda, but torch sees no CUDA GPU" in text
    assert "model.device: cuda, but the installed vLLM runs on cpu" in text
    assert ("model.quantization: 4bit quantizes in flight on a GPU only (vLLM's online mxfp4) "
            "and vLLM here runs on cpu") in text
    assert "(the server's engine will refuse to start)" in text
    assert "steering.steering_scale: 0.1 steers 10x weaker than 1.0" in text
    # on a GPU machine with the 40-layer model it was written for, only the scale and the
    # quantization note remain
    fits = check_settings(s, num_layers=40, cuda=True, vllm_platform="cuda")
    assert not any(w.startswith(("extraction.target_layers", "model.device")) for w in fits)
    assert any(w.startswith("steering.steering_scale") for w in fits)
    assert any("vLLM's online mxfp4" in w for w in fits)


def test_shipped_config_has_no_warnings():
    s = load_config(None, environ={})   # ./config.yaml of the checkout (tests run there)
    assert check_settings(s, cuda=False, vllm_platform="cpu") == []


def test_config_check_cli_on_the_original_file(original_cfg):
    """The CLI run a user would do: the original file, served model set to the toy model."""
    res = run_cli("config", "check", "--config", str(original_cfg),
                  "--set", "model.name=builtin:toy-persona")
    assert res.returncode == 0, res.stderr
    assert "extraction.target_layers: layers [24, 26" in res.stdout
    assert "builtin:toy-persona (6 layers, 0-5)" in res.stdout
    assert "steering.steering_scale: 0.1" in res.stdout
    assert ("model.device: cuda, but torch sees no CUDA GPU" in res.stdout) != cuda_available()
    strict = run_cli("config", "check", "--strict", "--config", str(original_cfg))
    assert strict.returncode == 1
    # the hub model is not downloaded here: said, not fatal
    assert "model.name: cannot read huihui-ai/Huihui-Qwen3-14B-abliterated-v2" in strict.stdout
    shown = run_cli("config", "show", "--config", str(original_cfg))
    assert shown.returncode == 0 and "device: cuda" in shown.stdout
    assert "warning: steering.steering_scale: 0.1" in shown.stderr


def test_device_for_extraction_and_engine():
    assert torch_device("cpu") == "cpu"
    assert torch_device("auto") == ("cuda:0" if cuda_available() else "cpu")
    if not cuda_available():
        with pytest.raises(ConfigError, match="model.device is cuda but torch sees no CUDA GPU"):
            torch_device("cuda")
    check_engine_device("auto", "cpu")
    check_engine_device("cpu", "cpu")
    with pytest.raises(ConfigError, match="installed vLLM runs on cpu"):
        check_engine_device("cuda", "cpu")
    with pytest.raises(ConfigError, match="installed vLLM runs on cuda"):
        check_engine_device("cpu", "cuda")
