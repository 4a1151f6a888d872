"""Where a suite's files come from: `--data-dir`, else `$PMBENCH_DATA`, else the
`shared/data` folder beside the project (where a checkout of this repository finds its
benchmark files; only when `$PMBENCH_DATA` is unset), else the HF hub.

An explicit `--data-dir` is the only place looked: one that does not exist, or lacks the
suite's files, is bad input, never a silent fall-back to other data.

Every suite reads one local layout (that of ../shared/data, see its README; for suites
that are not there, RACE and QuALITY, the hub dataset's own parquet layout). A hub copy
is fetched through `datasets` and written in that same layout, into the cache
(`$PMBENCH_CACHE/data`) or, with `pmbench data download`, into the data folder; the
suite then reads it like any other local folder, so there is one reader per suite.
A data path may be a glob pattern (`*`): the hub names its parquet shards
`train-00000-of-00001-<hash>.parquet`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pmbench.errors import BadInput

DATA_ENV = "PMBENCH_DATA"
_TRUE = {"1", "true", "yes", "on"}
# The benchmark files beside this checkout (../shared/data from the project's root).
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def cache_data_dir() -> Path:
    """Where hub copies go when no data folder is named."""
    from pmbench.engine.models import cache_dir

    return cache_dir() / "data"


def local_roots(data_dir: str | Path | None = None) -> list[Path]:
    """Candidate data folders, in resolution order (the hub cache last); a `--data-dir`
    alone, as it was asked for.

    A `--data-dir` that does not exist is a typo, not a reason to fall back silently.
    """
    if data_dir:
        if not Path(data_dir).expanduser().is_dir():
            raise BadInput(f"data folder not found: {data_dir} (--data-dir)")
        return [Path(data_dir).expanduser()]
    if os.environ.get(DATA_ENV):  # the folder the user named, not another one beside it
        return [Path(os.environ[DATA_ENV]).expanduser(), cache_data_dir()]
    return [*([SHARED_DATA] if SHARED_DATA.is_dir() else []), cache_data_dir()]


def hub_offline_reason() -> str | None:
    """Why the hub cannot be used now (None when it can).

    `HF_HUB_OFFLINE` / `HF_DATASETS_OFFLINE` say so explicitly. Otherwise a 3-second TCP
    probe of the endpoint stands in for `datasets`' own retries, which take much longer to
    give up on a machine without network (benchmarks/README.md, "Set-up costs"); behind a
    proxy the probe is skipped.
    """
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var} is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
    except OSError as exc:
        return f"cannot reach {url.hostname} ({exc.__class__.__name__})"
    return None


@dataclass
class DataSpec:
    """A suite's data needs: files under the data folder, and the hub dataset."""

    suite: str
    files: list[str]  # relative paths that must exist, `{split}` filled in
    hub: str  # dataset id on the HF hub, for messages

    def present_in(self, root: Path) -> bool:
        return all(locate(root, f) is not None for f in self.files)


def locate(root: Path, relative: str) -> Path | None:
    """`root / relative` if it exists; for a glob pattern, its first match in name order."""
    if "*" not in relative and "?" not in relative:
        path = root / relative
        return path if path.exists() else None
    return next(iter(sorted(root.glob(relative))), None)


def find_local(spec: DataSpec, data_dir: str | Path | None = None) -> Path | None:
    return next((r for r in local_roots(data_dir) if spec.present_in(r)), None)


def resolve(
    spec: DataSpec, data_dir: str | Path | None, fetch: Callable[[Path], None]
) -> Path:
    """The data folder holding `spec.files`, fetching a hub copy into the cache if needed."""
    root = find_local(spec, data_dir)
    if root is not None:
        return root
    if data_dir:
        raise BadInput(f"data folder {data_dir} lacks suite {spec.suite}'s files (needs "
                       f"{', '.join(spec.files)}; --data-dir is the only place looked: "
                       f"`pmbench data download {spec.suite} --data-dir {data_dir}` fetches "
                       "them)")
    looked = ", ".join(str(r) for r in local_roots(data_dir))
    offline = hub_offline_reason()
    if offline:
        raise BadInput(
            f"no data for suite {spec.suite} (needs {', '.join(spec.files)}; looked in {looked}): "
            f"pass --data-dir DIR or set ${DATA_ENV} to a folder laid out like ../shared/data, "
            f"or go online to fetch {spec.hub} from the HF hub via `datasets` ({offline})"
        )
    target = cache_data_dir()
    download(spec, target, fetch)
    return target


def download(spec: DataSpec, target: Path, fetch: Callable[[Path], None]) -> None:
    """Fetch the hub copy into `target` (one-line BadInput on any failure)."""
    try:
        fetch(target)
    except BadInput:
        raise
    except Exception as exc:  # network, auth, schema: all one line for the user
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadInput(f"could not fetch {spec.hub} for suite {spec.suite}: {first}") from None
    if not spec.present_in(target):
        raise BadInput(f"fetched {spec.hub} but {target} still lacks {', '.join(spec.files)}")


def load_hub(path: str, name: str | None = None, split: str | None = None):
    """`datasets.load_dataset`, imported late (it is slow to import)."""
    import datasets

    return datasets.load_dataset(path, name, split=split)


def _parquet_file(path: Path, columns: Sequence[str]):
    """The opened parquet file, checked for `columns`; unreadable or lacking: one line."""
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadInput(f"cannot read {path}: {first}") from None
    missing = [c for c in columns if c not in file.schema_arrow.names]
    if missing:
        raise BadInput(f"{path}: no column {', '.join(missing)} (has "
                       f"{', '.join(file.schema_arrow.names)})")
    return file


def iter_parquet(path: Path, columns: Sequence[str]) -> Iterator[dict]:
    """The rows of a parquet file (only `columns`), batch by batch: a reader that needs the
    first few rows of a large split reads no more than a batch of it."""
    for batch in _parquet_file(path, columns).iter_batches(batch_size=256,
                                                           columns=list(columns)):
        yield from batch.to_pylist()


def read_parquet(path: Path, columns: Sequence[str]) -> list[dict]:
    """All rows of a parquet file (only `columns`)."""
    return _parquet_file(path, columns).read(columns=list(columns)).to_pylist()
