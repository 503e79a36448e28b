"""Plugins: the `nanochat plugins` table — each thing a plugin adds (backends, optimizers, datasets, tasks,
observers), and every broken plugin with its error. Loading the registry imports plugins: a worker does it."""
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.widgets import DataTable, Footer, Header, Static

from nanochat.app.screens.base import BaseScreen
from nanochat.i18n import t

COLUMNS = ("name", "kind", "plugin", "version", "from", "status", "error")


class PluginsScreen(BaseScreen):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.rows = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="plugins-summary")
        yield DataTable(id="plugins", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = t("key.plugins")
        self._columns()
        self.load()

    def _columns(self) -> None:
        table = self.query_one("#plugins", DataTable)
        for key in COLUMNS:
            table.add_column(t(f"col.{key}"), key=key)

    async def relabel(self) -> None:
        self.sub_title = t("key.plugins")
        await self.recompose()
        self._columns()
        self._show(self.rows)

    @work(thread=True, group="plugins")
    def load(self) -> None:
        from nanochat import plugins
        rows = plugins.registry().listing()
        self.app.call_from_thread(self._show, rows)

    def _show(self, rows) -> None:
        self.rows = rows
        table = self.query_one("#plugins", DataTable)
        table.clear()
        broken = [r for r in rows if r["status"] == "broken"]
        for r in broken + [r for r in rows if r["status"] != "broken"]:  # what needs attention first
            style = "bold red" if r["status"] == "broken" else ""
            table.add_row(r["name"], r["kind"] or "", r["plugin"], r["version"] or "", r["distribution"],
                          Text(r["status"], style=style), Text(r["error"] or "", style="red"))
        summary = self.query_one("#plugins-summary", Static)
        if broken:
            summary.update(f"[b red]{t('plugins.broken', count=len(broken))}[/]")
        else:
            summary.update(t("plugins.ok", count=len({r['plugin'] for r in rows})))
