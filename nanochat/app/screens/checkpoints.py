"""Checkpoints: per run and stage the latest step, val bpb, size on disk and date; the total; delete (after
a confirmation that names the stages that need them; refused while a stage writes or reads them); chat.

Sizes come from walking the folders, so the table is built in a worker thread.
"""
import datetime
import json
import os
import shutil

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from nanochat.app import fmt
from nanochat.app.screens.confirm import ConfirmScreen
from nanochat.app.screens.base import BaseScreen
from nanochat.i18n import t
from nanochat.runs import Run, RunError, disk_usage, process_alive

COLUMNS = ("run", "stage", "state", "step", "val_bpb", "size", "date")


def list_checkpoints(runs_dir) -> list[dict]:
    """Every stage checkpoint folder under runs_dir: run, stage, state, steps kept, latest step, bytes, mtime."""
    rows = []
    for run_dir in sorted(p for p in runs_dir.iterdir() if (p / "checkpoints").is_dir()) if runs_dir.is_dir() else []:
        for folder in sorted(p for p in (run_dir / "checkpoints").iterdir() if p.is_dir()):
            steps = sorted(int(p.name[5:]) for p in folder.glob("step_*")
                           if p.is_dir() and p.name[5:].isdigit())
            latest = folder / f"step_{steps[-1]:06d}" if steps else folder
            val_bpb = None
            try:
                meta = json.loads((latest / "meta.json").read_text())
                val_bpb = meta.get("val_bpb") or (meta.get("metrics") or {}).get("val_bpb")
            except (OSError, ValueError, AttributeError):
                pass
            try:
                state = Run(run_dir).status(folder.name)["state"]
            except RunError:
                state = "damaged"
            rows.append({"run": run_dir.name, "stage": folder.name, "state": state, "steps": steps,
                         "step": steps[-1] if steps else None, "val_bpb": val_bpb, "bytes": disk_usage(folder),
                         "mtime": os.stat(latest).st_mtime, "path": folder})
    return rows


def refusal(run: Run, stage: str) -> str | None:
    """Why the checkpoints of `stage` must not be deleted now (a live stage writes or reads them), or None."""
    from nanochat.runner import checkpoint_users
    status = run.status(stage)
    if status["state"] == "running" and process_alive(status) is not False:
        return t("ckpt.refused", stage=stage, verb=t("ckpt.writing"))
    try:
        users = checkpoint_users(run, stage)
    except Exception:  # a stage of a plugin that is gone: nothing can be reading through it
        users = []
    for user, state, _ in users:
        if state == "running" and process_alive(run.status(user)) is not False:
            return t("ckpt.refused", stage=user, verb=t("ckpt.reading"))
    return None


class CheckpointsScreen(BaseScreen):
    BINDINGS = [Binding("d", "delete", t("key.delete")), Binding("c", "chat_with", t("key.chat_with")),
                Binding("f5", "refresh", t("key.refresh"))]

    def __init__(self, **kw):
        super().__init__(**kw)
        self.rows = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="ckpt-total")
        yield DataTable(id="checkpoints", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = t("key.checkpoints")
        self._columns()
        self.action_refresh()

    def on_screen_resume(self) -> None:
        self.action_refresh()

    def _columns(self) -> None:
        table = self.query_one("#checkpoints", DataTable)
        for key in COLUMNS:
            table.add_column(t(f"col.{key}"), key=key)

    async def relabel(self) -> None:
        self.sub_title = t("key.checkpoints")
        await self.recompose()
        self._columns()
        self._show(self.rows)

    def action_refresh(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="checkpoints")
    def load(self) -> None:
        try:
            rows = list_checkpoints(self.app.watcher.runs_dir)
        except OSError as exc:  # a folder that vanished or cannot be read while we walked
            self.app.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.app.call_from_thread(self._show, rows)

    def _show(self, rows) -> None:
        self.rows = rows
        table = self.query_one("#checkpoints", DataTable)
        cursor = table.cursor_row
        table.clear()
        for r in rows:
            date = datetime.datetime.fromtimestamp(r["mtime"]).strftime("%Y-%m-%d %H:%M")
            table.add_row(r["run"], r["stage"], Text(t(f"state.{r['state']}")), fmt.number(r["step"]),
                          fmt.number(r["val_bpb"]), fmt.size(r["bytes"]), date)
        if rows:
            table.move_cursor(row=min(max(cursor, 0), len(rows) - 1))
        total = sum(r["bytes"] for r in rows)
        self.query_one("#ckpt-total", Static).update(
            t("ckpt.total", count=len(rows), size=fmt.size(total)) if rows else t("ckpt.none"))

    @property
    def selected(self):
        table = self.query_one("#checkpoints", DataTable)
        if not self.rows or table.row_count == 0:
            return None
        return self.rows[min(table.cursor_row, len(self.rows) - 1)]

    def action_delete(self) -> None:
        row = self.selected
        if row is not None:
            self.ask_to_delete(row)

    @work(thread=True, exclusive=True, group="delete")
    def ask_to_delete(self, row) -> None:
        """Who needs these checkpoints (the stage classes are imported for that: off the UI thread)."""
        from nanochat.runner import checkpoint_users
        run = Run(self.app.watcher.runs_dir / row["run"])
        try:
            why_not = refusal(run, row["stage"])
            users = checkpoint_users(run, row["stage"])
        except Exception as exc:  # a damaged run.json / status.json, a stage type that is gone
            why_not, users = None, []
            self.app.call_from_thread(self.notify, str(exc), severity="warning")
        if why_not:
            self.app.call_from_thread(self.notify, why_not, severity="error")
            return
        needed = ", ".join(f"{name} ({t('state.' + state)}, {artifact})" for name, state, artifact in users)
        detail = t("ckpt.needed_by", stages=needed) if users else t("ckpt.needed_by_none")
        question = t("ckpt.confirm", run=row["run"], stage=row["stage"], size=fmt.size(row["bytes"]))
        self.app.call_from_thread(self.app.push_screen, ConfirmScreen(question, f"{row['path']}\n\n{detail}"),
                                  lambda yes: yes and self.delete(row))

    @work(thread=True, exclusive=True, group="delete")
    def delete(self, row) -> None:
        run = Run(self.app.watcher.runs_dir / row["run"])
        try:
            why_not = refusal(run, row["stage"])  # again: a stage may have started while the question was open
        except (RunError, OSError) as exc:
            why_not = str(exc)
        if why_not:
            self.app.call_from_thread(self.notify, why_not, severity="error")
            return
        try:
            shutil.rmtree(row["path"])
        except OSError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error")
        else:
            self.app.call_from_thread(self.notify, t("ckpt.deleted", path=row["path"]))
        self.app.call_from_thread(self.action_refresh)

    def action_chat_with(self) -> None:
        row = self.selected
        if row is None:
            return
        if row["step"] is None:
            self.notify(t("ckpt.no_model", run=row["run"], stage=row["stage"]), severity="warning")
            return
        self.app.chat_request = {"checkpoint": row["path"], "label": f"{row['run']}/{row['stage']}@{row['step']}"}
        self.app.switch_mode("chat")  # the chat screen takes the request when it shows
