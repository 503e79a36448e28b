"""starter-chat: the chatterbot-corpus conversations that ship with the starter data (English + Chinese).

They come from the `starter` dataset's `chat.jsonl` (one `{"id", "lang", "category", "messages"}` per
line). One conversation in ten, chosen by a hash of its id, is the test split, so the split does not move
when the file grows; each split is served shuffled with seed 42.
"""
import copy
import zlib

from nanochat.tasks import Task, load_jsonl_conversations, shuffled_indices


class StarterChat(Task):
    name = "starter-chat"
    kind = "conversations"
    splits = ("train", "test")
    description = "small English + Chinese chats from chatterbot-corpus, shipped with the starter data"

    def __init__(self, path=None):
        self.path = path  # None = the starter dataset's chat.jsonl, looked up when first needed
        self._splits: dict[str, list[dict]] | None = None

    def _chat_path(self):
        if self.path is not None:
            return self.path
        from nanochat import plugins
        return plugins.registry().get("dataset", "starter").chat_path()

    def conversations(self, split: str) -> list[dict]:
        if self._splits is None:
            every = load_jsonl_conversations(self._chat_path(), where="starter chat.jsonl")
            by_split = {"train": [], "test": []}
            for i, conversation in enumerate(every):
                key = str(conversation.get("id", i)).encode()
                by_split["test" if zlib.crc32(key) % 10 == 0 else "train"].append(conversation)
            self._splits = {s: [rows[j] for j in shuffled_indices(len(rows))] for s, rows in by_split.items()}
        return self._splits[self.check_split(split)]

    def num_examples(self, split: str) -> int:
        return len(self.conversations(split))

    def make_example(self, split: str, index: int) -> dict:
        return copy.deepcopy(self.conversations(split)[index])
