"""Check the GPU paths that CI (CPU only) never runs, on the shipped toy model, in one go:

  - extraction's device code (load_hf_model with none / bfloat16 / 4-bit bitsandbytes, greedy HF
    rollouts, activation means) on CUDA against the same on the CPU: a pirate-minus-assistant
    response-mean vector per layer, compared by cosine and norm ratio;
  - the HF steering reference (steering_plugin.reference) on CUDA against the CPU: prompt
    log-probabilities plain, with a delta at layers 0-2, and with capping.

    python scripts/gpu_check.py [--out report.json]

Needs torch with CUDA, transformers, and bitsandbytes + accelerate for the 4-bit run; not vLLM,
not pydantic (it imports only those modules). Each variant runs in its own process (the CPU one
with CUDA_VISIBLE_DEVICES=""). Prints one line per run and a JSON report.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "persona_steer" / "toy_model"

# One extraction variant: greedy rollouts under pirate and assistant prompts, response means,
# the mean difference saved to OUTF.
EXTRACT = r'''
import json, sys, time, torch
sys.path.insert(0, ROOT)
from extraction.activations import collect_means, load_hf_model
from extraction.rollouts import HFBackend
t0 = time.time()
model, tok = load_hf_model(MODEL, DTYPE, QUANT)
systems = {"pirate": ["You are a pirate. Talk like a pirate.",
                      "You are a salty pirate captain who says arr."],
           "assistant": ["You are a helpful assistant.", "You are an AI assistant. Answer clearly."]}
questions = ["How can I sleep better at night?", "Why does it rain?", "How do I bake bread?",
             "What is the moon made of?"]
backend = HFBackend(model, tok, batch_size=8)
means, first = {}, {}
for role, prompts in systems.items():
    ids = [tok.apply_chat_template([{"role": "system", "content": s}, {"role": "user", "content": q}],
                                   add_generation_prompt=True, tokenize=True, return_dict=False)
           for s in prompts for q in questions]
    resp = backend.generate(ids, max_new_tokens=40, temperature=0.0, seeds=[0] * len(ids))
    first[role] = tok.decode(resp[0], skip_special_tokens=True)[:100]
    means[role] = collect_means(model, list(zip(ids, resp)), tok.pad_token_id or 0)["response_mean"]
torch.save(means["pirate"].mean(0) - means["assistant"].mean(0), OUTF)
print(json.dumps({"device": str(next(model.parameters()).device), "seconds": round(time.time() - t0, 1),
                  "pirate_answer": first["pirate"], "assistant_answer": first["assistant"]}))
'''


def extract(tag: str, dtype: str, quant: str, cpu: bool, work: Path) -> dict:
    env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if cpu else {}))
    code = (f"ROOT={str(ROOT)!r}; MODEL={str(MODEL)!r}; DTYPE={dtype!r}; QUANT={quant!r}; "
            f"OUTF={str(work / (tag + '.pt'))!r}\n" + EXTRACT)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=600)
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if p.returncode or not lines:
        return {"ok": False, "error": p.stderr.strip().splitlines()[-1:] or ["no output"]}
    return {"ok": True, **json.loads(lines[-1])}


def compare(a, b) -> dict:
    import torch
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
    return {"cosine_per_layer": [round(float(c), 4) for c in cos],
            "norm_ratio_per_layer": [round(float(x), 4) for x in a.norm(dim=1) / b.norm(dim=1)]}


def reference_check() -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(ROOT))
    from steering_plugin.reference import hf_steering, prompt_logprobs
    cpu = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    gpu = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval().to("cuda")
    g = torch.Generator().manual_seed(0)
    n, h = cpu.config.num_hidden_layers, cpu.config.hidden_size
    delta = torch.zeros(n, h)
    delta[:3] = torch.randn(3, h, generator=g) * 8          # vectors stay on the CPU, as stored
    axis = torch.randn(h, generator=g)
    cap = {1: (axis / axis.norm(), 2.0)}
    ids = list(range(5, 60))
    out = {}
    for name, d, c in [("plain", None, None), ("delta", delta, None), ("delta+cap", delta, cap)]:
        with hf_steering(cpu, d, c):
            a = prompt_logprobs(cpu, ids)
        with hf_steering(gpu, d, c):
            b = prompt_logprobs(gpu, ids)
        out[f"max_abs_logprob_diff_{name}"] = max(abs(x - y) for x, y in zip(a, b))
    with hf_steering(gpu, delta, None):
        steered = prompt_logprobs(gpu, ids)
    out["steering_moves_logprobs_by"] = max(abs(x - y) for x, y in zip(steered, prompt_logprobs(gpu, ids)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu-check.json")
    args = ap.parse_args()
    import tempfile

    import torch
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch; run this on a GPU machine", file=sys.stderr)
        return 2
    report: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    runs = [("cpu_fp32", "float32", "none", True), ("gpu_fp32", "float32", "none", False),
            ("gpu_bf16", "bfloat16", "none", False), ("gpu_4bit", "float32", "4bit", False),
            ("cpu_4bit", "float32", "4bit", True)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for tag, dtype, quant, cpu in runs:
            report[tag] = extract(tag, dtype, quant, cpu, work)
            print(tag, json.dumps(report[tag])[:300], flush=True)
        vec = {tag: torch.load(work / f"{tag}.pt", weights_only=True) for tag, *_ in runs if (work / f"{tag}.pt").exists()}
    for tag in ("gpu_fp32", "gpu_bf16", "gpu_4bit", "cpu_4bit"):
        if tag in vec and "cpu_fp32" in vec:
            report[tag].update(compare(vec[tag], vec["cpu_fp32"]))
    if "gpu_4bit" in vec and "cpu_4bit" in vec:
        report["4bit_gpu_vs_cpu"] = compare(vec["gpu_4bit"], vec["cpu_4bit"])
    report["hf_reference"] = reference_check()
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    ok = all(report[t].get("ok") for t, *_ in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
