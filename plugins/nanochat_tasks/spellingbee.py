"""SpellingBee: "how many r are in strawberry?" answered by spelling the word out, counting, and checking
with a calculator call `'strawberry'.count('r')`.

Small models see tokens, not letters, so spelling has to be taught. Each example is generated from its
split and index alone (a string-seeded random.Random), so it is the same on every machine. Words come
from words.txt (built from the starter corpus by dev/build_words.py); one word in ten, chosen by a hash of
the word, is kept for the test split, so test words are never seen in training. Questions are in
English or Chinese; the answer ends with `#### N`, scored like GSM8K.
"""
import random
import string
import zlib
from pathlib import Path

from nanochat.sandbox import use_calculator
from nanochat.tasks import Task, answer_is_correct

WORDS_FILE = Path(__file__).parent / "words.txt"
SIZES = {"train": 100_000, "test": 1_000}

QUESTIONS_EN = [
    "How many {letter} are in the word {word}", "How many {letter} are in {word}",
    "Count the number of {letter} in {word}", "How many times does {letter} appear in {word}",
    "What's the count of {letter} in {word}", "In the word {word}, how many {letter} are there",
    "How many letter {letter} are in the word {word}", "Count how many {letter} appear in {word}",
    "Tell me the number of {letter} in {word}", "How many {letter}s does {word} have",
    "How many times is {letter} in {word}", "Number of {letter} in {word}",
    "{word} has how many {letter}", "Can you count the {letter} letters in {word}",
]
QUESTIONS_ZH = [
    "{word}中有多少个{letter}", "{word}里有几个{letter}", "数一下{word}中的{letter}",
    "单词{word}里有多少个字母{letter}", "{letter}在{word}中出现了几次",
]


class SpellingBee(Task):
    name = "spellingbee"
    kind = "generative"
    splits = ("train", "test")
    description = "count a letter in a word: spell it out, then check with '<word>'.count('<letter>') (synthetic)"

    def __init__(self):
        self._words: dict[str, list[str]] = {}

    def words(self, split: str) -> list[str]:
        if not self._words:
            lines = WORDS_FILE.read_text(encoding="utf-8").splitlines()
            # The calculator refuses code containing words like "open" or "file", even inside a string
            # ('opener'.count('e')): keep only words whose tool call it will answer.
            words = [w for w in lines if w and not w.startswith("#") and use_calculator(f"'{w}'.count('a')") is not None]
            is_test = {w: zlib.crc32(w.encode()) % 10 == 0 for w in words}
            self._words = {"train": [w for w in words if not is_test[w]], "test": [w for w in words if is_test[w]]}
        return self._words[split]

    def num_examples(self, split: str) -> int:
        return SIZES[self.check_split(split)]

    def make_example(self, split: str, index: int) -> dict:
        rng = random.Random(f"spellingbee-{split}-{index}")
        word = rng.choice(self.words(split))
        letter = rng.choice(word) if rng.random() < 0.9 else rng.choice(string.ascii_lowercase)
        zh = rng.random() < 0.2
        quote_letter, quote_word = rng.choice(["", "'", '"']), rng.choice(["", "'", '"'])
        question = rng.choice(QUESTIONS_ZH if zh else QUESTIONS_EN).format(
            letter=f"{quote_letter}{letter}{quote_letter}", word=f"{quote_word}{word}{quote_word}")
        if not zh and rng.random() < 0.3:
            question = question.lower()  # people type lazily
        question += rng.choice(["?", "？", ""] if zh else ["?", ""])
        return {"messages": [{"role": "user", "content": question},
                             {"role": "assistant", "content": self.solution(word, letter, zh)}]}

    @staticmethod
    def solution(word: str, letter: str, zh: bool) -> list[dict]:
        """Spell the word, count with a running tally, then confirm with the calculator tool."""
        lines, count = [], 0
        for position, char in enumerate(word, start=1):
            if char == letter:
                count += 1
                lines.append(f"{position}:{char} {'命中' if zh else 'hit'}! count={count}")
            else:
                lines.append(f"{position}:{char}")
        tally = "\n".join(lines)
        expr = f"'{word}'.count('{letter}')"
        output = use_calculator(expr)  # exactly what the engine will inject at generation time
        if zh:
            manual = (f"我们要数单词 '{word}' 里有几个字母 '{letter}'。先把它拼出来：\n{word}:{','.join(word)}\n\n"
                      f"然后逐个数 '{letter}'：\n{tally}\n\n手动数得 {count}。\n\n再用 Python 核对一下：\n\n")
            final = f"\n\nPython 也给出 {output}。\n\n#### {count}"
        else:
            manual = (f"We are asked to count the letter '{letter}' in the word '{word}'. Let me spell it out "
                      f"first:\n{word}:{','.join(word)}\n\nThen count the '{letter}':\n{tally}\n\n"
                      f"This gives us {count}.\n\nLet me double check with Python:\n\n")
            final = f"\n\nPython gives us {output} as well.\n\n#### {count}"
        return [{"type": "text", "text": manual}, {"type": "python", "text": expr},
                {"type": "python_output", "text": output}, {"type": "text", "text": final}]

    def evaluate(self, conversation: dict, completion: str) -> bool:
        return answer_is_correct(conversation, completion)
