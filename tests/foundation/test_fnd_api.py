"""The Python API: the example in persona_steer.api's docstring runs as written (on builtin:tiny),
and what it claims holds: the vector comes from the given prompts and questions, the saved files
load, and `steer` adds exactly the server's formula through hooks that go away afterwards."""
from __future__ import annotations

import os
import re
import textwrap

import pytest
import torch

import persona_steer
from persona_steer import api
from persona_steer.config import load_config
from persona_steer.steering_spec import SteeringSpecError
from persona_steer.store import VectorNotFound, VectorStore


def docstring_example(module) -> str:
    block = module.__doc__.split("::\n", 1)[1]
    return textwrap.dedent(block)


@pytest.fixture
def project(tmp_path, tiny_model_dir, monkeypatch):
    """A user's folder: config.yaml on builtin:tiny (the project cache, so it is built once)."""
    from persona_steer.config import PROJECT_ROOT
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "models").symlink_to(PROJECT_ROOT / ".cache" / "models")
    (tmp_path / "config.yaml").write_text(
        "model:\n  name: builtin:tiny\n  device: cpu\n  quantization: null\n"
        "paths:\n  cache: cache\n"
        "extraction:\n  max_new_tokens: 6\n  num_questions: 2\n")
    monkeypatch.chdir(tmp_path)
    for k in [k for k in os.environ if k.startswith("PERSONA_STEER_")]:
        monkeypatch.delenv(k)
    return tmp_path


@pytest.fixture
def example(project):
    ns: dict = {}
    exec(compile(docstring_example(api), "persona_steer.api example", "exec"), ns)
    return ns


def test_the_documented_example_runs(example, project):
    wizard = example["wizard"]
    assert wizard.metadata["source"] == "prompts"
    assert wizard.meta_json("prompts")[0].startswith("You are a grumpy old wizard")
    assert wizard.meta_json("questions") == ["Why is the sky blue?", "How do I boil an egg?"]
    assert wizard.meta_json("dataset_files")["questions"] == "given by the caller"
    store = VectorStore(project / "vectors")
    assert sorted(store.names("persona")) == ["grumpy_wizard", "my_persona"]
    assert store.load("persona", "my_persona").description == "My custom persona"
    assert store.load("persona", "grumpy_wizard").model == "builtin:tiny"
    assert not torch.equal(example["steered"], example["plain"])   # steering changed the answer


def test_steer_adds_the_servers_formula_and_cleans_up(example, project):
    model, tok = example["model"], example["tokenizer"]
    store = VectorStore(project / "vectors")
    w = store.load("persona", "grumpy_wizard").per_layer()
    m = store.load("persona", "my_persona").per_layer()
    ids = tok("Hello there", return_tensors="pt").input_ids
    seen: dict[int, torch.Tensor] = {}

    def run():
        hooks = [layer.register_forward_hook(
            lambda mod, a, out, i=i: seen.__setitem__(i, (out[0] if isinstance(out, tuple) else out).clone()))
            for i, layer in enumerate(model.model.layers)]
        try:
            with torch.no_grad():
                model(ids)
        finally:
            for h in hooks:
                h.remove()
        return dict(seen)

    plain = run()
    with api.steer(model, "grumpy_wizard:0.5,my_persona:0.3", scale=2.0) as spec:
        assert spec.personas == (("grumpy_wizard", 0.5), ("my_persona", 0.3))
        steered = run()
    # layer 0's output moves by exactly scale * (0.5 w + 0.3 m) (later layers see the change)
    want = 2.0 * (0.5 * w[0] + 0.3 * m[0])
    assert torch.allclose(steered[0] - plain[0], want.expand_as(plain[0]), atol=1e-4)
    assert all(len(layer._forward_hooks) == 0 for layer in model.model.layers)
    assert torch.equal(run()[3], plain[3])                           # gone after the block


def test_api_errors_are_clear(project):
    import torch.nn as nn
    settings = load_config()
    model, _ = persona_steer.load_hf_model(settings)
    with pytest.raises(VectorNotFound, match="unknown persona 'nobody'"):
        with api.steer(model, "nobody", settings=settings):
            pass
    with pytest.raises(SteeringSpecError, match="beyond the allowed bound"):
        with api.steer(model, {"x": 50}, settings=settings):
            pass
    with pytest.raises(ValueError, match=r"expected \[layers, hidden\]"):
        api.save_vector(torch.zeros(4), "flat", settings=settings)
    from extraction.pipeline import ExtractionInputError
    with pytest.raises(ExtractionInputError, match="non-empty list of system prompts"):
        api.extract_persona("You are a pirate.", settings=settings)
    assert isinstance(model, nn.Module)


def test_package_exports_the_api_lazily():
    assert persona_steer.steer is api.steer and persona_steer.save_vector is api.save_vector
    assert set(persona_steer.__all__) >= {"extract_persona", "save_vector", "steer"}
    with pytest.raises(AttributeError):
        persona_steer.nothing_here


def test_steer_with_safety_caps_as_the_plugin_does(project):
    """safety=True: at each capped layer the output's projection on the unit assistant axis is
    raised to the configured percentile's threshold, never lowered (the plugin's formula)."""
    from persona_steer.vector_format import AXIS_NAME, SteeringVector

    settings = load_config()
    model, tok = persona_steer.load_hf_model(settings)
    hidden, n = model.config.hidden_size, model.config.num_hidden_layers
    g = torch.Generator().manual_seed(3)
    axis_rows = {L: torch.randn(hidden, generator=g) for L in range(n)}
    stats = {str(L): {"percentiles": {"10": 5.0, "50": 9.0}} for L in range(n)}
    VectorStore(project / "vectors").save(SteeringVector.build(
        "axis", AXIS_NAME, axis_rows, model="builtin:tiny", metadata={"projection_stats": stats}))
    ids = tok("Hello there", return_tensors="pt").input_ids

    def layer0_output():      # hooked after steer's own hooks, so it sees their result
        seen = {}
        hook = model.model.layers[0].register_forward_hook(
            lambda mod, a, out: seen.__setitem__("h", out[0] if isinstance(out, tuple) else out))
        try:
            with torch.no_grad():
                model(ids)
        finally:
            hook.remove()
        return seen["h"]

    plain = layer0_output()
    with api.steer(model, None, safety=True, settings=settings) as spec:
        assert spec.safety and spec.is_noop is False
        capped = layer0_output()
    unit = axis_rows[0] / axis_rows[0].norm()
    threshold = 5.0 + (9.0 - 5.0) * (25 - 10) / (50 - 10)    # config percentile 25, interpolated
    want = plain + torch.relu(threshold - plain @ unit).unsqueeze(-1) * unit
    assert torch.allclose(capped, want, atol=1e-4)
    assert bool(((plain @ unit) < threshold).any())           # the cap did something here
