"""Rules of the house that a reviewer would otherwise have to remember."""
import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

from nanochat import hookspecs

REPO = Path(__file__).resolve().parent.parent
HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("nanochat_")]


def test_every_hook_is_documented_with_its_exact_signature():
    docs = (REPO / "docs" / "plugins.md").read_text()
    for name in HOOKS:
        signature = f"{name}{inspect.signature(getattr(hookspecs, name))}"
        assert f"### `{signature}`" in docs, f"docs/plugins.md has no section '### `{signature}`'"


def test_every_hook_has_a_test_of_its_own():
    tests = "".join(p.read_text() for p in (REPO / "tests").glob("test_*.py"))
    for name in HOOKS:
        assert re.search(rf"def test_hook_{name}\b", tests), f"no test named test_hook_{name}"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


PLUGIN_PACKAGES = {p.name for p in (REPO / "plugins").iterdir() if (p / "__init__.py").exists()}


# The one door from the core into web/: `nanochat serve` (its arguments and its body live in nanochat/web/serve.py).
CLI_LAUNCHES = {("cli.py", "nanochat.web.serve")}


def test_core_never_imports_plugins_app_or_web():
    core = [p for p in (REPO / "nanochat").rglob("*.py") if not {"app", "web"} & set(p.relative_to(REPO / "nanochat").parts)]
    assert {"nanochat_backends", "nanochat_datasets"} <= PLUGIN_PACKAGES
    for path in core:
        for module in _imports(path):
            assert module.split(".")[0] not in PLUGIN_PACKAGES, f"{path} imports plugin package {module}"
            if (path.relative_to(REPO / "nanochat").as_posix(), module) in CLI_LAUNCHES:
                continue
            assert not module.startswith(("nanochat.app", "nanochat.web")), f"{path} imports {module}"


def test_plugins_use_only_public_core_names():
    for path in (REPO / "plugins").rglob("*.py"):
        for module in _imports(path):
            if module.startswith("nanochat."):
                assert not any(part.startswith("_") for part in module.split(".")), f"{path} imports {module}"


def test_import_nanochat_and_help_do_not_import_torch():
    code = ("import sys, io, contextlib\nimport nanochat, nanochat.cli\n"
            "try:\n    with contextlib.redirect_stdout(io.StringIO()): nanochat.cli.main(['--help'])\n"
            "except SystemExit: pass\nprint('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_every_doc_has_a_simplified_chinese_translation():
    english = {p.name for p in (REPO / "docs").glob("*.md")}
    chinese = {p.name for p in (REPO / "docs" / "zh-CN").glob("*.md")}
    assert english - chinese == set(), f"docs without a docs/zh-CN translation: {sorted(english - chinese)}"
    assert (REPO / "README.zh-CN.md").exists()
    hooks = (REPO / "docs" / "zh-CN" / "plugins.md").read_text()
    for name in HOOKS:
        assert f"### `{name}{inspect.signature(getattr(hookspecs, name))}`" in hooks


def _core_import_graph() -> dict[str, set[str]]:
    """Module -> the nanochat modules it imports, read with ast (no module is imported).

    Imports inside functions count too: a lazy import is there to keep start-up fast (torch, matplotlib),
    not to hide that two modules need each other; either one of them holds the shared piece, or a third does.
    """
    root = REPO / "nanochat"
    names = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # from . import x / from .y import z
                    up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in names else base for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in names and t != name}
        graph[name] = found
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or round a loop (Tarjan's algorithm)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_the_cycle_finder_finds_a_loop():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_inside_nanochat():
    graph = _core_import_graph()
    assert "nanochat.datasets" in graph and "nanochat.atomic" in graph["nanochat.runs"]  # the reader reads
    cycles = _cycles(graph)
    assert not cycles, ("modules that import each other (move the shared piece to one side or a third module): "
                        + "; ".join(" <-> ".join(group) for group in cycles))


def test_no_stage_imports_another_stage():
    # shared pieces live in training.py / scaling.py, so each stage reads top to bottom on its own
    graph = _core_import_graph()
    stages = {name for name in graph if name.startswith("nanochat.stages.")}
    assert {"nanochat.stages.pretrain", "nanochat.stages.rl"} <= stages
    for name in sorted(stages):
        assert not graph[name] & stages, f"{name} imports the stage module(s) {sorted(graph[name] & stages)}"


def test_builtin_plugins_meet_their_protocols():
    from nanochat import contracts, plugins
    registry = plugins.load({"NANOCHAT_PLUGINS": ""})
    for kind, protocol in (("backend", contracts.Backend), ("optimizer", contracts.Optimizer),
                           ("observer", contracts.Observer)):
        things = registry.all(kind)
        assert things, f"no built-in {kind}"
        for thing in things:
            assert isinstance(thing, protocol), f"{kind} {thing.name!r} lacks part of nanochat.contracts.{protocol.__name__}"

    class Half:  # a backend that forgot most of the contract
        name, priority, dist_backend = "half", 1, "gloo"

        def is_available(self):
            return True
    assert not isinstance(Half(), contracts.Backend)


def test_every_module_is_in_the_code_walkthrough():
    # docs/architecture.md and its translation name every module, so a newcomer finds each one's role
    modules = sorted(p.relative_to(REPO).as_posix() for top in ("nanochat", "plugins") for p in (REPO / top).rglob("*.py"))
    assert "nanochat/runner.py" in modules and "plugins/nanochat_tasks/gsm8k.py" in modules
    for doc in ("docs/architecture.md", "docs/zh-CN/architecture.md"):
        text = (REPO / doc).read_text()
        missing = [m for m in modules if f"`{m}`" not in text]
        assert not missing, f"{doc} does not mention: {', '.join(missing)}"
