"""`nanochat serve`'s API end to end: the real command in a subprocess, hit over HTTP on 127.0.0.1, with the
official `openai` package as a client. Expected replies come from the engine in this process (same weights,
same seed), so the server must generate exactly them."""
import json
import socket
import subprocess
import sys
import threading
import time

import openai
import pytest

from webhome import make_home
from webserver import NANOCHAT, Server, expected_reply, load_engine, server_env, sse_events

HELLO = [{"role": "user", "content": "Hello there!"}]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_home(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def home(run):
    return run.dir.parent.parent


@pytest.fixture(scope="module")
def servers(home):
    """Three servers started side by side: the default one, one that is easy to fill (one worker, a queue of
    2) and one bound beyond loopback (its API key is generated) with two workers."""
    started = {"main": Server(home, wait=False),
               "small": Server(home, "--queue-size", "2", "--workers", "1", wait=False),
               "open": Server(home, "--host", "0.0.0.0", "--workers", "2", wait=False)}
    try:
        yield {name: server.wait_ready() for name, server in started.items()}
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def server(servers):
    return servers["main"]


@pytest.fixture(scope="module")
def small_server(servers):
    return servers["small"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The in-process engine decodes a tiny model: one thread is faster than two on a busy machine."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sft(run):
    return load_engine(run, "sft")


@pytest.fixture(scope="module")
def seeds(sft):
    """A seed whose sampled reply ends at the stop token, and one that runs into max_tokens (8)."""
    found = {}
    for seed in range(20):
        text, tokens, finish, _, _ = expected_reply(sft, HELLO, max_tokens=8, temperature=1.0, seed=seed)
        if finish == "stop" and tokens >= 2:
            found.setdefault("stop", seed)
        if finish == "length":
            found.setdefault("length", seed)
    assert set(found) == {"stop", "length"}, found
    return found


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused-on-loopback", max_retries=0, timeout=60)


def test_non_streamed_completion_with_the_openai_client(client, sft, seeds):
    for finish in ("stop", "length"):
        text, tokens, _, prompt, _ = expected_reply(sft, HELLO, max_tokens=8, temperature=1.0, seed=seeds[finish])
        reply = client.chat.completions.create(model="tiny/sft", messages=HELLO, max_tokens=8, temperature=1.0,
                                               seed=seeds[finish])
        choice = reply.choices[0]
        assert choice.message.role == "assistant" and choice.message.content == text
        assert choice.finish_reason == finish
        assert reply.model == "tiny/sft" and reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt, tokens)
        assert reply.usage.total_tokens == prompt + tokens
        extra = reply.model_extra["nanochat"]
        assert extra["tokens"] == tokens and extra["model"] == "tiny/sft" and extra["step"] == 10
        assert extra["message"]["role"] == "assistant" and extra["tok_per_s"] > 0 and extra["ttft_s"] >= 0


def test_streamed_completion_with_the_openai_client(client, sft, seeds):
    for finish in ("stop", "length"):
        text, tokens, _, prompt, _ = expected_reply(sft, HELLO, max_tokens=8, temperature=1.0, seed=seeds[finish])
        chunks = list(client.chat.completions.create(
            model="tiny/sft", messages=HELLO, max_tokens=8, temperature=1.0, seed=seeds[finish], stream=True,
            stream_options={"include_usage": True}))
        assert len({(c.id, c.created, c.model, c.object) for c in chunks}) == 1
        assert chunks[0].object == "chat.completion.chunk" and chunks[0].model == "tiny/sft"
        *body, last, usage = chunks
        assert all(c.choices[0].finish_reason is None for c in body)
        assert body[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in body) == text
        assert last.choices[0].finish_reason == finish and not last.choices[0].delta.content
        assert last.model_extra["nanochat"]["tokens"] == tokens
        assert usage.choices == [] and (usage.usage.prompt_tokens, usage.usage.completion_tokens) == (prompt, tokens)


def test_stream_frames_on_the_wire(server, sft, seeds):
    """The bytes as any SSE client sees them: data: frames, [DONE] last; no usage chunk unless asked."""
    body = {"messages": HELLO, "max_tokens": 8, "temperature": 1.0, "seed": seeds["stop"], "stream": True}
    status, headers, raw = server.request("POST", "/v1/chat/completions", body)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events, done = sse_events(raw)
    assert done and all(e["choices"] for e in events)
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    message = expected_reply(sft, HELLO, max_tokens=8, temperature=1.0, seed=seeds["stop"])[4]
    assert events[-1]["nanochat"]["message"] == message


def test_earlier_turns_with_parts_and_a_system_prompt(server, sft):
    """The page sends earlier assistant turns as the engine returned them: a string or a list of parts."""
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 12*7?"},
                {"role": "assistant", "content": [{"type": "text", "text": "Let me see. "},
                                                  {"type": "python", "text": "12*7"},
                                                  {"type": "python_output", "text": "84"}]},
                {"role": "user", "content": [{"type": "text", "text": "And "}, {"type": "text", "text": "6*7?"}]}]
    engine_messages = messages[:3] + [{"role": "user", "content": "And 6*7?"}]
    text, tokens, finish, prompt, _ = expected_reply(sft, engine_messages, max_tokens=12, temperature=0.0)
    status, reply = server.json("POST", "/v1/chat/completions", {"messages": messages, "max_tokens": 12,
                                                                  "temperature": 0})
    assert status == 200, reply
    assert reply["choices"][0]["message"]["content"] == text and reply["usage"]["prompt_tokens"] == prompt


def test_models_listing_and_selection(client, server, run):
    listed = {m.id: m for m in client.models.list()}
    assert set(listed) == {"tiny/sft", "tiny/mid", "tiny/base"}
    info = {k: m.model_extra["nanochat"] for k, m in listed.items()}
    assert info["tiny/sft"] == {"run": "tiny", "stage": "sft", "kind": "sft", "step": 10, "default": True}
    assert info["tiny/base"]["stage"] == "pretrain" and info["tiny/base"]["step"] == 5
    assert not info["tiny/mid"]["default"] and all(m.owned_by == "nanochat" for m in listed.values())
    assert client.models.retrieve("tiny/mid").id == "tiny/mid"
    # the model field selects; a third model past --max-models 2 unloads the least recently used one
    for model in ("tiny/mid", "tiny/base"):
        engine = load_engine(run, "mid" if model == "tiny/mid" else "pretrain")
        text = expected_reply(engine, HELLO, max_tokens=6, temperature=0.0)[0]
        reply = client.chat.completions.create(model=model, messages=HELLO, max_tokens=6, temperature=0)
        assert reply.choices[0].message.content == text and reply.model == model
    assert server.stats()["loaded"] == ["tiny/base", "tiny/mid"]


def test_errors_in_openai_shape(client, server):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny/sft", messages=HELLO, temperature=3)
    assert caught.value.status_code == 400 and "temperature" in caught.value.message
    assert caught.value.body["param"] == "temperature" and caught.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope/sft", messages=HELLO)
    assert "GET /v1/models" in caught.value.message
    status, body = server.json("GET", "/v1/nothing-here")
    assert status == 404 and set(body["error"]) == {"message", "type", "param", "code"}
    status, body = server.json("GET", "/v1/chat/completions")
    assert status == 405 and body["error"]["message"]


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "user", "content": "x"}] * 501}, "messages"),
    ({"messages": [{"role": "user", "content": "x" * 8001}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "x" * 8000}, {"role": "assistant", "content": "y" * 8000}] * 2
      + [{"role": "user", "content": "z"}]}, "messages"),
    ({"messages": HELLO, "temperature": 2.01}, "temperature"),
    ({"messages": HELLO, "temperature": "hot"}, "temperature"),
    ({"messages": HELLO, "top_k": 201}, "top_k"),
    ({"messages": HELLO, "top_k": 1.5}, "top_k"),
    ({"messages": HELLO, "max_tokens": 0}, "max_tokens"),
    ({"messages": HELLO, "max_tokens": 4097}, "max_tokens"),
    ({"messages": HELLO, "max_tokens": 10 ** 30}, "max_tokens"),
    ({"messages": HELLO, "stream": "yes"}, "stream"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "messages[1].role"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "messages[1].role"),
    ({"messages": [{"role": "user", "content": "\ud800"}]}, "messages[0].content"),
    ({"messages": HELLO, "n": 2}, "n"),
    ({"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": HELLO, "stop": [""]}, "stop"),
    ({"messages": HELLO, "stop": 7}, "stop"),
    ({"messages": [{"role": "user", "content": "a"},
                   {"role": "assistant", "content": [{"type": "python", "text": "1"}]},
                   {"role": "user", "content": "b"}]}, "messages[1].content"),
    ({"messages": [{"role": "user", "content": "a"},
                   {"role": "assistant", "content": [{"type": "python_output", "text": "1"}]},
                   {"role": "user", "content": "b"}]}, "messages[1].content"),
    ({"messages": HELLO, "model": 7}, "model"),
    ([1, 2], "body"),
])
def test_limits_and_validation_name_the_field(server, body, param):
    status, reply = server.json("POST", "/v1/chat/completions", body)
    assert status == 400, reply
    assert reply["error"]["param"] == param and reply["error"]["type"] == "invalid_request_error"


def test_bad_bytes_json_and_size(server):
    for raw, words in ((b'{"messages": [', "not valid JSON"), (b"\xff\xfe{}", "not valid UTF-8"),
                       (b'{"messages": NaN}', "NaN"), (b"[" * 100_000, "nested too deeply"), (b"", "empty")):
        status, _, data = server.request("POST", "/v1/chat/completions", raw)
        assert status == 400 and words in json.loads(data)["error"]["message"], data[:200]
    status, _, data = server.request("POST", "/v1/chat/completions", b" " * ((1 << 20) + 1))
    assert status == 413 and "at most 1,048,576" in json.loads(data)["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_stop_strings_end_the_reply_before_them(server, run, stream):
    engine = load_engine(run, "mid")  # greedy and never stops by itself
    text = expected_reply(engine, HELLO, max_tokens=40, temperature=0.0)[0]
    stop = text[12:15]
    body = {"model": "tiny/mid", "messages": HELLO, "max_tokens": 40, "temperature": 0, "stream": stream,
            "stop": ["never-in-this-text", stop]}
    status, _, raw = server.request("POST", "/v1/chat/completions", body)
    assert status == 200
    if stream:
        events, done = sse_events(raw)
        got = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
        last = events[-1]
    else:
        last = json.loads(raw)
        got = last["choices"][0]["message"]["content"]
    assert got == text[:text.find(stop)] and last["choices"][0]["finish_reason"] == "stop"
    assert last["nanochat"]["message"]["content"] == got


def test_a_vanishing_temperature_is_greedy(server, sft):
    text = expected_reply(sft, HELLO, max_tokens=6, temperature=0.0)[0]
    for temperature in (1e-300, 5e-324):  # logits / temperature would overflow to inf
        status, reply = server.json("POST", "/v1/chat/completions", {"messages": HELLO, "max_tokens": 6,
                                                                      "temperature": temperature})
        assert status == 200 and reply["choices"][0]["message"]["content"] == text


def test_a_conversation_longer_than_the_context(server):
    long = "今天天气很好。" * 1100  # under 8,000 characters, over the tiny model's 4,200-token context
    status, reply = server.json("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": long}]})
    assert status == 400 and reply["error"]["code"] == "context_length_exceeded"


def test_health_and_stats(server):
    status, health = server.json("GET", "/api/health")
    assert status == 200 and health == {"status": "ok", "auth_required": False, "default_model": "tiny/sft"}
    before = server.stats()
    status, reply = server.json("POST", "/v1/chat/completions", {"messages": HELLO, "max_tokens": 5,
                                                                  "model": "tiny/mid", "temperature": 0})
    after = server.stats()
    assert after["requests"]["served"] == before["requests"]["served"] + 1
    assert after["tokens_served"] == before["tokens_served"] + reply["usage"]["completion_tokens"] == \
        before["tokens_served"] + 5
    assert after["workers"] == {"total": 1, "busy": 0, "idle": 1} and after["queue"]["length"] == 0


def test_sixteen_concurrent_streams_complete(server, sft):
    expected = {seed: expected_reply(sft, HELLO, max_tokens=16, temperature=1.0, seed=seed) for seed in range(16)}
    results = {}

    def stream(seed):
        body = {"messages": HELLO, "max_tokens": 16, "temperature": 1.0, "seed": seed, "stream": True,
                "stream_options": {"include_usage": True}}
        results[seed] = server.request("POST", "/v1/chat/completions", body)

    threads = [threading.Thread(target=stream, args=(seed,)) for seed in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for seed, (status, _, raw) in results.items():
        assert status == 200
        events, done = sse_events(raw)
        text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
        assert done and text == expected[seed][0]
        assert events[-1]["usage"]["completion_tokens"] == expected[seed][1]
    assert len(results) == 16


LONG = {"model": "tiny/mid", "messages": HELLO, "temperature": 0}  # tiny/mid never stops by itself


def test_a_flood_beyond_the_queue_gets_503_not_a_hang(small_server):
    statuses, bodies = [], []

    def ask():
        status, headers, data = small_server.request("POST", "/v1/chat/completions", {**LONG, "max_tokens": 400},
                                                     timeout=120)
        statuses.append((status, headers.get("Retry-After")))
        bodies.append(json.loads(data))

    threads = [threading.Thread(target=ask) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(statuses) == 12  # every request was answered
    served = [s for s in statuses if s[0] == 200]
    busy = [s for s in statuses if s[0] == 503]
    assert len(served) + len(busy) == 12 and len(served) >= 3 and busy, statuses
    assert all(retry == "2" for _, retry in busy)
    assert any(b.get("error", {}).get("code") == "server_busy" for b in bodies)
    assert small_server.stats()["requests"]["rejected"] >= len(busy)


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_disconnects_frees_its_worker(small_server, stream):
    before = small_server.stats()
    if stream:
        sock = _start_stream(small_server, {**LONG, "max_tokens": 4000})
    else:
        sock = _send(small_server, {**LONG, "max_tokens": 4000})
        _wait(lambda: small_server.stats()["workers"]["busy"] == 1)
    sock.close()
    _wait(lambda: small_server.stats()["workers"]["busy"] == 0)
    after = small_server.stats()
    assert after["requests"]["cancelled"] == before["requests"]["cancelled"] + 1
    assert after["tokens_served"] - before["tokens_served"] < 4000  # stopped well before max_tokens
    started = time.monotonic()
    status, reply = small_server.json("POST", "/v1/chat/completions", {**LONG, "max_tokens": 3})
    assert status == 200 and reply["usage"]["completion_tokens"] == 3
    assert time.monotonic() - started < 30


def _send(server, body, headers=None):
    """A raw connection with one request sent: the test decides when the client goes away."""
    body = json.dumps(body).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()).encode()
    sock = socket.create_connection((server.host, server.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + extra +
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return sock


def _start_stream(server, body, headers=None):
    """A raw connection with a streamed reply under way (its first text received)."""
    sock = _send(server, {**body, "stream": True}, headers)
    received = b""
    while b'"content": "' not in received:
        data = sock.recv(4096)
        assert data, received
        received += data
    return sock


def _wait(condition, timeout=20):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_key_is_required_beyond_loopback(servers):
    server = servers["open"]
    printed = "".join(server.lines)
    assert "every API call needs the API key" in printed
    key = printed.split("Authorization: Bearer ")[1].split()[0]
    assert len(key) >= 24
    status, body = server.json("GET", "/v1/models")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert server.json("GET", "/v1/models", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert server.json("GET", "/api/stats")[0] == 401
    assert server.json("GET", "/v1/models", headers={"Authorization": f"Bearer {key}"})[0] == 200
    assert server.json("GET", "/v1/models", headers={"X-API-Key": key})[0] == 200
    assert server.json("GET", "/api/health") == (200, {"status": "ok", "auth_required": True,
                                                       "default_model": "tiny/sft"})
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    assert client.chat.completions.create(messages=HELLO, model="tiny/sft", max_tokens=2).choices
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0).models.list()


def test_two_workers_generate_at_once(servers):
    server = servers["open"]
    key = "".join(server.lines).split("Authorization: Bearer ")[1].split()[0]
    stats = lambda: server.json("GET", "/api/stats", headers={"X-API-Key": key})[1]  # noqa: E731
    sockets = [_start_stream(server, {**LONG, "max_tokens": 4000}, {"X-API-Key": key}) for _ in range(2)]
    _wait(lambda: stats()["workers"]["busy"] == 2)  # one replica each, side by side
    for sock in sockets:
        sock.close()
    _wait(lambda: stats()["workers"]["busy"] == 0)
    assert stats()["workers"]["total"] == 2 and stats()["requests"]["cancelled"] == 2


def test_a_checkpoint_outside_a_run(run, tmp_path):
    """--checkpoint PATH: inside a run it is that run's model; elsewhere "checkpoint/<folder>"."""
    import shutil
    from nanochat.web.catalog import from_checkpoint
    assert from_checkpoint(run.checkpoint_dir("sft") / "step_000010").id == "tiny/sft"
    loose = tmp_path / "step_000010"
    shutil.copytree(run.checkpoint_dir("sft") / "step_000010", loose)
    model = from_checkpoint(loose, tokenizer=str(run.checkpoint_dir("tokenizer")))
    assert (model.id, model.step, model.run) == ("checkpoint/step_000010", 10, None)
    engine, mode, loaded, _ = model.load("cpu")
    assert mode == "chat" and "step 10" in loaded


def serve(home, *args, timeout=120):
    result = subprocess.run([NANOCHAT, "serve", "--device", "cpu", *args], capture_output=True, text=True,
                            env=server_env(home), timeout=timeout)
    return result.returncode, result.stdout + result.stderr


def test_no_model_says_which_command_makes_one(tmp_path):
    code, out = serve(tmp_path / "empty")
    assert code == 2 and "no finished chat model" in out and "nanochat run --preset cpu-tiny" in out


def test_a_damaged_checkpoint_names_its_path(tmp_path, home):
    import shutil
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    for stage, step in (("sft", 10), ("mid", 7)):
        weights = copy / "runs" / "tiny" / "checkpoints" / stage / f"step_{step:06d}" / "model.pt"
        weights.write_bytes(weights.read_bytes()[:1000])
    code, out = serve(copy, "--port", "0")
    assert code == 2 and "is damaged" in out and "checkpoints/sft/step_000010" in out
    assert "nanochat run --name tiny --stage sft" in out and "Traceback" not in out
    # a damaged model that is not the default is found on first use; this server also takes its key from
    # the environment and opens the page with --open (webbrowser runs $BROWSER)
    opened = tmp_path / "opened.txt"
    browser = f"{sys.executable} -c \"import sys; open(sys.argv[1], 'w').write(sys.argv[2])\" {opened} %s"
    base = copy / "runs" / "tiny" / "checkpoints" / "pretrain" / "step_000005"
    server = Server(copy, "--checkpoint", str(base), "--open", env={"NANOCHAT_API_KEY": "s3cret", "BROWSER": browser})
    key = {"Authorization": "Bearer s3cret"}
    try:
        assert "Bearer s3cret" not in "".join(server.lines)  # a key you gave is not printed
        assert server.json("GET", "/v1/models")[0] == 401
        status, body = server.json("POST", "/v1/chat/completions", {"model": "tiny/mid", "messages": HELLO},
                                   headers=key)
        assert status == 503 and body["error"]["code"] == "model_unavailable"
        assert "checkpoints/mid/step_000007" in body["error"]["message"] and "damaged" in body["error"]["message"]
        status, body = server.json("POST", "/v1/chat/completions", {"messages": HELLO, "max_tokens": 2}, headers=key)
        assert status == 200 and body["model"] == "tiny/base"
        _wait(opened.exists)
        time.sleep(0.2)
        assert opened.read_text() == server.url + "/"
    finally:
        code = server.stop()
    assert code == 0 and "nanochat: stopped" in "".join(server.lines)  # Ctrl-C ends it cleanly


def test_an_address_this_machine_does_not_have(home):
    code, out = serve(home, "--host", "192.0.2.1", "--port", "8000")  # TEST-NET-1: never a local address
    assert code == 2 and "cannot listen on --host 192.0.2.1" in out and "Traceback" not in out


def test_a_port_in_use_suggests_the_next_free_one(home):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out = serve(home, "--port", str(port))
    assert code == 2 and f"port {port} on 127.0.0.1 is in use" in out and "try --port " in out
    suggested = int(out.split("try --port ")[1].split()[0])
    assert suggested > port
