"""Attention analysis: grid statistics on attention of known structure, capture on a
tiny model through the rope2d runner, the (t, b) view of one step, and the figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import make_tiny_model
from pmbench.attention import plots as attention_plots
from pmbench.attention import tb_plots
from pmbench.attention.capture import AttentionRecorder
from pmbench.attention.grid import (
    MIN_KL,
    GridAccumulator,
    focus_scores,
    grid_cells,
    head_label,
    summarize,
)
from pmbench.attention.run import parse_indices
from pmbench.attention.style import grid_layers
from pmbench.attention.tb import tb_summary
from pmbench.engine.runners.base import RunnerOptions
from pmbench.engine.runners.rope2d import Rope2DRunner
from pmbench.errors import BadInput
from pmbench.rope2d import additive, dense_mask, pack, positions, rope2d_positions
from pmbench.types import GenerationConfig, Group, Question


def decoded_layout(context: int, lens: list[int], steps: int, kind: str):
    """(t, b, visible) of a packed prompt followed by `steps` decoding steps of every branch."""
    lay = pack(list(range(context)), [list(range(n)) for n in lens])
    t, b, step = lay.t.tolist(), lay.b.tolist(), [0] * len(lay)
    for s in range(1, steps + 1):
        for k, start in enumerate(lay.next_t().tolist()):
            t.append(start + s - 1)
            b.append(k + 1)
            step.append(s)
    t, b, step = (torch.tensor(x) for x in (t, b, step))
    return t, b, dense_mask(b, step, kind)


def synthetic_heads(t, b, visible):
    """[4, L, L]: a pure-time head, a pure-branch head, a context-only head, a uniform head."""
    dt = (t[:, None] - t[None, :]).abs().float()
    own = (b[None, :] == b[:, None]).float()
    ctx = (b[None, :] == 0).float().expand_as(own)

    def normalise(x):
        x = x * visible
        return x / x.sum(-1, keepdim=True)

    return torch.stack([normalise(torch.exp(-dt / 2)), normalise(own), normalise(ctx),
                        normalise(torch.ones_like(dt))])


def analyse(t, b, visible, weights, n_branches):
    q = b > 0
    acc = GridAccumulator([0], list(range(weights.shape[0])), n_branches)
    cells = grid_cells(t[q], b[q], t, b, n_branches)
    acc.add_queries(cells, visible[q], 0)
    acc.add(0, weights[:, q], cells, visible[q], (t == 0) & (b == 0), 0)
    return acc, summarize(acc.stats())


def test_grid_cells_buckets_and_columns():
    tq, bq = torch.tensor([10, 12]), torch.tensor([1, 3])
    tk, bk = torch.tensor([0, 9, 10, 11, 4]), torch.tensor([0, 1, 1, 2, 0])
    cells = grid_cells(tq, bq, tk, bk, n_branches=3)  # 4 columns: ctx, own, Δb=1, Δb=2
    # query (10, 1): |Δt| 10, 1, 0, 1, 6 -> buckets 5 (8-15), 1, 0, 1, 4 (4-7)
    assert cells[0].tolist() == [5 * 4 + 0, 1 * 4 + 1, 0 * 4 + 1, 1 * 4 + 2, 4 * 4 + 0]
    # query (12, 3): keys of branch 1 and 2 are at distance 2 and 1
    assert cells[1].tolist() == [5 * 4 + 0, 3 * 4 + 3, 2 * 4 + 3, 1 * 4 + 2, 5 * 4 + 0]


def test_focus_scores_on_hand_grids():
    uniform = torch.full((2, 2), 0.25)
    # all mass on the first |Δt| bucket, split evenly over columns: time explains everything
    kl, tf, bf = focus_scores(torch.tensor([[0.5, 0.5], [0.0, 0.0]]), uniform)
    assert kl.item() == pytest.approx(math.log(2))
    assert (tf.item(), bf.item()) == pytest.approx((1.0, 0.0))
    kl, tf, bf = focus_scores(torch.tensor([[0.5, 0.0], [0.5, 0.0]]), uniform)
    assert (tf.item(), bf.item()) == pytest.approx((0.0, 1.0))
    # uniform attention carries no structure: both scores 0 by definition
    kl, tf, bf = focus_scores(uniform.clone(), uniform)
    assert kl.item() < MIN_KL and tf.item() == bf.item() == 0.0


def test_head_labels():
    assert head_label(0.95, 0.9, 0.1) == "context"
    assert head_label(0.5, 0.9, 0.6) == "time"
    assert head_label(0.5, 0.7, 0.95) == "branch"
    assert head_label(0.5, 0.6, 0.62) == "mixed"


@pytest.mark.parametrize("kind", ["isolated", "cross"])
def test_known_heads_give_expected_statistics(kind):
    t, b, visible = decoded_layout(60, [5, 9, 13, 17], steps=12, kind=kind)
    acc, result = analyse(t, b, visible, synthetic_heads(t, b, visible), n_branches=4)
    assert acc.max_mass_error < 1e-6
    time_head, branch_head, ctx_head, flat_head = result["per_layer"][0]["heads"]

    assert time_head["label"] == "time"
    assert time_head["time_focus"] > 0.95
    assert time_head["time_focus"] - time_head["branch_focus"] > 0.3

    assert branch_head["label"] == "branch"
    assert branch_head["own_branch_mass"] == pytest.approx(1.0)
    assert branch_head["branch_focus"] > 0.95
    assert branch_head["context_mass"] == branch_head["other_branch_mass"] == 0.0

    assert ctx_head["label"] == "context"
    assert ctx_head["context_mass"] == pytest.approx(1.0)
    assert ctx_head["first_token_mass"] == pytest.approx(1 / 60, abs=1e-6)
    assert ctx_head["branch_focus"] > 0.95

    assert flat_head["label"] == "mixed"
    assert flat_head["kl"] < 1e-9
    assert result["summary"]["heads"] == {"time": 1, "branch": 1, "mixed": 1, "context": 1}
    for head in (time_head, branch_head, ctx_head, flat_head):
        total = head["context_mass"] + head["own_branch_mass"] + head["other_branch_mass"]
        assert total == pytest.approx(1.0)
    # only the cross mask lets a branch see other branches
    if kind == "isolated":
        assert time_head["other_branch_mass"] == 0.0
    else:
        assert time_head["other_branch_mass"] > 0.2


def test_parse_indices():
    assert parse_indices(None, 4, "layers") == [0, 1, 2, 3]
    assert parse_indices("0,2-3", 4, "layers") == [0, 2, 3]
    for bad in ("5", "a-b", "1-9"):
        with pytest.raises(BadInput):
            parse_indices(bad, 4, "layers")


# --- capture on a tiny model ----------------------------------------------------------------


class _Tok:
    def decode(self, ids, skip_special_tokens=False):
        return " ".join(map(str, ids))


@pytest.fixture(scope="module")
def eager_llama(tokenizer):
    model = make_tiny_model("llama", len(tokenizer), seed=3)
    model.config._attn_implementation = "eager"
    return model


def _groups():
    return [
        Group(0, list(range(100, 140)), [Question(str(i), list(range(200, 203 + 2 * i)))
                                         for i in range(3)]),
        Group(1, list(range(300, 325)), [Question(str(i), list(range(400, 405 + i)))
                                         for i in range(3)]),
    ]


def _capture(model, mask, steps=5, layers=(0, 1), heads=(0, 1, 2, 3), tb_step=1):
    runner = Rope2DRunner(model, _Tok(), RunnerOptions(branch=3, rope2d={"mask": mask}))
    recorder = AttentionRecorder(list(layers), list(heads), n_branches=3, tb_step=tb_step)
    gen = GenerationConfig(max_new_tokens=steps, ignore_eos=True)
    with recorder.attach(model):
        for group in _groups():
            runner.run_group(group, gen)
    return recorder


@pytest.mark.parametrize("mask", ["isolated", "cross"])
def test_capture_masses_sum_to_one(eager_llama, mask):
    recorder = _capture(eager_llama, mask)
    acc = recorder.acc
    prompt_tokens = sum(len(q.prompt_ids) for g in _groups() for q in g.questions)
    # prompt tokens in the packed prefill; (steps - 1) decoding steps of 3 branches per group
    assert acc.queries.tolist() == [prompt_tokens, 2 * 3 * 4]
    assert acc.max_mass_error < 1e-5
    stats = acc.stats()
    assert torch.allclose(stats.mass.sum((-2, -1)), torch.ones(2, 4, dtype=torch.float64))
    assert stats.uniform.sum().item() == pytest.approx(1.0)
    result = summarize(stats)
    other = [h["other_branch_mass"] for layer in result["per_layer"] for h in layer["heads"]]
    if mask == "isolated":
        assert all(x == 0.0 for x in other)
        assert stats.uniform[:, 2:].sum() == 0  # no other-branch key is ever visible
    else:
        assert min(other) > 0.0
    # hooks are gone afterwards
    assert not eager_llama.model.layers[0].self_attn._forward_hooks


def test_capture_needs_eager_attention(tokenizer):
    model = make_tiny_model("llama", len(tokenizer), seed=3)  # sdpa returns no weights
    with pytest.raises(BadInput, match="eager"):
        _capture(model, "isolated", steps=2)


# --- the (t, b) view of one step ---------------------------------------------------------------


@pytest.mark.parametrize("mask", ["isolated", "cross"])
@pytest.mark.parametrize("step", [0, 1, 3])
def test_tb_step_rows(eager_llama, mask, step):
    """Each query of the step spreads exactly its mass over the keys it may see: context and
    own row; under cross also other rows, but only keys of earlier steps."""
    tb = _capture(eager_llama, mask, tb_step=step).tb
    group = _groups()[0]  # the first group reaches every step (ignore_eos)
    lay = pack(group.context_ids, [q.prompt_ids for q in group.questions])
    assert (tb.group, tb.step, tb.layers, tb.heads) == (0, step, [0, 1], [0, 1, 2, 3])
    assert tb.query_b.tolist() == [1, 2, 3]
    # step 0: each branch's last prompt token; step k: the k-th generated token fed back
    assert tb.query_t.tolist() == (lay.next_t() + step - 1).tolist()
    assert tb.key_t.numel() == len(lay) + 3 * step  # the cache at that step, nothing more
    key_step = torch.cat([torch.zeros(len(lay), dtype=torch.long),
                          torch.arange(1, step + 1).repeat_interleave(3)])
    sums = tb.mass.sum(-1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    for j, bq in enumerate(tb.query_b.tolist()):
        mass = tb.mass[:, :, j]  # [L, H, K]
        other = (tb.key_b != 0) & (tb.key_b != bq)
        if mask == "isolated" or step == 0:  # the prompts never see each other
            assert (mass[..., other] == 0).all()
            assert not tb.visible[j, other].any()
        else:
            assert (mass[..., other & (key_step >= step)] == 0).all()
            assert (mass[..., other & (key_step < step)] > 0).all()
        own_or_ctx = ~other & (tb.key_t <= tb.query_t[j])
        assert tb.visible[j, own_or_ctx].all() and (mass[..., own_or_ctx] > 0).all()


def test_tb_step_never_reached(eager_llama):
    # 5 new tokens take 4 decoding steps: step 5 never happens in any group
    assert _capture(eager_llama, "isolated", tb_step=5).tb is None
    assert _capture(eager_llama, "isolated", tb_step=None).tb is None


def test_tb_summary_record(eager_llama):
    import json

    tb = _capture(eager_llama, "cross", tb_step=2).tb
    out = json.loads(json.dumps(tb_summary(tb, per_head=True)))
    assert out["figure_layer"] == 1  # the middle of layers [0, 1]
    n_keys = len(out["keys"]["t"])
    assert len(out["mass"]) == 2 and len(out["mass"][0]) == 3 and len(out["mass"][0][0]) == n_keys
    assert len(out["head_mass"]) == 2 and len(out["head_mass"][0]) == 4
    for j, row in enumerate(out["mass"][1]):
        assert [v is None for v in row] == (~tb.visible[j]).tolist()
        assert sum(v for v in row if v is not None) == pytest.approx(1.0, abs=1e-4)
    for row in out["head_mass"][0]:  # mean over queries: null only where no query sees the key
        assert [v is None for v in row] == (~tb.visible.any(0)).tolist()
        assert sum(v for v in row if v is not None) == pytest.approx(1.0, abs=1e-4)
    assert "head_mass" not in tb_summary(tb)
    assert tb_summary(tb, layer=0)["figure_layer"] == 0
    with pytest.raises(BadInput, match="--tb-layer"):
        tb_summary(tb, layer=5)


def test_query_mean_counts_hidden_keys_as_zero():
    mean = tb_plots.query_mean([[0.5, 0.5, None, None], [0.5, None, 0.5, None]])
    assert mean[:3].tolist() == [0.5, 0.25, 0.25] and math.isnan(mean[3])


# --- figures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def analyses(eager_llama):
    """Two models' analyses; only the second keeps the (t, b) view per head."""
    one = _capture(eager_llama, "isolated")
    two = _capture(eager_llama, "cross", heads=(0, 2))
    return [{"model": "tiny-isolated", **summarize(one.acc.stats()), "tb": tb_summary(one.tb)},
            {"model": "tiny-cross", **summarize(two.acc.stats()),
             "tb": tb_summary(two.tb, per_head=True)}]


@pytest.mark.parametrize("n_models", [1, 2])
def test_figure_panels(analyses, n_models):
    shown = analyses[:n_models]
    fig = attention_plots.heatmaps(shown)
    assert len(fig.axes) == 4 * n_models + 1  # 4 heatmaps per model + colour bar
    assert fig.axes[-1].get_ylabel() == "attention mass per branch query"
    fig = attention_plots.heatmap_grid(shown)
    panels = sum(len(a["per_layer"]) * len(a["grid"]["heads"]) for a in shown)
    assert len(fig.axes) == panels + 1
    fig = attention_plots.focus_scatter(shown)
    assert len(fig.axes) == n_models + 1
    assert fig.axes[-1].get_ylabel() == "layer"
    fig = attention_plots.layer_curves(shown)
    assert len(fig.axes) == 2 * n_models
    # (t, b): a panel per layer, per query branch, per head; a colour bar per model
    fig = tb_plots.tb_heatmap(shown)
    assert len(fig.axes) == (2 + 1) * n_models
    assert fig.axes[0].get_title().split("\n")[0] == "L0"
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["ctx", "b1", "b2", "b3"]
    fig = tb_plots.tb_branches(shown)
    assert len(fig.axes) == (3 + 1) * n_models
    assert fig.axes[0].get_title().startswith("query b1")
    fig = tb_plots.tb_heads(analyses[1:])
    assert len(fig.axes) == 2 + 1


def test_tb_image_layout(analyses):
    """Row b, column t: the context row ends where the branch rows begin; hidden keys grey."""
    tb = analyses[0]["tb"]  # isolated
    image = tb_plots._tb_image(tb, tb["mass"][0][0])  # query branch 1
    start = min(t for t, b in zip(tb["keys"]["t"], tb["keys"]["b"], strict=True) if b)
    assert image.shape == (4, max(tb["keys"]["t"]) + 1)
    assert not np.isnan(image[0, :start]).any() and np.isnan(image[0, start:]).all()
    assert not np.isnan(image[1, start:tb["queries"]["t"][0] + 1]).any()
    assert np.isnan(image[2:]).all()  # other branches: hidden under the isolated mask


def _tb_keys(context: int, lens: list[int]) -> dict:
    """A `tb` block's keys and queries: the context, then branch k's tokens from t = context."""
    t = [*range(context), *(context + i for n in lens for i in range(n))]
    b = [0] * context + [k for k, n in enumerate(lens, start=1) for _ in range(n)]
    return {"keys": {"t": t, "b": b},
            "queries": {"t": [context + n - 1 for n in lens], "b": list(range(1, len(lens) + 1))}}


def test_tb_axis_breaks_a_long_context():
    """The keys from 2 before the branches on, one column each; the context before them
    compressed into half that width, past a gap, in bins that keep their largest key."""
    axis = tb_plots.TBAxis(_tb_keys(180, [20, 20, 16, 16]))
    assert (axis.start, axis.zoom, axis.end, axis.ctx_width) == (180, 178, 200, 11.0)
    x = axis.x(np.arange(axis.end))
    assert (np.diff(x) > 0).all() and np.allclose(np.diff(x[178:]), 1)
    assert x[177] < axis.ctx_width - 0.5 < axis.ctx_width + axis.gap - 0.5 < x[178]
    assert x[0] > -0.5 and x[-1] < axis.limits()[1]
    where, labels = axis.ticks()
    assert labels[0] == "0" and "180" in labels and where == sorted(where)
    assert all(axis.limits()[0] < w < axis.limits()[1] for w in where)
    image = np.full((5, 200), 1e-3)
    image[0, 0] = 0.5  # the first token
    image[1:, :180] = np.nan
    ctx = axis.compress(image)
    assert ctx.shape == (5, 178) and axis.bin > 1
    assert (ctx[0, :axis.bin] == 0.5).all() and (ctx[0, axis.bin:] == 1e-3).all()
    assert np.isnan(ctx[1:]).all()
    assert "compressed" in axis.label()


def test_tb_axis_keeps_a_short_context():
    axis = tb_plots.TBAxis(_tb_keys(4, [3, 5]))
    assert axis.zoom == 0 and axis.limits() == (-0.5, 8.5)
    assert axis.x([0, 3, 8]).tolist() == [0, 3, 8]
    assert "compressed" not in axis.label()


def test_tb_shares(analyses):
    """Context, own row and other rows add up to the query's mass; `other` is left out
    where the mask hides every other branch's key."""
    for analysis, mask in zip(analyses, ("isolated", "cross"), strict=True):
        tb = analysis["tb"]
        for mass, b in zip(tb["mass"][0], tb["queries"]["b"], strict=True):
            shares = tb_plots.tb_shares(tb, mass, b)
            assert (shares["other"] is None) == (mask == "isolated")
            assert sum(v or 0 for v in shares.values()) == pytest.approx(1, abs=1e-4)
    tb = analyses[1]["tb"]
    shares = tb_plots.tb_shares(tb, tb["head_mass"][0][0])
    assert set(shares) == {"ctx", "branches"}
    assert sum(shares.values()) == pytest.approx(1, abs=1e-4)
    title = tb_plots.tb_branches(analyses[1:]).axes[0].get_title()
    assert title.split("\n")[1].startswith("ctx .") and " · own ." in title


def test_grid_layers_subsample():
    assert grid_layers(5, rows=8) == [0, 1, 2, 3, 4]
    shown = grid_layers(30, rows=8)
    assert len(shown) == 8 and shown[0] == 0 and shown[-1] == 29


def test_write_figures_without_tb_data(analyses, tmp_path):
    names = attention_plots.write_figures([{**analyses[0], "tb": None}], tmp_path)
    assert sorted({n.rsplit(".", 1)[0] for n in names}) == sorted(attention_plots.FIGURES)
    names = attention_plots.write_figures(analyses[:1], tmp_path)  # no per-head view
    assert "tb_branches.png" in names and "tb_heads.png" not in names


def test_write_figures(analyses, tmp_path):
    names = attention_plots.write_figures(analyses, tmp_path)
    drawn = [*attention_plots.FIGURES, *tb_plots.TB_FIGURES]
    assert sorted(names) == sorted(f"{n}.{ext}" for n in drawn for ext in ("png", "pdf"))
    for name in names:
        data = (tmp_path / name).read_bytes()
        assert len(data) > 1000
        assert data.startswith(b"\x89PNG" if name.endswith(".png") else b"%PDF")


def test_redraw_from_records(analyses, tmp_path):
    """A finished run's figures drawn again from its records alone; the records untouched."""
    import json

    (tmp_path / "compare").mkdir()
    records = {tmp_path / "attention.json": analyses[0],
               tmp_path / "compare" / "attention.json": analyses[1]}
    for path, analysis in records.items():
        path.write_text(json.dumps(analysis))
    before = {path: path.read_bytes() for path in records}
    names = attention_plots.redraw(tmp_path)
    assert {"tb_branches.png", "tb_heads.pdf"} <= set(names)
    assert all((tmp_path / n).exists() for n in names)
    assert {path: path.read_bytes() for path in records} == before


@pytest.mark.parametrize("mask", ["isolated", "cross"])
def test_capture_matches_one_dense_pass(eager_llama, mask):
    """The step-by-step capture (cache, per-step masks) equals one forward pass over the
    whole decoded sequence with the dense mask of the same layout."""
    steps = 4
    group = _groups()[0]
    runner = Rope2DRunner(eager_llama, _Tok(), RunnerOptions(branch=3, rope2d={"mask": mask}))
    recorder = AttentionRecorder([0, 1], [0, 1, 2, 3], n_branches=3)
    with recorder.attach(eager_llama):
        out = runner.run_group(group, GenerationConfig(max_new_tokens=steps, ignore_eos=True))

    lay = pack(group.context_ids, [q.prompt_ids for q in group.questions])
    ids, t, b, step = lay.input_ids.tolist(), lay.t.tolist(), lay.b.tolist(), [0] * len(lay)
    for s in range(1, steps):  # the last token of each branch is never fed back
        for k, start in enumerate(lay.next_t().tolist()):
            ids.append(out.outputs[k].output_ids[s - 1])
            t.append(start + s - 1)
            b.append(k + 1)
            step.append(s)
    ids, t, b, step = (torch.tensor(x) for x in (ids, t, b, step))
    dense = additive(dense_mask(b, step, mask), torch.float32)
    whole = AttentionRecorder([0, 1], [0, 1, 2, 3], n_branches=3)
    with torch.no_grad(), rope2d_positions(eager_llama, runner.settings), \
            whole.attach(eager_llama):
        eager_llama(input_ids=ids[None], position_ids=positions(t, b),
                    attention_mask=dense[None, None])
    a, b_ = recorder.acc.stats(), whole.acc.stats()
    assert a.n_queries == b_.n_queries
    assert torch.allclose(a.uniform, b_.uniform, atol=1e-12)
    assert torch.allclose(a.mass, b_.mass, atol=1e-5)
    assert torch.allclose(a.first_token, b_.first_token, atol=1e-5)


# --- the command ------------------------------------------------------------------------------


def test_attn_command_writes_records_table4_reads(tokenizer, tmp_path):
    import json

    from typer.testing import CliRunner

    from pmbench.cli import app
    from pmbench.report import results, tables

    for name, seed in (("tiny-a", 3), ("tiny-b", 4)):
        make_tiny_model("llama", len(tokenizer), seed=seed).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    out = tmp_path / "results"
    args = ["attn", "--suite", "squad", "--branch", "2", "--limit", "4", "--max-new-tokens", "3",
            "--model", str(tmp_path / "tiny-a"), "--compare", str(tmp_path / "tiny-b"),
            "--mask", "cross", "--layers", "1", "--output-dir", str(out), "--run-id", "att",
            "--tb-heads"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    record = json.loads((out / "att" / "attention.json").read_text())
    assert record["kind"] == "attention" and record["model"] == "tiny-a"
    assert record["rope2d"]["mask"] == "cross"
    assert [x["layer"] for x in record["per_layer"]] == [1]
    assert sum(record["summary"]["heads"].values()) == 4  # 1 layer x 4 heads
    assert record["compare"]["model"] == "tiny-b"
    assert record["n_groups"] == 2 and record["n_questions"] == 4
    for name in record["figures"]:
        assert (out / "att" / name).stat().st_size > 1000
    # the (t, b) view: step 1 of the first group, for the captured layer, per head too
    tb = record["tb"]
    assert (tb["step"], tb["group"], tb["layers"], tb["figure_layer"]) == (1, 0, [1], 1)
    assert tb["queries"]["b"] == [1, 2] and len(tb["head_mass"][0]) == 4
    assert {"tb_heatmap.png", "tb_branches.pdf", "tb_heads.png"} <= set(record["figures"])
    assert record["settings"]["tb_step"] == 1
    compared = json.loads((out / "att" / "compare" / "attention.json").read_text())
    assert compared["tb"]["step"] == 1
    # both records are valid for the tables, one row per model
    loaded = results.load(out)
    assert not loaded.skipped and len(loaded.attention) == 2
    table = tables.table4(loaded)
    assert sorted(table.data[("", "Model")]) == ["tiny-a", "tiny-b"]
    # same run id again: refused with a one-line error
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "already exists" in res.output
    # a step past the last decoding step, or a layer not captured: refused before the run
    for extra, message in ((["--tb-step", "3"], "last decoding step is 2"),
                           (["--tb-layer", "0"], "not among the captured layers")):
        res = CliRunner().invoke(app, [*args[:-3], "--run-id", "att2", *extra])
        assert res.exit_code == 2 and message in res.output, res.output
