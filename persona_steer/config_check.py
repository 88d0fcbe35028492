"""`persona-steer config check`: settings that load fine but are likely wrong for the served model.

Each warning is one line naming the key, what is wrong and what to do. Used by `config check`
(and `config show`, on stderr). Nothing here changes a setting: a warned config still runs
where it can (layers a model lacks are refused later, when a vector or engine needs them).
"""
from __future__ import annotations

import json
from pathlib import Path

from persona_steer.config import Settings

# A vector here is the raw mean difference persona - assistant (in residual-stream units), so at
# steering_scale 1 and weight 1 a request moves the activations by that whole difference; the
# original system's 0.1 was tuned for its own vectors and steers ten times weaker here.
WEAK_SCALE = 0.25


def model_dims(settings: Settings, local_only: bool = False) -> tuple[int, int]:
    """(hidden_size, num_layers) of the configured model, from its config.json only.
    local_only: never download (a hub id not in the local cache raises)."""
    from persona_steer.testmodels import SIZES, resolve_model

    name = settings.model.name
    size = SIZES.get(name.split(":", 1)[1]) if name.startswith("builtin:") else None
    if local_only and size is not None:      # known without building the random model
        return size["hidden_size"], size["num_hidden_layers"]
    resolved = resolve_model(name, settings.path("cache"))
    local = Path(resolved) / "config.json"
    if local.is_file():  # a local checkpoint: read config.json, no transformers import needed
        try:
            cfg = json.loads(local.read_text())
            cfg = cfg.get("text_config", cfg)
            return int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
        except (ValueError, KeyError, TypeError):
            pass  # unusual layout: let transformers read it
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(resolved, local_files_only=local_only)
    cfg = getattr(cfg, "text_config", None) or cfg
    return cfg.hidden_size, cfg.num_hidden_layers


def _quantization(settings: Settings, platform: str | None) -> list[str]:
    """What the engine's start check (persona_steer.quantization) would refuse, ahead of time;
    or, where in-flight quantization runs, that engine and extraction quantize differently."""
    from persona_steer.config import ConfigError
    from persona_steer.quantization import IN_FLIGHT, engine_quantization
    from persona_steer.testmodels import resolve_model

    m = settings.model
    try:             # a hub id is not downloaded: only a local config.json is read
        engine_quantization(settings, resolve_model(m.name, settings.path("cache")), platform)
    except ConfigError as err:
        return [f"{err} (the server's engine will refuse to start)"]
    except Exception:        # an unreadable model is reported by the layer check
        return []
    if m.quantization == "none":
        return []
    return [f"model.quantization: {m.quantization}: the server's engine quantizes with vLLM's "
            f"online {IN_FLIGHT[m.quantization]}, extraction with bitsandbytes (their weights "
            "differ slightly; docs/quantization.md)"]


def _outside(spec, num_layers: int) -> list[int]:
    if spec == "all":
        return []
    return [x for x in spec if not -num_layers <= x < num_layers]


def check_settings(settings: Settings, num_layers: int | None = None,
                   cuda: bool | None = None, vllm_platform: str | None = "detect") -> list[str]:
    """Warnings for `settings`. num_layers: the served model's (None: read it, locally only);
    cuda / vllm_platform: what this machine has (detected when not given)."""
    from persona_steer import devices

    m, st = settings.model, settings.steering
    out: list[str] = []
    if num_layers is None:
        try:
            num_layers = model_dims(settings, local_only=True)[1]
        except Exception as err:   # not downloaded, unreadable: say so, check the rest
            out.append(f"model.name: cannot read {m.name}'s config.json here "
                       f"({type(err).__name__}); layer checks skipped")
    if num_layers is not None:
        for key, spec in (("extraction.target_layers", settings.extraction.target_layers),
                          ("steering.layers", st.layers),
                          ("steering.safety.layers", st.safety.layers)):
            bad = _outside(spec, num_layers)
            if bad:
                out.append(f"{key}: layers {bad} do not exist in {m.name} ({num_layers} layers, "
                           f"0-{num_layers - 1}); they would be refused. Use all, or indices "
                           f"below {num_layers} (negative counts from the end)")
    tl, sl = settings.extraction.target_layers, st.layers
    if sl != "all" and (tl == "all" or set(tl) - set(sl)):
        out.append(f"extraction.target_layers {tl} reach outside steering.layers {sl}: "
                   "vectors extracted there cannot be served")
    cuda = devices.cuda_available() if cuda is None else cuda
    if m.device == "cuda" and not cuda:
        out.append("model.device: cuda, but torch sees no CUDA GPU here: extraction will refuse "
                   "to start; use auto (GPU when present, else CPU) or cpu")
    platform = devices.vllm_platform() if vllm_platform == "detect" else vllm_platform
    if m.device != "auto" and platform is not None and platform != m.device:
        out.append(f"model.device: {m.device}, but the installed vLLM runs on {platform}: the "
                   f"server's engine will refuse to start; use auto or {platform}")
    out.extend(_quantization(settings, platform))
    if m.quantization != "none":
        try:
            import bitsandbytes  # noqa: F401
        except Exception:
            out.append(f"model.quantization: {m.quantization} needs bitsandbytes, which is not "
                       "installed here: extraction will fail to load the model")
    scale = st.steering_scale
    if scale == 0:
        out.append("steering.steering_scale: 0 turns steering off for every request")
    elif abs(scale) < WEAK_SCALE:
        out.append(f"steering.steering_scale: {scale} steers {1 / abs(scale):.0f}x weaker than 1.0 "
                   "here (a vector is the whole persona-minus-assistant difference; the original "
                   "system's 0.1 was tuned for its own vectors): start from 1.0")
    return out
