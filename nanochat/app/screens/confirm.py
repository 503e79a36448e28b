"""A yes/no question that has to be answered before something that cannot be undone (y / n / Esc)."""
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from nanochat.i18n import t


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", t("key.yes")), Binding("n", "answer(False)", t("key.no")),
                Binding("escape", "answer(False)", t("key.no"), show=False)]

    def __init__(self, question: str, detail: str = "", **kw):
        super().__init__(**kw)
        self.question, self.detail = question, detail

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Static(f"[b]{_escape(self.question)}[/]", id="confirm-question")
            yield Static(_escape(self.detail), id="confirm-detail")
            with Horizontal(id="confirm-buttons"):
                yield Button(f"{t('key.yes')} (y)", id="yes", variant="error")
                yield Button(f"{t('key.no')} (n)", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no").focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


def _escape(text: str) -> str:
    from rich.markup import escape
    return escape(text)
