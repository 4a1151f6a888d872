"""Run the README's first usage block, line by line, exactly as written (CI does).

The block after the marker `<!-- readme_usage: ... -->` in README.md: each command (a
line, with backslash continuations joined, comments kept as the shell reads them) runs in
bash in a fresh folder that holds only a link to this checkout's `.venv`, so the records
the commands write, and the tables they print, are theirs alone. Fails, naming the command,
on the first one that does not exit 0.

    python benchmarks/readme_usage.py [--keep]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- readme_usage:"


def commands(readme: Path = ROOT / "README.md") -> list[str]:
    """The first usage block's commands, continuation lines joined."""
    text = readme.read_text(encoding="utf-8")
    block = text[text.index(MARKER):].split("```bash\n", 1)[1].split("```", 1)[0]
    out: list[str] = []
    pending = ""
    for line in block.splitlines():
        if not line.strip():
            continue
        pending += line
        if line.rstrip().endswith("\\"):
            pending = pending.rstrip()[:-1] + " "
            continue
        out.append(pending)
        pending = ""
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the folder the commands ran in")
    args = ap.parse_args()
    cmds = commands()
    work = Path(tempfile.mkdtemp(prefix="readme-usage-"))
    (work / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items()  # as a new shell has it: nothing exported
           if k not in ("PMBENCH_DATA", "OMP_WAIT_POLICY", "HF_HUB_OFFLINE")}
    prelude = "set -eo pipefail\n" + "\n".join(c for c in cmds if c.startswith("pm="))
    for cmd in (c for c in cmds if not c.startswith("pm=")):
        t0 = time.perf_counter()
        print(f"$ {cmd}", flush=True)
        res = subprocess.run(["bash", "-c", f"{prelude}\n{cmd}"], cwd=work, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        print(f"  exit {res.returncode} in {time.perf_counter() - t0:.1f} s", flush=True)
        if res.returncode != 0:
            print(res.stdout[-3000:], file=sys.stderr)
            print(f"readme_usage: the README command failed: {cmd}", file=sys.stderr)
            return 1
    print(f"readme_usage: {len(cmds) - 1} commands ran as written in {work}")
    if not args.keep:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
