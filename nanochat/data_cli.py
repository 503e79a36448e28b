"""`nanochat data download | list`: get a dataset's shards, and see what is on disk."""
import json

from nanochat.datasets import DatasetError, resolve
from nanochat.fetch import size_text


def cmd_download(dataset_spec: str, num_shards: int | None, workers: int = 4) -> int:
    """`nanochat data download DATASET -n N [-w WORKERS]`; errors are raised as NanochatError."""
    dataset = resolve(dataset_spec)
    summary = dataset.download(num_shards, workers=workers)
    print(summary)
    return 0


def list_rows() -> list[dict]:
    """One row per dataset (and per prepared `local:` folder): what is on disk and what exists."""
    from nanochat import plugins
    rows = []
    for registered in plugins.registry().all("dataset"):
        for ds in registered.variants():
            try:
                found = ds.shard_paths()
                path = str(ds.local_dir())
            except DatasetError:  # an unbound `local` names no folder yet
                found, path = None, None
            rows.append({"name": ds.spec, "description": ds.description,
                         "shards_on_disk": len(found) if found is not None else None,
                         "shards_available": ds.num_shards,
                         "bytes": sum(p.stat().st_size for p in found) if found is not None else None,
                         "path": path})
    return rows


def cmd_list(as_json: bool = False) -> int:
    """`nanochat data list [--json]`."""
    from nanochat.table import print_table
    rows = list_rows()
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    table = []
    for r in rows:
        shards = "-" if r["shards_on_disk"] is None else str(r["shards_on_disk"])
        desc = r["description"] if len(r["description"]) <= 60 else r["description"][:59] + "…"
        table.append({"name": r["name"], "description": desc,
                      "shards": f"{shards}/{r['shards_available']}" if r["shards_available"] else shards,
                      "size": size_text(r["bytes"]) if r["bytes"] is not None else "-", "path": r["path"]})
    print_table(table, ["name", "description", "shards", "size", "path"])
    return 0
