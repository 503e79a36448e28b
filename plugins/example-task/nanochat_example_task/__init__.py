"""An example third-party task plugin: "reverse the words of a sentence".

Install it with `pip install -e plugins/example-task` and it appears in `nanochat plugins`.
The task is synthetic and deterministic: example i of a split is always the same sentence.
"""
import random

from nanochat import hookimpl

WORDS = ("red green blue cat dog bird tree river stone cloud sun moon light dark fast slow "
         "small big warm cold").split()


class ReverseWords:
    name = "reverse-words"
    kind = "generative"
    splits = ("train", "test")
    description = "reverse the order of 3-6 words (synthetic, deterministic)"

    def num_examples(self, split: str) -> int:
        return {"train": 2000, "test": 200}[split]

    def _words(self, split: str, index: int) -> list[str]:
        rng = random.Random(f"{split}-{index}")  # a string seed is stable across processes
        return [rng.choice(WORDS) for _ in range(rng.randint(3, 6))]

    def example(self, split: str, index: int) -> dict:
        words = self._words(split, index)
        return {"messages": [
            {"role": "user", "content": "Reverse the words: " + " ".join(words)},
            {"role": "assistant", "content": " ".join(reversed(words))},
        ]}

    def evaluate(self, conversation: dict, completion: str) -> bool:
        return completion.strip() == conversation["messages"][-1]["content"]

    def reward(self, conversation: dict, completion: str) -> float:
        return float(self.evaluate(conversation, completion))


@hookimpl
def nanochat_task(register):
    register(ReverseWords())
