"""Text datasets as parquet shards: the one format every dataset plugin hands to the core.

A dataset is a folder of `shard_XXXXX.parquet` files with a `text` column, written in row groups of
~1024 documents (`write_shard`); the validation split is either a pinned shard (`val_shard`) or the
last file. Readers walk row groups, strided over ranks, and report their position
`(shard, row_group, epoch)` so a resumed loader continues exactly where it stopped.

Dataset plugins subclass `ShardedDataset` (say where the shards are) or `nanochat.download.HubDataset`
(shards of a Hugging Face dataset repo); `download()` answers with a `DownloadSummary`. Users name a dataset with a spec,
`NAME` or `NAME:ARG` (e.g. `fineweb-edu`, `local:~/my-texts`), turned into an object by `resolve`.
"""
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from nanochat.atomic import atomic_path
from nanochat.errors import NanochatError
from nanochat.fetch import size_text

SPLITS = ("train", "val")
DOCS_PER_ROW_GROUP = 1024  # a multiple of 2: ranks stride over row groups evenly


class DatasetError(NanochatError):
    pass


@dataclass(frozen=True)
class Position:
    """Where a reader is: the row group just read (resume continues after it)."""

    shard: int = 0
    row_group: int = -1
    epoch: int = 1

    def to_dict(self) -> dict:
        return {"shard": self.shard, "row_group": self.row_group, "epoch": self.epoch}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Position":
        return cls(**d) if d else cls()


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


@dataclass
class DownloadSummary:
    dataset: str
    local_dir: Path
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        ready = len(self.downloaded) + len(self.skipped)
        return (f"{self.dataset}: {ready} shard(s) ready in {self.local_dir} ({len(self.downloaded)} downloaded, "
                f"{size_text(self.bytes)}; {len(self.skipped)} already there; {self.seconds:.1f} s)")


class ShardedDataset:
    """Base class for dataset plugins. Subclasses set `name`, `description` and `local_dir()`.

    `val_shard` pins the validation split to one shard index, so that downloading more training
    shards never changes it; None means "the last shard file is validation".
    """

    name = "?"
    description = ""
    languages: tuple = ()
    val_shard: int | None = None
    # Facts about the full dataset when known (hub datasets): stages size their horizon with them.
    num_shards: int | None = None        # shard files in the source, validation included
    chars_per_shard: int | None = None   # approximate characters of text per shard
    bytes_per_shard: int | None = None   # approximate parquet bytes per shard

    def local_dir(self) -> Path:
        raise NotImplementedError

    @property
    def spec(self) -> str:
        """How a user names this dataset on the command line (see `resolve`)."""
        return self.name

    def bind(self, arg: str) -> "ShardedDataset":
        """The dataset for the spec `NAME:ARG`; only datasets that take an argument override this."""
        raise DatasetError(f"dataset {self.name!r} takes no argument, got {self.name}:{arg}; "
                           f"name it as just {self.name!r}")

    def variants(self) -> list["ShardedDataset"]:
        """The datasets `nanochat data list` shows for this one (`local` shows each folder it prepared)."""
        return [self]

    def download_hint(self, num_shards: int | None = None) -> str:
        n = f" -n {num_shards}" if num_shards else ""
        return f"nanochat data download {self.spec}{n}"

    def download(self, num_shards: int | None = None, workers: int = 4, **options):
        raise DatasetError(f"dataset {self.spec!r} has nothing to download; {self.download_hint(num_shards)}")

    # -- which files ------------------------------------------------------------------------------
    def shard_paths(self) -> list[Path]:
        d = self.local_dir()
        return sorted(d.glob("shard_*.parquet")) if d.exists() else []

    def shards(self, split: str) -> list[Path]:
        """Val = the pinned shard (or the last file); train = every other shard, in order."""
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        found = self.shard_paths()
        if self.val_shard is None:
            if len(found) < 2:
                raise DatasetError(f"dataset {self.spec!r} needs at least 2 shards in {self.local_dir()} "
                                   f"(train + validation) but has {len(found)}; get them with: "
                                   f"{self.download_hint(2)}")
            return found[:-1] if split == "train" else found[-1:]
        val = self.local_dir() / shard_name(self.val_shard)
        train = [p for p in found if p.name != val.name]
        if not train or not val.exists():
            missing = ["training shards"] if not train else []
            missing += [f"its validation shard {val.name}"] if not val.exists() else []
            raise DatasetError(f"dataset {self.spec!r} is missing {' and '.join(missing)} in {self.local_dir()}; "
                               f"get them with: {self.download_hint(max(len(train), 1))}")
        return train if split == "train" else [val]

    def train_shards_on_disk(self) -> int:
        found = self.shard_paths()
        if self.val_shard is None:
            return max(len(found) - 1, 0)
        return sum(1 for p in found if p.name != shard_name(self.val_shard))

    def shards_for_chars(self, num_chars: float) -> int | None:
        """Training shards that hold `num_chars` characters of text (None when the shard size is unknown)."""
        return math.ceil(num_chars / self.chars_per_shard) if self.chars_per_shard else None

    def too_few_shards(self, need: int, what: str = "the horizon") -> str | None:
        """The message a stage shows when fewer than `need` training shards are on disk, else None."""
        have = self.train_shards_on_disk()
        if have >= need:
            return None
        return f"too few shards for {what}: you have {have}, need {need}: `{self.download_hint(need)}`"

    # -- reading -----------------------------------------------------------------------------------
    def _open(self, path: Path):
        import pyarrow.parquet as pq
        try:
            return pq.ParquetFile(path)
        except Exception as exc:
            raise DatasetError(f"shard {path} cannot be read ({exc}); delete it and fetch it again with: "
                               f"{self.download_hint()}") from None

    def _read_row_group(self, pf, path: Path, index: int) -> list[str]:
        try:
            return pf.read_row_group(index, columns=["text"]).column("text").to_pylist()
        except Exception as exc:
            raise DatasetError(f"shard {path} row group {index} cannot be read ({exc}); delete the shard "
                               f"and fetch it again with: {self.download_hint()}") from None

    def iter_row_groups(self, split: str, *, rank: int = 0, world: int = 1, start: Position | None = None,
                        epochs: int | None = 1) -> Iterator[tuple[list[str], Position]]:
        """Yield (documents, position) row group by row group; rank r of W reads groups r, r+W, ...

        `start` is a position returned earlier: reading resumes with this rank's next group after it.
        `epochs=None` loops forever (training); the epoch counter is part of the position.
        """
        paths = self.shards(split)
        start = start or Position()
        shard, epoch = start.shard, start.epoch
        # The next group this rank owns after the saved one (rank-strided blocks of `world` groups).
        first_rg = (start.row_group // world + 1) * world + rank if start.row_group >= 0 else rank
        while epochs is None or epoch <= epochs:
            while shard < len(paths):
                pf = self._open(paths[shard])
                for rg in range(first_rg, pf.num_row_groups, world):
                    yield self._read_row_group(pf, paths[shard], rg), Position(shard, rg, epoch)
                shard, first_rg = shard + 1, rank
            shard, epoch = 0, epoch + 1

    def iter_documents(self, split: str, *, max_chars: int | None = None, doc_cap: int | None = None) -> Iterator[str]:
        """Documents of a split in order, each cut to `doc_cap` chars, stopping after `max_chars` in all."""
        total = 0
        for docs, _ in self.iter_row_groups(split):
            for doc in docs:
                doc = doc[:doc_cap] if doc_cap else doc
                yield doc
                total += len(doc)
                if max_chars is not None and total >= max_chars:
                    return

    def summary(self) -> dict:
        """What is on disk now (reads parquet footers only)."""
        import pyarrow.parquet as pq
        paths = self.shard_paths()
        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
        return {"name": self.name, "shards": len(paths), "documents": rows,
                "bytes": sum(p.stat().st_size for p in paths), "path": str(self.local_dir())}


def language_of(text: str) -> str:
    """'zh' when a fair share of the letters are CJK ideographs, else 'en' (enough for per-language stats)."""
    han = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf")
    letters = sum(1 for ch in text if ch.isalpha())
    return "zh" if letters and han / letters > 0.3 else "en"


def documents_by_language(docs, max_docs: int | None = None) -> dict[str, list[str]]:
    """{language: documents} in order, at most `max_docs` each: held-out text for per-language figures."""
    found: dict[str, list[str]] = {}
    for doc in docs:
        kept = found.setdefault(language_of(doc), [])
        if max_docs is None or len(kept) < max_docs:
            kept.append(doc)
    return dict(sorted(found.items()))


def write_shard(path: Path, docs: list[str]) -> None:
    """Write documents as one shard in the house format (tmp file, then rename: never half a shard)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    with atomic_path(path) as tmp:
        pq.write_table(pa.table({"text": pa.array(docs, type=pa.string())}), tmp, row_group_size=DOCS_PER_ROW_GROUP,
                       compression="zstd", compression_level=3, use_dictionary=False, write_statistics=False)


def resolve(spec: str, registry=None) -> ShardedDataset:
    """The dataset a spec names: `NAME` or `NAME:ARG` (the argument goes to the dataset's `bind`).

    `fineweb-edu` -> the registered dataset; `local:~/texts` -> the `local` dataset bound to that folder.
    Unknown names raise an error that lists the valid ones.
    """
    from nanochat import plugins
    registry = registry or plugins.registry()
    name, sep, arg = spec.partition(":")
    try:
        dataset = registry.get("dataset", name.strip())
    except plugins.UnknownName as exc:
        if not Path(spec).expanduser().is_dir():
            raise
        raise plugins.UnknownName(f"{exc}; for a folder of your own files use local:{spec}") from None
    return dataset.bind(arg.strip()) if sep else dataset
