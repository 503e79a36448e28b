"""Reading your own text files: .txt (one document per file), .jsonl (a `text` field per line), .parquet
(a string `text` column). Used by the `local:PATH` dataset and by `nanochat tokenizer train --input`.

Bad input stops with the file and line and what to do, except invalid UTF-8 when the caller asks for
`errors="replace"`: then bad bytes become U+FFFD and are counted in `stats["replaced"]`.
"""
import json
from collections import Counter
from pathlib import Path
from typing import Iterator

from nanochat.datasets import DatasetError

SUFFIXES = (".parquet", ".txt", ".jsonl")
JSONL_SHAPE = 'each line must be a JSON object like {"text": "..."}'


def collect_files(paths: list[Path]) -> list[Path]:
    """The text files among `paths`: files as given, folders searched recursively (hidden entries skipped)."""
    files, other = [], Counter()
    for root in map(Path, paths):
        if not root.exists():
            raise DatasetError(f"{root} does not exist; give existing files or folders of .txt, .jsonl or .parquet")
        found = [root] if root.is_file() else sorted(
            p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
        for p in found:
            if p.suffix.lower() in SUFFIXES:
                files.append(p)
            else:
                other[p.suffix.lower() or "(no extension)"] += 1
    if not files:
        seen = ", ".join(f"{n} {s}" for s, n in other.most_common()) if other else "nothing"
        raise DatasetError(f"no .parquet, .txt or .jsonl files in {', '.join(map(str, paths))} (found: {seen}); "
                           f"put your text in files of those kinds")
    return files


def _decode(raw: bytes, where: str, errors: str, stats: dict, bom: bool) -> str:
    codec = "utf-8-sig" if bom else "utf-8"
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        if errors != "replace":
            raise DatasetError(f"{where} is not UTF-8 text (bad byte at offset {exc.start}); convert it to UTF-8 "
                               f"(e.g. iconv -f LATIN1 -t UTF-8) or remove it") from None
        text = raw.decode(codec, errors="replace")
        stats["replaced"] = stats.get("replaced", 0) + text.count("\ufffd") - raw.decode(codec, "ignore").count("\ufffd")
        return text


def open_text_parquet(path: Path):
    """A parquet file with a string `text` column, or an error that names the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise DatasetError(f"{path} is not a readable parquet file ({exc}); fix or remove it") from None
    schema = pf.schema_arrow
    if "text" not in schema.names:
        raise DatasetError(f"{path} has no `text` column (columns: {', '.join(schema.names)}); "
                           f"name the column with the documents `text`")
    kind = schema.field("text").type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DatasetError(f"{path} has a `text` column of type {kind}, not strings; store the documents as text")
    return pf



def iter_documents(files: list[Path], *, errors: str = "strict", stats: dict | None = None) -> Iterator[str]:
    """Every non-blank document of the folder, in file order; bad input stops with its file and line."""
    stats = {} if stats is None else stats
    for path in files:
        kind = path.suffix.lower()
        if kind == ".txt":
            text = _decode(path.read_bytes(), str(path), errors, stats, bom=True)
            if text.strip():
                yield text
        elif kind == ".jsonl":
            yield from _jsonl_documents(path, errors, stats)
        else:
            pf = open_text_parquet(path)
            for rg in range(pf.num_row_groups):
                try:
                    texts = pf.read_row_group(rg, columns=["text"]).column("text").to_pylist()
                except Exception as exc:
                    raise DatasetError(f"{path} row group {rg} cannot be read ({exc}); "
                                       f"fix or remove the file") from None
                yield from (t for t in texts if t and t.strip())


def iter_jsonl(path: Path, *, fix: str, error=DatasetError, where: str | None = None, errors: str = "strict",
               stats: dict | None = None) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) for each non-blank line of a JSONL file.

    A line that is not UTF-8 or not JSON raises `error` naming the file (or `where`) and the line, then `fix`.
    """
    where = where or str(path)
    stats = {} if stats is None else stats
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = _decode(raw, f"{where} line {lineno}", errors, stats, bom=lineno == 1)
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{where} line {lineno} is not valid JSON ({exc.msg} at column {exc.colno}); {fix}") from None


def _jsonl_documents(path: Path, errors: str, stats: dict) -> Iterator[str]:
    for lineno, obj in iter_jsonl(path, fix=JSONL_SHAPE, errors=errors, stats=stats):
        text = obj.get("text") if isinstance(obj, dict) else None
        if not isinstance(text, str):
            found = f"keys: {', '.join(obj) or 'none'}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
            raise DatasetError(f"{path} line {lineno} has no string `text` field ({found}); {JSONL_SHAPE}")
        if text.strip():
            yield text
