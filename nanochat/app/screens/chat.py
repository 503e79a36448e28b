"""Chat: talk to a model you trained, streaming; stop, system prompt, temperature; the conversations are
the same files the web page keeps (nanochat.conversations).

Loading a model and generating happen in worker threads; the reply on screen is updated at most every
UPDATE_SECONDS from the deltas collected so far, so a fast model never floods the UI thread.
"""
import threading
import time

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Header, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from nanochat.conversations import ConversationError, ConversationStore, message_text
from nanochat.errors import NanochatError
from nanochat.app.screens.base import BaseScreen
from nanochat.i18n import t

UPDATE_SECONDS = 0.05
MAX_TOKENS = 512


class ChatScreen(BaseScreen):
    BINDINGS = [Binding("ctrl+n", "new_chat", t("key.new_chat")),
                Binding("escape", "stop_reply", t("key.stop_reply"))]

    def __init__(self, **kw):
        super().__init__(**kw)
        self.store = ConversationStore()
        self.conversation = {"messages": []}
        self.engine = self.mode = self.model_id = None
        self.stop = threading.Event()
        self.generating = False
        self.models = []  # ids "run/kind" of the finished models
        self.checkpoints = {}  # "run/stage@step" -> the checkpoint folder, for "chat with this"
        self.replies = 0  # finished replies (tests wait on it)
        self.status_markup = ""  # kept: a model may start loading before the screen is composed (or while recomposing)

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="chat"):
            with Vertical(id="chat-side"):
                yield Label(t("chat.model"))
                yield Select([], id="model", prompt=t("chat.model"))
                yield Label(t("chat.system"))
                yield Input(id="system")
                yield Label(t("chat.temperature"))
                yield Input("0.6", id="temperature")
                yield Label(t("chat.conversations"))
                yield OptionList(id="conversations")
            with Vertical(id="chat-main"):
                yield Static(self.status_markup, id="chat-status")
                yield VerticalScroll(id="messages")
                yield Input(id="prompt", placeholder=t("chat.placeholder"))
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = t("key.chat")
        self.find_models()
        self.list_conversations()
        self.query_one("#prompt").focus()

    def on_screen_resume(self) -> None:
        request, self.app.chat_request = self.app.chat_request, None
        if request:
            self.load_model(**request)

    async def relabel(self) -> None:
        self.sub_title = t("key.chat")
        conversation = self.conversation
        await self.recompose()
        self.find_models()
        self.list_conversations()
        self._show_conversation(conversation)

    # -- models -------------------------------------------------------------------------------------
    @work(thread=True, group="models")
    def find_models(self) -> None:
        from nanochat.models import finished_models
        ids = [ref.id for ref in finished_models(warn=False) if ref.kind != "base"]
        ids += [ref.id for ref in finished_models(warn=False) if ref.kind == "base"]
        self.app.call_from_thread(self._show_models, ids)

    def _show_models(self, ids) -> None:
        self.models = ids
        select = self.query_one("#model", Select)
        select.set_options([(i, i) for i in ids] + ([(self.model_id, self.model_id)]
                                                   if self.model_id and self.model_id not in ids else []))
        if self.model_id:
            select.value = self.model_id
        elif ids:
            select.value = ids[0]  # the newest chat model: what `nanochat chat` picks too
        else:
            self._status(t("chat.no_models"))

    @on(Select.Changed, "#model")
    def _model_chosen(self, event: Select.Changed) -> None:
        if event.value is Select.BLANK or event.value == self.model_id:
            return
        if event.value in self.checkpoints:  # a checkpoint chosen on the checkpoints screen
            self.load_model(checkpoint=self.checkpoints[event.value], label=str(event.value))
        else:
            run, _, kind = str(event.value).rpartition("/")
            self.load_model(run_name=run, kind=kind, label=str(event.value))

    def load_model(self, run_name=None, kind=None, checkpoint=None, label=None) -> None:
        if checkpoint is not None:
            self.checkpoints[label] = checkpoint
        self.engine = None
        self.model_id = label
        self._status(t("chat.loading", model=label))
        self._load(run_name, kind, checkpoint, label)

    @work(thread=True, exclusive=True, group="load")
    def _load(self, run_name, kind, checkpoint, label) -> None:
        from nanochat.models import load_engine
        try:
            engine, mode, line, _ = load_engine(run_name=run_name, kind=kind, checkpoint=checkpoint, device="auto")
        except Exception as exc:  # noqa: BLE001  (whatever a model folder holds, the dashboard stays up and says it)
            message = str(exc) if isinstance(exc, NanochatError) else f"{type(exc).__name__}: {exc}"
            self.app.call_from_thread(self._status, f"[b red]{escape(message)}[/]")
            return
        self.app.call_from_thread(self._loaded, engine, mode, line, label)

    def _loaded(self, engine, mode, line, label) -> None:
        if label != self.model_id:  # another model was chosen meanwhile
            return
        self.engine, self.mode = engine, mode
        self._status(escape(line))
        select = self.query_one("#model", Select)
        if label not in self.models:
            self._show_models(self.models)
        elif select.value != label:
            select.value = label

    def _status(self, markup: str) -> None:
        self.status_markup = markup
        for status in self.query("#chat-status").results(Static):
            status.update(markup)

    # -- conversations ------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="conversations")
    def list_conversations(self) -> None:
        rows = self.store.list()
        self.app.call_from_thread(self._show_list, rows)

    def _show_list(self, rows) -> None:
        options = self.query_one("#conversations", OptionList)
        options.clear_options()
        for row in rows:
            title = row["title"] if "error" not in row else f"⚠ {row['id']}"
            options.add_option(Option(escape(title[:40]), id=row["id"]))

    @on(OptionList.OptionSelected, "#conversations")
    def _open(self, event: OptionList.OptionSelected) -> None:
        if self.generating:
            self.notify(t("chat.busy"), severity="warning")
            return
        try:
            conversation = self.store.get(event.option.id)
        except ConversationError as exc:
            self.notify(str(exc), severity="error")
            return
        self._show_conversation(conversation)
        if conversation.get("model") and conversation["model"] != self.model_id and conversation["model"] in self.models:
            self.query_one("#model", Select).value = conversation["model"]

    def _show_conversation(self, conversation) -> None:
        self.conversation = conversation
        self.query_one("#system", Input).value = conversation.get("system") or ""
        box = self.query_one("#messages", VerticalScroll)
        box.remove_children()
        for message in conversation.get("messages", []):
            box.mount(_bubble(message["role"], message_text(message)))
        box.scroll_end(animate=False)

    def action_new_chat(self) -> None:
        if self.generating:
            self.notify(t("chat.busy"), severity="warning")
            return
        self._show_conversation({"messages": [], "system": self.query_one("#system", Input).value or None})
        self.query_one("#prompt").focus()

    # -- a turn -------------------------------------------------------------------------------------
    @on(Input.Submitted, "#prompt")
    def send(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self.generating:
            self.notify(t("chat.busy"), severity="warning")
            return
        if self.engine is None:
            self.notify(t("chat.no_models") if not self.models else t("chat.loading", model=self.model_id or "?"),
                        severity="warning")
            return
        raw = self.query_one("#temperature", Input).value.strip()
        try:
            temperature = float(raw)
            if not 0 <= temperature <= 2:
                raise ValueError
        except ValueError:
            self.notify(t("chat.bad_temperature", value=raw), severity="error")
            return
        event.input.value = ""
        system = self.query_one("#system", Input).value.strip() or None
        self.conversation = {**self.conversation, "system": system, "model": self.model_id,
                             "messages": [*self.conversation.get("messages", []), {"role": "user", "content": text}]}
        box = self.query_one("#messages", VerticalScroll)
        box.mount(_bubble("user", text))
        reply = _bubble("assistant", "▍")
        box.mount(reply)
        box.scroll_end(animate=False)
        self.stop.clear()
        self.generating = True
        self.generate(self.conversation, temperature, reply)

    @work(thread=True, group="generate")
    def generate(self, conversation, temperature, reply) -> None:
        messages = ([{"role": "system", "content": conversation["system"]}] if conversation.get("system") else [])
        messages += [{"role": m["role"], "content": m["content"]} for m in conversation["messages"]]
        text, shown_at, tokens, started = "", 0.0, 0, time.monotonic()
        note = None
        try:
            if self.mode == "base":
                ids = self.engine.tokenizer.encode(message_text(messages[-1]), prepend="<|bos|>")
                stream = self.engine.stream(ids, max_tokens=MAX_TOKENS, temperature=temperature)
            else:
                stream = self.engine.chat(messages, max_tokens=MAX_TOKENS, temperature=temperature)
            try:
                for delta in stream:
                    text += delta
                    tokens += 1
                    if self.stop.is_set():
                        note = t("chat.stopped")
                        break
                    if time.monotonic() - shown_at > UPDATE_SECONDS:
                        shown_at = time.monotonic()
                        self.app.call_from_thread(reply.update, _markup("assistant", text + "▍"))
            finally:
                stream.close()  # stops the engine when we left early
        except (ValueError, NanochatError) as exc:  # ContextFull is a ValueError
            note = str(exc)
        except Exception as exc:  # noqa: BLE001  (a failing model must not take the dashboard down)
            note = f"{type(exc).__name__}: {exc}"
        rate = tokens / max(time.monotonic() - started, 1e-6)
        self.app.call_from_thread(self._finish, conversation, text, note, reply, tokens, rate)

    def _finish(self, conversation, text, note, reply, tokens, rate) -> None:
        self.generating = False
        shown = text + (f"\n[{note}]" if note else "")
        reply.update(_markup("assistant", shown))
        self._status(escape(t("chat.speed", tokens=tokens, rate=rate)) + (f"  [dim]{escape(self.model_id or '')}[/]"))
        if text:
            meta = {"tokens": tokens, "tok_per_s": round(rate, 1)} | ({"finish_reason": "stopped"} if note else {})
            conversation = {**conversation, "messages": [*conversation["messages"],
                                                         {"role": "assistant", "content": text, "meta": meta}]}
        try:
            self.conversation = self.store.save(conversation)
        except ConversationError as exc:
            self.conversation = conversation
            self.notify(str(exc), severity="error")
        self.replies += 1
        self.list_conversations()

    def action_stop_reply(self) -> None:
        """Esc: stop the reply being written; with none, leave the message box (so 1-4 and q work again)."""
        if self.generating:
            self.stop.set()
        else:
            self.query_one("#messages").focus()


def _markup(role: str, text: str) -> str:
    who = t("chat.you").strip() if role == "user" else t("chat.assistant").strip()
    return f"[b {'cyan' if role == 'user' else 'green'}]{escape(who)}[/] {escape(text)}"


def _bubble(role: str, text: str) -> Static:
    return Static(_markup(role, text), classes=f"message {role}")
