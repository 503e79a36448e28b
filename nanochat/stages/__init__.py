"""Stages: the steps of a pipeline (tokenizer, pretrain, sft, ...) and what they get to work with.

A stage is a class with
    name       its type name ("pretrain")
    Settings   a dataclass of its knobs with defaults (presets and `--set` fill them)
    needs      artifacts it reads ("tokenizer", "base-model", ...); a tuple, or a function of settings
    produces   artifacts it hands on
    run(ctx)   does the work; resumes from its own checkpoint when there is one
    distributed  (optional, default True) False = run in one process even when the run uses torchrun
    task_settings  (optional) {setting: "train" | "scored"}: settings that name tasks, resolved when the run
               starts ("scored": only tasks that can be scored); a `dataset` setting names a dataset

Stage classes are imported only when a run needs them, so the CLI starts without torch.
"""
import dataclasses
import importlib
import sys
import traceback
import typing
from pathlib import Path

from nanochat.errors import NanochatError
from nanochat.runs import Run

# stage type -> "module:Class". A preset may also name any "package.module:Class" directly.
STAGES = {
    "tokenizer": "nanochat.stages.tokenizer:TokenizerStage",
    "tokenizer-eval": "nanochat.stages.tokenizer:TokenizerEvalStage",
    "pretrain": "nanochat.stages.pretrain:PretrainStage",
    "base-eval": "nanochat.stages.base_eval:BaseEvalStage",
    "core-eval": "nanochat.stages.core_eval:CoreEvalStage",
    "midtrain": "nanochat.stages.chat_train:MidtrainStage",
    "sft": "nanochat.stages.chat_train:SFTStage",
    "rl": "nanochat.stages.rl:RLStage",
    "chat-eval": "nanochat.stages.chat_eval:ChatEvalStage",
}


class StageError(NanochatError):
    """A stage cannot run as configured; the message says what to change."""


@dataclasses.dataclass
class CommonSettings:
    """Knobs every stage has."""

    device: str = "auto"  # backend name (cpu, cuda, mps) or auto = best available


def stage_class(stage_type: str):
    target = STAGES.get(stage_type, stage_type if ":" in stage_type else None)
    if target is None:
        raise StageError(f"unknown stage {stage_type!r}; valid stages: {', '.join(STAGES)} "
                         f"(or 'package.module:Class' for a stage of your own)")
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise StageError(f"stage {stage_type!r} could not be loaded from {target!r}: {exc}") from exc


def needs_source_model(settings) -> tuple:
    """What a stage that starts from another stage's model needs: the tokenizer and "<source>-model"."""
    return ("tokenizer", f"{settings.source}-model")


def needs_of(cls, settings) -> tuple:
    needs = getattr(cls, "needs", ())
    return tuple(needs(settings) if callable(needs) else needs)


# -- settings ------------------------------------------------------------------------------------
def settings_fields(cls) -> dict:
    """name -> (type, default) of a stage's Settings."""
    hints = typing.get_type_hints(cls.Settings)
    return {f.name: (hints[f.name], f.default) for f in dataclasses.fields(cls.Settings)}


def convert(value, kind, key: str):
    """Turn a preset value or a `--set` string into the setting's type."""
    if isinstance(value, str) and kind is not str:
        text = value.strip()
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise StageError(f"setting {key}={value!r} is not a boolean; use true or false")
        try:
            return kind(float(text)) if kind is int and "e" in text.lower() else kind(text)
        except (TypeError, ValueError):
            raise StageError(f"setting {key}={value!r} is not a valid {kind.__name__}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise StageError(f"setting {key}={value!r} should be a {kind.__name__}")
    return value


def make_settings(cls, values: dict, where: str):
    fields = settings_fields(cls)
    unknown = set(values) - set(fields)
    if unknown:
        raise StageError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}; "
                         f"valid settings: {', '.join(sorted(fields))}")
    typed = {k: convert(v, fields[k][0], f"{where}.{k}") for k, v in values.items()}
    return cls.Settings(**typed)


# -- the context a stage runs in -------------------------------------------------------------------
class StageContext:
    """What a running stage gets: its settings, its folders, logging, metrics, artifacts, device."""

    def __init__(self, run: Run, entry: dict, settings, world, registry, echo: bool = True):
        self.run, self.name, self.settings = run, entry["name"], settings
        self.world, self.registry, self.echo = world, registry, echo
        self.stage_dir = run.stage_dir(self.name)
        self.checkpoint_dir = run.checkpoint_dir(self.name)
        self.provided: dict[str, str] = {}
        self.summary: dict[str, object] = {}  # headline numbers for the report's summary table
        self.notes: list[str] = []  # what a reader of the status must know (e.g. why it stopped early)
        self._backend = None
        self._observers = None

    # -- output (rank 0 only, so a torchrun job writes each line once) --------------------------
    def log(self, message: str) -> None:
        if not self.world.is_main:
            return
        if self.echo:
            print(message, flush=True)
        self.run.append_log(self.name, message)

    def note(self, message: str) -> None:
        """Log a line that also goes into the stage's status (`notes`) for the CLI, dashboard and report."""
        self.notes.append(message)
        self.log(f"note: {message}")

    def metric(self, record: dict) -> None:
        if not self.world.is_main:
            return
        self.run.append_metrics(self.name, record)
        self.event("metrics", record=record)

    def event(self, kind: str, **data) -> None:
        if not self.world.is_main:
            return
        event = {"type": kind, "run": self.run.name, "stage": self.name, **data}
        for observer in list(self.observers()):
            try:
                observer.on_event(event)
            except Exception as exc:  # a logger must never stop training: it is switched off instead
                self._quarantine_observer(observer, kind, exc)

    def observers(self):
        if self._observers is None:
            info = {"run": self.run.name, "stage": self.name, "settings": dataclasses.asdict(self.settings)}
            off = self.run.info.get("quarantined", {})
            self._observers = [o for o in self.registry.all("observer")
                               if f"observer:{o.name}" not in off and _enabled(o, info)]
        return self._observers

    def _quarantine_observer(self, observer, kind: str, exc: Exception) -> None:
        """Off for the rest of the run (recorded in run.json, so later stages and resumes skip it too)."""
        from nanochat.plugins import how_to_leave_out
        error = f"{type(exc).__name__}: {exc}"
        plugin = self.registry.disable("observer", observer.name, error)
        self._observers.remove(observer)
        self.run.update_info(quarantined={**self.run.info.get("quarantined", {}), f"observer:{observer.name}": error})
        message = (f"observer {observer.name!r} of plugin {plugin.name!r} raised {error} on a {kind!r} event; it is "
                   f"off for the rest of run {self.run.name!r} and the stage goes on. To stop loading it, "
                   f"{how_to_leave_out(plugin)}")
        print(f"nanochat: {message}", file=sys.stderr, flush=True)
        self.note(message)

    def write_report(self, markdown: str) -> None:
        """This stage's section of the report card (markdown, starting with a '## ' heading)."""
        if self.world.is_main:
            from nanochat.atomic import atomic_write_text
            atomic_write_text(self.stage_dir / "report.md", markdown.rstrip() + "\n")

    # -- artifacts -------------------------------------------------------------------------------
    def provide(self, artifact: str, path) -> None:
        """Record where this stage put an artifact (a path inside the run folder)."""
        self.provided[artifact] = str(path.relative_to(self.run.dir)) if hasattr(path, "relative_to") else path

    def artifact(self, artifact: str):
        return find_artifact(self.run, artifact, before=self.name)

    def tokenizer(self):
        """The run's tokenizer (the "tokenizer" artifact)."""
        from nanochat.tokenizer import Tokenizer
        return Tokenizer.load(self.artifact("tokenizer"))

    # -- device ------------------------------------------------------------------------------------
    @property
    def backend(self):
        if self._backend is None:
            from nanochat.backend import select
            self._backend = select(self.settings.device, self.registry)
        return self._backend

    @property
    def device(self):
        """This process's torch device."""
        return self.backend.device(self.world.local_rank)

    def compute_dtype(self, name: str = "auto"):
        """The matmul dtype for a stage's `dtype` setting: auto (the backend's choice), bf16 or fp32."""
        return compute_dtype(self.backend, name)

    def wants_compile(self, setting: str = "auto") -> bool:
        """Whether the `compile` setting (auto / on / off) and the backend say to torch.compile the training step."""
        if setting not in ("auto", "on", "off"):
            raise StageError(f"compile={setting!r} is not one of auto, on, off")
        return self.backend.compile_is_wise() if setting == "auto" else setting == "on"

    def maybe_compile(self, model, setting: str = "auto"):
        """torch.compile the model when wants_compile(setting)."""
        if not self.wants_compile(setting):
            return model
        if getattr(self.settings, "deterministic", False) and self.device.type == "cpu":
            return repeatable_compile(model)
        import torch
        return torch.compile(model, dynamic=False)


def repeatable_compile(model):
    """torch.compile for CPU with ATen's deterministic algorithms on (the `deterministic` setting).

    The built-in model needs none of it: its one source of run-to-run difference under Inductor on CPU, the
    embedding backward (a scatter of atomic adds from several threads), stays out of Inductor by default
    (nanochat.repeatable_embedding), so compiled CPU runs repeat bit for bit as they are. This setting adds the
    guarantee for every other op: with deterministic algorithms on, Inductor calls ATen's serial index_put for
    any accumulating scatter (a plugin's model, say). When it was the only fix for the built-in model it cost
    1.03x to 1.27x a cpu-tiny step, as measured on a busy machine (benchmarks/determinism.py).
    """
    import torch
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False  # no NaN fill of every new tensor: not needed here
    return torch.compile(model, dynamic=False)


def compute_dtype(backend, name: str = "auto"):
    """The matmul dtype a `dtype` setting names: auto (the backend's choice), bf16 or fp32."""
    import torch
    choices = {"auto": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32,
               "float32": torch.float32}
    if name not in choices:
        raise StageError(f"dtype={name!r} is not one of auto, bf16, fp32")
    return choices[name] or backend.compute_dtype()


def _enabled(observer, info) -> bool:
    try:
        return bool(observer.is_enabled(info))
    except Exception:
        traceback.print_exc()
        return False


def find_artifact(run: Run, artifact: str, before: str | None = None):
    """Path of an artifact provided by a finished stage of `run` (earlier than `before`), or None.

    A run started `--from` another model also has that model ("from-model") and its tokenizer as given.
    """
    for entry in run.stages():
        if entry["name"] == before:
            break
        status = run.status(entry["name"])
        where = status.get("artifacts", {}).get(artifact)
        if status["state"] == "done" and where is not None:
            return run.dir / where
    given = given_artifacts(run.info).get(artifact)
    return Path(given) if given is not None else None


def given_artifacts(info: dict) -> dict:
    """What a run's record says it was given rather than made ({"tokenizer": path, "from-model": path})."""
    source = info.get("from") or {}
    return {"tokenizer": source["tokenizer"], "from-model": source["checkpoint"]} if source else {}
