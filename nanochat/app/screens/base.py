"""What every dashboard screen shares: footer labels in the language of the moment.

Binding labels are written when a class is defined; a screen shown after a language switch (or when the
language was set before the app started) re-translates its own on mount.
"""
import dataclasses

from textual.screen import Screen

from nanochat import i18n


class BaseScreen(Screen):
    language = None  # the language this screen's labels are in

    def _on_mount(self, event) -> None:  # Textual calls this besides a subclass's on_mount
        relabel_bindings(self)
        self.language = i18n.language()

    async def _on_screen_resume(self, event) -> None:
        await self.follow_language()

    async def follow_language(self) -> None:
        """Re-translate labels and contents when the language changed since they were written."""
        if self.language in (None, i18n.language()):
            return
        self.language = i18n.language()
        relabel_bindings(self)
        await self.relabel()

    async def relabel(self) -> None:
        """Rebuild what shows text (screens with tables override this)."""


def relabel_bindings(node) -> None:
    """Re-translate the footer labels of a screen's (or the app's) bindings: the label of action `x` is key.x."""
    for key, bindings in node._bindings.key_to_bindings.items():
        node._bindings.key_to_bindings[key] = [
            dataclasses.replace(b, description=i18n.t(f"key.{_action_key(b.action)}"))
            if f"key.{_action_key(b.action)}" in i18n.MESSAGES and b.description else b
            for b in bindings]


def _action_key(action: str) -> str:
    """switch_mode('runs') -> runs; app.pop_screen -> back; stop -> stop."""
    if "(" in action:
        return action.split("(", 1)[1].strip("')\"")
    return "back" if action.endswith("pop_screen") else action
