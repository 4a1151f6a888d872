"""`pmbench train pretrain` on the cpu-tiny size: it learns, its record is complete, and
its checkpoint runs under `pmbench run --method rope2d` with the trained settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pmbench.cli import app
from pmbench.engine.models import load_model
from pmbench.rope2d.patch import patch_model
from pmbench.train.data import pack_example
from pmbench.train.loop import evaluate_loss
from pmbench.train.sources import PretrainSource, builtin_corpus

# small enough for CI: 512-token BPE on 300k characters, 2 x 24-token branches, one thread
# (ops this small only lose to thread synchronisation, badly so on a shared CPU)
TINY = ["--size", "cpu-tiny", "--vocab-size", "512", "--tokenizer-chars", "300000",
        "--context-len", "16", "--segment-len", "24", "--batch-size", "4",
        "--heldout-branches", "1,2", "--quiet", "--threads", "1"]
TRAIN_KEYS = {"run_id", "created", "kind", "model", "rope2d", "branches", "steps", "loss_curve",
              "heldout_loss", "train_loss", "data_split", "wall_s", "checkpoint", "settings",
              "tokens_per_s"}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    res = invoke("train", "pretrain", *TINY, "--steps", 40, "--branches", 2,
                 "--rope-2d-ratio", 0.5, "--lr", 3e-3, "--output-dir", out, "--run-id", "tiny")
    assert res.exit_code == 0, res.output
    return json.loads((out / "tiny" / "train.json").read_text())


def test_record_is_complete_and_loss_falls(pretrained):
    rec = pretrained
    assert TRAIN_KEYS <= rec.keys()
    assert rec["status"] == "complete" and rec["kind"] == "pretrain"
    assert rec["rope2d"] == {"ratio": 0.5, "mode": "split", "branch_freqs": "interleaved",
                             "mask": "isolated"}
    assert [s for s, _ in rec["loss_curve"]] == list(range(1, 41))
    assert set(rec["heldout_loss"]) == {"1", "2"}
    # an untrained model sits near ln(512) = 6.24; a few dozen steps must do clearly better
    assert rec["heldout_loss_start"] > 6.0
    assert rec["heldout_loss"]["2"] < rec["heldout_loss_start"] - 0.5
    # SQuAD's evaluation articles are named and were held out of the corpus
    assert rec["data_split"]["squad"]["heldout_articles"][0] == "Super_Bowl_50"


def test_checkpoint_reproduces_recorded_heldout_loss(pretrained, data_dir):
    """Reloaded from disk with the settings in its config.json, the checkpoint scores the
    held-out set exactly as the training run recorded."""
    ckpt = Path(pretrained["checkpoint"])
    config = json.loads((ckpt / "config.json").read_text())
    assert config["rope2d"]["ratio"] == 0.5
    loaded = load_model(str(ckpt), device="cpu", dtype="float32")
    patch_model(loaded.model)  # settings from the config's rope2d section
    source = PretrainSource(builtin_corpus(data_dir, 8), loaded.tokenizer, 16, 24)
    packed = [pack_example(ex, "isolated") for ex in source.heldout(2)]
    loss = evaluate_loss(loaded.model, packed, torch.device("cpu"),
                         loaded.tokenizer.pad_token_id, 4)
    assert loss == pytest.approx(pretrained["heldout_loss"]["2"], rel=1e-4)


def test_checkpoint_answers_under_rope2d_with_trained_ratio(pretrained, tmp_path):
    res = invoke("run", "--method", "rope2d", "--model", pretrained["checkpoint"],
                 "--suite", "squad", "--limit", 2, "--branch", 2, "--max-new-tokens", 4,
                 "--ignore-eos", "--no-warmup", "--output-dir", tmp_path, "--run-id", "eval")
    assert res.exit_code == 0, res.output
    run = json.loads((tmp_path / "eval" / "run.json").read_text())
    assert run["rope2d"]["ratio"] == 0.5
    assert run["metrics"]["n"] == 2
    samples = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").open()]
    assert [len(s["output_ids"]) for s in samples] == [4, 4]


@pytest.mark.parametrize(("args", "needle"), [
    (["pretrain", "--rope-2d-ratio", "2"], "ratio must be in [0, 1]"),
    (["pretrain", "--size", "huge"], "unknown model size 'huge'"),
    (["pretrain", "--mask", "leaky"], "unknown rope-2d mask"),
    (["finetune", "--sources", "squad,trivia"], "unknown fine-tuning source(s) ['trivia']"),
    (["pretrain", "--resume", "nope"], "no training run 'nope'"),
])
def test_bad_training_input_exits_2_before_any_work(tmp_path, args, needle):
    res = invoke("train", *args, "--output-dir", tmp_path / "out")
    assert res.exit_code == 2
    assert needle in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()
