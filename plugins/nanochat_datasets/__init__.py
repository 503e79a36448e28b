"""Text datasets: `starter` (shipped inside this package) — more join as the data plugins grow."""
from pathlib import Path

from nanochat import hookimpl
from nanochat.datasets import ShardedDataset

STARTER_DIR = Path(__file__).parent / "starter"


class StarterDataset(ShardedDataset):
    name = "starter"
    description = ("embedded bilingual starter corpus: Brown corpus + WEB Bible (English), "
                   "Tang/Song poetry and classical prose (Chinese); ships with nanochat, no download")
    languages = ("en", "zh")

    def local_dir(self) -> Path:
        return STARTER_DIR

    def download_hint(self, num_shards=None) -> str:
        return "reinstall nanochat (the starter shards ship inside the nanochat_datasets package)"

    def chat_path(self) -> Path:
        """The chatterbot-corpus conversations kept apart for the chat stages."""
        return STARTER_DIR / "chat.jsonl"


@hookimpl
def nanochat_dataset(register):
    register(StarterDataset())
