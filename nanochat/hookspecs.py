"""The plugin contract: one hook per kind of thing a plugin can contribute.

Every hook receives a `register` callback; the plugin calls `register(obj)` once per thing.
Each registered object has a `name` unique within its kind.
"""
import pluggy

hookspec = pluggy.HookspecMarker("nanochat")


@hookspec
def nanochat_backend(register):
    """Register device backends (cpu, cuda, mps, ...).

    A backend meets `nanochat.contracts.Backend`: `name`, `priority`, `dist_backend`, and the methods
    `is_available()`, `device(local_rank)`, `compute_dtype()`, `synchronize()`, `memory()`,
    `peak_flops(dtype)`, `compile_is_wise()`, `describe()`.
    """


@hookspec
def nanochat_optimizer(register):
    """Register optimizers (muon, adamw, ...).

    An optimizer meets `nanochat.contracts.Optimizer`: `name`, `description` and
    `build(model, hparams, world)` returning a
    torch optimizer with `state_dict()` / `load_state_dict()` that syncs gradients itself
    when `world.size > 1`.
    """


@hookspec
def nanochat_dataset(register):
    """Register text datasets (starter, fineweb-edu, climbmix, local, ...).

    A dataset subclasses `nanochat.datasets.ShardedDataset`: `name`, `description`, `local_dir()`,
    and inherits `shards(split)`, `iter_row_groups(split, ...)`, `iter_documents(split, ...)`,
    `download(num_shards, ...)` and `download_hint(num_shards)`.
    """


@hookspec
def nanochat_task(register):
    """Register tasks (chat data and evaluations: arc-easy, gsm8k, smoltalk, ...).

    A task subclasses `nanochat.tasks.Task`: `name`, `kind` ("categorical", "generative" or
    "conversations"), `splits`, `num_examples(split)`, `make_example(split, index)`, and for scored
    tasks `evaluate(conversation, completion)`; `example` and `reward` are inherited.
    """


@hookspec
def nanochat_observer(register):
    """Register event observers (loggers such as wandb or tensorboard).

    An observer meets `nanochat.contracts.Observer`: `name`, `is_enabled(run_info)` and
    `on_event(event)` where `event` is a dict
    with at least `type` ("stage_start", "metrics", "checkpoint", "stage_done", "stage_failed"),
    `run`, `stage`.
    """
