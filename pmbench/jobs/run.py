"""One benchmark run: suite x method x model -> a run record.

Order of work: validate everything cheap first (names, numbers, data, code-execution
opt-in: jobs.prepare), then load the model, warm up on the first group, and time every group
`repeats` times back to back. Each finished group is written to disk at once, so an
interrupted run keeps its work and `--resume` continues it.

Timing: a group's wall time is its prefill plus decode time, measured by the shared
decoding loop (with device synchronisation on CUDA). Throughput per repeat is
tokens over the sum of group walls; the record holds the median over repeats, with
the min and max and every repeat's value.

run.json is a records.run_record.RunRecord: written with status "running" once the
model is loaded, and again when the run completes (or "interrupted" on Ctrl-C).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from pmbench.engine.compile import compile_counters
from pmbench.engine.compile import resolve as resolve_compile
from pmbench.engine.cpu_linear import MIN_ROWS, prepack_linears
from pmbench.engine.runners.base import Runner, RunnerOptions, warmup_groups
from pmbench.errors import BadInput
from pmbench.jobs.prepare import PreparedRun, prepare_run
from pmbench.jobs.spec import RunSettings, recorded_settings
from pmbench.jobs.summary import group_row, question_latency, sample_row, summarize_groups
from pmbench.measure.envinfo import env_fingerprint
from pmbench.measure.roofline import (
    machine_peaks,
    model_weights,
    roofline,
    step_roof,
    step_shape,
)
from pmbench.measure.telemetry import TelemetrySampler
from pmbench.records.run_record import RunRecord, method_blocks
from pmbench.records.store import RunStore, now_iso
from pmbench.types import GenerationConfig

__all__ = ["PreparedRun", "ProgressFn", "execute_run", "prepare_run"]  # prepare: jobs.prepare

ProgressFn = Callable[[int, int], None]  # (questions done, questions total)


def execute_run(s: RunSettings | PreparedRun, progress: ProgressFn | None = None,
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark described by `s`; return the run record (also written to disk).

    The run folder's lock (taken by prepare_run) is released when this returns or raises.
    """
    prepared = s if isinstance(s, PreparedRun) else prepare_run(s)
    try:
        return _execute(prepared, progress, log or (lambda msg: None)).to_dict()
    except KeyboardInterrupt:
        _mark_interrupted(prepared.store)
        raise
    finally:
        prepared.store.unlock()


def _mark_interrupted(store: RunStore) -> None:
    """A run stopped by Ctrl-C says so in its record (its finished groups stay on disk)."""
    try:
        record = store.read_run()
    except BadInput:
        return  # interrupted before its record was first written
    if record.status == "running":
        record.status = "interrupted"
        store.write_run(record)


@dataclass
class _Model:
    """What loading gave: the model (None for runners that load their own), where it runs,
    the end-of-text tokens and the LoadedModel (its name, path, weights, load time)."""

    model: Any
    device: str
    dtype: str
    eos: list[int]
    loaded: Any = None
    linear_kernel: str = "torch"


@dataclass
class _Timed:
    """The timed loop's output: this session's groups and samples, its wall time and
    the telemetry sampled over it."""

    samples: list[dict]
    groups: list[dict]
    seconds: float
    sampler: TelemetrySampler


@dataclass
class _Progress:
    """Questions done of the run's total (earlier sessions' included), for the caller."""

    done: int
    total: int
    report: ProgressFn | None

    def advance(self, n: int) -> None:
        self.done += n
        if self.report:
            self.report(self.done, self.total)


def _execute(prepared: PreparedRun, progress: ProgressFn | None,
             log: Callable[[str], None]) -> RunRecord:
    """Load, build the runner, write the record (status "running"), warm up, time every
    pending group, then write the record again, complete."""
    s, suite, store = prepared.settings, prepared.suite, prepared.store
    m = _load(prepared, log)
    gen: GenerationConfig = suite.generation(s.max_new_tokens, s.ignore_eos, m.eos)
    options = RunnerOptions(branch=s.branch, rope2d=dict(s.rope2d), model=s.model,
                            compile=s.compile, **s.method_options)
    runner: Runner = prepared.runner_cls(m.model, prepared.tokenizer, options)
    record = _started_record(prepared, m, runner, gen)
    store.write_run(record)

    done_samples, done_groups = store.load_done() if s.resume else ([], [])
    done_ids = {g["group_id"] for g in done_groups}
    pending = [g for g in suite.groups if g.group_id not in done_ids]
    n_total = sum(len(g.questions) for g in suite.groups)
    counter = _Progress(n_total - sum(len(g.questions) for g in pending), n_total, progress)
    counter.advance(0)
    before = compile_counters()
    if pending and s.warmup and prepared.runner_cls.needs_model:
        _warm_up(runner, pending, gen, record.compile in ("on", "static"), log)
    log("timed")
    warm = compile_counters()
    timed = _timed_loop(prepared, runner, gen, m, pending, counter, log)
    _summarize(record, prepared, m, done_samples + timed.samples, done_groups + timed.groups,
               timed)
    for key, value in _compile_record(record.compile, before, warm, compile_counters()).items():
        setattr(record, key, value)
    record.deterministic = all(g.get("deterministic", True)
                               for g in done_groups + timed.groups)
    record.status = "complete"
    record.finished = now_iso()
    store.write_run(record)
    return record


def _load(prepared: PreparedRun, log: Callable[[str], None]) -> _Model:
    """The model, on its device (prepacked for CPU when asked); a runner that loads its
    own model gets none and runs on "cpu" as far as the record goes."""
    from pmbench.engine.models import eos_token_ids, load_model

    s, tokenizer = prepared.settings, prepared.tokenizer
    if not prepared.runner_cls.needs_model:
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        return _Model(None, "cpu", "none", eos)
    log("loading model")
    loaded = load_model(s.model, s.device, s.dtype, s.device_map, s.attn_implementation)
    m = _Model(loaded.model, loaded.device, loaded.dtype, [], loaded)
    if s.cpu_prepack:
        t0 = time.perf_counter()
        if n_packed := prepack_linears(m.model):
            m.linear_kernel = f"onednn-prepacked x{n_packed} (>= {MIN_ROWS} rows)"
        loaded.load_s += time.perf_counter() - t0
    m.eos = eos_token_ids(m.model, tokenizer)
    return m


def _started_record(prepared: PreparedRun, m: _Model, runner: Runner,
                    gen: GenerationConfig) -> RunRecord:
    """The record as the run starts (status "running"): what ran, on what, how. A resumed
    run keeps its record's other keys and its `created`."""
    from pmbench.engine.models import describe_architecture

    s, runner_cls, loaded = prepared.settings, prepared.runner_cls, m.loaded
    previous = prepared.previous or RunRecord()
    name = runner.model_name()
    attn = getattr(getattr(m.model, "config", None), "_attn_implementation", None)
    return replace(
        previous,
        run_id=prepared.store.run_id,
        created=previous.created or now_iso(),
        method=s.method,
        branch=s.branch,
        suite=s.suite,
        model=name or (loaded.name if loaded else (s.model or "none")),
        model_path=loaded.path if loaded else s.model,
        weights=loaded.weights if loaded else ("pretrained" if name else None),
        architecture=describe_architecture(m.model) if loaded else None,
        limit=s.limit,
        max_new_tokens=gen.max_new_tokens,
        ignore_eos=s.ignore_eos,
        seed=s.seed,
        repeats=s.timed_repeats,
        dtype=m.dtype,
        device=m.device,
        status="running",
        settings=recorded_settings(s, runner_cls),
        suite_info=prepared.suite.record_info(),
        method_kind=runner_cls.kind,
        linear_kernel=m.linear_kernel,
        code_execution=prepared.code_execution,
        compile=resolve_compile(s.compile, m.device) if runner_cls.needs_model else "off",
        extras={**previous.extras, **method_blocks(s.method, runner.record_options())},
        env=env_fingerprint(m.device, m.dtype, attn),
        load_s=loaded.load_s if loaded else previous.load_s,
    )


def _warm_up(runner: Runner, pending: list, gen: GenerationConfig, static: bool,
             log: Callable[[str], None]) -> None:
    """Untimed runs of the first groups (a group of each bucket for a static compile, see
    base.py): first calls allocate, pick kernels, compile."""
    warm_up = warmup_groups(runner, pending, gen, static)
    log(f"warm-up ({len(warm_up)} group{'s' * (len(warm_up) > 1)}, untimed)")
    for group in warm_up:
        runner.run_group(group, gen.for_group(group))


def _timed_loop(prepared: PreparedRun, runner: Runner, gen: GenerationConfig, m: _Model,
                pending: list, counter: _Progress, log: Callable[[str], None]) -> _Timed:
    """Each pending group `repeats` times back to back, scored on its first repeat and
    appended to disk at once (an interrupted run keeps it)."""
    s, suite, store = prepared.settings, prepared.suite, prepared.store
    timed = _Timed([], [], 0.0, TelemetrySampler(device=m.device))
    timed.sampler.start()
    t_run = time.perf_counter()
    try:
        for group in pending:
            outs, elapsed = [], []
            for r in range(s.timed_repeats):
                if s.timed_repeats > 1:
                    log(f"timed, repeat {r + 1}/{s.timed_repeats}")
                start = time.perf_counter()
                outs.append(runner.run_group(group, gen.for_group(group)))
                elapsed.append(time.perf_counter() - start)
            scored = suite.score_all(
                group.questions, outs[0].outputs, allow_code_execution=s.allow_code_execution,
                allow_unisolated_code_execution=s.allow_unisolated_code_execution,
                eos_token_ids=m.eos)  # the model's own, as generation used them
            samples = [sample_row(group, k, [o.outputs[k] for o in outs], extra,
                                  suite.keeps_prompt_ids) for k, extra in enumerate(scored)]
            row = group_row(group, outs, elapsed)
            store.append_group(samples, row)
            timed.samples += samples
            timed.groups.append(row)
            counter.advance(len(group.questions))
    finally:
        timed.sampler.stop()
    timed.seconds = time.perf_counter() - t_run
    return timed


def _summarize(record: RunRecord, prepared: PreparedRun, m: _Model, samples: list[dict],
               groups: list[dict], timed: _Timed) -> None:
    """The results into `record`: metrics over every sample, throughput and latency over
    every group (earlier sessions' too), memory, telemetry and the roofline."""
    s = prepared.settings
    record.metrics = prepared.suite.aggregate(samples)
    summary = summarize_groups(groups, s.timed_repeats)
    record.throughput = summary["throughput"]
    record.latency = summary["latency"]
    record.tokens = summary.get("tokens")
    record.question_latency = question_latency(samples)
    # torch's CUDA peak (the sampler resets it at start) or the process RSS peak on CPU
    peak = torch.cuda.max_memory_allocated() if m.device.startswith("cuda") else None
    out_tokens_timed = sum(g["output_tokens"] for g in timed.groups) * s.timed_repeats
    record.telemetry = timed.sampler.summary(out_tokens_timed)
    record.memory = {
        "peak_bytes": record.telemetry.get("memory_peak_bytes") or peak,
        "kv_cache_bytes": max((g["kv_cache_bytes"] for g in groups), default=0),
    }
    record.roofline = _roofline(m.model, groups, m.device, m.dtype, summary)
    if record.roofline is not None:
        record.roofline["step"] = _step_roof(m.model, samples, prepared.runner_cls.step_reads,
                                             record.roofline, summary)
    record.resumed = bool(s.resume)
    record.timed_region_s = timed.seconds


def _compile_record(mode: str, before: tuple, warm: tuple, end: tuple) -> dict[str, Any]:
    """This run's share of the process-wide compile counters (compile.compile_counters):
    seconds of calls that compiled a graph before the timed region and (should be 0) in
    it; with the compiled step, CUDA graphs that ran without one (skips: 0 means every
    compiled step was one graph launch) and graphs recorded, in all and while timed
    (should be 0: the warm-up recorded each bucket)."""
    out = {"compile_s": warm[0] - before[0], "compile_s_timed": end[0] - warm[0]}
    if mode == "on":
        out |= {"cuda_graph_skips": end[1] - before[1],
                "cuda_graph_recordings": end[2] - before[2],
                "cuda_graph_recordings_timed": end[2] - warm[2]}
    return out


def _step_roof(model, samples: list[dict], reads: str, roof: dict, summary: dict) -> dict:
    """The decoding step against its own roof (measure/roofline.step_roof): the KV each
    method must read (the shared context once or per row) and the attention FLOPs, with
    the measured step's time and the roof's fraction of it."""
    by_group: dict[Any, list[tuple[int, int, int]]] = {}
    for row in samples:
        ctx = int(row.get("context_len") or 0)
        question = row.get("question_len", len(row.get("prompt_ids") or ()) - ctx)
        by_group.setdefault(row.get("group_id"), []).append(
            (ctx, int(question), len(row.get("output_ids") or ())))
    peaks = {"copy_bytes_s": roof["peak_bytes_s"], "matmul_flops": roof["peak_flops"]}
    out = step_roof(list(by_group.values()), reads, step_shape(model), peaks)
    decode_s = summary["latency"]["decode_s"]
    out["step_s"] = decode_s / out["steps"] if out["steps"] else None
    out["roof_fraction"] = out["roof_s"] / decode_s if decode_s and out["steps"] else None
    return out


def _roofline(model, groups, device, dtype, summary) -> dict | None:
    """Achieved FLOP/s and bandwidth vs. the machine's measured peaks (None if unknown)."""
    if model is None or not groups:
        return None
    if os.environ.get("PMBENCH_NO_ROOFLINE"):
        return None
    n_params, weight_bytes = model_weights(model)
    lat = summary["latency"]
    steps = sum(g["decode_steps"] for g in groups)

    def against(peaks: dict) -> dict:
        return roofline(
            n_params=n_params,
            tokens_processed=sum(g["tokens_processed"] for g in groups),
            decode_steps=steps,
            weight_bytes=weight_bytes,
            # each decoding step reads the whole cache once; half of the final size is a
            # fair average over a group's steps
            kv_bytes_read=sum(g["kv_cache_bytes"] * g["decode_steps"] // 2 for g in groups),
            wall_s=lat["wall_s"],
            decode_s=lat["decode_s"],
            peaks=peaks,
        )

    roof = against(machine_peaks(device, dtype))
    if max(roof["bandwidth_fraction"] or 0, roof["flops_fraction"] or 0) > 1:
        # a run beat the cached peak, so that peak was measured too low: measure again now
        roof = against(machine_peaks(device, dtype, refresh=True))
    return roof
