"""What the nodes of a multi-node job agree on: the same plan and code, whether they share a disk, and
what a finished stage produced.

Every node runs its own `nanochat run` driver with its own copy of the run (or one copy on a shared disk);
the drivers never talk to each other, only the stage's torchrun processes do. So when a stage starts, its
processes check that every node was started with the same settings and code, and find out whether the run
folder they see is one shared folder or one per node. When it ends, rank 0's outcome (artifacts, summary,
notes) is handed to every node, and an artifact a node lacks is copied to it.
"""
import dataclasses
import json
import os
import secrets
from pathlib import Path

from nanochat import __version__, sysinfo
from nanochat.atomic import atomic_write_bytes
from nanochat.stages import StageError

MARKERS = ".node-check"  # folder in the run for the shared-disk check; emptied after each check
LOST = "lost contact with another process of the job"
ASKED_ENV = "NANOCHAT_NODE_SET"  # the driver's --set values, for its stage's processes (JSON list)


def fingerprint(run, entry: dict) -> dict:
    """What must be the same on every node: the stage, the resolved plan, the code."""
    import torch
    git = sysinfo.git_state()
    return {"stage": entry["name"],
            "plan": {s["name"]: {"stage": s["stage"], **s["settings"]} for s in run.stages()},
            "--set": json.loads(os.environ.get(ASKED_ENV, "[]")),  # on a shared disk the plan is one file
            "nanochat": __version__, "torch": torch.__version__,
            "git commit": git and git["commit"] + ("-dirty" if git["dirty"] else "")}


def differences(ours: dict, theirs: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, our value, their value) for every leaf that differs."""
    found = []
    for key in sorted(set(ours) | set(theirs), key=str):
        a, b = ours.get(key, "(missing)"), theirs.get(key, "(missing)")
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append((f"{prefix}{key}", a, b))
    return found


def check_same_job(world, run, entry: dict) -> None:
    """Refuse (on every rank, so none waits forever) when a node runs other settings, code or stage."""
    everyone = world.gather_all((world.node, fingerprint(run, entry)))
    reference = everyone[0][1]
    for node, fp in everyone:
        diffs = differences(reference, fp)
        if diffs:
            listed = "; ".join(f"{key}: node 0 has {a!r}, node {node} has {b!r}" for key, a, b in diffs[:5])
            more = f" (and {len(diffs) - 5} more)" if len(diffs) > 5 else ""
            fix = ("Start every node with the same nanochat checkout, --preset, --set values and --name")
            settings = [(key.removeprefix("plan."), a) for key, a, _ in diffs if key.startswith("plan.")]
            if settings and len(settings) == len(diffs):  # the same command, but node K's copy of the run differs
                fix = (f"Node {node}'s copy of the run has other settings: resume it with "
                       + " ".join(f"--set {key}={a}" for key, a in settings[:5])
                       + " (node 0's values), or delete that copy and start it again")
            raise StageError(f"node {node} was started with other settings or code than node 0: {listed}{more}. {fix}")


def shared_home(world, run) -> bool:
    """Whether all nodes see one run folder (a shared disk) or each its own; refused when it is a mix.

    Local rank 0 of each node drops a marker named after its node; each node then lists the markers it sees.
    """
    token = world.from_main(secrets.token_hex(8))
    folder = run.dir / MARKERS
    mine = folder / f"{token}-{world.node}"
    if world.local_rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        mine.write_text(token)
    world.gather_all(None)  # every marker is written before anyone looks
    seen = world.gather_all((world.node, sorted(int(p.name.rsplit("-", 1)[1]) for p in folder.glob(f"{token}-*"))))
    world.gather_all(None)  # everyone has looked
    if world.local_rank == 0:
        mine.unlink(missing_ok=True)
    nodes = sorted({node for node, _ in seen})
    if all(got == nodes for _, got in seen):
        return True
    if all(got == [node] for node, got in seen):
        return False
    sharing = sorted({node for node, got in seen if len(got) > 1})
    raise StageError(f"nodes {sharing} share a disk for the run folder but the others do not; give every node the "
                     f"same shared NANOCHAT_HOME, or each node a disk of its own")


def join(world, run, entry: dict):
    """The world of a stage's process after the start-of-stage checks: same job everywhere, disk shared or not."""
    check_same_job(world, run, entry)
    return dataclasses.replace(world, shared_home=world.size == 1 or shared_home(world, run))


def outcome(world, ctx) -> dict:
    """Rank 0's account of the finished stage, on every rank: what each node records in its status."""
    return world.from_main({"artifacts": ctx.provided, "summary": ctx.summary, "notes": ctx.notes})


def ship_missing(world, run_dir: Path, artifacts: dict) -> None:
    """Copy to each node the artifacts it lacks (without a shared disk), from rank 0.

    Training stages write their checkpoints on every node themselves; this covers the rest (the tokenizer,
    which rank 0 trains alone, and any stage of a plugin that writes on rank 0 only).
    """
    if world.shared_home:
        return
    missing = [a for a, rel in artifacts.items() if not (run_dir / rel).exists()] if world.is_home_main else []
    wanted = sorted({a for found in world.gather_all(missing) for a in found})
    if not wanted:
        return
    files = world.from_main(_pack(run_dir, [artifacts[a] for a in wanted]) if world.is_main else None)
    if world.is_home_main and missing:
        for rel, data in files.items():
            atomic_write_bytes(run_dir / rel, data)


def _pack(run_dir: Path, rels: list[str]) -> dict[str, bytes]:
    files = {}
    for rel in rels:
        path = run_dir / rel
        for file in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
            files[str(file.relative_to(run_dir))] = file.read_bytes()
    return files


def lost_peer(exc: BaseException) -> bool:
    """Whether an error means another process of the job went away (a node died or its network dropped)."""
    text = str(exc).lower()
    return type(exc).__name__ in ("DistNetworkError", "DistBackendError") or any(
        s in text for s in ("connection closed by peer", "connection reset", "broken pipe", "socket closed"))


def explain(exc: BaseException) -> str:
    """The error text a node's status records for a failed stage."""
    text = f"{type(exc).__name__}: {exc}"
    if lost_peer(exc):
        return f"{LOST} (a node stopped, crashed or lost its network): {text}"
    return text
