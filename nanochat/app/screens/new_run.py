"""New run: pick a preset, edit `--set` overrides, see the resolved settings, choose device and processes,
and start it as a detached `nanochat run` (launch.py) that keeps running when the dashboard closes.

The overrides go through the runner's own plan() as you type (in a worker: it imports the stages), so the
messages are exactly those of `nanochat run --set`.
"""
import datetime
from pathlib import Path

from textual import on, work
from textual.worker import get_current_worker
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.suggester import SuggestFromList
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static, TextArea

from nanochat.errors import NanochatError
from nanochat.app.screens.base import BaseScreen
from nanochat.i18n import t

DEVICES = ("auto", "cpu", "cuda", "mps")


class NewRunScreen(BaseScreen):
    BINDINGS = [Binding("ctrl+s", "start", t("key.start")), Binding("escape", "app.pop_screen", t("key.back"))]

    def __init__(self, **kw):
        super().__init__(**kw)
        self.valid, self.problem, self.default_name = False, None, ""

    def compose(self) -> ComposeResult:
        from nanochat.runner import preset_names
        names = preset_names()  # or a path to a .toml of your own, as `--preset` takes
        first = "cpu-tiny" if "cpu-tiny" in names else names[0]
        yield Header()
        with Horizontal(id="new-run"):
            with VerticalScroll(id="new-form"):
                yield Label(t("new.preset"))
                yield Input(value=first, id="preset", suggester=SuggestFromList(names, case_sensitive=False))
                yield Label(t("new.name"))
                self.default_name = _default_name(first)
                yield Input(value=self.default_name, id="name")
                yield Label(t("new.overrides"))
                yield TextArea(id="overrides")
                with Horizontal(id="new-launch"):
                    with Vertical():
                        yield Label(t("new.device"))
                        yield Select([(d, d) for d in DEVICES], value="auto", allow_blank=False, id="device")
                    with Vertical():
                        yield Label(t("new.nproc"))
                        yield Input(value="1", id="nproc", type="integer")
                yield Button(t("key.start"), id="start", variant="primary")
            with Vertical(id="new-side"):
                yield Label(t("new.resolved"))
                yield Static(id="new-problem")
                yield TextArea(id="resolved", read_only=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = t("new.title")
        self.query_one("#preset").focus()
        self.check()

    # -- validation ---------------------------------------------------------------------------------
    def overrides(self) -> list[str]:
        lines = self.query_one("#overrides", TextArea).text.splitlines()
        device = self.query_one("#device", Select).value
        items = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        return items + ([f"device={device}"] if device != "auto" else [])

    @on(Input.Changed, "#preset")
    def _preset_changed(self, event: Input.Changed) -> None:
        name = self.query_one("#name", Input)
        if name.value == self.default_name:  # not typed by hand: follow the preset
            name.value = self.default_name = _default_name(str(event.value))
        self.check()

    @on(Select.Changed, "#device")
    @on(TextArea.Changed, "#overrides")
    def check(self) -> None:
        self.valid = False
        self.query_one("#new-problem", Static).update(t("new.checking"))
        self.resolve(self.query_one("#preset", Input).value.strip(), self.overrides())

    @work(thread=True, exclusive=True, group="resolve")
    def resolve(self, preset: str, overrides: list[str]) -> None:
        from nanochat import runner
        entries, problem = None, None
        try:
            _, data = runner.load_preset(preset)
            entries = runner.plan(data, overrides)
        except NanochatError as exc:
            problem = str(exc)
        if not get_current_worker().is_cancelled:  # a newer edit started a newer check: its answer counts
            self.app.call_from_thread(self._show_plan, entries, problem)

    def _show_plan(self, entries, problem) -> None:
        self.valid, self.problem = problem is None, problem
        self.query_one("#new-problem", Static).update(f"[b red]{_escape(problem)}[/]" if problem else "")
        if entries is None:
            self.query_one("#resolved", TextArea).text = ""
        else:
            text = []
            for entry in entries:
                text.append(f"[{entry['name']}]  ({entry['stage']})")
                text += [f"  {k} = {v!r}" for k, v in entry["settings"].items()]
            self.query_one("#resolved", TextArea).text = "\n".join(text)

    # -- start --------------------------------------------------------------------------------------
    @on(Button.Pressed, "#start")
    def action_start(self) -> None:
        from nanochat.app import launch
        from nanochat.runs import Run, RunError, check_name
        if not self.valid:
            self.notify(t("new.invalid", error=self.problem or t("new.checking")), severity="error")
            return
        nproc_text = self.query_one("#nproc", Input).value.strip()
        if not nproc_text.isdigit() or not 1 <= int(nproc_text) <= 64:
            self.notify(t("new.bad_nproc", value=nproc_text), severity="error")
            return
        name = self.query_one("#name", Input).value.strip()
        try:
            check_name(name)
            if Run.exists(name):
                raise RunError(f"run {name!r} already exists; choose another name (or resume it from the runs list)")
            preset = self.query_one("#preset", Input).value.strip()
            lines = self.query_one("#overrides", TextArea).text.splitlines()
            overrides = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
            device = str(self.query_one("#device", Select).value)
            proc = launch.start(name, preset, overrides, device, int(nproc_text))
        except (RunError, OSError) as exc:
            self.notify(str(exc), severity="error")
            return
        self.app.launched[name] = proc
        self.notify(t("new.started", name=name, log=launch.launch_log(name)))
        self.dismiss(name)


def _default_name(preset: str) -> str:
    return f"{Path(preset).stem or 'run'}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def _escape(text) -> str:
    from rich.markup import escape
    return escape(str(text))
