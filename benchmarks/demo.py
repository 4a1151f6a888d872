"""`make demo`: the paper's comparison on the default model, in one command.

Runs the grid suites/grids/demo.yaml: sequential, batch, prefix and rope2d (groups of 8)
on 32 SQuAD questions, each as an accuracy run (real stopping: F1, EM, questions/s) and a
throughput run (equal token volume: 16 new tokens, --ignore-eos), 3 repeats after a
warm-up. Then prints Table 5 and saves Table 1 and the throughput plot under
results/demo/. The sweep is resumable: running the demo again skips finished cells.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

OUT = Path("results/demo")
GRID = Path(__file__).resolve().parents[1] / "suites" / "grids" / "demo.yaml"


def pmbench(*args: str) -> None:
    cmd = [sys.executable, "-m", "pmbench.cli", *args]
    print("$ pmbench " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    pmbench("sweep", str(GRID), "--output-dir", str(OUT))
    pmbench("table", "1", "--results", str(OUT), "--output", str(OUT / "table1.md"))
    pmbench("plot", "throughput", "--results", str(OUT), "--output", str(OUT / "throughput.png"))
    pmbench("table", "5", "--results", str(OUT))
    print(f"saved {OUT / 'table1.md'} and {OUT / 'throughput.png'}")


if __name__ == "__main__":
    main()
