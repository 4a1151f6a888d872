"""One `pmbench attn` run: load the model, capture its attention over a suite, write the records.

`run_attention` analyses one model (and `--compare` a second on the same questions) with
`analyze_model`, which runs the suite's groups through the rope2d runner under an
`AttentionRecorder` and reduces what it caught (`grid.summarize`, `tb.tb_summary`); then
it draws the figures (`plots`) and writes attention.json beside them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pmbench.attention import plots
from pmbench.attention.capture import AttentionRecorder
from pmbench.attention.grid import (
    CONTEXT_SHARE,
    FOCUS_MARGIN,
    MIN_KL,
    TIME_EDGES,
    phase_masses,
    rounded,
    summarize,
)
from pmbench.attention.tb import TB_STEP, tb_figure_layer, tb_summary
from pmbench.engine.models import eos_token_ids, load_model, load_tokenizer
from pmbench.engine.runners.base import RunnerOptions
from pmbench.engine.runners.rope2d import Rope2DRunner
from pmbench.errors import BadInput, require_positive
from pmbench.measure.envinfo import env_fingerprint
from pmbench.records.store import new_run_id, now_iso, write_record
from pmbench.suites import load_suite

Log = Callable[[str], None]


def _quiet(msg: str) -> None:
    pass


def parse_indices(spec: str | None, n: int, what: str) -> list[int]:
    """'0,3,8-11' (or None / 'all') -> sorted indices below n."""
    if spec is None or spec.strip().lower() == "all":
        return list(range(n))
    chosen: set[int] = set()
    try:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            lo, _, hi = part.partition("-")
            chosen.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise BadInput(f"--{what}: expected numbers like 0,3,8-11, got {spec!r}") from None
    bad = sorted(i for i in chosen if not 0 <= i < n)
    if bad or not chosen:
        raise BadInput(f"--{what}: {bad or spec} out of range 0..{n - 1}")
    return sorted(chosen)


@dataclass
class AttnSettings:
    """What `pmbench attn` was asked to do (recorded in attention.json)."""

    suite: str
    branch: int = 4
    model: str | None = None
    compare: str | None = None
    limit: int | None = None
    max_new_tokens: int | None = None
    ignore_eos: bool = False
    rope2d: dict[str, Any] = field(default_factory=dict)
    layers: str | None = None
    heads: str | None = None
    tb_step: int = TB_STEP
    tb_layer: int | None = None
    tb_heads: bool = False
    data_dir: str | None = None
    output_dir: str = "results"
    device: str | None = None
    dtype: str | None = None
    run_id: str | None = None

    def validate(self) -> None:
        require_positive(branch=self.branch, limit=self.limit,
                         max_new_tokens=self.max_new_tokens)
        if self.tb_step < 0:
            raise BadInput(f"--tb-step must be 0 (the packed prefill) or more, got {self.tb_step}")

    @property
    def questions(self) -> int:
        """--limit, or four groups of --branch questions."""
        return self.limit if self.limit is not None else 4 * self.branch


def analyze_model(s: AttnSettings, model_id: str | None, log: Log = _quiet) -> dict[str, Any]:
    """Run the suite's groups through rope2d on one model and reduce its attention."""
    tokenizer = load_tokenizer(model_id)
    suite = load_suite(s.suite, tokenizer, data_dir=s.data_dir, branch=s.branch,
                       limit=s.questions)
    log(f"loading {model_id or 'default model'}")
    loaded = load_model(model_id, s.device, s.dtype, attn_implementation="eager")
    config = loaded.model.config
    layers = parse_indices(s.layers, config.num_hidden_layers, "layers")
    heads = parse_indices(s.heads, config.num_attention_heads, "heads")
    tb_layer = tb_figure_layer(s.tb_layer, layers)  # checked before the run, not after
    runner = Rope2DRunner(loaded.model, loaded.tokenizer,
                          RunnerOptions(branch=s.branch, rope2d=dict(s.rope2d)))
    gen = suite.generation(s.max_new_tokens, s.ignore_eos,
                           eos_token_ids(loaded.model, loaded.tokenizer))
    if s.tb_step >= gen.max_new_tokens:  # answers of n tokens take n - 1 decoding steps
        raise BadInput(f"--tb-step {s.tb_step}: with {gen.max_new_tokens} new tokens per answer "
                       f"the last decoding step is {gen.max_new_tokens - 1}")
    recorder = AttentionRecorder(layers, heads, s.branch, tb_step=s.tb_step)
    t0 = time.perf_counter()
    with recorder.attach(loaded.model):
        for i, group in enumerate(suite.groups):
            log(f"{loaded.name}: group {i + 1}/{len(suite.groups)}")
            runner.run_group(group, gen.for_group(group))
    result = summarize(recorder.acc.stats())
    result.update({
        "model": loaded.name,
        "model_path": loaded.path,
        "rope2d": runner.settings.as_dict(),
        "dtype": loaded.dtype,
        "device": loaded.device,
        "n_groups": len(suite.groups),
        "n_questions": sum(len(g.questions) for g in suite.groups),
        "max_new_tokens": gen.max_new_tokens,
        "phases": phase_masses(recorder.acc),
        # null when every branch stopped before --tb-step
        "tb": tb_summary(recorder.tb, s.tb_heads, tb_layer) if recorder.tb else None,
        "max_mass_error": rounded(recorder.acc.max_mass_error, 9),
        "wall_s": rounded(time.perf_counter() - t0, 3),
    })
    return result


def _record(s: AttnSettings, run_id: str, created: str, analysis: dict[str, Any],
            figures: list[str]) -> dict[str, Any]:
    return {
        "run_id": run_id, "created": created, "kind": "attention", "status": "complete",
        "model": analysis["model"], "suite": s.suite, "branch": s.branch,
        "limit": s.questions, **{k: v for k, v in analysis.items() if k != "model"},
        "definitions": {
            "context_share": CONTEXT_SHARE, "focus_margin": FOCUS_MARGIN, "min_kl": MIN_KL,
            "time_edges": list(TIME_EDGES),
            "scores": "time_focus = KL(H_T||U_T)/KL(H||U), branch_focus = KL(H_B||U_B)/KL(H||U)"
                      " (pmbench.attention.grid)",
        },
        "figures": figures,
        "settings": asdict(s),
    }


def run_attention(s: AttnSettings, log: Log = _quiet) -> dict[str, Any]:
    """`pmbench attn`: analyse one model (and --compare a second), write records and figures.

    Writes `<output_dir>/<run_id>/attention.json` with the figures beside it; with
    `--compare`, the second model's own record goes to `<run_id>/compare/attention.json`
    (so Table 4 shows it as a row) and the main record holds its summary under `compare`.
    """
    s.validate()
    run_id = s.run_id or new_run_id("attn", s.suite, s.branch)
    folder = Path(s.output_dir) / run_id
    if (folder / "attention.json").exists():
        raise BadInput(f"attention run {run_id} already exists in {s.output_dir}")
    created = now_iso()
    analyses = [analyze_model(s, s.model, log)]
    if s.compare:
        analyses.append(analyze_model(s, s.compare, log))
    log("drawing figures")
    figures = plots.write_figures(analyses, folder)
    record = _record(s, run_id, created, analyses[0], figures)
    record["env"] = env_fingerprint(analyses[0]["device"], analyses[0]["dtype"], "eager")
    if s.compare:
        other = _record(s, f"{run_id}-compare", created, analyses[1],
                        [f"../{f}" for f in figures])
        other["env"] = record["env"]
        other["compared_with"] = run_id
        write_record(folder / "compare" / "attention.json", other, indent=1,
                     ensure_ascii=False)
        record["compare"] = {"run_id": other["run_id"], "model": other["model"],
                             "rope2d": other["rope2d"], "summary": other["summary"],
                             "record": "compare/attention.json"}
    write_record(folder / "attention.json", record, indent=1, ensure_ascii=False)
    return record
