"""Time the HumanEval sandbox alone against an earlier revision, in one invocation.

    .venv/bin/python benchmarks/sandbox_overhead.py REV [--repeats 3] [--workers 2]

Runs all 164 canonical solutions through `pmbench.sandbox.run_programs` of this checkout
and of REV (a git worktree in a temporary folder), alternating A B A B so that a busy
machine weighs on both, and prints the median wall time, its range and the ratio.
Needs $PMBENCH_DATA (or ../shared/data) for HumanEval.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PMBENCH_DATA", ROOT.parent / "shared" / "data"))
SCRIPT = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from pmbench.sandbox import isolation, run_programs
isolation()  # the probe is not timed
rows = [json.loads(line) for line in open(sys.argv[2])]
programs = [r["prompt"] + r["canonical_solution"] + "\n" + r["test"]
            + f"\ncheck({r['entry_point']})\n" for r in rows]
t0 = time.perf_counter()
results = run_programs(programs, timeout_s=10, workers=int(sys.argv[3]))
print(json.dumps({"wall": time.perf_counter() - t0, "passed": sum(r.passed for r in results),
                  "n": len(results)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the revision to compare with, e.g. HEAD~3")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    data = DATA / "humaneval" / "HumanEval.jsonl"
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(base),
                        args.rev], check=True)
        try:
            trees = {args.rev: base, "this checkout": ROOT}
            runs: dict[str, list[dict]] = {name: [] for name in trees}
            for _ in range(args.repeats):
                for name, tree in trees.items():
                    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tree), str(data),
                                          str(args.workers)], capture_output=True, text=True,
                                         cwd=tmp, check=True)
                    runs[name].append(json.loads(out.stdout))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                           check=False)
    medians = {}
    for name, rs in runs.items():
        walls = [r["wall"] for r in rs]
        medians[name] = statistics.median(walls)
        print(f"{name:>14}: {rs[0]['passed']}/{rs[0]['n']} passed, median {medians[name]:.2f} s "
              f"[{min(walls):.2f}, {max(walls):.2f}] over {len(walls)} runs, "
              f"{1000 * medians[name] / rs[0]['n']:.1f} ms per program at "
              f"{args.workers} workers")
    print(f"this checkout / {args.rev}: {medians['this checkout'] / medians[args.rev]:.3f}")


if __name__ == "__main__":
    main()
