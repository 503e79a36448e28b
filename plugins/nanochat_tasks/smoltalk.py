"""SmolTalk (HuggingFaceTB/smol-smoltalk): general assistant conversations, the bulk of mid/SFT training.

460K train / 24K test conversations, some with a leading system message. Rows already hold `messages`
in nanochat's shape; the task only checks them (through the view) and serves them shuffled.
"""
from nanochat.tasks import HubTask


class SmolTalk(HubTask):
    name = "smoltalk"
    kind = "conversations"
    splits = ("train", "test")
    description = "general chat (HuggingFaceTB/smol-smoltalk, ~460K train / 24K test)"
    repo = "HuggingFaceTB/smol-smoltalk"
    subset = None  # the files live in data/
    hub_splits = {"train": "train", "test": "test"}

    def row_to_conversation(self, row: dict) -> dict:
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        return {"messages": messages}
