"""A run's cheap checks, before any model loads: settings (a resumed run's from its
record), the method's runner, data, tokenizer and suite, the code-execution opt-in, and
the run folder, locked. Bad input fails here, in one line, in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from pmbench.engine.random_models import is_random
from pmbench.engine.runners.base import Runner, RunnerUnavailable, get_runner
from pmbench.errors import BadInput
from pmbench.jobs.spec import RunSettings, resumed_settings
from pmbench.measure.devices import check_device
from pmbench.records.run_record import RunRecord
from pmbench.records.store import RunStore, check_run_id, new_run_id
from pmbench.suites import suite_config


@dataclass
class PreparedRun:
    """A validated run: settings, runner class, tokenizer and suite; no model yet."""

    settings: RunSettings
    runner_cls: type[Runner]
    tokenizer: Any
    suite: Any
    store: RunStore  # locked: this process writes the run folder until execute_run ends
    previous: RunRecord | None  # the record of the run being resumed
    code_execution: dict[str, Any] | None = None  # the sandbox's isolation, for run.json


def prepare_run(s: RunSettings) -> PreparedRun:
    """Check everything that is cheap to check, so bad input fails before the model loads,
    then lock the run folder (a second writer of the same run is refused here)."""
    s, previous = _settings(s)
    if not s.ignore_eos and suite_config(s.suite).get("throughput_only"):
        s = replace(s, ignore_eos=True)  # its answers have exact lengths: a throughput run
    check_device(s.device)
    runner_cls = _runner_class(s)
    if s.threads:
        torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    tokenizer, suite = _tokenizer_and_suite(s)
    code_execution = _code_execution(s, suite)
    if not suite.groups:
        raise BadInput(f"suite {s.suite} produced no questions (empty data or --limit)")
    store = _locked_store(s, previous)
    return PreparedRun(s, runner_cls, tokenizer, suite, store, previous, code_execution)


def _settings(s: RunSettings) -> tuple[RunSettings, RunRecord | None]:
    """The settings to run (with --resume, the stored run's) and the stored record."""
    if not s.resume:
        s.validate()
        return s, None
    stored = RunStore(s.output_dir, check_run_id(s.resume, "--resume"))
    previous = stored.read_run()
    s = resumed_settings(previous.to_dict(), s, stored.run_path)
    try:
        s.validate()
    except (TypeError, ValueError) as exc:
        raise BadInput(f"corrupt run record: {stored.run_path} ({exc})") from None
    return s, previous


def _runner_class(s: RunSettings) -> type[Runner]:
    """The method's runner, if this machine can run it and it runs this model."""
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
    return runner_cls


def _tokenizer_and_suite(s: RunSettings) -> tuple[Any, Any]:
    """Data, tokenizer and suite: cheap, and they catch bad input before the model loads
    (the data before the tokenizer, whose first load converts the default model)."""
    from pmbench.engine.models import load_tokenizer
    from pmbench.jobs.context import context_window
    from pmbench.suites import load_suite, locate_data

    locate_data(s.suite, s.data_dir, s.split)
    tokenizer = load_tokenizer(s.model)
    suite = load_suite(
        s.suite, tokenizer, data_dir=s.data_dir, branch=s.branch, limit=s.limit,
        num_fewshot=s.num_fewshot, split=s.split, subjects=s.subjects,
        apply_chat_template=s.apply_chat_template, samples_per_task=s.samples_per_task,
        seed=s.seed, context_window=context_window(s.model), max_new_tokens=s.max_new_tokens,
        truncate_documents=s.truncate_documents,  # every method gets the same groups
        **s.suite_options(),
    )
    return tokenizer, suite


def _code_execution(s: RunSettings, suite: Any) -> dict[str, Any] | None:
    """The sandbox's isolation for a suite that runs model-written code (None for the
    others); refused without the opt-in."""
    if not suite.requires_code_execution:
        return None
    from pmbench.sandbox import check_isolation, code_execution_allowed

    if not code_execution_allowed(s.allow_code_execution):
        raise BadInput(
            f"suite {s.suite} executes model-generated code: opt in with "
            "--allow-code-execution or PMBENCH_ALLOW_CODE_EXECUTION=1 (it runs sandboxed)"
        )
    return check_isolation(s.allow_unisolated_code_execution)


def _locked_store(s: RunSettings, previous: RunRecord | None) -> RunStore:
    """The run folder, locked; a new run may not reuse an id, a finished one not resume."""
    run_id = check_run_id(s.resume or s.run_id or new_run_id(s.method, s.suite, s.branch),
                          "--resume" if s.resume else "--run-id")
    store = RunStore(s.output_dir, run_id)
    store.lock()
    if not s.resume and store.exists():  # checked under the lock: one process per run id
        store.unlock()
        raise BadInput(f"run {run_id} already exists in {s.output_dir} (use --resume {run_id})")
    if previous is not None and previous.status == "complete":
        store.unlock()
        n = (previous.metrics or {}).get("n")
        raise BadInput(f"run {run_id} is already complete ({n} questions): nothing to "
                       f"resume; {store.run_path} is unchanged")
    return store
