"""The conversation format: what a conversation is, the one rule set that checks it, and how tasks render one.

A conversation is `{"messages": [...], ...extra keys a task needs to score it}`; a message is
`{"role": "system" | "user" | "assistant", "content": str | [parts]}`; only assistant content may be a
list of parts `{"type": "text" | "python" | "python_output", "text": str}` (a calculator call and the
output the tool gave). `validate_conversation` below is the exact rule set; `load_jsonl_conversations`
reads a file of them (customjson, identity files, the starter chats); `render_mc` is the multiple-choice
prompt the chat tasks share. The tokenizer turns a valid conversation into tokens (tokenizer.py).
"""
from __future__ import annotations

from pathlib import Path

from nanochat.errors import NanochatError

ROLES = ("system", "user", "assistant")
PART_TYPES = ("text", "python", "python_output")


class TaskError(NanochatError):
    """A task was asked for something it cannot give (unknown split, index out of range, ...).

    The base of every task error; it lives here, in the lowest of the task modules, so that all of them share it.
    """


class ConversationError(TaskError):
    """A conversation breaks the format; the message names the example and the problem."""


def validate_conversation(conversation, *, where: str = "conversation", complete: bool = True) -> dict:
    """Check a conversation against the format and return it unchanged; raise ConversationError if not.

    Rules:
    - `conversation` is a dict with a non-empty list `messages`; other keys are free (task metadata).
    - Roles: an optional `system` message first, then `user` and `assistant` strictly alternating,
      starting with `user`. With `complete=True` (training data, task examples) the last message is from
      the assistant; with `complete=False` (a prompt, a partial reply) it may be either.
    - `system` and `user` content is a string with some non-space text.
    - `assistant` content is such a string, or a non-empty list of parts `{"type", "text"}` with type
      `text`, `python` (a tool call: the code) or `python_output` (what the tool returned).
      A `text` part is not "" (whitespace is fine: a newline between two calls), a `python` part has
      some non-space code, a `python_output` may be "" (the tool printed nothing), and the message as a
      whole has some non-space text or code besides tool output.
    - Tool calls close: a `python_output` comes right after a `python` part, and every `python` part is
      followed right away by its `python_output`. The one exception, with `complete=False` only, is a
      call that is the very last part of the conversation: the model has asked and the tool has not
      answered yet. Anything else (a call left open before more text, two calls in a row, an output
      nobody asked for) is a tool call that never closes, and is rejected.
    """
    def fail(problem):
        raise ConversationError(f"{where}: {problem}")

    if not isinstance(conversation, dict):
        fail(f"a conversation is a dict with a 'messages' list, got {type(conversation).__name__}")
    messages = conversation.get("messages")
    if not isinstance(messages, list) or not messages:
        fail("'messages' must be a non-empty list of {'role', 'content'} dicts"
             + ("" if "messages" in conversation else f"; keys present: {sorted(conversation)}"))
    first_turn = 1 if isinstance(messages[0], dict) and messages[0].get("role") == "system" else 0
    if len(messages) == first_turn:
        fail("it has a system message and nothing else; it needs at least one user message")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            fail(f"message {i} must be a dict with 'role' and 'content', got {shorten(message)}")
        role = message["role"]
        if role not in ROLES:
            fail(f"message {i} has unknown role {role!r}; roles are {', '.join(ROLES)}")
        if i >= first_turn:
            expected = "user" if (i - first_turn) % 2 == 0 else "assistant"
            if role != expected:
                hint = " (a system message may only come first)" if role == "system" else \
                    " (user and assistant take turns, starting with the user)"
                fail(f"message {i} has role {role!r} but {expected!r} was expected{hint}")
        last_message = i == len(messages) - 1
        _check_content(message["content"], role, i, fail, open_call_ok=last_message and not complete)
    if complete and messages[-1]["role"] != "assistant":
        fail(f"the last message is from the {messages[-1]['role']}; a complete conversation ends with the "
             "assistant's reply")
    return conversation


def _check_content(content, role, i, fail, open_call_ok):
    if isinstance(content, str):
        if not content.strip():
            fail(f"message {i} ({role}) has empty content")
        return
    if role != "assistant" or not isinstance(content, list):
        allowed = "a string or a list of parts" if role == "assistant" else "a string"
        fail(f"message {i} ({role}) content must be {allowed}, got {type(content).__name__}")
    if not content:
        fail(f"message {i} ({role}) has empty content (an empty list of parts)")
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            fail(f"message {i} part {j} must be a dict {{'type', 'text': str}}, got {shorten(part)}")
        kind = part.get("type")
        if kind not in PART_TYPES:
            fail(f"message {i} part {j} has unknown type {kind!r}; part types are {', '.join(PART_TYPES)}")
        if (kind == "text" and not part["text"]) or (kind == "python" and not part["text"].strip()):
            fail(f"message {i} part {j} ({kind}) is empty")
        previous = content[j - 1]["type"] if j else None
        following = content[j + 1].get("type") if j + 1 < len(content) and isinstance(content[j + 1], dict) else None
        if kind == "python_output" and previous != "python":
            fail(f"message {i} part {j} is a python_output that follows no python call")
        if kind == "python" and following != "python_output":
            if following is None and open_call_ok:
                continue
            fail(f"message {i} part {j} is a python call that never closes: it must be followed right away by "
                 f"its python_output part (got {following or 'the end of the message'})")
    if not any(part["text"].strip() for part in content if part["type"] != "python_output"):
        fail(f"message {i} ({role}) has empty content (no text or tool call besides tool output)")


def shorten(value, limit=80) -> str:
    """repr(value), cut to `limit` characters: enough of a bad value to recognise it in an error."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def assistant_text(message_content) -> str:
    """An assistant message's content as plain text (parts joined), e.g. to find its `####` answer."""
    if isinstance(message_content, str):
        return message_content
    return "".join(part["text"] for part in message_content)



def load_jsonl_conversations(path, *, where: str | None = None) -> list[dict]:
    """Read and validate a JSONL file of conversations; errors name the file and line.

    Each non-blank line is either `{"messages": [...], ...}` or a bare list of messages
    (`[{"role": "user", ...}, ...]`, the form nanochat's identity files have always used).
    """
    path = Path(path).expanduser()
    where = where or str(path)
    if not path.is_file():
        raise TaskError(f"{where}: no such file ({path.resolve()}); give the path of a JSONL file with one "
                        "conversation per line")
    from nanochat.textfiles import iter_jsonl
    conversations = []
    fix = 'each line must be one conversation: {"messages": [{"role": "user", "content": "..."}, ...]}'
    for number, item in iter_jsonl(path, fix=fix, error=ConversationError, where=where):
        if isinstance(item, list):
            item = {"messages": item}
        conversations.append(validate_conversation(item, where=f"{where} line {number}"))
    if not conversations:
        raise TaskError(f"{where}: the file has no conversations")
    return conversations


def render_mc(question: str, letters, choices) -> str:
    """The multiple-choice prompt: each choice followed by `=` and its letter, then the instruction.

    The letter comes after the choice (small models bind it better) and directly after `=` with no
    space, so the prompt's letter token is the same token as the bare answer the assistant gives.
    """
    letters, choices = list(letters), list(choices)
    if len(letters) != len(choices):
        raise ValueError(f"render_mc got {len(letters)} letters {letters} for {len(choices)} choices")
    lines = "".join(f"- {choice}={letter}\n" for letter, choice in zip(letters, choices))
    return f"Multiple Choice question: {question}\n{lines}\nRespond only with the letter of the correct answer."
