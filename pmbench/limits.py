"""Every cap on what pmbench reads, in one place.

Run folders, sweep folders and grids may come from anyone (a shared results folder, a
grid from a colleague, records copied from another machine), so what pmbench reads from
them is bounded: a hostile file costs one line of error or a skipped file, never minutes,
gigabytes or a crash. The caps are generous: real records are far below them.
"""

MiB = 1 << 20

MAX_RECORD_BYTES = 16 * MiB  # one JSON record: run.json, train.json, attention.json, claim.json
MAX_LINE_BYTES = 16 * MiB  # one line of samples.jsonl or groups.jsonl
MAX_JSONL_BYTES = 1024 * MiB  # a whole samples.jsonl / groups.jsonl
MAX_LOG_TAIL_BYTES = 64 * 1024  # the end of a log (sweep.log, a Slurm job's stderr) read for errors
MAX_JSON_DEPTH = 64  # nesting of a JSON record or a YAML grid (real ones nest fewer than 10)

MAX_GRID_BYTES = 1 * MiB  # a grid file (YAML)
MAX_YAML_NODES = 100_000  # nodes of a grid once its aliases are expanded (anchors are fine)
MAX_CELLS = 10_000  # cells a grid may expand to unless `pmbench sweep --max-cells` says more

MAX_MESSAGE_CHARS = 1000  # one line of error or warning, however long what it quotes
