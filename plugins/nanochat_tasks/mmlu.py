"""MMLU (cais/mmlu, config `all`): 57 subjects of four-way multiple choice.

`train` is the hub's `auxiliary_train` split (~100K questions from ARC, MC_TEST, OBQA and RACE, with an
empty subject); `validation`, `dev` and `test` are MMLU proper (the 14K `test` is the evaluation).
"""
from nanochat.tasks import HubTask, letter_is_correct, render_mc

LETTERS = ("A", "B", "C", "D")


class MMLU(HubTask):
    name = "mmlu"
    kind = "categorical"
    splits = ("train", "validation", "dev", "test")
    description = "57-subject multiple choice (cais/mmlu all: 100K train = auxiliary_train, 14K test)"
    repo = "cais/mmlu"
    subset = "all"
    hub_splits = {"train": "auxiliary_train", "validation": "validation", "dev": "dev", "test": "test"}

    def row_to_conversation(self, row: dict) -> dict:
        letters = LETTERS[:len(row["choices"])]
        return {"messages": [{"role": "user", "content": render_mc(row["question"], letters, row["choices"])},
                             {"role": "assistant", "content": LETTERS[row["answer"]]}],
                "letters": letters, "subject": row["subject"]}

    def evaluate(self, conversation: dict, completion: str) -> bool:
        """`completion` is the letter the model picked (categorical evaluation restricts it to `letters`)."""
        return letter_is_correct(conversation, completion)
