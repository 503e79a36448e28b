"""The one crash-safe way to write a file: every file nanochat writes for keeps goes through here.

A file is written under a hidden temporary name next to its final one, flushed to disk (fsync), renamed over
the final name, and then the folder is flushed too, so that the rename itself survives a power loss. A reader
(or a resumed run) therefore sees the old file or the new one, never half of either; a crash leaves at most a
stray `.NAME.PID.tmp` that the next write of the same name (from the same process id) replaces.

    atomic_write_text(path, text)            # also atomic_write_bytes, atomic_write_json
    with atomic_path(path) as tmp:           # for writers that want a path (torch.save, pyarrow)
        pq.write_table(table, tmp)

`file_sha256` is the one checksum of a file on disk: checkpoints record it, downloads are checked with it.
"""
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temp_path(path: Path) -> Path:
    """The hidden sibling that `path` is written under before the rename (same folder, so the rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, path: Path) -> None:
    """Flush `tmp` (a file or a folder) to disk, rename it to `path`, then flush the folder that holds both.

    A folder is renamed only onto a missing or empty one (the OS refuses otherwise): the caller decides.
    """
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(Path(path).parent)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it replaces `path`, on an error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    """UTF-8 with the newlines as given (no platform translation)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, as hex, read in 1 MiB chunks (a multi-GB checkpoint never sits in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
