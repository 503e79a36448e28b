"""Task data from the Hugging Face hub: one split of a dataset repo as parquet, cached, read with pyarrow.

    <cache>/task_data/<org>--<name>/...parquet                the repo's files, as the hub names them
    <cache>/task_data/<org>--<name>/.nanochat/<subset>/<split>.json   the manifest, written last

`load_hub_rows` answers from the cache, or fetches the split first through nanochat.fetch (the same
offline switch, retry policy and reachability check as dataset shards and the CORE bundle). No
`datasets` dependency: the rows stay columnar until one is asked for.
"""
from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from nanochat.atomic import atomic_write_json
from nanochat.chat_format import TaskError, shorten
from nanochat.fetch import PERMANENT_HTTP, TransferProgress, hub_byte_counter, offline, retrying, size_text, unreachable

RETRY_BACKOFF_S = 0.5  # a damaged task file is small: fetch it again soon


class TaskDataMissing(TaskError):
    """A task's data is not on this machine and could not be fetched; the message says how to get it."""


class HubRows(Sequence):
    """The rows of a parquet table as dicts, converted when asked for (a 460K-row split stays columnar)."""

    def __init__(self, table):
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {i} out of range for {n} rows")
        return self.table.slice(i, 1).to_pylist()[0]


def hub_cache_dir(repo: str) -> Path:
    from nanochat import paths
    return paths.cache_dir() / "task_data" / repo.replace("/", "--")


def _manifest_path(repo: str, subset: str | None, split: str) -> Path:
    return hub_cache_dir(repo) / ".nanochat" / (subset or "default") / f"{split}.json"


def hub_split_info(repo: str, *, subset: str | None = None, split: str) -> dict | None:
    """What the cache holds for a split ({"files", "rows", ...}), or None when it is not fully downloaded."""
    manifest = _manifest_path(repo, subset, split)
    try:
        info = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    base = hub_cache_dir(repo)
    return info if all((base / f).is_file() for f in info["files"]) else None


def load_hub_rows(repo: str, *, subset: str | None = None, split: str, endpoint: str | None = None,
                  revision: str | None = None, fetch_hint: str | None = None) -> HubRows:
    """The rows of one split of a hub dataset, from the local cache or fetched into it first.

    The parquet files are found by listing the repo (`HfApi.list_repo_tree`): under `<subset>/` (or
    `data/` without a subset), files named `<split>-00000-of-00001.parquet` or kept in a `<split>/`
    folder. They are downloaded with `hf_hub_download` (honouring `endpoint`, else `HF_ENDPOINT`) into
    `<cache>/task_data/<org>--<name>/`, checked to be readable parquet, and recorded in a manifest
    written last, so a split is either complete on disk or fetched again. `fetch_hint` is the command
    that fetches it, quoted in the error when the hub cannot be reached.
    """
    info = hub_split_info(repo, subset=subset, split=split)
    if info is None:
        info = _fetch_split(repo, subset, split, endpoint, revision, fetch_hint)
    import pyarrow as pa
    import pyarrow.parquet as pq
    base = hub_cache_dir(repo)
    tables = [pq.read_table(base / f) for f in info["files"]]
    table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    return HubRows(table)


def _fetch_split(repo, subset, split, endpoint, revision, fetch_hint) -> dict:
    what = f"{repo} {subset + '/' if subset else ''}{split}"
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    fix = (f"fetch it on a machine that reaches the hub with `{fetch_hint}`, or copy its cache folder "
           f"{hub_cache_dir(repo)} here" if fetch_hint else f"copy its cache folder {hub_cache_dir(repo)} here")
    blocked = offline(endpoint or "https://huggingface.co")
    if blocked:
        raise TaskDataMissing(f"{what} is not downloaded and {blocked} is set; {fix}")
    why = unreachable(endpoint)
    if why:
        raise TaskDataMissing(f"{what} is not downloaded and the hub cannot be reached ({why}); {fix}")
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError
    folder = subset or "data"
    try:
        listing = [entry.path for entry in HfApi(endpoint=endpoint).list_repo_tree(
            repo, path_in_repo=folder, recursive=True, repo_type="dataset", revision=revision)
            if entry.path.endswith(".parquet")]
    except HfHubHTTPError as exc:
        if getattr(exc.response, "status_code", None) == 404:
            raise TaskDataMissing(f"the hub has no dataset {repo!r} with a folder {folder!r} at revision "
                                  f"{revision or 'main'} (endpoint {endpoint or 'https://huggingface.co'})") from None
        raise TaskDataMissing(f"listing {what} on the hub failed ({shorten(str(exc), 160)}); {fix}") from None
    except Exception as exc:
        raise TaskDataMissing(f"{what} is not downloaded and the hub could not be reached "
                              f"({type(exc).__name__}: {shorten(str(exc), 160)}); {fix}") from None
    files = sorted(p for p in listing if _is_split_file(p[len(folder) + 1:], split))
    if not files:
        found = sorted({_split_of(p[len(folder) + 1:]) for p in listing})
        raise TaskDataMissing(f"{repo} has no parquet files for split {split!r} under {folder}/; "
                              f"splits there: {', '.join(found) or 'none'}")
    base = hub_cache_dir(repo)
    base.mkdir(parents=True, exist_ok=True)
    progress = TransferProgress(what, len(files), sys.stderr)
    for path in files:
        local = _download_checked(hf_hub_download, repo, path, base, endpoint, revision, what, fix,
                                  hub_byte_counter(progress))
        progress.line(f"{path} {size_text(local.stat().st_size)}", finished=True)
    progress.close()
    import pyarrow.parquet as pq
    rows = sum(pq.read_metadata(base / f).num_rows for f in files)
    info = {"repo": repo, "subset": subset, "split": split, "revision": revision or "main", "files": files,
            "rows": rows}
    manifest = _manifest_path(repo, subset, split)
    atomic_write_json(manifest, info)  # written last: its presence means the split is complete
    return info


def _download_checked(hf_hub_download, repo, path, base, endpoint, revision, what, fix, counter, tries=3):
    """Download one file, retrying a failed or damaged transfer (nanochat.fetch's policy)."""
    import pyarrow.parquet as pq
    from huggingface_hub.errors import HfHubHTTPError

    def attempt(n: int) -> Path:
        try:
            local = Path(hf_hub_download(repo, path, repo_type="dataset", revision=revision, local_dir=base,
                                         endpoint=endpoint, tqdm_class=counter))
            pq.read_metadata(local)  # a truncated or corrupted download has no valid footer
            return local
        except HfHubHTTPError as exc:
            if getattr(exc.response, "status_code", None) in PERMANENT_HTTP:
                raise TaskDataMissing(f"downloading {path} of {what} failed ({shorten(str(exc), 160)}); "
                                      f"{fix}") from None
            (base / path).unlink(missing_ok=True)
            raise
        except Exception:
            (base / path).unlink(missing_ok=True)
            raise

    try:
        return retrying(attempt, tries=tries, backoff=RETRY_BACKOFF_S, fatal=(TaskDataMissing,))
    except TaskDataMissing:
        raise
    except Exception as error:
        raise TaskDataMissing(f"downloading {path} of {what} failed {tries} times "
                              f"({type(error).__name__}: {shorten(str(error), 160)}); {fix}") from None


def _is_split_file(rel: str, split: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return rel.split("/")[0] == split if "/" in rel else (name == f"{split}.parquet" or name.startswith(f"{split}-"))


def _split_of(rel: str) -> str:
    return rel.split("/")[0] if "/" in rel else re.split(r"[-.]", rel.rsplit("/", 1)[-1])[0]
