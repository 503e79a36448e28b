"""The real `nanochat-app` in a real terminal (tmux): the run list, a chat turn, quitting — as a person
over SSH would drive it (send-keys, capture-pane)."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_chat_cli import home  # noqa: F401  (a run 'tiny' with a tokenizer, a base and an sft checkpoint)

from nanochat.conversations import ConversationStore

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")


class Tmux:
    def __init__(self, socket: str, env: dict):
        self.socket, self.env = socket, env

    def __call__(self, *args, check=True):
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, env=self.env,
                              check=check, timeout=30)

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "app").stdout

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.3)
        raise AssertionError(f"{text!r} did not show within {timeout}s; the screen:\n{self.screen()}")


def test_real_app_in_tmux_lists_runs_chats_and_quits(home, tmp_path):  # noqa: F811
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    app = Path(sys.executable).parent / "nanochat-app"
    env = {**os.environ, "NANOCHAT_DTYPE": "fp32", "TERM": "xterm-256color", "NANOCHAT_LANG": "en"}
    env.pop("NANOCHAT_HOME", None)  # --home says where
    tmux = Tmux(f"nanochat-test-{os.getpid()}", env)
    tmux("new-session", "-d", "-s", "app", "-x", "120", "-y", "40", f"{app} --home {copy}; echo APP-EXITED $?; sleep 30")
    try:
        shown = tmux.wait_for("tiny")
        assert "runs on this machine" in shown and "done" in shown and "3/3" in shown
        tmux("send-keys", "-t", "app", "3")
        tmux.wait_for("loaded chat model: run 'tiny', stage 'sft'")
        tmux("send-keys", "-t", "app", "-l", "hello")
        tmux("send-keys", "-t", "app", "Enter")
        shown = tmux.wait_for("tok/s")
        assert "you> hello" in shown and "nanochat>" in shown
        conversations = ConversationStore(copy / "conversations").list()
        assert [c["messages"] for c in conversations] == [2] and conversations[0]["model"] == "tiny/sft"
        tmux("send-keys", "-t", "app", "Escape")  # leave the message box so 1 and q reach the app
        time.sleep(1.0)  # Esc then a key at once reads as Alt+key
        tmux("send-keys", "-t", "app", "1")
        tmux.wait_for("Stages done")
        tmux("send-keys", "-t", "app", "q")
        tmux.wait_for("APP-EXITED 0", timeout=20)
    finally:
        tmux("kill-server", check=False)
