"""Measuring the toy model's demo defaults: per persona, the strength and temperature at which a
first steered answer keeps both the persona and the question's topic.

    python -m toy.defaults [--questions 24] [--write]

Starts the real server on the toy model with its shipped demo vectors (as a fresh `make serve`
does), asks as the web page does (no system prompt, the bundled clients' presence penalty) and,
for each persona, every strength x temperature of the grid, counts the answers that are *clean*:
the persona's markers, no other persona's, the topic word, a proper end and no loop
(persona_steer.toy_language). Per persona it picks the cleanest cell (ties: greedy, whose first answer
is the measured one every time, then the strength nearest the config's default) and, with --write, writes them to
persona_steer/toy_model/demo_defaults.json, which the server reads (persona_steer/toy_demo.py).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from datetime import date
from pathlib import Path

from persona_steer import toy_language as language, toy_topics
from persona_steer.toy_demo import DEFAULTS_FILE, RECOMMENDED, TOY_MODEL, demo_dir
from toy.eval import PERSONAS, Gen, ServerClient, ToyServer, _rate, steer

STRENGTHS = (0.7, 0.8, 0.9, 1.0)
TEMPERATURES = (0.0, 0.7)


def train_questions(n: int, seed: int = 4321) -> list[tuple[str, str]]:
    """n (question, topic key) in the training templates, deterministic."""
    import random
    rng = random.Random(seed)
    topics = rng.sample(toy_topics.TOPICS, min(n, len(toy_topics.TOPICS)))
    return [(language.question_for(t, rng, "train"), t["key"]) for t in topics]


def pick(cells: list[dict]) -> dict:
    """The cleanest cell; ties: the lower temperature, then the strength nearest RECOMMENDED's."""
    return max(cells, key=lambda c: (c["clean"], -c["temperature"],
                                     -abs(c["strength"] - RECOMMENDED["strength"])))


def measure(client, questions, penalties: dict, log=print) -> dict[str, list[dict]]:
    pen = tuple(sorted(penalties.items()))
    gens, keys = [], []
    for p in PERSONAS:
        for s in STRENGTHS:
            for t in TEMPERATURES:
                for i, (q, topic) in enumerate(questions):
                    gens.append(Gen(None, q, topic, steer(persona=p, strength=s), t, i, pen))
                    keys.append((p, s, t))
    outs = client.run(gens)
    by: dict[tuple, list] = {}
    for k, g, o in zip(keys, gens, outs):
        by.setdefault(k, []).append((g, o))
    cells: dict[str, list[dict]] = {}
    for (p, s, t), items in by.items():
        rest = [r for r in PERSONAS if r != p]
        cell = dict(strength=s, temperature=t,
                    rate=_rate(language.has_style(o.text, p) for _, o in items),
                    coherence=_rate(language.coherent(o.text, g.topic, o.finished) for g, o in items),
                    clean=_rate(language.has_style(o.text, p) and language.coherent(o.text, g.topic, o.finished)
                                and not any(language.has_style(o.text, r) for r in rest) for g, o in items))
        cells.setdefault(p, []).append(cell)
        log(f"  {p:15s} strength {s:<4} temperature {t:<4} rate {cell['rate']:.2f} "
            f"coherence {cell['coherence']:.2f} clean {cell['clean']:.2f}")
    return cells


def main(argv=None) -> int:
    from persona_steer.config import PROJECT_ROOT, load_config
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, default=24, help="training-phrased questions per cell")
    ap.add_argument("--write", action="store_true", help=f"write {DEFAULTS_FILE} next to the model")
    args = ap.parse_args(argv)
    base = load_config(PROJECT_ROOT / "config.yaml", environ={})
    penalties = base.clients.penalties()
    # the phrasings the model was trained on, as a new user types them ("Tell me about ...")
    questions = train_questions(args.questions)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        settings = load_config(None, overrides=[
            f"model.name={TOY_MODEL}", f"paths.vectors={work / 'vectors'}",
            f"paths.datasets={work / 'datasets'}", f"paths.cache={base.path('cache')}"], environ={})
        server = ToyServer(settings, work, demo_vectors="auto")   # the shipped demo vectors
        client = ServerClient(server.url)
        try:
            cells = measure(client, questions, penalties)
        finally:
            client.close()
            server.stop()
    chosen = {p: pick(cells[p]) for p in PERSONAS}
    record = {
        "what": "per persona, the strength and decoding at which the shipped demo vectors keep both "
                "the persona and the question's topic (the cleanest cell of the grid)",
        "measured": str(date.today()), "by": "python -m toy.defaults --write",
        "questions": len(questions), "penalties": penalties,
        "grid": {"strength": list(STRENGTHS), "temperature": list(TEMPERATURES)},
        "personas": {p: {"strength": c["strength"], "temperature": c["temperature"],
                         "clean": c["clean"], "rate": c["rate"], "coherence": c["coherence"]}
                     for p, c in chosen.items()},
        "cells": cells,
    }
    print(json.dumps(record["personas"], indent=1))
    if args.write:
        (demo_dir().parent / DEFAULTS_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
