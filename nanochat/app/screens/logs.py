"""A stage's log.txt, following it as it grows (like `tail -f`): a worker reads only the new bytes."""
import os

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, Log, Static

from nanochat.app.screens.base import BaseScreen
from nanochat.i18n import t

FOLLOW_SECONDS = 0.5
FIRST_BYTES = 1 << 20  # a long log opens at its last MB


class LogScreen(BaseScreen):
    BINDINGS = [Binding("escape", "app.pop_screen", t("key.back")),
                Binding("f", "toggle_follow", t("key.follow"))]

    def __init__(self, path, title: str, **kw):
        super().__init__(**kw)
        self.path, self.title_text = path, title
        self.read_at, self.inode, self.follow, self.reading = 0, None, True, False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"{self.title_text}  [dim]{self.path}[/]", id="log-title")
        yield Log(id="log", highlight=False, max_lines=20000)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = t("logs.following")
        self.poll()
        self.set_interval(FOLLOW_SECONDS, self.poll)

    def poll(self) -> None:
        if not self.reading:
            self.reading = True
            self.read_more()

    @work(thread=True, group="log")
    def read_more(self) -> None:
        try:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                if self.read_at == 0 and self.inode is None:
                    self.inode = -1
                    self.app.call_from_thread(self.query_one(Log).write_line, t("logs.empty"))
                return
            if st.st_ino != self.inode or st.st_size < self.read_at:  # new or rewritten file: start again
                first = self.inode is None or self.inode == -1
                self.inode, self.read_at = st.st_ino, max(st.st_size - FIRST_BYTES, 0) if first else 0
                self.app.call_from_thread(self.query_one(Log).clear)
            if st.st_size == self.read_at:
                return
            with open(self.path, "rb") as f:
                f.seek(self.read_at)
                data = f.read(st.st_size - self.read_at)
            end = data.rfind(b"\n") + 1  # a line being written waits for its newline
            self.read_at += end
            text = data[:end].decode("utf-8", errors="replace")
            if text:
                self.app.call_from_thread(self._append, text)
        finally:
            self.reading = False

    def _append(self, text: str) -> None:
        log = self.query_one(Log)
        log.auto_scroll = self.follow
        log.write_lines(text.splitlines())

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        self.sub_title = t("logs.following") if self.follow else t("logs.paused")
        if self.follow:
            self.query_one(Log).scroll_end(animate=False)
