"""What `pmbench train` is asked to do: the settings of one training run and their defaults.

Light on purpose (no torch): the command line and grids read the defaults from here, and
pmbench.train.job runs the settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pmbench.errors import BadInput, require_positive
from pmbench.options import Option, command_line_value, declared, fits, option, split_list
from pmbench.options import type_name as hint_name
from pmbench.rope2d.settings import DEFAULTS as ROPE2D_DEFAULTS
from pmbench.rope2d.settings import Rope2DSettings, setting_option
from pmbench.train.sources import (
    DEFAULT_HELDOUT_ARTICLES,
    FINETUNE_SOURCES,
    HELDOUT_BRANCHES,
    HELDOUT_SEGMENTS,
)

KINDS = ("pretrain", "finetune")
# Defaults that differ by kind, the one place the CLI and grids take them from: pretraining
# a small model from scratch needs more steps, longer packed examples and weight decay;
# a fine-tune takes smaller batches of a larger model and keeps its weights' scale.
KIND_DEFAULTS: dict[str, dict[str, float]] = {
    "pretrain": {"steps": 300, "max_len": 4096, "batch_size": 8, "weight_decay": 0.1},
    "finetune": {"steps": 100, "max_len": 2048, "batch_size": 4, "weight_decay": 0.0},
}
TRAIN_RATIO = 0.5  # training exists to teach a model 2D RoPE: ratio > 0 by default
# peak learning rates: from scratch, LoRA adapters, all weights of a trained model
LEARNING_RATES = {"pretrain": 1e-3, "lora": 2e-4, "full": 5e-5}
PRETRAIN, FINETUNE = (("pretrain",), ("finetune",))  # options of one command only


def _by_kind(name: str) -> str:
    """'(default: 300 pretrain, 100 finetune)' for a setting of KIND_DEFAULTS."""
    return "(default: " + ", ".join(f"{KIND_DEFAULTS[k][name]:g} {k}" for k in KINDS) + ")"


@dataclass
class TrainSettings:
    """Everything `pmbench train` was asked to do (recorded in train.json `settings`); each
    field but `kind` (the command) is the option its declaration names."""

    kind: str
    size: str = option("cpu-tiny", only=PRETRAIN,
                       help="cpu-tiny | minimind2-small | minimind2.")
    model: str | None = option(None, only=FINETUNE, help=(  # None: the default model
        "HF folder, .gguf file or hub id (default: SmolLM2-135M-Instruct)."))
    steps: int | None = option(None, help=f"Optimizer steps {_by_kind('steps')}.")
    branches: int = option(4, flag="branch", aliases=("branches",),
                           help="#branch: questions / segments per example.")
    ratio: float = setting_option("ratio", TRAIN_RATIO)
    mode: str = setting_option("mode", ROPE2D_DEFAULTS["mode"])
    branch_freqs: str = setting_option("branch_freqs", ROPE2D_DEFAULTS["branch_freqs"])
    mask: str = setting_option("mask", ROPE2D_DEFAULTS["mask"])
    lr: float | None = option(None, help=(
        "Peak learning rate (default: {pretrain:g} pretrain, {lora:g} LoRA, {full:g} full)."
        .format(**LEARNING_RATES)))
    seed: int = option(0, help="Random seed: initialization, data order and sampling.")
    output_dir: str = option("results", help="Where train records and checkpoints go.")
    batch_size: int | None = option(None, help=(
        f"Examples per micro-batch (per process; {_by_kind('batch_size')[1:-1]})."))
    grad_accum: int = option(1, help="Micro-batches per optimizer step.")
    lora: bool = option(True, off="full", only=FINETUNE, help="LoRA adapters or all weights.")
    lora_r: int = option(16, only=FINETUNE, help="LoRA rank.")
    lora_alpha: int = option(32, only=FINETUNE, help="LoRA alpha.")
    warmup_steps: int | None = option(None, help="Warm-up steps (default: 10%, at most 100).")
    weight_decay: float | None = option(
        None, help=f"AdamW weight decay {_by_kind('weight_decay')}.")
    max_grad_norm: float = option(1.0, help="Gradients are clipped to this norm.")
    max_len: int | None = option(None, help=(
        f"Longest packed example; branches beyond are dropped {_by_kind('max_len')}."))
    context_len: int = option(64, only=PRETRAIN, help="Tokens of the shared context chunk.")
    segment_len: int = option(64, only=PRETRAIN, help="Tokens per branch segment.")
    heldout_segments: int = option(HELDOUT_SEGMENTS, only=PRETRAIN, help=(
        "Held-out segments (grouped #branch at a time: the paired-bootstrap units)."))
    vocab_size: int = option(6400, only=PRETRAIN, help="BPE vocabulary size.")
    tokenizer_chars: int | None = option(  # None: all the text
        None, only=PRETRAIN, help="Train the BPE on at most this many characters.")
    corpus: str | None = option(None, only=PRETRAIN, help=(
        ".txt / .jsonl file or hf:NAME[:CONFIG] (default: the benchmark data's text)."))
    sources: list[str] = option(only=FINETUNE, default_factory=lambda: list(FINETUNE_SOURCES),
                                help=f"Comma-separated QA sources: {', '.join(FINETUNE_SOURCES)}.")
    heldout_articles: int = option(
        DEFAULT_HELDOUT_ARTICLES,
        help="First SQuAD dev articles kept out of training (evaluated on).")
    heldout_branches: list[int] = option(
        default_factory=lambda: list(HELDOUT_BRANCHES),
        help="Comma-separated #branch values to report held-out loss at.")
    data_dir: str | None = option(None, help="Benchmark data folder.")
    eval_every: int = option(0, help="Held-out loss every K steps (0: only at the end).")
    save_every: int = option(100, help=(
        "Every K steps save the resumable state and an evaluable checkpoint "
        "(checkpoints/step-K, with its held-out loss per example)."))
    device: str | None = option(  # None: what accelerate picks (CUDA when present)
        None, help="cpu, or leave unset for accelerate's choice.")
    mixed_precision: str | None = option(  # None: bf16 on CUDA when supported, else no
        None, help="no | bf16 | fp16 (default: bf16 on CUDA).")
    gradient_checkpointing: bool = option(False, help="Trade compute for activation memory.")
    threads: int | None = option(None, help="torch CPU threads.")
    run_id: str | None = option(None, help="Use this run id (sweeps).")
    resume: str | None = option(
        None, help="Continue the interrupted run RUN_ID from its last saved state.")

    def __post_init__(self) -> None:
        for name, value in KIND_DEFAULTS.get(self.kind, {}).items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise BadInput(f"unknown training kind {self.kind!r}")
        require_positive(**{name: getattr(self, name) for name in (
            "steps", "branches", "batch_size", "grad_accum", "max_len", "context_len",
            "segment_len", "heldout_segments", "lora_r")})
        if self.segment_len < 3:
            raise BadInput("--segment-len must be >= 3 (BOS, a token, room for EOS)")
        if self.lr is not None and self.lr <= 0:
            raise BadInput("--lr must be > 0")
        if self.eval_every < 0 or self.save_every < 0:
            raise BadInput("--eval-every and --save-every must be >= 0")
        if any(n < 1 for n in self.heldout_branches):
            raise BadInput("held-out #branch values must be >= 1")
        from pmbench.train.model import SIZES  # torch: only when checking

        if self.kind == "pretrain" and self.size not in SIZES:
            raise BadInput(f"unknown model size {self.size!r}; valid: {', '.join(SIZES)}")
        unknown = [x for x in self.sources if x not in FINETUNE_SOURCES]
        if self.kind == "finetune" and (unknown or not self.sources):
            raise BadInput(f"unknown fine-tuning source(s) {unknown}; valid: "
                           f"{', '.join(FINETUNE_SOURCES)}")
        self.rope2d()  # validates ratio, mode, branch_freqs, mask

    def rope2d(self) -> Rope2DSettings:
        return Rope2DSettings(self.ratio, self.mode, self.branch_freqs, self.mask)

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        if self.kind == "pretrain":
            return LEARNING_RATES["pretrain"]
        return LEARNING_RATES["lora" if self.lora else "full"]


def train_options(kind: str) -> list[Option]:
    """The options of `pmbench train <kind>`, in the settings' order."""
    return [opt for opt in declared(TrainSettings) if not opt.only or kind in opt.only]


def from_options(kind: str, options: Mapping[str, Any]) -> TrainSettings:
    """The settings that `pmbench train <kind>` options (python names) describe, as a
    command line or a grid gives them: lists as comma-separated text or as lists (of
    integers as numbers or text), numbers for text options. A wrong type is bad input."""
    by_flag = {opt.flag: opt for opt in train_options(kind)}
    given: dict[str, Any] = {}
    for flag, value in options.items():
        opt = by_flag[flag]
        value = command_line_value(split_list(value, opt.hint, flag), opt.hint)
        if not fits(value, opt.hint):
            raise BadInput(f"{opt.cli}: {value!r} is not {hint_name(opt.hint)}")
        given[opt.name] = value
    return TrainSettings(kind=kind, **given)
