"""starter-poetry: reciting, continuing and naming the author of the classic poems shipped with the starter data.

The poems are the starter dataset's `poems.jsonl` (the shi of 千家诗 and 唐诗三百首, with the same text the
pretraining shards hold; dev/build_starter.py). Used here: poems of at most 64 characters (jueju and lüshi)
that are in the training shards. Poems only the validation shard holds are left out, so no chat stage ever
teaches validation text. One poem in ten, chosen by a hash of its id, is the test split: pretraining saw
those poems, the chat data never asks for them, so the test split shows whether "recite X" carries over
to poems learned only in pretraining.

Every poem gives five conversations (example = poem * 5 + kind), the wording picked from its split and index:

    recite     请背诵《静夜思》。 / Recite the poem 静夜思.  ->  静夜思\\n唐·李白\\n床前明月光，疑是地上霜。\\n...
    continue   床前明月光，                                  ->  疑是地上霜。\\n举头望明月，低头思故乡。
    author     《静夜思》的作者是谁？                        ->  《静夜思》的作者是唐代诗人李白。
    author-en  Who wrote 静夜思?                             ->  静夜思 was written by 李白, a poet of the Tang dynasty.
    source     “床前明月光”出自哪首诗？                    ->  出自唐代诗人李白的《静夜思》。

A recited poem is laid out as in the pretraining text (title, dynasty·author, one couplet a line), so
the chat model recalls what it read. A poem known by two titles (春晓 / 春眠) is asked for by both; where
two poems share a title, prompts name the author too, or quote the first line. `evaluate` wants the
reference reply exactly (up to spaces and line breaks): strict, but the only fair test of recitation.
"""
import json
import random
import re
import zlib
from collections import Counter

from nanochat.tasks import Task, TaskError, assistant_text

MAX_POEM_CHARS = 64  # a seven-character lüshi with its punctuation; longer poems make replies the model cannot hold
KINDS = ("recite", "continue", "author", "author-en", "source")
DYNASTIES_EN = {"唐": "Tang", "宋": "Song", "明": "Ming", "元": "Yuan", "清": "Qing", "五代": "Five Dynasties"}

RECITE_ZH = ["请背诵《{t}》。", "背一下《{t}》。", "《{t}》怎么背？", "你会背《{t}》吗？", "请写出《{t}》的全文。"]
RECITE_ZH_BY = ["请背诵{a}的《{t}》。", "背一下{a}的《{t}》。", "请写出{a}的《{t}》。"]
RECITE_EN = ["Recite the poem {t}.", "Can you recite {t}?", "Please recite {t}."]
RECITE_EN_BY = ["Recite the poem {t} by {a}.", "Can you recite {t} by {a}?"]
CONTINUE = ["{c}", "{c}", "{c}", "接着背：{c}", "{c}下面是什么？"]
AUTHOR_ZH = ["《{t}》的作者是谁？", "《{t}》是谁写的？", "谁写了《{t}》？"]
AUTHOR_EN = ["Who wrote {t}?", "Who wrote the poem {t}?", "Who is the author of {t}?"]
AUTHOR_EN_LINE = ["Who wrote the poem that begins {c}?", "Who wrote \"{c}\"?"]
SOURCE = ["“{c}”出自哪首诗？", "“{c}”是哪首诗里的？", "“{c}”的出处是什么？"]


def first_clause(line: str) -> str:
    """The opening of a poem, up to and including its first punctuation mark: 床前明月光，"""
    match = re.search(r"[，。？！；：]", line)
    return line[:match.end()] if match else line


class StarterPoetry(Task):
    name = "starter-poetry"
    kind = "generative"
    splits = ("train", "test")
    description = "recite, continue and attribute classic Chinese poems (千家诗, 唐诗三百首) from the starter data"

    def __init__(self, path=None):
        self.path = path  # None = the starter dataset's poems.jsonl, looked up when first needed
        self._splits: dict[str, list[dict]] | None = None
        self._shared_titles: set[str] = set()

    def _poems_path(self):
        if self.path is not None:
            return self.path
        from nanochat import plugins
        return plugins.registry().get("dataset", "starter").poems_path()

    def poems(self, split: str) -> list[dict]:
        """The poems of a split, in file order."""
        if self._splits is None:
            path = self._poems_path()
            try:
                records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            except (OSError, ValueError) as e:
                raise TaskError(f"task {self.name!r}: cannot read the starter poems {path}: {e}; "
                                "reinstall nanochat or rebuild them with dev/build_starter.py") from None
            usable = [r for r in records if r["pretraining"] == "train" and len("".join(r["lines"])) <= MAX_POEM_CHARS]
            titles = Counter(t for r in usable for t in {r["title"], *r["other_titles"]})
            self._shared_titles = {t for t, n in titles.items() if n > 1}
            self._splits = {"train": [], "test": []}
            for r in usable:
                self._splits["test" if zlib.crc32(r["id"].encode()) % 10 == 0 else "train"].append(r)
        return self._splits[self.check_split(split)]

    def num_examples(self, split: str) -> int:
        return len(self.poems(split)) * len(KINDS)

    def make_example(self, split: str, index: int) -> dict:
        poem = self.poems(split)[index // len(KINDS)]
        kind = KINDS[index % len(KINDS)]
        rng = random.Random(f"starter-poetry-{split}-{index}")
        a, d = poem["author"], poem["dynasty"]
        t = rng.choice([poem["title"], *poem["other_titles"]])  # a poem known by two titles is asked for by both
        shared = t in self._shared_titles  # the title alone does not say which poem
        opening = first_clause(poem["lines"][0])
        if kind == "recite":
            english = rng.random() < 0.3
            by_author = shared or rng.random() < 0.2
            templates = {(False, False): RECITE_ZH, (False, True): RECITE_ZH_BY,
                         (True, False): RECITE_EN, (True, True): RECITE_EN_BY}[english, by_author]
            question = rng.choice(templates).format(t=t, a=a)
            answer = "\n".join([t, f"{d}·{a}", *poem["lines"]])
        elif kind == "continue":
            question = rng.choice(CONTINUE).format(c=opening)
            answer = "\n".join(poem["lines"])[len(opening):].lstrip("\n")
        elif kind == "source" or (kind == "author" and shared):
            question = rng.choice(SOURCE).format(c=opening[:-1])
            answer = f"出自{d}代诗人{a}的《{poem['title']}》。"
        elif kind == "author":
            question = rng.choice(AUTHOR_ZH).format(t=t)
            answer = f"《{t}》的作者是{d}代诗人{a}。"
        else:  # author-en
            templates = AUTHOR_EN_LINE if shared else AUTHOR_EN
            question = rng.choice(templates).format(t=t, c=opening[:-1])
            answer = f"{t} was written by {a}, a poet of the {DYNASTIES_EN.get(d, d)} dynasty."
        return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}

    def evaluate(self, conversation: dict, completion: str) -> bool:
        """Right when the reply is the reference, up to spaces and line breaks."""
        reference = assistant_text(conversation["messages"][-1]["content"])
        return re.sub(r"\s+", "", completion) == re.sub(r"\s+", "", reference)
