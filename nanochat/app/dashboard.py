"""The dashboard: every run on this machine, and for the selected run each stage's state and latest metrics.

It only reads the run folders (runs.py), so it works whether or not training is going on, and
refreshes itself every few seconds.
"""
from textual.app import App, ComposeResult
from textual.widgets import DataTable, Footer, Header, Static

from nanochat.errors import NanochatError
from nanochat.i18n import t
from nanochat.runs import list_runs

REFRESH_SECONDS = 3.0


def _short(record: dict) -> str:
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
             if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    return "  ".join(parts)[:80]


class Dashboard(App):
    CSS_PATH = "app.tcss"
    TITLE = "nanochat"
    BINDINGS = [("r", "refresh", t("key.refresh")), ("q", "quit", t("key.quit"))]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(t("runs.none"), id="empty")
        yield DataTable(id="runs", cursor_type="row")
        yield DataTable(id="stages", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = t("app.subtitle")
        self.query_one("#runs", DataTable).add_columns(t("col.run"), t("col.preset"), t("col.progress"))
        self.query_one("#stages", DataTable).add_columns(t("col.stage"), t("col.state"), t("col.last"))
        self.action_refresh()
        self.set_interval(REFRESH_SECONDS, self.action_refresh)

    def action_refresh(self) -> None:
        table = self.query_one("#runs", DataTable)
        selected = table.cursor_row
        table.clear()
        self.runs = list_runs()
        for run in self.runs:
            try:
                states = [run.status(s["name"])["state"] for s in run.stages()]
                progress = f"{states.count('done')}/{len(states)}"
                preset = run.info.get("preset", "?")
            except NanochatError as exc:
                preset, progress = "?", t("run.damaged", error=exc)
            table.add_row(run.name, preset, progress, key=run.name)
        self.query_one("#empty").display = not self.runs
        if self.runs:
            table.move_cursor(row=min(selected, len(self.runs) - 1))
            self.show_stages(self.runs[table.cursor_row])

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "runs" and event.row_key is not None:
            self.show_stages(next(r for r in self.runs if r.name == event.row_key.value))

    def show_stages(self, run) -> None:
        table = self.query_one("#stages", DataTable)
        table.clear()
        try:
            for stage in run.stages():
                state = run.status(stage["name"])["state"]
                metrics = run.metrics(stage["name"])
                table.add_row(stage["name"], t(f"state.{state}"), _short(metrics[-1]) if metrics else "")
        except NanochatError as exc:
            table.add_row("?", t("run.damaged", error=exc), "")
