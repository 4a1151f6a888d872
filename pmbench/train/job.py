"""One training run, pretraining or fine-tuning: settings in, checkpoint and record out.

The two kinds differ only in where the model, tokenizer and examples come from:

- pretrain: a BPE tokenizer trained on the corpus (saved under `<run>/tokenizer/` at
  once, so a resumed run uses the same one) and a fresh MiniMind-size `LlamaForCausalLM`;
  examples are a context chunk plus N independent segments, loss on every token;
- finetune: an existing HF model (`--model`, default SmolLM2-135M-Instruct), fully or
  with LoRA; examples are the suites' shared-context questions, loss on the answers.

Both then install the 2D positions (`pmbench.rope2d.patch_model`), run the shared loop,
measure the held-out loss at #branch 1, 2, 4, 8 (and the trained #branch), and save
the checkpoint with its `rope2d` section and the record `train.json`. The held-out loss
packs its examples exactly as training does (the (t, b) layout and mask of the run);
a context that several examples share is computed once, as inference prefills it once.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from pmbench.errors import BadInput
from pmbench.records import train as rec
from pmbench.records.store import now_iso
from pmbench.rope2d.patch import patch_model
from pmbench.rope2d.settings import KEY as ROPE2D_KEY
from pmbench.rope2d.settings import Rope2DSettings
from pmbench.train.data import IGNORE, collate, pack_example
from pmbench.train.loop import (
    LoopConfig,
    TrainState,
    evaluate_loss,
    example_losses,
    mean_loss,
    train_loop,
)
from pmbench.train.settings import TrainSettings
from pmbench.train.sources import (
    ExampleSource,
    PretrainSource,
    SuiteQASource,
    builtin_corpus,
    file_corpus,
    step_rng,
    tokenizer_texts,
)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _accelerator(s: TrainSettings):
    from accelerate import Accelerator

    cpu = s.device == "cpu" or not torch.cuda.is_available()
    mp = s.mixed_precision
    if mp is None:
        mp = "bf16" if not cpu and torch.cuda.is_bf16_supported() else "no"
    return Accelerator(cpu=cpu, mixed_precision=mp)


def _shared_run_id(accelerator, s: TrainSettings, name: str) -> str:
    """One run id for every process (each would draw its own random suffix)."""
    from accelerate.utils import broadcast_object_list

    ids = [s.resume or s.run_id or rec.new_train_id(s.kind, name, s.ratio, s.branches)]
    if accelerator.num_processes > 1:
        broadcast_object_list(ids, from_process=0)
    return ids[0]


def _pretrain_parts(s: TrainSettings, run_dir: Path, accelerator):
    from transformers import AutoTokenizer

    from pmbench.engine.models import NO_REMOTE_CODE
    from pmbench.train.model import build_model
    from pmbench.train.tokenizer import train_bpe

    corpus = file_corpus(s.corpus) if s.corpus else builtin_corpus(s.data_dir,
                                                                  s.heldout_articles)
    tok_dir = run_dir / rec.TOKENIZER_DIR
    if accelerator.is_main_process and not (tok_dir / "tokenizer.json").exists():
        train_bpe(tokenizer_texts(corpus, s.tokenizer_chars), s.vocab_size).save_pretrained(
            tok_dir)
    accelerator.wait_for_everyone()
    tokenizer = AutoTokenizer.from_pretrained(tok_dir, **NO_REMOTE_CODE)
    model = build_model(s.size, tokenizer, s.seed)
    source = PretrainSource(corpus, tokenizer, s.context_len, s.segment_len,
                            s.heldout_segments)
    split = {**corpus.split, "tokenizer": f"BPE {len(tokenizer)} trained on the train side",
             "heldout_segments": source.heldout_segments, "segment_len": s.segment_len,
             "context_len": s.context_len}
    return model, tokenizer, source, split, s.size


def _finetune_parts(s: TrainSettings):
    from pmbench.engine.models import load_model

    loaded = load_model(s.model, device="cpu", dtype="float32")
    model, tokenizer = loaded.model, loaded.tokenizer
    model.requires_grad_(True)
    source = SuiteQASource(s.sources, tokenizer, s.data_dir, s.branches, s.heldout_articles,
                           s.max_len)
    return model, tokenizer, source, source.split, loaded.name


def _trainable(model: Any, s: TrainSettings, settings: Rope2DSettings) -> Any:
    """Install the 2D positions, then LoRA (the patch needs the plain HF model) and
    gradient checkpointing as asked."""
    patch_model(model, settings)
    if s.kind == "finetune" and s.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=0.0,
            target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    if s.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if hasattr(model, "enable_input_require_grads"):  # LoRA: inputs of frozen layers
            model.enable_input_require_grads()
    return model


def run_training(s: TrainSettings, show_progress: bool = True) -> dict[str, Any]:
    """Train as `s` says (or resume `s.resume`); return the final train.json record.

    `s.threads` applies to this run only: the caller's torch thread count is restored.
    """
    before = torch.get_num_threads()
    try:
        return _run_training(s, show_progress)
    finally:
        torch.set_num_threads(before)


def _run_training(s: TrainSettings, show_progress: bool) -> dict[str, Any]:
    s, previous = _resumed(s)
    if s.threads:
        torch.set_num_threads(s.threads)
    logging.getLogger("accelerate").setLevel(logging.ERROR)  # tied-weight save notices
    accelerator = _accelerator(s)
    torch.manual_seed(s.seed)
    run_id, run_dir = _run_folder(accelerator, s, show_progress)
    source: ExampleSource
    if s.kind == "pretrain":
        model, tokenizer, source, split, model_name = _pretrain_parts(s, run_dir, accelerator)
    else:
        model, tokenizer, source, split, model_name = _finetune_parts(s)
    settings = s.rope2d()
    model = _trainable(model, s, settings)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rank = accelerator.process_index

    def batch_fn(step: int, micro: int) -> dict[str, torch.Tensor]:
        rng = step_rng(s.seed, step, micro, rank)
        examples = [source.example(rng, s.branches) for _ in range(s.batch_size)]
        return collate([pack_example(ex, s.mask) for ex in examples], pad)

    eval_sizes = sorted({*s.heldout_branches, s.branches})
    heldout = {n: [pack_example(ex, s.mask) for ex in source.heldout(n)] for n in eval_sizes}

    def heldout_fn(m) -> float:
        return evaluate_loss(m, heldout[s.branches], accelerator.device, pad, s.batch_size)

    record = _started_record(previous, s, accelerator, model, {
        "run_id": run_id, "model": model_name, ROPE2D_KEY: settings.as_dict(),
        "data_split": split})

    def examples_fn(m) -> list[list[float]]:
        return example_losses(m, heldout[s.branches], accelerator.device, pad, s.batch_size)

    def on_save(state: TrainState, m) -> None:
        if state.step < s.steps:  # the last step's checkpoint is `checkpoint/`, at the end
            _intermediate_checkpoint(accelerator.unwrap_model(m), tokenizer, settings, run_dir,
                                     state, record, examples_fn)
        record.update(_progress_fields(state))
        rec.write_train_record(run_dir, record)

    if accelerator.is_main_process:
        rec.write_train_record(run_dir, record)
    model, state = train_loop(
        accelerator, model, batch_fn, _loop_config(s), run_dir / rec.STATE_DIR,
        resume=bool(s.resume), heldout_fn=heldout_fn, on_save=on_save,
        show_progress=show_progress)
    record.update(_progress_fields(state))
    t0 = time.perf_counter()
    per_example = {str(n): example_losses(model, packed, accelerator.device, pad, s.batch_size)
                   for n, packed in heldout.items()}
    _final_heldout(record, per_example, heldout, time.perf_counter() - t0)
    _add_checkpoint(record, {"step": state.step, "tokens": state.tokens,
                             "path": str(run_dir / rec.CHECKPOINT_DIR),
                             "heldout_loss": mean_loss(per_example[str(s.branches)]),
                             "heldout_examples": per_example[str(s.branches)]})
    _finish(accelerator, model, tokenizer, settings, run_dir, record)
    return record


def _final_heldout(record: dict[str, Any], per_example: dict[str, list[list[float]]],
                   heldout: dict[int, list], eval_s: float) -> None:
    """The trained model's held-out loss at each #branch into the record: the mean, each
    example's [summed loss, tokens] (paired bootstraps resample them) and the tokens."""
    record.update({
        "heldout_loss": {n: mean_loss(v) for n, v in per_example.items()},
        "heldout_examples": per_example,
        "heldout_tokens": {str(n): sum(int((p.targets != IGNORE).sum()) for p in packed)
                           for n, packed in heldout.items()},
        "eval_s": eval_s})


def _intermediate_checkpoint(model: Any, tokenizer: Any, settings: Rope2DSettings,
                             run_dir: Path, state: TrainState, record: dict[str, Any],
                             examples_fn) -> None:
    """Save the model at this step as an evaluable checkpoint (`checkpoints/step-N/`, a
    plain HF folder like the final one) with its held-out loss per example, once: a run
    resumed from this step finds it saved and recorded and leaves it."""
    path = rec.checkpoint_path(run_dir, state.step)
    if not path.exists():  # saving merges LoRA and unpatches: on a copy, training goes on
        rec.save_checkpoint(copy.deepcopy(model), tokenizer, settings, path)
    if not any(c["step"] == state.step for c in record.get("checkpoints", [])):
        losses = examples_fn(model)
        _add_checkpoint(record, {"step": state.step, "tokens": state.tokens, "path": str(path),
                                 "heldout_loss": mean_loss(losses),
                                 "heldout_examples": losses})


def _add_checkpoint(record: dict[str, Any], entry: dict[str, Any]) -> None:
    """`entry` into train.json's `checkpoints` (one per step, in step order)."""
    kept = [c for c in record.get("checkpoints", []) if c["step"] != entry["step"]]
    record["checkpoints"] = sorted([*kept, entry], key=lambda c: c["step"])


def _resumed(s: TrainSettings) -> tuple[TrainSettings, dict[str, Any] | None]:
    """The settings to train with (a resumed run's own, from its record) and the record so
    far (None for a new run); checked."""
    previous: dict[str, Any] | None = None
    if s.resume:
        previous = rec.read_train_record(s.output_dir, s.resume)
        if previous.get("status") == "complete":
            raise BadInput(f"training run {s.resume} is already complete")
        kept = {f.name for f in fields(TrainSettings)}
        s = TrainSettings(**{**{k: v for k, v in previous["settings"].items() if k in kept},
                             "resume": s.resume, "output_dir": s.output_dir})
    s.validate()
    return s, previous


def _run_folder(accelerator, s: TrainSettings, show_progress: bool) -> tuple[str, Path]:
    """The run's id (the same on every process) and its folder, made; a new run never
    takes the folder of an existing one."""
    display_name = s.size if s.kind == "pretrain" else (s.model or "default")
    run_id = _shared_run_id(accelerator, s, display_name)
    run_dir = Path(s.output_dir) / run_id
    if not s.resume and (run_dir / rec.TRAIN_FILE).exists():
        raise BadInput(f"training run {run_id} already exists in {s.output_dir} "
                       f"(use --resume {run_id})")
    run_dir.mkdir(parents=True, exist_ok=True)
    if show_progress and accelerator.is_main_process:
        from rich.console import Console

        Console(stderr=True).print(f"training run {run_id} in {run_dir} "
                                   f"({'resumed' if s.resume else 'new'})", highlight=False)
    return run_id, run_dir


def _started_record(previous: dict[str, Any] | None, s: TrainSettings, accelerator,
                    model: Any, parts: dict[str, Any]) -> dict[str, Any]:
    """train.json as the run starts (status running): a resumed run's record updated,
    with the run's `parts` (id, model, 2D RoPE settings, data split)."""
    from pmbench.measure.envinfo import env_fingerprint

    record: dict[str, Any] = previous or {}
    record.update({
        "run_id": parts["run_id"],
        "created": record.get("created") or now_iso(),
        "status": "running",
        "kind": s.kind,
        "model": parts["model"],
        ROPE2D_KEY: parts[ROPE2D_KEY],
        "branches": s.branches,
        "steps": s.steps,
        "settings": asdict(s),
        "data_split": parts["data_split"],
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "lr": s.learning_rate,
        "device": str(accelerator.device),
        "mixed_precision": accelerator.mixed_precision,
        "processes": accelerator.num_processes,
    })
    dtype = "float32" if accelerator.mixed_precision == "no" else \
        f"float32 ({accelerator.mixed_precision} autocast)"
    record["env"] = env_fingerprint(str(accelerator.device), dtype, "sdpa")
    return record


def _loop_config(s: TrainSettings) -> LoopConfig:
    return LoopConfig(
        steps=s.steps, lr=s.learning_rate, grad_accum=s.grad_accum,
        warmup_steps=s.warmup_steps if s.warmup_steps is not None else min(100, s.steps // 10),
        weight_decay=s.weight_decay, max_grad_norm=s.max_grad_norm,
        eval_every=s.eval_every, save_every=s.save_every,
    )


def _finish(accelerator, model: Any, tokenizer: Any, settings: Rope2DSettings,
            run_dir: Path, record: dict[str, Any]) -> None:
    """Save the checkpoint and the complete record (the main process; every process
    waits for it)."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        checkpoint = rec.save_checkpoint(accelerator.unwrap_model(model), tokenizer, settings,
                                         run_dir / rec.CHECKPOINT_DIR)
        record.update({"checkpoint": str(checkpoint), "status": "complete",
                       "finished": now_iso()})
        rec.write_train_record(run_dir, record)
    accelerator.wait_for_everyone()


def _progress_fields(state: TrainState) -> dict[str, Any]:
    start = state.heldout_curve[0][1] if state.heldout_curve and not state.heldout_curve[0][0] \
        else None
    return {
        "heldout_loss_start": start,
        "completed_steps": state.step,
        "loss_curve": state.loss_curve,
        "heldout_curve": state.heldout_curve,
        "train_loss": state.final_loss,
        "tokens": state.tokens,
        "wall_s": state.wall_s,
        "tokens_per_s": state.tokens_per_s,
    }
