"""`pmbench attn`: attention of rope2d branches on the (time, branch) grid (Table 4)."""

from __future__ import annotations

import inspect
import json
import sys
from dataclasses import fields
from typing import Annotated, Any, get_type_hints

import typer

from pmbench.commands.options import declared_command, lazy_command
from pmbench.options import Option

# The help of each AttnSettings field (pmbench/attention/run.py), whose defaults and types
# the options take; its `rope2d` settings are the 2D RoPE options, unset by default.
HELP = {
    "suite": "Task suite (see `pmbench suites`).",
    "branch": "Branches (questions) per group.",
    "model": "HF folder, .gguf file or hub id.",
    "compare": "A second model (e.g. a 2D-RoPE checkpoint) analysed side by side.",
    "limit": "Number of questions (default: four groups of --branch).",
    "max_new_tokens": "Tokens per answer (suite default if unset).",
    "ignore_eos": "Decode exactly --max-new-tokens per branch.",
    "layers": "Layers to capture, e.g. 0,4,8-11 (default: all).",
    "heads": "Query heads to capture, e.g. 0-3 (default: all).",
    "tb_step": "Step of the (t, b) heatmaps: 0 = the packed prefill (each branch's last "
               "prompt token), k = the k-th decoding step, taken from the first group that "
               "reaches it.",
    "tb_layer": "Layer of the per-branch (and per-head) (t, b) figures "
                "(default: the middle captured layer).",
    "tb_heads": "Also keep the (t, b) attention per head (a larger record) and draw tb_heads.",
    "data_dir": "Benchmark data folder.",
    "output_dir": "Where records go.",
    "device": "cpu | cuda | cuda:N.",
    "dtype": "float32 | bfloat16 | float16.",
    "run_id": "Use this run id.",
}
JSON_OUT = inspect.Parameter("json_out", inspect.Parameter.KEYWORD_ONLY, default=False,
                             annotation=Annotated[bool, typer.Option(
                                 "--json", help="Print attention.json only.")])


def attn_options() -> list[Option]:
    """`pmbench attn`'s options: AttnSettings' fields, its `rope2d` the 2D RoPE options."""
    from pmbench.attention.run import AttnSettings
    from pmbench.options import default_of, unset
    from pmbench.rope2d.settings import DECLARED, KEY

    hints = get_type_hints(AttnSettings)
    out: list[Option] = []
    for f in fields(AttnSettings):
        if f.name == KEY:
            out += unset(list(DECLARED.values()))
        else:
            out.append(Option(f.name, f.name, hints[f.name], default_of(f), HELP[f.name]))
    return out


def attn(options: dict[str, Any]) -> None:
    """Capture where branch tokens attend (context, own branch, other branches) per
    layer and head, score heads by time and branch focus, and draw the figures.

    The rope2d options apply to both models; what is not given comes from each
    model's config (a 2D-RoPE checkpoint's `rope2d` section), else the defaults.
    """
    from rich.console import Console
    from rich.table import Table

    from pmbench.attention.grid import LABELS
    from pmbench.attention.run import AttnSettings, run_attention
    from pmbench.commands.common import _quiet_libraries
    from pmbench.measure.devices import check_device
    from pmbench.records.store import check_run_id
    from pmbench.rope2d.settings import KEY, OPTIONS

    given = dict(options)
    json_out = given.pop("json_out")
    given[KEY] = {name: given.pop(flag) for name, flag in OPTIONS.items()}
    settings = AttnSettings(**given)
    check_device(settings.device)  # before the model loads, not after
    if settings.run_id is not None:
        check_run_id(settings.run_id, "--run-id")
    _quiet_libraries()
    err, out = Console(stderr=True), Console()
    with err.status("attention analysis") as status:
        record = run_attention(settings, log=lambda msg: status.update(msg))
    if json_out:
        sys.stdout.write(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        return
    _print(record, settings.output_dir, out, Table, LABELS)


def _print(record: dict[str, Any], output_dir: str, out: Any, Table: Any, labels: Any) -> None:
    table = Table(title=f"attention {record['run_id']}")
    table.add_column("")
    rows = [record] + ([record["compare"]] if record.get("compare") else [])
    for r in rows:
        table.add_column(r["model"], justify="right")
    for key in ("context_mass", "own_branch_mass", "other_branch_mass", "first_token_mass",
                "time_focus_mean", "branch_focus_mean"):
        table.add_row(key, *(f"{r['summary'][key]:.3f}" for r in rows))
    for label in labels:
        table.add_row(f"{label} heads", *(str(r["summary"]["heads"][label]) for r in rows))
    out.print(table)
    out.print(f"record: {output_dir}/{record['run_id']}/attention.json", highlight=False)
    for name, what in (("heatmap_grid", "heatmap grid"), ("tb_heatmap", "(t, b) heatmap")):
        png = f"{name}.png"
        if png in record["figures"]:
            out.print(f"{what}: {output_dir}/{record['run_id']}/{png}", highlight=False)


def register(app: typer.Typer) -> None:
    doc = attn.__doc__ or ""
    lazy_command(app, "attn", lambda: declared_command(attn, attn_options(), [JSON_OUT],
                                                       name="attn", doc=doc), doc)
