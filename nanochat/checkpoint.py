"""Checkpoints: model, per-rank optimizer shards, data position and RNG — saved atomically, loaded exactly.

    checkpoints/<stage>/step_000100/model.pt           weights (rank 0; fp32 master copy)
    checkpoints/<stage>/step_000100/meta.json          step, model config, settings, world size, metrics
    checkpoints/<stage>/step_000100/rank0.pt ...       per rank: optimizer shard, loader state, RNG, loop state
    checkpoints/<stage>/latest.json                    {"step": 100}

Every rank writes into `step_XXXXXX.partial/`; after a barrier rank 0 writes meta.json and renames the
folder, then points latest.json at it. A crash at any moment leaves either the old checkpoint or
the new one, never a mix. Nodes without a shared disk each keep their own copy: there each node's local
rank 0 plays rank 0's part, and a node holds model.pt (the weights are the same on every rank) and the
rank files of its own processes (optimizer shards are per rank).

meta.json records each file's size and sha256, so a checkpoint damaged later (a truncated copy, a bad
disk) is detected on resume: the damaged file is named and the previous checkpoint (the last two are
kept) is used instead.
"""
import errno
import json
import sys
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nanochat import faults
from nanochat.errors import NanochatError
from nanochat.atomic import atomic_path, atomic_write_json, file_sha256


class CheckpointError(NanochatError):
    pass


def step_dir(directory: Path, step: int) -> Path:
    return Path(directory) / f"step_{step:06d}"


def _torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb", buffering=0) as raw:
        file = _WriteErrors(raw)
        try:
            torch.save(obj, file)
        except RuntimeError:
            if file.error:  # torch reports a failed write as a RuntimeError; the OSError says why (ENOSPC...)
                raise file.error from None
            raise


class _WriteErrors:
    """A file that remembers the OSError of a failed write."""

    def __init__(self, raw):
        self.raw, self.error = raw, None

    def write(self, data):
        view, done = memoryview(data), 0
        try:
            while done < len(view):  # an unbuffered write may be short
                done += self.raw.write(view[done:])
            return done
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self):
        self.raw.flush()


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(directory: Path, step: int, *, world, model=None, meta: dict | None = None, rank_state: dict | None = None,
         keep: int = 2) -> Path:
    """Save one checkpoint; every rank calls this. `model` and `meta` are used on rank 0 only (on each
    node's local rank 0 when the nodes have a disk each)."""
    directory = Path(directory)
    final, partial = step_dir(directory, step), Path(str(step_dir(directory, step)) + ".partial")
    writer = world.is_home_main
    if writer:
        shutil.rmtree(partial, ignore_errors=True)  # leftovers of a save that crashed
        partial.mkdir(parents=True)
    world.barrier()
    try:
        if rank_state is not None:
            _torch_save(rank_state, partial / f"rank{world.rank}.pt")
        faults.hit("checkpoint")  # rank files written, model not yet
        if writer and model is not None:
            _torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, partial / "model.pt")
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise
        need = _state_bytes(rank_state) + (_state_bytes(model.state_dict()) if writer and model is not None else 0)
        shutil.rmtree(partial, ignore_errors=True)
        raise CheckpointError(f"no space to save checkpoint step {step} in {directory} ({e.strerror}): it needs about "
                              f"{need / 2**20:.1f} MiB per process; the previous checkpoint is intact. Free disk space "
                              f"(or lower keep_checkpoints) and resume") from None
    world.barrier()
    if writer:
        files = {f.name: {"bytes": f.stat().st_size, "sha256": file_sha256(f)} for f in sorted(partial.glob("*.pt"))}
        atomic_write_json(partial / "meta.json", {**(meta or {}), "step": step, "world_size": world.size,
                                                  "files": files})
        shutil.rmtree(final, ignore_errors=True)  # the same step saved again (a resumed run's final save)
        partial.rename(final)
        atomic_write_json(directory / "latest.json", {"step": step})
        _prune(directory, keep, protect=step)
    world.barrier()
    return final


def _state_bytes(obj) -> int:
    """Bytes of the tensors in a (nested) state dict: what a save of it needs on disk, roughly."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_state_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_state_bytes(v) for v in obj)
    return 0


def damage(path: Path) -> str | None:
    """Why the checkpoint folder `path` can't be trusted (naming the file), or None when it is whole."""
    meta_file = Path(path) / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return f"{meta_file} is missing or unreadable"
    for name, expected in meta.get("files", {}).items():  # checkpoints from before checksums have none
        file = Path(path) / name
        if not file.exists():
            return f"{file} is missing"
        if file.stat().st_size != expected["bytes"]:
            return f"{file} is truncated ({file.stat().st_size} of {expected['bytes']} bytes)"
        if file_sha256(file) != expected["sha256"]:
            return f"{file} is corrupted (its sha256 does not match meta.json)"
    return None


def _complete_steps(directory: Path) -> list[int]:
    return sorted(int(p.name[5:]) for p in Path(directory).glob("step_*")
                  if p.is_dir() and not p.name.endswith(".partial") and (p / "meta.json").exists())


def _prune(directory: Path, keep: int, protect: int) -> None:
    done = _complete_steps(directory)
    for step in done[:-keep] if keep > 0 else []:
        if step != protect:
            shutil.rmtree(step_dir(directory, step), ignore_errors=True)


def latest_step(directory: Path) -> int | None:
    pointer = Path(directory) / "latest.json"
    if not pointer.exists():
        return None
    try:
        step = json.loads(pointer.read_text())["step"]
    except (ValueError, KeyError):
        raise CheckpointError(f"{pointer} is damaged; delete it to fall back to the newest complete step_* folder") from None
    if not (step_dir(directory, step) / "meta.json").exists():
        raise CheckpointError(f"{pointer} points at step {step} but {step_dir(directory, step)} is incomplete or missing")
    return step


@dataclass
class Checkpoint:
    path: Path
    step: int
    meta: dict
    skipped: str | None = None  # why a newer checkpoint was passed over, for the stage's log

    def model_state(self, map_location="cpu") -> dict:
        file = self.path / "model.pt"
        if not file.exists():
            raise CheckpointError(f"{file} is missing; this checkpoint has no model weights")
        return torch.load(file, map_location=map_location, weights_only=True)

    def rank_state(self, rank: int, world_size: int) -> dict:
        if self.meta.get("world_size", 1) != world_size:
            raise CheckpointError(f"checkpoint {self.path} was saved by {self.meta.get('world_size')} processes and this "
                                  f"run has {world_size}; optimizer shards and data positions are per process, so resume "
                                  f"with --nproc-per-node {self.meta.get('world_size')} (or start the stage afresh)")
        return torch.load(self.path / f"rank{rank}.pt", map_location="cpu", weights_only=False)


def _newest_whole(directory: Path) -> Checkpoint:
    """The newest undamaged checkpoint of a stage directory; a damaged newer one is named in `skipped`."""
    try:
        latest = latest_step(directory)
    except CheckpointError as e:
        latest, skipped = None, str(e)
    else:
        skipped = None
    candidates = [s for s in _complete_steps(directory) if latest is None or s <= latest]
    for step in reversed(candidates):
        path = step_dir(directory, step)
        problem = damage(path)
        if problem is None:
            meta = json.loads((path / "meta.json").read_text())
            if skipped:
                print(f"warning: {skipped}; using checkpoint step {step} instead", file=sys.stderr)
            return Checkpoint(path=path, step=meta["step"], meta=meta, skipped=skipped)
        skipped = f"{skipped}; {problem}" if skipped else problem
    raise CheckpointError(f"no usable checkpoint in {directory}: {skipped or 'none saved'}; "
                          f"delete the folder to start this stage afresh")


def load(path: Path) -> Checkpoint:
    """A checkpoint folder (step_XXXXXX) or a stage's checkpoint directory (its newest undamaged step)."""
    path = Path(path)
    if (path / "latest.json").exists():
        return _newest_whole(path)
    meta_file = path / "meta.json"
    if not meta_file.exists():
        raise CheckpointError(f"{path} is not a complete checkpoint (no meta.json)")
    problem = damage(path)
    if problem:
        raise CheckpointError(f"checkpoint {path} is damaged: {problem}; use an earlier step_* folder")
    meta = json.loads(meta_file.read_text())
    return Checkpoint(path=path, step=meta["step"], meta=meta)


def load_model(path: Path, device="cpu", compute_dtype=torch.float32, *, for_training: bool = False):
    """Build the GPT saved in a checkpoint and load its weights (on `device`, fp32 master weights)."""
    from nanochat.model import GPT, GPTConfig
    ckpt = load(path)
    config = GPTConfig.from_dict(ckpt.meta["model_config"])
    with torch.device("meta"):
        model = GPT(config, compute_dtype=compute_dtype)
    model.to_empty(device=device)
    model.init_weights()  # creates non-persistent buffers (rotary tables)
    model.load_state_dict(ckpt.model_state(map_location=device), strict=True, assign=True)
    model.train(for_training)
    return model, ckpt
