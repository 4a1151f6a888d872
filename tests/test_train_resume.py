"""Interrupt a training run and resume it: the loss curve continues from the saved step
and ends where an uninterrupted run with the same settings ends."""

from __future__ import annotations

import json

import pytest
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

