"""`persona-steer tune`: pick a vector's layers and strength by a scored sweep, and store them.

For one persona or trait: candidate layer sets (from the per-layer separation the extraction
recorded) x strengths (config tune.strengths, plus the current default), each steering greedy
answers to held-out questions through a running server (the vector's own file, uploaded under a
temporary name with the layer set as its `recommended_layers`); a scorer (extraction.tune_scorers)
rates every answer 0-100 for expression and coherence. The pick is the highest mean expression
whose mean coherence is >= tune.min_coherence (ties: more coherent, weaker, fewer layers). It is
written back to the vector (SteeringVector.with_recommendation) through the server, which then
uses its layers and, for a request with no strength, its strength.

    result = tune(client, "persona", "pirate", scorer, TuneParams.from_settings(settings))
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from extraction.tune_scorers import (Answer, JudgeScorer, MarkerScorer, Question, Score, Scorer,
                                     Target, TuneError)
from persona_steer.vector_format import (RECOMMENDED_LAYERS, RECOMMENDED_STRENGTH, TUNING,
                                         SteeringVector)

Progress = Optional[Callable[[int, int, str], None]]     # (done, total, what)


@dataclass
class TuneParams:
    strengths: list[float] = field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0, 3.0, 4.0])
    num_questions: int = 8
    max_tokens: int = 96
    min_coherence: float = 80.0
    concurrency: int = 16
    default_strength: float = 1.0          # the server's steering.default_strength
    layer_sets: Optional[list[list[int]]] = None   # None: from the vector's separation
    question_seed: int = 0
    write: bool = True                     # store the pick with the vector

    @classmethod
    def from_settings(cls, settings, **over: Any) -> "TuneParams":
        t = settings.tune
        base = dict(strengths=list(t.strengths), num_questions=t.num_questions,
                    max_tokens=t.max_tokens, min_coherence=t.min_coherence,
                    concurrency=t.concurrency,
                    default_strength=settings.steering.default_strength)
        base.update({k: v for k, v in over.items() if v is not None})
        return cls(**base)


@dataclass
class Row:
    layers: list[int]
    strength: float
    expression: float
    coherence: float
    current: bool = False                  # the vector's setting before this tune

    @property
    def label(self) -> str:
        return layer_label(self.layers)


@dataclass
class TuneResult:
    kind: str
    name: str
    rows: list[Row]
    baseline: Row                          # unsteered, for reference
    best: Optional[Row]
    current: Row
    min_coherence: float
    scorer: dict
    written: bool = False
    content_hash: str = ""

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "min_coherence": self.min_coherence,
                "scorer": self.scorer, "written": self.written, "content_hash": self.content_hash,
                "best": asdict(self.best) if self.best else None, "current": asdict(self.current),
                "baseline": asdict(self.baseline), "table": [asdict(r) for r in self.rows]}


# ------------------------------------------------------------------------------ layer sets
def layer_label(layers: list[int]) -> str:
    if not layers:
        return "none"
    if layers == list(range(layers[0], layers[-1] + 1)) and len(layers) > 2:
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


def layer_sets(stored: list[int], separation: dict | None) -> list[list[int]]:
    """Candidates among the stored rows, from the extraction's per-layer separation: the best
    layer, a band around it, the top quarter, and every stored row (deduplicated)."""
    stored = sorted(stored)
    sep = {L: float((separation or {}).get(str(L), 0.0)) for L in stored}
    ranked = sorted(stored, key=lambda L: (-sep[L], L))
    best = ranked[0]
    width = max(1, len(stored) // 12)
    sets = [[best], [L for L in stored if abs(L - best) <= width],
            sorted(ranked[:max(2, len(stored) // 4)]), stored]
    out: list[list[int]] = []
    for s in sets:
        if s not in out:
            out.append(s)
    return out


def pick(rows: list[Row], min_coherence: float) -> Optional[Row]:
    """Highest expression with coherence >= the threshold; ties: more coherent, weaker, fewer
    layers. None when no steered setting is coherent enough."""
    ok = [r for r in rows if r.strength > 0 and r.coherence >= min_coherence]
    if not ok:
        return None
    return max(ok, key=lambda r: (r.expression, r.coherence, -r.strength, -len(r.layers)))


# ------------------------------------------------------------------------------ the sweep
def target_of(vec: SteeringVector) -> Target:
    style = vec.metadata.get("archetype") or vec.metadata.get("word") or vec.name
    used = vec.meta_json("questions") or []
    return Target(vec.kind, vec.name, vec.description, style,
                  tuple(q for q in used if isinstance(q, str)))


def _probe_bytes(vec: SteeringVector, name: str, layers: list[int]) -> bytes:
    """The vector under a temporary name, steering only `layers`, with no tuned strength."""
    meta = {k: v for k, v in vec.metadata.items() if k not in (RECOMMENDED_STRENGTH, TUNING)}
    meta.update(name=name, **{RECOMMENDED_LAYERS: json.dumps(layers)})
    return SteeringVector(vec.kind, name, vec.vectors, vec.layers, meta, dict(vec.extra)).to_bytes()


class Generator:
    """Greedy answers through the project's server (clients.client.PersonaSteerClient)."""

    def __init__(self, client, model: str, params: TuneParams):
        self.client, self.model, self.params = client, model, params

    def answer(self, kind: str, name: str | None, strength: float, q: Question, seed: int) -> Answer:
        msgs = ([{"role": "system", "content": q.system}] if q.system else []) + [
            {"role": "user", "content": q.text}]
        body: dict[str, Any] = {"model": self.model, "messages": msgs, "temperature": 0.0,
                                "max_tokens": self.params.max_tokens, "seed": seed,
                                "chat_template_kwargs": {"enable_thinking": False},
                                "scale": 1.0}     # the tuned strength is a weight at scale 1
        if name is not None:
            if kind == "persona":
                body.update(persona=name, strength=strength)
            else:
                body["traits"] = {name: strength}
        out = self.client.request("POST", "/v1/chat/completions", json=body).json()
        choice = out["choices"][0]
        return Answer(q, choice["message"].get("content") or "", choice.get("finish_reason") == "stop")


def _mean(xs: list[float]) -> float:
    return round(sum(xs) / len(xs), 2) if xs else float("nan")


def tune(client, kind: str, name: str, scorer: Scorer, params: TuneParams,
         progress: Progress = None) -> TuneResult:
    """The sweep for one vector on the server `client` talks to; writes the pick unless
    params.write is False or nothing is coherent enough."""
    if kind not in ("persona", "trait"):
        raise TuneError(f"tune works on personas and traits, not {kind}")
    original = client.download_vector(kind, name)
    vec = SteeringVector.from_bytes(original, expect_kind=kind)
    target = target_of(vec)
    if hasattr(scorer, "check"):
        scorer.check(target)
    stored = vec.layers.tolist()
    current_layers = vec.recommended_layers() or stored
    tuned = vec.recommended_strength()
    current_strength = params.default_strength if tuned is None else tuned
    sets = [sorted(s) for s in (params.layer_sets or layer_sets(stored, vec.meta_json("separation")))]
    bad = [s for s in sets if not s or not set(s) <= set(stored)]
    if bad:
        raise TuneError(f"layer set {bad[0]} is not among {kind} '{name}''s stored layers {stored}")
    if current_layers not in sets:
        sets.append(sorted(current_layers))
    strengths = sorted(set(params.strengths) | {current_strength})
    questions = scorer.questions(target, params.num_questions, params.question_seed)
    model = client.default_model()
    gen = Generator(client, model, params)
    tag = hashlib.sha1(f"{os.getpid()}-{name}".encode()).hexdigest()[:8]
    probes = {i: f"tune-{tag}-{i}" for i in range(len(sets))}
    for probe in probes.values():
        if any(v.get("name") == probe for v in client.list_vectors(kind)):
            raise TuneError(f"a {kind} named '{probe}' exists; remove it or run tune again")
    jobs = [(None, 0.0)] + [(i, s) for i in range(len(sets)) for s in strengths]
    total, done = len(jobs) * len(questions), 0
    answers: dict[tuple, list[Score]] = {}
    try:
        for i, layers in enumerate(sets):
            client.upload_vector(kind, probes[i], _probe_bytes(vec, probes[i], layers))

        def one(job_q):
            (i, s), (k, q) = job_q
            a = gen.answer(kind, None if i is None else probes[i], s, q, seed=k)
            return (i, s), scorer.score(target, [a])[0]

        work = [(job, (k, q)) for job in jobs for k, q in enumerate(questions)]
        with ThreadPoolExecutor(params.concurrency) as pool:
            for key, score in pool.map(one, work):
                answers.setdefault(key, []).append(score)
                done += 1
                if progress and (done % len(questions) == 0 or done == total):
                    progress(done, total, f"{kind} {name}")
    finally:
        for probe in probes.values():
            try:
                client.delete_vector(kind, probe)
            except Exception:      # noqa: BLE001 - cleanup must not hide the real error
                pass

    def row(key, layers, s) -> Row:
        sc = answers[key]
        return Row(layers, s, _mean([x.expression for x in sc]), _mean([x.coherence for x in sc]),
                   current=(layers == sorted(current_layers) and s == current_strength))

    rows = [row((i, s), sets[i], s) for i in range(len(sets)) for s in strengths]
    baseline = row((None, 0.0), [], 0.0)
    current = next(r for r in rows if r.current)
    best = pick(rows, params.min_coherence)
    result = TuneResult(kind, name, rows, baseline, best, current, params.min_coherence,
                        scorer.describe())
    if best is not None and params.write:
        if client.download_vector(kind, name) != original:
            raise TuneError(f"{kind} '{name}' changed on the server during the tune; "
                            f"its recommendation was not written (run tune again)")
        tuning = {**scorer.describe(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "min_coherence": params.min_coherence, "num_questions": len(questions),
                  "max_tokens": params.max_tokens, "expression": best.expression,
                  "coherence": best.coherence, "baseline": asdict(baseline),
                  "table": [asdict(r) for r in rows]}
        tuned = vec.with_recommendation(best.layers, best.strength, tuning)
        result.content_hash = client.upload_vector(kind, name, tuned.to_bytes())["content_hash"]
        result.written = True
    return result


# ------------------------------------------------------------------------------ scorers
def make_scorer(settings, client, which: str | None = None) -> Scorer:
    """tune.scorer (or `which`): marker on the toy model, else the judge (tune.judge.*; empty
    url: the server being tuned, asked unsteered)."""
    which = which or settings.tune.scorer
    if which == "auto":
        from persona_steer.toy_demo import TOY_MODEL
        which = "marker" if settings.model.name == TOY_MODEL else "judge"
    if which == "marker":
        return MarkerScorer()
    from extraction import datasets as ds
    j = settings.tune.judge
    own = not j.url
    url = client.base_url if own else j.url
    key = (client.api_key if own else None) if j.api_key is None else j.api_key
    model = j.model or (client.default_model() if own else _first_model(url, key))
    return JudgeScorer(url, model, api_key=key, tries=j.tries, max_tokens=j.max_tokens,
                       own_server=own, questions_pool=ds.load_questions(settings))


def _first_model(url: str, api_key: str | None) -> str:
    import httpx
    base = url.rstrip("/")
    models = base + ("/models" if base.endswith("/v1") else "/v1/models")
    try:
        r = httpx.get(models, timeout=30,
                      headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
        r.raise_for_status()
        return r.json()["data"][0]["id"]
    except (httpx.HTTPError, ValueError, KeyError, IndexError) as err:
        raise TuneError(f"cannot list the judge's models at {models} ({err}); "
                        f"set tune.judge.model") from None


# ------------------------------------------------------------------------------ outputs
def format_table(result: TuneResult) -> str:
    lines = [f"{result.kind} '{result.name}': expression / coherence (0-100), "
             f"scorer {result.scorer.get('judge_model') or result.scorer['scorer']}, "
             f"coherence >= {result.min_coherence:g}",
             f"  {'layers':14s} {'strength':>8s} {'expression':>10s} {'coherence':>9s}",
             f"  {'(unsteered)':14s} {0:8g} {result.baseline.expression:10.1f} "
             f"{result.baseline.coherence:9.1f}"]
    for r in result.rows:
        mark = ("  <- picked" if r is result.best else "") + ("  (current)" if r.current else "")
        lines.append(f"  {r.label:14s} {r.strength:8g} {r.expression:10.1f} {r.coherence:9.1f}{mark}")
    if result.best is None:
        lines.append(f"  no setting kept coherence >= {result.min_coherence:g}: nothing stored")
    else:
        lines.append(f"  picked layers {result.best.label} strength {result.best.strength:g}"
                     + (" (stored with the vector)" if result.written else " (not stored)"))
    return "\n".join(lines)


def plot_tune(result: TuneResult, out: str | Path) -> Path:
    """Expression (solid) and coherence (dotted) against strength, one line per layer set."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label in dict.fromkeys(r.label for r in result.rows):
        pts = sorted((r.strength, r.expression, r.coherence) for r in result.rows if r.label == label)
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"layers {label}")
        ax.plot([p[0] for p in pts], [p[2] for p in pts], linestyle=":", color=line.get_color())
    ax.axhline(result.min_coherence, color="grey", lw=0.8, linestyle="--")
    if result.best is not None:
        ax.plot([result.best.strength], [result.best.expression], marker="*", markersize=14,
                color="black", linestyle="none", label="picked")
    ax.set_title(f"{result.kind} '{result.name}': solid expression, dotted coherence")
    ax.set_xlabel("strength (weight of the vector)")
    ax.set_ylabel("score (0-100)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
