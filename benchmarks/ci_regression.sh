#!/usr/bin/env bash
# pmbench's own regression check (run by .ci/run after the tests).
#
# Runs a small fixed grid on the default model (SQuAD, 8 questions, groups of 8, 8 new
# tokens, --ignore-eos, 5 repeats) into DIR and compares it with the committed baseline
# in results/baseline/ on machine-independent figures only: the rope2d/prefix,
# rope2d/batch, rope2d/sequential, prefix/batch and batch/sequential throughput ratios
# (measured in the same run, on the same machine) and exact accuracy. Absolute tok/s are
# reported, never judged: CI machines differ.
#
#   benchmarks/ci_regression.sh DIR          # fresh run into DIR, then compare
#   benchmarks/ci_regression.sh --baseline   # regenerate results/baseline/
set -euo pipefail
cd "$(dirname "$0")/.."
PM=".venv/bin/pmbench"
if [[ "${1:-}" == "--baseline" ]]; then
  OUT="results/baseline"  # its records replaced; its COMMITTED marker kept
  find "$OUT" -mindepth 1 -maxdepth 1 ! -name COMMITTED -exec rm -rf {} +
else
  OUT="${1:?usage: ci_regression.sh DIR | --baseline}"
fi
mkdir -p "$OUT"
for method in sequential batch prefix rope2d; do
  "$PM" run --method "$method" --suite squad --limit 8 --branch 8 --max-new-tokens 8 \
    --ignore-eos --repeats 5 --threads 1 --output-dir "$OUT" --run-id "ci-$method" --json >/dev/null
done
if [[ "$OUT" != "results/baseline" ]]; then
  "$PM" compare results/baseline "$OUT" --machine-independent --exact-accuracy --format markdown
fi
