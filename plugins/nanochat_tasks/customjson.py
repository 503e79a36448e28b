"""customjson:PATH — your own conversations from a JSONL file, one conversation per line.

A line is `{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", ...}]}` (other keys are
kept) or just the list of messages. The whole file is checked when first used; an error names the file
and line and says what is wrong with it.
"""
import copy
from pathlib import Path

from nanochat.tasks import Task, TaskError, load_jsonl_conversations


class CustomJSON(Task):
    name = "customjson"
    kind = "conversations"
    splits = ("train",)
    argument = "PATH"
    argument_required = True
    description = "your own conversations: customjson:PATH to a JSONL file, one conversation per line"

    def __init__(self, path: str | None = None):
        self.spec = f"customjson:{path}" if path else "customjson"
        self.path = Path(path).expanduser().resolve() if path else None  # fixed now: the cwd may change later
        self._conversations: list[dict] | None = None

    def bind(self, arg: str) -> "CustomJSON":
        return CustomJSON(arg)

    def conversations(self) -> list[dict]:
        if self.path is None:
            raise TaskError("customjson needs a file: name it as customjson:PATH (a JSONL file, one conversation "
                            "per line)")
        if self._conversations is None:
            self._conversations = load_jsonl_conversations(self.path, where=self.spec)
        return self._conversations

    def num_examples(self, split: str) -> int:
        self.check_split(split)
        return len(self.conversations())

    def make_example(self, split: str, index: int) -> dict:
        return copy.deepcopy(self.conversations()[index])  # callers may change what they get

    def download(self, echo=print) -> None:
        echo(f"{self.spec}: {len(self.conversations()):,} conversations, all valid (nothing to download)")
