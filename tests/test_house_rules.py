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
