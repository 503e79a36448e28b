"""ARC (allenai/ai2_arc): grade-school science multiple choice, Easy and Challenge sets.

The user sees `render_mc(question, letters, choices)`; the assistant answers with one letter. A few
ARC questions label their choices 1-4 instead of A-D: those are mapped to letters so every prompt
asks for a letter, as the instruction says.
"""
from nanochat.tasks import HubTask, TaskError, letter_is_correct, render_mc

_DIGIT_TO_LETTER = {"1": "A", "2": "B", "3": "C", "4": "D", "5": "E"}


class ARC(HubTask):
    kind = "categorical"
    splits = ("train", "validation", "test")
    repo = "allenai/ai2_arc"
    hub_splits = {"train": "train", "validation": "validation", "test": "test"}

    def __init__(self, subset: str):
        super().__init__()
        self.subset = subset  # "ARC-Easy" or "ARC-Challenge", a folder of the repo
        self.name = subset.lower()
        sizes = {"ARC-Easy": "2.3K train / 570 validation / 2.4K test",
                 "ARC-Challenge": "1.1K train / 299 validation / 1.2K test"}.get(subset, subset)
        self.description = f"grade-school science multiple choice (allenai/ai2_arc {subset}, {sizes})"

    def row_to_conversation(self, row: dict) -> dict:
        labels = [_DIGIT_TO_LETTER.get(label, label) for label in row["choices"]["label"]]
        answer = _DIGIT_TO_LETTER.get(row["answerKey"], row["answerKey"])
        if answer not in labels:
            raise TaskError(f"{self.name} row {row.get('id')!r}: answer {row['answerKey']!r} is not one of the "
                            f"choice labels {row['choices']['label']}")
        return {"messages": [{"role": "user", "content": render_mc(row["question"], labels, row["choices"]["text"])},
                             {"role": "assistant", "content": answer}],
                "letters": labels}

    def evaluate(self, conversation: dict, completion: str) -> bool:
        """`completion` is the letter the model picked (categorical evaluation restricts it to `letters`)."""
        return letter_is_correct(conversation, completion)
