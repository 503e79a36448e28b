"""Starting the real `nanochat serve` in a subprocess for the web tests, and talking to it over loopback."""
import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from nanochat import checkpoint
from nanochat.engine import Engine
from nanochat.tokenizer import Tokenizer

NANOCHAT = str(Path(sys.executable).parent / "nanochat")


def server_env(home, **extra):
    # one torch thread: the test machine is small and shared, and several servers may run at once
    return {**os.environ, "NANOCHAT_HOME": str(home), "NANOCHAT_DTYPE": "fp32", "OMP_NUM_THREADS": "1",
            "PYTHONIOENCODING": "utf-8", "NANOCHAT_LANG": "en", **extra}


class Server:
    """`nanochat serve --port 0 ...` until stop(); .url is its address, .lines what it printed."""

    def __init__(self, home, *args, env=None, timeout=120, wait=True):
        self.proc = subprocess.Popen([NANOCHAT, "serve", "--port", "0", "--device", "cpu", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=server_env(home, **(env or {})))
        self.lines, self._lines = [], queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = None
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout=120):
        """Until it prints its address (servers started with wait=False start side by side)."""
        deadline = time.monotonic() + timeout
        while self.url is None:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise AssertionError("nanochat serve did not start:\n" + "".join(self.lines)) from None
            if line is None:
                raise AssertionError(f"nanochat serve exited ({self.proc.wait()}):\n" + "".join(self.lines))
            if "serving the chat page at " in line:
                self.url = line.split(" at ")[1].split()[0].rstrip("/")
        self.host, self.port = self.url.removeprefix("http://").rsplit(":", 1)
        self.port = int(self.port)
        return self

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def request(self, method, path, body=None, headers=None, timeout=120):
        """(status, headers, body bytes). `body`: bytes as they are, anything else as JSON."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            if body is not None and not isinstance(body, bytes):
                body = json.dumps(body).encode()
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def json(self, method, path, body=None, headers=None):
        status, _, data = self.request(method, path, body, headers)
        return status, json.loads(data)

    def stats(self):
        return self.json("GET", "/api/stats")[1]

    def stop(self):
        """Ctrl-C, as a person stops it (terminate on Windows); killed if it does not stop. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if os.name != "nt" else signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)  # every line it printed is in .lines
        return self.proc.returncode


def sse_events(raw: bytes):
    """The JSON objects of a text/event-stream body, and whether it ended with [DONE]."""
    events, done = [], False
    for frame in raw.decode("utf-8").split("\n\n"):
        if not frame.strip():
            continue
        assert frame.startswith("data: "), frame
        data = frame[len("data: "):]
        if data == "[DONE]":
            done = True
        else:
            assert not done, "a frame after [DONE]"
            events.append(json.loads(data))
    return events, done


def load_engine(run, stage):
    model, _ = checkpoint.load_model(run.checkpoint_dir(stage), "cpu", torch.float32)
    return Engine(model, Tokenizer.load(run.checkpoint_dir("tokenizer")))


def expected_reply(engine, messages, *, max_tokens, temperature, top_k=50, seed=0):
    """What the server must answer: (text as streamed, tokens generated, finish_reason, prompt tokens, message)."""
    prompt = engine.chat_prompt(messages)
    tokens, stopped = 0, False
    for column, _ in engine.generate(prompt, max_tokens=max_tokens, temperature=temperature, top_k=top_k or None,
                                     seed=seed):
        if column[0] in engine.stops:
            stopped = True
            break
        tokens += 1
    stream, deltas = engine.chat(messages, max_tokens=max_tokens, temperature=temperature, top_k=top_k or None,
                                 seed=seed), []
    try:
        while True:
            deltas.append(next(stream))
    except StopIteration as stop:
        message = stop.value
    return "".join(deltas), tokens, "stop" if stopped else "length", len(prompt), message
