"""`make demo`: the paper's comparison on the default model, in one command.

Runs sequential, batch and rope2d (groups of 8) on 32 SQuAD questions with equal
token volume (16 new tokens, --ignore-eos, 3 repeats after a warm-up), then prints
Table 5 and saves Table 1 and the throughput plot under results/demo/.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

OUT = Path("results/demo")
COMMON = ["--suite", "squad", "--limit", "32", "--max-new-tokens", "16", "--ignore-eos",
          "--repeats", "3", "--output-dir", str(OUT)]
CELLS = [("sequential", 8), ("batch", 8), ("rope2d", 8), ("rope2d", 16)]


def pmbench(*args: str) -> None:
    cmd = [sys.executable, "-m", "pmbench.cli", *args]
    print("$ pmbench " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for method, branch in CELLS:
        pmbench("run", "--method", method, "--branch", str(branch), *COMMON)
    pmbench("table", "1", "--results", str(OUT), "--output", str(OUT / "table1.md"))
    pmbench("plot", "throughput", "--results", str(OUT), "--output", str(OUT / "throughput.png"))
    pmbench("table", "5", "--results", str(OUT))
    print(f"saved {OUT / 'table1.md'} and {OUT / 'throughput.png'}")


if __name__ == "__main__":
    main()
