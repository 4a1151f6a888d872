"""`pmbench attn`: attention of rope2d branches on the (time, branch) grid (Table 4)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from pmbench.commands import options as cli_options


def register(app: typer.Typer) -> None:
    @app.command()
    def attn(
        suite: Annotated[str, typer.Option(help="Task suite (see `pmbench suites`).")],
        branch: Annotated[int, typer.Option(help="Branches (questions) per group.")] = 4,
        model: Annotated[str | None, typer.Option(help="HF folder, .gguf file or hub id.")] = None,
        limit: Annotated[int | None, typer.Option(
            help="Number of questions (default: four groups of --branch).")] = None,
        max_new_tokens: Annotated[int | None, typer.Option(
            help="Tokens per answer (suite default if unset).")] = None,
        ignore_eos: Annotated[bool, typer.Option(
            "--ignore-eos", help="Decode exactly --max-new-tokens per branch.")] = False,
        rope_2d_ratio: Annotated[float | None, cli_options.ROPE_2D_RATIO] = None,
        rope_2d_mode: Annotated[str | None, cli_options.ROPE_2D_MODE] = None,
        branch_freqs: Annotated[str | None, cli_options.BRANCH_FREQS] = None,
        mask: Annotated[str | None, cli_options.MASK] = None,
        layers: Annotated[str | None, typer.Option(
            help="Layers to capture, e.g. 0,4,8-11 (default: all).")] = None,
        heads: Annotated[str | None, typer.Option(
            help="Query heads to capture, e.g. 0-3 (default: all).")] = None,
        tb_step: Annotated[int | None, typer.Option(
            help="Step of the (t, b) heatmaps: 0 = the packed prefill (each branch's last "
                 "prompt token), k = the k-th decoding step (default: the first), taken "
                 "from the first group that reaches it.")] = None,
        tb_layer: Annotated[int | None, typer.Option(
            help="Layer of the per-branch (and per-head) (t, b) figures "
                 "(default: the middle captured layer).")] = None,
        tb_heads: Annotated[bool, typer.Option(
            "--tb-heads", help="Also keep the (t, b) attention per head (a larger record) "
                               "and draw tb_heads.")] = False,
        compare: Annotated[str | None, typer.Option(
            help="A second model (e.g. a 2D-RoPE checkpoint) analysed side by side.")] = None,
        data_dir: Annotated[str | None, typer.Option(help="Benchmark data folder.")] = None,
        output_dir: Annotated[str, typer.Option(help="Where records go.")] = "results",
        device: Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N.")] = None,
        dtype: Annotated[str | None, typer.Option(help="float32 | bfloat16 | float16.")] = None,
        run_id: Annotated[str | None, typer.Option(help="Use this run id.")] = None,
        json_out: Annotated[bool, typer.Option(
            "--json", help="Print attention.json only.")] = False,
    ) -> None:
        """Capture where branch tokens attend (context, own branch, other branches) per
        layer and head, score heads by time and branch focus, and draw the figures.

        The rope2d options apply to both models; what is not given comes from each
        model's config (a 2D-RoPE checkpoint's `rope2d` section), else the defaults.
        """
        given = dict(locals())  # the options as given, before anything else is bound
        from rich.console import Console
        from rich.table import Table

        from pmbench.attention.grid import LABELS
        from pmbench.attention.run import AttnSettings, run_attention
        from pmbench.attention.tb import TB_STEP
        from pmbench.commands.common import _quiet_libraries
        from pmbench.measure.devices import check_device
        from pmbench.records.store import check_run_id
        from pmbench.rope2d.settings import OPTIONS as ROPE2D_OPTIONS

        check_device(device)  # before the model loads, not after
        if run_id is not None:
            check_run_id(run_id, "--run-id")
        _quiet_libraries()
        err, out = Console(stderr=True), Console()
        settings = AttnSettings(
            suite=suite, branch=branch, model=model, compare=compare, limit=limit,
            max_new_tokens=max_new_tokens, ignore_eos=ignore_eos,
            rope2d={name: given[option] for name, option in ROPE2D_OPTIONS.items()},
            layers=layers, heads=heads, tb_step=TB_STEP if tb_step is None else tb_step,
            tb_layer=tb_layer, tb_heads=tb_heads,
            data_dir=data_dir, output_dir=output_dir,
            device=device, dtype=dtype, run_id=run_id,
        )
        with err.status("attention analysis") as status:
            record = run_attention(settings, log=lambda msg: status.update(msg))
        if json_out:
            sys.stdout.write(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
            return
        table = Table(title=f"attention {record['run_id']}")
        table.add_column("")
        rows = [record] + ([record["compare"]] if record.get("compare") else [])
        for r in rows:
            table.add_column(r["model"], justify="right")
        for key in ("context_mass", "own_branch_mass", "other_branch_mass", "first_token_mass",
                    "time_focus_mean", "branch_focus_mean"):
            table.add_row(key, *(f"{r['summary'][key]:.3f}" for r in rows))
        for label in LABELS:
            table.add_row(f"{label} heads", *(str(r["summary"]["heads"][label]) for r in rows))
        out.print(table)
        out.print(f"record: {output_dir}/{record['run_id']}/attention.json", highlight=False)
        for name, what in (("heatmap_grid", "heatmap grid"), ("tb_heatmap", "(t, b) heatmap")):
            png = f"{name}.png"
            if png in record["figures"]:
                out.print(f"{what}: {output_dir}/{record['run_id']}/{png}", highlight=False)
