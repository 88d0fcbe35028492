"""End to end on the tiny random Qwen3 with the session's real vLLM engine: assistant axis,
persona from an archetype, persona from a description (the real structured-output path, which
the random model fails: clear error after retries), trait; the files load through the store and
the steering resolver accepts them. Tests in this module share cached cells (in order)."""
from __future__ import annotations

import json

import pytest
import torch

from extraction.archetypes import ARCHETYPES, ASSISTANT_PROMPTS
from extraction.jobs import (ExtractionError, ExtractionInputError, run_axis_job, run_persona_job,
                             run_trait_job)
from persona_steer.resolve import ModelShape, axis_thresholds, content_hashes, spec_delta
from persona_steer.steering_spec import SteeringSpec
from persona_steer.store import VectorStore
from persona_steer.vector_format import AXIS_NAME, AXIS_PERCENTILES
from tests.extraction.conftest import ext_settings

pytestmark = pytest.mark.engine
SHAPE = ModelShape(hidden_size=256, num_layers=4, model_id="builtin:tiny")


def _cached_rollouts(root, systems: list[str]) -> list[dict]:
    out = []
    for path in sorted((root / "cache" / "extraction").glob("*/rollouts/*.json")):
        data = json.loads(path.read_text())
        if data["system"] in systems:
            out += data["samples"]
    return out


def _reference_means(tiny_model, samples, n_layers) -> torch.Tensor:
    """Mean over response tokens per layer from HF's tuple hidden_states (independent path:
    no hooks), batched with HF's own padding mask. Layers below the last only."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    rows = []
    for i in range(0, len(samples), 32):
        chunk = samples[i:i + 32]
        seqs = [s["prompt_ids"] + s["response_ids"] for s in chunk]
        width = max(map(len, seqs))
        ids = torch.tensor([q + [0] * (width - len(q)) for q in seqs])
        mask = torch.tensor([[1] * len(q) + [0] * (width - len(q)) for q in seqs])
        with torch.no_grad():
            hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        for k, s in enumerate(chunk):
            p, r = len(s["prompt_ids"]), len(s["response_ids"])
            rows.append(torch.stack([hs[L + 1][k, p:p + r].mean(0) for L in range(n_layers - 1)]))
    return torch.stack(rows).mean(0)


def test_axis(vllm_root, ext_llm, tiny_model):
    s = ext_settings(vllm_root)
    events = []
    path = run_axis_job(s, llm=ext_llm, progress=events.append)
    assert path == vllm_root / "vectors" / "assistant_axis.safetensors" and path.exists()
    assert {"rollouts", "activations", "projections"} <= {e["stage"] for e in events}
    assert all(set(e) == {"stage", "done", "total", "message"} for e in events)
    roll = [e for e in events if e["stage"] == "rollouts"]
    assert roll[-1]["done"] == roll[-1]["total"] == (17 * 5 + len(ASSISTANT_PROMPTS)) * 1

    axis = VectorStore(vllm_root / "vectors").load("axis", AXIS_NAME)
    assert axis.layers.tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(axis.vectors.norm(dim=1), torch.ones(4))
    assert axis.metadata["model"] == "builtin:tiny" and axis.metadata["rollout_backend"] == "vllm"
    assert axis.metadata["baseline_position"] == "response_mean"
    assert set(axis.extra) >= {"baseline", "baseline_response_mean", "baseline_last_prompt"}
    stats = axis.meta_json("projection_stats")
    assert sorted(stats, key=int) == ["0", "1", "2", "3"]
    for entry in stats.values():
        pct = [entry["percentiles"][str(p)] for p in AXIS_PERCENTILES]
        assert pct == sorted(pct) and pct[0] <= entry["mean"] <= pct[-1] and entry["std"] > 0
        assert entry["count"] > 0
    thr = axis_thresholds(axis, 25)
    assert set(thr) == {0, 1, 2, 3}

    # Independent check: axis = unit(mean assistant - mean roles), from HF tuple hidden states.
    a = _reference_means(tiny_model, _cached_rollouts(vllm_root, ASSISTANT_PROMPTS), 4)
    torch.testing.assert_close(axis.extra["baseline"][:3], a, atol=1e-4, rtol=1e-4)
    role_prompts = [p for _, _, ps in ARCHETYPES.values() for p in ps]
    r = _reference_means(tiny_model, _cached_rollouts(vllm_root, role_prompts), 4)
    torch.testing.assert_close(axis.vectors[:3], torch.nn.functional.normalize(a - r, dim=-1),
                               atol=1e-4, rtol=1e-4)


def test_axis_against_chosen_roles(vllm_root, ext_llm, tiny_model, tmp_path):
    """--roles: the axis contrasts the assistant with those archetypes only (rollouts cached)."""
    s = ext_settings(vllm_root, **{"paths__vectors": str(tmp_path / "v")})
    with pytest.raises(ExtractionInputError, match="unknown archetype.*'?nope"):
        run_axis_job(s, llm=ext_llm, roles=["pirate", "nope"])
    assert not (tmp_path / "v").exists() or not any((tmp_path / "v").rglob("*.safetensors"))
    run_axis_job(s, llm=ext_llm, roles=["pirate", "robot"])
    axis = VectorStore(tmp_path / "v").load("axis", AXIS_NAME)
    assert axis.meta_json("roles") == ["pirate", "robot"]
    a = _reference_means(tiny_model, _cached_rollouts(vllm_root, ASSISTANT_PROMPTS), 4)
    r = _reference_means(tiny_model, _cached_rollouts(
        vllm_root, ARCHETYPES["pirate"][2] + ARCHETYPES["robot"][2]), 4)
    torch.testing.assert_close(axis.vectors[:3], torch.nn.functional.normalize(a - r, dim=-1),
                               atol=1e-4, rtol=1e-4)


def test_persona_from_archetype(vllm_root, ext_llm, tiny_model):
    s = ext_settings(vllm_root)
    vec = run_persona_job(s, "pirate", archetype="pirate", llm=ext_llm)
    store = VectorStore(vllm_root / "vectors")
    loaded = store.load("persona", "pirate")
    torch.testing.assert_close(loaded.vectors, vec.vectors)
    m = loaded.metadata
    assert m["model"] == "builtin:tiny" and m["quantization"] == "none"
    assert m["position"] == "response_mean" and m["baseline"] == "axis"
    assert loaded.meta_json("prompts") == ARCHETYPES["pirate"][2]
    assert loaded.meta_json("num_responses") == {"persona": 5, "assistant": 6}
    assert len(loaded.meta_json("questions")) == 1 and m["created_at"]
    assert sorted(loaded.meta_json("separation"), key=int) == ["0", "1", "2", "3"]
    assert all(v > 0 for v in loaded.meta_json("residual_norm").values())

    # persona - baseline, checked against HF tuple hidden states over the cached tokens.
    p = _reference_means(tiny_model, _cached_rollouts(vllm_root, ARCHETYPES["pirate"][2]), 4)
    a = _reference_means(tiny_model, _cached_rollouts(vllm_root, ASSISTANT_PROMPTS), 4)
    torch.testing.assert_close(loaded.vectors[:3], p - a, atol=1e-4, rtol=1e-4)

    # The steering side accepts it: the resolver's delta is the formula on these rows.
    spec = SteeringSpec(personas=(("pirate", 0.5),), safety=True)
    assert set(content_hashes(spec, store, SHAPE)) == {"persona/pirate", "axis/assistant_axis"}
    delta = spec_delta(spec, store, SHAPE, default_scale=2.0)
    torch.testing.assert_close(delta, loaded.vectors * 1.0)


def test_positions_and_target_layers(vllm_root, ext_llm):
    base = VectorStore(vllm_root / "vectors").load("persona", "pirate")
    s = ext_settings(vllm_root, **{"extraction.target_layers": [1, -1],
                                   "extraction.position": "last_prompt"})
    events = []
    vec = run_persona_job(s, "pirate_lp", archetype="pirate", llm=ext_llm, progress=events.append)
    # Every cell came from the cache: no rollouts, no forward.
    assert all(e["total"] == 0 for e in events if e["stage"] in ("rollouts", "activations"))
    assert vec.layers.tolist() == [1, 3] and vec.metadata["position"] == "last_prompt"
    assert sorted(vec.meta_json("separation"), key=int) == ["0", "1", "2", "3"]  # all measured
    assert not torch.allclose(vec.vectors[0], base.vectors[1])


def test_persona_from_description_fails_clearly(vllm_root, ext_llm):
    s = ext_settings(vllm_root, extraction__writer__fallback="none")    # config.yaml: template
    before = sorted(p.name for p in (vllm_root / "vectors").rglob("*"))
    events = []
    with pytest.raises(ExtractionError) as info:
        run_persona_job(s, "grumpy_cat", description="a grumpy cat who hates mondays",
                        llm=ext_llm, progress=events.append)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("the served model did not write 5 usable system prompts for 'grumpy_cat' "
                          "after 3 attempts (last: ")
    assert [e["message"] for e in events if e["stage"] == "describe"] == [
        f"asking the served model for 5 system prompts for 'grumpy_cat' (attempt {i}/3)" for i in (1, 2, 3)]
    assert sorted(p.name for p in (vllm_root / "vectors").rglob("*")) == before


def test_persona_from_description_template_fallback(vllm_root, ext_llm):
    """extraction.writer.fallback: template (config.yaml's setting): a model that cannot write
    the prompts gets the description itself in five fixed frames, and the job says so."""
    from extraction.describe import template_prompts
    s = ext_settings(vllm_root, extraction__writer__fallback="template")
    events = []
    vec = run_persona_job(s, "grumpy_cat2", description="A grumpy cat who hates mondays.",
                          llm=ext_llm, progress=events.append, save=False)
    assert vec.meta_json("prompts") == template_prompts("A grumpy cat who hates mondays.")
    assert vec.meta_json("prompts")[0] == "You are a grumpy cat who hates mondays. Stay in character in every answer."
    notes = [e["message"] for e in events if e["stage"] == "describe"]
    assert "using the description itself in 5 fixed frames" in notes[-1], notes


def test_structured_output_is_json_and_validation(ext_llm, vllm_root, tiny_model):
    """The in-process structured-output path really constrains decoding to the schema shape."""
    from transformers import AutoTokenizer

    from extraction.describe import validate_prompts
    from extraction.rollouts import VLLMBackend, encode, render_prompt
    b = VLLMBackend(ext_settings(vllm_root), tiny_model, llm=ext_llm)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    text = b.generate_json(encode(tok, render_prompt(tok, None, "Is it sunny?")), [], schema,
                           max_tokens=32, temperature=0.0, seed=0)
    assert json.loads(text) in ({"ok": True}, {"ok": False})
    good = [f"You are a grumpy cat number {w}, and you complain about every Monday." for w in
            ("one", "two", "three", "four", "five")]
    assert validate_prompts(json.dumps({"system_prompts": good})) == good
    for bad, why in ((good[:4], "expected 5 prompts, got 4"),
                     (good[:4] + [good[0]], "prompt 5 repeats an earlier one"),
                     (good[:4] + ["x1 y2 z3 !!!! ???? 12345 67890"], "prompt 5 is not made of words"),
                     (good[:4] + ["The cat is grumpy and hates every single Monday."],
                      "prompt 5 does not address the assistant as 'you'")):
        with pytest.raises(ValueError, match=why):
            validate_prompts(json.dumps({"system_prompts": bad}))
    with pytest.raises(ValueError, match="not valid JSON"):
        validate_prompts('{"system_prompts": ["unterminated')


def test_trait_and_its_opposite(vllm_root, ext_llm):
    s = ext_settings(vllm_root)
    vec = run_trait_job(s, "formal", "casual", llm=ext_llm)
    assert vec.name == "formal" and vec.kind == "trait"
    loaded = VectorStore(vllm_root / "vectors").load("trait", "formal")
    assert loaded.metadata["word"] == "formal" and loaded.metadata["opposite"] == "casual"
    assert all("formal" in p for p in loaded.meta_json("prompts"))
    assert all("casual" in p for p in loaded.meta_json("opposite_prompts"))
    sep = loaded.meta_json("separation")
    assert all(v > 0 for v in sep.values())         # word responses project past the opposite's
    # Swapping the pair reuses the same cells and negates the vector.
    inv = run_trait_job(s, "casual", "formal", name="casual_vs_formal", llm=ext_llm)
    torch.testing.assert_close(inv.vectors, -loaded.vectors)
    spec = SteeringSpec(traits=(("formal", -1.0),))
    delta = spec_delta(spec, VectorStore(vllm_root / "vectors"), SHAPE, default_scale=1.0)
    torch.testing.assert_close(delta, inv.vectors)


def test_create_all_from_cache_through_cli(vllm_root, capsys):
    """After extract-axes every archetype's cells are cached: `create --all` needs no engine."""
    from persona_steer.cli import main
    sets = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in {
        "model.name": "builtin:tiny", "extraction.num_questions": 1,
        "extraction.max_new_tokens": 8, "extraction.target_layers": "all",
        "paths.datasets": str(vllm_root / "datasets"),
        "paths.vectors": str(vllm_root / "vectors"), "paths.cache": str(vllm_root / "cache")}.items()]
    argv = [a for kv in sets for a in ("--set", kv)] + ["create", "--all"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "[17/17] valley_girl" in captured.out and "persona 'sage': 4 layers" in captured.out
    assert "starting a vLLM engine" not in captured.err and "loading" not in captured.err
    assert set(ARCHETYPES) <= set(VectorStore(vllm_root / "vectors").names("persona"))
    # extract-axes --roles: an unknown archetype is a one-line error, before any work
    base = [a for kv in sets for a in ("--set", kv)]
    assert main(base + ["extract-axes", "--roles", "pirate,nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown archetype(s) for the axis: nope" in err and "\n" not in err


def test_quality_filter_path(vllm_root, ext_llm):
    """The judge really runs (structured JSON score per rollout); threshold 0 keeps everything,
    and the scores are recorded with each cached rollout."""
    s = ext_settings(vllm_root, **{"extraction.quality_filter": True,
                                   "extraction.quality_threshold": 0})
    vec = run_persona_job(s, "hermit_judged", archetype="hermit", llm=ext_llm)
    assert vec.metadata["quality_filter"] == "true"
    assert vec.meta_json("num_responses") == {"persona": 5, "assistant": 6}
    judged = [x for x in _cached_rollouts(vllm_root, ARCHETYPES["hermit"][2]) if "score" in x]
    assert len(judged) == 5
    assert all(0 <= x["score"] <= 100 and x["keep"] for x in judged)
