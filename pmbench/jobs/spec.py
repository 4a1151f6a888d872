"""The run spec: everything `pmbench run` is asked to do, in one typed record.

The command line builds it (`from_options`), a sweep builds it from a grid cell and
turns it back into a command line (`to_argv`), run.json stores it (`settings`) and
`--resume` reads it back (`resumed_settings`). Its `validate` is the one check of
a run's settings, whoever made them, and it needs no model, data or device.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, get_type_hints

from pmbench.errors import BadInput, require_positive
from pmbench.measure.devices import parse_device
from pmbench.options import (
    Option,
    command_line_value,
    declared,
    default_of,
    fits,
    option,
    split_list,
    type_name,
    unset,
)
from pmbench.records.store import check_run_id
from pmbench.rope2d.settings import DECLARED as ROPE2D_DECLARED
from pmbench.rope2d.settings import KEY as ROPE2D_KEY
from pmbench.rope2d.settings import OPTIONS as ROPE2D_OPTIONS
from pmbench.rope2d.settings import resolve_settings

# Timed repeats of a throughput run unless --repeats says: with 5, the median's bootstrap
# interval over repeats is [min, max], a 94% interval (pmbench.measure.stats).
THROUGHPUT_REPEATS = 5
METHOD_OPTIONS = "method_options"  # the spec's field holding the method's own options
SUITE_OPTIONS = ("context_len", "question_len", "answer_len")  # suites' own (YAML `options`)


@dataclass
class RunSettings:
    """Everything `pmbench run` was asked to do (recorded in run.json). Each field is the
    option of the same name (`--no-warmup` sets warmup), but `rope2d`, the 2D RoPE
    settings' options, and `method_options`, the options a method declares itself."""

    method: str | None = option(help="Decoding method (see `pmbench methods`).")
    suite: str | None = option(help="Task suite (see `pmbench suites`).")
    branch: int = option(1, help="Group size: questions answered together.")
    model: str | None = option(None, help="HF folder, .gguf file or hub id.")
    limit: int | None = option(
        None, help="Number of questions (documents for grouped suites) (default: all).")
    max_new_tokens: int | None = option(None, help="Tokens per answer.")
    ignore_eos: bool = option(
        False, help="Generate exactly --max-new-tokens (equal token volume).")
    repeats: int | None = option(None, help=(  # unset: timed_repeats
        f"Timed repeats after one warm-up (default: {THROUGHPUT_REPEATS} with --ignore-eos, "
        "else 1)."))
    warmup: bool = option(True, negated=True, help="Skip the warm-up.")
    seed: int = option(0, help="Random seed: sampling, and the suite's random choices.")
    dtype: str | None = option(None, help="float32 | bfloat16 | float16.")
    device: str | None = option(None, help="cpu | cuda | cuda:N.")
    device_map: str | None = option(
        None, help="'auto' spreads a large model over devices (accelerate).")
    data_dir: str | None = option(None, help="Benchmark data folder.")
    output_dir: str = option("results", help="Where run records go.")
    num_fewshot: int | None = option(None, help="Few-shot examples.")
    split: str | None = option(None, help="Data split (suite default if unset).")
    subjects: list[str] | None = option(None, help="Comma-separated subjects.")
    samples_per_task: int = option(1, help="Samples per problem (pass@k).")
    apply_chat_template: bool = option(
        False, help="Wrap prompts in the model's chat template.")
    truncate_documents: bool = option(False, help=(
        "Cut a document longer than the model's context from its end to fit (run.json "
        "lists each cut); without it such a group is refused."))
    # a suite's own options (its YAML `options`, with their defaults: suite synthetic)
    context_len: int | None = option(None, help="Shared context tokens (suite synthetic).")
    question_len: int | None = option(None, help="Tokens per question (suite synthetic).")
    answer_len: str | None = option(None, help=(
        "Tokens per answer (suite synthetic): N, A-B (uniform) or run:FOLDER (the output "
        "lengths of a finished run)."))
    allow_code_execution: bool = option(False, help="Run generated code (sandboxed).")
    allow_unisolated_code_execution: bool = option(
        False, help="Run generated code even where the sandbox cannot fully isolate it.")
    rope2d: dict[str, Any] = field(default_factory=dict)  # name -> value, None: unset
    threads: int | None = option(None, help="torch CPU threads.")
    attn_implementation: str = option("sdpa", help="sdpa | eager.")
    cpu_prepack: bool = option(True, help=(  # see pmbench/engine/cpu_linear.py
        "CPU float32: prepack Linear weights for multi-row matmuls (every method)."))
    method_options: dict[str, Any] = field(default_factory=dict)  # flag -> value, not default
    compile: str = option("auto", help=(  # the decoding step (engine/compile.py)
        "decoding step: auto (on for CUDA) | on (static, torch.compile) | static | off."))
    run_id: str | None = option(None, help="Use this run id (sweeps).")
    resume: str | None = option(None, help="Continue an interrupted run.")

    @property
    def timed_repeats(self) -> int:
        """--repeats, else THROUGHPUT_REPEATS for a throughput run (--ignore-eos: its
        figure's interval is over repeats) and one for an accuracy run."""
        return self.repeats or (THROUGHPUT_REPEATS if self.ignore_eos else 1)

    def validate(self) -> None:
        """Cheap checks that need no model, data or device (a sweep runs them on every
        cell of a grid before anything starts)."""
        hints = get_type_hints(RunSettings)
        for f in fields(self):
            value = getattr(self, f.name)
            if not fits(value, hints[f.name]):
                raise BadInput(f"{f.name} = {value!r} is not {type_name(hints[f.name])}")
        require_positive(branch=self.branch, limit=self.limit, repeats=self.repeats,
                         max_new_tokens=self.max_new_tokens,
                         samples_per_task=self.samples_per_task, threads=self.threads)
        if self.run_id is not None:
            check_run_id(self.run_id, "--run-id")
        if self.resume is not None:
            check_run_id(self.resume, "--resume")
        parse_device(self.device)  # its availability is checked where the run runs
        from pmbench.engine.models import DTYPES
        from pmbench.engine.random_models import check_random_run

        check_random_run(self.model, self.ignore_eos, self.device_map)

        if self.dtype is not None and self.dtype not in DTYPES:
            raise BadInput(f"unknown --dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")
        resolve_settings(None, self.rope2d)  # rope2d owns its option names and ranges
        _check_method_options(self.method_options)
        from pmbench.engine.compile import MODES

        if self.compile not in MODES:
            raise BadInput(f"unknown --compile {self.compile!r}; valid: {', '.join(MODES)}")
        self._check_applies()
        self._check_suite_options()

    def suite_options(self) -> dict[str, Any]:
        """The suite's own options that were given (SUITE_OPTIONS; unset: the YAML's)."""
        return {k: getattr(self, k) for k in SUITE_OPTIONS if getattr(self, k) is not None}

    def _check_suite_options(self) -> None:
        """A suite's own option given to another suite is refused; its values checked."""
        given = self.suite_options()
        if not given or self.suite is None:
            return
        from pmbench.suites import available_suites, suite_class, suite_config

        for name in given:
            if name not in (suite_config(self.suite).get("options") or {}):
                takers = [n for n in available_suites()
                          if name in (suite_config(n).get("options") or {})]
                raise BadInput(f"{_flag(name)} applies to --suite {' or '.join(takers)} "
                               f"only, not {self.suite}")
        suite_class(suite_config(self.suite)).check_options(given)

    def _check_applies(self) -> None:
        """An option of one method given to another is refused, not silently ignored."""
        from pmbench.engine.runners.base import available_runners, methods_of

        if self.method is None:
            return
        runner = available_runners().get(self.method)
        given = [ROPE2D_OPTIONS[k] for k, v in self.rope2d.items() if v is not None]
        if given and not (runner and runner.uses_rope2d):
            takers = [n for n, r in available_runners().items() if r.uses_rope2d]
            raise BadInput(f"{_flag(given[0])} applies to --method {' or '.join(takers)} "
                           f"only, not {self.method}")
        for flag in self.method_options:
            if self.method not in (takers := methods_of(flag)):
                raise BadInput(f"{_flag(flag)} applies to --method {' or '.join(takers)} "
                               f"only, not {self.method}")


def _check_method_options(given: dict[str, Any]) -> None:
    """Each method option is declared by a method, and its value is of its type and
    among its choices (as the runner that declares it checks them)."""
    from pmbench.engine.runners.base import available_runners, methods_of, own_options

    for flag, value in given.items():
        takers = methods_of(flag)
        if not takers:
            raise BadInput(f"unknown option {_flag(flag)}")
        own_options(available_runners()[takers[0]], {flag: value})


# ------------------------------------------------------------ the command line

NAMING = ("method", "suite", "branch")  # always on a command line: they name the run


def run_options() -> list[Option]:
    """Every `pmbench run` option that sets the spec, in the spec's order: its fields' own,
    the 2D RoPE settings' in place of `rope2d` (unset by default: the model's config, else
    the settings' defaults), every method's own in place of `method_options`."""
    from pmbench.engine.runners.base import method_options

    own = {opt.name: opt for opt in declared(RunSettings)}
    out: list[Option] = []
    for f in fields(RunSettings):
        if f.name == ROPE2D_KEY:
            out += unset(list(ROPE2D_DECLARED.values()))
        elif f.name == METHOD_OPTIONS:
            out += method_options().values()
        else:
            out.append(own[f.name])
    flags = [o.flag for o in out]
    if clash := sorted({f for f in flags if flags.count(f) > 1}):
        raise BadInput(f"a method declares option(s) {', '.join(clash)} that `pmbench run` "
                       "has already: fix or remove its runner")
    return out


def option_types() -> dict[str, Any]:
    """Every `pmbench run` option that sets a spec field (python name) -> its value's type."""
    return {opt.flag: opt.hint for opt in run_options()}


def from_options(**options: Any) -> RunSettings:
    """The spec that `pmbench run` options describe, as the command line gives them:
    `no_warmup`, `subjects` as comma-separated text (or a list), the rope-2d options and
    the methods' own (a value equal to its default is left out), numbers for text options
    (a grid's `split: 1`). Unknown names: TypeError."""
    from pmbench.engine.runners.base import method_options

    given = dict(options)
    for opt in declared(RunSettings):
        if opt.negated and opt.flag in given:
            given[opt.name] = not given.pop(opt.flag)
        if opt.name in given:
            given[opt.name] = command_line_value(split_list(given[opt.name], opt.hint,
                                                            opt.flag), opt.hint)
    given[ROPE2D_KEY] = {name: given.pop(flag, None) for name, flag in ROPE2D_OPTIONS.items()}
    own = {}
    for flag, opt in method_options().items():
        value = command_line_value(given.pop(flag, None), opt.hint)
        if value is not None and value != opt.default:
            own[flag] = value
    return RunSettings(**given, method_options=own)


def to_argv(spec: RunSettings) -> list[str]:
    """The `pmbench run` arguments that make `spec`: the naming fields, then every
    field that differs from its default (unset ones left out)."""
    argv: list[str] = []
    for f in fields(spec):
        value = getattr(spec, f.name)
        if value is None or (value == default_of(f) and f.name not in NAMING):
            continue
        if f.name == ROPE2D_KEY:
            for name, flag in ROPE2D_OPTIONS.items():
                if value.get(name) is not None:
                    argv += [_flag(flag), str(value[name])]
        elif f.name == METHOD_OPTIONS:
            for flag, given in value.items():
                argv += _argument(flag, given)
        else:
            argv += _argument(f.name, value)
    return argv


def _argument(name: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        return [_flag(name) if value else _flag(f"no_{name}")]
    if isinstance(value, list):
        return [_flag(name), ",".join(map(str, value))]
    return [_flag(name), str(value)]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# --------------------------------------------------------------- stored specs

# Settings that the command line of a --resume gives, never the stored record: where the
# records are, and the opt-ins to run generated code, which must be asked again.
FROM_COMMAND_LINE = ("resume", "output_dir", "allow_code_execution",
                     "allow_unisolated_code_execution")


def recorded_settings(spec: RunSettings, runner: type) -> dict[str, Any]:
    """run.json's `settings`: the spec's fields, and beside them each of the method's own
    options (`runner.Options`) with its value or default, as `--resume` reads them back."""
    out = asdict(spec)
    given = out.pop(METHOD_OPTIONS)
    return {**out, **{opt.flag: given.get(opt.flag, opt.default)
                      for opt in declared(runner.Options)}}


def resumed_settings(previous: dict[str, Any], current: RunSettings,
                     where: Any) -> RunSettings:
    """The stored settings of a run being resumed, checked field by field, with the
    FROM_COMMAND_LINE ones taken from `current` (the code-execution opt-ins are never
    inherited). A field the record lacks takes its default (records of older versions);
    a method's own option is one of `method_options` (left out at its default: older
    records hold every method's); an unknown field or a wrong type is a corrupt record,
    one line."""
    from pmbench.engine.runners.base import method_options

    stored = previous.get("settings")
    if not isinstance(stored, dict):
        raise BadInput(f"corrupt run record: {where} (no settings)")
    hints = get_type_hints(RunSettings)
    own = method_options()
    hints |= {flag: opt.hint for flag, opt in own.items() if flag not in hints}
    unknown = sorted(str(k) for k in stored if k not in hints)
    if unknown:
        raise BadInput(f"corrupt run record: {where} (unknown settings: {', '.join(unknown)})")
    for name in ("method", "suite"):
        if not isinstance(stored.get(name), str):
            raise BadInput(f"corrupt run record: {where} (settings.{name} is missing)")
    for name, value in stored.items():
        if not fits(value, hints[name]):
            raise BadInput(f"corrupt run record: {where} (settings.{name} = {value!r} is not "
                           f"{type_name(hints[name])})")
    given = {k: v for k, v in stored.items() if k not in FROM_COMMAND_LINE and k not in own}
    given[METHOD_OPTIONS] = {**given.get(METHOD_OPTIONS, {}), **{
        k: v for k, v in stored.items() if k in own and v != own[k].default}}
    _check_no_conflict(given, current, where)
    return RunSettings(**given, **{k: getattr(current, k) for k in FROM_COMMAND_LINE})


def _check_no_conflict(stored: dict[str, Any], current: RunSettings, where: Any) -> None:
    """A --resume continues the stored run as it was asked: an option given with it (one
    that differs from its default) must say what the run already says, or it is refused
    (it would otherwise be ignored without a word)."""
    from pmbench.engine.runners.base import method_options

    own = method_options()
    compared = [(f.name, getattr(current, f.name), default_of(f), stored)
                for f in fields(RunSettings) if f.name not in (*FROM_COMMAND_LINE, METHOD_OPTIONS)]
    compared += [(flag, value, own[flag].default, stored[METHOD_OPTIONS])
                 for flag, value in current.method_options.items()]
    for name, value, default, source in compared:
        default = None if default is MISSING else default  # method, suite: unset is None
        if name == ROPE2D_KEY:  # name -> value, None: unset
            value = {k: v for k, v in value.items() if v is not None}
            default, had = {}, {k: v for k, v in stored.get(name, {}).items()
                                if v is not None and k in value}
        else:
            had = source.get(name, default)
        if value != default and value != had:
            raise BadInput(f"{_flag(name)} {value!r} conflicts with the run being resumed "
                           f"({had!r} in {where}): --resume continues a run as it was started")
