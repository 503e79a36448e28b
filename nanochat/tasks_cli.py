"""`nanochat tasks list | download NAME...`: what tasks there are, and fetching their data to work offline."""
import json
import sys

from nanochat.errors import NanochatError
from nanochat.tasks import needs_download, resolve


def _sizes(task) -> dict:
    """Split sizes when they are cheap to know (data here, task configured), else None per split."""
    try:
        if needs_download(task):
            return {s: None for s in task.splits}
        return {s: task.num_examples(s) for s in task.splits}
    except NanochatError:  # e.g. customjson with no file given
        return {s: None for s in task.splits}


def cmd_list(as_json: bool = False, registry=None) -> int:
    """Print every registered task: name, kind, splits with sizes, whether its data is here."""
    if registry is None:
        from nanochat import plugins
        registry = plugins.registry()
    rows = []
    for task in registry.all("task"):
        needs = needs_download(task)
        rows.append({"name": task.name, "kind": task.kind, "splits": _sizes(task),
                     "ready": not needs, "argument": getattr(task, "argument", None),
                     "argument_required": bool(getattr(task, "argument_required", False)),
                     "plugin": registry.owner("task", task.name).name,
                     "description": getattr(task, "description", "")})
    if as_json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return 0
    for row in rows:
        name = row["name"]
        if row["argument"]:
            name += f":{row['argument']}" if row["argument_required"] else f"[:{row['argument']}]"
        splits = ", ".join(f"{s} {'?' if n is None else f'{n:,}'}" for s, n in row["splits"].items())
        data = "" if row["ready"] else f"  [not downloaded: nanochat tasks download {row['name']}]"
        print(f"{name:<24} {row['kind']:<13} {splits}{data}")
        if row["description"]:
            print(f"{'':<24} {row['description']}")
    return 0


def cmd_download(names, registry=None) -> int:
    """Fetch the data of the named tasks (NAME or NAME:ARG) so they work offline. 0 = all done."""
    if registry is None:
        from nanochat import plugins
        registry = plugins.registry()
    if not names:
        print(f"name the tasks to download; tasks: {', '.join(registry.names('task'))}", file=sys.stderr)
        return 2
    status = 0
    for spec in names:
        try:
            task = resolve(spec, registry)
            if hasattr(task, "download"):
                task.download(echo=lambda line: print(line, flush=True))
            else:
                print(f"{task.name}: nothing to download", flush=True)
        except NanochatError as exc:
            print(f"nanochat: {exc}", file=sys.stderr)
            status = 1
    return status
