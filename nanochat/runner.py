"""The stage runner: a preset becomes a run, and the run's stages execute in order.

Stages that are done are skipped; an interrupted or failed stage starts again and resumes from its
own checkpoint; a stage's needs are checked before it starts. With more than one process per node
(or more than one node) each stage is launched under torchrun, which re-enters this module as a
worker (`python -m nanochat.runner --worker RUN_DIR STAGE`).
"""
import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from nanochat import __version__, distributed, nodes, plugins, report, sysinfo
from nanochat.errors import NanochatError
from nanochat.runs import Run, RunError, RunExists, check_name, now
from nanochat.stages import (STAGES, StageContext, StageError, find_artifact, given_artifacts, make_settings,
                             needs_of, settings_fields, stage_class)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PRESETS_DIR = Path(__file__).parent / "presets"


@dataclass
class Launch:
    """How many processes run each stage (torchrun's knobs)."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    overrides: tuple = ()  # this node's --set values: nodes on one shared run folder compare them at each stage

    @property
    def distributed(self) -> bool:
        return self.nproc_per_node > 1 or self.nnodes > 1


def check_launch(launch: Launch, name: str | None) -> None:
    """Refuse torchrun knobs that cannot work, before a run is created."""
    if launch.nproc_per_node < 1 or launch.nnodes < 1:
        raise StageError(f"--nproc-per-node {launch.nproc_per_node} and --nnodes {launch.nnodes} must be at least 1")
    if not 0 <= launch.node_rank < launch.nnodes:
        raise StageError(f"--node-rank {launch.node_rank} must be from 0 to {launch.nnodes - 1} (--nnodes {launch.nnodes})")
    if not 1024 <= launch.master_port <= 65000:
        raise StageError(f"--master-port {launch.master_port} must be from 1024 to 65000 (stage i uses the port + i)")
    if launch.nnodes > 1 and not name:
        raise StageError(f"with --nnodes {launch.nnodes} give the run a --name, the same on every node (a name made "
                         f"up from the clock would differ between nodes)")


# -- presets ---------------------------------------------------------------------------------------
def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def load_preset(name: str) -> tuple[str, dict]:
    """A preset by name (nanochat/presets/<name>.toml) or by path to a .toml file of your own."""
    path = Path(name)
    if not (name.endswith(".toml") and path.exists()):
        path = PRESETS_DIR / f"{name}.toml"
        if not path.exists():
            raise StageError(f"unknown preset {name!r}; valid presets: {', '.join(preset_names())} "
                             f"(or a path to a .toml file)")
    try:
        preset = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise StageError(f"preset {path} is not valid TOML: {exc}") from None
    if not preset.get("stage"):
        raise StageError(f"preset {path} has no [[stage]] entries")
    return (path.stem if path.parent == PRESETS_DIR else str(path.resolve())), preset


def plan(preset: dict, overrides: list[str]) -> list[dict]:
    """Resolve a preset and `--set` overrides into [{"name", "stage", "settings"}] with every value typed."""
    entries = []
    for raw in preset["stage"]:
        raw = dict(raw)
        name = raw.pop("name", None)
        if not name:
            raise StageError(f"a [[stage]] entry has no name: {raw}")
        stage_type = raw.pop("stage", name)
        cls = stage_class(stage_type)
        fields = settings_fields(cls)
        values = {k: v for k, v in preset.get("defaults", {}).items() if k in fields}
        values.update(raw)
        entries.append({"name": name, "stage": stage_type, "values": values, "fields": fields})
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        raise StageError(f"stage names in a preset must be unique; got {names}")
    apply_overrides(entries, overrides)
    return [{"name": e["name"], "stage": e["stage"],
             "settings": dataclasses.asdict(make_settings(stage_class(e["stage"]), e["values"], e["name"]))}
            for e in entries]


def apply_overrides(entries: list[dict], overrides: list[str]) -> None:
    """`key=value` sets a key on every stage that has it; `stage.key=value` on one stage."""
    names = [e["name"] for e in entries]
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise StageError(f"--set {item!r} is not key=value (e.g. --set depth=6 or --set pretrain.depth=6)")
        target, dot, field = key.partition(".")
        if dot and target not in names:
            raise StageError(f"--set {item!r}: no stage named {target!r}; stages: {', '.join(names)}")
        chosen = [e for e in entries if e["name"] == target] if dot else entries
        field = field if dot else key
        hit = [e for e in chosen if field in e["fields"]]
        if not hit:
            valid = sorted({f for e in chosen for f in e["fields"]})
            raise StageError(f"--set {item!r}: no stage has a setting {field!r}; valid settings: {', '.join(valid)}")
        for e in hit:
            e["values"][field] = value


# -- offline presets -------------------------------------------------------------------------------
TASK_SETTINGS = ("tasks", "val_tasks", "task")  # settings that name tasks (a mixture spec, or one task)


def offline_problems(entries: list[dict], registry=None) -> list[str]:
    """What the stages of a planned run would have to download before they could run, one line each.

    A preset with `offline = true` (cpu-tiny) promises a run that never needs the network: every dataset,
    task and eval bundle its stages name must ship with nanochat or already be here. Empty = kept.
    """
    from nanochat import datasets, tasks
    from nanochat.evaluation import bundle
    registry = registry or plugins.registry()
    problems = []
    for entry in entries:
        where, settings = f"stage {entry['name']!r}", entry["settings"]
        if settings.get("dataset"):
            ds = datasets.resolve(settings["dataset"], registry)
            for split in ("train", "val"):
                try:
                    ds.shards(split)
                except datasets.DatasetError:
                    problems.append(f"{where}: dataset {settings['dataset']!r} has no {split} shards here "
                                    f"({ds.download_hint()})")
                    break
        for key in TASK_SETTINGS:
            for item in filter(None, (x.strip() for x in str(settings.get(key) or "").split(","))):
                match = tasks.MIX_ITEM.match(item)
                task = tasks.resolve(match["spec"] if match else item, registry)
                if tasks.needs_download(task):
                    problems.append(f"{where}: task {task.name!r} ({key}) is not downloaded "
                                    f"(nanochat tasks download {task.name})")
        if entry["stage"] == "core-eval" and bundle.needs_download(settings.get("bundle_url") or None):
            problems.append(f"{where}: the CORE eval bundle is not here (set NANOCHAT_EVAL_BUNDLE to a copy)")
    return problems


def check_offline(preset_id: str, preset: dict, entries: list[dict]) -> None:
    """Refuse to start an offline preset's run that would stop at a download minutes in."""
    if not preset.get("offline"):
        return
    problems = offline_problems(entries)
    if problems:
        raise StageError(f"preset {preset_id!r} is marked offline but its run would need downloads: "
                         + "; ".join(problems))


# -- creating or reopening a run -------------------------------------------------------------------
def versions() -> dict:
    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None
    return {"nanochat": __version__, "python": platform.python_version(), "torch": version("torch"),
            "git_commit": git_commit()}


def git_commit() -> str | None:
    git = sysinfo.git_state()
    return git and git["commit"] + ("-dirty" if git["dirty"] else "")


def open_or_create(preset: str | None, name: str | None, overrides: list[str], source=None) -> Run:
    """Reopen run `name`, or plan and create a new one; every check runs before anything is written.

    `source` (a `model_source.ModelSource`) starts the new run from another run's model and its tokenizer:
    stages with `source = "from"` train on from there instead of from a model of this run.
    """
    asked = list(overrides)
    if name and Run.exists(name):
        run = Run.open(name)
        existing = run.info["preset"]
        if preset is not None and load_preset(preset)[0] != existing:
            raise RunError(f"run {name!r} exists with preset {existing!r}, not {preset!r}: resume it with "
                           f"`nanochat run --name {name}`, or start a new run with another --name")
        if source is not None and run.info.get("from", {}).get("checkpoint") != str(source.checkpoint):
            raise RunError(f"run {name!r} exists; --from only starts a new run. Resume it without --from, or "
                           f"give another --name")
        changed, overrides = report.split_settings({}, list(overrides))
        if changed:
            run.update_info(report={**run.info.get("report", {}), **changed})
        if overrides:
            update_settings(run, overrides)
        return run
    if preset is None:
        raise RunError(f"no run named {name!r}; start one with `nanochat run --preset NAME --name {name}`"
                       if name else "give --preset to start a run (or --name to resume one)")
    preset_id, data = load_preset(preset)
    report_settings, overrides = report.split_settings(data.get("report", {}), list(overrides))
    entries = plan(data, overrides)
    given = source.describe() if source is not None else None
    check_plan(entries, given, preset_id)
    resolve_names(entries)  # names first: a typo gets the list of installed names, not "needs a download"
    check_offline(preset_id, data, entries)
    name = name or f"{Path(preset_id).stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    check_name(name)
    info = {"preset": preset_id, "description": data.get("description", ""), "overrides": list(overrides),
            "stages": entries, "versions": versions(), "host": socket.gethostname(), "report": report_settings}
    try:
        return Run.create(name, {**info, "from": given} if given else info)
    except RunExists:  # another node on the same disk created it a moment ago: join it like a resume
        return open_or_create(preset, name, asked, source)


def check_plan(entries: list[dict], given: dict | None, preset_id: str) -> None:
    """Before a run exists: every artifact a stage needs comes from an earlier stage or from --from."""
    made = set(given_artifacts({"from": given})) if given else set()
    if given:
        own = [e["name"] for e in entries if "tokenizer" in getattr(stage_class(e["stage"]), "produces", ())]
        if own:
            raise StageError(f"--from gives the run its model and tokenizer, but preset {preset_id!r} trains its own "
                             f"tokenizer (stage {own[0]!r}); use a preset that starts after pretraining, such as "
                             f"finetune")
    users = []
    for e in entries:
        cls = stage_class(e["stage"])
        needs = needs_of(cls, make_settings(cls, e["settings"], e["name"]))
        if "from-model" in needs:
            users.append(e["name"])
            if not given:
                raise StageError(f"stage {e['name']!r} starts from the model the run is given with --from "
                                 f"(source = \"from\"); add --from RUN:STAGE (or a checkpoint path)")
        for artifact in needs:
            if artifact in made:
                continue
            makers = [t for t in STAGES if artifact in getattr(stage_class(t), "produces", ())]
            fix = (f"add a stage of type {' or '.join(map(repr, makers))} before it" if makers else
                   "no built-in stage type makes it")
            if artifact == "tokenizer" or artifact.endswith("-model"):
                fix += f", or start from a trained model: --from RUN:STAGE --set {e['name']}.source=from"
            raise StageError(f"stage {e['name']!r} needs {artifact!r} but no earlier stage of preset {preset_id!r} "
                             f"provides it; {fix}")
        made.update(getattr(cls, "produces", ()))
    if given and not users:
        raise StageError(f"no stage of preset {preset_id!r} starts from the --from model; use a preset whose stages "
                         f"have source = \"from\" (such as finetune), or --set STAGE.source=from")


def resolve_names(entries: list[dict], registry=None) -> None:
    """Every task and dataset the stages name must be installed: checked before any stage runs, so a typo
    is an error now, with the installed names, rather than hours later when its stage starts."""
    from nanochat import datasets, tasks
    registry = registry or plugins.registry()
    for e in entries:
        named = {**getattr(stage_class(e["stage"]), "task_settings", {}), "dataset": "dataset"}
        for key, value in e["settings"].items():
            if key not in named or not isinstance(value, str) or not value.strip():
                continue
            try:
                if named[key] == "dataset":
                    datasets.resolve(value, registry)
                elif named[key] == "scored":
                    tasks.scored_views(value, registry)
                else:
                    tasks.views(value, split=named[key], registry=registry)
            except NanochatError as exc:  # unknown names, bad splits, a NAME:ARG whose ARG is wrong
                raise StageError(f"stage {e['name']!r}: {key} = {value!r}: {exc}") from None


def update_settings(run: Run, overrides: list[str]) -> None:
    """New `--set` values on resume apply to stages that are not done yet (done stages keep theirs)."""
    stages = run.stages()
    todo = [s for s in stages if run.status(s["name"])["state"] != "done"]
    entries = [{"name": s["name"], "values": dict(s["settings"]), "fields": settings_fields(stage_class(s["stage"]))}
               for s in todo]
    try:
        apply_overrides(entries, overrides)
    except StageError as exc:
        done = [s["name"] for s in stages if s not in todo]
        raise StageError(f"{exc}. Stages already done ({', '.join(done) or 'none'}) keep their settings; "
                         f"start a new run (another --name, or --from {run.name}:STAGE to train on from its model) "
                         f"to change them, or score its models on other tasks with `nanochat eval --run {run.name} "
                         f"--tasks ...`") from None
    typed = {s["name"]: dataclasses.asdict(make_settings(stage_class(s["stage"]), e["values"], s["name"]))
             for s, e in zip(todo, entries)}
    if all(typed[s["name"]] == s["settings"] for s in todo):
        return  # the same values again (every node of a multi-node run passes the same --set)
    for s in stages:
        if s["name"] in typed:
            s["settings"] = typed[s["name"]]
    run.update_info(stages=stages, overrides=run.info.get("overrides", []) + list(overrides))


# -- running ---------------------------------------------------------------------------------------
def check_needs(run: Run, entry: dict) -> None:
    """Every artifact the stage needs must come from a finished earlier stage; say which stage would give each."""
    cls = stage_class(entry["stage"])
    settings = make_settings(cls, entry["settings"], entry["name"])
    names = [s["name"] for s in run.stages()]
    earlier = run.stages()[:names.index(entry["name"])]
    problems = []
    for artifact in needs_of(cls, settings):
        if find_artifact(run, artifact, before=entry["name"]) is not None:
            continue
        providers = [s for s in earlier if artifact in getattr(stage_class(s["stage"]), "produces", ())]
        if providers:
            p = providers[-1]
            problems.append(f"{artifact!r}, which stage {p['name']!r} of run {run.name!r} provides, but that stage "
                            f"is {run.status(p['name'])['state']}")
        else:
            makers = [t for t in STAGES if artifact in getattr(stage_class(t), "produces", ())]
            problems.append(f"{artifact!r} but no earlier stage of run {run.name!r} provides it; add a stage of type "
                            f"{' or '.join(map(repr, makers)) or '(none)'} before it in the preset")
    if problems:
        raise StageError(f"stage {entry['name']!r} needs " + "; and ".join(problems) +
                         f". Finish the earlier stages with `nanochat run --name {run.name}`")


def checkpoint_users(run: Run, stage: str) -> list[tuple[str, str, str]]:
    """Later stages that need an artifact `stage` provides: [(stage name, its state, artifact)].
    Deleting the stage's checkpoints would stop the pending ones from starting (and a running one)."""
    provided = run.status(stage).get("artifacts") or {}
    names = [s["name"] for s in run.stages()]
    users = []
    for entry in run.stages()[names.index(stage) + 1:]:
        cls = stage_class(entry["stage"])
        needs = needs_of(cls, make_settings(cls, entry["settings"], entry["name"]))
        for artifact in needs:
            if artifact in provided and find_artifact(run, artifact, before=entry["name"]) == run.dir / provided[artifact]:
                users.append((entry["name"], run.status(entry["name"])["state"], artifact))
    return users


def execute_stage(run: Run, entry: dict, world=None, echo: bool = True) -> None:
    """Run one stage in this process (as the only process, or as one torchrun rank).

    Under torchrun every node's processes first agree on the job (`nodes.join`); a one-process stage
    (`distributed = False`, launched this way only on several nodes) runs on rank 0 while the others wait.
    Rank 0's outcome is then recorded in every node's copy of the run.
    """
    cls = stage_class(entry["stage"])
    settings = make_settings(cls, entry["settings"], entry["name"])
    registry = plugins.registry()
    # every process of the launch (ctx.world: those that run the stage); until the nodes have compared notes,
    # each node's local rank 0 speaks for its node, so a refusal reaches every node's driver
    job = world or distributed.from_env()
    job = dataclasses.replace(job, shared_home=job.size == 1) if world is None else job
    ctx = StageContext(run, entry, settings, job, registry, echo=echo)
    try:
        alone = False
        if world is None and job.size > 1:
            job = ctx.world = nodes.join(distributed.init(ctx.backend), run, entry)
            if not getattr(cls, "distributed", True):
                alone = True
                ctx.world = distributed.World() if job.is_main else job
        ctx.event("stage_start")
        if not alone:
            cls().run(ctx)
        else:  # the others wait for rank 0's verdict rather than in a collective that would time out
            error = None
            if job.is_main:
                try:
                    cls().run(ctx)
                except Exception as exc:
                    error = exc
            verdict = job.from_main(error and f"{type(error).__name__}: {error}")
            if error is not None:
                raise error
            if verdict:
                raise StageError(f"stage {entry['name']!r} failed on node 0: {verdict}")
        result = nodes.outcome(job, ctx)
        nodes.ship_missing(job, run.dir, result["artifacts"])
        if job.is_home_main:
            run.set_status(entry["name"], state="done", finished=now(), error=None, **result)
        ctx.event("stage_done")
    except BaseException as exc:
        plugin_error = plugin_failure(exc, registry, run, entry)
        if job.is_home_main:
            state = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            error = str(plugin_error) if plugin_error else nodes.explain(exc)
            run.set_status(entry["name"], state=state, finished=now(), error=error, notes=ctx.notes)
            ctx.event("stage_failed", error=error)
        if plugin_error:
            raise plugin_error from exc
        raise
    finally:
        distributed.shutdown(job)


def plugin_failure(exc: BaseException, registry, run: Run, entry: dict) -> StageError | None:
    """A plugin's task (or dataset, ...) raised inside the stage: the error to stop with, naming it and how to
    skip it; the plugin is listed as broken from now on. None when no plugin's own code raised `exc`."""
    if not isinstance(exc, Exception) or isinstance(exc, NanochatError):
        return None
    found = registry.culprit(exc)
    if found is None:
        return None
    kind, thing, plugin = found
    registry.disable(kind, thing, f"{type(exc).__name__}: {exc}")
    settings = [k for k, v in entry["settings"].items() if isinstance(v, str) and thing in v]
    skip = (f"take it out of {entry['name']}.{settings[0]} (--set {entry['name']}.{settings[0]}=...) and resume "
            f"with `nanochat run --name {run.name}`; or " if settings else "")
    return StageError(f"stage {entry['name']!r} stopped: {kind} {thing!r} of plugin {plugin.name!r} raised "
                      f"{type(exc).__name__}: {exc}. To go on without it, {skip}{plugins.how_to_leave_out(plugin)}")


def torchrun_prefix(launch: Launch) -> list[str]:
    """`python -m torch.distributed.run` with this launch's knobs; the module to run comes after."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={launch.nproc_per_node}"]
    if launch.nnodes == 1:
        cmd.append("--standalone")  # picks a free port, so two jobs on one machine never collide
    else:
        cmd += [f"--nnodes={launch.nnodes}", f"--node-rank={launch.node_rank}",
                f"--master-addr={launch.master_addr}", f"--master-port={launch.master_port}"]
    return cmd


def torchrun_command(run: Run, entry: dict, launch: Launch) -> list[str]:
    return torchrun_prefix(launch) + ["-m", "nanochat.runner", "--worker", str(run.dir), entry["name"]]


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill PID`, a scheduler ending a job): stop like Ctrl-C, so the stage is left "interrupted"."""


@contextlib.contextmanager
def sigterm_interrupts():
    """While inside, SIGTERM raises Terminated instead of ending the process with no cleanup, and SIGINT
    raises KeyboardInterrupt even where the process was started with it ignored."""
    def on_term(signum, frame):
        raise Terminated("terminated by SIGTERM")
    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread (an embedding program): leave signals to it
        yield
        return
    # A run started in the background by a script inherits SIGINT ignored, and Stop (the dashboard,
    # runs.stop_stage) is a SIGINT: take Ctrl-C back, or Stop would do nothing.
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_pipeline(run: Run, launch: Launch | None = None, echo: bool = True, only: list[str] | None = None) -> Run:
    """Drive the run's stages on this node. With several nodes each node runs this; node 0 leads (it keeps
    the run's invocations, report and "running" states), the others follow stage by stage."""
    launch = launch or Launch()
    leader = launch.node_rank == 0
    with sigterm_interrupts(), run.lock(launch.node_rank), \
            (report.written_after(run) if leader else contextlib.nullcontext()):
        if leader:
            run.record_invocation(sysinfo.capture(launch))  # the report renders from files: keep the machine's facts
        stages = run.stages()
        if only:
            unknown = set(only) - {s["name"] for s in stages}
            if unknown:
                raise StageError(f"unknown stage(s) {', '.join(sorted(unknown))} in run {run.name!r}; "
                                 f"stages: {', '.join(s['name'] for s in stages)}")
        resolve_names([s for s in stages if (not only or s["name"] in only) and run.status(s["name"])["state"] != "done"])
        for index, entry in enumerate(stages):
            name = entry["name"]
            if only and name not in only:
                continue
            status = run.status(name)
            if status["state"] == "done":
                echo and print(f"[{run.name}] {name}: done, skipping", flush=True)
                continue
            check_needs(run, entry)
            # a follower sees "running" when node 0 has just started the stage
            resuming = status["state"] not in (("pending",) if leader else ("pending", "running"))
            echo and print(f"[{run.name}] {name}: {'resuming' if resuming else 'starting'}", flush=True)
            if leader:
                run.set_status(name, state="running", started=now(), finished=None, pid=os.getpid(),
                               host=socket.gethostname(), attempts=status.get("attempts", 0) + 1,
                               world_size=launch.nproc_per_node * launch.nnodes,
                               earlier_seconds=report.stage_seconds(status, run.stage_dir(name)) if resuming else 0.0)
            # several nodes: every stage under torchrun, so the nodes stay in step and learn each outcome
            if launch.nnodes > 1 or (launch.distributed and getattr(stage_class(entry["stage"]), "distributed", True)):
                launch_stage(run, entry, launch, index)
            else:
                execute_stage(run, entry, echo=echo)
            if leader:
                report.write(run, plots=False)
    return run


def launch_stage(run: Run, entry: dict, launch: Launch, index: int) -> None:
    """Run a stage under torchrun; on several nodes, stage number `index` rendezvouses on master port +
    index, so a node that starts the next stage early never meets the last stage's rendezvous."""
    name = entry["name"]
    if launch.nnodes > 1:
        launch = dataclasses.replace(launch, master_port=launch.master_port + index)
    env = {**os.environ, nodes.ASKED_ENV: json.dumps(list(launch.overrides))}
    proc = subprocess.Popen(torchrun_command(run, entry, launch), env=env)
    try:
        code = proc.wait()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: torchrun passes SIGTERM on to its workers
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        if run.status(name)["state"] == "running" and launch.node_rank == 0:
            run.set_status(name, state="interrupted", finished=now(), error="interrupted")
        raise
    status = run.status(name)
    if code == 0 and status["state"] == "done":
        return
    if status["state"] == "running" and launch.node_rank == 0:
        status = run.set_status(name, state="failed", finished=now(), error=f"torchrun exited with {code}")
    where = f" on node {launch.node_rank} of {launch.nnodes}" if launch.nnodes > 1 else ""
    why = status.get("error") if status["state"] in ("failed", "interrupted") else None
    if code == 0:
        why = f"torchrun ended well but this node's copy of the run does not say {name!r} is done"
    message = f"stage {name!r} failed under torchrun{where} (exit code {code})" + (f": {why}" if why else "")
    if launch.nnodes > 1:
        message += (f". Every node stops when one does: fix the cause, then start the same `nanochat run --name "
                    f"{run.name} --nnodes {launch.nnodes} --node-rank K ...` on every node (a training stage resumes "
                    f"from its last checkpoint)")
    if launch.node_rank != 0:
        message += "; the stage's log is on node 0"
    raise StageError(f"{message}; see {run.stage_dir(name) / 'log.txt'}" if launch.node_rank == 0 else message)


def _worker_main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nanochat.runner")
    parser.add_argument("--worker", nargs=2, metavar=("RUN_DIR", "STAGE"), required=True)
    args = parser.parse_args(argv)
    run_dir, stage = args.worker
    run = Run(Path(run_dir))
    entry = next(s for s in run.stages() if s["name"] == stage)
    with sigterm_interrupts():
        execute_stage(run, entry)


if __name__ == "__main__":
    _worker_main()
