"""The extraction CLI: bad inputs give one-line errors and leave the store untouched; a real
create + info --plot with the HF backend."""
from __future__ import annotations

import pytest

from persona_steer.cli import main
from persona_steer.store import VectorStore
from tests.extraction.conftest import ext_settings, make_root


def _argv(root, *cmd):
    sets = {"model.name": "builtin:tiny", "extraction.num_questions": "1",
            "extraction.max_new_tokens": "4", "extraction.target_layers": "all",
            "paths.datasets": str(root / "datasets"),
            "paths.vectors": str(root / "vectors"), "paths.cache": str(root / "cache")}
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")] + list(cmd)


def _snapshot(root):
    return sorted((str(p), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file())


@pytest.fixture()
def cli_root(tmp_path, monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("PERSONA_STEER_")]:
        monkeypatch.delenv(key)
    root = make_root(tmp_path)
    assert main(_argv(root, "init")) == 0
    return root


@pytest.mark.parametrize("cmd, message", [
    (["create", "pirate2", "--from-archetype", "ninja"], "error: unknown archetype 'ninja' (available: "),
    (["create", "x", "--description", "   "], "error: the description is empty"),
    (["create", "Bad Name!", "--from-archetype", "pirate"], "error: persona name: invalid name 'Bad Name!'"),
    (["create", "../evil", "--from-archetype", "pirate"], "error: persona name: invalid name '../evil'"),
    (["create", "x", "--from-archetype", "pirate", "--description", "a pirate"],
     "error: give exactly one of --from-archetype A, --description"),
    (["create", "x"], "error: give exactly one of --from-archetype A, --description"),
    (["create", "x", "--all"], "error: --all creates every archetype under its own name"),
    (["trait", "happy", "--opposite", " Happy "], "error: the word and its opposite are the same ('happy')"),
    (["trait", "happy", "--opposite", ""], "error: the trait opposite is empty"),
    (["trait", "happy", "--opposite", "sad", "--name", "no/slash"], "error: trait name: invalid name"),
    (["trait", "12345", "--opposite", "sad"], "error: the trait word '12345' must be a word"),
    (["info", "nobody"], "error: no persona or trait named 'nobody' (available: none)"),
    (["info", "Bad!"], "error: invalid name 'Bad!'"),
])
def test_bad_input_one_line_error_store_untouched(cli_root, capsys, cmd, message):
    before = _snapshot(cli_root)
    assert main(_argv(cli_root, *cmd)) == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert _snapshot(cli_root) == before
    assert not (cli_root / "vectors").exists() or not list((cli_root / "vectors").rglob("*.safetensors"))


def test_init_idempotent(cli_root, capsys):
    capsys.readouterr()
    assert main(_argv(cli_root, "init")) == 0
    assert "0 file(s) written, 19 already there (use --force to regenerate)" in capsys.readouterr().out
    assert main(_argv(cli_root, "init", "--force")) == 0
    assert "19 file(s) written" in capsys.readouterr().out


def test_create_and_info_plot_with_hf_backend(cli_root, capsys, tmp_path):
    assert main(_argv(cli_root, "create", "robot", "--from-archetype", "robot", "--backend", "hf",
                      "--position", "last_prompt")) == 0
    out = capsys.readouterr()
    assert "persona 'robot': 4 layers, hidden 256, last_prompt, best separation" in out.out
    assert "rollouts" in out.err and "activations" in out.err      # progress bars
    vec = VectorStore(cli_root / "vectors").load("persona", "robot")
    assert vec.metadata["rollout_backend"] == "hf" and vec.metadata["position"] == "last_prompt"
    png = tmp_path / "charts" / "robot.png"
    assert main(_argv(cli_root, "info", "robot", "--plot", str(png))) == 0
    text = capsys.readouterr().out
    assert "persona 'robot'" in text and "separation" in text and "last_prompt" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    # The same store through the settings loader the server uses.
    assert VectorStore(ext_settings(cli_root).path("vectors")).names("persona") == ["robot"]


def test_summary_says_when_the_best_layer_was_not_stored():
    """Separation is measured on every layer; the summary points at a better layer that
    extraction.target_layers left out, and says nothing extra when the best one is stored."""
    import json

    import torch

    from extraction.cli import _summary
    from persona_steer.vector_format import SteeringVector

    def vec(sep):
        return SteeringVector.build("trait", "happy", {0: torch.ones(8), 1: torch.ones(8)},
                                    model="m", metadata={"separation": json.dumps(sep),
                                                         "position": "response_mean"})

    text = _summary(vec({"0": 1.0, "1": 1.2, "3": 1.7}))
    assert text.startswith("trait 'happy': 2 layers, hidden 8, response_mean, best separation "
                           "1.70 at layer 3 (not stored: extraction.target_layers gave [0, 1]")
    assert "persona-steer info happy" in text
    assert _summary(vec({"0": 1.0, "1": 1.9, "3": 1.7})).endswith("best separation 1.90 at layer 1")
