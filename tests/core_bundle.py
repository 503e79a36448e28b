"""Small CORE eval bundles in the real layout, for tests (the real one is 162 MB and online only).

    eval_bundle/core.yaml                  `icl_tasks:` written the way the DCLM bundle writes it
    eval_bundle/eval_meta_data.csv         the real columns; random baselines in percent
    eval_bundle/eval_data/<category>/<task>.jsonl
        multiple_choice    {"query", "choices", "gold"}
        schema             {"context_options", "continuation", "gold"}
        language_modeling  {"context", "continuation"}

Labels, paths, shot counts, task types and delimiters are those of real CORE tasks; the items are
made up here (simple facts and arithmetic), enough of them for 10-shot prompts, and no two items of
a task share a prompt, so a model that memorised the gold answers scores 100%.

    bundle_dir = write_bundle(tmp_path)          # tmp_path/eval_bundle
    zip_path = make_zip(bundle_dir, tmp_path / "eval_bundle.zip")
"""
import json
import random
import zipfile
from pathlib import Path

# label, category/file, type, shots, delimiter written as YAML (None = not given: the default " "), baseline %
TASKS = [
    ("hellaswag_zeroshot", "language_understanding/hellaswag.jsonl", "multiple_choice", 0, None, 25),
    ("jeopardy", "world_knowledge/jeopardy_all.jsonl", "language_modeling", 10, r'"\nAnswer: "', 0),
    ("arc_easy", "world_knowledge/arc_easy.jsonl", "multiple_choice", 10, r'"\nAnswer: "', 25),
    ("copa", "commonsense_reasoning/copa.jsonl", "multiple_choice", 0, None, 50),
    ("lambada_openai", "language_understanding/lambada_openai.jsonl", "language_modeling", 0, None, 0),
    ("winograd", "language_understanding/winograd_wsc.jsonl", "schema", 0, None, 50),
]

COLORS = ["red", "green", "blue", "yellow", "black", "white", "orange", "purple"]
ANIMALS = ["cat", "dog", "horse", "cow", "sheep", "goat", "duck", "mouse", "lion", "bear", "fox", "owl"]
CAPITALS = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"), ("Egypt", "Cairo"),
            ("Peru", "Lima"), ("Kenya", "Nairobi"), ("Norway", "Oslo"), ("Chile", "Santiago"), ("Cuba", "Havana"),
            ("Greece", "Athens"), ("Poland", "Warsaw"), ("Ireland", "Dublin"), ("India", "Delhi")]


def _items(task_type: str, label: str, n: int, rng: random.Random) -> list[dict]:
    items = []
    for i in range(n):
        if label == "jeopardy":
            country, city = CAPITALS[i % len(CAPITALS)]
            items.append({"context": f"WORLD CAPITALS ({i}): This city is the capital of {country}",
                          "continuation": city, "category": "world_capitals"})
        elif task_type == "language_modeling":
            a = ANIMALS[i % len(ANIMALS)]
            # a trailing space on some contexts, as in the real data: the renderer strips it
            trailing = " " if i % 3 == 0 else ""
            items.append({"context": f"On day {i} the {a} ran to the barn and the farmer fed the{trailing}",
                          "continuation": a})
        elif task_type == "schema":
            big = rng.choice(ANIMALS)
            items.append({"context_options": [f"On day {i} the {big} could not fit in the box because the {big}",
                                              f"On day {i} the {big} could not fit in the box because the box"],
                          "continuation": "was too big.", "gold": i % 2})
        elif label == "arc_easy":
            x, y = rng.randint(1, 9), rng.randint(1, 9)
            wrong = rng.sample([v for v in range(2, 19) if v != x + y], 3)
            choices = [str(v) for v in wrong]
            gold = i % 4
            choices.insert(gold, str(x + y))
            items.append({"query": f"Question: What is {x} plus {y}?", "choices": choices, "gold": gold})
        elif label == "copa":
            animal = ANIMALS[i % len(ANIMALS)]
            choices = [" it ate some food.", " it went to sleep."]
            items.append({"query": f"On day {i} the {animal} was hungry, so", "choices": choices, "gold": i % 2})
        else:
            animal = ANIMALS[i % len(ANIMALS)]
            colors = rng.sample(COLORS, 4)
            items.append({"query": f"On day {i} the {animal} looked at the sky. It was",
                          "choices": [f" {c}." for c in colors], "gold": i % 4})
    return items


def core_yaml(tasks=TASKS) -> str:
    lines = ["# CORE tasks (a test copy in the layout of the DCLM bundle)", "icl_tasks:"]
    for label, uri, task_type, shots, delimiter, _ in tasks:
        lines += ["-", f"  label: {label}", f"  dataset_uri: {uri} # relative to eval_data/",
                  f"  num_fewshot: [{shots}]", f"  icl_task_type: {task_type}"]
        if delimiter is not None:
            lines.append(f"  continuation_delimiter: {delimiter} # this separates questions from answers")
        if label == "jeopardy":
            lines.append("  has_categories: true")
    return "\n".join(lines) + "\n"


def meta_csv(tasks=TASKS) -> str:
    rows = ["Eval Task,Task Category,Task Type,#shots,#datapoints,Random baseline,Centered Metric?,Description"]
    for label, uri, task_type, shots, _, baseline in tasks:
        category = uri.split("/")[0].replace("_", " ")
        rows.append(f'{label},{category},{task_type.replace("_", " ")},{shots},24,{baseline},,'
                    f'"{label} (test copy): made-up items, in the real shape, for tests."')
    return "\n".join(rows) + "\n"


def write_bundle(root: Path, tasks=TASKS, items_per_task: int = 24, seed: int = 0) -> Path:
    """Write `root/eval_bundle/` and return it."""
    bundle = Path(root) / "eval_bundle"
    rng = random.Random(seed)
    for label, uri, task_type, *_ in tasks:
        path = bundle / "eval_data" / uri
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for item in _items(task_type, label, items_per_task, rng):
                f.write(json.dumps(item, ensure_ascii=False) + "\n")
    (bundle / "core.yaml").write_text(core_yaml(tasks), encoding="utf-8")
    (bundle / "eval_meta_data.csv").write_text(meta_csv(tasks), encoding="utf-8")
    return bundle


def make_zip(bundle_dir: Path, zip_path: Path) -> Path:
    """Zip a bundle folder under a top-level eval_bundle/ (as the official zip is); byte-identical on every call."""
    bundle_dir = Path(bundle_dir)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(bundle_dir.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                info = zipfile.ZipInfo(f"eval_bundle/{path.relative_to(bundle_dir).as_posix()}", (2024, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
    return zip_path
