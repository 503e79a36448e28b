"""GSM8K (openai/gsm8k, config `main`): grade-school math word problems solved with a calculator.

The reference solutions mark each calculation as `<<48/2=24>>`. Here that becomes a tool call, so the
model learns to call the calculator the engine gives it: a `python` part with the expression and a
`python_output` part with the result (the output is masked from the loss; the engine injects it at
generation time). The final answer follows `#### `; scoring compares that number, commas removed.
"""
import re

from nanochat.tasks import HubTask, answer_is_correct

_CALC = re.compile(r"(<<[^<>]*>>)")


def solution_to_parts(solution: str) -> list[dict]:
    """'She has 3*4 = <<3*4=12>>12 eggs.\\n#### 12' -> text, python '3*4', python_output '12', text."""
    parts = []
    for piece in _CALC.split(solution):
        if piece.startswith("<<") and piece.endswith(">>"):
            expr, equals, result = piece[2:-2].rpartition("=")
            if not equals:  # '<<expr>>' with no result written down
                expr, result = piece[2:-2], ""
            if expr.strip():
                parts += [{"type": "python", "text": expr}, {"type": "python_output", "text": result}]
                continue
        if piece:
            if parts and parts[-1]["type"] == "text":  # keep one text part between tool calls
                parts[-1]["text"] += piece
            else:
                parts.append({"type": "text", "text": piece})
    return parts


class GSM8K(HubTask):
    name = "gsm8k"
    kind = "generative"
    splits = ("train", "test")
    description = "grade-school math with calculator tool calls (openai/gsm8k main, 7.5K train / 1.3K test)"
    repo = "openai/gsm8k"
    subset = "main"
    hub_splits = {"train": "train", "test": "test"}

    def row_to_conversation(self, row: dict) -> dict:
        return {"messages": [{"role": "user", "content": row["question"]},
                             {"role": "assistant", "content": solution_to_parts(row["answer"])}]}

    def evaluate(self, conversation: dict, completion: str) -> bool:
        return answer_is_correct(conversation, completion)
