"""The dashboard application: four screens (runs, checkpoints, chat, plugins), the command palette,
key bindings and the language switch.

Every file is read by worker threads (watch.py); the UI thread only puts figures on screen.
"""
import threading

from textual.app import App, SystemCommand
from textual.binding import Binding

from nanochat import i18n
from nanochat.app.screens.base import relabel_bindings
from nanochat.app.watch import HomeWatcher
from nanochat.i18n import t


MODE_SCREENS = (("runs", "runs", "RunsScreen"), ("checkpoints", "checkpoints", "CheckpointsScreen"),
                ("chat", "chat", "ChatScreen"), ("plugins", "plugins", "PluginsScreen"))


class NanochatApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "nanochat"
    MODES = {mode: (lambda module=module, name=name: _screen_class(module, name)())  # imported when first shown
             for mode, module, name in MODE_SCREENS}
    DEFAULT_MODE = "runs"
    BINDINGS = [
        Binding("1", "switch_mode('runs')", t("key.runs")),
        Binding("2", "switch_mode('checkpoints')", t("key.checkpoints")),
        Binding("3", "switch_mode('chat')", t("key.chat")),
        Binding("4", "switch_mode('plugins')", t("key.plugins")),
        Binding("f2", "switch_language", t("key.switch_language")),
        Binding("q", "quit", t("key.quit")),
    ]

    def __init__(self, **kw):
        super().__init__(**kw)
        self.watcher = HomeWatcher()
        self.scan_lock = threading.Lock()  # one scan of the home at a time (the runs and checkpoints screens share it)
        self.launched = {}  # run name -> Popen of the runs this dashboard started
        self.chat_request = None  # a model the chat screen should load when it shows ("chat with this")

    def on_mount(self) -> None:
        self.sub_title = t("app.subtitle")
        relabel_bindings(self)

    def scan(self, focus=None):
        """A scan of the home (call from a worker thread)."""
        from nanochat.app.widgets.curves import thin
        with self.scan_lock:
            views = self.watcher.scan(focus)
            series = {k: (*thin(s, v), len(s)) for k, (s, v) in self.watcher.series(*focus).items()} if focus else {}
            return views, series

    # -- language -----------------------------------------------------------------------------------
    async def action_switch_language(self) -> None:
        i18n.set_language("zh" if i18n.language() == "en" else "en")
        self.sub_title = t("app.subtitle")
        relabel_bindings(self)
        for screen in self.screen_stack:  # screens of other modes follow when they show again
            follow = getattr(screen, "follow_language", None)
            if follow:
                await follow()
        self.refresh_bindings()
        self.notify(t("app.language_now"))

    # -- command palette -------------------------------------------------------------------------
    def get_system_commands(self, screen):
        yield from super().get_system_commands(screen)
        for mode in self.MODES:
            yield SystemCommand(t(f"key.{mode}"), t(f"palette.{mode}"),
                                lambda mode=mode: self.switch_mode(mode))
        yield SystemCommand(t("key.switch_language"), t("palette.switch_language"), self.action_switch_language)
        for binding in screen.BINDINGS:  # every action of the screen on show
            if isinstance(binding, Binding) and binding.show and "." not in binding.action:
                yield SystemCommand(t(f"key.{binding.action}"), t(f"palette.{binding.action}"),
                                    lambda action=binding.action: self.run_action(action, screen))
        for mode, module, name in MODE_SCREENS:  # and those of the other screens: go there, then do it
            cls = _screen_class(module, name)
            if isinstance(screen, cls):
                continue
            for binding in cls.BINDINGS:
                if isinstance(binding, Binding) and binding.show and "." not in binding.action:
                    yield SystemCommand(f"{t(f'key.{mode}')}: {t(f'key.{binding.action}')}",
                                        t(f"palette.{binding.action}"),
                                        lambda mode=mode, action=binding.action: self._act_in(mode, action))

    async def _act_in(self, mode: str, action: str) -> None:
        await self.switch_mode(mode)
        await self.run_action(action, self.screen)


def _screen_class(module: str, name: str):
    import importlib
    return getattr(importlib.import_module(f"nanochat.app.screens.{module}"), name)
