"""Where nanochat keeps things on disk.

By default the user's platform directories (platformdirs): runs, checkpoints and tokenizers under the
data dir, downloaded datasets and caches under the cache dir. `NANOCHAT_HOME` moves everything
under one folder (handy for tests, shared machines and big scratch disks).
"""
import os
from pathlib import Path

import platformdirs

APP = "nanochat"


def _home():
    home = os.environ.get("NANOCHAT_HOME")
    return Path(home).expanduser().resolve() if home else None


def data_dir() -> Path:
    home = _home()
    return home if home else Path(platformdirs.user_data_dir(APP, appauthor=False))


def cache_dir() -> Path:
    home = _home()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP, appauthor=False))


def runs_dir() -> Path:
    """Each run is a folder here; its checkpoints live inside it (runs/<name>/checkpoints/)."""
    return data_dir() / "runs"


def tokenizers_dir() -> Path:
    """Tokenizers trained with `nanochat tokenizer train` when no --output is given."""
    return data_dir() / "tokenizers"


def datasets_dir() -> Path:
    """Downloaded dataset shards, one folder per dataset."""
    return cache_dir() / "datasets"


def all_paths() -> dict:
    return {
        "data": data_dir(),
        "cache": cache_dir(),
        "runs": runs_dir(),
        "checkpoints": runs_dir() / "<run>" / "checkpoints",
        "tokenizers": tokenizers_dir(),
        "datasets": datasets_dir(),
    }
