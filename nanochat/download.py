"""Fetch a hub dataset's shards: parallel, retried, verified, and placed atomically.

`download(dataset, n)` fetches training shards 0..n-1 plus the dataset's pinned validation shard from
its Hugging Face repo through `huggingface_hub.hf_hub_download` (which resumes a broken transfer with
HTTP Range requests). Each shard lands first in a hidden staging folder (`<local dir>/.download/`),
is verified there — size and sha256 against the hub's metadata, parquet footer, `text` column, first
row group — and only then renamed to `shard_XXXXX.parquet`. So a shard under its final name is always
complete, a half-written file never looks like one, and rerunning skips what is already there.

`HubDataset` is the dataset kind whose shards live in such a repo (fineweb-edu, climbmix subclass it).
The endpoint is the `endpoint=` argument, else `HF_ENDPOINT`, else huggingface.co. Retries, the offline
switch and the progress display are nanochat.fetch's, shared with task data and the CORE bundle.
"""
import os
import re
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from nanochat.atomic import file_sha256, publish
from nanochat.datasets import DatasetError, DownloadSummary, ShardedDataset, shard_name
from nanochat.fetch import PERMANENT_HTTP, TransferProgress, hub_byte_counter, offline, retrying, size_text

STAGING = ".download"
STALE_PARTIAL_S = 600  # a partial file untouched this long belongs to a download that died
SHA256 = re.compile(r"[0-9a-f]{64}")


class ShardError(DatasetError):
    """A shard file failed verification; the message says how."""


class DownloadError(DatasetError):
    pass


class _Cancelled(Exception):
    """Raised inside a download thread to stop it (Ctrl-C in the main thread)."""


def _stop_if(stop: threading.Event) -> None:
    if stop.is_set():
        raise _Cancelled()


# -- the dataset kind this module fetches -----------------------------------------------------------
class HubDataset(ShardedDataset):
    """Shards `shard_XXXXX.parquet` of a Hugging Face dataset repo, downloaded into `datasets_dir()/<name>`.

    Subclasses set `name`, `description`, `repo_id`, `num_shards` and the size facts; the last shard of
    the repo is validation unless `val_shard` says otherwise. `download(n)` fetches training shards
    0..n-1 plus the validation shard, so validation never changes with `-n`.
    """

    repo_id = ""
    revision = "main"

    def __init__(self):
        if self.val_shard is None and self.num_shards:
            self.val_shard = self.num_shards - 1

    @property
    def num_train_shards(self) -> int:
        return self.num_shards - 1

    def local_dir(self) -> Path:
        from nanochat import paths
        return paths.datasets_dir() / self.name

    def shard_indices(self, num_train: int) -> list[int]:
        """Which shards `download -n num_train` fetches: training shards 0..n-1, then validation (-1 = all)."""
        if num_train is None or num_train == 0 or num_train < -1:
            raise DatasetError(f"give the number of training shards to download for {self.spec!r}: -n N with "
                               f"N between 1 and {self.num_train_shards} (or -1 for all), got {num_train}")
        n = self.num_train_shards if num_train == -1 else min(num_train, self.num_train_shards)
        return [i for i in range(self.num_shards) if i != self.val_shard][:n] + [self.val_shard]

    def download(self, num_shards: int | None = None, workers: int = 4, **options):
        return download(self, num_shards, workers=workers, **options)



# -- verification ----------------------------------------------------------------------------------
def verify_shard(path: Path, *, size: int | None = None, sha256: str | None = None,
                 first_row_group: bool = True) -> int:
    """Check a shard file and return its number of documents; raise ShardError saying what is wrong.

    Without `size`/`sha256` (a shard already on disk) this reads only the parquet footer, and the
    first row group when asked: cheap enough to run on every shard at every start.
    """
    import pyarrow.parquet as pq
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise ShardError(f"{path} has {actual} bytes but the hub says {size} (truncated or padded)")
    if sha256 is not None:
        actual_sha = file_sha256(path)
        if actual_sha != sha256:
            raise ShardError(f"{path} has sha256 {actual_sha[:12]}… but the hub says {sha256[:12]}… (corrupt)")
    try:
        pf = pq.ParquetFile(path)
        if "text" not in pf.schema_arrow.names:
            raise ShardError(f"{path} has no `text` column (columns: {', '.join(pf.schema_arrow.names)})")
        if first_row_group and pf.metadata.num_row_groups:
            pf.read_row_group(0, columns=["text"])
        return pf.metadata.num_rows
    except ShardError:
        raise
    except Exception as exc:
        raise ShardError(f"{path} is not a readable parquet shard ({exc})") from None


# -- one shard -------------------------------------------------------------------------------------
@dataclass
class _Job:
    dataset: ShardedDataset
    endpoint: str | None
    token: str | bool | None
    retries: int
    backoff: float
    progress: TransferProgress
    stop: threading.Event
    counter: type


def _fetch(job: _Job, index: int) -> tuple[str, int]:
    """Make shard `index` present and verified; return ("skipped" | "downloaded", bytes fetched)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    ds, name = job.dataset, shard_name(index)
    final = ds.local_dir() / name
    remote = f"{ds.repo_id}/{name}"
    if final.exists():
        try:
            verify_shard(final, first_row_group=False)
            job.progress.line(f"{name} already on disk", finished=True)
            return "skipped", 0
        except ShardError as exc:  # e.g. left by a tool that wrote in place; the hub has the original
            job.progress.line(f"{exc}; deleting it and downloading it again")
            final.unlink()
    stage = ds.local_dir() / STAGING
    blocked = offline(job.endpoint or "https://huggingface.co")
    if blocked:
        raise DownloadError(f"cannot download {remote}: {blocked} is set; unset it and retry")

    def attempt(n: int) -> tuple[str, int]:
        if job.stop.is_set():
            raise _Cancelled()
        try:
            url = hf_hub_url(ds.repo_id, name, repo_type="dataset", revision=ds.revision, endpoint=job.endpoint)
            meta = get_hf_file_metadata(url, token=job.token)
            # The commit the metadata came from, so that size and hash describe the very bytes we get.
            got = Path(hf_hub_download(ds.repo_id, name, repo_type="dataset",
                                       revision=meta.commit_hash or ds.revision, local_dir=stage,
                                       endpoint=job.endpoint, token=job.token, force_download=n > 1,
                                       tqdm_class=job.counter))
            sha = meta.etag if meta.etag and SHA256.fullmatch(meta.etag) else None  # LFS files: etag = sha256
            verify_shard(got, size=meta.size, sha256=sha)
        except OfflineModeIsEnabled:
            raise DownloadError(f"cannot download {remote}: HF_HUB_OFFLINE is set; unset it and retry") from None
        except HfHubHTTPError as exc:
            if getattr(exc.response, "status_code", None) in PERMANENT_HTTP:
                raise DownloadError(f"cannot download {remote} from {job.endpoint or 'huggingface.co'} "
                                    f"({_first_line(exc)}); check the dataset's repo_id and your access "
                                    f"(`hf auth login` for gated repos)") from None
            (stage / name).unlink(missing_ok=True)
            raise
        except Exception:  # network trouble, a short or corrupt file: try again from scratch
            (stage / name).unlink(missing_ok=True)
            raise
        size = got.stat().st_size
        publish(got, final)
        job.progress.line(f"{name} {size_text(size)}", finished=True)
        return "downloaded", size

    def on_retry(n: int, exc: BaseException, wait_s: float) -> None:
        job.progress.line(f"{name}: attempt {n}/{job.retries} failed ({_first_line(exc)}); retrying in {wait_s:g} s")

    try:
        return retrying(attempt, tries=job.retries, backoff=job.backoff, fatal=(_Cancelled, DownloadError),
                        on_retry=on_retry, wait=job.stop.wait)
    except (_Cancelled, DownloadError):
        raise
    except Exception as exc:
        raise DownloadError(f"{final} (repo file {remote}) could not be fetched intact after {job.retries} "
                            f"attempts: {_first_line(exc)}") from None


# -- the whole download ----------------------------------------------------------------------------
def download(dataset: ShardedDataset, num_shards: int | None, workers: int = 4, *, endpoint: str | None = None,
             token: str | bool | None = None, retries: int = 5, backoff: float = 2.0,
             out=None) -> DownloadSummary:
    """Fetch training shards 0..num_shards-1 (-1 = all) and the validation shard of a hub dataset.

    Shards already on disk are kept; the others are fetched by `workers` threads, each retried
    `retries` times with exponential backoff (`backoff`, 2x, 4x ... seconds). Raises DownloadError
    naming every shard that could not be fetched; the good ones stay.
    """
    if not getattr(dataset, "repo_id", None):
        raise DatasetError(f"dataset {dataset.spec!r} is not downloaded from the hub; {dataset.download_hint()}")
    if workers < 1 or retries < 1:
        raise DatasetError(f"workers and retries must be at least 1, got workers={workers}, retries={retries}")
    indices = dataset.shard_indices(num_shards)
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    out = out or sys.stderr
    local = dataset.local_dir()
    local.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(local / STAGING)

    progress = TransferProgress(dataset.spec, len(indices), out, unit="shards")
    stop = threading.Event()
    counter = hub_byte_counter(progress, lambda: _stop_if(stop))  # also stops a thread's transfer on Ctrl-C
    job = _Job(dataset, endpoint, token, retries, backoff, progress, stop, counter)
    summary = DownloadSummary(dataset.spec, local)
    if num_shards > dataset.num_train_shards:
        out.write(f"{dataset.spec} has only {dataset.num_train_shards} training shards; fetching all of them\n")
    out.write(f"{dataset.spec}: {len(indices) - 1} training shard(s) + validation shard "
              f"{dataset.val_shard} from {dataset.repo_id} into {local} ({workers} workers)\n")
    failures = []
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nanochat-download")
    futures = {pool.submit(_fetch, job, i): i for i in indices}
    try:
        for fut in as_completed(futures):
            try:
                outcome, nbytes = fut.result()
            except DownloadError as exc:
                failures.append(str(exc))
                progress.line(f"FAILED {shard_name(futures[fut])}", finished=True)
                continue
            (summary.downloaded if outcome == "downloaded" else summary.skipped).append(shard_name(futures[fut]))
            summary.bytes += nbytes
    except BaseException:  # Ctrl-C: stop the threads at their next chunk; partial files are discarded
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        progress.close()
        raise
    pool.shutdown()
    progress.close()
    summary.downloaded.sort()
    summary.skipped.sort()
    summary.seconds = time.monotonic() - progress.start
    if failures:
        raise DownloadError(f"{len(failures)} of {len(indices)} shard(s) of {dataset.spec!r} could not be "
                            f"downloaded:\n  " + "\n  ".join(failures) +
                            f"\nthe {len(indices) - len(failures)} good one(s) are kept in {local}; "
                            f"rerun `{dataset.download_hint(num_shards)}` to try again")
    shutil.rmtree(local / STAGING, ignore_errors=True)  # only hub bookkeeping is left there
    return summary


def _remove_stale_partials(stage: Path) -> None:
    """Partial files of downloads killed without cleanup (kill -9, power loss) are never reused: drop them."""
    now = time.time()
    for p in stage.rglob("*.incomplete") if stage.exists() else ():
        try:
            if now - p.stat().st_mtime > STALE_PARTIAL_S:
                p.unlink()
        except FileNotFoundError:  # finished or cleaned up by its own download meanwhile
            pass


def _first_line(exc) -> str:
    response = getattr(exc, "response", None)
    if response is not None:  # an HTTP error: its status and the hub's own words, not the whole URL
        return f"HTTP {response.status_code}: {getattr(exc, 'server_message', None) or response.reason_phrase}"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
