"""The models on this machine: every finished stage that produced one, and loading one to talk to.

Shared by `nanochat chat`, `nanochat serve` and the dashboard, so "which model is newest" and "why this
checkpoint cannot be used" are decided in one place.

    finished_models()                      every (run, stage) with a finished model, newest first
    find_model(run_name, kind)             the one `nanochat chat` picks by default (rl > sft > mid)
    load_engine(run_name=..., kind=..., checkpoint=...)   an Engine ready to generate, and what was loaded
"""
import sys
from dataclasses import dataclass
from pathlib import Path

from nanochat.errors import NanochatError

KINDS = ("rl", "sft", "mid", "base")  # the models a run can produce, most trained first
CHAT_KINDS = ("rl", "sft", "mid")  # the default pick within a run for chatting
TRAIN_HINT = "train one with: nanochat run --preset cpu-tiny (minutes on a laptop CPU; its sft stage makes a chat model)"


class ModelError(NanochatError):
    """Nothing to load, or a checkpoint that cannot be used: the message says what to do."""


@dataclass(frozen=True)
class ModelRef:
    """A finished model: `kind` ("sft", ...) made by the stage entry `stage` of run `run`."""
    run: object  # nanochat.runs.Run
    stage: str
    kind: str
    path: Path
    finished: float  # mtime of the stage's status.json: "newest" means most recently finished

    @property
    def id(self) -> str:
        """The name clients use to select it: "<run>/<kind>" (as in /v1/models)."""
        return f"{self.run.name}/{self.kind}"


def models_of_run(run) -> list[ModelRef]:
    """Every model a finished stage of `run` provides, one per kind (the last stage that made it)."""
    found = {}
    for entry in run.stages():
        status = run.status(entry["name"])
        if status["state"] != "done":
            continue
        for artifact, where in status.get("artifacts", {}).items():
            kind = artifact.removesuffix("-model")
            if artifact.endswith("-model") and kind in KINDS:
                finished = (run.stage_dir(entry["name"]) / "status.json").stat().st_mtime
                found[kind] = ModelRef(run, entry["name"], kind, run.dir / where, finished)
    return [found[k] for k in KINDS if k in found]


def finished_models(warn=True) -> list[ModelRef]:
    """Every finished model of every run, newest first. A damaged run is skipped (with a note on stderr)."""
    from nanochat.runs import RunError, list_runs
    found = []
    for run in list_runs():
        try:
            found += models_of_run(run)
        except RunError as exc:  # one damaged run must not hide the others
            if warn:
                print(f"nanochat: skipping run {run.name!r}: {exc}", file=sys.stderr)
    return sorted(found, key=lambda m: m.finished, reverse=True)


def find_model(run_name=None, kind=None) -> ModelRef:
    """The model to load: of `kind`, else the most trained chat model, in `run_name` or the newest run."""
    from nanochat import paths
    from nanochat.runs import Run
    kinds = (kind,) if kind else CHAT_KINDS
    if run_name:
        candidates = models_of_run(Run.open(run_name))
    else:
        candidates = finished_models()
    per_run = {}
    for ref in candidates:  # within a run the first of `kinds`; across runs the newest
        if ref.kind in kinds:
            best = per_run.get(ref.run.name)
            if best is None or kinds.index(ref.kind) < kinds.index(best.kind):
                per_run[ref.run.name] = ref
    if per_run:
        return max(per_run.values(), key=lambda m: m.finished)
    what = f"no finished {kind} model" if kind else "no finished chat model (rl, sft or mid)"
    where = f"in run {run_name!r}" if run_name else f"in any run under {paths.runs_dir()}"
    hint = "pretrain one with: nanochat run --preset cpu-tiny" if kind == "base" else TRAIN_HINT
    raise ModelError(f"{what} {where}; {hint}. Or pass --checkpoint PATH.")


def run_of(path: Path):
    """The run a checkpoint folder lives in (runs/<name>/checkpoints/<stage>/...), or None."""
    from nanochat.runs import Run
    path = Path(path).resolve()
    for parent in path.parents:
        if (parent / "run.json").exists():
            return Run(parent) if (parent / "checkpoints") in path.parents else None
    return None


def _kind_of(run, stage_name):
    artifacts = run.status(stage_name).get("artifacts", {})
    return next((a.removesuffix("-model") for a in artifacts if a.endswith("-model")), None)


def add_model_arguments(parser, role: str) -> None:
    """--run, --stage, --checkpoint, --tokenizer, --device: how `nanochat chat` and `nanochat serve` name the
    model they `load_engine`. `role` finishes "the run whose model ..." (e.g. "to load")."""
    parser.add_argument("--run", help=f"the run whose model {role} (default: the newest run with a finished one)")
    parser.add_argument("--stage", choices=["rl", "sft", "mid", "base"],
                        help=f"which model of the run {role} (default: rl, else sft, else mid); base completes text")
    parser.add_argument("--checkpoint", metavar="PATH", help=f"a checkpoint folder {role} instead of a run's model")
    parser.add_argument("--tokenizer", metavar="DIR", help="the tokenizer for --checkpoint (default: its run's)")
    parser.add_argument("--device", default="auto", help="device backend (cpu, cuda, mps) or auto")


def load_engine(run_name=None, kind=None, checkpoint=None, tokenizer_dir=None, device="auto", local_rank=0):
    """(engine, mode "chat" or "base", a line saying what was loaded, the ModelRef or None for a bare
    checkpoint). `checkpoint` overrides the run lookup; its run's tokenizer is used unless `tokenizer_dir`.
    `local_rank` picks the GPU on a machine with several (`nanochat serve` puts one replica on each)."""
    from nanochat.backend import select
    from nanochat.checkpoint import load_model
    from nanochat.engine import Engine
    from nanochat.stages import find_artifact
    from nanochat.tokenizer import Tokenizer

    ref = None
    if checkpoint:
        path = Path(checkpoint)
        if not path.exists():
            raise ModelError(f"--checkpoint {path} does not exist")
        run = run_of(path)
        stage_name = path.resolve().relative_to(run.dir.resolve() / "checkpoints").parts[0] if run else None
        is_base = kind == "base" or (stage_name and _kind_of(run, stage_name) == "base")
        mode = "base" if is_base else "chat"
    else:
        ref = find_model(run_name, kind)
        run, stage_name, path = ref.run, ref.stage, ref.path
        mode = "base" if ref.kind == "base" else "chat"

    tok_dir = tokenizer_dir or (find_artifact(run, "tokenizer") if run else None)
    if tok_dir is None:
        raise ModelError(f"no tokenizer for {path}: it is not inside a run with a finished tokenizer stage; "
                         "pass --tokenizer DIR")
    tokenizer = Tokenizer.load(tok_dir)

    backend = select(device)
    torch_device, dtype = backend.device(local_rank), backend.compute_dtype()
    redo = f"nanochat run --name {run.name} --stage {stage_name}" if run and stage_name else "the stage that wrote it"
    try:
        model, ckpt = load_model(path, torch_device, dtype)
    except NanochatError as exc:
        fix = f"; or re-create it by re-running {redo}" if "damaged" in str(exc) else ""
        raise ModelError(f"cannot load the checkpoint {path}: {exc}{fix}") from None
    except Exception as exc:  # a truncated or corrupted file shows up as any of torch's / pickle's errors
        raise ModelError(f"the checkpoint {path} is damaged ({type(exc).__name__}: {str(exc)[:200]}); "
                         f"re-create it by re-running {redo}") from None
    if model.config.vocab_size != tokenizer.vocab_size:
        raise ModelError(f"the model at {path} has a vocabulary of {model.config.vocab_size:,} tokens but the "
                         f"tokenizer at {tok_dir} has {tokenizer.vocab_size:,}; pass the tokenizer it was trained "
                         f"with (--tokenizer)")
    what = (f"run {run.name!r}, stage {stage_name!r}" if run else "checkpoint") + \
           f", step {ckpt.step} ({ckpt.path}) on {torch_device}, {str(dtype).replace('torch.', '')}"
    return Engine(model, tokenizer), mode, f"loaded {mode} model: {what}", ref
