"""llamacpp: the same groups through llama.cpp, the way a CPU user would run them.

The shared context is evaluated once as sequence 0 and copied to sequences 1..N-1
(`llama_memory_seq_cp`: in llama.cpp's unified KV cache a copy tags the same cells
with more sequence ids, no data moves); the N questions are evaluated together, one
sequence each; then every decoding step is one `llama_batch` with one token per live
sequence. Token choice, stopping and timing are pmbench's shared loop
(`decode_loop`), so this method differs from the others only in its forward passes.

The model is the GGUF file itself: for the default model, the 4-bit (Q4_1) file that
the torch methods dequantize to float32, so llama.cpp reads about a sixth of the weight
bytes per step and rounds differently. Threads: torch's thread count (`--threads`),
so both stacks get the same cores.
"""

from __future__ import annotations

import ctypes
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pmbench.engine.decoding import decode_loop
from pmbench.engine.runners.base import Runner, RunnerOptions, RunnerUnavailable
from pmbench.errors import BadInput
from pmbench.types import GenerationConfig, Group, GroupOutput

INSTALL_HINT = "pip install 'pmbench[llamacpp]'"
N_BATCH = 2048  # tokens per llama_decode call (llama.cpp's default); longer inputs are chunked
MIN_CTX = 4096  # KV cells allocated up front; grown (context re-created) when a group needs more


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise RunnerUnavailable(INSTALL_HINT) from None
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # its log callback's filter
    return llama_cpp


def find_gguf(tokenizer: Any, options: RunnerOptions) -> Path:
    """The GGUF file to run: `--model X.gguf` (or the default model's GGUF).

    pmbench loads a GGUF's tokenizer from its converted cache folder, which records the
    source file in SOURCE; an HF folder without one cannot be run by llama.cpp.
    """
    from pmbench.engine.models import default_gguf

    explicit = options.model
    if explicit and str(explicit).endswith(".gguf"):
        return Path(explicit)
    source = Path(getattr(tokenizer, "name_or_path", "") or ".") / "SOURCE"
    if source.is_file():
        return Path(source.read_text(encoding="utf-8").strip())
    name = explicit or getattr(tokenizer, "name_or_path", "")
    if name:
        raise BadInput(f"the llamacpp method needs a GGUF model: --model FILE.gguf (got {name})")
    return default_gguf()


class LlamaCppEngine:
    """A llama.cpp model and context with N sequences over one unified KV cache (ctypes)."""

    def __init__(self, gguf: Path, n_ctx: int, n_seq: int, n_threads: int):
        lc = self.lc = _llama_cpp()
        lc.llama_backend_init()
        params = lc.llama_model_default_params()
        self.model = lc.llama_model_load_from_file(str(gguf).encode(), params)
        if not self.model:
            raise BadInput(f"llama.cpp cannot load {gguf}")
        self.vocab = lc.llama_model_get_vocab(self.model)
        self.n_vocab = lc.llama_vocab_n_tokens(self.vocab)
        desc = ctypes.create_string_buffer(256)
        lc.llama_model_desc(self.model, desc, len(desc))
        self.desc = desc.value.decode(errors="replace")
        n_embd, n_head = lc.llama_model_n_embd(self.model), lc.llama_model_n_head(self.model)
        # K and V, f16 (llama.cpp's default cache type), for every layer
        self.kv_bytes_per_token = (2 * 2 * lc.llama_model_n_layer(self.model)
                                   * lc.llama_model_n_head_kv(self.model) * (n_embd // n_head))
        self.n_threads = n_threads
        self.ctx = None
        self.batch = lc.llama_batch_init(N_BATCH, 0, 1)
        self.reserve(n_ctx, n_seq)

    def reserve(self, n_ctx: int, n_seq: int) -> None:
        """(Re)create the context if it has fewer than `n_ctx` cells or `n_seq` sequences."""
        if self.ctx is not None and self.n_ctx >= n_ctx and self.n_seq >= n_seq:
            return
        lc = self.lc
        if self.ctx is not None:
            lc.llama_free(self.ctx)
            self.ctx = None
        params = lc.llama_context_default_params()
        params.n_ctx = self.n_ctx = max(n_ctx, MIN_CTX)
        params.n_batch = N_BATCH
        params.n_seq_max = self.n_seq = max(n_seq, 1)
        params.n_threads = params.n_threads_batch = self.n_threads
        params.kv_unified = True  # one cache shared by all sequences: the context is stored once
        self.n_ubatch = params.n_ubatch
        self.ctx = lc.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {self.n_ctx} cells")
        self.mem = lc.llama_get_memory(self.ctx)

    def clear(self) -> None:
        self.lc.llama_memory_clear(self.mem, True)

    def seq_cp(self, src: int, dst: int, p0: int, p1: int) -> None:
        self.lc.llama_memory_seq_cp(self.mem, src, dst, p0, p1)

    def fill(self, rows: list[tuple[int, int, int, bool]]) -> None:
        """Put (token, position, sequence, wants logits) rows, at most N_BATCH, in the batch."""
        b = self.batch
        for i, (tok, pos, seq, logits) in enumerate(rows):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits
        b.n_tokens = len(rows)

    def decode(self, rows: list[tuple[int, int, int, bool]]) -> np.ndarray:
        """Evaluate (token, position, sequence, wants logits) rows, chunked by N_BATCH.

        Returns the logits of the flagged rows, in row order: [n_flagged, vocab] float32.
        """
        out = []
        for start in range(0, len(rows), N_BATCH):
            chunk = rows[start:start + N_BATCH]
            self.fill(chunk)
            rc = self.lc.llama_decode(self.ctx, self.batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed with code {rc} ({self.n_ctx} cells)")
            flagged = [i for i, row in enumerate(chunk) if row[3]]
            if len(flagged) == len(chunk):  # decoding steps: one contiguous copy
                ptr = self.lc.llama_get_logits(self.ctx)
                out.append(np.ctypeslib.as_array(ptr, shape=(len(chunk), self.n_vocab)).copy())
            else:
                for i in flagged:
                    ptr = self.lc.llama_get_logits_ith(self.ctx, i)
                    out.append(np.ctypeslib.as_array(ptr, shape=(1, self.n_vocab)).copy())
        if not out:
            return np.zeros((0, self.n_vocab), dtype=np.float32)
        return np.concatenate(out)

    def close(self) -> None:
        lc = self.lc
        if getattr(self, "batch", None) is not None:
            lc.llama_batch_free(self.batch)
            self.batch = None
        if getattr(self, "ctx", None):
            lc.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            lc.llama_model_free(self.model)
            self.model = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class LlamaCppRunner(Runner):
    name = "llamacpp"
    description = "llama.cpp peer: context once, copied to N sequences, N tokens per step"
    needs_model = False

    @classmethod
    def check_available(cls) -> None:
        _llama_cpp()

    def __init__(self, model: Any, tokenizer: Any, options: RunnerOptions | None = None):
        super().__init__(model, tokenizer, options)
        self.gguf = find_gguf(tokenizer, self.options)
        self.engine = LlamaCppEngine(self.gguf, MIN_CTX, self.options.branch,
                                     torch.get_num_threads())
        self._warm_up()

    def _warm_up(self) -> None:
        """Untimed first passes (thread pool, compute buffers, weight pages from disk):
        pmbench's own warm-up only runs for methods that load a torch model."""
        n = self.engine.n_seq
        self.engine.clear()
        self.engine.decode([(1 + k, k, 0, k == 7) for k in range(8)])
        for k in range(1, n):
            self.engine.seq_cp(0, k, 0, 8)
        for step in range(2):
            self.engine.decode([(1, 8 + step, k, True) for k in range(n)])
        self.engine.clear()

    def model_name(self) -> str:
        from pmbench.engine.models import DEFAULT_MODEL, default_gguf

        try:
            is_default = self.gguf.resolve() == default_gguf().resolve()
        except BadInput:
            is_default = False
        return DEFAULT_MODEL if is_default else self.gguf.name

    def record_options(self) -> dict[str, Any]:
        import llama_cpp

        return {
            "llamacpp": {
                "gguf": str(self.gguf),
                "model_desc": self.engine.desc,
                "llama_cpp_python": getattr(llama_cpp, "__version__", None),
                "n_threads": self.engine.n_threads,
                "n_batch": N_BATCH,
                "n_ubatch": self.engine.n_ubatch,
                "kv_unified": True,
                "kv_cache_type": "f16",
            },
        }

    def run_group(self, group: Group, gen: GenerationConfig) -> GroupOutput:
        context = list(group.context_ids)
        questions = [list(q.prompt_ids) for q in group.questions]
        if context and not all(questions):
            # a question needs a token of its own for its first logits: give every question
            # the context's last token (same ids, same positions, same numbers)
            questions = [context[-1:] + q for q in questions]
            context = context[:-1]
        if not all(questions):
            raise BadInput(f"group {group.group_id}: a question without any token")
        n, p = len(questions), len(context)
        prompt_tokens = p + sum(len(q) for q in questions)
        eng = self.engine
        eng.reserve(prompt_tokens + n * gen.max_new_tokens, n)
        eng.clear()
        pos = [p + len(q) for q in questions]
        t0 = time.perf_counter()

        def prefill() -> torch.Tensor:
            if context:
                eng.decode([(tok, t, 0, False) for t, tok in enumerate(context)])
                for k in range(1, n):
                    eng.seq_cp(0, k, 0, p)
            rows = [(tok, p + j, k, j == len(q) - 1)
                    for k, q in enumerate(questions) for j, tok in enumerate(q)]
            return torch.from_numpy(eng.decode(rows))

        def step(live: list[int], tokens: torch.Tensor) -> torch.Tensor:
            rows = [(tok, pos[k], k, True) for k, tok in zip(live, tokens.tolist(), strict=True)]
            for k in live:
                pos[k] += 1
            return torch.from_numpy(eng.decode(rows))

        res = decode_loop(prefill, step, n, gen, self.tokenizer, "cpu", t0=t0)
        cells = prompt_tokens + res.step_tokens
        return GroupOutput(
            res.outputs,
            res.prefill_s,
            res.decode_s,
            kv_cache_bytes=cells * eng.kv_bytes_per_token,
            tokens_processed=cells,
            decode_steps=res.steps,
        )
