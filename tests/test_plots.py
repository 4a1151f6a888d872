"""pmbench plot: every kind writes a PNG of the expected size and a PDF, with labelled
axes, a legend, and no text overlapping other text or leaving the figure."""

from __future__ import annotations

from itertools import combinations

import matplotlib.image
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from test_tables import FIXTURES, invoke

from pmbench.errors import BadInput
from pmbench.report import plots
from pmbench.report.results import load

LABELS = {
    "throughput": ("#branch (questions per group)", "Output throughput (tokens/s)"),
    "accuracy": ("#branch (questions per group)", "Accuracy (%)"),
    "ratio": ("rope_2d_ratio (share of rotary pairs on the branch axis)", "Accuracy (%)"),
    "latency": ("Time per run (s)", "Method and #branch"),
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
        texts += [ax.xaxis.label, ax.yaxis.label]
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            texts += [t.label1 for t in axis.get_major_ticks()
                      if lo <= t.get_loc() <= hi and t.label1.get_visible() and t.label1.get_text()]
    for legend in fig.legends:
        texts += legend.get_texts()
    return [(t.get_text(), t.get_window_extent(renderer)) for t in texts], fig.bbox


@pytest.mark.parametrize("kind", list(plots.KINDS))
def test_each_kind_writes_png_and_pdf(records, tmp_path, kind):
    fig = plots.plot(kind, records)
    png, pdf = plots.save(fig, tmp_path / f"{kind}.png")
    assert pdf == tmp_path / f"{kind}.pdf" and pdf.read_bytes().startswith(b"%PDF")
    image = matplotlib.image.imread(png)
    width, height = fig.get_size_inches() * plots.DPI
    assert image.shape[:2] == (round(height), round(width))
    assert image.shape[1] == 1280  # 6.4 in at 200 dpi
    assert image[..., :3].std() > 0.05  # something was drawn, not a blank canvas

    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == LABELS[kind]
    assert len(fig.legends) == 1 and fig.legends[0].get_texts()

    texts, frame = drawn_texts(fig)
    for text, box in texts:
        assert frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1, f"{text!r} leaves the figure"
        assert frame.y0 - 1 <= box.y0 and box.y1 <= frame.y1 + 1, f"{text!r} leaves the figure"
    for (a, box_a), (b, box_b) in combinations(texts, 2):
        assert not box_a.overlaps(box_b), f"{a!r} overlaps {b!r}"


def test_throughput_has_log2_branch_axis_and_repeat_ranges(records):
    fig = plots.plot("throughput", records, suites=["squad"],
                     models=["smollm2-135m-instruct"])
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "4"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["batch", "rope2d r=0", "sequential"]  # only the varying keys shown
    rope = ax.containers[1]  # errorbar container of "rope2d r=0"
    assert list(rope.lines[0].get_ydata()) == [21.0, 70.0]
    bars = rope.lines[2][0].get_segments()  # repeat ranges [min, max]
    assert [tuple(s[:, 1]) for s in bars] == [(20.0, 22.0), (68.0, 72.0)]


def test_ratio_plot_groups_checkpoints_by_training_run(records):
    fig = plots.plot("ratio", records, suites=["mmlu"])
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "cpu-tiny (pretrain) · #branch 4" in labels
    line = next(ln for ln in fig.axes[0].lines if ln.get_label().startswith("cpu-tiny"))
    # accuracy of accuracy runs (their throughput runs say 50.0 and 62.5)
    assert list(line.get_xdata()) == [0.25, 0.5] and list(line.get_ydata()) == [56.25, 68.75]


def test_latency_bars_stack_prefill_and_decode(records):
    fig = plots.plot("latency", records, suites=["squad"], models=["smollm2-135m-instruct"])
    prefill, decode = fig.axes[0].containers
    assert len(prefill) == len(decode) == 5
    for p, d in zip(prefill, decode, strict=True):
        assert d.get_x() == pytest.approx(p.get_width())  # decode starts where prefill ends


def test_cli_writes_both_files(tmp_path):
    out = tmp_path / "figs" / "tp.pdf"
    result = invoke("plot", "throughput", "--results", FIXTURES, "--output", out)
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0 and out.with_suffix(".png").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["plot", "pie"], "unknown plot"),
    (["plot", "throughput", "--output", "x.svg"], ".png or .pdf"),
    (["plot", "ratio", "--suite", "nosuch"], "no run records"),
])
def test_bad_input(args, message):
    result = invoke(*args, "--results", FIXTURES)
    assert isinstance(result.exception, BadInput)
    assert message in str(result.exception)
