"""Tasks: chat data for midtraining / SFT / RL and the chat evaluations, in one shape.

A task is a named set of conversations per split. Stages never care where a task's data comes from
(the Hugging Face hub, a JSONL file, a generator); they take a slice of a split, mix slices together,
render each conversation with the tokenizer and, for evaluations, score a completion.

    task = registry.get("task", "gsm8k")            # or resolve("customjson:my.jsonl")
    view = task.view("test", stop=420)              # the first 420 test problems
    conversation = view[0]                          # validated; errors name task, split and index
    task.evaluate(conversation, completion)         # -> bool | float;  task.reward(...) -> float

This module is the task contract (`Task`, `HubTask`), slices and mixtures of tasks, and naming them
(`resolve("NAME:ARG")`, `views("gsm8k@test[:420], mmlu*3")`). The pieces tasks are made of live next door
and are re-exported here, so a task plugin imports everything from `nanochat.tasks`:
chat_format.py (the conversation format, `render_mc`, JSONL files), scoring.py (`extract_answer` and the
checks) and task_data.py (`load_hub_rows`). The commands `nanochat tasks list | download` are tasks_cli.py.
No torch here.
"""
from __future__ import annotations

import operator
import random
import re
from collections.abc import Sequence

from nanochat.chat_format import (PART_TYPES, ROLES, ConversationError, TaskError, assistant_text,
                                  load_jsonl_conversations, render_mc, validate_conversation)
from nanochat.scoring import answer_is_correct, extract_answer, letter_is_correct
from nanochat.task_data import HubRows, TaskDataMissing, hub_cache_dir, hub_split_info, load_hub_rows

KINDS = ("categorical", "generative", "conversations")
SHUFFLE_SEED = 42  # hub tasks are shuffled with this seed, mixtures with random.Random(42)


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


def needs_download(task) -> bool:
    """True if using the task would fetch data first."""
    # Third-party tasks may implement only the plugin protocol, without needs_download/download.
    return bool(getattr(task, "needs_download", lambda: False)())



__all__ = ["Task", "TaskView", "TaskMixture", "TaskSequence", "HubTask", "HubRows", "TaskError",
           "ConversationError", "TaskDataMissing", "validate_conversation", "render_mc", "letter_is_correct",
           "extract_answer", "answer_is_correct", "assistant_text", "shuffled_indices", "load_jsonl_conversations",
           "load_hub_rows", "hub_split_info", "hub_cache_dir", "resolve", "views", "mixture", "scored_views",
           "needs_download", "task_label", "KINDS", "ROLES", "PART_TYPES"]
