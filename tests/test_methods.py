"""A method is one module under pmbench/engine/runners/: its runner declares its options,
label, record block, order and ratios, and everything else reads them. An example method
added as a module of its own (and nothing else) is listed, takes its option from the
command line and from a grid, runs, and shows up in Table 1 and run.json. Method names
appear as literals nowhere else, but in the tables about 2D RoPE itself."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pmbench.cli import app
from pmbench.errors import BadInput

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pmbench"
METHODS = {"sequential", "batch", "prefix", "rope2d"}
OWNERS = ("engine/runners", "rope2d")  # the packages that may name a method
MAX_NAMED = 8  # Tables 2-4 are about 2D RoPE itself: they may name its methods

ECHO = '''"""echo: the example method of tests/test_methods.py (batch decoding under another
name, with an option of its own that it records and shows in its label)."""

from dataclasses import dataclass

from pmbench.engine.runners.batch import BatchRunner
from pmbench.options import option


@dataclass(frozen=True)
class EchoOptions:
    echo_level: int = option(1, help="echo method: how loud it is.")


class EchoRunner(BatchRunner):
    name = "echo"
    description = "a padded batch under another name (an example method)"
    Options = EchoOptions
    record_columns = ("echo.level",)
    order = 5
    ratios_over = ("batch",)

    def record_options(self):
        return {"echo": {"level": self.own.echo_level}}

    @classmethod
    def label(cls, values):
        return f"echo x{values.get('echo.level')}"
'''


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _named(path: Path) -> list[tuple[int, str]]:
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and node.value in METHODS]


def test_method_names_are_literals_only_where_the_method_is():
    """Outside the runners and 2D RoPE itself, a method name is a literal only in the
    tables about 2D RoPE (everything else reads the runners' declarations)."""
    found = {str(p.relative_to(PACKAGE)): named for p in sorted(PACKAGE.rglob("*.py"))
             if not str(p.relative_to(PACKAGE)).startswith(OWNERS) and (named := _named(p))}
    count = sum(len(v) for v in found.values())
    assert count <= MAX_NAMED, f"{count} method names as literals: {found}"


@pytest.fixture
def echo(tmp_path, monkeypatch):
    """The example method, as one module in a folder of the runners' package (found the
    way pmbench's own are: no entry point, no reinstall)."""
    import pmbench.engine.runners as package
    from pmbench.engine.runners import base

    folder = tmp_path / "more_runners"
    folder.mkdir()
    (folder / "echo_example.py").write_text(ECHO)
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
    base.forget_runners()
    yield
    base.forget_runners()
    sys.modules.pop(f"{package.__name__}.echo_example", None)


def test_a_new_method_is_one_module(echo, tiny_model_dir, tmp_path):
    listed = invoke("methods")
    assert "echo: a padded batch under another name" in listed.stdout
    assert "--echo-level" in invoke("run", "--help").stdout

    out = tmp_path / "results"
    common = ["--suite", "squad", "--limit", "2", "--branch", "2", "--max-new-tokens", "2",
              "--model", tiny_model_dir, "--output-dir", out, "--no-warmup", "--threads", "1"]
    res = invoke("run", "--method", "echo", "--echo-level", "3", *common, "--json")
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    assert record["echo"] == {"level": 3} and record["settings"]["echo_level"] == 3

    refused = invoke("run", "--method", "batch", "--echo-level", "3", *common)
    assert refused.exit_code == 2
    assert "--echo-level applies to --method echo only, not batch" in refused.stderr

    table = invoke("table", "1", "--results", out)
    assert table.exit_code == 0, table.output
    assert "echo x3" in table.stdout


def test_a_new_method_takes_its_option_from_a_grid(echo, tiny_model_dir, tmp_path):
    from pmbench.sweep.grid import load_grid

    grid = tmp_path / "echo.yaml"
    grid.write_text(yaml.safe_dump({
        "name": "echo", "models": [tiny_model_dir], "suites": ["squad"], "branches": [2],
        "methods": [{"name": "echo", "echo_level": 4}, "batch"],
        "rope2d": [{"ratio": 0.5}],  # crosses rope2d's cells only: echo does not take it
        "options": {"limit": 2, "max_new_tokens": 2, "no_warmup": True, "threads": 1}}))
    cells = load_grid(grid)
    assert [(c.method, c.rope2d) for c in cells] == [("echo", {}), ("batch", {})]
    args = cells[0].command_args("new")
    assert args[args.index("--echo-level") + 1] == "4"
    out = tmp_path / "results"
    res = invoke(*args, "--output-dir", out, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["echo"] == {"level": 4}

    bad = grid.read_text().replace("echo_level: 4", "echo_level: loud")
    grid.write_text(bad)
    with pytest.raises(BadInput, match="echo_level"):
        load_grid(grid)


CLASH = '''from dataclasses import dataclass

from pmbench.engine.runners.batch import BatchRunner
from pmbench.options import option


@dataclass(frozen=True)
class ClashOptions:
    seed: int = option(7, help="an option pmbench run has already")


class ClashRunner(BatchRunner):
    name = "clash"
    Options = ClashOptions
'''


@pytest.fixture
def more_runners(tmp_path, monkeypatch):
    """A folder of extra runner modules in the runners' package (as `echo` above)."""
    import pmbench.engine.runners as package
    from pmbench.engine.runners import base

    folder = tmp_path / "extra_runners"
    folder.mkdir()
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
    base.forget_runners()
    yield folder
    base.forget_runners()
    for name in ("broken_example", "clash_example"):
        sys.modules.pop(f"{package.__name__}.{name}", None)


def test_a_broken_runner_module_is_skipped_with_a_warning(more_runners):
    (more_runners / "broken_example.py").write_text('raise ImportError("no such package")\n')
    res = invoke("methods")
    assert res.exit_code == 0 and "rope2d" in res.stdout
    assert "warning: runner module broken_example skipped: ImportError: no such package" \
        in res.stderr


def test_a_method_option_that_run_has_already_is_one_line(more_runners):
    (more_runners / "clash_example.py").write_text(CLASH)
    res = invoke("run", "--help")
    assert res.exit_code == 2
    assert res.stderr.strip() == ("error: a method declares option(s) seed that "
                                  "`pmbench run` has already: fix or remove its runner")
