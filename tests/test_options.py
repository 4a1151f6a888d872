"""One source for every option: `run`, `train` and `attn` make their options from the
settings classes' fields (pmbench.options declarations), with the fields' defaults and
help; grids take the same names; `--branches` is a deprecated alias of `--branch`."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields

import click
import pytest
import typer.main
from typer.testing import CliRunner

from pmbench.cli import app
from pmbench.options import declared, default_of


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def command(*path: str) -> click.Command:
    """The click command at `path` (commands made when used are made here)."""
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.get_command(click.Context(cmd), name)
    return cmd


def params(*path: str) -> dict[str, click.Parameter]:
    return {p.name: p for p in command(*path).params if not p.hidden}


def _expected(opt) -> object:
    default = None if opt.default is MISSING else opt.flag_default
    return ",".join(map(str, default)) if isinstance(default, list) else default


def test_every_run_setting_is_an_option_with_its_default():
    from pmbench.engine.runners.base import available_runners
    from pmbench.jobs.spec import METHOD_OPTIONS, RunSettings, run_options
    from pmbench.rope2d.settings import KEY, OPTIONS

    shown = params("run")
    by_field = {opt.name: opt.flag for opt in declared(RunSettings)}
    for f in fields(RunSettings):
        if f.name == KEY:
            flags = list(OPTIONS.values())
        elif f.name == METHOD_OPTIONS:
            flags = [o.flag for r in available_runners().values() for o in declared(r.Options)]
        else:
            flags = [by_field[f.name]]
        assert flags and all(flag in shown for flag in flags), f.name
    for opt in run_options():
        assert shown[opt.flag].default == _expected(opt), opt.flag
        assert shown[opt.flag].help == opt.help


@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_every_train_setting_is_an_option_with_its_default(kind):
    from pmbench.train.settings import TrainSettings, train_options

    shown = params("train", kind)
    for opt in train_options(kind):
        assert shown[opt.flag].default == _expected(opt), opt.flag
        assert shown[opt.flag].help == opt.help
    # every setting is an option (of both commands or of one), but the command itself
    assert {o.name for o in declared(TrainSettings)} == {
        f.name for f in fields(TrainSettings)} - {"kind"}


def test_every_attn_setting_is_an_option_with_its_default():
    from pmbench.attention.run import AttnSettings
    from pmbench.rope2d.settings import KEY, OPTIONS

    shown = params("attn")
    for f in fields(AttnSettings):
        if f.name == KEY:
            assert all(shown[flag].default is None for flag in OPTIONS.values())
        else:
            default = default_of(f)
            assert shown[f.name].default == (None if default is MISSING else default), f.name


def test_run_help_shows_each_option_once_with_its_default():
    from pmbench.jobs.spec import run_options

    res = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "250"})
    assert res.exit_code == 0
    for opt in run_options():
        rows = [line for line in res.stdout.splitlines()
                if re.search(rf"│ {re.escape(opt.cli)}(\s|/)", line)]
        assert len(rows) == 1, opt.cli
        if opt.default not in (None, False, MISSING) and opt.hint is not bool:
            assert f"[default: {opt.default}]" in res.stdout.replace("\n", " "), opt.cli


def test_branches_is_a_deprecated_alias_of_branch(monkeypatch):
    import pmbench.train.job as job

    seen = []
    monkeypatch.setattr(job, "run_training", lambda s, show_progress: seen.append(s) or {})
    for flag in ("--branch", "--branches"):
        res = invoke("train", "pretrain", flag, "3", "--quiet")
        assert res.exit_code == 0, res.output
        note = "note: --branches is deprecated; use --branch\n"
        assert res.stderr == (note if flag == "--branches" else "")
    assert [s.branches for s in seen] == [3, 3]
    assert "--branches" not in invoke("train", "pretrain", "--help").stdout


def test_a_train_grid_takes_the_deprecated_name_too(tmp_path):
    import yaml

    from pmbench.errors import PmbenchWarning
    from pmbench.sweep.grid import load_grid

    grid = tmp_path / "train.yaml"
    grid.write_text(yaml.safe_dump({"kind": "train", "name": "t", "runs": [
        {"id": "new", "command": "pretrain", "branch": 2},
        {"id": "old", "command": "pretrain", "branches": 2}]}))
    with pytest.warns(PmbenchWarning, match="branches is deprecated; use branch"):
        new, old = load_grid(grid)
    assert new.train_args() == old.train_args() == ["--branch", "2"]


def _all_commands(cmd: click.Command, path: tuple[str, ...] = ()):
    yield path, cmd
    if hasattr(cmd, "list_commands"):  # a group (typer's own click types, not click's)
        for name in cmd.list_commands(click.Context(cmd)):
            yield from _all_commands(cmd.get_command(click.Context(cmd), name), (*path, name))


def test_every_help_text_survives_rich_markup():
    """--help renders with rich markup: a `[default: x]` in a help text is a tag and
    vanishes. Every option and argument of every command keeps its whole text."""
    from rich.text import Text

    seen = [(path, p) for path, cmd in _all_commands(typer.main.get_command(app))
            for p in cmd.params if getattr(p, "help", None)]
    lost = [f"{' '.join(path)} {p.name}: {p.help!r}" for path, p in seen
            if Text.from_markup(p.help).plain != p.help]
    assert lost == []
    assert len(seen) > 100  # every command was walked, the groups' too
