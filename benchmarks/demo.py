"""`make demo`: the paper's comparison on the default model, in one command.

Runs the grid suites/grids/demo.yaml: sequential, batch, prefix and rope2d (groups of 8)
on 32 SQuAD questions, each as an accuracy run (real stopping: F1, EM, questions/s) and a
throughput run (equal token volume: 16 new tokens, --ignore-eos), 3 repeats after a
warm-up. Then prints Table 5 and saves Table 1 and the throughput plot under
results/demo/. The sweep is resumable: running the demo again skips finished cells.

The runs go one at a time, so each runs with OMP_WAIT_POLICY=ACTIVE (idle OpenMP threads
spin instead of sleeping), which measured fastest for a single process
(benchmarks/README.md, "Thread policy"); `--wait-policy passive` when other jobs share the
cores. Each record's env.omp_wait_policy says which policy it ran under.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

OUT = Path("results/demo")
GRID = Path(__file__).resolve().parents[1] / "suites" / "grids" / "demo.yaml"


def pmbench(*args: str, env: dict[str, str] | None = None) -> None:
    cmd = [sys.executable, "-m", "pmbench.cli", *args]
    print("$ pmbench " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, env=env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wait-policy", default="active", choices=("active", "passive"),
                    help="OMP_WAIT_POLICY of the demo's processes")
    args = ap.parse_args()
    # the sweep passes its environment on to every cell's process
    env = dict(os.environ, OMP_WAIT_POLICY=args.wait_policy.upper())
    print(f"OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    pmbench("sweep", str(GRID), "--output-dir", str(OUT), env=env)
    pmbench("table", "1", "--results", str(OUT), "--output", str(OUT / "table1.md"))
    pmbench("plot", "throughput", "--results", str(OUT), "--output", str(OUT / "throughput.png"))
    pmbench("table", "5", "--results", str(OUT))
    print(f"saved {OUT / 'table1.md'} and {OUT / 'throughput.png'}")


if __name__ == "__main__":
    main()
