"""Tables show only what the user ran, and never merge runs that measured different work
(issue 27): committed records stay out of a user's results folder unless asked for; rows
carry their questions, token budget and machine; a speedup names its divisor and has
none where the work differs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
from test_tables import invoke

from pmbench.report import table_format, tables
from pmbench.report.results import COMMITTED, load

ROOT = Path(__file__).resolve().parents[1]
EPYC = {"cpu": "AMD EPYC", "gpu": None, "threads": 2}
XEON = {"cpu": "Intel Xeon", "gpu": None, "threads": 2}


def run(root: Path, run_id: str, method: str, branch: int, *, throughput: bool,
        n: int = 8, tokens: int = 16, env: dict | None = None, q_s: float = 1.0,
        tok_s: float = 10.0, minute: int = 0) -> None:
    record = {
        "run_id": run_id, "created": f"2026-12-01T10:{minute:02d}:00+00:00", "method": method,
        "branch": branch, "suite": "squad", "model": "m", "limit": n, "status": "complete",
        "max_new_tokens": tokens, "ignore_eos": throughput, "dtype": "float32",
        "env": env or EPYC, "rope2d": {"ratio": 0.0, "mode": "split",
                                       "branch_freqs": "interleaved", "mask": "isolated"}
        if method == "rope2d" else None,
        "metrics": {"f1": 0.5, "em": 0.4, "n": n},
        "throughput": {"output_tok_s": tok_s, "total_tok_s": 5 * tok_s, "q_s": q_s},
        "suite_info": {"suite": "squad", "data_files": ["squad/dev-v1.1.json"]},
    }
    if method == "sequential":  # as `pmbench run` records it now
        record["context_cache"] = True
    (root / run_id).mkdir(parents=True)
    (root / run_id / "run.json").write_text(json.dumps(record))


def test_a_users_table_leaves_committed_records_out(tmp_path):
    results = tmp_path / "results"
    run(results, "mine-seq", "sequential", 1, throughput=True)
    run(results, "mine-rope", "rope2d", 4, throughput=True)
    shutil.copytree(ROOT / "results" / "baseline", results / "baseline")
    assert (results / "baseline" / COMMITTED).is_file()

    mine = invoke("table", "1", "--results", results)
    assert mine.exit_code == 0, mine.output
    assert "ci-" not in mine.stdout and "smollm2-135m-instruct" not in mine.stdout
    assert f"Records: 2 read from {results}; committed records left out: " \
           f"{results / 'baseline'} (4)" in mine.stdout
    both = invoke("table", "1", "--results", results, "--include-committed")
    assert "smollm2-135m-instruct" in both.stdout and "Records: 6 read" in both.stdout
    # pointing --results at the committed folder reads it: that is asking for it
    only = invoke("table", "1", "--results", results / "baseline")
    assert "smollm2-135m-instruct" in only.stdout and "| **m " not in only.stdout
    # nothing of the user's own: the error says what was left out and how to read it
    empty = tmp_path / "fresh"
    shutil.copytree(ROOT / "results" / "baseline", empty / "baseline")
    res = invoke("table", "1", "--results", empty)
    assert res.exit_code != 0 and "committed records left out" in str(res.exception)


def test_rows_that_measured_different_work_say_so_and_are_not_divided(tmp_path):
    root = tmp_path / "r"
    run(root, "t-seq", "sequential", 1, throughput=True, tok_s=10)
    run(root, "t-rope", "rope2d", 4, throughput=True, tok_s=40)
    run(root, "t-batch", "batch", 4, throughput=True, tokens=4, tok_s=30)  # other budget
    run(root, "t-xeon", "prefix", 4, throughput=True, env=XEON, tok_s=35)  # other machine
    records = load(root)
    t1 = tables.build(1, records)
    rows = t1.data.set_index([("", "Method"), ("", "#branch")])
    assert rows.loc[("batch", 4), ("", "T")] == 4 and rows.loc[("rope2d r=0", 4), ("", "T")] == 16
    assert rows.loc[("prefix", 4), ("", "Env")] == "float32, 2 threads, Intel Xeon"
    md = table_format.render(t1)
    assert "| **m · float32, 2 threads, AMD EPYC** |" in md
    assert "| **m · float32, 2 threads, Intel Xeon** |" in md  # shown apart, not merged

    # Table 3: the speedup over #branch 1 needs the same questions, budget and machine
    run(root, "t-rope1", "rope2d", 1, throughput=True, tok_s=10)
    t3 = tables.build(3, load(root)).data.set_index(["Method", "#branch"])
    assert t3.loc[("rope2d r=0", 4), "Speedup (×)"] == 4.0  # 40 / 10, both 8 x 16
    run(root, "t-rope1-n16", "rope2d", 1, throughput=True, n=16, tok_s=12, minute=1)
    t3 = tables.build(3, load(root)).data.set_index(["Method", "#branch"])
    assert t3.loc[("rope2d r=0", 1), "Q"] == 16  # the newest #branch-1 run: other work
    assert math.isnan(t3.loc[("rope2d r=0", 4), "Speedup (×)"])  # so no speedup

    # Table 5: Q/s over the sequential run of the same questions, named; none: no speedup
    acc = tmp_path / "acc"
    run(acc, "a-seq", "sequential", 1, throughput=False, n=200, q_s=0.4)
    run(acc, "a-seq8", "sequential", 4, throughput=False, n=8, q_s=0.5)
    run(acc, "a-rope", "rope2d", 4, throughput=False, n=8, q_s=2.0)
    run(acc, "a-batch", "batch", 4, throughput=False, n=16, q_s=1.0)
    t5 = tables.build(5, load(acc)).data.set_index(["Method", "#questions"])
    assert t5.loc[("rope2d r=0", 4), "Speedup (×)"] == 4.0
    assert t5.loc[("rope2d r=0", 4), "over"] == "sequential 4"  # 8 questions, not 200
    assert pd.isna(t5.loc[("batch", 4), "over"])  # no sequential run of its 16 questions
    assert t5.loc[("rope2d r=0", 4), "Q"] == 8 and t5.loc[("batch", 4), "Q"] == 16
