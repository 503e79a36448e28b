"""Text datasets as parquet shards: the one format every dataset plugin hands to the core.

A dataset is a folder of `shard_XXXXX.parquet` files with a `text` column, written in row groups of
~1024 documents; the last shard is the validation split. Readers walk row groups, strided over
ranks, and report their position `(shard, row_group, epoch)` so a resumed loader continues exactly
where it stopped. Dataset plugins subclass `ShardedDataset` and say where the shards are and how
to fetch them.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from nanochat.errors import NanochatError

SPLITS = ("train", "val")


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


class ShardedDataset:
    """Base class for dataset plugins. Subclasses set `name`, `description` and `local_dir()`."""

    name = "?"
    description = ""
    languages: tuple = ()

    def local_dir(self) -> Path:
        raise NotImplementedError

    def download_hint(self, num_shards: int | None = None) -> str:
        n = f" -n {num_shards}" if num_shards else ""
        return f"nanochat data download {self.name}{n}"

    def shard_paths(self) -> list[Path]:
        d = self.local_dir()
        return sorted(d.glob("shard_*.parquet")) if d.exists() else []

    def shards(self, split: str) -> list[Path]:
        """Train = every shard but the last; val = the last one."""
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        found = self.shard_paths()
        if len(found) < 2:
            raise DatasetError(f"dataset {self.name!r} needs at least 2 shards in {self.local_dir()} "
                               f"(train + validation) but has {len(found)}; get them with: {self.download_hint(2)}")
        return found[:-1] if split == "train" else found[-1:]

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
        import pyarrow.parquet as pq
        paths = self.shard_paths()
        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
        return {"name": self.name, "shards": len(paths), "documents": rows,
                "bytes": sum(p.stat().st_size for p in paths), "path": str(self.local_dir())}
