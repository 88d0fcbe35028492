"""What `model.device` (auto | cuda | cpu) means, for extraction's HF model and for the engine.

Extraction loads its transformers model where `torch_device` says. The vLLM engine cannot be
moved: its platform is fixed by the vLLM build installed (CPU or CUDA), so `device` only checks
that the build matches and refuses to start otherwise, with a message that says what to change.
"""
from __future__ import annotations

from persona_steer.config import ConfigError


def cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def torch_device(setting: str) -> str:
    """'cuda:0' or 'cpu' for extraction's HF model; `cuda` without a visible GPU is an error."""
    if setting == "cpu":
        return "cpu"
    if cuda_available():
        return "cuda:0"
    if setting == "cuda":
        raise ConfigError("model.device is cuda but torch sees no CUDA GPU here; "
                          "set model.device: auto (or cpu)")
    return "cpu"


def vllm_platform() -> str | None:
    """'cpu' or 'cuda' for the installed vLLM build, None when vLLM is missing or unknown."""
    try:
        from vllm.platforms import current_platform
    except Exception:  # vLLM missing or not importable: callers fail clearly later
        return None
    if current_platform.is_cpu():
        return "cpu"
    return "cuda" if current_platform.is_cuda() else None


def check_engine_device(setting: str, platform: str | None = None) -> None:
    """Refuse to build an engine on another device than `model.device` names."""
    platform = vllm_platform() if platform is None else platform
    if setting == "auto" or platform is None or platform == setting:
        return
    raise ConfigError(f"model.device is {setting} but the installed vLLM runs on {platform} "
                      f"(its build decides); set model.device: auto or {platform}")
