"""`pmbench train pretrain | finetune`: train with 2D RoPE, write a checkpoint and train.json.

Both commands share one loop (`pmbench.train.loop`) and one record format; they
differ in where the model and the examples come from (see `pmbench.train.job`).
Several GPUs or machines: `accelerate launch -m pmbench.cli train ...`.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pmbench.commands import options as cli_options
from pmbench.rope2d.settings import DEFAULTS
from pmbench.train.settings import TRAIN_RATIO
from pmbench.train.sources import DEFAULT_HELDOUT_ARTICLES, FINETUNE_SOURCES, HELDOUT_BRANCHES

train_app = typer.Typer(help="Train with 2D RoPE: pretrain a MiniMind-size model or fine-tune "
                        "an HF model.", no_args_is_help=True)

Steps = Annotated[int | None, typer.Option(
    help="Optimizer steps (default: 300 pretrain, 100 finetune).")]
Branches = Annotated[int, typer.Option(help="#branch: questions / segments per example.")]
Ratio = Annotated[float, cli_options.ROPE_2D_RATIO]
# The defaults are TrainSettings' own (pmbench/train/job.py: KIND_DEFAULTS, TRAIN_RATIO and the
# rope2d DEFAULTS): None here means "not given".
Mode = Annotated[str, cli_options.ROPE_2D_MODE]
Freqs = Annotated[str, cli_options.BRANCH_FREQS]
Mask = Annotated[str, cli_options.MASK]
Lr = Annotated[float | None, typer.Option(
    help="Peak learning rate (default: 1e-3 pretrain, 2e-4 LoRA, 5e-5 full).")]
Seed = Annotated[int, typer.Option()]
OutputDir = Annotated[str, typer.Option(help="Where train records and checkpoints go.")]
BatchSize = Annotated[int | None, typer.Option(
    help="Examples per micro-batch (per process; default: 8 pretrain, 4 finetune).")]
GradAccum = Annotated[int, typer.Option(help="Micro-batches per optimizer step.")]
Resume = Annotated[str | None, typer.Option(
    help="Continue the interrupted run RUN_ID from its last saved state.")]
MaxLen = Annotated[int | None, typer.Option(
    help="Longest packed example; branches beyond are dropped "
         "(default: 4096 pretrain, 2048 finetune).")]
DataDir = Annotated[str | None, typer.Option(help="Benchmark data folder.")]
EvalEvery = Annotated[int, typer.Option(help="Held-out loss every K steps (0: only at the end).")]
SaveEvery = Annotated[int, typer.Option(help="Save the resumable state every K steps.")]
Warmup = Annotated[int | None, typer.Option(help="Warm-up steps (default: 10%, at most 100).")]
WeightDecay = Annotated[float | None, typer.Option(
    help="AdamW weight decay (default: 0.1 pretrain, 0 finetune).")]
HeldoutArticles = Annotated[int, typer.Option(
    help="First SQuAD dev articles kept out of training (evaluated on).")]
HeldoutBranches = Annotated[str, typer.Option(
    help="Comma-separated #branch values to report held-out loss at.")]
Device = Annotated[str | None, typer.Option(help="cpu, or leave unset for accelerate's choice.")]
MixedPrecision = Annotated[str | None, typer.Option(
    help="no | bf16 | fp16 (default: bf16 on CUDA).")]
GradCkpt = Annotated[bool, typer.Option("--gradient-checkpointing",
                                        help="Trade compute for activation memory.")]
Threads = Annotated[int | None, typer.Option(help="torch CPU threads.")]
RunId = Annotated[str | None, typer.Option(help="Use this run id (sweeps).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print train.json only.")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bar.")]

_HELDOUT_DEFAULT = ",".join(map(str, HELDOUT_BRANCHES))


def _int_list(text: str, option: str) -> list[int]:
    from pmbench.errors import BadInput

    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BadInput(f"{option} takes comma-separated integers, got {text!r}") from None


def _check(settings) -> None:
    """Options torch or the file system would reject with a traceback, or silently
    ignore, checked before any data or model loads."""
    from pmbench.errors import require_positive
    from pmbench.measure.devices import check_device
    from pmbench.records.store import check_run_id

    require_positive(threads=settings.threads)
    check_device(settings.device)
    if settings.run_id is not None:
        check_run_id(settings.run_id, "--run-id")
    if settings.resume is not None:
        check_run_id(settings.resume, "--resume")


def _execute(settings, json_out: bool, quiet: bool) -> None:
    from pmbench.commands.common import _quiet_libraries
    from pmbench.train.job import run_training

    _check(settings)
    _quiet_libraries()
    record = run_training(settings, show_progress=not (quiet or json_out))
    if record.get("status") != "complete":
        return  # not the main process
    if json_out:
        sys.stdout.write(json.dumps(record, indent=2, default=str) + "\n")
        return
    table = Table(title=f"training run {record['run_id']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("steps", str(record["completed_steps"]))
    table.add_row("train loss (last 10 steps)", f"{record['train_loss']:.4f}")
    for n, loss in record["heldout_loss"].items():
        table.add_row(f"held-out loss, #branch {n}", f"{loss:.4f}")
    table.add_row("tokens/s", f"{record['tokens_per_s']:,.0f}")
    table.add_row("wall_s", f"{record['wall_s']:.1f}")
    Console().print(table)
    Console().print(f"checkpoint: {record['checkpoint']}", highlight=False)
    Console().print(f"record: {settings.output_dir}/{record['run_id']}/train.json",
                    highlight=False)


@train_app.command()
def pretrain(
    size: Annotated[str, typer.Option(help="cpu-tiny | minimind2-small | minimind2.")] = "cpu-tiny",
    steps: Steps = None,
    branches: Branches = 4,
    rope_2d_ratio: Ratio = TRAIN_RATIO,
    rope_2d_mode: Mode = DEFAULTS["mode"],
    branch_freqs: Freqs = DEFAULTS["branch_freqs"],
    mask: Mask = DEFAULTS["mask"],
    lr: Lr = None,
    seed: Seed = 0,
    output_dir: OutputDir = "results",
    batch_size: BatchSize = None,
    grad_accum: GradAccum = 1,
    resume: Resume = None,
    max_len: MaxLen = None,
    context_len: Annotated[int, typer.Option(help="Tokens of the shared context chunk.")] = 64,
    segment_len: Annotated[int, typer.Option(help="Tokens per branch segment.")] = 64,
    corpus: Annotated[str | None, typer.Option(
        help=".txt / .jsonl file or hf:NAME[:CONFIG] (default: the benchmark data's text).")
    ] = None,
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size.")] = 6400,
    tokenizer_chars: Annotated[int | None, typer.Option(
        help="Train the BPE on at most this many characters.")] = None,
    data_dir: DataDir = None,
    heldout_articles: HeldoutArticles = DEFAULT_HELDOUT_ARTICLES,
    heldout_branches: HeldoutBranches = _HELDOUT_DEFAULT,
    eval_every: EvalEvery = 0,
    save_every: SaveEvery = 100,
    warmup_steps: Warmup = None,
    weight_decay: WeightDecay = None,
    device: Device = None,
    mixed_precision: MixedPrecision = None,
    gradient_checkpointing: GradCkpt = False,
    threads: Threads = None,
    run_id: RunId = None,
    json_out: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Pretrain a MiniMind-style model from scratch with 2D RoPE."""
    from pmbench.train.settings import TrainSettings

    settings = TrainSettings(
        kind="pretrain", size=size, steps=steps, branches=branches, ratio=rope_2d_ratio,
        mode=rope_2d_mode, branch_freqs=branch_freqs, mask=mask, lr=lr, seed=seed,
        output_dir=output_dir, batch_size=batch_size, grad_accum=grad_accum, resume=resume,
        max_len=max_len, context_len=context_len, segment_len=segment_len, corpus=corpus,
        vocab_size=vocab_size, tokenizer_chars=tokenizer_chars, data_dir=data_dir,
        heldout_articles=heldout_articles,
        heldout_branches=_int_list(heldout_branches, "--heldout-branches"),
        eval_every=eval_every, save_every=save_every, warmup_steps=warmup_steps,
        weight_decay=weight_decay, device=device, mixed_precision=mixed_precision,
        gradient_checkpointing=gradient_checkpointing, threads=threads, run_id=run_id,
    )
    _execute(settings, json_out, quiet)


@train_app.command()
def finetune(
    model: Annotated[str | None, typer.Option(
        help="HF folder, .gguf file or hub id (default: SmolLM2-135M-Instruct).")] = None,
    steps: Steps = None,
    branches: Branches = 4,
    rope_2d_ratio: Ratio = TRAIN_RATIO,
    rope_2d_mode: Mode = DEFAULTS["mode"],
    branch_freqs: Freqs = DEFAULTS["branch_freqs"],
    mask: Mask = DEFAULTS["mask"],
    lr: Lr = None,
    seed: Seed = 0,
    output_dir: OutputDir = "results",
    batch_size: BatchSize = None,
    grad_accum: GradAccum = 1,
    lora: Annotated[bool, typer.Option("--lora/--full", help="LoRA adapters or all weights.")
                    ] = True,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 32,
    sources: Annotated[str, typer.Option(
        help=f"Comma-separated QA sources: {', '.join(FINETUNE_SOURCES)}.")
    ] = ",".join(FINETUNE_SOURCES),
    resume: Resume = None,
    max_len: MaxLen = None,
    data_dir: DataDir = None,
    heldout_articles: HeldoutArticles = DEFAULT_HELDOUT_ARTICLES,
    heldout_branches: HeldoutBranches = _HELDOUT_DEFAULT,
    eval_every: EvalEvery = 0,
    save_every: SaveEvery = 100,
    warmup_steps: Warmup = None,
    weight_decay: WeightDecay = None,
    device: Device = None,
    mixed_precision: MixedPrecision = None,
    gradient_checkpointing: GradCkpt = False,
    threads: Threads = None,
    run_id: RunId = None,
    json_out: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Fine-tune an HF model (LoRA or full) on shared-context QA with 2D RoPE."""
    from pmbench.train.settings import TrainSettings

    settings = TrainSettings(
        kind="finetune", model=model, steps=steps, branches=branches, ratio=rope_2d_ratio,
        mode=rope_2d_mode, branch_freqs=branch_freqs, mask=mask, lr=lr, seed=seed,
        output_dir=output_dir, batch_size=batch_size, grad_accum=grad_accum, lora=lora,
        lora_r=lora_r, lora_alpha=lora_alpha,
        sources=[x.strip() for x in sources.split(",") if x.strip()], resume=resume,
        max_len=max_len, data_dir=data_dir, heldout_articles=heldout_articles,
        heldout_branches=_int_list(heldout_branches, "--heldout-branches"),
        eval_every=eval_every, save_every=save_every, warmup_steps=warmup_steps,
        weight_decay=weight_decay, device=device, mixed_precision=mixed_precision,
        gradient_checkpointing=gradient_checkpointing, threads=threads, run_id=run_id,
    )
    _execute(settings, json_out, quiet)


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
