"""The DCLM eval bundle (CORE's data): fetched once into the cache, then shared by every run and rank.

    <cache dir>/eval_bundle/              the bundle: core.yaml, eval_meta_data.csv, eval_data/<category>/*.jsonl
    <cache dir>/eval_bundle/.source.json  where it came from: url, sha256 of the zip, size of every file
    <cache dir>/eval_bundle.zip.part      a download in progress (resumed with HTTP Range after a failure)
    <cache dir>/eval_bundle.lock          fcntl lock: the first process downloads, the others wait and reuse

Where the bundle comes from (first match wins):
  1. the `url` argument (the core-eval stage's `bundle_url` setting);
  2. NANOCHAT_EVAL_BUNDLE=/path/to/eval_bundle — a folder placed by hand, used as it is (offline machines);
  3. NANOCHAT_EVAL_BUNDLE_URL — a mirror, or file:///path/to/eval_bundle.zip for a zip copied by hand;
  4. the official URL below.

The zip is checked (sha256 when one is known, and every member's CRC), extracted into a temporary
folder beside the final one and renamed into place, so `eval_bundle/` is always complete or absent.
A bundle already there is reused when it came from the same URL, matches the expected sha256 (if
any) and no file in it changed size since extraction; otherwise it is fetched again.
"""
import contextlib
import fcntl
import http.client
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from nanochat import paths
from nanochat.atomic import atomic_write_json, file_sha256, publish
from nanochat.errors import NanochatError
from nanochat.fetch import PERMANENT_HTTP, TransferProgress, offline, retrying

OFFICIAL_URL = "https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip"
# url -> sha256 of its zip. The official zip could not be fetched where this was written, so its
# digest is not pinned yet; add it here once known and every download is verified against it.
KNOWN_SHA256: dict[str, str] = {}
MARKER = ".source.json"
REQUIRED = ("core.yaml", "eval_meta_data.csv", "eval_data")
CHUNK = 1 << 20


class BundleError(NanochatError):
    """The eval bundle could not be fetched or is not usable; the message says what to do."""


def fetch(url: str | None = None, *, sha256: str | None = None, log=None, retries: int = 5,
          backoff: float = 1.0, timeout: float = 60.0) -> Path:
    """The folder of a ready eval bundle (downloading and extracting it first if needed)."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    local = os.environ.get("NANOCHAT_EVAL_BUNDLE")
    if not url and local:
        return check_layout(Path(local).expanduser(), "NANOCHAT_EVAL_BUNDLE")
    url = url or os.environ.get("NANOCHAT_EVAL_BUNDLE_URL") or OFFICIAL_URL
    expected = (sha256 or KNOWN_SHA256.get(url) or "").lower() or None
    cache = paths.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target, part = cache / "eval_bundle", cache / "eval_bundle.zip.part"
    with _locked(cache / "eval_bundle.lock", log):
        why = _not_reusable(target, url, expected)
        if why is None:
            return target
        if target.exists():
            log(f"eval bundle in {target}: {why}; fetching it again")
        _check_allowed(url)
        log(f"fetching the CORE eval bundle from {url}")
        _download(url, part, retries=retries, backoff=backoff, timeout=timeout, log=log)
        digest = file_sha256(part)
        if expected and digest != expected:
            part.unlink()
            raise BundleError(f"the eval bundle from {url} has sha256 {digest} but {expected} was expected; the "
                              f"download was deleted. Run again to retry; if it keeps happening the file at that "
                              f"URL changed: check the URL or the expected checksum")
        _extract(part, target, {"url": url, "sha256": digest, "bytes": part.stat().st_size})
        part.unlink()
        log(f"eval bundle ready in {target} (sha256 {digest[:12]}…)")
    return target


def needs_download(url: str | None = None) -> bool:
    """True when `fetch(url)` would have to download the bundle (nothing usable is here yet)."""
    if not url and os.environ.get("NANOCHAT_EVAL_BUNDLE"):
        return False
    url = url or os.environ.get("NANOCHAT_EVAL_BUNDLE_URL") or OFFICIAL_URL
    return _not_reusable(paths.cache_dir() / "eval_bundle", url, (KNOWN_SHA256.get(url) or "").lower() or None) is not None


def check_layout(folder: Path, where: str = "the eval bundle") -> Path:
    """`folder` if it looks like an eval bundle, else a BundleError naming what is missing."""
    missing = [name for name in REQUIRED if not (folder / name).exists()]
    if missing:
        raise BundleError(f"{where}: {folder} is not an eval bundle folder (missing {', '.join(missing)}); point "
                          f"it at the unzipped eval_bundle/ folder, the one that holds core.yaml")
    return folder


def source(folder: Path) -> dict:
    """What `.source.json` recorded about a downloaded bundle ({} for a folder placed by hand)."""
    try:
        return json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# -- reuse -------------------------------------------------------------------------------------------
def _not_reusable(target: Path, url: str, expected: str | None) -> str | None:
    """None if the bundle in `target` can be used as it is, else why not."""
    if not target.exists():
        return "not downloaded yet"
    marker = source(target)
    if not marker:
        # Only a person puts a folder there without a marker (ours is written before the rename).
        check_layout(target, f"{target} (no {MARKER}, so placed by hand)")
        if expected:  # never delete what a person put there
            raise BundleError(f"{target} was placed by hand, so it cannot be checked against sha256 {expected}; "
                              f"move it elsewhere and point NANOCHAT_EVAL_BUNDLE at it, or delete it to download")
        return None
    if marker.get("url") != url:
        return f"it came from {marker.get('url')}, not {url}"
    if expected and marker.get("sha256") != expected:
        return f"its sha256 is {marker.get('sha256')}, not the expected {expected}"
    for rel, size in marker.get("files", {}).items():
        file = target / rel
        if not file.is_file() or file.stat().st_size != size:
            return f"{rel} is missing or changed since it was extracted"
    return None


def _check_allowed(url: str) -> None:
    # Tests (and people who want no surprise traffic) set NANOCHAT_OFFLINE: only local sources then.
    blocked = offline(url)
    if blocked:
        raise BundleError(f"{blocked} is set, so the eval bundle is not downloaded from {url}. " + _by_hand())


def _by_hand() -> str:
    return (f"To use a copy made elsewhere, download {OFFICIAL_URL} (~162 MB) on a machine that can, then unzip "
            f"it and set NANOCHAT_EVAL_BUNDLE=/path/to/eval_bundle (the folder holding core.yaml), or set "
            f"NANOCHAT_EVAL_BUNDLE_URL=file:///path/to/eval_bundle.zip")


# -- downloading -------------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(path: Path, log):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another process is fetching the eval bundle; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock; a crashed holder releases it by dying


def _download(url: str, part: Path, *, retries: int, backoff: float, timeout: float, log) -> None:
    """Fetch `url` into `part`, resuming what is already there; retry transient failures with backoff."""
    had = [0]  # bytes on disk when the latest attempt started

    def attempt(n: int) -> None:
        have = had[0] = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "nanochat"} | ({"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                status = resp.status or 200  # file:// answers have no status
                if have and status != 206:
                    have = 0  # the server ignored the Range: start over
                total = _total_size(resp, have)
                progress = TransferProgress("eval bundle", 1, log=log)
                progress.expect_bytes(total, have)
                _copy(resp, part, have, progress)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # asked past the end: the partial file is stale
                part.unlink()
            elif exc.code in PERMANENT_HTTP:
                raise BundleError(f"{url} answered HTTP {exc.code} {exc.reason}; check the URL (bundle_url setting "
                                  f"or NANOCHAT_EVAL_BUNDLE_URL). " + _by_hand()) from None
            raise
        size = part.stat().st_size
        if total is not None and size != total:
            raise http.client.IncompleteRead(b"", total - size)

    def on_retry(n: int, exc: BaseException, delay: float) -> None:
        log(f"eval bundle download interrupted ({_reason(exc)}); retrying in {delay:.1f}s")

    try:
        retrying(attempt, tries=retries + 1, backoff=backoff, fatal=(BundleError,), on_retry=on_retry,
                 progressed=lambda: part.exists() and part.stat().st_size > had[0])  # progress earns fresh tries
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise BundleError(f"could not download the CORE eval bundle from {url} "
                          f"({_reason(exc)}; {retries + 1} tries). " + _by_hand()) from None


def _total_size(resp, have: int) -> int | None:
    content_range = resp.headers.get("Content-Range", "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].strip().isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length")
    return have + int(length) if length and length.isdigit() else None


def _copy(resp, part: Path, have: int, progress: TransferProgress) -> None:
    with open(part, "ab" if have else "wb") as f:
        while chunk := resp.read(CHUNK):
            f.write(chunk)
            progress.add_bytes(len(chunk))


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    text = str(reason if reason is not None and not isinstance(exc, urllib.error.HTTPError) else exc)
    return f"{type(exc).__name__}: {text}".splitlines()[0][:200]


# -- extraction --------------------------------------------------------------------------------------
def _extract(zip_path: Path, target: Path, marker: dict) -> None:
    """Unzip into a temporary folder beside `target`, check it, then swap it in with renames."""
    tmp = Path(tempfile.mkdtemp(prefix=".eval_bundle.", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                bad = zf.testzip()  # reads every member and checks its CRC
                if bad is not None:
                    raise zipfile.BadZipFile(f"member {bad} fails its CRC check")
                zf.extractall(tmp)  # extractall drops absolute paths and '..' parts
        except (zipfile.BadZipFile, EOFError) as exc:
            zip_path.unlink()
            raise BundleError(f"the eval bundle downloaded from {marker['url']} is not a valid zip ({exc}); the "
                              f"download was deleted, run again to fetch it afresh") from None
        # The official zip holds one top folder, eval_bundle/; accept a zip of the folder's contents too.
        root = tmp / "eval_bundle" if (tmp / "eval_bundle" / "core.yaml").is_file() else tmp
        check_layout(root, f"the zip from {marker['url']}")
        files = {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}
        atomic_write_json(root / MARKER, {**marker, "files": files})
        old = None
        if target.exists():
            old = target.with_name(f".eval_bundle.old.{os.getpid()}")
            target.rename(old)
        publish(root, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
