"""`nanochat plugins ...`: list plugins (broken ones with their traceback), write a new one, install one.

    nanochat plugins [--kind KIND] [--json] [-v]      every plugin; -v adds the traceback of broken ones
    nanochat plugins new NAME --kind task [--dir D]  a ready package: pyproject with the entry point, code, test
    nanochat plugins install PACKAGE... [-e]         pip install into nanochat's own environment
    nanochat plugins uninstall PACKAGE... [-y]       pip uninstall, only for packages that are nanochat plugins

Install and uninstall run the pip of the Python that runs nanochat (`sys.executable -m pip`), so a plugin
lands where nanochat finds it, whatever `pip` is first on PATH. Nothing here imports torch.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from nanochat.atomic import atomic_write_text
from nanochat.errors import NanochatError
from nanochat.table import print_table

NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
COLUMNS = ["name", "kind", "version", "distribution", "status", "error"]


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--kind", help="only this kind (backend, optimizer, dataset, task, observer); broken plugins always show")
    p.add_argument("-v", "--verbose", action="store_true", help="show the full traceback of broken plugins")
    sub = p.add_subparsers(dest="plugins_command", metavar="PLUGINS_COMMAND")
    n = sub.add_parser("new", help="write a new plugin package, ready to install")
    n.add_argument("name", help="the plugin's name, e.g. capitals (the task gets this name)")
    n.add_argument("--kind", dest="new_kind", default="task", help="what it contributes (task)")
    n.add_argument("--dir", default=".", help="where to create the nanochat-NAME folder (default: here)")
    i = sub.add_parser("install", help="pip install plugins into nanochat's own environment")
    i.add_argument("packages", nargs="+", metavar="PACKAGE", help="a name on PyPI, a folder, a wheel or a git URL")
    i.add_argument("-e", "--editable", action="store_true", help="install a folder in editable mode (for authors)")
    i.add_argument("--offline", action="store_true", help="no package index: local folders and wheels only "
                   "(pip --no-index --no-build-isolation)")
    u = sub.add_parser("uninstall", help="pip uninstall plugins from nanochat's own environment")
    u.add_argument("packages", nargs="+", metavar="PACKAGE")
    u.add_argument("-y", "--yes", action="store_true", help="do not ask")


def main(args) -> int:
    command = getattr(args, "plugins_command", None)
    if command == "new":
        return new(args.name, args.new_kind, Path(args.dir))
    if command == "install":
        return install(args.packages, editable=args.editable, offline=args.offline)
    if command == "uninstall":
        return uninstall(args.packages, yes=args.yes)
    return listing(args.kind, as_json=args.json, verbose=args.verbose)


# -- listing ---------------------------------------------------------------------------------------
def listing(kind=None, *, as_json=False, verbose=False) -> int:
    from nanochat import plugins
    rows = plugins.registry().listing(kind)
    keys = COLUMNS + (["traceback"] if verbose else [])
    if as_json:
        print(json.dumps([{k: r[k] for k in keys} for r in rows], indent=2, ensure_ascii=False))
        return 0
    print_table(rows, COLUMNS)
    broken = [r for r in rows if r["status"] == "broken"]
    if verbose:
        for r in broken:
            print(f"\n--- plugin {r['name']!r} ({r['distribution']}) is broken: {r['error']}")
            print((r["traceback"] or "(no traceback: it was never imported)").rstrip())
    elif broken:
        print(f"\n{len(broken)} broken plugin(s); `nanochat plugins -v` shows the full traceback", file=sys.stderr)
    return 0


# -- new -------------------------------------------------------------------------------------------
def new(name: str, kind: str, where: Path) -> int:
    if kind != "task":
        raise NanochatError(f"`nanochat plugins new` writes task plugins (--kind task) for now, got --kind {kind!r}; "
                            f"docs/plugins.md shows how to write the other kinds")
    if not NAME_RE.match(name):
        raise NanochatError(f"plugin name {name!r} is not valid: use lowercase letters, digits and single '-', "
                            f"starting with a letter (e.g. capitals, my-quiz)")
    package = "nanochat_" + name.replace("-", "_")
    folder = where.expanduser() / f"nanochat-{name}"
    if folder.exists():
        raise NanochatError(f"{folder} already exists; pick another name or --dir (nothing was written)")
    cls = "".join(part.capitalize() for part in name.split("-")) + "Task"
    values = {"name": name, "package": package, "cls": cls}
    files = {"pyproject.toml": PYPROJECT, f"{package}/__init__.py": TASK_MODULE, f"tests/test_{package}.py": TASK_TEST,
             "README.md": README}
    for rel, template in files.items():
        atomic_write_text(folder / rel, template.format(**values))
    print(f"wrote {folder}/ with a task {name!r}:")
    for rel in files:
        print(f"  {rel}")
    print(f"next: nanochat plugins install -e {folder}\n      nanochat tasks list   (shows {name})")
    return 0


PYPROJECT = '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "nanochat-{name}"
version = "0.1.0"
description = "The {name} task for nanochat"
requires-python = ">=3.10"
dependencies = ["nanochat"]

# This entry point is what makes it a nanochat plugin.
[project.entry-points.nanochat]
{name} = "{package}"

[tool.setuptools]
packages = ["{package}"]
'''

TASK_MODULE = '''"""The `{name}` task, a nanochat plugin.

Replace EXAMPLES with your own data (or read a file in `num_examples` / `make_example`). Then:

    nanochat plugins install -e .                    # once; `nanochat tasks list` shows {name}
    nanochat eval --run RUN --tasks {name}           # score a trained model on it
    nanochat run --preset finetune --from RUN:sft --set sft.tasks="{name}*20, smoltalk[:2000]"

docs/tasks.md ("Writing your own task") describes every method and its default.
"""
from nanochat import hookimpl
from nanochat.tasks import Task

# (question, answer); the first TEST_SIZE make the test split, the rest the train split
EXAMPLES = [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Egypt?", "Cairo"),
    ("What is the capital of Spain?", "Madrid"),
    ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of China?", "Beijing"),
    ("What is the capital of Canada?", "Ottawa"),
    ("What is the capital of Kenya?", "Nairobi"),
    ("What is the capital of Peru?", "Lima"),
    ("What is the capital of Norway?", "Oslo"),
    ("What is the capital of Greece?", "Athens"),
]
TEST_SIZE = 4


class {cls}(Task):
    name = "{name}"
    kind = "generative"  # the model writes a reply that evaluate() scores ("categorical": it picks a letter)
    splits = ("train", "test")
    description = "answer with the capital of a country"

    def num_examples(self, split):
        return TEST_SIZE if split == "test" else len(EXAMPLES) - TEST_SIZE

    def make_example(self, split, index):
        # Task.example() has checked the split and the index already
        question, answer = EXAMPLES[index if split == "test" else TEST_SIZE + index]
        return {{"messages": [{{"role": "user", "content": question}},
                             {{"role": "assistant", "content": answer}}]}}

    def evaluate(self, conversation, completion):
        # the reply passes when it starts with the reference answer (case and spaces ignored)
        answer = conversation["messages"][-1]["content"]
        return completion.strip().lower().startswith(answer.lower())


@hookimpl
def nanochat_task(register):
    register({cls}())
'''

TASK_TEST = '''"""Run with `python -m pytest` in this folder (after `nanochat plugins install -e .`)."""
import {package}
from nanochat.plugins import Registry
from nanochat.tasks import validate_conversation


def test_the_task_registers_and_every_example_is_valid_and_scores():
    registry = Registry()
    assert registry.add({package}, name="{name}").status == "ok"
    task = registry.get("task", "{name}")
    for split in task.splits:
        assert task.num_examples(split) > 0
        for index in range(task.num_examples(split)):
            conversation = validate_conversation(task.example(split, index))
            reference = conversation["messages"][-1]["content"]
            assert task.evaluate(conversation, reference)
            assert not task.evaluate(conversation, "I do not know")
'''

README = '''# nanochat-{name}

A nanochat task plugin (written by `nanochat plugins new {name} --kind task`).

```
nanochat plugins install -e .          # into nanochat's own environment
nanochat plugins --kind task           # {name} is listed
python -m pytest                       # the plugin's own test
nanochat eval --run RUN --tasks {name}
nanochat run --preset finetune --from RUN:sft --set sft.tasks="{name}*20, smoltalk[:2000]" --set chat-eval.tasks={name}
```
'''


# -- install / uninstall ---------------------------------------------------------------------------
def _pip(*args) -> int:
    cmd = [sys.executable, "-m", "pip", *args]
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def plugin_distributions() -> dict[str, str]:
    """Installed third-party distributions with a `nanochat` entry point: normalized name -> name."""
    from importlib import metadata
    found = {}
    for ep in metadata.entry_points(group="nanochat"):
        if ep.dist and ep.dist.name != "nanochat":
            found[_normalize(ep.dist.name)] = ep.dist.name
    return found


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def install(packages, *, editable=False, offline=False) -> int:
    args = ["install"] + (["--no-index", "--no-build-isolation"] if offline else [])
    for package in packages:
        args += ["-e", package] if editable else [package]
    before = set(plugin_distributions())
    code = _pip(*args)
    if code != 0:
        raise NanochatError(f"pip could not install {' '.join(packages)} (exit code {code}); its messages are above")
    return _report_installed(before, packages)


def _report_installed(before: set, packages) -> int:
    """List what the new plugins contribute, loaded in a fresh process as every later command will."""
    env = {k: v for k, v in os.environ.items() if k != "NANOCHAT_PLUGINS"}
    out = subprocess.run([sys.executable, "-c", "from nanochat.cli import main; main(['plugins', '--json'])"],
                         capture_output=True, text=True, env=env)
    rows = json.loads(out.stdout or "[]")
    named = {_normalize(Path(p).name) for p in packages}
    new = [r for r in rows if r["distribution"] != "nanochat" and (_normalize(r["distribution"]) not in before
                                                                    or _normalize(r["distribution"]) in named)]
    if not new:
        print("installed, but it registers no nanochat plugin (no entry point in the `nanochat` group)")
        return 1
    print_table(new, COLUMNS)
    selected = os.environ.get("NANOCHAT_PLUGINS")
    if selected is not None:
        print(f"note: NANOCHAT_PLUGINS={selected!r} limits which plugins load; add "
              f"{', '.join(sorted({r['distribution'] for r in new}))} to it to use them")
    if any(r["status"] == "broken" for r in new):
        print("a new plugin is broken; `nanochat plugins -v` shows its traceback", file=sys.stderr)
        return 1
    return 0


def uninstall(packages, *, yes=False) -> int:
    installed = plugin_distributions()
    for package in packages:
        if _normalize(package) not in installed:
            raise NanochatError(f"{package!r} is not an installed nanochat plugin; installed plugins: "
                                f"{', '.join(sorted(installed.values())) or 'none'}")
    code = _pip("uninstall", *(["-y"] if yes else []), *packages)
    if code != 0:
        raise NanochatError(f"pip could not uninstall {' '.join(packages)} (exit code {code})")
    return 0
