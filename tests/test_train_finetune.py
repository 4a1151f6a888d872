"""`pmbench train finetune` with LoRA on a tiny random model: the checkpoint saves,
reloads (merged, or base + adapter) and gives the logits the trained model gave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import make_tiny_model
from pmbench.cli import app
from pmbench.engine.models import load_model
from pmbench.rope2d.patch import patch_model
from pmbench.rope2d.settings import Rope2DSettings
from pmbench.train.data import Branch, Example, collate, pack_example
from pmbench.train.loop import evaluate_loss
from pmbench.train.sources import SuiteQASource


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tiny-base")
    make_tiny_model("llama", len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def finetuned(base_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune")
    res = CliRunner().invoke(app, [
        "train", "finetune", "--model", str(base_dir), "--sources", "squad", "--lora",
        "--steps", "4", "--branches", "2", "--batch-size", "2", "--heldout-branches", "2",
        "--rope-2d-ratio", "0.25", "--mask", "cross", "--lr", "1e-2", "--quiet", "--threads", "1",
        "--save-every", "2", "--output-dir", str(out), "--run-id", "lora"])
    assert res.exit_code == 0, res.output
    return json.loads((out / "lora" / "train.json").read_text())


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                     attention_mask=batch["attention_mask"]).logits


def test_lora_record(finetuned):
    rec = finetuned
    assert rec["status"] == "complete" and rec["kind"] == "finetune"
    assert 0 < rec["trainable_params"] < rec["params"] / 10
    assert rec["rope2d"] == {"ratio": 0.25, "mode": "split", "branch_freqs": "interleaved",
                             "mask": "cross"}
    split = rec["data_split"]["squad"]
    assert split["heldout_articles"][0] == "Super_Bowl_50"
    assert split["train_questions"] > 5000
    assert [s for s, _ in rec["loss_curve"]] == [1, 2, 3, 4]
    # step 2's checkpoint: merged weights and the adapter, saved from a copy (the final
    # checkpoint's logits test below shows training went on undisturbed)
    step2, final = rec["checkpoints"]
    assert (step2["step"], final["step"]) == (2, 4)
    assert (Path(step2["path"]) / "adapter").is_dir()
    assert (Path(step2["path"]) / "model.safetensors").is_file()
    assert step2["heldout_loss"] != final["heldout_loss"]


def test_lora_checkpoint_reloads_with_the_same_logits(finetuned, base_dir, tokenizer):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ckpt = Path(finetuned["checkpoint"])
    settings = Rope2DSettings(0.25, "split", "interleaved", "cross")
    ex_tokens = [tokenizer.encode(t) for t in
                 ("Context: a b c.\n", "Question: a?\nAnswer:", "Question: c?\nAnswer:")]
    ex = Example(ex_tokens[0], [Branch(ex_tokens[1], [264, 28]), Branch(ex_tokens[2], [330])])
    batch = collate([pack_example(ex, "cross")], tokenizer.pad_token_id)

    merged = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    patch_model(merged)  # the rope2d section of the checkpoint's config.json
    assert merged.model.rotary_emb.settings == settings
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    patch_model(base, settings)
    before = _logits(base, batch)
    adapted = PeftModel.from_pretrained(base, ckpt / "adapter").eval()
    after_adapter = _logits(adapted, batch)
    after_merged = _logits(merged, batch)
    torch.testing.assert_close(after_merged, after_adapter, rtol=1e-4, atol=1e-4)
    assert (after_merged - before).abs().max() > 1e-2  # training changed the model


def test_lora_checkpoint_reproduces_recorded_heldout_loss(finetuned, data_dir):
    loaded = load_model(finetuned["checkpoint"], device="cpu", dtype="float32")
    patch_model(loaded.model)
    source = SuiteQASource(["squad"], loaded.tokenizer, data_dir, 2, 8, 2048)
    packed = [pack_example(ex, "cross") for ex in source.heldout(2)]
    loss = evaluate_loss(loaded.model, packed, torch.device("cpu"),
                         loaded.tokenizer.pad_token_id, 2)
    assert loss == pytest.approx(finetuned["heldout_loss"]["2"], rel=1e-4)


def test_cross_mask_training_has_branch_local_targets_and_no_leak(finetuned, data_dir):
    """The checkpoint trained under `cross` (other branches' earlier tokens visible): every
    trained position's target is the next token of its own branch, the loss is exactly
    the cross-entropy on those targets, and no target reaches its own query, neither its
    token nor any token fed at the same or a later step (a leak would make cross-mask
    training look perfect). Checked through the model itself: the gradient of each
    position's loss is zero on every input it must not see."""
    from pmbench.train.data import IGNORE, branch_loss

    loaded = load_model(finetuned["checkpoint"], device="cpu", dtype="float32")
    model = loaded.model
    patch_model(model)
    assert model.model.rotary_emb.settings.mask == "cross"
    source = SuiteQASource(["squad"], loaded.tokenizer, data_dir, 3, 8, 2048)
    packed = pack_example(source.heldout(3)[0], "cross")
    batch = collate([packed], loaded.tokenizer.pad_token_id)
    ids, targets = batch["input_ids"][0], batch["targets"][0]
    t, b = batch["position_ids"][:, 0]
    step = packed.step
    trained = (targets != IGNORE).nonzero().squeeze(-1).tolist()
    assert len(trained) > 5 and all(b[i] > 0 for i in trained)

    embeds = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds, position_ids=batch["position_ids"],
                   attention_mask=batch["attention_mask"]).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    manual = 0.0
    for i in trained:
        own_next = ((b == b[i]) & (t == t[i] + 1)).nonzero().squeeze(-1)
        assert own_next.numel() == 1 and targets[i] == ids[own_next]  # branch-local target
        k = int(own_next)
        assert not batch["attention_mask"][0, 0, i, k]  # the target is masked from its query
        (grad,) = torch.autograd.grad(-logp[i, targets[i]], embeds, retain_graph=True)
        unseen = ((b == b[i]) & (t > t[i])) | ((b != b[i]) & (b > 0) & (step >= step[i]))
        assert unseen[k]
        assert grad[0, unseen].abs().max() == 0, f"position {i} sees a token it must not"
        assert grad[0, (b == 0)].abs().max() > 0  # while the context does reach it
        manual = manual - logp[i, targets[i]]
    with torch.no_grad():
        loss = branch_loss(model, batch, reduction="sum")
    torch.testing.assert_close(loss, manual.detach(), rtol=1e-5, atol=1e-4)
