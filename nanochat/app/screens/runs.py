"""Runs: every run with its preset, state, progress and ETA; for the selected run each stage's state and
headline figures, live curves of the selected stage, and what went wrong (errors, last log lines, evals).

A timer asks a worker thread to scan the home (watch.py) once a second; the UI thread only compares the
result with what is on screen and changes the cells that differ. Curves redraw at most once a second.
"""
import gc
import time

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Static

from nanochat.app import fmt
from nanochat.app.watch import last_lines, read_evals
from nanochat.app.widgets.curves import Curves
from nanochat.app.screens.base import BaseScreen
from nanochat.i18n import t
from nanochat.runs import RunError

POLL_SECONDS = 1.0
STATE_STYLE = {"running": "bold green", "done": "dim", "failed": "bold red", "damaged": "bold red",
               "stale": "yellow", "interrupted": "yellow", "paused": "cyan", "pending": ""}


def state_text(state: str) -> str:
    """A state as table markup (cells are plain strings, so the worker can build them and the UI thread
    compares them cheaply)."""
    style = STATE_STYLE.get(state, "")
    return f"[{style}]{t(f'state.{state}')}[/]" if style else t(f"state.{state}")


def run_cells(view) -> tuple:
    """The runs table's row for a run."""
    name, preset = _escape(view.name), _escape(view.preset)
    if view.state == "damaged":
        return (name, preset, state_text("damaged"), "", "", _escape(_clip(view.problem or "")))
    current = view.current
    running = current is not None and current.state == "running"
    fraction = (view.done + ((current.progress or 0) if running else 0)) / max(len(view.stages), 1)
    progress = f"{fmt.bar(fraction)} {view.done}/{len(view.stages)}"
    if running:
        progress += f"  {_escape(current.name)} {fmt.percent(current.progress)}"
    note = view.problem or (current.error if current and current.state in ("failed", "interrupted") else "") or ""
    return (name, preset, state_text(view.state), progress, fmt.duration(view.eta_s), _escape(_clip(note)))


def stage_cells(stage) -> tuple:
    """The stage table's row for a stage: its headline figures."""
    v = stage.latest
    return (_escape(stage.name), state_text(stage.state), fmt.number(v.get("step")), fmt.number(v.get("loss")),
            fmt.number(v.get("val_bpb")), fmt.number(v.get("tok_per_s")), fmt.percent(v.get("mfu")),
            fmt.duration(stage.eta_s), _escape(_summary(stage.summary)))


def _summary(summary: dict, shown=("step", "loss", "val_bpb", "tok_per_s", "mfu"), most: int = 3) -> str:
    """A finished stage's other headline numbers (CORE, accuracies, vocab size...), the first few."""
    items = [(k, v) for k, v in summary.items() if k not in shown][:most]
    return "  ".join(f"{k} {fmt.number(v, 3)}" for k, v in items)


def detail_text(run, stage, runs_dir) -> str:
    """Under the stages: what is wrong, a failed stage's last log lines, the run's evals (reads files:
    called in the worker)."""
    lines = []
    if run.problem:
        problem = t("run.damaged", error=run.problem) if run.state == "damaged" else run.problem
        lines.append(f"[b red]{_escape(problem)}[/]")
    if stage and stage.error:
        lines.append(f"[b]{_escape(stage.name)}[/]: {_escape(stage.error)}")
    if stage and stage.state in ("failed", "stale", "interrupted") or run.state == "failed":
        log = runs_dir / run.name / (stage.name if stage else "") / "log.txt"
        tail = last_lines(log, 4) or last_lines(runs_dir / run.name / "launch.log", 4)
        lines += [f"[dim]{_escape(line)}[/]" for line in tail]
    for row in read_evals(runs_dir / run.name)[:3]:
        if "problem" in row:
            lines.append(f"[red]{t('runs.eval')} {_escape(row['id'])}: {_escape(row['problem'])}[/]")
        else:
            scores = "  ".join(f"{k} {100 * v:.1f}%" for k, v in row["scores"].items())
            state = t("state." + row["state"]) if row["state"] in STATE_STYLE else row["state"]
            lines.append(_escape(f"{t('runs.eval')} {row['id']} ({row['stage']}, {t('col.step')} {row['step']}, "
                                 f"{state}): {scores}"))
    return "\n".join(lines)


class RunsScreen(BaseScreen):
    BINDINGS = [
        Binding("n", "new_run", t("key.new_run")),
        Binding("s", "stop", t("key.stop")),
        Binding("r", "resume", t("key.resume")),
        Binding("l", "logs", t("key.logs")),
    ]

    def __init__(self, **kw):
        super().__init__(**kw)
        self.views = []
        self.rows = {}  # run name -> the cells on screen
        self.stage_rows = []
        self.stage_run = None  # the run whose stages are in the stage table
        self.scanning = False
        self.refresh_ms = []  # UI-thread time of each refresh (the benchmark reads it)
        self.first_paint = None
        self.detail_shown = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(t("runs.none"), id="empty")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="run-detail"):
            with Vertical(id="left"):
                yield DataTable(id="stages", cursor_type="row")
                yield Static(t("runs.detail_hint"), id="detail")
            yield Curves(id="curves")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = t("app.subtitle")
        self._columns()
        self.poll()
        self.set_interval(POLL_SECONDS, self.poll)

    def _columns(self) -> None:
        runs = self.query_one("#runs", DataTable)
        for key in ("run", "preset", "state", "progress", "eta", "note"):
            runs.add_column(t(f"col.{key}"), key=key)
        stages = self.query_one("#stages", DataTable)
        for key in ("stage", "state", "step", "loss", "val_bpb", "tok_per_s", "mfu", "eta", "summary"):
            stages.add_column(t(f"col.{key}"), key=key)

    async def relabel(self) -> None:
        self.sub_title = t("app.subtitle")
        self.rows, self.stage_rows, self.detail_shown = {}, [], None
        await self.recompose()
        self._columns()
        self.show(self.views, {}, force=True)

    # -- reading (worker thread) -------------------------------------------------------------------
    @property
    def selected_run(self):
        table = self.query_one("#runs", DataTable)
        if not self.views or table.row_count == 0:
            return None
        name = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return next((v for v in self.views if v.name == name), None)

    @property
    def selected_stage(self):
        run = self.selected_run
        if run is None or not run.stages:
            return None
        row = self.query_one("#stages", DataTable).cursor_row
        return run.stages[min(max(row, 0), len(run.stages) - 1)]

    def focus_key(self):
        run, stage = self.selected_run, self.selected_stage
        return (run.name, stage.name) if run and stage else None

    def poll(self) -> None:
        if not self.scanning:
            self.scanning = True
            self.scan(self.focus_key())

    @work(thread=True, group="scan")
    def scan(self, focus) -> None:
        try:
            try:
                views, series = self.app.scan(focus)
            except OSError as exc:  # the home itself unreadable (permissions, a vanished mount): say so, keep trying
                self.app.call_from_thread(self.notify, str(exc), severity="error")
                return
            self.app.watcher.drop_series(focus)
            rows = {view.name: run_cells(view) for view in views}  # built here, off the UI thread
            detail = None
            run = next((v for v in views if focus and v.name == focus[0]), None)
            if run is not None:
                stage = next((s for s in run.stages if s.name == focus[1]), None)
                detail = (focus, detail_text(run, stage, self.app.watcher.runs_dir))
            self.app.call_from_thread(self.show, views, series, rows, detail)
        finally:
            self.scanning = False

    # -- showing (UI thread) -------------------------------------------------------------------------
    def show(self, views, series, rows=None, detail=None, force: bool = False) -> None:
        started = time.perf_counter()
        self.views = views
        table = self.query_one("#runs", DataTable)
        if not table.columns:  # being rebuilt (a language switch): the next scan shows
            return
        self.query_one("#empty").display = not views
        wanted = rows if rows is not None else {view.name: run_cells(view) for view in views}
        for name in [n for n in self.rows if n not in wanted]:
            table.remove_row(name)
            del self.rows[name]
        for name, cells in wanted.items():
            old = self.rows.get(name)
            if old is None:
                table.add_row(*cells, key=name)
            elif old != cells:
                for column, (a, b) in zip(("run", "preset", "state", "progress", "eta", "note"), zip(old, cells)):
                    if a != b:
                        table.update_cell(name, column, b)
            self.rows[name] = cells
        self._show_stages()
        run, stage = self.selected_run, self.selected_stage
        if series and stage and self.focus_key() and run:
            self.query_one(Curves).show(series, force)
        self._show_detail(detail)
        self._notice_launches()
        self.refresh_ms.append((time.perf_counter() - started) * 1000)
        if self.first_paint is None and views:
            self.first_paint = time.perf_counter()
            running = [i for i, v in enumerate(views) if v.state == "running"]
            table.move_cursor(row=running[-1] if running else len(views) - 1)  # start on what moves, or the newest
            # What the first scan built lives as long as the app: keep it out of the garbage collector's
            # full passes, which otherwise stop every thread for 0.1-0.2 s on a home of 200 runs.
            gc.freeze()

    def _show_stages(self) -> None:
        run = self.selected_run
        table = self.query_one("#stages", DataTable)
        rows = []
        for stage in run.stages if run else []:
            rows.append(stage_cells(stage))
        if rows == self.stage_rows:
            return
        if len(rows) == len(self.stage_rows) and [r[0] for r in rows] == [r[0] for r in self.stage_rows]:
            for i, (old, new) in enumerate(zip(self.stage_rows, rows)):
                for j, (a, b) in enumerate(zip(old, new)):
                    if a != b:
                        table.update_cell_at((i, j), b)
        else:
            cursor = table.cursor_row
            table.clear()
            for row in rows:
                table.add_row(*row)
            same_run = run is not None and run.name == self.stage_run
            if rows:
                table.move_cursor(row=cursor if same_run and 0 <= cursor < len(rows) else _default_stage(run))
        self.stage_rows, self.stage_run = rows, run.name if run else None

    def _show_detail(self, detail) -> None:
        if detail is not None and detail[0] == self.focus_key() and detail[1] != self.detail_shown:
            self.detail_shown = detail[1]
            self.query_one("#detail", Static).update(detail[1] or t("runs.detail_hint"))

    def _notice_launches(self) -> None:
        """A run this dashboard started that ended with an error: say so, with its last lines."""
        for name, proc in list(self.app.launched.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.app.launched[name]
            if code != 0:
                from nanochat.app.launch import forget_refused, launch_log
                tail = "\n".join(last_lines(launch_log(name), 3))
                forget_refused(name)
                self.notify(t("runs.launch_failed", name=name, code=code) + "\n" + tail, severity="error",
                            timeout=15)

    # -- events and actions ------------------------------------------------------------------------
    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "runs":
            self.stage_rows = []  # another run: rebuild the stage table
            self._show_stages()
        self.query_one(Curves).show({}, force=True)
        self.poll()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "stages":
            self.action_logs()
        else:
            self.query_one("#stages").focus()

    def action_new_run(self) -> None:
        from nanochat.app.screens.new_run import NewRunScreen
        self.app.push_screen(NewRunScreen(), self._started)

    def _started(self, name) -> None:
        if name:
            self.poll()

    def action_stop(self) -> None:
        from nanochat.runs import Run, stop_stage
        run = self.selected_run
        if run is None:
            return
        try:
            stage, pid = stop_stage(Run(self.app.watcher.runs_dir / run.name))
        except (RunError, OSError) as exc:
            self.notify(str(exc), severity="error")
            return
        self.notify(t("runs.stopping", stage=stage, run=run.name, pid=pid))

    def action_resume(self) -> None:
        from nanochat.app import launch
        run = self.selected_run
        if run is None:
            return
        if run.state in ("running", "done", "damaged"):
            self.notify(t("runs.cannot_resume", run=run.name, state=t(f"state.{run.state}")), severity="warning")
            return
        try:
            self.app.launched[run.name] = launch.start(run.name)
        except (RunError, OSError) as exc:
            self.notify(str(exc), severity="error")
            return
        self.notify(t("runs.resuming", run=run.name))

    def action_logs(self) -> None:
        from nanochat.app.screens.logs import LogScreen
        run, stage = self.selected_run, self.selected_stage
        if run and stage:
            self.app.push_screen(LogScreen(self.app.watcher.runs_dir / run.name / stage.name / "log.txt",
                                           f"{run.name} / {stage.name}"))


def _default_stage(run) -> int:
    """The stage to show first: the running one, else the last that did something."""
    for i, s in enumerate(run.stages):
        if s.state == "running":
            return i
    started = [i for i, s in enumerate(run.stages) if s.state != "pending"]
    return started[-1] if started else 0


def _clip(text: str, width: int = 64) -> str:
    """A note short enough for its column; the whole text is in the detail pane below."""
    return text if len(text) <= width else text[: width - 1] + "…"


def _escape(text: str) -> str:
    from rich.markup import escape
    return escape(str(text))
