"""`nanochat-app` under Pilot: checkpoints (sizes, delete with confirmation, refusal while a stage uses them,
chat with this), a streamed chat turn saved to the shared conversation store, stopping a reply, plugins
with a broken one, and the command palette."""
import asyncio
import os
import threading
import shutil

from test_app import _app, _cells, _until
from test_chat_cli import home  # noqa: F401  (a run 'tiny' with a tokenizer, a base and an sft checkpoint)

from nanochat.conversations import ConversationStore
from nanochat.runs import Run


def _use(home_dir, monkeypatch, tmp_path):
    """A private copy of the module's home (tests here delete and write in it)."""
    copy = tmp_path / "home"
    shutil.copytree(home_dir, copy)
    monkeypatch.setenv("NANOCHAT_HOME", str(copy))
    monkeypatch.setenv("NANOCHAT_DTYPE", "fp32")
    return copy


def test_checkpoints_list_delete_with_confirmation_and_refusal(home, monkeypatch, tmp_path):  # noqa: F811
    root = _use(home, monkeypatch, tmp_path)
    run = Run(root / "runs" / "tiny")
    run.update_info(stages=[{"name": "tokenizer", "stage": "tokenizer", "settings": {}},
                            {"name": "pretrain", "stage": "pretrain", "settings": {}},
                            {"name": "sft", "stage": "sft", "settings": {"source": "base"}}])

    async def scenario():
        app = _app()
        async with app.run_test(size=(130, 40)) as pilot:
            await pilot.press("2")
            table = app.screen.query_one("#checkpoints")
            await _until(pilot, lambda: table.row_count == 3, what="three checkpoint rows")
            rows = _cells(table)
            assert [r[:4] for r in rows] == [["tiny", "pretrain", "done", "5"], ["tiny", "sft", "done", "10"],
                                             ["tiny", "tokenizer", "done", ""]]
            assert all(r[5].endswith("KB") or r[5].endswith("MB") for r in rows)
            assert "3 checkpoint folders" in str(app.screen.query_one("#ckpt-total").render())
            # pretrain's checkpoint is what sft starts from: the question says so; "n" keeps it
            table.move_cursor(row=0)
            await pilot.press("d")
            await _until(pilot, lambda: app.screen.__class__.__name__ == "ConfirmScreen", what="the question")
            detail = str(app.screen.query_one("#confirm-detail").render())
            assert "Needed by: sft (done, base-model)" in detail
            await pilot.press("n")
            assert run.checkpoint_dir("pretrain").exists()
            # while sft runs (this process plays it), deleting what it reads is refused
            run.set_status("sft", state="running", pid=os.getpid(), host=os.uname().nodename)
            notes = []
            app.notify = lambda message, **kw: notes.append(message)
            await pilot.press("d")
            await pilot.pause(0.2)
            assert app.screen.__class__.__name__ == "CheckpointsScreen"
            assert notes and "stage sft is reading these checkpoints" in notes[-1]
            table.move_cursor(row=1)
            await pilot.press("d")
            await pilot.pause(0.2)
            assert "stage sft is writing these checkpoints" in notes[-1]
            run.set_status("sft", state="done")
            # now it goes: y deletes, the table and the total follow
            table.move_cursor(row=0)
            await pilot.press("d")
            await _until(pilot, lambda: app.screen.__class__.__name__ == "ConfirmScreen", what="the question")
            await pilot.press("y")
            await _until(pilot, lambda: table.row_count == 2, what="two rows left")
            assert not run.checkpoint_dir("pretrain").exists() and run.checkpoint_dir("sft").exists()
    asyncio.run(scenario())


def test_chat_turn_streams_and_lands_in_the_shared_store(home, monkeypatch, tmp_path):  # noqa: F811
    _use(home, monkeypatch, tmp_path)

    async def scenario():
        app = _app()
        async with app.run_test(size=(130, 40)) as pilot:
            await pilot.press("3")
            screen = app.screen
            await _until(pilot, lambda: screen.models == ["tiny/sft", "tiny/base"], what="the models")
            screen.query_one("#model").value = "tiny/sft"
            await _until(pilot, lambda: screen.engine is not None, timeout=60, what="the model loaded")
            assert "run 'tiny', stage 'sft'" in str(screen.query_one("#chat-status").render())
            screen.query_one("#system").value = "Be brief."
            screen.query_one("#temperature").value = "0"
            screen.query_one("#prompt").focus()
            await pilot.press(*"hello", "enter")
            await _until(pilot, lambda: screen.replies == 1, timeout=60, what="the reply")
            saved = ConversationStore().list()
            assert len(saved) == 1 and saved[0]["model"] == "tiny/sft" and saved[0]["messages"] == 2
            conv = ConversationStore().get(saved[0]["id"])
            assert conv["system"] == "Be brief." and conv["messages"][0] == {"role": "user", "content": "hello"}
            reply = conv["messages"][1]
            assert reply["role"] == "assistant" and reply["content"] and reply["meta"]["tokens"] > 0
            # the same greedy reply the engine gives in this process
            assert reply["content"] == "".join(screen.engine.chat(
                [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}],
                max_tokens=512, temperature=0.0))
            messages = screen.query(".message")
            assert len(messages) == 2 and reply["content"][:10] in str(messages[1].render())
            await _until(pilot, lambda: screen.query_one("#conversations").option_count == 1, what="the list")
            # a bad temperature is refused with a message; nothing is sent
            notes = []
            app.notify = lambda message, **kw: notes.append(message)
            screen.query_one("#temperature").value = "hot"
            await pilot.press(*"again", "enter")
            await pilot.pause(0.2)
            assert "temperature must be a number from 0 to 2, got 'hot'" in notes[-1] and screen.replies == 1
            # a new chat starts empty; the old one opens again from the list
            await pilot.press("ctrl+n")
            await pilot.pause(0.1)
            assert len(screen.query(".message")) == 0
            screen.query_one("#conversations").focus()
            await pilot.press("down", "enter")
            await _until(pilot, lambda: len(screen.query(".message")) == 2, what="the old conversation")
    asyncio.run(scenario())


class StopAfter(threading.Event):
    """An Event that is set from the n-th time the generating thread looks at it."""

    def __init__(self, n):
        super().__init__()
        self.left = n

    def is_set(self):
        self.left -= 1
        return self.left <= 0 or super().is_set()


def test_stop_a_reply_while_it_is_written(home, monkeypatch, tmp_path):  # noqa: F811
    _use(home, monkeypatch, tmp_path)

    async def scenario():
        app = _app()
        async with app.run_test(size=(130, 40)) as pilot:
            await pilot.press("3")
            screen = app.screen
            await _until(pilot, lambda: screen.models, what="the models")
            screen.query_one("#model").value = "tiny/sft"
            await _until(pilot, lambda: screen.engine is not None, timeout=60, what="the model loaded")
            screen.stop = StopAfter(8)  # Esc pressed while the 8th token comes (an Event, counting who asks)
            screen.query_one("#temperature").value = "0"  # greedy: the same reply every time, longer than 8
            screen.query_one("#prompt").focus()
            await pilot.press(*"hi", "enter")
            await _until(pilot, lambda: screen.replies == 1, timeout=60, what="the stopped reply")
            conv = ConversationStore().get(ConversationStore().list()[0]["id"])
            assert conv["messages"][1]["meta"] == {"tokens": 8, "tok_per_s": conv["messages"][1]["meta"]["tok_per_s"],
                                                   "finish_reason": "stopped"}
            assert "(stopped)" in str(screen.query(".message")[1].render())
    asyncio.run(scenario())


def test_chat_with_this_loads_the_checkpoint(home, monkeypatch, tmp_path):  # noqa: F811
    _use(home, monkeypatch, tmp_path)

    async def scenario():
        app = _app()
        async with app.run_test(size=(130, 40)) as pilot:
            await pilot.press("2")
            table = app.screen.query_one("#checkpoints")
            await _until(pilot, lambda: table.row_count == 3, what="checkpoint rows")
            table.move_cursor(row=1)  # tiny / sft
            await pilot.press("c")
            await _until(pilot, lambda: app.screen.__class__.__name__ == "ChatScreen", what="the chat screen")
            await _until(pilot, lambda: app.screen.engine is not None, timeout=60, what="the model")
            assert app.screen.model_id == "tiny/sft@10" and app.screen.mode == "chat"
    asyncio.run(scenario())


def test_plugins_screen_lists_plugins_and_broken_ones(monkeypatch):
    monkeypatch.setenv("NANOCHAT_PLUGINS", "not-installed-plugin")

    async def scenario():
        app = _app()
        async with app.run_test(size=(140, 40)) as pilot:
            await pilot.press("4")
            table = app.screen.query_one("#plugins")
            await _until(pilot, lambda: table.row_count > 5, what="the plugins")
            rows = _cells(table)
            assert rows[0][0] == "not-installed-plugin" and rows[0][5] == "broken"
            assert "no such plugin is installed" in rows[0][6]
            names = {(r[0], r[1]) for r in rows}
            assert ("starter", "dataset") in names and ("cpu", "backend") in names and ("gsm8k", "task") in names
            assert "1 broken plugin" in str(app.screen.query_one("#plugins-summary").render())
    asyncio.run(scenario())


def test_command_palette_reaches_screens_and_actions(tmp_path):
    async def scenario():
        app = _app()
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            titles = [c.title for c in app.get_system_commands(app.screen)]
            for title in ("Runs", "Checkpoints", "Chat", "Plugins", "中文", "New run", "Stop", "Resume", "Logs",
                          "Checkpoints: Delete", "Checkpoints: Chat with this", "Chat: New chat"):
                assert title in titles
            await pilot.press("ctrl+p")
            await pilot.pause(0.3)
            await pilot.press(*"plugins")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await _until(pilot, lambda: app.screen.__class__.__name__ == "PluginsScreen", what="plugins via palette")
            # an action of another screen: it goes there and does it
            await pilot.press("ctrl+p")
            await pilot.pause(0.3)
            await pilot.press(*"runs: new run")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await _until(pilot, lambda: app.screen.__class__.__name__ == "NewRunScreen", what="new run via palette")
    asyncio.run(scenario())
