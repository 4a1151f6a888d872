"""Command-line options that several commands share (run, attn, train), declared once."""

import typer

ROPE_2D_RATIO = typer.Option(
    "--rope-2d-ratio", help="Fraction of rotary pairs for the branch axis."
)
ROPE_2D_MODE = typer.Option("--rope-2d-mode", help="split | additive.")
BRANCH_FREQS = typer.Option("--branch-freqs", help="high | low | interleaved.")
MASK = typer.Option("--mask", help="isolated | cross.")
