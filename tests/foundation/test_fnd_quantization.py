"""The W4A16 test checkpoint builder and what `model.quantization` asks of the engine and of
extraction (persona_steer.quantized_models, persona_steer.quantization). No engine."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from persona_steer.config import PROJECT_ROOT, ConfigError, load_config
from persona_steer.quantization import checkpoint_quantization, engine_quantization
from persona_steer.quantized_models import GROUP_SIZE, build_w4a16
from persona_steer.testmodels import resolve_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    (cache / "models").symlink_to(PROJECT_ROOT / ".cache" / "models", target_is_directory=True)
    return resolve_model("builtin:tiny", cache), resolve_model("builtin:tiny-w4a16", cache)


def settings(**model):
    return load_config(PROJECT_ROOT / "config.yaml", environ={},
                       overrides={f"model.{k}": v for k, v in model.items()})


def test_w4a16_checkpoint_is_round_to_nearest_of_the_full_model(models, tmp_path):
    full_dir, q_dir = models
    full, q = load_file(f"{full_dir}/model.safetensors"), load_file(f"{q_dir}/model.safetensors")
    cfg = json.loads(open(f"{q_dir}/config.json").read())["quantization_config"]
    assert cfg["quant_method"] == "compressed-tensors" and cfg["format"] == "pack-quantized"
    name = "model.layers.1.mlp.down_proj"
    w = full[f"{name}.weight"]
    packed, scale = q[f"{name}.weight_packed"], q[f"{name}.weight_scale"]
    assert packed.dtype == torch.int32 and packed.shape == (w.shape[0], w.shape[1] // 8)
    assert scale.shape == (w.shape[0], w.shape[1] // GROUP_SIZE)
    # unpack by hand: eight 4-bit values per int32, low bits first, stored with offset 8
    nibbles = torch.stack([(packed >> (4 * i)) & 0xF for i in range(8)], -1).reshape(w.shape) - 8
    deq = nibbles.float() * scale.float().repeat_interleave(GROUP_SIZE, dim=1)
    step = scale.float().repeat_interleave(GROUP_SIZE, dim=1)
    err = (deq - w).abs()
    inside = (nibbles > -8) & (nibbles < 7)   # the top level clamps (range -8..7, scale max/7.5)
    assert (err[inside] <= step[inside] * 0.5 + 1e-6).all()   # nearest level: half a step
    assert (err <= step).all()
    assert (deq - w).abs().max() > 0                          # and really quantized
    assert f"{name}.weight" not in q and "model.embed_tokens.weight" in q
    # building again is a no-op: the cached folder is reused
    before = (Path(q_dir) / "model.safetensors").stat().st_mtime_ns
    assert str(build_w4a16(full_dir, q_dir)) == q_dir
    assert (Path(q_dir) / "model.safetensors").stat().st_mtime_ns == before


def test_checkpoint_quantization_is_read_from_config_json(models, tmp_path):
    full_dir, q_dir = models
    assert checkpoint_quantization(full_dir) is None
    assert checkpoint_quantization(q_dir) == "compressed-tensors"
    (tmp_path / "config.json").write_text(
        json.dumps({"quantization_config": {"quant_method": "GPTQ"}}))
    assert checkpoint_quantization(tmp_path) == "gptq"
    assert checkpoint_quantization("Qwen/Qwen3-8B-AWQ") is None       # a hub id: vLLM reads it


def test_engine_gets_the_checkpoint_as_stored_or_online_quantization_on_gpu(models):
    full_dir, q_dir = models
    assert engine_quantization(settings(dtype="bfloat16"), q_dir, "cpu") == {}
    assert engine_quantization(settings(), full_dir, "cpu") == {}
    assert engine_quantization(settings(quantization="4bit", dtype="bfloat16"), full_dir,
                               "cuda") == {"quantization": "online",
                                            "quantization_config": {"linear": "mxfp4"}}
    assert engine_quantization(settings(quantization="8bit", dtype="auto"), full_dir,
                               "cuda") == {"quantization": "fp8_per_channel"}
    # what vLLM makes of them: online specs for the linear layers (not the checkpoint-format
    # MXFP4 config, which would leave a dense model's linears unquantized)
    from vllm.config.quantization import resolve_quantization_config
    for q in ("4bit", "8bit"):
        kw = engine_quantization(settings(quantization=q, dtype="bfloat16"), full_dir, "cuda")
        args = resolve_quantization_config(kw["quantization"], kw.get("quantization_config"))
        assert args is not None and args.linear is not None and args.linear.weight is not None


@pytest.mark.parametrize("model,where,quant,dtype,words", [
    ("full", "cpu", "4bit", "bfloat16", ["model.quantization: 4bit", "GPU only",
                                         "model.quantization: none", "pre-quantized"]),
    ("q", "cuda", "4bit", "bfloat16", ["model.quantization: 4bit", "already quantized",
                                       "compressed-tensors", "none"]),
    ("q", "cpu", "none", "float32", ["model.dtype: float32", "bfloat16"]),
    ("full", "cuda", "8bit", "float32", ["model.dtype: float32", "in-flight 8bit"]),
])
def test_what_cannot_run_is_one_line_naming_the_key(models, model, where, quant, dtype, words):
    path = models[0] if model == "full" else models[1]
    with pytest.raises(ConfigError) as err:
        engine_quantization(settings(quantization=quant, dtype=dtype), path, where)
    msg = str(err.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_extraction_refuses_bitsandbytes_on_a_quantized_checkpoint_before_loading(models):
    from extraction.activations import load_hf_model
    with pytest.raises(ConfigError, match="already quantized"):
        load_hf_model(models[1], "float32", "4bit", "cpu")


def test_config_check_says_ahead_what_the_engine_would_refuse(models):
    from persona_steer.config_check import check_settings
    s = settings(name=models[1], dtype="float32")
    warned = [w for w in check_settings(s, num_layers=4, cuda=False, vllm_platform="cpu")
              if w.startswith("model.dtype")]
    assert len(warned) == 1 and "the server's engine will refuse to start" in warned[0], warned
    s = settings(name=models[1], dtype="bfloat16")
    assert check_settings(s, num_layers=4, cuda=False, vllm_platform="cpu") == []
