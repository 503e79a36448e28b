"""Event observers: Weights & Biases, when it is installed and a run name is given.

Nothing is sent anywhere unless `WANDB_RUN` (or `nanochat run --wandb-run NAME`) names a run and the
`wandb` package is importable; "dummy" means off, as in the reference project.
"""
import importlib.util
import os

from nanochat import hookimpl


class WandbObserver:
    name = "wandb"

    def __init__(self):
        self.active = None

    def is_enabled(self, run_info) -> bool:
        name = os.environ.get("WANDB_RUN", "")
        return bool(name) and name != "dummy" and importlib.util.find_spec("wandb") is not None

    def on_event(self, event) -> None:
        import wandb
        kind = event["type"]
        if kind == "stage_start":
            self.active = wandb.init(project=os.environ.get("WANDB_PROJECT", "nanochat"),
                                     name=f"{os.environ['WANDB_RUN']}-{event['stage']}",
                                     group=event["run"], config={"run": event["run"], "stage": event["stage"]},
                                     reinit=True)
        elif kind == "metrics" and self.active is not None:
            record = {k: v for k, v in event["record"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.active.log(record, step=record.get("step"))
        elif kind in ("stage_done", "stage_failed") and self.active is not None:
            self.active.finish(exit_code=0 if kind == "stage_done" else 1)
            self.active = None


@hookimpl
def nanochat_observer(register):
    register(WandbObserver())
