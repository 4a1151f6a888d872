"""pmbench plot: every kind writes a PNG of the expected size and a PDF, with labelled
axes, a legend, and no text overlapping other text or leaving the figure."""

from __future__ import annotations

import json
import shutil
from itertools import combinations

import matplotlib.image
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from test_tables import FIXTURES, invoke

from pmbench.errors import BadInput
from pmbench.report import plot_style as style
from pmbench.report import plots
from pmbench.report.results import load

LABELS = {  # (x label, y label) of a figure's last axes on the fixture records
    "throughput": ("#branch (questions per group)", "Output throughput (tokens/s)"),
    "accuracy": ("F1 (%)", ""),
    "ratio": ("rope_2d_ratio 0", "F1 (%)"),  # SQuAD: one ratio only, as bars
}


@pytest.fixture(scope="module")
def records():
    return load(FIXTURES)


def drawn_texts(fig):
    """(text, window bbox) of axis labels, tick labels in view and legend entries."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = []
    for ax in fig.axes:
        texts += [t for t in (ax.xaxis.label, ax.yaxis.label) if t.get_text()]
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            texts += [t.label1 for t in axis.get_major_ticks()
                      if lo <= t.get_loc() <= hi and t.label1.get_visible() and t.label1.get_text()]
    for legend in fig.legends:
        texts += legend.get_texts()
    return [(t.get_text(), t.get_window_extent(renderer)) for t in texts], fig.bbox


@pytest.mark.parametrize("kind", list(LABELS))
def test_each_kind_writes_png_pdf_and_svg_at_print_size(records, tmp_path, kind):
    fig = plots.plot(kind, records)
    png, pdf, svg = plots.save(fig, tmp_path / f"{kind}.png")
    assert pdf.read_bytes().startswith(b"%PDF") and b"<svg" in svg.read_bytes()[:500]
    image = matplotlib.image.imread(png)
    width, height = fig.get_size_inches() * plots.DPI
    assert image.shape[:2] == (round(height), round(width))
    assert fig.get_size_inches()[0] <= 7.0  # the width of a two-column page at most
    assert image[..., :3].std() > 0.05  # something was drawn, not a blank canvas

    ax = [a for a in fig.axes if a.get_visible()][-1]
    assert (ax.get_xlabel(), ax.get_ylabel()) == LABELS[kind]
    assert len(fig.legends) == 1 and fig.legends[0].get_texts()

    texts, frame = drawn_texts(fig)
    for text, box in texts:
        assert frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1, f"{text!r} leaves the figure"
        assert frame.y0 - 1 <= box.y0 and box.y1 <= frame.y1 + 1, f"{text!r} leaves the figure"
    for (a, box_a), (b, box_b) in combinations(texts, 2):
        assert not box_a.overlaps(box_b), f"{a!r} overlaps {b!r}"


def test_one_suite_per_axes_and_a_colour_per_method(records):
    fig = plots.plot("throughput", records)
    titles = [a.get_title() for a in fig.axes if a.get_visible()]
    assert titles == ["C-Eval · 8 questions × 16 tokens", "MMLU · 8 questions × 16 tokens",
                      "SQuAD · 8 questions × 16 tokens"]
    look = style.styles(["sequential", "batch", "prefix", "rope2d r=0", "rope2d r=0.5"])
    assert [look[k]["color"] for k in ("sequential", "batch", "prefix", "rope2d r=0")] == [
        "#000000", "#E69F00", "#56B4E9", "#009E73"]  # Okabe-Ito, fixed per method
    assert look["rope2d r=0.5"]["color"] not in {v["color"] for k, v in look.items()
                                                 if k != "rope2d r=0.5"}
    assert len({(v["marker"], v["linestyle"]) for v in look.values()}) == len(look)


def test_throughput_has_log2_branch_axis_and_intervals(records):
    fig = plots.plot("throughput", records, suites=["squad"],
                     models=["smollm2-135m-instruct"])
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "4"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    # only the varying keys shown (the fixtures' sequential runs predate --context-cache)
    assert labels == ["sequential no-cache", "batch", "rope2d r=0"]
    assert fig.get_suptitle() == "smollm2-135m-instruct · float32, 2 threads, x86_64"
    rope = next(c for c in ax.containers if c.get_label() == "rope2d r=0")
    assert [round(y, 6) for y in rope.lines[0].get_ydata()] == [21.0, 70.0]
    bars = rope.lines[2][0].get_segments()  # 95% intervals of the median of 3 repeats
    assert [tuple(s[:, 1]) for s in bars] == [(20.0, 22.0), (68.0, 72.0)]


def test_runs_of_other_work_are_separate_series(records, tmp_path):
    """Two rope2d runs at #branch 4 with other question counts: two series, not one line
    with a vertical jump."""
    root = tmp_path / "r"
    shutil.copytree(FIXTURES, root)
    src = root / "20261126-090000-rope2d-squad-b4-1641" / "run.json"
    rec = json.loads(src.read_text())
    rec.update(run_id="more", limit=64, created="2026-11-30T09:00:00+00:00")
    rec["metrics"]["n"] = 64
    (root / "more").mkdir()
    (root / "more" / "run.json").write_text(json.dumps(rec))
    fig = plots.plot("throughput", load(root), suites=["squad"],
                     models=["smollm2-135m-instruct"])
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(lab.endswith("64 questions × 16 tokens") for lab in labels)
    for line in fig.axes[0].lines:
        xs = list(line.get_xdata())
        assert len(xs) == len(set(xs))  # one point per x in a series


def test_accuracy_is_a_forest_with_wilson_intervals_from_samples(tmp_path):
    from scipy import stats

    run = tmp_path / "r" / "acc"
    run.mkdir(parents=True)
    record = json.loads((FIXTURES / "20261126-110000-sequential-mmlu-b1-2921" / "run.json")
                        .read_text())
    record.update(ignore_eos=False, run_id="acc")
    record["metrics"] = {"acc": 0.3, "n": 20}
    (run / "run.json").write_text(json.dumps(record))
    (run / "samples.jsonl").write_text("".join(
        json.dumps({"doc_id": str(i), "acc": float(i < 6)}) + "\n" for i in range(20)))
    fig = plots.plot("accuracy", load(tmp_path / "r"))
    (bar,) = fig.axes[0].containers[0].lines[2][0].get_segments()
    ci = stats.binomtest(6, 20).proportion_ci(0.95, "wilson")
    assert tuple(bar[:, 0]) == pytest.approx((100 * ci.low, 100 * ci.high))
    # a record made before --context-cache: sequential that prefilled the context each time
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["sequential no-cache"]


def test_ratio_plot_groups_checkpoints_by_training(records):
    fig = plots.plot("ratio", records, suites=["mmlu"])
    series = {c.get_label(): c for c in fig.axes[0].containers}
    # the two pre-trained checkpoints differ in branch_freqs: two series, never one line
    a = series["pretrain · isolated mask · cpu-tiny · split/interleaved · #branch 4"]
    b = series["pretrain · isolated mask · cpu-tiny · split/high · #branch 4"]
    # accuracy of accuracy runs (their throughput runs say 50.0 and 62.5), dodged a little
    assert list(a.lines[0].get_xdata()) == pytest.approx([0.25], abs=0.05)
    assert list(a.lines[0].get_ydata()) == [56.25]
    assert list(b.lines[0].get_ydata()) == [68.75]
    assert "as shipped · cross mask · smollm2-135m-instruct · split/interleaved · #branch 4" \
        in series


def test_latency_shows_time_to_answer_p50_and_p99(tmp_path):
    root = tmp_path / "r"
    shutil.copytree(FIXTURES, root)
    for path in root.rglob("run.json"):
        rec = json.loads(path.read_text())
        if rec["suite"] == "squad" and not rec["ignore_eos"]:
            rec["question_latency"] = {"last_token_s": {"p50": 1.0 * rec["branch"],
                                                        "p90": 2.0, "p99": 3.0 * rec["branch"],
                                                        "max": 9.0}}
            path.write_text(json.dumps(rec))
    fig = plots.plot("latency", load(root), suites=["squad"], models=["smollm2-135m-instruct"])
    ax = fig.axes[0]
    bars = [p for c in ax.containers for p in getattr(c, "patches", [])]
    assert sorted(b.get_width() for b in bars) == [1.0, 1.0, 2.0, 4.0, 4.0]
    assert ax.get_xlabel() == "Time to answer (s): bar p50, whisker p99"
    with pytest.raises(BadInput, match="no per-question latencies"):
        plots.plot("latency", load(FIXTURES))


def test_cli_writes_the_three_files(tmp_path):
    out = tmp_path / "figs" / "tp.pdf"
    result = invoke("plot", "throughput", "--results", FIXTURES, "--output", out)
    assert result.exit_code == 0, result.output
    for suffix in (".pdf", ".png", ".svg"):
        assert out.with_suffix(suffix).stat().st_size > 0
    assert f"Records: 36 read from {FIXTURES}." in result.stdout


@pytest.mark.parametrize("args, message", [
    (["plot", "pie"], "unknown plot"),
    (["plot", "throughput", "--output", "x.jpg"], ".png, .pdf, .svg"),
    (["plot", "ratio", "--suite", "nosuch"], "no run records"),
])
def test_bad_input(args, message):
    result = invoke(*args, "--results", FIXTURES)
    assert isinstance(result.exception, BadInput)
    assert message in str(result.exception)
