"""The llamacpp peer runner: install hint, and agreement with llama.cpp's own greedy output."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from typer.testing import CliRunner

from pmbench.types import GenerationConfig

N_QUESTIONS, N_BRANCH, N_TOKENS = 8, 4, 10
# Two top logits closer than this may swap between batched and one-at-a-time kernels
# (llama.cpp quantizes activations to 8 bits per block for Q4_1 weights, and its matmul
# paths depend on the batch size); a divergence after a wider gap is a bug.
MARGIN = 0.5


def test_missing_llama_cpp_gives_the_install_hint(monkeypatch):
    from pmbench.cli import app
    from pmbench.engine.runners.base import RunnerUnavailable
    from pmbench.engine.runners.llamacpp import LlamaCppRunner

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp -> ImportError
    with pytest.raises(RunnerUnavailable, match=r"pip install 'pmbench\[llamacpp\]'"):
        LlamaCppRunner.check_available()
    listing = " ".join(CliRunner().invoke(app, ["methods"]).stdout.split())  # undo wrapping
    line = listing[listing.index("llamacpp:"):listing.index("oracle")]
    assert "not installed" in line and "pip install 'pmbench[llamacpp]'" in line, line


def _reference(llm, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
    """llama.cpp's own greedy decoding of one question (Llama.generate, temp 0), with the
    gap between the two best logits at every step."""
    llm.reset()
    out: list[int] = []
    for tok in llm.generate(prompt, temp=0.0, repeat_penalty=1.0, reset=True):
        out.append(tok)
        if len(out) == n:
            break
    rows = torch.from_numpy(llm.scores[len(prompt) - 1: len(prompt) - 1 + n].copy())
    top2 = rows.topk(2, dim=-1).values
    assert rows.argmax(dim=-1).tolist() == out  # the scores are what greedy picked from
    return out, (top2[:, 0] - top2[:, 1]).tolist()


@pytest.fixture
def one_thread():
    """One thread for both sides: llama.cpp's OpenMP barriers spin, and on a shared 2-core
    CI machine two spinning threads can be 10x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_agrees_with_one_question_at_a_time_greedy(tokenizer, one_thread):
    llama_cpp = pytest.importorskip("llama_cpp")
    from pmbench.engine.models import default_gguf
    from pmbench.engine.runners.base import RunnerOptions
    from pmbench.engine.runners.llamacpp import LlamaCppRunner
    from pmbench.suites import load_suite

    suite = load_suite("squad", tokenizer, branch=N_BRANCH, limit=N_QUESTIONS)
    runner = LlamaCppRunner(None, tokenizer, RunnerOptions(branch=N_BRANCH))
    gen = GenerationConfig(max_new_tokens=N_TOKENS, ignore_eos=True)
    llm = llama_cpp.Llama(model_path=str(default_gguf()), n_ctx=2048, logits_all=True,
                          n_threads=1, n_threads_batch=1, verbose=False)
    assert runner.engine.n_threads == 1

    compared = diverged = 0
    notes = []
    for group in suite.groups:
        got = runner.run_group(group, gen)
        assert got.decode_steps == N_TOKENS - 1
        assert got.tokens_processed == (len(group.context_ids)
                                        + sum(len(q.prompt_ids) for q in group.questions)
                                        + len(group.questions) * (N_TOKENS - 1))
        for q, out in zip(group.questions, got.outputs, strict=True):
            ref, gaps = _reference(llm, group.context_ids + q.prompt_ids, N_TOKENS)
            compared += 1
            assert len(out.output_ids) == N_TOKENS
            if out.output_ids == ref:
                continue
            at = next(i for i, (a, b) in enumerate(zip(out.output_ids, ref, strict=True)) if a != b)
            diverged += 1
            notes.append(f"{q.doc_id}: diverges at token {at}, top-2 gap {gaps[at]:.4f}")
            assert gaps[at] < MARGIN, notes[-1]
    llm.close()
    assert compared == N_QUESTIONS
    if notes:
        warnings.warn("llamacpp vs one-at-a-time: " + "; ".join(notes), stacklevel=1)
    # near-ties are rare: most answers must match token for token
    assert diverged <= compared // 4, notes
