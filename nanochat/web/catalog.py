"""The models `nanochat serve` offers: every finished model on this machine, and the default one.

A model's id is "<run>/<kind>" (as `nanochat.models.ModelRef.id`), which is what a client puts in the
`model` field. The list is read from the run folders again every few seconds, so a run that finishes
while the server is up shows up without a restart. `--checkpoint PATH` adds that checkpoint under the
id of the run model it is, else "checkpoint/<folder>".
"""
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from nanochat.models import ModelError, find_model, finished_models, load_engine, run_of

REFRESH_S = 3.0


@dataclass(frozen=True)
class ServedModel:
    id: str
    run: str | None
    stage: str | None
    kind: str | None
    step: int | None
    checkpoint: Path
    tokenizer: str | None = None  # only for a checkpoint outside a run
    created: int = 0

    def load(self, device, local_rank=0):
        """(engine, mode, loaded line, ref) on `device`'s GPU local_rank (see nanochat.models.load_engine)."""
        return load_engine(checkpoint=self.checkpoint, kind=self.kind, tokenizer_dir=self.tokenizer, device=device,
                           local_rank=local_rank)

    def describe(self, default=False):
        """The /v1/models entry."""
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": "nanochat",
                "nanochat": {"run": self.run, "stage": self.stage, "kind": self.kind, "step": self.step,
                             "default": default}}


def step_of(path) -> int | None:
    from nanochat.checkpoint import load
    try:
        return load(path).step
    except Exception:  # a damaged checkpoint: listed without a step, and loading it says why
        return None


def from_ref(ref) -> ServedModel:
    return ServedModel(id=ref.id, run=ref.run.name, stage=ref.stage, kind=ref.kind, step=step_of(ref.path),
                       checkpoint=ref.path, created=int(ref.finished))


def from_checkpoint(path, kind=None, tokenizer=None) -> ServedModel:
    """The model at a checkpoint folder, named after the run model it is when it is one."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"--checkpoint {path} does not exist")
    run = run_of(path)
    if run is not None:
        from nanochat.models import models_of_run
        for ref in models_of_run(run):
            if ref.path.resolve() == path.resolve() and (kind is None or ref.kind == kind):
                return from_ref(ref)
    name = f"{run.name}/{path.name}" if run else f"checkpoint/{path.name}"
    return ServedModel(id=name, run=run.name if run else None, stage=None, kind=kind, step=step_of(path),
                       checkpoint=path, tokenizer=tokenizer, created=int(path.stat().st_mtime))


def choose_default(run=None, stage=None, checkpoint=None, tokenizer=None) -> ServedModel:
    """What `--run/--stage/--checkpoint` chose, else the newest chat model; ModelError says how to make one."""
    if checkpoint:
        return from_checkpoint(checkpoint, stage, tokenizer)
    return from_ref(find_model(run, stage))


class ModelCatalog:
    def __init__(self, default: ServedModel | None):
        self.default = default
        self._lock = threading.Lock()
        self._listed, self._listed_at = [], -REFRESH_S

    def models(self) -> list[ServedModel]:
        """Every finished model, newest first, with the default among them."""
        with self._lock:
            if time.monotonic() - self._listed_at >= REFRESH_S:
                self._listed = [from_ref(ref) for ref in finished_models(warn=False)]
                self._listed_at = time.monotonic()
            found = list(self._listed)
        if self.default is not None:
            found = [self.default] + [m for m in found if m.id != self.default.id]
        return found

    def get(self, model_id) -> ServedModel | None:
        """The model a request names (None: the default)."""
        if model_id is None or (self.default is not None and model_id == self.default.id):
            return self.default
        found = next((m for m in self.models() if m.id == model_id), None)
        if found is None and time.monotonic() - self._listed_at > 0.5:  # a run may have finished since
            with self._lock:
                self._listed_at = -REFRESH_S
            found = next((m for m in self.models() if m.id == model_id), None)
        return found
