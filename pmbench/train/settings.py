"""What `pmbench train` is asked to do: the settings of one training run and their defaults.

Light on purpose (no torch): the command line and grids read the defaults from here, and
pmbench.train.job runs the settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pmbench.errors import BadInput, require_positive
from pmbench.rope2d.settings import DEFAULTS as ROPE2D_DEFAULTS
from pmbench.rope2d.settings import Rope2DSettings
from pmbench.train.sources import DEFAULT_HELDOUT_ARTICLES, FINETUNE_SOURCES, HELDOUT_BRANCHES

KINDS = ("pretrain", "finetune")
# Defaults that differ by kind, the one place the CLI and grids take them from: pretraining
# a small model from scratch needs more steps, longer packed examples and weight decay;
# a fine-tune takes smaller batches of a larger model and keeps its weights' scale.
KIND_DEFAULTS: dict[str, dict[str, float]] = {
    "pretrain": {"steps": 300, "max_len": 4096, "batch_size": 8, "weight_decay": 0.1},
    "finetune": {"steps": 100, "max_len": 2048, "batch_size": 4, "weight_decay": 0.0},
}
TRAIN_RATIO = 0.5  # training exists to teach a model 2D RoPE: ratio > 0 by default


@dataclass
class TrainSettings:
    """Everything `pmbench train` was asked to do (recorded in train.json `settings`)."""

    kind: str
    size: str = "cpu-tiny"  # pretrain
    model: str | None = None  # finetune (None: the default model)
    steps: int | None = None  # None: the kind's default (KIND_DEFAULTS)
    branches: int = 4
    ratio: float = TRAIN_RATIO
    mode: str = ROPE2D_DEFAULTS["mode"]
    branch_freqs: str = ROPE2D_DEFAULTS["branch_freqs"]
    mask: str = ROPE2D_DEFAULTS["mask"]
    lr: float | None = None  # None: 1e-3 pretrain, 2e-4 LoRA, 5e-5 full fine-tuning
    seed: int = 0
    output_dir: str = "results"
    batch_size: int | None = None  # None: the kind's default (KIND_DEFAULTS)
    grad_accum: int = 1
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    warmup_steps: int | None = None  # None: 10% of the steps, at most 100
    weight_decay: float | None = None  # None: the kind's default (KIND_DEFAULTS)
    max_grad_norm: float = 1.0
    max_len: int | None = None  # None: the kind's default (KIND_DEFAULTS)
    context_len: int = 64  # pretrain: context chunk tokens
    segment_len: int = 64  # pretrain: tokens per branch segment
    vocab_size: int = 6400
    tokenizer_chars: int | None = None  # pretrain: BPE training text cap (None: all)
    corpus: str | None = None  # pretrain: file / hf:NAME (None: the benchmark data)
    sources: list[str] = field(default_factory=lambda: ["squad", "gsm8k", "mmlu"])
    heldout_articles: int = DEFAULT_HELDOUT_ARTICLES
    heldout_branches: list[int] = field(default_factory=lambda: list(HELDOUT_BRANCHES))
    data_dir: str | None = None
    eval_every: int = 0
    save_every: int = 100
    device: str | None = None  # None: what accelerate picks (CUDA when present)
    mixed_precision: str | None = None  # None: bf16 on CUDA when supported, else no
    gradient_checkpointing: bool = False
    threads: int | None = None
    run_id: str | None = None
    resume: str | None = None

    def __post_init__(self) -> None:
        for name, value in KIND_DEFAULTS.get(self.kind, {}).items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise BadInput(f"unknown training kind {self.kind!r}")
        require_positive(**{name: getattr(self, name) for name in (
            "steps", "branches", "batch_size", "grad_accum", "max_len", "context_len",
            "segment_len", "lora_r")})
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
            return 1e-3
        return 2e-4 if self.lora else 5e-5
