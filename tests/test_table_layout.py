"""Which kind of run each figure comes from, the paper's layout, and `pmbench table` with no
number.

Throughput runs (``ignore_eos`` true) and accuracy runs of the same cell are given
different tok/s, Q/s and accuracy here, so a figure taken from the wrong kind of run
shows up as a wrong number.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from test_tables import EXPECTED, FIXTURES, invoke
from typer.testing import CliRunner

from conftest import make_tiny_model
from pmbench.report import table_format, tables
from pmbench.report.results import load, method_label, run_purpose

SQUAD_INFO = {"suite": "squad", "data_files": ["squad/dev-v1.1.json"]}
DEFAULT_ROPE2D = {"ratio": 0.0, "mode": "split", "branch_freqs": "interleaved",
                  "mask": "isolated"}


def write_run(root: Path, run_id: str, method: str, branch: int, suite: str, *,
              throughput: bool, tok_s: float, q_s: float, metrics: dict,
              max_new_tokens: int = 64, minute: int = 0, model: str = "m",
              rope2d: dict | None = None) -> None:
    """A minimal valid run record (rope2d at ratio 0 with default settings unless
    `rope2d` says otherwise; sequential with its context cached, as `pmbench run` records
    it now)."""
    record = {
        "run_id": run_id, "created": f"2026-12-01T10:{minute:02d}:00+00:00",
        "method": method, "branch": branch, "suite": suite, "model": model, "limit": 8,
        "max_new_tokens": max_new_tokens, "ignore_eos": throughput, "seed": 0,
        "repeats": 3 if throughput else 1, "status": "complete",
        "rope2d": {**DEFAULT_ROPE2D, **(rope2d or {})} if method == "rope2d" else None,
        "metrics": {**metrics, "n": 8},
        "throughput": {"output_tok_s": tok_s, "total_tok_s": 5 * tok_s, "q_s": q_s},
    }
    if suite == "squad":
        record["suite_info"] = SQUAD_INFO
    if method == "sequential":
        record["context_cache"] = True
    path = root / run_id / "run.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))


@pytest.fixture(scope="module")
def two_kinds(tmp_path_factory) -> Path:
    """Cells with both kinds of run (different numbers), and cells with only one kind.

    The accuracy runs are older than the throughput runs of their cells: the newest
    record of one kind must not hide the other kind.
    """
    root = tmp_path_factory.mktemp("two-kinds")
    acc, tput = {"throughput": False}, {"throughput": True}
    # MMLU: rope2d at #branch 1 and 4 both kinds, sequential #branch 1 accuracy only
    write_run(root, "a-m1", "sequential", 1, "mmlu", **acc, tok_s=3, q_s=3, metrics={"acc": .2})
    write_run(root, "a-r1", "rope2d", 1, "mmlu", **acc, tok_s=4, q_s=4, metrics={"acc": .3})
    write_run(root, "a-r4", "rope2d", 4, "mmlu", **acc, tok_s=5, q_s=5, metrics={"acc": .4})
    write_run(root, "t-r1", "rope2d", 1, "mmlu", **tput, tok_s=40, q_s=0.6,
              metrics={"acc": .9}, minute=5)
    write_run(root, "t-r4", "rope2d", 4, "mmlu", **tput, tok_s=100, q_s=1.5,
              metrics={"acc": .9}, minute=5)
    # SQuAD: sequential #branch 1 both kinds; sequential #branch 4 accuracy only;
    # batch #branch 4 throughput only (at 16 tokens); rope2d #branch 4 both kinds
    sq = {"f1": 0.6, "em": 0.5}
    write_run(root, "a-s1", "sequential", 1, "squad", **acc, tok_s=7, q_s=1.5, metrics=sq)
    write_run(root, "a-s4", "sequential", 4, "squad", **acc, tok_s=7, q_s=3.0, metrics=sq)
    write_run(root, "a-o4", "rope2d", 4, "squad", **acc, tok_s=20, q_s=6.0,
              metrics={"f1": .55, "em": .5})
    write_run(root, "t-s1", "sequential", 1, "squad", **tput, tok_s=10, q_s=9.0,
              metrics={"f1": .1, "em": 0}, minute=5)
    write_run(root, "t-b4", "batch", 4, "squad", **tput, tok_s=55, q_s=20.0,
              metrics={"f1": .1, "em": 0}, max_new_tokens=16, minute=5)
    write_run(root, "t-o4", "rope2d", 4, "squad", **tput, tok_s=90, q_s=30.0,
              metrics={"f1": .1, "em": 0}, minute=5)
    return root


def _cell(table: tables.Table, method: str, branch: int, column) -> float:
    data = table.data
    method_col = ("", "Method") if isinstance(data.columns, pd.MultiIndex) else "Method"
    branch_col = {1: ("", "#branch"), 3: "#branch", 5: "#questions"}[table.number]
    rows = data[(data[method_col] == method) & (data[branch_col] == branch)]
    assert len(rows) == 1, rows
    return rows[column].iloc[0]


def test_table1_takes_tok_s_from_throughput_runs_and_acc_from_accuracy_runs(two_kinds):
    t1 = tables.build(1, load(two_kinds))
    assert _cell(t1, "rope2d r=0", 4, ("MMLU", "tok/s")) == 100  # not the accuracy run's 5
    assert _cell(t1, "rope2d r=0", 4, ("MMLU", "Acc")) == 40  # not the throughput run's 90
    assert _cell(t1, "rope2d r=0", 4, ("SQuAD", "tok/s")) == 90
    assert _cell(t1, "rope2d r=0", 4, ("SQuAD", "Acc")) == 55
    # one kind of run only: the other column shows "–", never the wrong run's figure
    assert pd.isna(_cell(t1, "sequential", 4, ("SQuAD", "tok/s")))
    assert _cell(t1, "sequential", 4, ("SQuAD", "Acc")) == 60
    assert _cell(t1, "batch", 4, ("SQuAD", "tok/s")) == 55
    assert pd.isna(_cell(t1, "batch", 4, ("SQuAD", "Acc")))
    text = table_format.render(t1, "markdown")
    assert "| batch      |       4 |" in text and text.count(" – ") > 10
    # the notes name both sources and every token budget the throughput runs used
    assert "throughput runs (--ignore-eos, 16 or 64 new tokens per question" in text
    assert "Acc: accuracy runs" in text
    assert "Acc (%): MMLU accuracy, C-Eval accuracy, GSM8K exact match, HumanEval pass@1, " \
           "SQuAD F1." in text


def test_table3_speedup_from_throughput_runs_and_accuracy_from_accuracy_runs(two_kinds):
    t3 = tables.build(3, load(two_kinds))
    mmlu = t3.data[t3.data["Suite"] == "MMLU"].set_index(["Method", "#branch"])
    rope = mmlu.loc["rope2d r=0"]
    assert rope["tok/s"].tolist() == [40, 100]
    assert rope["Speedup (×)"].tolist() == [1.0, 2.5]  # 100 / 40, not 5 / 4
    assert rope["MMLU Acc (%)"].tolist() == [30, 40]
    assert set(t3.data["Training"]) == {"as shipped"}
    squad = t3.data[t3.data["Suite"] == "SQuAD"].set_index(["Method", "#branch"])
    # sequential #branch 1 has a SQuAD throughput run: its MMLU accuracy (an accuracy run
    # only) and its SQuAD F1 sit on that row, not on a row of their own
    assert ("sequential", 1) not in mmlu.index
    assert squad.loc[("sequential", 1), ["tok/s", "MMLU Acc (%)", "SQuAD F1 (%)"]].tolist() == [
        10, 20, 60]  # F1 of the accuracy run, not the throughput run's 10
    assert squad.loc[("rope2d r=0", 4), "SQuAD F1 (%)"] == 55
    assert pd.isna(squad.loc[("batch", 4), "SQuAD F1 (%)"])  # a throughput run only
    # an accuracy run only: one row without tok/s
    assert pd.isna(squad.loc[("sequential", 4), "tok/s"])
    assert squad.loc[("sequential", 4), "SQuAD F1 (%)"] == 60
    assert not t3.data.duplicated(["Method", "Suite", "#branch"]).any()


def write_train(root: Path, run_id: str, rope2d: dict, heldout_loss: dict, *,
                heldout_loss_start: float | None = None, kind: str = "finetune",
                model: str = "m", branches: int = 4) -> None:
    """A minimal valid training record; its checkpoint is "<run_id>/checkpoint"."""
    record = {"run_id": run_id, "created": "2026-12-01T09:00:00+00:00", "kind": kind,
              "model": model, "rope2d": {**DEFAULT_ROPE2D, **rope2d}, "branches": branches,
              "heldout_loss": heldout_loss, "checkpoint": f"{run_id}/checkpoint",
              "status": "complete"}
    if heldout_loss_start is not None:
        record["heldout_loss_start"] = heldout_loss_start
    path = root / run_id / "train.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))


def test_table2_before_and_after_rows_by_mask_then_ratio(tmp_path):
    """Fine-tunes of one base model: the sequential reference, then per run (by mask,
    then ratio) the base model as shipped at the run's settings and the checkpoint, each
    from accuracy runs at the trained #branch."""
    acc = {"throughput": False, "tok_s": 1, "q_s": 1}
    settings = [("isolated", 0.5), ("cross", 0.25), ("cross", 0.0)]
    for i, (mask, ratio) in enumerate(settings):
        rope = {"ratio": ratio, "mask": mask}
        write_train(tmp_path, f"ft{i}", rope, {"1": 9.0, "4": 2.0 + i},
                    heldout_loss_start=3.0 + i if i else None)  # ft0: an older record
        write_run(tmp_path, f"base{i}", "rope2d", 4, "mmlu", **acc, rope2d=rope,
                  metrics={"acc": 0.1 * i})
        write_run(tmp_path, f"ck{i}", "rope2d", 4, "mmlu", **acc, rope2d=rope,
                  model=f"ft{i}/checkpoint", metrics={"acc": 0.5 + 0.1 * i})
        write_run(tmp_path, f"cksq{i}", "rope2d", 4, "squad", **acc, rope2d=rope,
                  model=f"ft{i}/checkpoint", metrics={"f1": 0.25 * i, "em": 0.125 * i})
    write_run(tmp_path, "seq", "sequential", 4, "mmlu", **acc, metrics={"acc": 0.75})
    # must not be picked: the checkpoint's newer #branch-8 accuracy run and its #branch-4
    # throughput run, the base model at another ratio, sequential at #branch 1
    write_run(tmp_path, "ck0-b8", "rope2d", 8, "mmlu", **acc, model="ft0/checkpoint",
              rope2d={"ratio": 0.5}, metrics={"acc": 0.0}, minute=9)
    write_run(tmp_path, "ck0-tput", "rope2d", 4, "mmlu", throughput=True, tok_s=9, q_s=9,
              model="ft0/checkpoint", rope2d={"ratio": 0.5}, metrics={"acc": 0.0}, minute=9)
    write_run(tmp_path, "base-other", "rope2d", 4, "mmlu", **acc, rope2d={"ratio": 0.75},
              metrics={"acc": 0.0}, minute=9)
    write_run(tmp_path, "seq1", "sequential", 1, "mmlu", **acc, metrics={"acc": 0.0}, minute=9)

    t2 = tables.build(2, load(tmp_path))
    data = t2.data
    assert set(data["Training"]) == {"fine-tuned: m"}
    assert data["Weights"].tolist() == ["as shipped"] + ["as shipped", "fine-tuned"] * 3
    assert data["Model"].tolist() == ["m", "m", "ft2/checkpoint", "m", "ft1/checkpoint", "m",
                                      "ft0/checkpoint"]
    assert data["Mask"].fillna("none").tolist() == ["none"] + ["cross"] * 4 + ["isolated"] * 2
    assert data["Ratio"].tolist()[1:] == [0.0, 0.0, 0.25, 0.25, 0.5, 0.5]
    assert data["Setting"].tolist() == ["sequential"] + ["split/interleaved"] * 6
    assert data["#branch"].tolist() == [4] * 7
    # before training, then after; ft0's record has no loss before training
    assert data["Loss"].tolist()[1:5] == [5.0, 4.0, 4.0, 3.0]
    assert data["Loss"].iloc[[0, 5]].isna().all() and data["Loss"].iloc[6] == 2.0
    assert data["MMLU (%)"].round(6).tolist() == [75, 20, 70, 10, 60, 0, 50]
    assert data["SQuAD F1 (%)"].tolist()[2::2] == [50, 25, 0]
    assert data["SQuAD EM (%)"].tolist()[2::2] == [25, 12.5, 0]
    assert data["SQuAD F1 (%)"].iloc[[0, 1, 3, 5]].isna().all()  # no base SQuAD runs
    text = table_format.render(t2)
    assert "| **fine-tuned: m** |" in text  # the group is a heading, not a column
    assert "heldout_loss_start" in text and "Merged" not in text
    assert table_format.render(t2, "csv").splitlines()[0] == (
        "Training,Model,Weights,Mask,Ratio,Setting,#branch,Loss,SQuAD F1 (%),SQuAD EM (%),"
        "MMLU (%),C-Eval (%)")


def test_table5_q_s_from_accuracy_runs(two_kinds):
    t5 = tables.build(5, load(two_kinds))
    assert t5.data["Method"].tolist() == ["sequential", "sequential", "rope2d r=0"]
    assert _cell(t5, "rope2d r=0", 4, "Q/s") == 6.0  # not the throughput run's 30
    # sequential of the same #branch is preferred: 6.0 / 3.0, not 6.0 / 1.5
    assert _cell(t5, "rope2d r=0", 4, "Speedup (×)") == 2.0
    assert _cell(t5, "rope2d r=0", 4, "over") == "sequential 4"  # the divisor, named
    assert _cell(t5, "rope2d r=0", 4, "Q") == 8  # the questions behind the row
    text = table_format.render(t5, "markdown")
    assert "Q/s: questions answered per second in accuracy runs" in text
    assert "HasAns" not in text  # no v2.0 row: no HasAns / NoAns columns


def test_table5_falls_back_to_sequential_at_another_branch_with_the_same_questions(
        two_kinds, tmp_path):
    root = tmp_path / "r"
    shutil.copytree(two_kinds, root)
    shutil.rmtree(root / "a-s4")
    t5 = tables.build(5, load(root))
    assert _cell(t5, "rope2d r=0", 4, "Speedup (×)") == 4.0  # 6.0 / 1.5 (sequential #1)
    assert _cell(t5, "rope2d r=0", 4, "over") == "sequential 1"


def test_table5_squad_v2_has_hasans_and_noans_f1():
    t5 = tables.build(5, load(FIXTURES))
    v2 = t5.data[t5.data["Version"] == "v2.0"].set_index("Method")
    assert v2.loc["rope2d r=0", "HasAns F1 (%)"] == 40.0
    assert v2.loc["sequential no-cache", "NoAns F1 (%)"] == 75.0  # a record made before it
    assert v2.loc["rope2d r=0", "Speedup (×)"] == pytest.approx(6.3 / 1.8)  # v2.0's own
    v11 = t5.data[t5.data["Version"] == "v1.1"]
    assert v11["HasAns F1 (%)"].isna().all() and v11["NoAns F1 (%)"].isna().all()
    only_v2 = tables.build(5, load(FIXTURES), suites=["squad_v2"])
    assert set(only_v2.data["Version"]) == {"v2.0"}
    assert set(only_v2.data["Q"]) == {16}


def test_row_groups_in_each_format():
    t1 = tables.build(1, load(FIXTURES))
    md = table_format.render(t1, "markdown")
    env = "float32, 2 threads, x86_64"  # the fixtures' dtype, threads and machine
    assert f"| **smollm2-135m-instruct · {env}** |" in md
    assert md.count("smollm2-135m-instruct") == 1  # the heading, not a column
    assert md.splitlines()[2].startswith("| Method ")
    latex = table_format.render(t1, "latex")
    assert ("\\midrule\n\\multicolumn{17}{l}{\\textit{smollm2-135m-instruct · float32, 2 "
            "threads, x86\\_64}} \\\\\nsequential no-cache & 1 &") in latex
    assert "\\midrule\n\\multicolumn{17}{l}{\\textit{results/20261120-090000-pretrain" in latex
    csv = table_format.render(t1, "csv").splitlines()
    assert csv[0].startswith("Model,Env,Method,#branch,Q tok/s,T,Q Acc,MMLU tok/s,MMLU Acc")
    assert sum(line.startswith(f'smollm2-135m-instruct,"{env}",') for line in csv) == 7

    t3 = table_format.render(tables.build(3, load(FIXTURES)))
    headings = [ln.split("|")[1].strip() for ln in t3.splitlines() if ln.startswith("| **")]
    assert headings == [f"**{group} · {env}**"
                        for group in ("pre-trained from scratch", "fine-tuned", "as shipped")]

    t2 = tables.build(2, load(FIXTURES))
    latex = table_format.render(t2, "latex")
    assert ("\\midrule\n\\multicolumn{11}{l}{\\textit{fine-tuned: smollm2-135m-instruct}} "
            "\\\\\nsmollm2-135m-instruct & as shipped & – & – & sequential & 4 &") in latex
    csv = table_format.render(t2, "csv").splitlines()
    assert csv[0].startswith("Training,Model,Weights,Mask,Ratio,Setting,#branch,Loss,")
    assert csv[3] == ("fine-tuned: smollm2-135m-instruct,smollm2-135m-instruct,as shipped,,,"
                      "sequential,4,,,,37.5,")


def test_methods_in_paper_order():
    t1 = tables.build(1, load(FIXTURES), models=["smollm2-135m-instruct"])
    assert t1.data[("", "Method")].tolist() == [
        "sequential no-cache", "sequential no-cache", "batch", "prefix", "rope2d r=0", "rope2d r=0",
        "rope2d r=0.5 cross"]


def test_table_without_number_prints_every_table_table1_first():
    result = invoke("table", "--results", FIXTURES)
    assert result.exit_code == 0, result.output
    assert result.stdout == "\n".join(EXPECTED[n] for n in range(1, 6))
    assert result.stdout.startswith("Table 1:")


def test_table_without_number_skips_tables_without_records(two_kinds, tmp_path):
    result = invoke("table", "--results", two_kinds)
    assert result.exit_code == 0, result.output
    titles = [ln.split(":")[0] for ln in result.stdout.splitlines() if ln.startswith("Table ")]
    assert titles == ["Table 1", "Table 3", "Table 5"]
    assert result.stderr.strip().endswith(": 2, 4")  # one line naming the skipped tables

    csv = invoke("table", "-f", "csv", "--results", two_kinds, "-o", tmp_path / "all.csv")
    assert csv.exit_code == 0, csv.output
    text = (tmp_path / "all.csv").read_text()
    assert text.startswith("# Table 1\nModel,Env,Method,#branch,")
    assert "\n\n# Table 3\nTraining,Env,Model," in text and "\n\n# Table 5\n" in text


def test_table_without_number_and_no_records_exits_2(tmp_path):
    from pmbench.cli import app

    result = CliRunner().invoke(app, ["table", "--results", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "no records match any table" in result.stderr


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_all_tables_in_one_latex_document_compile(tmp_path):
    result = invoke("table", "-f", "latex", "--standalone", "--results", FIXTURES,
                    "-o", tmp_path / "all.tex")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "all.tex").read_text().count("\\begin{table}") == 5
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "all.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "Overfull" not in (tmp_path / "all.log").read_text(errors="replace")


def test_label_of_a_record_written_by_pmbench_run(tokenizer, tmp_path):
    """Today's `pmbench run` writes every rope2d setting; the label hides the defaults
    (those of Rope2DSettings) and shows the rest."""
    from pmbench.cli import app

    model = tmp_path / "tiny"
    make_tiny_model("llama", len(tokenizer)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    out = tmp_path / "results"
    common = ["run", "--method", "rope2d", "--suite", "squad", "--limit", "2", "--branch", "2",
              "--max-new-tokens", "2", "--model", str(model), "--output-dir", str(out),
              "--no-warmup", "--threads", "1"]
    for extra in ([], ["--mask", "cross", "--ignore-eos", "--repeats", "1"]):
        result = CliRunner().invoke(app, [*common, *extra])
        assert result.exit_code == 0, result.output
    runs = sorted(load(out).runs, key=lambda r: r["rope2d"]["mask"], reverse=True)
    assert [r["rope2d"]["branch_freqs"] for r in runs] == ["interleaved"] * 2  # as written
    assert [method_label(r) for r in runs] == ["rope2d r=0", "rope2d r=0 cross"]
    assert [run_purpose(r) for r in runs] == ["accuracy", "throughput"]
    t1 = tables.build(1, load(out))  # the same labels through the frame's flat columns
    assert t1.data[("", "Method")].tolist() == ["rope2d r=0", "rope2d r=0 cross"]
    assert pd.isna(t1.data[("SQuAD", "tok/s")][0]) and pd.isna(t1.data[("SQuAD", "Acc")][1])
