"""Reading a Chat Completions request: the JSON body, its fields and the limits, or a 400 naming the field.

Everything a client sends passes through here before it reaches a worker, so a wrong type, an unknown
role, a huge number, bad JSON or bad UTF-8 is answered with a 400 and never turns into a 5xx later.
Fields OpenAI defines that nanochat cannot honour (n > 1, tools, logprobs) are refused by name; fields it does not know are ignored, as OpenAI-compatible servers do.
"""
import json
import math
from dataclasses import dataclass

from nanochat.conversations import MAX_CONVERSATION_CHARS, MAX_MESSAGE_CHARS, MAX_MESSAGES
from nanochat.web.errors import ApiError

MAX_BODY_BYTES = 1 << 20
ROLES = ("system", "user", "assistant")
PART_TYPES = ("text", "python", "python_output")
TEMPERATURE = (0.0, 2.0, 0.6)   # min, max, default
TOP_K = (0, 200, 50)            # 0 = no limit
MAX_TOKENS = (1, 4096, 512)
MAX_SEED = (1 << 63) - 1
MAX_STOPS, MAX_STOP_CHARS = 4, 200


@dataclass
class ChatRequest:
    model: str | None
    messages: list       # in the engine's format: system first (optional), then user / assistant alternating
    stream: bool
    include_usage: bool
    temperature: float
    top_k: int
    top_p: float | None
    max_tokens: int
    seed: int | None
    stop: tuple          # strings that end the reply where they first appear (not included)


def bad(message, param):
    return ApiError(400, message, param=param)


def parse_json(raw: bytes):
    """The body as JSON: UTF-8 only, no NaN / Infinity, no nesting deep enough to exhaust the stack."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad(f"the request body is not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); "
                  "send JSON encoded as UTF-8", "body") from None
    if not text.strip():
        raise bad("the request body is empty; send a JSON object", "body")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise bad("the request body is nested too deeply", "body") from None
    except ValueError as exc:  # JSONDecodeError, NaN / Infinity, integers of more than 4,300 digits
        raise bad(f"the request body is not valid JSON: {exc}", "body") from None


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def chat_request(body) -> ChatRequest:
    """Check a /v1/chat/completions body; return what the worker needs."""
    if not isinstance(body, dict):
        raise bad(f"the request body must be a JSON object, got {_type(body)}", "body")
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not 0 < len(model) <= 200):
        raise bad(f"'model' must be a model id such as \"<run>/sft\" (see GET /v1/models), got {_show(model)}", "model")
    for name, allowed in (("n", (None, 1)), ("logprobs", (None, False)), ("tools", (None, [])),
                          ("functions", (None, []))):
        if body.get(name) not in allowed or isinstance(body.get(name), bool) and name == "n":
            raise bad(f"'{name}' = {_show(body.get(name))} is not supported by nanochat; leave it out", name)
    stream = _bool(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad(f"'stream_options' must be an object such as {{\"include_usage\": true}}, got {_type(options)}",
                  "stream_options")
    include_usage = _bool(options or {}, "include_usage", False, "stream_options.include_usage")
    max_key = "max_completion_tokens" if body.get("max_tokens") is None else "max_tokens"
    return ChatRequest(
        model=model, messages=_messages(body.get("messages")), stream=stream, include_usage=include_usage,
        temperature=_temperature(body),
        top_k=_integer(body, "top_k", *TOP_K),
        top_p=_top_p(body.get("top_p")),
        max_tokens=_integer(body, max_key, *MAX_TOKENS),
        seed=_seed(body.get("seed")),
        stop=_stop(body.get("stop")))


def _messages(messages):
    if not isinstance(messages, list):
        raise bad(f"'messages' must be a list of {{\"role\", \"content\"}} objects, got {_type(messages)}", "messages")
    if not 0 < len(messages) <= MAX_MESSAGES:
        raise bad(f"'messages' has {len(messages)} messages; send 1 to {MAX_MESSAGES}", "messages")
    out, total = [], 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad(f"{where} must be an object with 'role' and 'content', got {_type(message)}", where)
        role = message.get("role")
        if role == "developer":  # OpenAI's newer name for the system message
            role = "system"
        if role not in ROLES:
            raise bad(f"{where}.role is {_show(role)}; it must be one of {', '.join(ROLES)}", f"{where}.role")
        content, chars = _content(message.get("content"), role, where)
        if chars > MAX_MESSAGE_CHARS:
            raise bad(f"{where}.content has {chars:,} characters; at most {MAX_MESSAGE_CHARS:,}", f"{where}.content")
        total += chars
        if total > MAX_CONVERSATION_CHARS:
            raise bad(f"the messages have more than {MAX_CONVERSATION_CHARS:,} characters in all; send fewer or "
                      "shorter ones", "messages")
        if role == "system":
            if i != 0:
                raise bad(f"{where}: a system message may only come first", f"{where}.role")
        else:
            expected = "user" if (len(out) - (out[0]["role"] == "system" if out else 0)) % 2 == 0 else "assistant"
            if role != expected:
                raise bad(f"{where}.role is {role!r} but should be {expected!r}: after an optional system message, "
                          "user and assistant messages alternate, user first", f"{where}.role")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise bad("the last message must be the user's (the one to reply to), "
                  f"got {out[-1]['role']!r}", f"messages[{len(out) - 1}].role")
    return out


def _content(content, role, where):
    """(content in the engine's format, its length in characters)."""
    if isinstance(content, str):
        _check_text(content, f"{where}.content")
        if not content.strip() and role != "assistant":
            raise bad(f"{where}.content is empty", f"{where}.content")
        return (content or " "), len(content)  # an empty earlier reply (stopped at once) stays a turn
    if not isinstance(content, list) or not content:
        raise bad(f"{where}.content must be a string or a non-empty list of parts "
                  f"({{\"type\": \"text\", \"text\": ...}}), got {_show(content)}", f"{where}.content")
    parts = []
    for k, part in enumerate(content):
        at = f"{where}.content[{k}]"
        if not isinstance(part, dict):
            raise bad(f"{at} must be an object {{\"type\": \"text\", \"text\": ...}}, got {_type(part)}", at)
        kind, text = part.get("type"), part.get("text")
        allowed = PART_TYPES if role == "assistant" else ("text",)
        if kind not in allowed:
            raise bad(f"{at}.type is {_show(kind)}; a {role} message takes {' / '.join(allowed)} parts "
                      "(nanochat reads text only)", f"{at}.type")
        if not isinstance(text, str):
            raise bad(f"{at}.text must be a string, got {_type(text)}", f"{at}.text")
        _check_text(text, f"{at}.text")
        parts.append({"type": kind, "text": text})
    for k, part in enumerate(parts):  # a calculator call and its answer come as a pair
        after_call = k > 0 and parts[k - 1]["type"] == "python"
        if (part["type"] == "python_output") != after_call:
            what = "a python_output part must directly follow a python part" if part["type"] == "python_output" \
                else "a python part must be directly followed by its python_output part"
            raise bad(f"{where}.content[{k if part['type'] == 'python_output' else k - 1}]: {what}",
                      f"{where}.content")
    if parts and parts[-1]["type"] == "python":
        raise bad(f"{where}.content[{len(parts) - 1}]: a python part must be directly followed by its "
                  "python_output part", f"{where}.content")
    chars = sum(len(p["text"]) for p in parts)
    if role != "assistant":
        text = "".join(p["text"] for p in parts)
        if not text.strip():
            raise bad(f"{where}.content is empty", f"{where}.content")
        return text, chars
    if all(p["type"] == "text" for p in parts):
        return ("".join(p["text"] for p in parts) or " "), chars
    return parts, chars


def _check_text(text, param):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # "\ud800" in JSON decodes to a lone surrogate: not text
        raise bad(f"{param} holds an unpaired surrogate (\\u{ord(text[exc.start]):04x} at character "
                  f"{exc.start}); send valid Unicode", param) from None


def _bool(obj, name, default, param=None):
    value = obj.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad(f"'{param or name}' must be true or false, got {_show(value)}", param or name)
    return value


def _number(obj, name, low, high, default):
    value = obj.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise bad(f"'{name}' must be a number from {low:g} to {high:g}, got {_show(value)}", name)
    return float(value)


def _temperature(body):
    """Below a millionth sampling is greedy anyway, and logits divided by 1e-300 overflow to inf: use 0."""
    value = _number(body, "temperature", *TEMPERATURE)
    return 0.0 if value < 1e-6 else value


def _integer(obj, name, low, high, default):
    value = obj.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer() and low <= value <= high:
        value = int(value)  # 64.0 is 64
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad(f"'{name}' must be an integer from {low} to {high}, got {_show(value)}", name)
    return value


def _top_p(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise bad(f"'top_p' must be a number above 0 and at most 1, got {_show(value)}", "top_p")
    return None if value == 1 else float(value)


def _stop(value):
    """OpenAI's `stop`: a string or a list of up to MAX_STOPS non-empty strings."""
    if value is None or value == "" or value == []:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not 0 < len(stops) <= MAX_STOPS or \
            not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops):
        raise bad(f"'stop' must be a string or a list of 1 to {MAX_STOPS} strings of 1 to {MAX_STOP_CHARS} "
                  f"characters, got {_show(value)}", "stop")
    for stop in stops:
        _check_text(stop, "stop")
    return tuple(stops)


def _seed(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise bad(f"'seed' must be an integer from 0 to {MAX_SEED}, got {_show(value)}", "seed")
    return value


def _type(value):
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _show(value):
    """A value in an error message, cut short: never echo a megabyte back."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        text = _type(value)
    return text if len(text) <= 60 else text[:57] + "..."
