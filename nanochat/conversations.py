"""Conversations on disk, one JSON file each: the web page, the dashboard and the CLI share them.

    <data>/conversations/<id>.json
    {"id": "20261202-181500-3f9a1c", "title": "Why is the sky blue?",
     "created": "<ISO time>", "updated": "<ISO time>",
     "model": "<run>/<kind>" or null,          # the model it was last talked to with
     "system": "<system prompt>" or null,
     "messages": [{"role": "user" | "assistant",
                   "content": "text" or [{"type": "text" | "python" | "python_output", "text": "..."}],
                   "meta": {...}}]}             # optional per message: tokens, tok_per_s, ttft_s, finish_reason...

Every write is atomic (tmp then rename), so a reader never sees half a file; the last writer wins.
A damaged file is listed with its error and never overwritten by accident.
"""
import json
import re
import secrets
import time
from pathlib import Path

from nanochat import paths
from nanochat.atomic import atomic_write_json
from nanochat.errors import NanochatError
from nanochat.runs import now

ROLES = ("user", "assistant")
PART_TYPES = ("text", "python", "python_output")
MAX_MESSAGES = 500
MAX_MESSAGE_CHARS = 8_000
MAX_CONVERSATION_CHARS = 32_000
MAX_TITLE_CHARS = 200
ID_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")


class ConversationError(NanochatError):
    """A conversation that is malformed, damaged or missing: the message names the field or file."""


class ConversationNotFound(ConversationError):
    pass


def conversations_dir() -> Path:
    return paths.data_dir() / "conversations"


def new_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def title_from(text: str, limit: int = 60) -> str:
    """A title from the first line of the first user message."""
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return (line[: limit - 1] + "…") if len(line) > limit else (line or "New conversation")


def message_text(message: dict) -> str:
    """A message's content as plain text (tool calls written inline)."""
    content = message.get("content", "")
    if isinstance(content, str):
        return content
    shown = {"text": "{}", "python": "`python: {}`", "python_output": " -> `{}`"}
    return "".join(shown[p["type"]].format(p["text"]) for p in content)


def _check_text(value: str, where: str) -> None:
    """A lone surrogate ("\\ud800" in JSON) is no text: it could never be written to a UTF-8 file."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConversationError(f"{where} holds an unpaired surrogate (character {exc.start}); "
                                "send valid Unicode text") from None


def validate(conv: dict) -> dict:
    """Check the shape and the limits; returns conv. Raises ConversationError naming the field."""
    if not isinstance(conv, dict):
        raise ConversationError(f"a conversation must be a JSON object, got {type(conv).__name__}")
    for key in ("title", "model", "system"):
        value = conv.get(key)
        if value is not None and not isinstance(value, str):
            raise ConversationError(f"'{key}' must be a string or null, got {type(value).__name__}")
        if value is not None:
            _check_text(value, f"'{key}'")
    if len(conv.get("title") or "") > MAX_TITLE_CHARS:
        raise ConversationError(f"'title' has {len(conv['title'])} characters; at most {MAX_TITLE_CHARS}")
    messages = conv.get("messages", [])
    if not isinstance(messages, list):
        raise ConversationError(f"'messages' must be a list, got {type(messages).__name__}")
    if len(messages) > MAX_MESSAGES:
        raise ConversationError(f"'messages' has {len(messages)} messages; at most {MAX_MESSAGES}")
    total = len(conv.get("system") or "")
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ConversationError(f"{where} must be an object, got {type(m).__name__}")
        if m.get("role") not in ROLES:
            raise ConversationError(f"{where}.role is {m.get('role')!r}; expected one of {', '.join(ROLES)}")
        content = m.get("content")
        if isinstance(content, list):
            for k, part in enumerate(content):
                if not (isinstance(part, dict) and part.get("type") in PART_TYPES and isinstance(part.get("text"), str)):
                    raise ConversationError(f"{where}.content[{k}] must be {{'type': one of {', '.join(PART_TYPES)}, "
                                            f"'text': string}}")
                _check_text(part["text"], f"{where}.content[{k}]")
        elif not isinstance(content, str):
            raise ConversationError(f"{where}.content must be a string or a list of parts, "
                                    f"got {type(content).__name__}")
        else:
            _check_text(content, f"{where}.content")
        size = len(message_text(m))
        if size > MAX_MESSAGE_CHARS:
            raise ConversationError(f"{where} has {size} characters; at most {MAX_MESSAGE_CHARS}")
        total += size
        if "meta" in m and not isinstance(m["meta"], dict):
            raise ConversationError(f"{where}.meta must be an object")
        if "meta" in m:
            _check_text(json.dumps(m["meta"], ensure_ascii=False), f"{where}.meta")
    if total > MAX_CONVERSATION_CHARS:
        raise ConversationError(f"the conversation has {total} characters; at most {MAX_CONVERSATION_CHARS}")
    return conv


def to_markdown(conv: dict) -> str:
    """The conversation as a Markdown document (for export)."""
    lines = [f"# {conv.get('title') or 'Conversation'}", ""]
    if conv.get("model"):
        lines += [f"Model: {conv['model']}", ""]
    if conv.get("system"):
        lines += ["## System", "", conv["system"], ""]
    for m in conv.get("messages", []):
        lines += [f"## {'User' if m['role'] == 'user' else 'Assistant'}", "", message_text(m), ""]
    return "\n".join(lines)


class ConversationStore:
    """The conversations in one folder (default: <data>/conversations)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else conversations_dir()

    def _path(self, cid: str) -> Path:
        if not isinstance(cid, str) or not ID_RE.match(cid):
            raise ConversationNotFound(f"no conversation {cid!r} (an id looks like 20261202-181500-3f9a1c)")
        return self.root / f"{cid}.json"

    def list(self) -> list[dict]:
        """Summaries, most recently updated first: id, title, created, updated, model, messages (a count);
        a damaged file appears as {"id", "error"}."""
        rows = []
        for path in self.root.glob("*.json") if self.root.is_dir() else []:
            if not ID_RE.match(path.stem):
                continue
            try:
                conv = self.get(path.stem)
            except ConversationError as exc:
                rows.append({"id": path.stem, "title": path.stem, "error": str(exc), "updated": ""})
                continue
            rows.append({"id": conv["id"], "title": conv.get("title") or "", "created": conv.get("created", ""),
                         "updated": conv.get("updated", ""), "model": conv.get("model"),
                         "messages": len(conv.get("messages", []))})
        return sorted(rows, key=lambda r: (r["updated"], r["id"]), reverse=True)

    def get(self, cid: str) -> dict:
        path = self._path(cid)
        try:
            conv = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConversationNotFound(f"no conversation {cid!r} in {self.root}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConversationError(f"{path} is damaged ({exc}); it was left as it is: delete or repair it") from None
        try:
            validate(conv)
        except ConversationError as exc:
            raise ConversationError(f"{path} is damaged: {exc}") from None
        conv["id"] = cid
        return conv

    def save(self, conv: dict) -> dict:
        """Write a conversation (new when it has no id); sets 'updated'. Returns what was written."""
        validate(conv)
        conv = {**conv}
        conv["id"] = conv.get("id") or new_id()
        self._path(conv["id"])  # refuses an id that is not ours (e.g. a path)
        stamp = now()
        conv.setdefault("created", stamp)
        conv["updated"] = stamp
        conv.setdefault("messages", [])
        if not conv.get("title"):
            first = next((m for m in conv["messages"] if m["role"] == "user"), None)
            conv["title"] = title_from(message_text(first)) if first else "New conversation"
        atomic_write_json(self._path(conv["id"]), conv)
        return conv

    def create(self, messages=(), title=None, model=None, system=None) -> dict:
        return self.save({"title": title, "model": model, "system": system, "messages": list(messages)})

    def rename(self, cid: str, title: str) -> dict:
        conv = self.get(cid)
        conv["title"] = title
        return self.save(conv)

    def delete(self, cid: str) -> None:
        path = self._path(cid)
        try:
            path.unlink()
        except FileNotFoundError:
            raise ConversationNotFound(f"no conversation {cid!r} in {self.root}") from None

    def import_json(self, data) -> dict:
        """A conversation from exported JSON (text or a parsed object); it gets a new id."""
        if isinstance(data, (str, bytes)):
            try:
                data = json.loads(data)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ConversationError(f"the file is not JSON ({exc})") from None
        validate(data)
        keep = {k: data.get(k) for k in ("title", "model", "system", "messages")}
        return self.save(keep)
