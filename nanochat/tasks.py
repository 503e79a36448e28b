"""Tasks: chat data for midtraining / SFT / RL and the chat evaluations, in one shape.

A task is a named set of conversations per split. Stages never care where a task's data comes from
(the Hugging Face hub, a JSONL file, a generator); they take a slice of a split, mix slices together,
render each conversation with the tokenizer and, for evaluations, score a completion.

    task = registry.get("task", "gsm8k")            # or resolve("customjson:my.jsonl")
    view = task.view("test", stop=420)              # the first 420 test problems
    conversation = view[0]                          # validated; errors name task, split and index
    task.evaluate(conversation, completion)         # -> bool | float;  task.reward(...) -> float

A conversation is `{"messages": [...], ...extra keys a task needs to score it}`; a message is
`{"role": "system" | "user" | "assistant", "content": str | [parts]}`; only assistant content may be a
list of parts `{"type": "text" | "python" | "python_output", "text": str}` (a calculator call and the
output the tool gave). `validate_conversation` below is the exact rule set.

This module also holds what several tasks share: `render_mc` (the multiple-choice prompt),
`extract_answer` (the `#### 42` convention), `load_hub_rows` (a dataset split from the hub as parquet,
cached, no `datasets` dependency), `shuffled_indices`, JSONL reading, `resolve("NAME:ARG")`, and the bodies
of `nanochat tasks list` / `nanochat tasks download`. No torch here.
"""
from __future__ import annotations

import json
import operator
import os
import random
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from nanochat.errors import NanochatError

KINDS = ("categorical", "generative", "conversations")
ROLES = ("system", "user", "assistant")
PART_TYPES = ("text", "python", "python_output")
SHUFFLE_SEED = 42  # hub tasks are shuffled with this seed, mixtures with random.Random(42)


class TaskError(NanochatError):
    """A task was asked for something it cannot give (unknown split, index out of range, ...)."""


class ConversationError(TaskError):
    """A conversation breaks the format; the message names the example and the problem."""


class TaskDataMissing(TaskError):
    """A task's data is not on this machine and could not be fetched; the message says how to get it."""


# -----------------------------------------------------------------------------
# The conversation format

def validate_conversation(conversation, *, where: str = "conversation", complete: bool = True) -> dict:
    """Check a conversation against the format and return it unchanged; raise ConversationError if not.

    Rules:
    - `conversation` is a dict with a non-empty list `messages`; other keys are free (task metadata).
    - Roles: an optional `system` message first, then `user` and `assistant` strictly alternating,
      starting with `user`. With `complete=True` (training data, task examples) the last message is from
      the assistant; with `complete=False` (a prompt, a partial reply) it may be either.
    - `system` and `user` content is a string with some non-space text.
    - `assistant` content is such a string, or a non-empty list of parts `{"type", "text"}` with type
      `text`, `python` (a tool call: the code) or `python_output` (what the tool returned).
      A `text` part is not "" (whitespace is fine: a newline between two calls), a `python` part has
      some non-space code, a `python_output` may be "" (the tool printed nothing), and the message as a
      whole has some non-space text or code besides tool output.
    - Tool calls close: a `python_output` comes right after a `python` part, and every `python` part is
      followed right away by its `python_output`. The one exception, with `complete=False` only, is a
      call that is the very last part of the conversation: the model has asked and the tool has not
      answered yet. Anything else (a call left open before more text, two calls in a row, an output
      nobody asked for) is a tool call that never closes, and is rejected.
    """
    def fail(problem):
        raise ConversationError(f"{where}: {problem}")

    if not isinstance(conversation, dict):
        fail(f"a conversation is a dict with a 'messages' list, got {type(conversation).__name__}")
    messages = conversation.get("messages")
    if not isinstance(messages, list) or not messages:
        fail("'messages' must be a non-empty list of {'role', 'content'} dicts"
             + ("" if "messages" in conversation else f"; keys present: {sorted(conversation)}"))
    first_turn = 1 if isinstance(messages[0], dict) and messages[0].get("role") == "system" else 0
    if len(messages) == first_turn:
        fail("it has a system message and nothing else; it needs at least one user message")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            fail(f"message {i} must be a dict with 'role' and 'content', got {_short(message)}")
        role = message["role"]
        if role not in ROLES:
            fail(f"message {i} has unknown role {role!r}; roles are {', '.join(ROLES)}")
        if i >= first_turn:
            expected = "user" if (i - first_turn) % 2 == 0 else "assistant"
            if role != expected:
                hint = " (a system message may only come first)" if role == "system" else \
                    " (user and assistant take turns, starting with the user)"
                fail(f"message {i} has role {role!r} but {expected!r} was expected{hint}")
        last_message = i == len(messages) - 1
        _check_content(message["content"], role, i, fail, open_call_ok=last_message and not complete)
    if complete and messages[-1]["role"] != "assistant":
        fail(f"the last message is from the {messages[-1]['role']}; a complete conversation ends with the "
             "assistant's reply")
    return conversation


def _check_content(content, role, i, fail, open_call_ok):
    if isinstance(content, str):
        if not content.strip():
            fail(f"message {i} ({role}) has empty content")
        return
    if role != "assistant" or not isinstance(content, list):
        allowed = "a string or a list of parts" if role == "assistant" else "a string"
        fail(f"message {i} ({role}) content must be {allowed}, got {type(content).__name__}")
    if not content:
        fail(f"message {i} ({role}) has empty content (an empty list of parts)")
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            fail(f"message {i} part {j} must be a dict {{'type', 'text': str}}, got {_short(part)}")
        kind = part.get("type")
        if kind not in PART_TYPES:
            fail(f"message {i} part {j} has unknown type {kind!r}; part types are {', '.join(PART_TYPES)}")
        if (kind == "text" and not part["text"]) or (kind == "python" and not part["text"].strip()):
            fail(f"message {i} part {j} ({kind}) is empty")
        previous = content[j - 1]["type"] if j else None
        following = content[j + 1].get("type") if j + 1 < len(content) and isinstance(content[j + 1], dict) else None
        if kind == "python_output" and previous != "python":
            fail(f"message {i} part {j} is a python_output that follows no python call")
        if kind == "python" and following != "python_output":
            if following is None and open_call_ok:
                continue
            fail(f"message {i} part {j} is a python call that never closes: it must be followed right away by "
                 f"its python_output part (got {following or 'the end of the message'})")
    if not any(part["text"].strip() for part in content if part["type"] != "python_output"):
        fail(f"message {i} ({role}) has empty content (no text or tool call besides tool output)")


def _short(value, limit=80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# -----------------------------------------------------------------------------
# Formats several tasks share

def render_mc(question: str, letters, choices) -> str:
    """The multiple-choice prompt: each choice followed by `=` and its letter, then the instruction.

    The letter comes after the choice (small models bind it better) and directly after `=` with no
    space, so the prompt's letter token is the same token as the bare answer the assistant gives.
    """
    letters, choices = list(letters), list(choices)
    if len(letters) != len(choices):
        raise ValueError(f"render_mc got {len(letters)} letters {letters} for {len(choices)} choices")
    lines = "".join(f"- {choice}={letter}\n" for letter, choice in zip(letters, choices))
    return f"Multiple Choice question: {question}\n{lines}\nRespond only with the letter of the correct answer."


def letter_is_correct(conversation: dict, letter: str) -> bool:
    """Categorical scoring: the letter the model picked equals the reference answer (the last message)."""
    return letter.strip() == conversation["messages"][-1]["content"]


_ANSWER_RE = re.compile(r"#### (\-?[0-9\.\,]+)")


def extract_answer(text: str) -> str | None:
    """The number after the first `#### ` marker (GSM8K's convention), commas and a final '.' removed."""
    match = _ANSWER_RE.search(text)
    if not match:
        return None
    return match.group(1).strip().replace(",", "").rstrip(".")


def answer_is_correct(conversation: dict, completion: str) -> bool:
    """Generative scoring for `#### N` tasks: the completion's number equals the reference's."""
    reference = extract_answer(assistant_text(conversation["messages"][-1]["content"]))
    predicted = extract_answer(completion)
    return predicted is not None and predicted == reference


def assistant_text(message_content) -> str:
    """An assistant message's content as plain text (parts joined), e.g. to find its `####` answer."""
    if isinstance(message_content, str):
        return message_content
    return "".join(part["text"] for part in message_content)


def shuffled_indices(n: int, seed: int = SHUFFLE_SEED) -> list[int]:
    """A permutation of range(n), identical to `datasets.Dataset.shuffle(seed=seed)`'s row order."""
    import numpy as np
    return np.random.default_rng(seed).permutation(n).tolist()


# -----------------------------------------------------------------------------
# Tasks, slices of them, and mixtures

class Task:
    """Base class for tasks, the one way to write one (docs/tasks.md, "Writing your own task").

    Subclasses set `name`, `kind`, `splits`, `description` and implement `num_examples(split)` and
    `make_example(split, index)`; scored tasks also implement `evaluate`.
    """

    name = "?"
    kind = "conversations"
    splits: tuple = ("train",)
    description = ""
    argument: str | None = None  # e.g. "PATH": the task is also used as "NAME:PATH" (see bind)
    argument_required = False  # True when plain "NAME" cannot be used (customjson needs its file)

    def num_examples(self, split: str) -> int:
        raise NotImplementedError

    def make_example(self, split: str, index: int) -> dict:
        raise NotImplementedError

    def example(self, split: str, index: int) -> dict:
        """Conversation `index` of `split` (deterministic: the same on every machine and every call)."""
        n = self.num_examples(self.check_split(split))
        try:
            index = operator.index(index)  # ints, numpy ints; not floats or strings
        except TypeError:
            raise TaskError(f"task {self.name!r}: an example index is an integer, got {index!r}") from None
        if not 0 <= index < n:
            raise TaskError(f"task {self.name!r} split {split!r} has {n} examples; index {index!r} is out of range")
        return self.make_example(split, index)

    def evaluate(self, conversation: dict, completion: str) -> bool | float:
        """Score a completion (the assistant's reply to the conversation's prompt) against the reference."""
        raise TaskError(f"task {self.name!r} is a {self.kind} task: it is training data and has no evaluate()")

    def reward(self, conversation: dict, completion: str) -> float:
        """The RL reward: by default the evaluation as a float."""
        return float(self.evaluate(conversation, completion))

    # -- data on disk -----------------------------------------------------------------------------
    def needs_download(self) -> bool:
        """True if using the task would fetch data first (see `download`)."""
        return False

    def download(self, echo=print) -> None:
        """Fetch (or check) everything the task needs so it works offline afterwards."""
        echo(f"{self.name}: nothing to download ({self.description or self.kind})")

    # -- helpers ----------------------------------------------------------------------------------
    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise TaskError(f"task {self.name!r} has no split {split!r}; its splits are {', '.join(self.splits)}")
        return split

    def bind(self, arg: str) -> "Task":
        """The task configured by the ARG of a "NAME:ARG" spec (a file, usually)."""
        raise TaskError(f"task {self.name!r} takes no argument, got {self.name}:{arg}; use plain {self.name!r}")

    def view(self, split: str, start: int = 0, stop: int | None = None, step: int = 1) -> "TaskView":
        return TaskView(self, split, start, stop, step)

    def __repr__(self):
        return f"<task {self.name} ({self.kind})>"


class TaskView(Sequence):
    """Examples start, start+step, ... (< stop) of one split of a task: what stages mix and iterate.

    Slicing follows Python: a stop past the end is the end. Every example is validated on the way out,
    so a broken row stops a run with its task, split and index named instead of a confusing crash later.
    """

    def __init__(self, task, split: str, start: int = 0, stop: int | None = None, step: int = 1):
        if split not in task.splits:
            raise TaskError(f"task {task.name!r} has no split {split!r}; its splits are {', '.join(task.splits)}")
        if not (isinstance(start, int) and start >= 0):
            raise TaskError(f"start must be an integer >= 0, got {start!r}")
        if not (stop is None or isinstance(stop, int) and stop >= start):
            raise TaskError(f"stop must be None or an integer >= start ({start}), got {stop!r}")
        if not (isinstance(step, int) and step >= 1):
            raise TaskError(f"step must be an integer >= 1, got {step!r}")
        self.task, self.split, self.start, self.stop, self.step = task, split, start, stop, step
        self._range: range | None = None  # resolved on first use: counting may load the data

    def indices(self) -> range:
        """The task's own indices this view covers."""
        if self._range is None:
            n = self.task.num_examples(self.split)
            self._range = range(n)[self.start:self.stop:self.step]
        return self._range

    def __len__(self) -> int:
        return len(self.indices())

    def __getitem__(self, i):
        if isinstance(i, slice):
            raise TypeError("slice a task with task.view(split, start, stop, step), not with [a:b]")
        index = self.indices()[i]  # IndexError past the end, as a Sequence should
        conversation = self.task.example(self.split, index)
        return validate_conversation(conversation, where=f"task {self.task.name!r} split {self.split!r} example {index}")

    def locate(self, i: int) -> tuple["TaskView", int]:
        return self, i

    def __repr__(self):
        stop = "" if self.stop is None else self.stop
        return f"<{self.task.name} {self.split}[{self.start}:{stop}:{self.step}]>"


class TaskMixture(Sequence):
    """Every example of every part, shuffled together once with random.Random(42).

    Parts are TaskViews (or other mixtures/sequences). Listing a part twice oversamples it: each copy
    contributes all its examples. `locate(i)` says which view and which of its examples item i is, so
    evaluation and RL can score with the right task.
    """

    def __init__(self, parts):
        self.parts = list(parts)
        if not self.parts:
            raise TaskError("a task mixture needs at least one part")
        self.index = [(p, j) for p, part in enumerate(self.parts) for j in range(len(part))]
        random.Random(SHUFFLE_SEED).shuffle(self.index)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i):
        p, j = self.index[i]
        return self.parts[p][j]

    def locate(self, i: int) -> tuple[TaskView, int]:
        p, j = self.index[i]
        return self.parts[p].locate(j)


class TaskSequence(Sequence):
    """The parts one after the other, in order (a curriculum)."""

    def __init__(self, parts):
        self.parts = list(parts)
        self.offsets = [0]
        for part in self.parts:
            self.offsets.append(self.offsets[-1] + len(part))

    def __len__(self) -> int:
        return self.offsets[-1]

    def _find(self, i: int) -> tuple[int, int]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for a task sequence of {len(self)} examples")
        p = next(p for p in range(len(self.parts)) if i < self.offsets[p + 1])
        return p, i - self.offsets[p]

    def __getitem__(self, i):
        p, j = self._find(i)
        return self.parts[p][j]

    def locate(self, i: int) -> tuple[TaskView, int]:
        p, j = self._find(i)
        return self.parts[p].locate(j)


# -----------------------------------------------------------------------------
# JSONL conversations (customjson, identity files, the starter chats)

def load_jsonl_conversations(path, *, where: str | None = None) -> list[dict]:
    """Read and validate a JSONL file of conversations; errors name the file and line.

    Each non-blank line is either `{"messages": [...], ...}` or a bare list of messages
    (`[{"role": "user", ...}, ...]`, the form nanochat's identity files have always used).
    """
    path = Path(path).expanduser()
    where = where or str(path)
    if not path.is_file():
        raise TaskError(f"{where}: no such file ({path.resolve()}); give the path of a JSONL file with one "
                        "conversation per line")
    from nanochat.textfiles import iter_jsonl
    conversations = []
    fix = 'each line must be one conversation: {"messages": [{"role": "user", "content": "..."}, ...]}'
    for number, item in iter_jsonl(path, fix=fix, error=ConversationError, where=where):
        if isinstance(item, list):
            item = {"messages": item}
        conversations.append(validate_conversation(item, where=f"{where} line {number}"))
    if not conversations:
        raise TaskError(f"{where}: the file has no conversations")
    return conversations


# -----------------------------------------------------------------------------
# Dataset splits from the Hugging Face hub, read with pyarrow

class HubRows(Sequence):
    """The rows of a parquet table as dicts, converted when asked for (a 460K-row split stays columnar)."""

    def __init__(self, table):
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {i} out of range for {n} rows")
        return self.table.slice(i, 1).to_pylist()[0]


def hub_cache_dir(repo: str) -> Path:
    from nanochat import paths
    return paths.cache_dir() / "task_data" / repo.replace("/", "--")


def _manifest_path(repo: str, subset: str | None, split: str) -> Path:
    return hub_cache_dir(repo) / ".nanochat" / (subset or "default") / f"{split}.json"


def hub_split_info(repo: str, *, subset: str | None = None, split: str) -> dict | None:
    """What the cache holds for a split ({"files", "rows", ...}), or None when it is not fully downloaded."""
    manifest = _manifest_path(repo, subset, split)
    try:
        info = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    base = hub_cache_dir(repo)
    return info if all((base / f).is_file() for f in info["files"]) else None


def load_hub_rows(repo: str, *, subset: str | None = None, split: str, endpoint: str | None = None,
                  revision: str | None = None, fetch_hint: str | None = None) -> HubRows:
    """The rows of one split of a hub dataset, from the local cache or fetched into it first.

    The parquet files are found by listing the repo (`HfApi.list_repo_tree`): under `<subset>/` (or
    `data/` without a subset), files named `<split>-00000-of-00001.parquet` or kept in a `<split>/`
    folder. They are downloaded with `hf_hub_download` (honouring `endpoint`, else `HF_ENDPOINT`) into
    `<cache>/task_data/<org>--<name>/`, checked to be readable parquet, and recorded in a manifest
    written last, so a split is either complete on disk or fetched again. `fetch_hint` is the command
    that fetches it, quoted in the error when the hub cannot be reached.
    """
    info = hub_split_info(repo, subset=subset, split=split)
    if info is None:
        info = _fetch_split(repo, subset, split, endpoint, revision, fetch_hint)
    import pyarrow as pa
    import pyarrow.parquet as pq
    base = hub_cache_dir(repo)
    tables = [pq.read_table(base / f) for f in info["files"]]
    table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    return HubRows(table)


def _fetch_split(repo, subset, split, endpoint, revision, fetch_hint) -> dict:
    what = f"{repo} {subset + '/' if subset else ''}{split}"
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    fix = (f"fetch it on a machine that reaches the hub with `{fetch_hint}`, or copy its cache folder "
           f"{hub_cache_dir(repo)} here" if fetch_hint else f"copy its cache folder {hub_cache_dir(repo)} here")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise TaskDataMissing(f"{what} is not downloaded and HF_HUB_OFFLINE is set; {fix}")
    unreachable = _unreachable(endpoint)
    if unreachable:
        raise TaskDataMissing(f"{what} is not downloaded and the hub cannot be reached ({unreachable}); {fix}")
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError
    folder = subset or "data"
    try:
        listing = [entry.path for entry in HfApi(endpoint=endpoint).list_repo_tree(
            repo, path_in_repo=folder, recursive=True, repo_type="dataset", revision=revision)
            if entry.path.endswith(".parquet")]
    except HfHubHTTPError as exc:
        if getattr(exc.response, "status_code", None) == 404:
            raise TaskDataMissing(f"the hub has no dataset {repo!r} with a folder {folder!r} at revision "
                                  f"{revision or 'main'} (endpoint {endpoint or 'https://huggingface.co'})") from None
        raise TaskDataMissing(f"listing {what} on the hub failed ({_short(str(exc), 160)}); {fix}") from None
    except Exception as exc:
        raise TaskDataMissing(f"{what} is not downloaded and the hub could not be reached "
                              f"({type(exc).__name__}: {_short(str(exc), 160)}); {fix}") from None
    files = sorted(p for p in listing if _is_split_file(p[len(folder) + 1:], split))
    if not files:
        found = sorted({_split_of(p[len(folder) + 1:]) for p in listing})
        raise TaskDataMissing(f"{repo} has no parquet files for split {split!r} under {folder}/; "
                              f"splits there: {', '.join(found) or 'none'}")
    base = hub_cache_dir(repo)
    base.mkdir(parents=True, exist_ok=True)
    for path in files:
        _download_checked(hf_hub_download, repo, path, base, endpoint, revision, what, fix)
    import pyarrow.parquet as pq
    rows = sum(pq.read_metadata(base / f).num_rows for f in files)
    info = {"repo": repo, "subset": subset, "split": split, "revision": revision or "main", "files": files,
            "rows": rows}
    manifest = _manifest_path(repo, subset, split)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    tmp = manifest.with_name(f"{manifest.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, manifest)  # written last: its presence means the split is complete
    return info


def _unreachable(endpoint: str | None) -> str | None:
    """Why the hub's host cannot be reached (one quick TCP connect), or None when it can or a proxy is set.

    huggingface_hub retries a dead connection for about 25 s; a machine with no network learns it at once.
    """
    import socket
    import urllib.parse
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urllib.parse.urlsplit(endpoint or "https://huggingface.co")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=5).close()
        return None
    except OSError as exc:
        return f"{url.hostname}:{port}: {exc.strerror or exc}"


def _download_checked(hf_hub_download, repo, path, base, endpoint, revision, what, fix, attempts=3):
    """Download one file, retrying a failed or damaged transfer a couple of times."""
    import pyarrow.parquet as pq
    error = None
    for _ in range(attempts):
        try:
            local = Path(hf_hub_download(repo, path, repo_type="dataset", revision=revision, local_dir=base,
                                         endpoint=endpoint))
            pq.read_metadata(local)  # a truncated or corrupted download has no valid footer
            return local
        except Exception as exc:
            error = exc
            (base / path).unlink(missing_ok=True)
    raise TaskDataMissing(f"downloading {path} of {what} failed {attempts} times "
                          f"({type(error).__name__}: {_short(str(error), 160)}); {fix}")


def _is_split_file(rel: str, split: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return rel.split("/")[0] == split if "/" in rel else (name == f"{split}.parquet" or name.startswith(f"{split}-"))


def _split_of(rel: str) -> str:
    return rel.split("/")[0] if "/" in rel else re.split(r"[-.]", rel.rsplit("/", 1)[-1])[0]


class HubTask(Task):
    """A task read from a hub dataset: set `repo`, `subset`, `hub_splits` (our split -> the hub's) and
    implement `row_to_conversation(row)`. Rows are served in `shuffled_indices(n, 42)` order."""

    repo = "?"
    subset: str | None = None
    hub_splits: dict = {}

    def __init__(self):
        self._rows: dict[str, Sequence] = {}
        self._order: dict[str, list[int]] = {}

    def row_to_conversation(self, row: dict) -> dict:
        raise NotImplementedError

    def fetch_hint(self) -> str:
        return f"nanochat tasks download {self.name}"

    def load_rows(self, split: str) -> Sequence:
        return load_hub_rows(self.repo, subset=self.subset, split=self.hub_splits[split], fetch_hint=self.fetch_hint())

    def rows(self, split: str) -> Sequence:
        if split not in self._rows:
            self._rows[split] = self.load_rows(self.check_split(split))
        return self._rows[split]

    def num_examples(self, split: str) -> int:
        if split not in self._rows:  # counting must not load a big split: the manifest knows
            info = hub_split_info(self.repo, subset=self.subset, split=self.hub_splits.get(self.check_split(split)))
            if info is not None:
                return info["rows"]
        return len(self.rows(split))

    def make_example(self, split: str, index: int) -> dict:
        if split not in self._order:
            self._order[split] = shuffled_indices(len(self.rows(split)))
        return self.row_to_conversation(self.rows(split)[self._order[split][index]])

    def needs_download(self) -> bool:
        return any(hub_split_info(self.repo, subset=self.subset, split=s) is None for s in self.hub_splits.values())

    def download(self, echo=print) -> None:
        """Fetch every split, then check every example once, so a bad row shows up now, not mid-run."""
        for split, hub_split in self.hub_splits.items():
            self._rows[split] = self.load_rows(split)
            bad = []
            for index in range(len(self._rows[split])):
                where = f"task {self.name!r} split {split!r} example {index}"
                try:
                    validate_conversation(self.example(split, index), where=where)
                except TaskError as exc:
                    bad.append(str(exc))
            source = f"{self.repo} {self.subset + '/' if self.subset else ''}{hub_split}"
            verdict = "all valid" if not bad else f"{len(bad)} INVALID (a stage stops at them), first: {bad[0]}"
            echo(f"{self.name}: {split} has {len(self._rows[split]):,} examples from {source}, {verdict}")


# -----------------------------------------------------------------------------
# Naming tasks: "NAME" or "NAME:ARG"

def resolve(spec: str, registry=None) -> Task:
    """The task a spec names: "gsm8k", or "customjson:path/to/file.jsonl" (NAME:ARG, ARG given to the task).

    Unknown names raise with the list of valid ones (from the registry).
    """
    if registry is None:
        from nanochat import plugins
        registry = plugins.registry()
    if not isinstance(spec, str) or not spec.strip():
        raise TaskError(f"a task spec is NAME or NAME:ARG, got {spec!r}; valid tasks: {', '.join(registry.names('task'))}")
    name, sep, arg = spec.strip().partition(":")
    task = registry.get("task", name)  # UnknownName lists the valid names
    if not sep:
        return task
    if not arg:
        raise TaskError(f"task spec {spec!r} has an empty argument; write {name}:{getattr(task, 'argument', None) or 'ARG'}")
    if not hasattr(task, "bind") or getattr(task, "argument", None) is None:
        raise TaskError(f"task {name!r} takes no argument, got {spec!r}; use plain {name!r}")
    return task.bind(arg)


MIX_ITEM = re.compile(r"^(?P<spec>.+?)(?:@(?P<split>[A-Za-z_]+))?(?:\[(?P<start>\d*):(?P<stop>\d*)\])?(?:\*(?P<times>\d+))?$")


def views(spec: str, *, split: str = "train", registry=None) -> list:
    """The task views a spec like "smoltalk, mmlu*3, gsm8k@test[:420]" names, copies included.

    Each comma-separated item is TASK[@SPLIT][[START:STOP]][*TIMES]: a task spec (NAME or NAME:ARG),
    an optional split (default `split`), an optional slice, and how many copies (oversampling).
    """
    parts = []
    for item in (x.strip() for x in spec.split(",")):
        match = MIX_ITEM.match(item) if item else None
        if not match:
            raise TaskError(f"task mixture item {item!r} in {spec!r} is not TASK[@SPLIT][[START:STOP]][*TIMES], "
                            f"e.g. gsm8k@test[:420] or mmlu*3")
        task = resolve(match["spec"], registry)
        view = TaskView(task, match["split"] or split, int(match["start"] or 0),
                        int(match["stop"]) if match["stop"] else None)
        parts += [view] * int(match["times"] or 1)
    return parts


def mixture(spec: str, *, split: str = "train", registry=None) -> TaskMixture:
    """Every example the spec names, shuffled together (see `views` for the spec)."""
    return TaskMixture(views(spec, split=split, registry=registry))


def task_label(view, default_split: str = "test") -> str:
    """How a result is named: the task, plus @SPLIT when it is not the default split."""
    return view.task.name if view.split == default_split else f"{view.task.name}@{view.split}"


def scored_views(spec: str, registry=None) -> list:
    """The task views of an evaluation spec ("capitals, arc-easy@test[:200]"), each on its test split unless
    @SPLIT; refuses training-only tasks and a task listed twice, naming the ones that can be scored."""
    if registry is None:
        from nanochat import plugins
        registry = plugins.registry()
    found, seen = [], set()
    for view in views(spec, split="test", registry=registry):
        label = task_label(view)
        if label in seen:
            if view in found:  # "task*3": copies mean nothing when scoring
                continue
            raise TaskError(f"task {label!r} is listed twice in {spec!r}; list each task and split once")
        if view.task.kind not in ("categorical", "generative"):
            scorable = [t.name for t in registry.all("task") if t.kind in ("categorical", "generative")]
            raise TaskError(f"task {view.task.name!r} is {view.task.kind} (training data) and cannot be scored; "
                            f"tasks that can: {', '.join(scorable)}")
        seen.add(label)
        found.append(view)
    return found


# -----------------------------------------------------------------------------
# `nanochat tasks list` and `nanochat tasks download NAME...`

def needs_download(task) -> bool:
    """True if using the task would fetch data first."""
    # Third-party tasks may implement only the plugin protocol, without needs_download/download.
    return bool(getattr(task, "needs_download", lambda: False)())


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


__all__ = ["Task", "TaskView", "TaskMixture", "TaskSequence", "HubTask", "HubRows", "TaskError",
           "ConversationError", "TaskDataMissing", "validate_conversation", "render_mc", "letter_is_correct", "extract_answer", "answer_is_correct",
           "assistant_text", "shuffled_indices", "load_jsonl_conversations", "load_hub_rows", "hub_split_info",
           "hub_cache_dir", "resolve", "views", "mixture", "scored_views", "needs_download", "task_label", "cmd_list", "cmd_download", "KINDS", "ROLES", "PART_TYPES"]
