"""Which model: a finished stage of a run (`RUN:STAGE`, or `RUN` for its last model) or a checkpoint folder,
together with the tokenizer it was trained with.

`nanochat eval` scores such a model and `nanochat run --from` starts a new run from one. The checkpoint is
pinned to one step folder, so a source run that trains on never changes what was chosen.
"""
import json
from dataclasses import dataclass
from pathlib import Path

from nanochat.errors import NanochatError
from nanochat.runs import Run
from nanochat.stages import find_artifact


class SourceError(NanochatError):
    """The model asked for cannot be found; the message says which ones can."""


@dataclass
class ModelSource:
    checkpoint: Path  # a step_XXXXXX folder with model.pt and meta.json
    tokenizer: Path  # the tokenizer folder the model was trained with
    step: int
    run: Run | None = None  # the run it comes from, if any
    stage: str | None = None

    def describe(self) -> dict:
        return {"run": self.run.name if self.run else None, "stage": self.stage, "checkpoint": str(self.checkpoint),
                "step": self.step, "tokenizer": str(self.tokenizer)}

    def label(self) -> str:
        where = f"{self.run.name}:{self.stage}" if self.run else str(self.checkpoint)
        return f"{where} (step {self.step})"


def model_stages(run: Run) -> dict[str, Path]:
    """stage -> the model it produced, for every finished stage of a run that produced one (in run order)."""
    from nanochat.models import models_of_run
    found = {ref.stage: ref.path for ref in models_of_run(run)}
    return {s["name"]: found[s["name"]] for s in run.stages() if s["name"] in found}


def pinned(path: Path) -> tuple[Path, int]:
    """A checkpoint folder and its step: a stage's checkpoint directory resolves to its latest step."""
    path = Path(path).expanduser().resolve()
    if (path / "latest.json").exists():
        from nanochat import checkpoint
        path = checkpoint.step_dir(path, checkpoint.latest_step(path))
    meta = path / "meta.json"
    if not (meta.is_file() and (path / "model.pt").is_file()):
        raise SourceError(f"{path} is not a model checkpoint (it needs model.pt and meta.json, as in "
                          f"<run>/checkpoints/<stage>/step_XXXXXX); list models with `nanochat runs`")
    return path, int(json.loads(meta.read_text())["step"])


def from_run(name: str, stage: str | None = None) -> ModelSource:
    run = Run.open(name)
    models = model_stages(run)
    if not models:
        raise SourceError(f"run {name!r} has no finished stage that produced a model yet; finish one with "
                          f"`nanochat run --name {name}`")
    if stage is None:
        stage = list(models)[-1]
    if stage not in models:
        known = [s["name"] for s in run.stages()]
        why = "is not a stage of it" if stage not in known else f"is {run.status(stage)['state']} or produced no model"
        raise SourceError(f"run {name!r}: stage {stage!r} {why}; stages with a model: {', '.join(models)}")
    checkpoint, step = pinned(models[stage])
    tokenizer = find_artifact(run, "tokenizer", before=stage)
    if tokenizer is None:
        raise SourceError(f"run {name!r} has no finished tokenizer before stage {stage!r}")
    return ModelSource(checkpoint, Path(tokenizer), step, run, stage)


def from_path(path, tokenizer=None) -> ModelSource:
    """A checkpoint folder; inside a run its run, stage and tokenizer are known, elsewhere give the tokenizer."""
    from nanochat.models import run_of
    checkpoint, step = pinned(Path(path))
    run = run_of(checkpoint)
    stage = checkpoint.relative_to(run.dir.resolve() / "checkpoints").parts[0] if run else None
    if tokenizer is None and run is not None:
        tokenizer = find_artifact(run, "tokenizer", before=stage)
    if tokenizer is None:
        raise SourceError(f"{checkpoint} is not inside a run, so its tokenizer is unknown: give the tokenizer "
                          f"folder it was trained with (--tokenizer DIR)")
    tokenizer = Path(tokenizer).expanduser().resolve()
    if not tokenizer.is_dir():
        raise SourceError(f"tokenizer folder {tokenizer} does not exist")
    return ModelSource(checkpoint, tokenizer, step, run, stage)


def parse(spec: str, tokenizer=None) -> ModelSource:
    """`RUN:STAGE`, `RUN` (its last stage with a model) or a checkpoint PATH."""
    if Path(spec).expanduser().exists():
        return from_path(spec, tokenizer)
    name, _, stage = spec.partition(":")
    from nanochat.runs import NAME_RE, list_runs
    if not (NAME_RE.match(name) and Run.exists(name)):
        runs = ", ".join(r.name for r in list_runs()) or "none yet"
        raise SourceError(f"{spec!r} is neither a run (RUN or RUN:STAGE) nor a checkpoint folder; runs: {runs}")
    return from_run(name, stage or None)
