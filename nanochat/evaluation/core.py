"""CORE: the DCLM base-model benchmark (arXiv 2406.11794): 22 in-context-learning tasks, one number.

A task is a jsonl file of items of one type. The model answers by likelihood, never by generating:

    multiple_choice    {query, choices, gold}                one prompt per choice: query + delimiter + choice;
                                                             the lowest mean loss over the choice's tokens wins
    schema             {context_options, continuation, gold}  one prompt per context: context + delimiter +
                                                             continuation; the lowest mean loss over the
                                                             shared continuation wins
    language_modeling  {context, continuation}               right iff greedy decoding after context +
                                                             delimiter reproduces every continuation token

Few-shot examples (k other items of the task, drawn with random.Random(1234 + idx)) come first, each
with its gold answer and a blank line after it. Items are shuffled with random.Random(1337) before
`max_per_task` cuts them, so a quick run always sees the same sample. Prompts start with BOS and are
cropped on the left to the model's training length. Accuracy is centered on the task's random
baseline, (acc - b) / (1 - b), and CORE is the mean centered accuracy. These rules are those of
nanochat's reference implementation, so the numbers compare with its published ones.

core.yaml is read with PyYAML's safe loader (`parse_yaml`).
"""
import csv
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from nanochat.distributed import World
from nanochat.errors import NanochatError
from nanochat.textfiles import iter_jsonl

TASK_TYPES = ("multiple_choice", "schema", "language_modeling")
ITEM_KEYS = {"multiple_choice": ("query", "choices", "gold"), "schema": ("context_options", "continuation", "gold"),
             "language_modeling": ("context", "continuation")}
DATA_SEED, FEWSHOT_SEED = 1337, 1234
FRESH_COPY = "the eval bundle is damaged: replace it (a downloaded one is fetched again once its folder is deleted)"


class CoreError(NanochatError):
    """The bundle or a CORE setting is not usable; the message names the file, task or value."""


@dataclass(frozen=True)
class CoreTask:
    """One CORE task of core.yaml (named apart from `nanochat.tasks.Task`, the chat-task plugin contract)."""

    label: str
    dataset_uri: str  # relative to eval_data/
    task_type: str
    num_fewshot: int
    delimiter: str
    baseline: float  # random-guess accuracy in percent, as eval_meta_data.csv has it


# -- the bundle's files ------------------------------------------------------------------------------
def load_tasks(bundle_dir: Path, only=None) -> list[CoreTask]:
    """The tasks of core.yaml in file order (or the labels in `only`), with their random baselines."""
    bundle_dir = Path(bundle_dir)
    config_path = bundle_dir / "core.yaml"
    try:
        config = parse_yaml(config_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CoreError(f"{config_path}: {exc}") from None
    entries = config.get("icl_tasks") if isinstance(config, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CoreError(f"{config_path} has no 'icl_tasks:' list of tasks; is this a DCLM eval bundle?")
    baselines = load_baselines(bundle_dir / "eval_meta_data.csv")
    tasks = []
    for entry in entries:
        label = entry.get("label")
        missing = [k for k in ("label", "dataset_uri", "num_fewshot", "icl_task_type") if entry.get(k) is None]
        if missing:
            raise CoreError(f"{config_path}: task {label or entry} has no {', '.join(missing)}")
        if entry["icl_task_type"] not in TASK_TYPES:
            raise CoreError(f"{config_path}: task {label} has icl_task_type {entry['icl_task_type']!r}; "
                            f"CORE supports {', '.join(TASK_TYPES)}")
        if label not in baselines:
            raise CoreError(f"{bundle_dir / 'eval_meta_data.csv'} has no 'Random baseline' for task {label}")
        shots = entry["num_fewshot"]
        shots = shots[0] if isinstance(shots, list) and shots else shots  # the bundle writes [k]
        if isinstance(shots, bool) or not isinstance(shots, int) or shots < 0:
            raise CoreError(f"{config_path}: task {label} has num_fewshot {entry['num_fewshot']!r}; expected [k]")
        tasks.append(CoreTask(label, str(entry["dataset_uri"]), entry["icl_task_type"], shots,
                          str(entry.get("continuation_delimiter", " ")), baselines[label]))
    if only:
        wanted = [only] if isinstance(only, str) else list(only)
        known = {t.label for t in tasks}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise CoreError(f"unknown CORE task(s) {', '.join(unknown)}; tasks in {config_path}: "
                            f"{', '.join(t.label for t in tasks)}")
        tasks = [t for t in tasks if t.label in wanted]
    return tasks


def load_baselines(csv_path: Path) -> dict[str, float]:
    """Task label -> random baseline in percent (columns 'Eval Task' and 'Random baseline')."""
    with open(csv_path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"Eval Task", "Random baseline"} <= set(rows[0]):
        raise CoreError(f"{csv_path} needs the columns 'Eval Task' and 'Random baseline'; it has {list(rows[0])}")
    try:
        return {row["Eval Task"].strip(): float(row["Random baseline"]) for row in rows}
    except ValueError as exc:
        raise CoreError(f"{csv_path}: a 'Random baseline' is not a number ({exc})") from None


def load_items(bundle_dir: Path, task: CoreTask, max_per_task: int = -1) -> list[dict]:
    """The task's items, shuffled with Random(1337), the first `max_per_task` of them when it is > 0."""
    path = Path(bundle_dir) / "eval_data" / task.dataset_uri
    if not path.is_file():
        raise CoreError(f"task {task.label}: {path} is missing; {FRESH_COPY}")
    items = []
    for n, item in iter_jsonl(path, fix=FRESH_COPY, error=CoreError):
        missing = [k for k in ITEM_KEYS[task.task_type] if not isinstance(item, dict) or k not in item]
        if missing:
            raise CoreError(f"{path} line {n}: a {task.task_type} item needs {', '.join(missing)}")
        items.append(item)
    random.Random(DATA_SEED).shuffle(items)
    return items[:max_per_task] if max_per_task > 0 else items


# -- prompts -----------------------------------------------------------------------------------------
def shots_used(task: CoreTask, num_items: int) -> int:
    """A tiny max_per_task can leave fewer other items than the task's k: then all of them are used."""
    return max(min(task.num_fewshot, num_items - 1), 0)


def fewshot_examples(items: list[dict], idx: int, k: int) -> list[dict]:
    """k items other than items[idx] (all of them if there are fewer), the same on every run and rank."""
    others = [i for i in range(len(items)) if i != idx]
    k = min(k, len(others))
    if k <= 0:
        return []
    return [items[i] for i in random.Random(FEWSHOT_SEED + idx).sample(others, k)]


def prompts_mc(item: dict, delimiter: str, fewshot: list[dict]) -> list[str]:
    """One prompt per choice; they share everything up to the choice."""
    shots = "".join(f"{ex['query']}{delimiter}{ex['choices'][ex['gold']]}\n\n" for ex in fewshot)
    return [f"{shots}{item['query']}{delimiter}{choice}" for choice in item["choices"]]


def prompts_schema(item: dict, delimiter: str, fewshot: list[dict]) -> list[str]:
    """One prompt per context option; they share the continuation at the end."""
    shots = "".join(f"{ex['context_options'][ex['gold']]}{delimiter}{ex['continuation']}\n\n" for ex in fewshot)
    return [f"{shots}{context}{delimiter}{item['continuation']}" for context in item["context_options"]]


def prompts_lm(item: dict, delimiter: str, fewshot: list[dict]) -> list[str]:
    """[prompt without the continuation, prompt with it]. Contexts are stripped (some end in spaces),
    and so is the first prompt, so that its tokens are a prefix of the second's."""
    shots = "".join(f"{ex['context'].strip()}{delimiter}{ex['continuation']}\n\n" for ex in fewshot)
    prompt = f"{shots}{item['context'].strip()}{delimiter}"
    return [prompt.strip(), prompt + item["continuation"]]


PROMPTS = {"multiple_choice": prompts_mc, "schema": prompts_schema, "language_modeling": prompts_lm}


def common_length(rows: list[list[int]], from_end: bool = False) -> int:
    """How many tokens all rows share at the start (or at the end)."""
    n = 0
    for column in zip(*(reversed(r) for r in rows) if from_end else rows):
        if any(t != column[0] for t in column):
            break
        n += 1
    return n


@dataclass
class Example:
    """One item ready to score: token rows (BOS first) and, per row, the span [start, end) to score."""

    rows: list[list[int]]
    spans: list[tuple[int, int]]
    gold: int | None  # None for language modeling (one row, scored by exact greedy match)


def encode_example(tokenizer, task_type: str, prompts: list[str], gold: int | None, max_len: int | None) -> Example:
    rows = tokenizer.encode(prompts, prepend=tokenizer.bos_id)
    if task_type == "multiple_choice":  # choices differ at the end: score each after the common prefix
        start = common_length(rows)
        spans = [(start, len(r)) for r in rows]
    elif task_type == "schema":  # contexts differ: score the shared suffix of each row
        suffix = common_length(rows, from_end=True)
        spans = [(len(r) - suffix, len(r)) for r in rows]
    else:  # score the continuation tokens of the full prompt
        without, with_ = rows
        # The stripped prompt is normally a token prefix of the full one; if BPE merges across the
        # boundary it is not, and the merged token is scored as part of the continuation.
        start = common_length([without, with_])
        rows, spans, gold = [with_], [(start, len(with_))], None
    if max_len:  # keep the last max_len tokens: the continuation is at the end
        cropped = []
        for i, row in enumerate(rows):
            cut = max(len(row) - max_len, 0)
            start, end = spans[i]
            cropped.append(row[cut:])
            spans[i] = (max(start - cut, 1), end - cut)  # position 0 has no prediction for it
        rows = cropped
    return Example(rows, spans, gold)


def prepare(tokenizer, task: CoreTask, items: list[dict], idx: int, max_len: int | None) -> Example:
    item = items[idx]
    prompts = PROMPTS[task.task_type](item, task.delimiter, fewshot_examples(items, idx, task.num_fewshot))
    return encode_example(tokenizer, task.task_type, prompts, item.get("gold"), max_len)


# -- scoring -----------------------------------------------------------------------------------------
@torch.no_grad()
def score_rows(model, rows: list[list[int]], spans: list[tuple[int, int]], pad_id: int, device) -> tuple[list, list]:
    """One forward over right-padded rows -> per row: mean loss over its span, and whether the greedy
    prediction matches every token of the span. Causal attention makes right-padding harmless."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
    ids = ids.to(device)
    logits = model(ids)
    # Gather only the scored positions: logits at p predict the token at p + 1.
    which = [(i, p) for i, (s, e) in enumerate(spans) for p in range(s - 1, e - 1)]
    if not which:
        return [math.inf] * len(rows), [False] * len(rows)
    r = torch.tensor([w[0] for w in which], device=ids.device)
    p = torch.tensor([w[1] for w in which], device=ids.device)
    picked = logits[r, p].float()  # bf16 logits are upcast for the loss
    targets = ids[r, p + 1]
    losses = F.cross_entropy(picked, targets, reduction="none").cpu()
    hits = (picked.argmax(dim=-1) == targets).cpu()
    mean_loss, all_hit, at = [], [], 0
    for s, e in spans:
        n = max(e - s, 0)
        # An empty span (a choice that is a token prefix of another) can never be the answer.
        mean_loss.append(losses[at:at + n].mean().item() if n else math.inf)
        all_hit.append(bool(hits[at:at + n].all()) if n else False)
        at += n
    return mean_loss, all_hit


def score_batch(model, examples: list[Example], pad_id: int, device) -> list[bool]:
    """Whether each example is answered correctly; all their rows go through one forward."""
    rows = [row for ex in examples for row in ex.rows]
    spans = [span for ex in examples for span in ex.spans]
    mean_loss, all_hit = score_rows(model, rows, spans, pad_id, device)
    correct, at = [], 0
    for ex in examples:
        n = len(ex.rows)
        if ex.gold is None:
            correct.append(all_hit[at])
        else:
            losses = mean_loss[at:at + n]
            correct.append(losses.index(min(losses)) == ex.gold)  # ties go to the first choice
        at += n
    return correct


def evaluate_task(model, tokenizer, task: CoreTask, items: list[dict], *, device, world: World | None = None,
                  max_len: int | None = None, batch_tokens: int = 8192) -> tuple[int, int]:
    """(correct, evaluated) over all ranks. Rank r takes items r, r + size, ...; several items share a
    forward while rows x longest row stays within `batch_tokens` (an item never splits)."""
    world = world or World()
    mine = range(world.rank, len(items), world.size)
    correct, batch, rows, width = 0, [], 0, 0
    for idx in mine:
        ex = prepare(tokenizer, task, items, idx, max_len)
        ex_width = max(len(r) for r in ex.rows)
        if batch and (rows + len(ex.rows)) * max(width, ex_width) > batch_tokens:
            correct += sum(score_batch(model, batch, tokenizer.bos_id, device))
            batch, rows, width = [], 0, 0
        batch.append(ex)
        rows, width = rows + len(ex.rows), max(width, ex_width)
    if batch:
        correct += sum(score_batch(model, batch, tokenizer.bos_id, device))
    count = len(mine)
    total_correct, total = world.all_reduce_sum([float(correct), float(count)])
    return int(round(total_correct)), int(round(total))


# -- the benchmark -----------------------------------------------------------------------------------
def centered(accuracy: float, baseline_percent: float) -> float:
    """Accuracy rescaled so random guessing gives 0 and a perfect score 1."""
    b = 0.01 * baseline_percent
    return (accuracy - b) / (1.0 - b)


def model_max_len(model) -> int | None:
    """The longest input the model was trained on, if it says: prompts are left-cropped to it."""
    explicit = getattr(model, "max_seq_len", None)
    if explicit:
        return int(explicit)
    config = getattr(model, "config", None)
    return getattr(config, "sequence_len", None)


def evaluate_core(model, tokenizer, bundle_dir, *, max_per_task: int = -1, device="cpu", world: World | None = None,
                  tasks=None, progress=None, max_seq_len: int | None = None, batch_tokens: int = 8192) -> dict:
    """Run CORE (or the tasks named in `tasks`) and return per-task results and the CORE score.

    `model(ids)` must return logits (B, T, V). `max_seq_len`: None = the model's own training length,
    0 = never crop, n = crop prompts on the left to n tokens. `progress(row)` is called after each task
    with that task's result row. Every rank must call this with the same arguments.
    """
    world = world or World()
    max_len = model_max_len(model) if max_seq_len is None else (max_seq_len or None)
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    all_tasks = load_tasks(bundle_dir)
    chosen = load_tasks(bundle_dir, tasks) if tasks else all_tasks
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    rows = []
    try:
        for task in chosen:
            t0 = time.time()
            items = load_items(bundle_dir, task, max_per_task)
            correct, total = evaluate_task(model, tokenizer, task, items, device=device, world=world,
                                           max_len=max_len, batch_tokens=batch_tokens)
            accuracy = correct / total if total else 0.0
            row = {"task": task.label, "type": task.task_type, "shots": shots_used(task, len(items)), "examples": total,
                   "accuracy": accuracy, "baseline": task.baseline, "centered": centered(accuracy, task.baseline),
                   "seconds": round(time.time() - t0, 3)}
            rows.append(row)
            if progress is not None:
                progress(row)
    finally:
        if was_training:
            model.train()
    return summarize(rows, [t.label for t in all_tasks], max_per_task)


def summarize(rows: list[dict], bundle_tasks: list[str], max_per_task: int = -1) -> dict:
    """{"CORE", "tasks": {label: row}, "all_tasks", ...} from per-task rows (in bundle order).

    CORE is the mean centered accuracy of the tasks that ran; it is the official number only when
    `all_tasks` is true (every task of the bundle, 22 in the official one) and max_per_task is -1.
    """
    by_label = {row["task"]: row for row in rows}
    ordered = [by_label[label] for label in bundle_tasks if label in by_label]
    core = sum(r["centered"] for r in ordered) / len(ordered) if ordered else float("nan")
    return {"CORE": core, "tasks": {r["task"]: r for r in ordered}, "tasks_run": len(ordered),
            "tasks_in_bundle": len(bundle_tasks), "all_tasks": len(ordered) == len(bundle_tasks),
            "max_per_task": max_per_task}


# -- core.yaml ---------------------------------------------------------------------------------------
def parse_yaml(text: str):
    """core.yaml as Python values (PyYAML's safe loader); a syntax error becomes a ValueError naming the line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{where}{problem}; fix the YAML (or fetch the bundle again)") from None
