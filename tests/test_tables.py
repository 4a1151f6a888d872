"""Tables 1-5 from the hand-written records in tests/fixtures/records.

The fixture folder holds, on the default model, *throughput runs* (``ignore_eos`` true,
64 tokens: SQuAD and MMLU with sequential, batch and rope2d at #branch 1 and 4, one cell
recorded twice) and *accuracy runs* (SQuAD, SQuAD v2.0 and MMLU, with other accuracy
and Q/s figures than the throughput runs; a prefix run at #branch 2 has no throughput
run; batch and sequential at #branch 4 on SQuAD have no accuracy run; sequential at
#branch 4 has an MMLU accuracy run, Table 2's reference). Three checkpoints (two
pretrained, one spelled as an absolute path, one recorded as `pmbench run` records a
local folder: `model` "checkpoint", the path in `settings.model`; one fine-tuned with the
cross mask) have both kinds of run on MMLU or C-Eval. The fine-tuned one also has a
SQuAD accuracy run at its trained #branch 4 and a newer MMLU accuracy run at #branch 8
(spelled "<run id>/checkpoint"), which must not replace its #branch 4 accuracy in
Table 2; the base model has accuracy runs at the fine-tune's 2D settings (r=0.5 cross,
#branch 4) on MMLU and SQuAD, the fine-tune's "as shipped" row. Plus three training
records (the fine-tune's with its held-out loss before training, heldout_loss_start)
and two attention records. Expected numbers are worked out by hand from those files
(for example the rope2d #branch 4 SQuAD speedup in Table 5: 7.0 / 2.0 Q/s = 3.50, both
accuracy runs; sequential has no SQuAD accuracy run at #branch 4, so its #branch 1 run
on the same 8 questions is the reference).
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from pmbench.commands.tables import register
from pmbench.errors import BadInput
from pmbench.report import table_format, tables
from pmbench.report.results import RecordWarning, load

FIXTURES = Path(__file__).parent / "fixtures" / "records"
CK25 = "results/20261120-090000-pretrain-r0.25-ab01/checkpoint"
CK50 = "results/20261120-100000-pretrain-r0.50-ab02/checkpoint"
MERGED = "Merged: 1 cell had several records (2 in all); each shows its newest record."
PROVENANCE = f"Records: 36 read from {FIXTURES}."


def invoke(*args: str):
    """Run a pmbench command of this area through a Typer app, as the lead's cli will."""
    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def records():
    return load(FIXTURES)


TABLE1 = f"""\
Table 1: Throughput (output tok/s, throughput runs) and accuracy (%, accuracy runs) by model, method and #branch

| Method              | #branch | Q tok/s |  T | Q Acc | MMLU tok/s | MMLU Acc | C-Eval tok/s | C-Eval Acc | GSM8K tok/s | GSM8K Acc | HumanEval tok/s | HumanEval Acc | SQuAD tok/s | SQuAD Acc | SQuAD v2.0 tok/s | SQuAD v2.0 Acc |
|:--------------------|--------:|--------:|---:|------:|-----------:|---------:|-------------:|-----------:|------------:|----------:|----------------:|--------------:|------------:|----------:|-----------------:|---------------:|
| **results/20261120-090000-pretrain-r0.25-ab01/checkpoint · float32, 2 threads, x86_64** |         |         |    |       |            |          |              |            |             |           |                 |               |             |           |                  |                |
| rope2d r=0.25       |       4 |       8 | 16 |     8 |       28.0 |     56.2 |         26.0 |       43.8 |           – |         – |               – |             – |           – |         – |                – |              – |
| **results/20261120-100000-pretrain-r0.50-ab02/checkpoint · float32, 2 threads, x86_64** |         |         |    |       |            |          |              |            |             |           |                 |               |             |           |                  |                |
| rope2d r=0.5 high   |       4 |       8 | 16 |     8 |       28.5 |     68.8 |            – |          – |           – |         – |               – |             – |           – |         – |                – |              – |
| **results/20261121-080000-finetune-r0.50-ab03/checkpoint · float32, 2 threads, x86_64** |         |         |    |       |            |          |              |            |             |           |                 |               |             |           |                  |                |
| rope2d r=0.5 cross  |       4 |       8 | 16 |  8–16 |       27.0 |     31.2 |            – |          – |           – |         – |               – |             – |           – |      52.5 |                – |              – |
| rope2d r=0.5 cross  |       8 |       – |  – |    16 |          – |     18.8 |            – |          – |           – |         – |               – |             – |           – |         – |                – |              – |
| **smollm2-135m-instruct · float32, 2 threads, x86_64** |         |         |    |       |            |          |              |            |             |           |                 |               |             |           |                  |                |
| sequential no-cache |       1 |       8 | 16 |  8–16 |       10.0 |     31.2 |            – |          – |           – |         – |               – |             – |        20.0 |      55.0 |                – |           60.0 |
| sequential no-cache |       4 |       8 | 16 |     8 |          – |     37.5 |            – |          – |           – |         – |               – |             – |        20.5 |         – |                – |              – |
| batch               |       4 |       8 | 16 |     – |          – |        – |            – |          – |           – |         – |               – |             – |        50.0 |         – |                – |              – |
| prefix              |       2 |       – |  – |     8 |          – |        – |            – |          – |           – |         – |               – |             – |           – |      55.0 |                – |              – |
| rope2d r=0          |       1 |       8 | 16 |     8 |       11.0 |     31.2 |            – |          – |           – |         – |               – |             – |        21.0 |      55.0 |                – |              – |
| rope2d r=0          |       4 |       8 | 16 |  8–16 |       30.0 |     43.8 |            – |          – |           – |         – |               – |             – |        70.0 |      57.5 |                – |           55.0 |
| rope2d r=0.5 cross  |       4 |       – |  – |     8 |          – |     25.0 |            – |          – |           – |         – |               – |             – |           – |      40.0 |                – |              – |

Acc (%): MMLU accuracy, C-Eval accuracy, GSM8K exact match, HumanEval pass@1, SQuAD F1, SQuAD v2.0 F1.
tok/s: output tokens per second of throughput runs (--ignore-eos, 16 new tokens per question, median over repeats); Acc: accuracy runs (each suite's own stop strings and token budget). A cell without its kind of run shows –.
Each row group is one model on one dtype, thread count and machine; per row, Q tok/s and T: questions and new tokens per question of its throughput runs, Q Acc: questions of its accuracy runs (a range where its suites differ). Rows whose Q or T differ measured different work: compare their tok/s with care.
Prior art: rope2d at ratio 0 with the isolated mask (Method "rope2d r=0") is training-free position reuse with a mask, the construction of MultiDecode and Intra-Prompt Parallel Decoding: every branch continues the context from the same positions and sees only the context and its own tokens, so on a model as shipped its greedy tokens equal sequential's. What ratio > 0, the cross mask or training add is measured against this row, not against sequential.
{MERGED}
Paired Δ to the reference: none could be judged (no samples.jsonl).
{PROVENANCE}
"""  # noqa: E501

TABLE2 = f"""\
Table 2: rope_2d_ratio ablation: held-out loss and accuracy before and after training

| Model                                                  | Weights     | Mask     | Ratio | Setting           | #branch |  Loss | SQuAD F1 (%) | SQuAD EM (%) | MMLU (%) | C-Eval (%) |
|:-------------------------------------------------------|:------------|:---------|------:|:------------------|--------:|------:|-------------:|-------------:|---------:|-----------:|
| **pre-trained from scratch: cpu-tiny**                 |             |          |       |                   |         |       |              |              |          |            |
| results/20261120-090000-pretrain-r0.25-ab01/checkpoint | pre-trained | isolated |  0.25 | split/interleaved |       4 | 4.250 |            – |            – |     56.2 |       43.8 |
| results/20261120-100000-pretrain-r0.50-ab02/checkpoint | pre-trained | isolated |  0.50 | split/high        |       4 | 4.312 |            – |            – |     68.8 |          – |
| **fine-tuned: smollm2-135m-instruct**                  |             |          |       |                   |         |       |              |              |          |            |
| smollm2-135m-instruct                                  | as shipped  | –        |     – | sequential        |       4 |     – |            – |            – |     37.5 |          – |
| smollm2-135m-instruct                                  | as shipped  | cross    |  0.50 | split/interleaved |       4 | 2.625 |         40.0 |         25.0 |     25.0 |          – |
| results/20261121-080000-finetune-r0.50-ab03/checkpoint | fine-tuned  | cross    |  0.50 | split/interleaved |       4 | 2.000 |         52.5 |         37.5 |     31.2 |          – |

Weights: as shipped is the base model before training (its sequential row, decoding one question at a time, is the reference); fine-tuned / pre-trained is the training run's checkpoint. Loss: held-out loss on the training run's held-out split at the trained #branch: for a checkpoint after training, for as shipped before the first step (heldout_loss_start: the base model at the same 2D RoPE settings). SQuAD F1 / EM, MMLU and C-Eval: the row's weights at that #branch in accuracy runs (each suite's own stop strings and token budget), as shipped at the training run's ratio, mask and setting; of several runs, the one with the most questions.
Paired Δ to the reference: none could be judged (no samples.jsonl).
{PROVENANCE}
"""  # noqa: E501

TABLE3 = f"""\
Table 3: Branch scaling: throughput, speedup over #branch 1, loss, MMLU and SQuAD

| Model                                                  | Method              | Suite  | #branch | Q |  T | tok/s | Speedup (×) |  Loss | MMLU Acc (%) | SQuAD F1 (%) |
|:-------------------------------------------------------|:--------------------|:-------|--------:|--:|---:|------:|------------:|------:|-------------:|-------------:|
| **pre-trained from scratch · float32, 2 threads, x86_64** |                     |        |         |   |    |       |             |       |              |              |
| results/20261120-090000-pretrain-r0.25-ab01/checkpoint | rope2d r=0.25       | MMLU   |       4 | 8 | 16 |  28.0 |           – | 4.250 |         56.2 |            – |
| results/20261120-090000-pretrain-r0.25-ab01/checkpoint | rope2d r=0.25       | C-Eval |       4 | 8 | 16 |  26.0 |           – | 4.250 |         56.2 |            – |
| results/20261120-100000-pretrain-r0.50-ab02/checkpoint | rope2d r=0.5 high   | MMLU   |       4 | 8 | 16 |  28.5 |           – | 4.312 |         68.8 |            – |
| **fine-tuned · float32, 2 threads, x86_64**            |                     |        |         |   |    |       |             |       |              |              |
| results/20261121-080000-finetune-r0.50-ab03/checkpoint | rope2d r=0.5 cross  | MMLU   |       4 | 8 | 16 |  27.0 |           – | 2.000 |         31.2 |         52.5 |
| results/20261121-080000-finetune-r0.50-ab03/checkpoint | rope2d r=0.5 cross  | MMLU   |       8 | – |  – |     – |           – |     – |         18.8 |            – |
| **as shipped · float32, 2 threads, x86_64**            |                     |        |         |   |    |       |             |       |              |              |
| smollm2-135m-instruct                                  | sequential no-cache | MMLU   |       1 | 8 | 16 |  10.0 |        1.00 |     – |         31.2 |         55.0 |
| smollm2-135m-instruct                                  | sequential no-cache | SQuAD  |       1 | 8 | 16 |  20.0 |        1.00 |     – |         31.2 |         55.0 |
| smollm2-135m-instruct                                  | sequential no-cache | SQuAD  |       4 | 8 | 16 |  20.5 |        1.02 |     – |         37.5 |            – |
| smollm2-135m-instruct                                  | batch               | SQuAD  |       4 | 8 | 16 |  50.0 |           – |     – |            – |            – |
| smollm2-135m-instruct                                  | prefix              | SQuAD  |       2 | – |  – |     – |           – |     – |            – |         55.0 |
| smollm2-135m-instruct                                  | rope2d r=0          | MMLU   |       1 | 8 | 16 |  11.0 |        1.00 |     – |         31.2 |         55.0 |
| smollm2-135m-instruct                                  | rope2d r=0          | MMLU   |       4 | 8 | 16 |  30.0 |        2.73 |     – |         43.8 |         57.5 |
| smollm2-135m-instruct                                  | rope2d r=0          | SQuAD  |       1 | 8 | 16 |  21.0 |        1.00 |     – |         31.2 |         55.0 |
| smollm2-135m-instruct                                  | rope2d r=0          | SQuAD  |       4 | 8 | 16 |  70.0 |        3.33 |     – |         43.8 |         57.5 |
| smollm2-135m-instruct                                  | rope2d r=0.5 cross  | MMLU   |       4 | – |  – |     – |           – |     – |         25.0 |         40.0 |

tok/s: output tokens per second of throughput runs (--ignore-eos, 16 new tokens per question, median over repeats); Q and T: questions and new tokens per question of the row's throughput run; Speedup: tok/s over #branch 1 of the same model, method and suite on the same Q, T, dtype, threads and machine ('–' where no such run exists); Loss: held-out loss of the model's training run at that #branch; MMLU Acc and SQuAD F1: from accuracy runs (each suite's own stop strings and token budget) of the same model, method and #branch, whatever the row's suite (a row without a throughput run has accuracy runs only).
Prior art: rope2d at ratio 0 with the isolated mask (Method "rope2d r=0") is training-free position reuse with a mask, the construction of MultiDecode and Intra-Prompt Parallel Decoding: every branch continues the context from the same positions and sees only the context and its own tokens, so on a model as shipped its greedy tokens equal sequential's. What ratio > 0, the cross mask or training add is measured against this row, not against sequential.
{MERGED}
{PROVENANCE}
"""  # noqa: E501

TABLE4 = """\
Table 4: Attention of branch tokens: mass by target and head specialisation

| Model                                                  | Suite | #branch | Ratio | Setting                    | Attention mass (%) context | Attention mass (%) own | Attention mass (%) other | Focus score time | Focus score branch | Heads time | Heads branch | Heads mixed | Heads context |
|:-------------------------------------------------------|:------|--------:|------:|:---------------------------|---------------------------:|-----------------------:|-------------------------:|-----------------:|-------------------:|-----------:|-------------:|------------:|--------------:|
| results/20261121-080000-finetune-r0.50-ab03/checkpoint | SQuAD |       4 |  0.50 | split/interleaved/cross    |                       50.0 |                   30.0 |                     20.0 |             0.35 |               0.27 |         90 |           45 |          80 |            55 |
| smollm2-135m-instruct                                  | SQuAD |       4 |  0.00 | split/interleaved/isolated |                       62.5 |                   37.5 |                      0.0 |             0.41 |               0.12 |        120 |            3 |          60 |            87 |

Prior art: rope2d at ratio 0 with the isolated mask (Ratio 0.00, Setting .../isolated) is training-free position reuse with a mask, the construction of MultiDecode and Intra-Prompt Parallel Decoding: every branch continues the context from the same positions and sees only the context and its own tokens, so on a model as shipped its greedy tokens equal sequential's. What ratio > 0, the cross mask or training add is measured against this row, not against sequential.
Figures of 20261127-090000-attn-squad-b4-ab04: {d}/heatmap_grid.png, {d}/focus_scatter.png
{p}
""".format(d=FIXTURES / "20261127-090000-attn-squad-b4-ab04", p=PROVENANCE)  # noqa: E501

TABLE5 = f"""\
Table 5: SQuAD parallel QA: Q/s (accuracy runs, real stopping) and speedup over sequential decoding

| Version | Method              | #questions |  Q |  Q/s | Answer p50 (s) | Answer p99 (s) | Speedup (×) | over                  | F1 (%) | EM (%) | HasAns F1 (%) | NoAns F1 (%) |
|:--------|:--------------------|-----------:|---:|-----:|---------------:|---------------:|------------:|:----------------------|-------:|-------:|--------------:|-------------:|
| **results/20261121-080000-finetune-r0.50-ab03/checkpoint · float32, 2 threads, x86_64** |                     |            |    |      |                |                |             |                       |        |        |               |              |
| v1.1    | rope2d r=0.5 cross  |          4 |  8 | 6.00 |              – |              – |           – | –                     |   52.5 |   37.5 |             – |            – |
| **smollm2-135m-instruct · float32, 2 threads, x86_64** |                     |            |    |      |                |                |             |                       |        |        |               |              |
| v1.1    | sequential no-cache |          1 |  8 | 2.00 |              – |              – |        1.00 | sequential no-cache 1 |   55.0 |   50.0 |             – |            – |
| v1.1    | rope2d r=0          |          1 |  8 | 2.10 |              – |              – |        1.05 | sequential no-cache 1 |   55.0 |   50.0 |             – |            – |
| v1.1    | prefix              |          2 |  8 | 3.50 |              – |              – |        1.75 | sequential no-cache 1 |   55.0 |   50.0 |             – |            – |
| v1.1    | rope2d r=0          |          4 |  8 | 7.00 |              – |              – |        3.50 | sequential no-cache 1 |   57.5 |   50.0 |             – |            – |
| v1.1    | rope2d r=0.5 cross  |          4 |  8 | 6.50 |              – |              – |        3.25 | sequential no-cache 1 |   40.0 |   25.0 |             – |            – |
| v2.0    | sequential no-cache |          1 | 16 | 1.80 |              – |              – |        1.00 | sequential no-cache 1 |   60.0 |   50.0 |          45.0 |         75.0 |
| v2.0    | rope2d r=0          |          4 | 16 | 6.30 |              – |              – |        3.50 | sequential no-cache 1 |   55.0 |   50.0 |          40.0 |         70.0 |

Q/s: questions answered per second in accuracy runs (each suite's own stop strings and token budget), i.e. with real stopping; #questions: questions answered together (the group size N); Q: questions scored; Answer p50 / p99: each question's time from its group's start to its last token, percentiles over the run's questions (one at a time, a question also waits for those before it); Speedup: Q/s over the sequential row named in 'over', on the same questions (same model, suite, Q, dtype, threads and machine; '–' where there is none).
HasAns / NoAns F1: SQuAD v2.0's answerable and unanswerable questions.
Prior art: rope2d at ratio 0 with the isolated mask (Method "rope2d r=0") is training-free position reuse with a mask, the construction of MultiDecode and Intra-Prompt Parallel Decoding: every branch continues the context from the same positions and sees only the context and its own tokens, so on a model as shipped its greedy tokens equal sequential's. What ratio > 0, the cross mask or training add is measured against this row, not against sequential.
Paired Δ to the reference: none could be judged (no samples.jsonl).
{PROVENANCE}
"""  # noqa: E501

EXPECTED = {1: TABLE1, 2: TABLE2, 3: TABLE3, 4: TABLE4, 5: TABLE5}


@pytest.mark.parametrize("number", [1, 2, 3, 4, 5])
def test_markdown_is_exact(records, number):
    assert table_format.render(tables.build(number, records), "markdown") == EXPECTED[number]


def test_cli_prints_the_same_markdown():
    result = invoke("table", "5", "--results", FIXTURES)
    assert result.exit_code == 0, result.output
    assert result.stdout == TABLE5


def _csv(records, number: int) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(table_format.render(tables.build(number, records), "csv")))


def test_csv_holds_raw_values_and_empty_cells(records):
    t1 = _csv(records, 1).set_index(["Model", "Method", "#branch"])  # the group is a column
    cell = t1.loc[("smollm2-135m-instruct", "rope2d r=0", 4)]
    assert cell["SQuAD tok/s"] == 70.0  # the newer of two throughput runs (the older says 60)
    assert cell["SQuAD Acc"] == 57.5 and cell["MMLU Acc"] == 43.75  # from accuracy runs
    assert pd.isna(cell["C-Eval tok/s"])  # no record: empty, reads back as NaN
    assert pd.isna(cell["GSM8K Acc"])  # a core suite without records still has its columns
    assert t1.loc[(CK25, "rope2d r=0.25", 4), "C-Eval Acc"] == 43.75  # absolute path merged

    t2 = _csv(records, 2)
    assert t2["Training"].unique().tolist() == ["pre-trained from scratch: cpu-tiny",
                                                "fine-tuned: smollm2-135m-instruct"]
    assert t2.loc[1, "Loss"] == 4.3125  # full precision, shown as 4.312
    tuned = t2[t2["Training"] == "fine-tuned: smollm2-135m-instruct"]
    assert tuned["Weights"].tolist() == ["as shipped", "as shipped", "fine-tuned"]
    assert tuned["Mask"].isna().tolist() == [True, False, False]  # sequential: no 2D RoPE
    assert tuned["Loss"].tolist()[1:] == [2.625, 2.0]  # before and after training
    assert tuned["SQuAD F1 (%)"].tolist()[1:] == [40.0, 52.5]
    # #branch 4 accuracy runs only: not the checkpoint's newer #branch-8 run (18.75), nor
    # its #branch-4 throughput run (12.5)
    assert tuned["MMLU (%)"].tolist() == [37.5, 25.0, 31.25]
    assert tuned["C-Eval (%)"].isna().all()

    t3 = _csv(records, 3).set_index(["Model", "Method", "Suite", "#branch"])
    assert t3.loc[("smollm2-135m-instruct", "rope2d r=0", "MMLU", 4), "Speedup (×)"] == (
        pytest.approx(30 / 11))
    assert t3["Training"].unique().tolist() == ["pre-trained from scratch", "fine-tuned",
                                                "as shipped"]
    cells = t3.reset_index().set_index(["Model", "Method", "#branch"])
    # a cell with MMLU and SQuAD accuracy runs but no throughput run: one row, both figures
    shipped = cells.loc[[("smollm2-135m-instruct", "rope2d r=0.5 cross", 4)]]
    assert len(shipped) == 1 and pd.isna(shipped["tok/s"].iloc[0])
    assert (shipped["MMLU Acc (%)"].iloc[0], shipped["SQuAD F1 (%)"].iloc[0]) == (25.0, 40.0)
    # ... while a cell with throughput runs has one row per suite of those
    assert len(cells.loc[[("smollm2-135m-instruct", "rope2d r=0", 4)]]) == 2

    t5 = _csv(records, 5).set_index(["Version", "Method", "#questions"])
    assert t5.loc[("v1.1", "rope2d r=0", 4), "Speedup (×)"] == pytest.approx(7.0 / 2.0)
    assert t5.loc[("v1.1", "prefix", 2), "Q/s"] == 3.5
    assert t5.loc[("v2.0", "rope2d r=0", 4), "NoAns F1 (%)"] == 70.0
    assert pd.isna(t5.loc[("v1.1", "sequential no-cache", 1), "HasAns F1 (%)"])

    t4 = _csv(records, 4)
    assert t4["Heads time"].tolist() == [90, 120]
    assert t4["Attention mass (%) other"].tolist() == [20.0, 0.0]


def test_csv_notes_go_to_stderr():
    result = invoke("table", "1", "--format", "csv", "--results", FIXTURES)
    assert result.exit_code == 0
    assert MERGED in result.stderr and "Merged" not in result.stdout


def test_filters_keep_only_the_chosen_model_and_suite(records):
    table = tables.build(1, records, models=["smollm2-135m-instruct"], suites=["squad"])
    assert table.data[("", "Model")].unique().tolist() == ["smollm2-135m-instruct"]
    assert [c[0] for c in table.data.columns if c[0]] == ["SQuAD", "SQuAD"]  # only that suite
    # a checkpoint is found whichever spelling of its path the filter uses
    ceval = tables.build(1, records, models=["/home/u/pm/" + CK25], suites=["ceval"])
    assert ceval.data[("C-Eval", "Acc")].tolist() == [43.75]
    # Table 3: --suite keeps that suite's rows; MMLU accuracy is still the model's
    t3 = tables.build(3, records, models=["smollm2-135m-instruct"], suites=["squad"])
    assert set(t3.data["Suite"]) == {"SQuAD"}
    rope = t3.data.set_index(["Method", "#branch"])
    assert rope.loc[("rope2d r=0", 4), "MMLU Acc (%)"] == 43.75
    assert rope.loc[("rope2d r=0.5 cross", 4), "Suite"] == "SQuAD"  # its accuracy-only row
    # Table 2: --model keeps the training runs of that base model
    t2 = tables.build(2, records, models=["cpu-tiny"])
    assert t2.data["Training"].unique().tolist() == ["pre-trained from scratch: cpu-tiny"]
    assert "as shipped" not in set(t2.data["Weights"])  # a random init is not shipped


@pytest.mark.parametrize("args, message", [
    (["table", "6"], "no table 6"),
    (["table", "3b"], "no table 3b; tables are 1-5, 1b, 2b, 5b"),
    (["table", "1b"], "no Table 1b here: Paired Δ to the reference: none could be judged "
                      "(no samples.jsonl)"),
    (["table", "1", "--margin", "-2"], "--margin"),
    (["table", "1", "--results", "does/not/exist"], "does not exist"),
    (["table", "1", "--format", "html"], "unknown format"),
    (["table", "1", "--standalone"], "--standalone"),
    (["table", "1", "--model", "no-such-model"], "no run records match"),
    (["table", "2", "--suite", "squad"], "drop --suite"),
    (["table", "5", "--suite", "squad", "--suite", "mmlu"], "one suite family"),
    (["table", "--model", "no-such-model"], "no records match any table"),
])
def test_bad_input_is_one_line(args, message):
    result = invoke(*args, *([] if "--results" in args else ["--results", FIXTURES]))
    assert isinstance(result.exception, BadInput)
    assert message in str(result.exception)


def test_output_file(tmp_path):
    out = tmp_path / "t" / "table2.tex"
    result = invoke("table", "2", "-f", "latex", "--results", FIXTURES, "-o", out)
    assert result.exit_code == 0 and result.stdout == ""
    text = out.read_text()
    assert r"\toprule" in text and r"\midrule" in text and r"\bottomrule" in text
    assert r"\documentclass" not in text  # a fragment unless --standalone


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
@pytest.mark.parametrize("number", [1, 2, 3, 4, 5])
def test_latex_standalone_compiles(records, tmp_path, number):
    tex = tmp_path / f"table{number}.tex"
    tex.write_text(table_format.render(tables.build(number, records), "latex", standalone=True))
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / f"table{number}.pdf").stat().st_size > 1000
    assert "Overfull" not in (tmp_path / f"table{number}.log").read_text(errors="replace")


def test_latex_escapes_and_uses_booktabs(records):
    text = table_format.render(tables.build(4, records), "latex")
    assert r"\#branch" in text and r"Attention mass (\%)" in text and r"heatmap\_grid" in text
    assert r"\cmidrule(lr){6-8}" in text  # rule under the "Attention mass" group


BAD_FILES = {
    "corrupt/run.json": '{"run_id": "20261126-130000-x", "created": "2026-11-26T13:00',
    "partial/run.json": '{"run_id": "p", "created": "2026-11-26T13:00:00+00:00", '
                        '"method": "rope2d", "branch": 4, "suite": "squad", "model": "m", '
                        '"metrics": {}, "throughput": {}, "status": "running"}',
    "foreign/run.json": '{"name": "some-other-tool", "version": 3}',
    "listy/train.json": "[1, 2, 3]",
    "wrongkind/attention.json": '{"run_id": "a", "created": "2026-11-27T09:00:00+00:00", '
                                '"kind": "heatmap", "model": "m", "branch": 4, "summary": {}}',
    "binary/run.json": b"\xff\xfe\x00garbage",
}


@pytest.fixture
def dirty(tmp_path):
    """The fixture records plus corrupt, partial and foreign files, and an ignored json."""
    root = tmp_path / "results"
    shutil.copytree(FIXTURES, root)
    for name, content in BAD_FILES.items():
        path = root / name
        path.parent.mkdir(parents=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    (root / "corrupt" / "config.json").write_text("{not json either")  # not a record name
    return root


def test_bad_files_are_skipped_with_a_warning_naming_each(dirty, records):
    with pytest.warns(RecordWarning) as caught:
        loaded = load(dirty)
    messages = [str(w.message) for w in caught]
    assert len(messages) == len(BAD_FILES)
    for name in BAD_FILES:
        assert any(str(dirty / name) in m for m in messages), name
    assert not any("config.json" in m for m in messages)
    assert [p for p, _ in loaded.skipped] == sorted(dirty / n for n in BAD_FILES)
    assert (len(loaded.runs), len(loaded.train), len(loaded.attention)) == (
        len(records.runs), len(records.train), len(records.attention))


def test_table_still_builds_and_cli_warns_on_stderr(dirty):
    result = invoke("table", "5", "--results", dirty)
    assert result.exit_code == 0, result.output
    assert result.stdout == TABLE5.replace(
        PROVENANCE, f"Records: 36 read from {dirty} ({len(BAD_FILES)} unreadable file(s) "
        "skipped).")
    for name in BAD_FILES:
        assert str(dirty / name) in result.stderr, name
    assert "status 'running'" in result.stderr and "missing" in result.stderr
