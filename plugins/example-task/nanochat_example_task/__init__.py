"""An example third-party task plugin: "reverse the words of a sentence".

Install it with `nanochat plugins install -e plugins/example-task` and it appears in `nanochat plugins`.
It is written the one way docs/tasks.md describes: a `nanochat.tasks.Task` subclass that gives
`num_examples` and `make_example`, and `evaluate` because it can be scored. The task is synthetic and
deterministic: example i of a split is always the same sentence.
"""
import random

from nanochat import hookimpl
from nanochat.tasks import Task

WORDS = ("red green blue cat dog bird tree river stone cloud sun moon light dark fast slow "
         "small big warm cold").split()


class ReverseWords(Task):
    name = "reverse-words"
    kind = "generative"
    splits = ("train", "test")
    description = "reverse the order of 3-6 words (synthetic, deterministic)"

    def num_examples(self, split: str) -> int:
        return {"train": 2000, "test": 200}[split]

    def make_example(self, split: str, index: int) -> dict:
        rng = random.Random(f"{split}-{index}")  # a string seed is stable across processes
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 6))]
        return {"messages": [
            {"role": "user", "content": "Reverse the words: " + " ".join(words)},
            {"role": "assistant", "content": " ".join(reversed(words))},
        ]}

    def evaluate(self, conversation: dict, completion: str) -> bool:
        return completion.strip() == conversation["messages"][-1]["content"]

    # reward() is inherited: float(evaluate(...)), the signal RL trains on


@hookimpl
def nanochat_task(register):
    register(ReverseWords())
