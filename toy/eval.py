"""The behavioural proof on the toy persona model: extraction -> vector -> steering -> behaviour.

    persona-steer toy eval [--url URL | --backend hf] [--questions N] [--out DIR] ...

1. Extraction with the project's own jobs (extraction.jobs: assistant axis, one persona per
   archetype, traits) from the archetype DATASETS (datasets/, not the toy training corpus), for
   both token positions (response_mean -> `<name>`, last_prompt -> `<name>_lp`); the six
   persona vectors of each position are then equalized (extraction.equalize, one scale).
2. A strength x layer sweep (greedy) to pick the token position, the layers and the strength;
   a PNG chart of marker rate (and coherence) vs strength per layer.
3. On held-out questions and held-out system prompts, greedy and sampled, through the server
   (`--url`, or one this command starts on the toy model), or through HF forward hooks
   (`--backend hf`, same formula; used when no server can run):
   prompted, plain, steered (+ specificity, coherence), negative weight (at -1.0 and -1.5 x the
   strength), safety capping,
   blends (both styles), traits.
   With `--steer-tokens all,generated` it measures instead the steered rate and coherence per
   persona once per `steer_tokens` mode (every token, or only the generated ones), side by side.
Prints a table and writes report.json and sweep.png.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Callable

from persona_steer import toy_language as language
from persona_steer.toy_demo import DEMO_TRAITS
from toy import corpus

PERSONAS = list(language.PERSONAS)
TRAIT_PAIRS = list(DEMO_TRAITS)
POSITIONS = {"response_mean": "", "last_prompt": "_lp"}
TARGETS = dict(prompted=0.9, plain=0.05, steered=0.7, others=0.1, coherence=0.8, cut=0.5, blend=0.5)
# the negative weight is measured at minus the strength (the key "negative") and at these
# larger multiples of it ("negative_x1.5"): the issue fixes no weight, and the size that
# suppresses is itself a finding
NEGATIVE_SCALES = (1.0, 1.5)
MAX_TOKENS = 160


# ----------------------------------------------------------------------------- generation
@dataclass(frozen=True)
class Gen:
    system: str | None
    question: str
    topic: str
    steer: tuple = ()            # sorted (key, json value) pairs: persona/strength/blend/traits/safety
    temperature: float = 0.0
    seed: int = 0
    penalties: tuple = ()            # sorted (OpenAI field, value): presence/frequency penalty


@dataclass
class Out:
    text: str
    finished: bool


def steer(**kw) -> tuple:
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in kw.items() if v is not None))


def _messages(g: Gen) -> list[dict]:
    msgs = [] if g.system is None else [{"role": "system", "content": g.system}]
    return msgs + [{"role": "user", "content": g.question}]


class ServerStoreMismatch(RuntimeError):
    """--url names a server whose vector store is not this run's."""


def check_shared_store(settings, client: "ServerClient") -> None:
    """Before any work: a probe vector written to this run's folder must be what the server
    reads under that name (the vectors are then the same files on both sides)."""
    import torch

    from persona_steer.store import VectorStore
    from persona_steer.vector_format import SteeringVector
    store = VectorStore(settings.path("vectors"))
    name = f"toy-eval-probe-{os.getpid()}"
    store.save(SteeringVector.build("persona", name, {0: torch.randn(8)}, model=settings.model.name))
    try:
        client.check_store(store, "persona", [name], settings.path("vectors"))
    finally:
        store.delete("persona", name)


class ServerClient:
    """Generates through the project's server with the project's client (clients.client), the
    requests `concurrency` at a time."""

    def __init__(self, base_url: str, api_key: str | None = None, concurrency: int = 64):
        from clients.client import PersonaSteerClient
        # the chats go through the client's openai SDK, whose pool keeps 100 idle connections:
        # one per thread up to that (extraction.rollouts.threaded_client says why it matters)
        self.client = PersonaSteerClient(base_url, api_key=api_key, timeout=600)
        self.concurrency = min(concurrency, 100)
        self.base = self.client.base_url
        self.model = self.client.default_model()
        self.name = f"server {self.base}"

    def _one(self, g: Gen) -> Out:
        from clients.client import SteeringRequest
        steering = SteeringRequest(**{k: json.loads(v) for k, v in g.steer})
        resp = self.client.chat(_messages(g), steering, model=self.model, max_tokens=MAX_TOKENS,
                                temperature=g.temperature, seed=g.seed, **dict(g.penalties))
        choice = resp.choices[0]
        return Out(choice.message.content or "", choice.finish_reason == "stop")

    def check_store(self, store, kind: str, names: list[str], folder) -> None:
        """The proof sends vector *names*; they must mean this run's vectors on the server,
        i.e. the server must use this run's vector folder. Refuse at once if it does not."""
        from clients.client import PersonaSteerError
        for name in names:
            try:
                theirs = self.client.get_vector(kind, name).get("content_hash")
            except PersonaSteerError as err:
                if err.status != 404:
                    raise
                theirs = None
            if theirs != store.content_hash(kind, name):
                what = "has no" if theirs is None else "has another"
                raise ServerStoreMismatch(
                    f"the server at {self.base} {what} {kind} '{name}': it does not use this run's "
                    f"vector folder {folder}; start it with `--set paths.vectors={folder}`, "
                    f"or leave --url out and the proof starts its own server")

    def run(self, gens: list[Gen]) -> list[Out]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._one, gens))

    def close(self):
        self.client.close()


class HFClient:
    """Same requests through transformers + forward hooks (steering_plugin.reference), batched per
    steering config; the delta comes from persona_steer.resolve (the README formula)."""

    def __init__(self, settings, model_path: str, batch_size: int = 32):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        self.settings, self.torch = settings, torch
        self.tok = AutoTokenizer.from_pretrained(model_path)
        self.tok.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        self.batch_size = batch_size
        self.name = "hf-hooks"

    def _delta_cap(self, st: dict):
        from persona_steer.config import resolve_layers
        from persona_steer.resolve import ModelShape, cap_table, spec_delta
        from persona_steer.steering_spec import build_spec
        from persona_steer.store import VectorStore
        if st.get("steer_tokens", "all") != "all":
            raise ValueError("steer_tokens other than 'all' needs the server backend: the HF "
                             "reference here steers every token")
        s = self.settings.steering
        cfg = self.model.config
        spec = build_spec(persona=st.get("persona"), strength=st.get("strength"), blend=st.get("blend"),
                          traits=st.get("traits"), safety=st.get("safety"),
                          default_strength=s.default_strength, default_safety=s.safety.default,
                          max_weight=s.max_weight)
        store = VectorStore(self.settings.path("vectors"))
        shape = ModelShape.from_hf_config(cfg)
        delta = spec_delta(spec, store, shape, s.steering_scale)
        cap = None
        if spec.safety:
            cap = cap_table(store, shape, s.safety.percentile,
                            resolve_layers(s.safety.layers, cfg.num_hidden_layers))
        return delta, cap

    def run(self, gens: list[Gen]) -> list[Out]:
        from transformers import LogitsProcessorList

        from steering_plugin.reference import hf_steering
        torch = self.torch
        out: list[Out | None] = [None] * len(gens)
        groups: dict[tuple, list[int]] = {}
        for i, g in enumerate(gens):
            groups.setdefault((g.steer, g.temperature, g.penalties), []).append(i)
        im_end = self.tok.convert_tokens_to_ids("<|im_end|>")
        for (st, temp, penalties), idx in groups.items():
            delta, cap = self._delta_cap({k: json.loads(v) for k, v in st})
            for b in range(0, len(idx), self.batch_size):
                chunk = idx[b:b + self.batch_size]
                texts = [corpus.prompt_text(gens[i].system, gens[i].question) for i in chunk]
                enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                torch.manual_seed(gens[chunk[0]].seed)
                penalize = (LogitsProcessorList([OpenAIPenalties(enc["input_ids"].shape[1], **dict(penalties))])
                            if penalties else None)
                with torch.no_grad(), hf_steering(self.model, delta if delta.any() else None, cap):
                    res = self.model.generate(**enc, max_new_tokens=MAX_TOKENS, do_sample=temp > 0,
                                              logits_processor=penalize,
                                              temperature=temp if temp > 0 else None, top_p=None,
                                              top_k=None, eos_token_id=im_end,
                                              pad_token_id=self.tok.pad_token_id)
                for j, i in enumerate(chunk):
                    ids = res[j, enc["input_ids"].shape[1]:].tolist()
                    finished = im_end in ids
                    if finished:
                        ids = ids[:ids.index(im_end)]
                    out[i] = Out(self.tok.decode(ids, skip_special_tokens=True), finished)
        return out  # type: ignore[return-value]

    def close(self):
        pass


class OpenAIPenalties:
    """OpenAI's (and vLLM's) presence and frequency penalties for HF generate, which has only a
    multiplicative repetition penalty: each logit minus presence_penalty if its token was
    generated so far, minus frequency_penalty x the times it was (prompt tokens do not count)."""

    def __init__(self, prompt_len: int, presence_penalty: float = 0.0, frequency_penalty: float = 0.0):
        self.prompt_len, self.presence, self.frequency = prompt_len, presence_penalty, frequency_penalty

    def __call__(self, input_ids, scores):
        import torch
        counts = torch.zeros_like(scores)
        generated = input_ids[:, self.prompt_len:]
        counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.presence * (counts > 0).to(scores.dtype) - self.frequency * counts


# ----------------------------------------------------------------------------- server process
class ToyServer:
    """`persona-steer --config <workdir>/server-config.yaml serve` on a loopback port, toy model
    (persona_steer.server_process, the launcher the tests use)."""

    def __init__(self, settings, workdir: Path, startup_timeout: float = 600,
                 demo_vectors: str = "off"):
        import yaml
        from persona_steer import server_process
        self.port = server_process.free_port()
        cfg = {"model": {"name": settings.model.name, "kv_cache_gib": settings.model.kv_cache_gib,
                         "max_num_seqs": 64, "max_model_len": 1024, "dtype": "float32",
                         "enforce_eager": settings.model.enforce_eager},
               "steering": settings.steering.model_dump(),
               # the proof measures its own extraction: no demo vectors unless asked for
               "server": {"host": "127.0.0.1", "port": self.port, "api_key": None,
                          "demo_vectors": demo_vectors},
               "paths": {"vectors": str(settings.path("vectors")), "jobs": str(workdir / "jobs"),
                         "datasets": str(settings.path("datasets")), "cache": str(settings.path("cache"))}}
        self.config_path = workdir / "server-config.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = server_process.spawn(self.config_path, self.url, workdir / "server.log")
        self.log_path, self.proc = self.process.log_path, self.process.proc
        try:
            self.process.wait_healthy(startup_timeout)
        except RuntimeError as err:
            self.stop()
            raise RuntimeError(f"toy server did not start: {err}") from None

    def stop(self):
        self.process.stop()


# ----------------------------------------------------------------------------- extraction
def extract_all(settings, positions: list[str], *, num_questions: int, base_url: str | None,
                log: Callable[[str], None] = print, traits: bool = True, axis: bool = True) -> dict:
    """Axis, the six personas (from their archetypes) and the trait pairs, per token position."""
    from extraction import datasets as ds
    from extraction.jobs import run_axis_job, run_persona_job, run_trait_job
    opts: dict[str, Any] = dict(num_questions=num_questions)
    if base_url:
        opts.update(rollout_backend="openai", base_url=base_url)
    else:
        opts.update(rollout_backend="hf")
    ds.init_datasets(settings)
    t0 = time.time()
    done = {}
    for pos in positions:
        suffix = POSITIONS[pos]
        if pos == "response_mean" and axis:
            # contrast the assistant with the six roles the toy model knows: an axis against
            # 17 archetypes, 11 of them unknown to it, barely separates its personas
            run_axis_job(settings, position=pos, roles=PERSONAS, **opts)
            log(f"  axis done ({time.time() - t0:.0f}s)")
        for p in PERSONAS:
            vec = run_persona_job(settings, p + suffix, archetype=p, position=pos, **opts)
            done[p + suffix] = vec.meta_json("separation")
        if traits:
            for word, opp in TRAIT_PAIRS:
                run_trait_job(settings, word, opp, name=word + suffix, position=pos, **opts)
        log(f"  {pos}: personas{' and traits' if traits else ''} done ({time.time() - t0:.0f}s)")
    return done


def restricted(settings, name: str, layers: list[int], new_name: str, kind: str = "persona") -> str:
    """Save a copy of a vector with only the given layer rows (for the sweep / the default)."""
    from persona_steer.store import VectorStore
    from persona_steer.vector_format import SteeringVector
    store = VectorStore(settings.path("vectors"))
    vec = store.load(kind, name)
    rows = {L: v for L, v in vec.per_layer().items() if L in layers}
    if not rows:
        raise ValueError(f"{kind} '{name}' has no rows at layers {layers} (it has "
                         f"{sorted(vec.per_layer())}); extract with extraction.target_layers=all")
    meta = {k: v for k, v in vec.metadata.items()
            if k not in ("kind", "name", "description", "model", "hidden_size", "format_version",
                         "recommended_layers", "recommended_strength", "tuning")}  # its own rows
    meta["derived_from"] = name
    meta["layers_kept"] = json.dumps(sorted(rows))
    store.save(SteeringVector.build(kind, new_name, rows, model=vec.model, description=vec.description,
                                    metadata=meta))
    return new_name


# ----------------------------------------------------------------------------- measurements
def _rate(xs) -> float:
    xs = list(xs)
    return round(sum(1 for x in xs if x) / len(xs), 3) if xs else float("nan")


def _prompt(name: str, i: int) -> str | None:
    return language.heldout_system_prompt(name, seed=1000 + i)


def _negative_key(scale: float) -> str:
    return "negative" if scale == 1.0 else f"negative_x{scale:g}"


def _negative_keys(row: dict) -> list[str]:
    return [k for k in row if k.startswith("negative") and not k.endswith("_coherence")]


def measure(client, questions: list[tuple[str, str]], *, strength: float, temperature: float,
            seed: int = 0, suffix: str = "", blends: bool = True, trait_strength: float | None = None,
            capping: bool = True, traits: bool = True, blend_scale: float = 0.5,
            negative_scales: tuple[float, ...] = NEGATIVE_SCALES, penalties: dict | None = None) -> dict:
    """Every row of the proof for one decoding mode (temperature, OpenAI penalties). Vector names
    are PERSONA+suffix.
    Blends weigh each of the two personas blend_scale x strength (the issue's 0.5 each);
    the negative rows weigh the persona -scale x strength for each of negative_scales."""
    gens: list[Gen] = []
    keys: list[tuple] = []
    pen = tuple(sorted((penalties or {}).items()))

    def add(key, system, st=()):
        for i, (q, topic) in enumerate(questions):
            sys_prompt = _prompt(system, i) if system is not None else None
            gens.append(Gen(sys_prompt, q, topic, st, temperature, seed + i, pen))
            keys.append(key + (i,))

    add(("plain",), "assistant")
    for p in PERSONAS:
        v = p + suffix
        add(("prompted", p), p)
        add(("steered", p), "assistant", steer(persona=v, strength=strength))
        for k in negative_scales:
            add((_negative_key(k), p), p, steer(persona=v, strength=-k * strength))
        if capping:
            add(("capping", p), p, steer(safety=True))
    if blends:
        for a, b in combinations(PERSONAS, 2):
            add(("blend", a, b), "assistant", steer(blend={a + suffix: blend_scale * strength,
                                                        b + suffix: blend_scale * strength}))
    ts = trait_strength if trait_strength is not None else strength
    for word, opp in (TRAIT_PAIRS if traits else []):
        add(("trait_prompted", word), word)
        add(("trait_prompted", opp), opp)
        add(("trait+", word), "assistant", steer(traits={word + suffix: ts}))
        add(("trait-", word), "assistant", steer(traits={word + suffix: -ts}))
    outs = client.run(gens)
    by: dict[tuple, list[tuple[Gen, Out]]] = {}
    for k, g, o in zip(keys, gens, outs):
        by.setdefault(k[:-1], []).append((g, o))

    def marker(key, name):
        return _rate(language.has_style(o.text, name) for _, o in by[key])

    def others(key, name):
        rest = [p for p in PERSONAS if p != name]
        return _rate(any(language.has_style(o.text, r) for r in rest) for _, o in by[key])

    def coh(key):
        return _rate(language.coherent(o.text, g.topic, o.finished) for g, o in by[key])

    res: dict[str, Any] = {"personas": {}, "blends": {}, "traits": {}}
    res["plain_any"] = _rate(any(language.has_style(o.text, p) for p in PERSONAS) for _, o in by[("plain",)])
    res["plain_coherence"] = coh(("plain",))
    for p in PERSONAS:
        row = {"prompted": marker(("prompted", p), p),
               "plain": marker(("plain",), p),
               "steered": marker(("steered", p), p),
               "steered_others": others(("steered", p), p),
               "steered_coherence": coh(("steered", p)),
               "steered_clean": _rate(language.has_style(o.text, p) and language.coherent(o.text, g.topic, o.finished)
                                      and not any(language.has_style(o.text, r) for r in PERSONAS if r != p)
                                      for g, o in by[("steered", p)])}
        for k in negative_scales:
            key = _negative_key(k)
            row[key] = marker((key, p), p)
            row[key + "_coherence"] = coh((key, p))
        if capping:
            row["capping"] = marker(("capping", p), p)
        res["personas"][p] = row
    if blends:
        for a, b in combinations(PERSONAS, 2):
            items = by[("blend", a, b)]
            res["blends"][f"{a}+{b}"] = {
                "both": _rate(language.has_style(o.text, a) and language.has_style(o.text, b) for _, o in items),
                "either": _rate(language.has_style(o.text, a) or language.has_style(o.text, b) for _, o in items),
                "coherence": _rate(language.coherent(o.text, g.topic, o.finished) for g, o in items)}
    for word, opp in (TRAIT_PAIRS if traits else []):
        res["traits"][word] = {
            "prompted": marker(("trait_prompted", word), word),
            "prompted_opposite": marker(("trait_prompted", opp), opp),
            "plain": marker(("plain",), word), "plain_opposite": marker(("plain",), opp),
            "steered+": marker(("trait+", word), word), "steered+_opposite": marker(("trait+", word), opp),
            "steered-": marker(("trait-", word), opp), "steered-_word": marker(("trait-", word), word),
            "coherence+": coh(("trait+", word)), "coherence-": coh(("trait-", word))}
    res["samples"] = {f"{k[0]}:{'+'.join(k[1:])}": by[k][0][1].text[:300] for k in list(by)[:40]}
    return res


def measure_steer_tokens(client, questions: list[tuple[str, str]], *, strength: float,
                         temperature: float, modes: list[str], personas: list[str] | None = None,
                         seed: int = 0, suffix: str = "", penalties: dict | None = None) -> dict:
    """The proof's steered rows (held-out assistant prompt + the persona's vector at `strength`)
    once per `steer_tokens` mode, on the same questions and seeds, so the modes compare side by
    side; and the plain answers (no steering) the rates are read against. Each mode is sent
    explicitly ("all" too): the server's configured default does not decide the row."""
    personas = list(personas or PERSONAS)
    pen = tuple(sorted((penalties or {}).items()))
    gens: list[Gen] = []
    keys: list[tuple] = []

    def add(key, st=()):
        for i, (q, topic) in enumerate(questions):
            gens.append(Gen(_prompt("assistant", i), q, topic, st, temperature, seed + i, pen))
            keys.append(key)

    add(("plain",))
    for mode in modes:
        for p in personas:
            add((mode, p), steer(persona=p + suffix, strength=strength, steer_tokens=mode))
    outs = client.run(gens)
    by: dict[tuple, list[tuple[Gen, Out]]] = {}
    for k, g, o in zip(keys, gens, outs):
        by.setdefault(k, []).append((g, o))
    plain = by[("plain",)]
    res: dict[str, Any] = {
        "plain": {p: _rate(language.has_style(o.text, p) for _, o in plain) for p in personas},
        "plain_coherence": _rate(language.coherent(o.text, g.topic, o.finished) for g, o in plain),
        "modes": {}}
    for mode in modes:
        res["modes"][mode] = {}
        for p in personas:
            items = by[(mode, p)]
            rest = [r for r in PERSONAS if r != p]
            res["modes"][mode][p] = dict(
                steered=_rate(language.has_style(o.text, p) for _, o in items),
                others=_rate(any(language.has_style(o.text, r) for r in rest) for _, o in items),
                coherence=_rate(language.coherent(o.text, g.topic, o.finished) for g, o in items),
                sample=items[0][1].text[:300])
    return res


def format_steer_tokens(report: dict) -> str:
    """The steer_tokens comparison, one table per decoding mode: per persona the plain rate, then
    the steered rate and the coherence of each steer_tokens mode side by side."""
    lines = []
    d = report["default"]
    for decoding, res in report["steer_tokens"].items():
        modes = list(res["modes"])
        lines.append(f"== steer_tokens {' vs '.join(modes)} ({decoding}, {report['n_questions']} "
                     f"held-out questions, strength {d['strength']}, layers {d['layers']}, "
                     f"position {d['position']}, via {report['backend']})")
        lines.append(f"{'persona':15s} {'plain':>6s} " + " ".join(f"{'steered ' + m:>18s}" for m in modes)
                     + " " + " ".join(f"{'coherence ' + m:>20s}" for m in modes))
        personas = list(res["plain"])
        for p in personas:
            lines.append(f"{p:15s} {res['plain'][p]:6.2f} "
                         + " ".join(f"{res['modes'][m][p]['steered']:18.2f}" for m in modes) + " "
                         + " ".join(f"{res['modes'][m][p]['coherence']:20.2f}" for m in modes))
        mean = {m: {k: sum(res["modes"][m][p][k] for p in personas) / len(personas)
                    for k in ("steered", "others", "coherence")} for m in modes}
        lines.append(f"{'mean':15s} {sum(res['plain'].values()) / len(personas):6.2f} "
                     + " ".join(f"{mean[m]['steered']:18.2f}" for m in modes) + " "
                     + " ".join(f"{mean[m]['coherence']:20.2f}" for m in modes)
                     + "   others: " + ", ".join(f"{m} {mean[m]['others']:.2f}" for m in modes))
    return "\n".join(lines)


def sweep(settings, client, questions, *, positions: list[str], strengths: list[float],
          layer_sets: dict[str, list[int]], log=print) -> list[dict]:
    """Greedy steered marker rate / others / coherence per (position, layers, strength)."""
    rows = []
    for pos in positions:
        suffix = POSITIONS[pos]
        names = {}
        for lname, layers in layer_sets.items():
            tag = lname.replace(",", "-")       # vector names allow no commas
            for p in PERSONAS:
                # a copy even for "all": the extracted file may carry the toy's recommended
                # rows (extraction.jobs.with_model_setting), and the sweep steers every row it names
                names[(lname, p)] = restricted(settings, p + suffix, layers, f"{p}{suffix}_s{tag}")
        gens, keys = [], []
        for lname in layer_sets:
            for s in strengths:
                for p in PERSONAS:
                    for i, (q, topic) in enumerate(questions):
                        gens.append(Gen(_prompt("assistant", i), q, topic,
                                        steer(persona=names[(lname, p)], strength=s), 0.0, i))
                        keys.append((lname, s, p))
        outs = client.run(gens)
        agg: dict[tuple, list] = {}
        for k, g, o in zip(keys, gens, outs):
            agg.setdefault(k, []).append((g, o))
        for lname in layer_sets:
            for s in strengths:
                per = {}
                for p in PERSONAS:
                    items = agg[(lname, s, p)]
                    per[p] = dict(
                        rate=_rate(language.has_style(o.text, p) for _, o in items),
                        others=_rate(any(language.has_style(o.text, r) for r in PERSONAS if r != p) for _, o in items),
                        coherence=_rate(language.coherent(o.text, g.topic, o.finished) for g, o in items),
                        clean=_rate(language.has_style(o.text, p) and language.coherent(o.text, g.topic, o.finished)
                                    and not any(language.has_style(o.text, r) for r in PERSONAS if r != p)
                                    for g, o in items))
                mean = {m: round(sum(v[m] for v in per.values()) / len(per), 3)
                        for m in ("rate", "others", "coherence", "clean")}
                rows.append(dict(position=pos, layers=lname, strength=s, **mean,
                                 min_clean=min(v["clean"] for v in per.values()), per_persona=per))
                log(f"  sweep {pos:13s} layers={lname:5s} strength={s:<5} rate={mean['rate']:.2f} "
                    f"others={mean['others']:.2f} coherence={mean['coherence']:.2f} clean={mean['clean']:.2f}")
    return rows


def penalized_mode(mode: str, penalties: dict) -> str:
    """The report's name of a decoding mode measured again with penalties."""
    return mode + ", " + ", ".join(f"{k} {v:g}" for k, v in sorted(penalties.items()))


def pick_default(rows: list[dict]) -> dict:
    """Highest mean clean rate (own style, coherent, no other persona); ties -> lower strength."""
    return max(rows, key=lambda r: (r["clean"], r["min_clean"], -r["strength"]))


def plot_sweep(rows: list[dict], out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    positions = sorted({r["position"] for r in rows})
    fig, axes = plt.subplots(1, len(positions), figsize=(6 * len(positions), 4.5), squeeze=False)
    for ax, pos in zip(axes[0], positions):
        sub = [r for r in rows if r["position"] == pos]
        for lname in dict.fromkeys(r["layers"] for r in sub):
            pts = sorted((r["strength"], r["rate"], r["coherence"]) for r in sub if r["layers"] == lname)
            line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"layers {lname}")
            ax.plot([p[0] for p in pts], [p[2] for p in pts], linestyle=":", color=line.get_color())
        ax.set_title(f"toy persona model, position={pos}\nsolid: own marker rate, dotted: coherence")
        ax.set_xlabel("strength (weight of the persona vector)")
        ax.set_ylabel("rate (mean over 6 personas)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------- report
def check_targets(main: dict, capping: bool = True) -> dict:
    t = TARGETS
    out = {}
    for p, r in main["personas"].items():
        out[p] = {"prompted": r["prompted"] >= t["prompted"], "plain": r["plain"] <= t["plain"],
                  "steered": r["steered"] >= t["steered"], "others": r["steered_others"] <= t["others"],
                  "coherence": r["steered_coherence"] >= t["coherence"]}
        for key in _negative_keys(r):
            out[p][key] = r[key] <= t["cut"] * r["prompted"]
        if capping and "capping" in r:
            out[p]["capping"] = r["capping"] <= t["cut"] * r["prompted"]
    if main["blends"]:
        both = [b["both"] for b in main["blends"].values()]
        out["blends"] = {"pairs_at_target": sum(1 for x in both if x >= t["blend"]), "pairs": len(both),
                         "mean_both": round(sum(both) / len(both), 3)}
    return out


def format_table(report: dict) -> str:
    lines = [format_steer_tokens(report)] if report.get("steer_tokens") else []
    for mode, main in report["modes"].items():
        lines.append(f"== {mode} ({report['n_questions']} held-out questions, strength "
                     f"{report['default']['strength']}, layers {report['default']['layers']}, "
                     f"position {report['default']['position']}, via {report['backend']}"
                     f"{', personas equalized' if report.get('equalized') else ''})")
        first = next(iter(main["personas"].values()))
        negs = _negative_keys(first)
        lines.append(f"{'persona':15s} {'prompted':>8s} {'plain':>6s} {'steered':>8s} {'others':>7s} "
                     f"{'coher.':>7s} " + " ".join(f"{k + ' (coh.)':>22s}" for k in negs)
                     + f" {'capping':>8s}")
        for p, r in main["personas"].items():
            lines.append(f"{p:15s} {r['prompted']:8.2f} {r['plain']:6.2f} {r['steered']:8.2f} "
                         f"{r['steered_others']:7.2f} {r['steered_coherence']:7.2f} "
                         + " ".join(f"{r[k]:15.2f} ({r[k + '_coherence']:.2f})" for k in negs)
                         + f" {r.get('capping', float('nan')):8.2f}")
        if main["blends"]:
            both = [b["both"] for b in main["blends"].values()]
            lines.append(f"blends (15 pairs, each persona at {report.get('blend_scale', 0.5)} x strength): both styles mean {sum(both) / len(both):.2f}, "
                         f"pairs with both >= 0.5: {sum(1 for x in both if x >= 0.5)}/{len(both)}")
        for w, r in main["traits"].items():
            lines.append(f"trait {w:13s} prompted {r['prompted']:.2f}/{r['prompted_opposite']:.2f}  "
                         f"plain {r['plain']:.2f}/{r['plain_opposite']:.2f}  +steer {r['steered+']:.2f} "
                         f"(opposite {r['steered+_opposite']:.2f})  -steer -> opposite {r['steered-']:.2f}  "
                         f"coherence {r['coherence+']:.2f}/{r['coherence-']:.2f}")
    return "\n".join(lines)


def run_eval(settings, *, workdir: Path, url: str | None = None, backend: str = "server",
             n_questions: int = 20, extract_questions: int = 20,
             positions: list[str] | None = None, strengths: list[float] | None = None,
             sweep_questions: int = 8, layer_sets: dict[str, list[int]] | None = None,
             default: dict | None = None, sampled: bool = True, blends: bool = True,
             capping: bool = True, traits: bool = True, skip_extraction: bool = False,
             threads: int | None = 1, blend_scale: float = 0.5, equalize: bool = True,
             penalties: dict | None = None, steer_tokens: list[str] | None = None,
             log: Callable[[str], None] = print) -> dict:
    """The whole proof. `settings` must point paths.vectors/datasets at a scratch folder.
    With `equalize`, the six persona vectors of each position are put on one scale
    (extraction.equalize) before anything is measured. `penalties` (the OpenAI presence /
    frequency penalty fields to send, e.g. ClientSettings.penalties()) measure every decoding
    mode a second time with them (the rows without
    them stay the proof). `steer_tokens` (e.g. ["all", "generated"]): instead of the proof's
    rows, measure the steered rate and coherence per persona once per steer_tokens mode, side by
    side (report["steer_tokens"][decoding mode]; the server backend only)."""
    import torch

    from persona_steer.testmodels import resolve_model
    if steer_tokens and backend != "server":
        raise ValueError("comparing steer_tokens modes needs the server backend (the HF reference "
                         "here steers every token)")
    if threads:
        torch.set_num_threads(threads)   # 1 is far faster than 2 on a busy 2-core machine
    workdir.mkdir(parents=True, exist_ok=True)
    positions = positions or list(POSITIONS)
    model_path = resolve_model(settings.model.name, settings.path("cache"))
    t0 = time.time()
    server = None
    client = None
    try:
        if backend == "server":
            if not url:
                log("starting a server on the toy model ...")
                server = ToyServer(settings, workdir)
                url = server.url
            client = ServerClient(url)
            if server is None:                  # --url: a server this run did not start
                check_shared_store(settings, client)
        else:
            client = HFClient(settings, model_path)
        if not skip_extraction:
            log(f"extraction from the archetype datasets ({extract_questions} questions) ...")
            extract_all(settings, positions, num_questions=extract_questions,
                        base_url=url if backend == "server" else None, log=log, traits=traits,
                        axis=capping)
        if equalize:
            from extraction.equalize import equalize_norms
            from persona_steer.store import VectorStore
            for pos in positions:
                done = equalize_norms(VectorStore(settings.path("vectors")),
                                      [p + POSITIONS[pos] for p in PERSONAS])
                log(f"  {pos}: personas equalized, factors at the first layer "
                    + ", ".join(f"{e.name} {next(iter(e.scales.values())):.2f}" for e in done))
        from transformers import AutoConfig
        n_layers = AutoConfig.from_pretrained(model_path).num_hidden_layers
        rows: list[dict] = []
        if default is None:
            half = n_layers // 2
            layer_sets = layer_sets or {**{str(L): [L] for L in range(n_layers)},
                                        ",".join(map(str, range(half))): list(range(half)),
                                        ",".join(map(str, range(1, half))): list(range(1, half)),
                                        ",".join(map(str, range(half - 1, n_layers))):
                                            list(range(half - 1, n_layers)),
                                        "all": list(range(n_layers))}
            strengths = strengths or [0.5, 0.7, 1.0, 1.3, 1.6, 2.0, 3.0]
            sq = language.eval_questions(sweep_questions, seed=77)
            log(f"sweep: {len(positions)} positions x {len(layer_sets)} layer sets x {len(strengths)} strengths "
                f"x {len(PERSONAS)} personas x {len(sq)} questions ...")
            rows = sweep(settings, client, sq, positions=positions, strengths=strengths,
                         layer_sets=layer_sets, log=log)
            best = pick_default(rows)
            default = dict(position=best["position"], layers=best["layers"], strength=best["strength"],
                           layer_list=(layer_sets[best["layers"]]))
            plot_sweep(rows, workdir / "sweep.png")
        log(f"default: {default}")
        suffix = POSITIONS[default["position"]]
        # the vectors used for the proof: the chosen layers of each persona / trait
        chosen = "_d"
        for p in PERSONAS:
            restricted(settings, p + suffix, default["layer_list"], p + chosen)
        if traits:
            for w, _ in TRAIT_PAIRS:
                restricted(settings, w + suffix, default["layer_list"], w + chosen, kind="trait")
        questions = language.eval_questions(n_questions)
        modes: dict[str, tuple[float, dict]] = {"greedy": (0.0, {})}
        if sampled:
            modes["sampled (T=0.7)"] = (0.7, {})
        if penalties:
            for mode, (temp, _) in list(modes.items()):
                modes[penalized_mode(mode, penalties)] = (temp, penalties)
        report: dict[str, Any] = dict(model=settings.model.name, backend=client.name,
                                      n_questions=len(questions), extract_questions=extract_questions,
                                      default=default, targets=TARGETS, sweep=rows, modes={}, checks={},
                                      blend_scale=blend_scale, equalized=equalize,
                                      penalties=penalties or {})
        if steer_tokens:
            report["steer_tokens"] = {}
        for mode, (temp, pens) in modes.items():
            if steer_tokens:
                log(f"measuring steer_tokens {', '.join(steer_tokens)} ({mode}) ...")
                report["steer_tokens"][mode] = measure_steer_tokens(
                    client, questions, strength=default["strength"], temperature=temp,
                    modes=steer_tokens, suffix=chosen, penalties=pens)
                continue
            log(f"measuring ({mode}) ...")
            main = measure(client, questions, strength=default["strength"], temperature=temp,
                           suffix=chosen, blends=blends, capping=capping, traits=traits,
                           blend_scale=blend_scale, penalties=pens)
            report["modes"][mode] = main
            report["checks"][mode] = check_targets(main, capping)
        report["minutes"] = round((time.time() - t0) / 60, 1)
        (workdir / "report.json").write_text(json.dumps(report, indent=1))
        return report
    finally:
        if client is not None:
            client.close()
        if server is not None:
            server.stop()
