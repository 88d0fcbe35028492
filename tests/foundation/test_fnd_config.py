"""Config loader: defaults, every invalid value names its key, env and --set overrides, config set."""
from __future__ import annotations

import os
import re
import shutil
import stat

import pytest
import yaml

from persona_steer.config import (PROJECT_ROOT, ConfigError, Settings, config_path,
                                  dump_settings, load_config, resolve_layers, set_value)

DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config.yaml"   # the checkout's shipped config


@pytest.fixture
def empty_cfg(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text("")
    return p


@pytest.fixture
def repo_cfg_copy(tmp_path):
    p = tmp_path / "config.yaml"
    shutil.copy(DEFAULT_CONFIG_PATH, p)
    os.chmod(p, 0o644)
    return p


def test_repo_config_loads_and_matches_documented_defaults():
    s = load_config(DEFAULT_CONFIG_PATH, environ={})
    assert s.model.name == "builtin:toy-persona"   # the embedded default: the shipped toy model
    assert s.model.dtype == "float32"
    assert s.server.port == 8000 and s.server.host == "127.0.0.1"
    assert s.steering.layers == "all" and s.steering.steering_scale == 1.0
    # a real model's start: every layer stored, tune picks (the toy's demo vectors carry the toy
    # model's own measured setting, persona_steer.toy_demo.RECOMMENDED: tests/toy/test_toy_demo.py)
    from persona_steer.toy_demo import RECOMMENDED
    assert s.extraction.target_layers == "all"
    assert s.steering.default_strength == RECOMMENDED["strength"]
    assert s.extraction.position == RECOMMENDED["position"]
    assert s.tune.scorer == "auto" and s.tune.judge.url == ""
    assert s.steering.safety.percentile == 25
    assert s.paths.vectors == "vectors"
    # every key the file holds is a real setting: the file's tree equals the typed dump's shape
    file_data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    dumped = s.model_dump(mode="json")
    for section, body in file_data.items():
        assert set(body) <= set(dumped[section]), section


def test_config_docs_table_matches_the_code_defaults():
    """docs/configuration.md's table of settings states each key's default: it must be
    Settings()'s, and the table must cover every setting (a stale row misleads every reader)."""
    page = (DEFAULT_CONFIG_PATH.parent / "docs" / "configuration.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_]+\.[a-z_.]+)` \| `([^`]*)` \|", page, re.M))
    defaults = Settings().model_dump(mode="json")

    def leaves(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    code = dict(leaves(defaults))
    assert set(rows) <= set(code), set(rows) - set(code)
    wrong = {k: (rows[k], code[k]) for k in rows if yaml.safe_load(rows[k]) != code[k]}
    assert not wrong, wrong
    assert len(rows) >= 0.8 * len(code), sorted(set(code) - set(rows))


def test_empty_file_gives_model_defaults(empty_cfg):
    s = load_config(empty_cfg, environ={})
    assert s.model_dump() == Settings().model_dump()
    assert s.extraction.target_layers == "all" and s.server.cors_origins == ["*"]


# (dotted key, bad value): every key of the config with a value it must refuse.
INVALID = [
    ("model.name", 5),
    ("model.dtype", "int8"),
    ("model.max_model_len", 0),
    ("model.max_model_len", "long"),
    ("model.quantization", "3bit"),
    ("model.gpu_memory_utilization", 1.5),
    ("model.gpu_memory_utilization", 0),
    ("model.enforce_eager", "maybe"),
    ("model.kv_cache_gib", 0),
    ("model.max_num_seqs", 0),
    ("model.max_num_seqs", 5000),
    ("extraction.target_layers", "some"),
    ("extraction.target_layers", [1, "x"]),
    ("extraction.max_new_tokens", 0),
    ("extraction.temperature", -0.1),
    ("extraction.temperature", float("inf")),
    ("extraction.batch_size", 0),
    ("extraction.num_questions", 0),
    ("extraction.position", "middle"),
    ("extraction.use_vllm", "sometimes"),
    ("extraction.quality_filter", "perhaps"),
    ("extraction.quality_threshold", 101),
    ("extraction.seed", "abc"),
    ("steering.layers", "most"),
    ("steering.default_strength", float("nan")),
    ("steering.steering_scale", float("inf")),
    ("steering.max_weight", 0),
    ("steering.max_weight", float("inf")),
    ("steering.safety.layers", {"a": 1}),
    ("steering.safety.percentile", 101),
    ("steering.safety.percentile", -1),
    ("steering.safety.percentile", float("nan")),
    ("steering.safety.default", "perhaps"),
    ("server.host", ["a"]),
    ("server.port", 70000),
    ("server.port", -1),
    ("server.port", "http"),
    ("server.api_key", 123),
    ("server.cors_origins", "*"),
    ("server.max_body_bytes", 10),
    ("server.url", 5),
    ("server.shutdown_grace_s", -1),
    ("server.shutdown_grace_s", 5000),
    ("paths.datasets", ["a"]),
    ("paths.vectors", None),
    ("paths.cache", 1),
    ("paths.jobs", {}),
    ("model.bogus", 1),
]


@pytest.mark.parametrize("key,value", INVALID, ids=[f"{k}={v!r}" for k, v in INVALID])
def test_invalid_value_names_the_key(empty_cfg, key, value):
    with pytest.raises(ConfigError) as info:
        load_config(empty_cfg, overrides={key: value} if value is not None else [f"{key}=null"],
                    environ={})
    msg = str(info.value)
    assert key in msg, msg
    assert "literal[" not in msg and "list[int]" not in msg  # no pydantic union internals


@pytest.mark.parametrize("value", ["null", "auto", "AUTO"])
def test_max_model_len_left_to_the_model(empty_cfg, value):
    """null (the default) or auto: vLLM derives the context from the model's own config."""
    assert Settings().model.max_model_len is None
    s = load_config(empty_cfg, overrides=[f"model.max_model_len={value}"], environ={})
    assert s.model.max_model_len is None
    assert load_config(empty_cfg, overrides=["model.max_model_len=1024"],
                       environ={}).model.max_model_len == 1024


def test_unknown_key_is_called_unknown(empty_cfg):
    with pytest.raises(ConfigError, match=r"model\.bogus: unknown key"):
        load_config(empty_cfg, overrides=["model.bogus=1"], environ={})
    with pytest.raises(ConfigError, match=r"bogus: unknown key"):
        load_config(empty_cfg, overrides=["bogus.key=1"], environ={})


def test_bad_yaml_and_non_mapping_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(lst, environ={})


def test_env_overrides(empty_cfg):
    env = {"PERSONA_STEER_SERVER__PORT": "9000",
           "PERSONA_STEER_STEERING__SAFETY__PERCENTILE": "30",
           "PERSONA_STEER_STEERING__LAYERS": "[1, 2]",
           "PERSONA_STEER_MODEL__ENFORCE_EAGER": "true",
           "PERSONA_STEER_MODEL__NAME": "Qwen/Qwen3-8B",
           "PERSONA_STEER_VLLM": "gpu",            # not a config key (no section): ignored
           "OTHER_SERVER__PORT": "1"}
    s = load_config(empty_cfg, environ=env)
    assert s.server.port == 9000
    assert s.steering.safety.percentile == 30
    assert s.steering.layers == [1, 2]
    assert s.model.enforce_eager is True
    assert s.model.name == "Qwen/Qwen3-8B"


def test_env_override_from_process_environment(empty_cfg, monkeypatch):
    monkeypatch.setenv("PERSONA_STEER_SERVER__PORT", "9123")
    assert load_config(empty_cfg).server.port == 9123
    monkeypatch.setenv("PERSONA_STEER_SERVER__PORT", "not-a-port")
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_config(empty_cfg)


def test_set_overrides_and_precedence(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  port: 8001\n  host: 0.0.0.0\nmodel:\n  dtype: bfloat16\n")
    env = {"PERSONA_STEER_SERVER__PORT": "8002", "PERSONA_STEER_MODEL__DTYPE": "float16"}
    s = load_config(cfg, overrides=["server.port=8003", "extraction.target_layers=[-1, 2]",
                                    "server.api_key=null"], environ=env)
    assert s.server.port == 8003            # --set beats env beats file
    assert s.model.dtype == "float16"       # env beats file
    assert s.server.host == "0.0.0.0"       # file beats defaults
    assert s.extraction.target_layers == [-1, 2]
    assert s.server.api_key is None
    assert s.server_url == "http://127.0.0.1:8003"
    d = load_config(cfg, overrides={"server.port": 8004, "model.name": None}, environ={})
    assert d.server.port == 8004 and d.model.name == Settings().model.name


def test_yes_and_no_mean_what_they_say_in_every_source(tmp_path, empty_cfg):
    """YAML reads a bare no/yes as a boolean; use_vllm's choices are the words, so both work."""
    assert load_config(empty_cfg, overrides=["extraction.use_vllm=no"],
                       environ={}).extraction.use_vllm == "no"
    assert load_config(empty_cfg, environ={"PERSONA_STEER_EXTRACTION__USE_VLLM": "yes"}
                       ).extraction.use_vllm == "yes"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("extraction:\n  use_vllm: no\n")
    assert load_config(cfg, environ={}).extraction.use_vllm == "no"
    with pytest.raises(ConfigError, match=r"extraction\.use_vllm"):
        load_config(empty_cfg, overrides=["extraction.use_vllm=maybe"], environ={})


def test_override_without_equals_is_refused(empty_cfg):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(empty_cfg, overrides=["server.port"], environ={})


def test_override_into_a_scalar_is_refused(empty_cfg):
    with pytest.raises(ConfigError, match="server.port"):
        load_config(empty_cfg, overrides=["server.port.x=1"], environ={})


def test_paths_resolve_against_config_folder(tmp_path):
    cfg = tmp_path / "sub" / "c.yaml"
    cfg.parent.mkdir()
    cfg.write_text(f"paths:\n  vectors: vecs\n  cache: {tmp_path / 'abs'}\n")
    s = load_config(cfg, environ={})
    assert s.path("vectors") == cfg.parent.resolve() / "vecs"
    assert s.path("cache") == tmp_path / "abs"


def test_server_url():
    s = load_config(DEFAULT_CONFIG_PATH, overrides=["server.url=http://h:1/"], environ={})
    assert s.server_url == "http://h:1"


def test_config_path_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PERSONA_STEER_CONFIG", str(tmp_path / "x.yaml"))
    assert config_path() == tmp_path / "x.yaml"
    assert config_path(tmp_path / "y.yaml") == tmp_path / "y.yaml"
    monkeypatch.delenv("PERSONA_STEER_CONFIG")
    monkeypatch.chdir(tmp_path)
    assert config_path() == tmp_path / "config.yaml"   # the current folder's, never the package's


def test_config_from_current_folder(monkeypatch, tmp_path):
    """No --config, no $PERSONA_STEER_CONFIG: ./config.yaml is read, and relative paths resolve
    under the current folder, with or without that file."""
    monkeypatch.delenv("PERSONA_STEER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    bare = load_config(environ={})
    assert bare.path("vectors") == tmp_path / "vectors"
    assert Settings().path("datasets") == tmp_path / "datasets"
    (tmp_path / "config.yaml").write_text("server:\n  port: 9123\npaths:\n  vectors: store\n")
    mine = load_config(environ={})
    assert mine.server.port == 9123
    assert mine.path("vectors") == tmp_path / "store"


def test_resolve_layers():
    assert resolve_layers("all", 4) == [0, 1, 2, 3]
    assert resolve_layers([-1, 0, 3, 0], 4) == [0, 3]
    with pytest.raises(ConfigError, match="layer 4 out of range"):
        resolve_layers([4], 4)
    with pytest.raises(ConfigError, match="layer -5 out of range"):
        resolve_layers([-5], 4)


def test_dump_settings_round_trips(empty_cfg):
    s = load_config(empty_cfg, overrides=["steering.layers=[3, 1]"], environ={})
    again = Settings.model_validate(yaml.safe_load(dump_settings(s)))
    assert again.model_dump() == s.model_dump()


# --- config set --------------------------------------------------------------------------------
def _comments(text: str) -> list[str]:
    return [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]


def test_config_set_keeps_comments_and_stays_valid(repo_cfg_copy):
    before = repo_cfg_copy.read_text()
    set_value(repo_cfg_copy, "server.port", "9001")
    set_value(repo_cfg_copy, "steering.layers", "[10, 12]")
    set_value(repo_cfg_copy, "steering.safety.percentile", "30")
    set_value(repo_cfg_copy, "server.api_key", "s3cret")
    set_value(repo_cfg_copy, "extraction.use_vllm", "no")
    after = repo_cfg_copy.read_text()
    assert re.search(r"^  use_vllm: no\b", after, re.M)    # the word, as the comment lists it
    assert _comments(after) == _comments(before)
    data = yaml.safe_load(after)
    assert data["server"]["port"] == 9001
    assert data["steering"]["layers"] == [10, 12]
    assert "layers: [10, 12]" in after             # lists stay on one line
    s = load_config(repo_cfg_copy, environ={})
    assert (s.server.port, s.steering.safety.percentile, s.server.api_key) == (9001, 30, "s3cret")
    assert s.extraction.use_vllm == "no"
    # nothing else changed
    assert s.model.name == "builtin:toy-persona" and s.extraction.num_questions == 40
    assert stat.S_IMODE(repo_cfg_copy.stat().st_mode) == 0o644   # mode kept by the atomic write
    assert [p.name for p in repo_cfg_copy.parent.iterdir()] == ["config.yaml"]  # no temp files


@pytest.mark.parametrize("key,value", [("server.port", "70000"), ("model.dtype", "int4"),
                                       ("steering.max_weight", ".inf"), ("model.nope", "1"),
                                       ("steering.safety.percentile", "high"),
                                       ("steering.layers", "[1, x]")])
def test_config_set_refuses_bad_values_and_leaves_file_unchanged(repo_cfg_copy, key, value):
    before = repo_cfg_copy.read_bytes()
    with pytest.raises(ConfigError) as info:
        set_value(repo_cfg_copy, key, value)
    assert key in str(info.value)
    assert repo_cfg_copy.read_bytes() == before


def test_config_set_creates_missing_file(tmp_path):
    p = tmp_path / "new.yaml"
    set_value(p, "server.port", "8100")
    assert yaml.safe_load(p.read_text()) == {"server": {"port": 8100}}
    assert load_config(p, environ={}).server.port == 8100


def test_named_config_file_must_exist(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="config file not found: .*typo.yaml"):
        load_config(tmp_path / "typo.yaml", environ={})
    monkeypatch.setenv("PERSONA_STEER_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError, match="config file not found: .*gone.yaml"):
        load_config()
