"""Interrupt a training run and resume it: the loss curve continues from the saved step
and ends where an uninterrupted run with the same settings ends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import pmbench.train.loop as loop
from pmbench.cli import app

TINY = ["train", "pretrain", "--size", "cpu-tiny", "--vocab-size", "512",
        "--tokenizer-chars", "300000", "--context-len", "16", "--segment-len", "24",
        "--batch-size", "2", "--branches", "2", "--heldout-branches", "2", "--steps", "8",
        "--save-every", "3", "--lr", "3e-3", "--quiet", "--threads", "1"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_interrupted_run_resumes_with_the_same_loss_curve(tmp_path, monkeypatch):
    res = invoke(*TINY, "--output-dir", tmp_path, "--run-id", "straight")
    assert res.exit_code == 0, res.output
    straight = json.loads((tmp_path / "straight" / "train.json").read_text())

    real_loss, calls = loop.branch_loss, {"n": 0}

    def interrupted(model, batch, reduction="mean"):
        calls["n"] += reduction == "mean"  # training calls (held-out evaluation sums)
        if calls["n"] == 5:  # Ctrl-C in the middle of step 5 (one micro-batch per step)
            raise KeyboardInterrupt
        return real_loss(model, batch, reduction)

    monkeypatch.setattr(loop, "branch_loss", interrupted)
    res = invoke(*TINY, "--output-dir", tmp_path, "--run-id", "cut")
    assert res.exit_code == 130, res.output
    cut = json.loads((tmp_path / "cut" / "train.json").read_text())
    assert cut["status"] == "running"
    assert [s for s, _ in cut["loss_curve"]] == [1, 2, 3]  # the state saved at step 3

    monkeypatch.setattr(loop, "branch_loss", real_loss)
    res = invoke("train", "pretrain", "--resume", "cut", "--output-dir", tmp_path, "--quiet")
    assert res.exit_code == 0, res.output
    resumed = json.loads((tmp_path / "cut" / "train.json").read_text())
    assert resumed["status"] == "complete"
    assert [s for s, _ in resumed["loss_curve"]] == list(range(1, 9))
    assert resumed["loss_curve"][:3] == cut["loss_curve"]
    for (_, a), (_, b) in zip(resumed["loss_curve"], straight["loss_curve"], strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    assert resumed["heldout_loss"]["2"] == pytest.approx(straight["heldout_loss"]["2"], rel=1e-5)



def test_checkpoints_every_save_are_kept_once_through_an_interruption(tmp_path, monkeypatch):
    """--save-every also saves an evaluable checkpoint with its held-out loss per example. A
    run cut after the state of step 3 was saved but before its checkpoint was written
    writes that checkpoint on resuming, and no step is saved or recorded twice."""
    import pmbench.train.job as job

    res = invoke(*TINY, "--output-dir", tmp_path, "--run-id", "straight")
    assert res.exit_code == 0, res.output
    straight = json.loads((tmp_path / "straight" / "train.json").read_text())
    assert [c["step"] for c in straight["checkpoints"]] == [3, 6, 8]
    assert [Path(c["path"]).name for c in straight["checkpoints"]] == [
        "step-000003", "step-000006", "checkpoint"]
    for c in straight["checkpoints"]:
        assert (Path(c["path"]) / "config.json").is_file()
        assert len(c["heldout_examples"]) > 1
        total, count = map(sum, zip(*c["heldout_examples"], strict=True))
        assert c["heldout_loss"] == pytest.approx(total / count)
    final = straight["checkpoints"][-1]
    assert final["heldout_loss"] == pytest.approx(straight["heldout_loss"]["2"])
    assert final["heldout_examples"] == straight["heldout_examples"]["2"]

    real = job._intermediate_checkpoint
    monkeypatch.setattr(job, "_intermediate_checkpoint",
                        lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    res = invoke(*TINY, "--output-dir", tmp_path, "--run-id", "cut")
    assert res.exit_code == 130, res.output
    assert not (tmp_path / "cut" / "checkpoints").exists()  # state of step 3 saved, no more

    written = []
    monkeypatch.setattr(job, "_intermediate_checkpoint",
                        lambda model, tok, settings, run_dir, state, *rest: (
                            written.append(state.step),
                            real(model, tok, settings, run_dir, state, *rest))[-1])
    res = invoke("train", "pretrain", "--resume", "cut", "--output-dir", tmp_path, "--quiet")
    assert res.exit_code == 0, res.output
    assert written == [3, 6]  # step 3's on resuming, then step 6's
    resumed = json.loads((tmp_path / "cut" / "train.json").read_text())
    assert [c["step"] for c in resumed["checkpoints"]] == [3, 6, 8]
    for a, b in zip(resumed["checkpoints"], straight["checkpoints"], strict=True):
        assert a["heldout_loss"] == pytest.approx(b["heldout_loss"], rel=1e-5)
        assert a["tokens"] == b["tokens"]


def test_an_intermediate_checkpoint_is_the_model_of_its_step(tmp_path, data_dir):
    """Reloaded from checkpoints/step-000003, the model scores the held-out examples as the
    run recorded at step 3 (not as the final model does)."""
    from pmbench.engine.models import load_model
    from pmbench.rope2d.patch import patch_model
    from pmbench.train.data import pack_example
    from pmbench.train.loop import evaluate_loss
    from pmbench.train.sources import PretrainSource, builtin_corpus

    res = invoke(*TINY, "--output-dir", tmp_path, "--run-id", "run")
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "run" / "train.json").read_text())
    step3 = rec["checkpoints"][0]
    loaded = load_model(step3["path"], device="cpu", dtype="float32")
    patch_model(loaded.model)
    source = PretrainSource(builtin_corpus(data_dir, 8), loaded.tokenizer, 16, 24)
    packed = [pack_example(ex, rec["rope2d"]["mask"]) for ex in source.heldout(2)]
    loss = evaluate_loss(loaded.model, packed, torch.device("cpu"),
                         loaded.tokenizer.pad_token_id, 2)
    assert loss == pytest.approx(step3["heldout_loss"], rel=1e-4)
    assert abs(loss - rec["heldout_loss"]["2"]) > 1e-3
