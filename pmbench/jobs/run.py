"""One benchmark run: suite x method x model -> a run record.

Order of work: validate everything cheap first (names, numbers, data, code-execution
opt-in), then load the model, warm up on the first group, and time every group
`repeats` times back to back. Each finished group is written to disk at once, so an
interrupted run keeps its work and `--resume` continues it.

Timing: a group's wall time is its prefill plus decode time, measured by the shared
decoding loop (with device synchronisation on CUDA). Throughput per repeat is
tokens over the sum of group walls; the record holds the median over repeats, with
the min and max and every repeat's value.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pmbench.engine.compile import compile_counters
from pmbench.engine.compile import resolve as resolve_compile
from pmbench.engine.cpu_linear import MIN_ROWS, prepack_linears
from pmbench.engine.random_models import is_random
from pmbench.engine.runners.base import (
    Runner,
    RunnerOptions,
    RunnerUnavailable,
    get_runner,
    warmup_groups,
)
from pmbench.errors import BadInput
from pmbench.jobs.spec import RunSettings, recorded_settings, resumed_settings
from pmbench.jobs.summary import group_row, question_latency, sample_row, summarize_groups
from pmbench.measure.devices import check_device
from pmbench.measure.envinfo import env_fingerprint
from pmbench.measure.roofline import machine_peaks, model_weights, roofline
from pmbench.measure.telemetry import TelemetrySampler
from pmbench.records.store import RunStore, check_run_id, new_run_id, now_iso
from pmbench.rope2d.settings import KEY as ROPE2D_KEY
from pmbench.types import GenerationConfig

ProgressFn = Callable[[int, int], None]  # (questions done, questions total)


@dataclass
class PreparedRun:
    """A validated run: settings, runner class, tokenizer and suite; no model yet."""

    settings: RunSettings
    runner_cls: type[Runner]
    tokenizer: Any
    suite: Any
    store: RunStore  # locked: this process writes the run folder until execute_run ends
    previous: dict[str, Any] | None
    code_execution: dict[str, Any] | None = None  # the sandbox's isolation, for run.json


def prepare_run(s: RunSettings) -> PreparedRun:
    """Check everything that is cheap to check, so bad input fails before the model loads,
    then lock the run folder (a second writer of the same run is refused here)."""
    from pmbench.engine.models import load_tokenizer
    from pmbench.jobs.context import context_window
    from pmbench.suites import load_suite, locate_data

    previous: dict[str, Any] | None = None
    if s.resume:
        stored = RunStore(s.output_dir, check_run_id(s.resume, "--resume"))
        previous = stored.read_run()
        s = resumed_settings(previous, s, stored.run_path)
        try:
            s.validate()
        except (TypeError, ValueError) as exc:
            raise BadInput(f"corrupt run record: {stored.run_path} ({exc})") from None
    else:
        s.validate()
    check_device(s.device)
    try:
        runner_cls = get_runner(s.method)
        runner_cls.check_available()
    except KeyError as exc:
        raise BadInput(str(exc.args[0])) from None
    except RunnerUnavailable as exc:
        raise BadInput(str(exc)) from None
    if is_random(s.model) and not runner_cls.needs_model:
        raise BadInput(f"--model {s.model} is made by pmbench: the {s.method} method "
                       "does not run pmbench's models")

    if s.threads:
        torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)

    # Data, tokenizer and suite first: cheap, and they catch bad input before the model
    # loads (the data before the tokenizer, whose first load converts the default model).
    locate_data(s.suite, s.data_dir, s.split)
    tokenizer = load_tokenizer(s.model)
    suite = load_suite(
        s.suite, tokenizer, data_dir=s.data_dir, branch=s.branch, limit=s.limit,
        num_fewshot=s.num_fewshot, split=s.split, subjects=s.subjects,
        apply_chat_template=s.apply_chat_template, samples_per_task=s.samples_per_task,
        seed=s.seed, context_window=context_window(s.model), max_new_tokens=s.max_new_tokens,
        truncate_documents=s.truncate_documents,  # every method gets the same groups
    )
    code_execution = None
    if suite.requires_code_execution:
        from pmbench.sandbox import check_isolation, code_execution_allowed

        if not code_execution_allowed(s.allow_code_execution):
            raise BadInput(
                f"suite {s.suite} executes model-generated code: opt in with "
                "--allow-code-execution or PMBENCH_ALLOW_CODE_EXECUTION=1 (it runs sandboxed)"
            )
        code_execution = check_isolation(s.allow_unisolated_code_execution)
    if not suite.groups:
        raise BadInput(f"suite {s.suite} produced no questions (empty data or --limit)")
    run_id = check_run_id(s.resume or s.run_id or new_run_id(s.method, s.suite, s.branch),
                          "--resume" if s.resume else "--run-id")
    store = RunStore(s.output_dir, run_id)
    store.lock()
    if not s.resume and store.exists():  # checked under the lock: one process per run id
        store.unlock()
        raise BadInput(f"run {run_id} already exists in {s.output_dir} (use --resume {run_id})")
    if previous is not None and previous.get("status") == "complete":
        store.unlock()
        n = (previous.get("metrics") or {}).get("n")
        raise BadInput(f"run {run_id} is already complete ({n} questions): nothing to "
                       f"resume; {store.run_path} is unchanged")
    return PreparedRun(s, runner_cls, tokenizer, suite, store, previous, code_execution)


def execute_run(s: RunSettings | PreparedRun, progress: ProgressFn | None = None,
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark described by `s`; return the run record (also written to disk).

    The run folder's lock (taken by prepare_run) is released when this returns or raises.
    """
    prepared = s if isinstance(s, PreparedRun) else prepare_run(s)
    try:
        return _execute(prepared, progress, log)
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
    if record.get("status") == "running":
        record["status"] = "interrupted"
        store.write_run(record)


def _execute(prepared: PreparedRun, progress: ProgressFn | None,
             log: Callable[[str], None] | None) -> dict[str, Any]:
    from pmbench.engine.models import describe_architecture, eos_token_ids, load_model

    s, runner_cls, tokenizer = prepared.settings, prepared.runner_cls, prepared.tokenizer
    suite, store, previous = prepared.suite, prepared.store, prepared.previous
    log = log or (lambda msg: None)

    loaded, linear_kernel = None, "torch"
    if runner_cls.needs_model:
        log("loading model")
        loaded = load_model(s.model, s.device, s.dtype, s.device_map, s.attn_implementation)
        model, device, dtype = loaded.model, loaded.device, loaded.dtype
        if s.cpu_prepack:
            t0 = time.perf_counter()
            if n_packed := prepack_linears(model):
                linear_kernel = f"onednn-prepacked x{n_packed} (>= {MIN_ROWS} rows)"
            loaded.load_s += time.perf_counter() - t0
        eos = eos_token_ids(model, tokenizer)
    else:
        model, device, dtype = None, "cpu", "none"
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    gen: GenerationConfig = suite.generation(s.max_new_tokens, s.ignore_eos, eos)
    options = RunnerOptions(branch=s.branch, rope2d=dict(s.rope2d), model=s.model,
                            compile=s.compile, **s.method_options)
    runner: Runner = runner_cls(model, tokenizer, options)

    run_id = store.run_id
    done_samples, done_groups = store.load_done() if s.resume else ([], [])
    done_ids = {g["group_id"] for g in done_groups}
    pending = [g for g in suite.groups if g.group_id not in done_ids]

    record: dict[str, Any] = previous or {}
    core = {
        "run_id": run_id,
        "created": record.get("created") or now_iso(),
        "method": s.method,
        "branch": s.branch,
        "suite": s.suite,
        "model": runner.model_name() or (loaded.name if loaded else (s.model or "none")),
        "model_path": loaded.path if loaded else s.model,
        "weights": loaded.weights if loaded else ("pretrained" if runner.model_name() else None),
        "architecture": describe_architecture(model) if loaded else None,
        "limit": s.limit,
        "max_new_tokens": gen.max_new_tokens,
        "ignore_eos": s.ignore_eos,
        "seed": s.seed,
        "repeats": s.timed_repeats,
        "dtype": dtype,
        "device": device,
        "status": "running",
        "settings": recorded_settings(s, runner_cls),
        "suite_info": suite.record_info(),
        "method_kind": runner_cls.kind,
        "linear_kernel": linear_kernel,
        "code_execution": prepared.code_execution,
        "compile": resolve_compile(s.compile, device) if runner_cls.needs_model else "off",
    }
    record.update(core)
    record[ROPE2D_KEY] = None  # the 2D RoPE settings: null unless the method writes them
    own = runner.record_options()
    if taken := sorted(set(own) & {*core, "env", "load_s"}):
        raise TypeError(f"runner {s.method!r} may not overwrite run.json keys {taken}")
    record.update(own)
    attn = getattr(getattr(model, "config", None), "_attn_implementation", None)
    record["env"] = env_fingerprint(device, dtype, attn)
    if loaded:
        record["load_s"] = loaded.load_s
    store.write_run(record)

    n_total = sum(len(g.questions) for g in suite.groups)
    n_done = sum(len(g.questions) for g in suite.groups if g.group_id in done_ids)
    if progress:
        progress(n_done, n_total)

    before = compile_counters()
    if pending and s.warmup and runner_cls.needs_model:
        static = record["compile"] in ("on", "static")  # a group of each bucket, see base.py
        warm_up = warmup_groups(runner, pending, gen, static)
        log(f"warm-up ({len(warm_up)} group{'s' * (len(warm_up) > 1)}, untimed)")
        for group in warm_up:
            runner.run_group(group, gen)  # untimed: first calls allocate, pick kernels, compile
    log("timed")

    warm = compile_counters()
    sampler = TelemetrySampler(device=device)
    sampler.start()
    t_run = time.perf_counter()
    new_samples: list[dict] = []
    new_groups: list[dict] = []
    try:
        for group in pending:
            outs, elapsed = [], []
            for r in range(s.timed_repeats):
                if s.timed_repeats > 1:
                    log(f"timed, repeat {r + 1}/{s.timed_repeats}")
                start = time.perf_counter()
                outs.append(runner.run_group(group, gen))
                elapsed.append(time.perf_counter() - start)
            scored = suite.score_all(
                group.questions, outs[0].outputs, allow_code_execution=s.allow_code_execution,
                allow_unisolated_code_execution=s.allow_unisolated_code_execution,
                eos_token_ids=eos)  # the model's own, as generation used them
            samples = [sample_row(group, k, [o.outputs[k] for o in outs], extra)
                       for k, extra in enumerate(scored)]
            row = group_row(group, outs, elapsed)
            store.append_group(samples, row)
            new_samples += samples
            new_groups.append(row)
            n_done += len(group.questions)
            if progress:
                progress(n_done, n_total)
    finally:
        sampler.stop()
    timed_s = time.perf_counter() - t_run

    samples = done_samples + new_samples
    groups = done_groups + new_groups
    record["metrics"] = suite.aggregate(samples)
    summary = summarize_groups(groups, s.timed_repeats)
    record["throughput"] = summary["throughput"]
    record["latency"] = summary["latency"]
    record["tokens"] = summary.get("tokens")
    record["question_latency"] = question_latency(samples)
    # torch's CUDA peak (the sampler resets it at start) or the process RSS peak on CPU
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    out_tokens_timed = sum(g["output_tokens"] for g in new_groups) * s.timed_repeats
    telemetry = sampler.summary(out_tokens_timed)
    peak = telemetry.get("memory_peak_bytes") or peak
    record["telemetry"] = telemetry
    record["memory"] = {
        "peak_bytes": peak,
        "kv_cache_bytes": max((g["kv_cache_bytes"] for g in groups), default=0),
    }
    record["roofline"] = _roofline(model, groups, device, dtype, summary)
    record["resumed"] = bool(s.resume)
    record["timed_region_s"] = timed_s
    record.update(_compile_record(record["compile"], before, warm, compile_counters()))
    record["deterministic"] = all(g.get("deterministic", True) for g in groups)
    record["status"] = "complete"
    record["finished"] = now_iso()
    store.write_run(record)
    return record


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
