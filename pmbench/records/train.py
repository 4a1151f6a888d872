"""A training run on disk: `<output-dir>/<run_id>/{train.json, checkpoint/, checkpoints/,
state/, tokenizer/}`.

train.json is rewritten atomically at the start, at every save and at the end (status
"running", then "complete"), so `pmbench table 2 / 3` never read half of it and
`--resume RUN_ID` finds the settings of an interrupted run. `checkpoint/` is a plain
HF folder (safetensors, tokenizer) whose config.json carries the `rope2d` section, so
`pmbench run --model <run>/checkpoint --method rope2d` decodes with the trained settings.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from pmbench.errors import BadInput
from pmbench.records.store import new_id, read_record, write_record
from pmbench.rope2d.settings import CONFIG_KEY, Rope2DSettings

TRAIN_FILE = "train.json"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINTS_DIR = "checkpoints"  # intermediate ones, `step-000100/` every --save-every steps
STATE_DIR = "state"
TOKENIZER_DIR = "tokenizer"


def new_train_id(kind: str, name: str, ratio: float, branches: int) -> str:
    safe = "".join(c if c.isalnum() or c in "-." else "-" for c in name)[-40:]
    return new_id(kind, safe, f"r{ratio:g}", f"b{branches}")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """Where the intermediate checkpoint of `step` goes: `<run>/checkpoints/step-000100`."""
    return run_dir / CHECKPOINTS_DIR / f"step-{step:06d}"


def write_train_record(run_dir: Path, record: dict[str, Any]) -> None:
    write_record(run_dir / TRAIN_FILE, record)


def read_train_record(output_dir: str | Path, run_id: str) -> dict[str, Any]:
    path = Path(output_dir) / run_id / TRAIN_FILE
    if not path.exists():
        raise BadInput(f"no training run {run_id!r} in {output_dir}")
    return read_record(path, "training record")


def save_checkpoint(model: Any, tokenizer: Any, settings: Rope2DSettings, path: Path) -> Path:
    """Save `model` as a plain HF folder with the `rope2d` section in its config.json.

    A LoRA model is saved twice: its adapter under `adapter/` and the merged weights as
    the checkpoint proper (what `pmbench run --model` loads). Merging changes `model`
    in place, so call this last.

    It is written into a fresh folder beside `path` and renamed in place of it: whatever a
    run folder held at `path` (a link to elsewhere, links inside) is replaced, never
    written through.
    """
    from pmbench.rope2d.patch import unpatch_model  # torch: here, the tables import this module

    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        if hasattr(model, "merge_and_unload"):  # peft
            model.save_pretrained(fresh / "adapter")
            model = model.merge_and_unload()
        unpatch_model(model)
        setattr(model.config, CONFIG_KEY, settings.as_dict())
        model.save_pretrained(fresh, safe_serialization=True)
        tokenizer.save_pretrained(fresh)
        remove_path(path)
        fresh.rename(path)
    finally:
        remove_path(fresh)
    return path


def remove_path(path: Path) -> None:
    """Remove `path` whatever it is (a folder, a file, a link: the link alone, never what
    it points at); nothing when it does not exist."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path)
