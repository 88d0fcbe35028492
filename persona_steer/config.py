"""The one configuration loader: config.yaml -> env overrides -> CLI overrides -> typed Settings.

Every part of the project (plugin, extraction, server, CLI) reads settings through `load_config`.
Env overrides use `PERSONA_STEER_<SECTION>__<KEY>` (e.g. `PERSONA_STEER_SERVER__PORT=9000`);
CLI overrides are dotted `key=value` pairs (e.g. `server.port=9000`).
"""
from __future__ import annotations

import functools
import io
import os
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "PERSONA_STEER_"
CONFIG_ENV = "PERSONA_STEER_CONFIG"
CONFIG_FILE_NAME = "config.yaml"
# The source checkout's root: for tests and development tools only. The runtime never reads it,
# so an installed package (a wheel, a container) works from any folder.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

LayerSpec = Union[Literal["all"], list[int]]


class ConfigError(ValueError):
    """A config value is invalid; the message names the key."""


class _Section(BaseModel):
    # allow_inf_nan=False: `.inf`/`.nan` are never a sensible setting (an infinite temperature
    # or max_weight would silently disable a bound).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelSettings(_Section):
    name: str = Field("builtin:toy-persona", description="HF id, local path, or builtin:<name>")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    max_model_len: Optional[int] = Field(
        None, ge=16, description="context length; null (or auto): the model's own, as vLLM "
                                 "derives it from the model's config")
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="auto: extraction on CUDA when torch sees a GPU, else CPU; cuda/cpu: "
                            "exactly there (extraction and engine refuse to start elsewhere)")
    quantization: Literal["4bit", "8bit", "none"] = Field(
        "none", description="none (or null): the checkpoint as stored, a pre-quantized one served "
                            "quantized; 4bit/8bit: quantize while loading (extraction: "
                            "bitsandbytes; engine: vLLM online, GPU only). persona_steer.quantization")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs (CPU: worker processes) each layer is split across; the "
                             "model's attention heads must divide by it")
    pipeline_parallel_size: int = Field(
        1, ge=1, description="stages the layers are split across, one GPU (CPU: process) each")
    enforce_eager: bool = False
    kv_cache_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE on CPU")
    max_num_seqs: int = Field(64, ge=1, le=1024)
    generation_config: Literal["auto", "vllm"] = Field(
        "auto", description="defaults for sampling fields a request leaves out: auto = the "
                            "model's generation_config.json, as `vllm serve` does; vllm = OpenAI's")
    model_runner: Literal["v1", "v2", "auto"] = Field(
        "v1", description="GPU: vLLM's model runner. v1 is the path the test suite runs end to "
                          "end (on CPU it is the only one); v2 (vLLM's GPU default) is "
                          "unit-tested only; auto lets vLLM choose")
    cpu_wait_us: float = Field(20.0, ge=0, le=10000,
                               description="CPU only: engine processes sleep this long between "
                                           "checks for the next step instead of spinning; 0 spins")

    @field_validator("max_model_len", mode="before")
    @classmethod
    def _auto_len(cls, v: Any) -> Any:
        return None if isinstance(v, str) and v.strip().lower() == "auto" else v

    @field_validator("quantization", mode="before")
    @classmethod
    def _null_is_none(cls, v: Any) -> Any:
        # the original system's config.yaml writes `quantization: null` for full precision
        return "none" if v is None else v


class WriterSettings(_Section):
    # Who writes the system prompts for `create --description`: the served model (url ""), or a
    # separate OpenAI-compatible model, for a served model too small to write them (the toy).
    url: str = Field("", description='"": the served model; else a separate OpenAI-compatible '
                                     "server's base URL (http(s)://host:port[/v1])")
    model: str = Field("", description="the writer's model id; empty: the first it lists")
    api_key_env: str = Field("", description="environment variable holding the writer's API key")
    fallback: Literal["template", "none"] = Field(
        "none", description="when the writer cannot write usable prompts: template (the "
                                "description itself in five fixed second-person frames; the job "
                                "says so) or none (the job fails)")

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        v = v.strip()
        if v and not re.match(r"https?://[^\s/]+", v):
            raise ValueError("must be empty (the served model) or an http(s):// URL")
        return v


class ExtractionSettings(_Section):
    target_layers: LayerSpec = "all"
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.7, ge=0)
    batch_size: int = Field(8, ge=1)
    num_questions: int = Field(40, ge=1)
    position: Literal["response_mean", "last_prompt"] = "response_mean"
    use_vllm: Literal["auto", "yes", "no"] = "auto"
    quality_filter: bool = False
    quality_threshold: int = Field(50, ge=0, le=100)
    seed: int = 0
    writer: WriterSettings = WriterSettings()

    @field_validator("use_vllm", mode="before")
    @classmethod
    def _yes_no(cls, v: Any) -> Any:
        # YAML reads a bare yes/no (in the file, --set or an env var) as a boolean
        return {True: "yes", False: "no"}.get(v, v) if isinstance(v, bool) else v


class SafetySettings(_Section):
    layers: LayerSpec = "all"
    percentile: float = Field(25.0, ge=0, le=100,
                              description="cap threshold: this percentile of assistant projections")
    default: bool = False


class MonitorSettings(_Section):
    default: list[str] = Field(default_factory=list,
                               description="names monitored for requests that do not say")
    max_names: int = Field(8, ge=1, description="most names one request may monitor")
    columns: int = Field(32, ge=0, description="monitored vectors the engine reads at once "
                                               "(0: monitoring off)")


class SteeringSettings(_Section):
    layers: LayerSpec = "all"
    default_strength: float = 1.0
    steering_scale: float = 1.0
    max_weight: float = Field(10.0, gt=0, description="|weight| bound for any vector in a request")
    safety: SafetySettings = SafetySettings()
    # last_turn: chats steer from their last user message on; /v1/completions (no turns) all
    steer_tokens: Literal["all", "generated", "prompt", "last_turn"] = "all"
    monitor: MonitorSettings = MonitorSettings()

    @field_validator("default_strength", "steering_scale")
    @classmethod
    def _finite(cls, v: float) -> float:
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        return v


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: Optional[str] = None
    cors_origins: list[str] = ["*"]
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    url: str = Field("", description="where CLI commands find a running server; empty: host:port")
    demo_vectors: Literal["auto", "off"] = Field(
        "auto", description="auto: on builtin:toy-persona, fill an empty vector store with the "
                            "toy model's shipped demo vectors at startup")
    shutdown_grace_s: float = Field(
        30.0, ge=0, le=3600, description="on SIGTERM: how long requests in flight may run to "
                                         "their end before they are cut with an error event")


PENALTIES = ("presence_penalty", "frequency_penalty")


class ClientSettings(_Section):
    # Decoding the bundled clients (web page, `persona-steer chat` and `generate`) send unless
    # told otherwise; the API itself keeps OpenAI's defaults, so other clients get the stock
    # model's decoding. A presence penalty of 0.5 stops the loops that over-steering causes on
    # builtin:toy-persona without lowering the steered rate (docs/steering.md, "Loops at high strength");
    # unlike a frequency penalty it does not grow with the length of the answer.
    presence_penalty: float = Field(0.5, ge=-2, le=2, description="OpenAI presence_penalty; 0 sends none")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="OpenAI frequency_penalty; 0 sends none")

    def penalties(self) -> dict[str, float]:
        """The non-zero penalties, as OpenAI request fields."""
        return {k: getattr(self, k) for k in PENALTIES if getattr(self, k)}


class JudgeSettings(_Section):
    url: str = Field("", description="OpenAI-compatible base URL (.../v1 or the server's root) of "
                                     "the judge; empty: the server being tuned, unsteered")
    model: str = Field("", description="the judge's model id; empty: the judge server's first model")
    api_key: Optional[str] = Field(None, description="bearer key for the judge; null: the "
                                                     "tuned server's key when url is empty")
    tries: int = Field(3, ge=1, le=10, description="asks per answer before an unreadable "
                                                   "verdict stops the tune with an error")
    max_tokens: int = Field(48, ge=8, description="room for the judge's JSON verdict")


class TuneSettings(_Section):
    # `persona-steer tune` (docs/tuning.md): a sweep of layer sets x strengths, scored 0-100 for
    # trait expression and coherence; the highest expression with coherence >= min_coherence is
    # stored with the vector and used by the server when a request gives no strength.
    scorer: Literal["auto", "judge", "marker"] = Field(
        "auto", description="auto: the toy model's style markers on builtin:toy-persona, else judge")
    min_coherence: float = Field(80.0, ge=0, le=100)
    strengths: list[float] = Field([0.5, 1.0, 1.5, 2.0, 3.0, 4.0], min_length=1)
    num_questions: int = Field(8, ge=1, description="held-out questions per setting")
    max_tokens: int = Field(96, ge=8, description="answer length per question")
    concurrency: int = Field(16, ge=1, description="requests in flight to the server and judge")
    judge: JudgeSettings = JudgeSettings()

    @field_validator("strengths")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if not all(x > 0 and x == x and x != float("inf") for x in v):
            raise ValueError("strengths must be finite positive numbers")
        return sorted(set(v))


class PathSettings(_Section):
    datasets: str = "datasets"
    vectors: str = "vectors"
    cache: str = ".cache"
    jobs: str = "jobs"


class Settings(_Section):
    model: ModelSettings = ModelSettings()
    extraction: ExtractionSettings = ExtractionSettings()
    steering: SteeringSettings = SteeringSettings()
    server: ServerSettings = ServerSettings()
    clients: ClientSettings = ClientSettings()
    tune: TuneSettings = TuneSettings()
    paths: PathSettings = PathSettings()

    # Where relative paths are resolved from: the config file's folder, else the current one
    # (when the settings were built without a file); not a YAML key.
    _base_dir: Optional[Path] = None

    @property
    def base_dir(self) -> Path:
        return self._base_dir if self._base_dir is not None else Path.cwd()

    def path(self, which: str) -> Path:
        p = Path(getattr(self.paths, which))
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def server_url(self) -> str:
        if self.server.url:
            return self.server.url.rstrip("/")
        host = "127.0.0.1" if self.server.host in ("0.0.0.0", "::") else self.server.host
        return f"http://{host}:{self.server.port}"


def resolve_layers(spec: LayerSpec, num_layers: int) -> list[int]:
    """'all' or a list (negative = from the end) -> sorted unique valid layer indices."""
    if spec == "all":
        return list(range(num_layers))
    out = set()
    for layer in spec:
        idx = layer + num_layers if layer < 0 else layer
        if not 0 <= idx < num_layers:
            raise ConfigError(f"layer {layer} out of range for a model with {num_layers} layers")
        out.add(idx)
    return sorted(out)


def config_path(explicit: str | os.PathLike | None = None) -> Path:
    """`--config`, else `$PERSONA_STEER_CONFIG`, else `config.yaml` in the current folder (which
    need not exist: then the defaults apply, with relative paths under the current folder)."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return Path.cwd() / CONFIG_FILE_NAME


def _parse_scalar(text: str) -> Any:
    """Parse a CLI/env value with YAML rules, so 'true', '3', '[1, 2]', 'null' do what users expect."""
    try:
        return yaml.safe_load(text) if text.strip() != "" else ""
    except yaml.YAMLError:
        return text


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: '{part}' is not a section")
    node[parts[-1]] = value


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == CONFIG_ENV:
            continue
        dotted = key[len(ENV_PREFIX):].lower().replace("__", ".")
        if "." not in dotted:
            continue
        _set_dotted(out, dotted, _parse_scalar(value))
    return out


def _deep_merge(base: dict, extra: dict) -> dict:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = v
    return base


def _error_key(loc: tuple) -> str:
    """Dotted key from a pydantic location; union branch tags like "list[int]" are dropped and
    list positions become "[i]" (e.g. extraction.target_layers[2])."""
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(part)):
            key += ("." if key else "") + str(part)
    return key or "config"


def _format_validation_error(err: ValidationError) -> str:
    by_key: dict[str, list[str]] = {}
    got: dict[str, Any] = {}
    for e in err.errors():
        key = _error_key(tuple(e["loc"]))
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        if msg not in by_key.setdefault(key, []):
            by_key[key].append(msg)
        if e["type"] != "extra_forbidden" and key not in got:
            got[key] = e.get("input")
    lines = []
    for key, msgs in by_key.items():
        line = f"{key}: {' or '.join(msgs)}"
        if key in got:
            line += f" (got {got[key]!r})"
        lines.append(line)
    return "invalid config: " + "; ".join(lines)


def validate_data(data: dict, base_dir: Path | None = None) -> Settings:
    try:
        settings = Settings.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None
    settings._base_dir = base_dir
    return settings


def read_yaml(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | dict | None = None,
                environ: dict[str, str] | None = None) -> Settings:
    """File, then env (`PERSONA_STEER_SECTION__KEY`), then overrides (`a.b=v` strings or a dict)."""
    cfg_path = config_path(path)
    if (path or os.environ.get(CONFIG_ENV)) and not cfg_path.exists():
        # a named file that is missing is a typo, not "use the defaults"
        raise ConfigError(f"config file not found: {cfg_path}")
    data = read_yaml(cfg_path)
    _deep_merge(data, _env_overrides(dict(os.environ) if environ is None else environ))
    if isinstance(overrides, dict):
        for k, v in overrides.items():
            if v is not None:
                _set_dotted(data, k, v)
    else:
        for item in overrides or []:
            if "=" not in item:
                raise ConfigError(f"override '{item}' must look like key=value")
            k, v = item.split("=", 1)
            _set_dotted(data, k.strip(), _parse_scalar(v))
    return validate_data(data, base_dir=cfg_path.resolve().parent)


def set_value(path: str | os.PathLike | None, dotted: str, raw_value: str) -> Settings:
    """`config set`: validate the whole config with the new value, then write it keeping comments."""
    from ruamel.yaml import YAML

    from persona_steer.atomic import atomic_write_text

    cfg_path = config_path(path)
    value = _parse_scalar(raw_value)
    check = read_yaml(cfg_path)
    _set_dotted(check, dotted, value)
    settings = validate_data(check, base_dir=cfg_path.resolve().parent)  # raises ConfigError
    validated = functools.reduce(getattr, dotted.split("."), settings)
    if isinstance(validated, str) and not isinstance(value, str):
        value = validated           # write `use_vllm: no` as the word, not YAML's boolean

    rt = YAML()
    rt.preserve_quotes = True
    doc = rt.load(cfg_path.read_text()) if cfg_path.exists() else None
    if doc is None:
        from ruamel.yaml.comments import CommentedMap
        doc = CommentedMap()
    node = doc
    parts = dotted.split(".")
    for part in parts[:-1]:
        if part not in node:
            node[part] = {}
        node = node[part]
    if isinstance(value, list):  # keep lists on one line, like `layers: [10, 12]`
        from ruamel.yaml.comments import CommentedSeq
        seq = CommentedSeq(value)
        seq.fa.set_flow_style()
        value = seq
    node[parts[-1]] = value
    buf = io.StringIO()
    rt.dump(doc, buf)
    atomic_write_text(cfg_path, buf.getvalue())
    return settings


def dump_settings(settings: Settings) -> str:
    return yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)
