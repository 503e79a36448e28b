"""`local:PATH`: a folder of your own text as a dataset.

PATH holds .parquet files (a string `text` column), .txt files (each file is one document) or .jsonl
files (each line an object with a `text` field), in subfolders too; hidden files and folders are
skipped. Two cases, so that every reader goes through the same parquet code:

- a folder of two or more parquet files with small row groups (at most 8192 rows) is read in place,
  in path order, the last file being validation;
- anything else is converted once into house-format shards (`write_shard`) in a cache folder under
  `datasets_dir()/local/`, keyed by the folder's path and its files' names, sizes and mtimes: edit a
  file and the next use converts again (the old cache of that folder is then removed). Documents keep
  their order; every 20th (the 1st, 21st, ...) is carved into the validation shard — the last shard —
  until it holds one shard's worth of text.

The source folder is only ever read.
"""
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator

from nanochat.atomic import atomic_write_json, publish, temp_path
from nanochat.datasets import DatasetError, DownloadSummary, ShardedDataset, shard_name, write_shard
from nanochat.textfiles import collect_files, iter_documents, open_text_parquet

SHARD_CHARS = 100_000_000   # text per converted shard (~40 MB of parquet)
VAL_EVERY = 20              # ~5% of documents go to validation ...
VAL_MAX_CHARS = SHARD_CHARS  # ... until the validation shard is full
MAX_IN_PLACE_ROWS = 8192    # bigger row groups would starve ranks that stride over them: convert those
FORMAT = 1                  # bump when the conversion changes, so old caches are rebuilt


class LocalDataset(ShardedDataset):
    name = "local"
    description = ("your own folder: local:PATH with .parquet (a text column), .txt (one document per file) "
                   "or .jsonl (a text field per line); converted once into shards")

    def __init__(self, source: str | Path | None = None, *, cache: Path | None = None):
        self.source = Path(source).expanduser().resolve() if source else None
        self._dir = cache          # the folder holding the shards, once known
        self._in_place: list[Path] | None = None

    @property
    def spec(self) -> str:
        return f"local:{self.source}" if self.source else "local"

    def bind(self, arg: str) -> "LocalDataset":
        if not arg.strip():
            raise DatasetError("the local dataset needs a folder: local:PATH, e.g. local:~/my-texts")
        return LocalDataset(arg)

    def variants(self) -> list[ShardedDataset]:
        """`local` itself, then every folder converted so far (read from its cache, nothing is converted)."""
        from nanochat import paths
        root = paths.datasets_dir() / "local"
        found = []
        for d in sorted(root.iterdir()) if root.exists() else ():
            if not d.name.startswith(".") and (d / "source.json").exists():
                found.append(LocalDataset(json.loads((d / "source.json").read_text())["source"], cache=d))
        return [self] + found

    def download_hint(self, num_shards=None) -> str:
        if self.source is None:
            return "name a folder: nanochat data download local:PATH"
        return f"add more text to {self.source}, then: nanochat data download {self.spec}"

    def local_dir(self) -> Path:
        return self.prepare()

    def shard_paths(self) -> list[Path]:
        self.prepare()
        return list(self._in_place) if self._in_place is not None else super().shard_paths()

    def download(self, num_shards=None, workers=4, **options):
        """Nothing to fetch: convert the folder now (if needed) so training starts without waiting."""
        start = time.monotonic()
        self.prepare()
        names = [p.name for p in self.shard_paths()]
        return DownloadSummary(self.spec, self._dir, skipped=names, seconds=time.monotonic() - start)

    # -- preparing the shards -------------------------------------------------------------------------
    def prepare(self) -> Path:
        """The folder with this dataset's shards: the source itself, or its (new) conversion cache."""
        if self._dir is not None:
            return self._dir
        if self.source is None:
            raise DatasetError("the local dataset needs a folder: use local:PATH, e.g. local:~/my-texts")
        files = _scan(self.source)
        parquet = [f for f in files if f.suffix.lower() == ".parquet"]
        if len(parquet) == len(files) >= 2 and all(_small_row_groups(f) for f in parquet):
            self._in_place, self._dir = parquet, self.source
            return self._dir
        from nanochat import paths
        stats = [[str(f.relative_to(self.source)), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
        key = hashlib.sha256(json.dumps([FORMAT, str(self.source), stats]).encode()).hexdigest()[:16]
        cache = paths.datasets_dir() / "local" / f"{self.source.name or 'root'}-{key}"
        if not (cache / "source.json").exists():
            _convert(self.source, files, cache)
        self._dir = cache
        return cache


def _scan(source: Path) -> list[Path]:
    if not source.exists():
        raise DatasetError(f"local dataset folder {source} does not exist; give an existing folder: local:PATH")
    if not source.is_dir():
        raise DatasetError(f"local:{source} is a file, not a folder; put it in a folder of its own and use "
                           f"local:FOLDER")
    return collect_files([source])


def _small_row_groups(path: Path) -> bool:
    pf = open_text_parquet(path)
    sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
    return bool(sizes) and max(sizes) <= MAX_IN_PLACE_ROWS


def _convert(source: Path, files: list[Path], cache: Path) -> None:
    """Write the shards into a temporary folder and rename it into place: a cache is whole or absent."""
    print(f"local:{source}: converting {len(files)} file(s) into parquet shards in {cache}", file=sys.stderr)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(cache)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        counts = _write_shards(iter_documents(files), tmp, source)
        atomic_write_json(tmp / "source.json", {"source": str(source), "files": len(files), **counts})
        try:
            publish(tmp, cache)
        except OSError:
            if not (cache / "source.json").exists():  # not another process finishing first: a real error
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for other in cache.parent.iterdir():  # caches of earlier versions of this folder are stale now
        info = other / "source.json"
        if other != cache and info.exists() and json.loads(info.read_text()).get("source") == str(source):
            shutil.rmtree(other, ignore_errors=True)
    print(f"local:{source}: {counts['documents']} documents -> {counts['train_shards']} training shard(s) + "
          f"1 validation shard ({counts['val_documents']} documents)", file=sys.stderr)


def _write_shards(docs: Iterator[str], out: Path, source: Path) -> dict:
    train, val, train_chars, val_chars, shards, total = [], [], 0, 0, 0, 0
    for i, doc in enumerate(docs):
        total += 1
        if i % VAL_EVERY == 0 and val_chars < VAL_MAX_CHARS:
            val.append(doc)
            val_chars += len(doc)
            continue
        train.append(doc)
        train_chars += len(doc)
        if train_chars >= SHARD_CHARS:
            write_shard(out / shard_name(shards), train)
            shards, train, train_chars = shards + 1, [], 0
    if train:
        write_shard(out / shard_name(shards), train)
        shards += 1
    if not shards:
        raise DatasetError(f"{source} holds {total} non-empty document(s); a dataset needs at least 2 "
                           f"(one for training, one for validation): add more text")
    write_shard(out / shard_name(shards), val)
    return {"documents": total, "train_shards": shards, "val_documents": len(val)}
