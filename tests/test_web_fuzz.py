"""Hostile input against the real `nanochat serve`: at least 500 malformed or hostile requests (types, sizes,
encodings, roles, special-token strings, huge numbers, odd methods and paths). None may get a 5xx, each 4xx
is OpenAI's error JSON, and the server keeps serving afterwards."""
import http.client
import json
import random

import pytest

from webhome import make_home
from webserver import Server

SPECIAL = ["<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>",
           "<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>", "<|endoftext|>"]
TEXTS = ["hi", "你好，世界", "🙂" * 50, "\u202eevil\u202c", "\x00\x01\x1f", "a\u200bb", "x" * 8000, "y" * 8001, " ",
         "", "\r\n\t", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "<script>alert(1)</script>", "%s%n%x", "' OR 1=1 --", "\\u0000"]
VALUES = [None, True, False, 0, -1, 1, 2, 3.5, -0.0, 1e308, -1e308, 1e-300, 5e-324, 10 ** 30, -(10 ** 30), 2 ** 63,
          2 ** 64,
          "", "x", "1", "true", [], [1], {}, {"a": 1}, [[[]]], "x" * 5000]


def hostile_text(rng):
    kind = rng.randrange(4)
    if kind == 0:
        return rng.choice(TEXTS)
    if kind == 1:
        return "".join(rng.choice(SPECIAL + ["1+1", " ", "x"]) for _ in range(rng.randrange(1, 8)))
    if kind == 2:
        return "".join(chr(rng.randrange(1, 0x10FFFF)) for _ in range(rng.randrange(1, 40))
                       ).encode("utf-8", "ignore").decode("utf-8", "ignore") or "z"
    return rng.choice(TEXTS) + rng.choice(SPECIAL)


def hostile_message(rng):
    message = {"role": rng.choice(["user", "assistant", "system", "tool", "function", "developer", "USER", "",
                                   None, 3, ["user"]]),
               "content": hostile_text(rng)}
    roll = rng.random()
    if roll < 0.15:
        message["content"] = rng.choice(VALUES)
    elif roll < 0.3:
        message["content"] = [rng.choice([{"type": "text", "text": hostile_text(rng)},
                                          {"type": rng.choice(["python", "python_output", "image_url", "x", None]),
                                           "text": hostile_text(rng)},
                                          {"type": "text", "text": rng.choice(VALUES)}, rng.choice(VALUES)])
                              for _ in range(rng.randrange(0, 4))]
    elif roll < 0.35:
        del message[rng.choice(["role", "content"])]
    elif roll < 0.4:
        message["extra"] = rng.choice(VALUES)
    return message


def hostile_conversation(rng):
    """Roles in a valid order (system?, user, assistant, ..., user) with hostile contents and part lists."""
    messages = [{"role": "system", "content": hostile_text(rng)}] if rng.random() < 0.3 else []
    for turn in range(rng.randrange(1, 6) * 2 - 1):
        role = "user" if turn % 2 == 0 else "assistant"
        content = hostile_text(rng)
        if role == "assistant" and rng.random() < 0.6:
            content = [{"type": rng.choice(["text", "python", "python_output"]), "text": hostile_text(rng)}
                       for _ in range(rng.randrange(1, 5))]
        messages.append({"role": role, "content": content})
    return messages


def hostile_body(rng):
    """A request body as bytes: mostly a plausible request with one or more fields made hostile."""
    body = {"model": "tiny/sft", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2,
            "temperature": 0}
    for _ in range(rng.randrange(1, 4)):
        field = rng.choice(["model", "messages", "messages", "messages", "max_tokens", "temperature", "top_k",
                            "top_p", "stream", "stream_options", "seed", "n", "stop", "max_completion_tokens",
                            "tools", "logprobs", "whole"])
        if field == "messages":
            count = rng.choice([0, 1, 2, 3, 5, 501])
            roll = rng.random()
            body["messages"] = hostile_conversation(rng) if roll < 0.4 else \
                [hostile_message(rng) for _ in range(count)] if roll < 0.85 else rng.choice(VALUES)
        elif field == "model":
            body["model"] = rng.choice(VALUES + ["tiny/mid", "tiny/base", "../../etc/passwd", "tiny/", "/sft",
                                                 "x" * 300])
        elif field in ("max_tokens", "max_completion_tokens"):
            body[field] = rng.choice([v for v in VALUES if not (isinstance(v, int) and 1 <= v <= 4096)] +
                                     [4097, 0, 3, "2", 1.5])
        elif field == "stream_options":
            body["stream"] = True
            body["stream_options"] = rng.choice(VALUES + [{"include_usage": True}, {"include_usage": "yes"}])
        elif field == "whole":
            return json.dumps(rng.choice(VALUES)).encode()
        else:
            body[field] = rng.choice(VALUES)
    text = json.dumps(body, ensure_ascii=rng.random() < 0.5)
    roll = rng.random()
    if roll < 0.05:
        text = text.replace('"hello"', '"\\ud800 lone"')
    elif roll < 0.08:
        text = text.replace("2", "9" * 5000, 1)  # an integer past Python's 4,300-digit parsing limit
    elif roll < 0.1:
        text = text.replace("0", "1e400", 1)
    raw = text.encode("utf-8")
    roll = rng.random()
    if roll < 0.04:
        raw = text.encode("utf-16")
    elif roll < 0.07:
        raw = b"\xef\xbb\xbf" + raw  # a byte-order mark
    elif roll < 0.1:
        raw = raw[: rng.randrange(len(raw))]  # cut short
    elif roll < 0.13:
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    elif roll < 0.15:
        raw = raw.replace(b"hello", b"hel\xc3lo")  # a broken UTF-8 sequence
    return raw


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run = make_home(tmp_path_factory.mktemp("home"))
    server = Server(run.dir.parent.parent)
    yield server
    server.stop()


class Client:
    """One keep-alive connection, reopened whenever the server closes it."""

    def __init__(self, server):
        self.server, self.conn = server, None

    def send(self, method, path, body=None, headers=None):
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=60)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                response = self.conn.getresponse()
                data = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return response.status, response.getheader("Content-Type", ""), data
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise


def check(status, content_type, data, what):
    assert status < 500, f"{what!r:.300} -> {status} {data[:300]!r}"
    if status >= 400 and content_type.startswith("application/json"):
        error = json.loads(data)["error"]
        assert error["message"] and error["type"], data[:300]


def test_hostile_requests_never_get_a_5xx(server):
    rng = random.Random(20261202)
    client = Client(server)
    sent, statuses = 0, {}
    for _ in range(560):
        body = hostile_body(rng)
        headers = {"Content-Type": rng.choice(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                               "multipart/form-data; boundary=x"])}
        status, content_type, data = client.send("POST", "/v1/chat/completions", body, headers)
        check(status, content_type, data, body)
        if status == 200 and content_type.startswith("text/event-stream"):
            assert data.rstrip().endswith(b"data: [DONE]"), data[-300:]
        elif status == 200:
            assert json.loads(data)["object"] == "chat.completion"
        statuses[status] = statuses.get(status, 0) + 1
        sent += 1
    # methods, paths and headers
    for method, path in [("GET", "/v1/chat/completions"), ("PUT", "/v1/chat/completions"), ("DELETE", "/v1/models"),
                         ("POST", "/v1/models"), ("GET", "/v1/models/%00"), ("GET", "/v1/models/" + "x" * 5000),
                         ("GET", "/v1/../../etc/passwd"), ("GET", "/api/%ff%fe"), ("POST", "/api/health"),
                         ("GET", "/v1/models/tiny%2Fsft"), ("OPTIONS", "/v1/chat/completions"),
                         ("GET", "/v1"), ("GET", "/api"), ("PATCH", "/api/stats")]:
        status, content_type, data = client.send(method, path)
        check(status, content_type, data, (method, path))
        sent += 1
    for headers in [{"Authorization": "Bearer " + "x" * 3000}, {"X-API-Key": "\u00ff"}, {"Content-Length": "5"},
                    {"Content-Type": "application/json; charset=latin-1"}]:
        fresh = Client(server)  # a body longer than its Content-Length leaves garbage on the connection
        status, content_type, data = fresh.send("POST", "/v1/chat/completions", b'{"messages": []}', headers)
        check(status, content_type, data, headers)
        sent += 1
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", body=iter([b'{"messages": [{"role": "user", ', b"x" * 2_000_000]),
                 encode_chunked=True)  # chunked, past 1 MB, no Content-Length
    response = conn.getresponse()
    check(response.status, response.getheader("Content-Type"), response.read(), "chunked")
    assert response.status in (400, 413)
    conn.close()
    sent += 1
    assert sent >= 500
    assert statuses.get(400, 0) > 300 and statuses.get(200, 0) > 5, statuses  # both kinds were exercised
    # still serving, and nothing a client sent made a worker fail
    status, _, data = client.send("POST", "/v1/chat/completions",
                                  json.dumps({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}))
    assert status == 200 and json.loads(data)["usage"]["completion_tokens"] <= 3
    stats = json.loads(client.send("GET", "/api/stats")[2])
    assert stats["requests"]["failed"] == 0 and stats["workers"]["busy"] == 0
