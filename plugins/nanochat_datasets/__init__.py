"""Text datasets: `starter` (shipped inside this package), `fineweb-edu` and `climbmix` (Hugging Face
shards, fetched with `nanochat data download`) and `local` (your own folder: `local:PATH`).

Nothing heavy is imported here (no torch, pyarrow or huggingface_hub): `nanochat plugins` lists
this package instantly; the datasets import what they need inside their methods.
"""
from pathlib import Path

from nanochat import hookimpl
from nanochat.datasets import DownloadSummary, ShardedDataset
from nanochat.download import HubDataset

from .local import LocalDataset

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

    def download(self, num_shards=None, workers=4, **options):
        return DownloadSummary(self.spec, STARTER_DIR, skipped=[p.name for p in self.shard_paths()])

    def chat_path(self) -> Path:
        """The chatterbot-corpus conversations kept apart for the chat stages."""
        return STARTER_DIR / "chat.jsonl"

    def poems_path(self) -> Path:
        """The poems of 千家诗 and 唐诗三百首 as records (title, dynasty, author, lines), for starter-poetry."""
        return STARTER_DIR / "poems.jsonl"


# Both hub corpora were repacked the same way: shuffled documents, ~250M characters per shard
# (~100 MB of zstd parquet), row groups of 1024 documents. The last shard of each is validation,
# pinned so that downloading more training shards never changes it.
class FineWebEdu(HubDataset):
    name = "fineweb-edu"
    description = ("FineWeb-Edu (sample-100BT): English educational web pages, shuffled; 1822 training "
                   "shards + validation shard 1822, ~250M characters (~100 MB) each")
    languages = ("en",)
    repo_id = "karpathy/fineweb-edu-100b-shuffle"
    num_shards = 1823
    val_shard = 1822
    chars_per_shard = 250_000_000
    bytes_per_shard = 100_000_000


class ClimbMix(HubDataset):
    name = "climbmix"
    description = ("NVIDIA ClimbMix 400B: web text, code and math, shuffled; 6542 training shards + "
                   "validation shard 6542, ~250M characters (~100 MB) each")
    languages = ("en",)
    repo_id = "karpathy/climbmix-400b-shuffle"
    num_shards = 6543
    val_shard = 6542
    chars_per_shard = 250_000_000
    bytes_per_shard = 100_000_000


@hookimpl
def nanochat_dataset(register):
    register(StarterDataset())
    register(FineWebEdu())
    register(ClimbMix())
    register(LocalDataset())
