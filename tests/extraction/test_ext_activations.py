"""Activations: the hook on model.model.layers[L] is the raw residual after layer L."""
from __future__ import annotations

import torch

from extraction.activations import collect_means, collect_token_projections, load_hf_model
from extraction.rollouts import encode, render_prompt


def _samples(tok):
    p1 = encode(tok, render_prompt(tok, "You are a pirate.", "Why is the sky blue?"))
    p2 = encode(tok, render_prompt(tok, "You are a helpful assistant.", "How do I bake bread?"))
    return [(p1, [40, 41, 42, 43, 44]), (p2, [50, 51, 52])]


def test_hook_equals_tuple_hidden_states(tiny_model):
    model, tok = load_hf_model(tiny_model)
    samples = _samples(tok)
    # The last prompt token is the newline after "<|im_start|>assistant".
    assert tok.decode(samples[0][0]).endswith("<|im_start|>assistant\n")
    assert tok.decode(samples[0][0][-1:]) == "\n"
    acts = collect_means(model, samples, tok.pad_token_id, batch_size=2)
    n_layers = model.config.num_hidden_layers
    assert acts["response_mean"].shape == (2, n_layers, model.config.hidden_size)
    for i, (p, r) in enumerate(samples):
        with torch.no_grad():
            hs = model(input_ids=torch.tensor([p + r]), output_hidden_states=True).hidden_states
        assert len(hs) == n_layers + 1
        # batched (padded) against one sequence alone: float32 sums in another order differ
        # by up to ~1e-4 on a busy machine (seen once); a wrong layer differs by far more
        for layer in range(n_layers - 1):          # hook at L == hidden_states[L + 1]
            torch.testing.assert_close(acts["response_mean"][i, layer],
                                       hs[layer + 1][0, len(p):].mean(0), atol=5e-4, rtol=1e-4)
            torch.testing.assert_close(acts["last_prompt"][i, layer], hs[layer + 1][0, len(p) - 1],
                                       atol=5e-4, rtol=1e-4)
        # The last tuple entry is after the final norm; the hook is before it.
        last = acts["last_prompt"][i, n_layers - 1]
        assert not torch.allclose(last, hs[n_layers][0, len(p) - 1], atol=1e-3)
        with torch.no_grad():
            normed = model.model.norm(last[None, None])[0, 0]
        torch.testing.assert_close(normed, hs[n_layers][0, len(p) - 1], atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_activations(tiny_model):
    model, tok = load_hf_model(tiny_model)
    samples = _samples(tok)
    together = collect_means(model, samples, tok.pad_token_id, batch_size=2)
    alone = collect_means(model, samples[1:], tok.pad_token_id, batch_size=1)
    torch.testing.assert_close(together["response_mean"][1], alone["response_mean"][0],
                               atol=5e-4, rtol=1e-4)


def test_token_projections(tiny_model):
    model, tok = load_hf_model(tiny_model)
    samples = _samples(tok)
    n_layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    units = torch.nn.functional.normalize(torch.randn(n_layers, hidden), dim=-1)
    proj = collect_token_projections(model, samples, tok.pad_token_id, units, batch_size=2)
    assert [p.numel() for p in proj] == [8] * n_layers       # 5 + 3 response tokens
    p, r = samples[0]
    with torch.no_grad():
        hs = model(input_ids=torch.tensor([p + r]), output_hidden_states=True).hidden_states
    torch.testing.assert_close(proj[1][:5], hs[2][0, len(p):] @ units[1], atol=1e-4, rtol=1e-4)


def test_4bit_quantized_activations_on_cpu(tiny_model):
    model, tok = load_hf_model(tiny_model, quantization="4bit")
    assert getattr(model, "is_loaded_in_4bit", False) or "4bit" in str(
        getattr(model.config, "quantization_config", ""))
    full, _ = load_hf_model(tiny_model)
    samples = _samples(tok)
    q = collect_means(model, samples, tok.pad_token_id)["response_mean"]
    f = collect_means(full, samples, tok.pad_token_id)["response_mean"]
    assert torch.isfinite(q).all() and q.shape == f.shape
    assert not torch.equal(q, f)                    # really quantized
    cos = torch.nn.functional.cosine_similarity(q.flatten(1), f.flatten(1))
    assert (cos > 0.8).all(), cos


def test_model_device_places_the_hf_model(tiny_model, tmp_path):
    """config model.device reaches extraction: cpu loads there; cuda without a GPU refuses
    before loading anything; the job options carry the setting."""
    import pytest

    from extraction.pipeline import JobOptions
    from persona_steer.config import ConfigError, load_config

    model, _ = load_hf_model(tiny_model, device="cpu")
    assert next(model.parameters()).device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="model.device is cuda"):
            load_hf_model(tiny_model, device="cuda")
    (tmp_path / "config.yaml").write_text("model:\n  device: cpu\n  quantization: null\n")
    opts = JobOptions.from_settings(load_config(tmp_path / "config.yaml", environ={}),
                                    {"rollout_backend": "hf"})
    assert (opts.device, opts.quantization) == ("cpu", "none")
