"""Engine workers for `nanochat serve`: N threads that generate replies, fed by one bounded queue.

    pool = WorkerPool(catalog, workers=1, queue_size=32, max_models=2, device="auto")
    pool.start()                      # each worker loads the default model (a damaged one fails here)
    job = pool.submit(Job(model, messages, max_tokens=64, ...))   # QueueFull when the queue is full
    for kind, value in job.events():  # ("delta", text) ... then ("done", Result) or ("error", exc)
    job.cancel()                      # the client went away: the worker stops at the next token

Each worker owns its model replicas (one device each: GPU i % count, or the CPU) and uses them from its
own thread only, so no locks guard the engines. torch releases the GIL inside its ops, so request threads
relay tokens while a worker computes. A worker keeps at most `max_models` models loaded and unloads the
least recently used one past that.
"""
import collections
import queue
import threading
import time
import traceback
from dataclasses import dataclass

from nanochat.engine import Engine
from nanochat.errors import NanochatError


class QueueFull(NanochatError):
    """Every worker is busy and the queue is full: the client should retry later."""


@dataclass
class Result:
    """What a finished generation produced, and how fast."""
    message: dict        # the assistant message as the engine returns it
    finish_reason: str   # "stop" (a stop token) or "length" (max_tokens or the model's context)
    prompt_tokens: int
    tokens: int          # tokens generated, the stop token not counted
    ttft_s: float        # from the request's arrival to the first text
    tok_per_s: float     # generated tokens / seconds from the start of generation to its end
    model: str
    step: int | None


class Job:
    """One reply to generate: the request thread reads its events, the worker writes them."""

    def __init__(self, model, messages, *, max_tokens, temperature, top_k, top_p=None, seed=None, stop=()):
        self.model, self.messages, self.stop = model, messages, tuple(stop)
        self.sampling = dict(max_tokens=max_tokens, temperature=temperature, top_k=top_k or None, top_p=top_p,
                             seed=seed)
        self.arrived = time.monotonic()
        self.cancelled = threading.Event()
        self._events = queue.SimpleQueue()
        # written by the worker's engine as it generates (see CountingEngine)
        self.prompt_tokens = self.tokens = 0
        self.stopped = False

    def cancel(self):
        self.cancelled.set()

    def put(self, kind, value):
        self._events.put((kind, value))

    def next_event(self, timeout):
        """The next (kind, value), or None when nothing came within `timeout` seconds."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None


class StopStrings:
    """Cuts a stream of text at the first of some strings: text that could be the start of one is held back
    until the next delta shows whether it is."""

    def __init__(self, stops):
        self.stops, self.held, self.text = stops, "", ""

    def push(self, delta):
        """(text to show now, whether a stop string was reached)."""
        text = self.held + delta
        found = [i for i in (text.find(stop) for stop in self.stops) if i >= 0]
        if found:
            self.held = ""
            return self._show(text[:min(found)]), True
        keep = max((k for stop in self.stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)
        self.held = text[len(text) - keep:]
        return self._show(text[:len(text) - keep]), False

    def flush(self):
        held, self.held = self.held, ""
        return self._show(held)

    def _show(self, text):
        self.text += text
        return text


class CountingEngine(Engine):
    """An Engine that counts the tokens it generates, notes a stop token and stops when its job is
    cancelled: finish_reason and usage come from what the stream did, token by token."""

    job = None

    def generate(self, tokens, **kw):
        job = self.job
        job.prompt_tokens = len(tokens)
        for column, masks in super().generate(tokens, **kw):
            if job.cancelled.is_set():
                return
            if column[0] in self.stops:
                job.stopped = True
            else:
                job.tokens += 1
            yield column, masks


class Worker(threading.Thread):
    def __init__(self, pool, index):
        super().__init__(name=f"nanochat-engine-{index}", daemon=True)
        self.pool, self.index = pool, index
        self.engines = collections.OrderedDict()  # model id -> CountingEngine, least recently used first
        self.loaded = ()
        self.busy = False
        self.ready = threading.Event()
        self.start_error = None

    def run(self):
        try:
            if self.pool.catalog.default is not None:
                self.engine_for(self.pool.catalog.default)
        except Exception as exc:  # reported by pool.start(): a damaged checkpoint, no tokenizer, ...
            self.start_error = exc
            self.ready.set()
            return
        self.ready.set()
        while True:
            job = self.pool.queue.get()
            if job is None:
                return
            if job.cancelled.is_set():  # the client left while it waited
                self.pool.count("cancelled")
                continue
            self.busy = True
            try:
                self.serve(job)
            except Exception as exc:  # reported to the client; the worker keeps serving
                if not isinstance(exc, (NanochatError, ValueError)):
                    traceback.print_exc()
                job.put("error", exc)
                self.pool.count("failed")
            finally:
                self.busy = False

    def engine_for(self, model):
        engine = self.engines.pop(model.id, None)
        if engine is None:
            while len(self.engines) >= self.pool.max_models:
                self.engines.popitem(last=False)  # the least recently used model goes
                self.pool.free_device_memory()
            plain, _, _, _ = model.load(self.pool.device, local_rank=self.index % self.pool.gpus)
            engine = CountingEngine(plain.model, plain.tokenizer)
            self.pool.count("models_loaded")
        self.engines[model.id] = engine
        self.loaded = tuple(self.engines)  # what /api/stats reads from other threads: never the live dict
        return engine

    def serve(self, job):
        engine = self.engine_for(job.model)
        engine.job = job
        stops = StopStrings(job.stop) if job.stop else None
        try:
            stream = engine.chat(job.messages, **job.sampling)
            started = first = None
            while True:
                started = started or time.monotonic()
                try:
                    delta = next(stream)
                except StopIteration as stop:
                    message = stop.value
                    if stops and stops.held:
                        job.put("delta", stops.flush())
                    break
                first = first or time.monotonic()
                reached = False
                if stops:
                    delta, reached = stops.push(delta)
                if delta:
                    job.put("delta", delta)
                if reached:  # the client's stop string: the reply ends before it
                    stream.close()
                    job.stopped = True
                    message = {"role": "assistant", "content": stops.text}
                    break
                if job.cancelled.is_set():
                    stream.close()
                    self.pool.count("cancelled", tokens=job.tokens)
                    return
        finally:
            engine.job = None
        ended = time.monotonic()
        if job.cancelled.is_set():
            self.pool.count("cancelled", tokens=job.tokens)
            return
        self.pool.count("served", tokens=job.tokens)
        job.put("done", Result(
            message=message, finish_reason="stop" if job.stopped else "length", prompt_tokens=job.prompt_tokens,
            tokens=job.tokens, ttft_s=round((first or ended) - job.arrived, 4),
            tok_per_s=round(job.tokens / max(ended - started, 1e-9), 2), model=job.model.id, step=job.model.step))


class WorkerPool:
    """N engine workers behind one bounded queue, and the counters /api/stats reports."""

    def __init__(self, catalog, *, workers=1, queue_size=32, max_models=2, device="auto"):
        if workers < 1 or queue_size < 1 or max_models < 1:
            raise ValueError(f"workers ({workers}), queue_size ({queue_size}) and max_models ({max_models}) "
                             "must each be at least 1")
        import torch
        self.catalog, self.device, self.max_models = catalog, device, max_models
        self.gpus = max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1  # worker i: GPU i % gpus
        self.queue = queue.Queue(maxsize=queue_size)
        self.queue_size = queue_size
        self.workers = [Worker(self, i) for i in range(workers)]
        self.counters = collections.Counter()
        self.lock = threading.Lock()
        self.started = False

    def start(self):
        """Start the workers and wait until each has loaded the default model; raise the first failure."""
        for worker in self.workers:
            worker.start()
        for worker in self.workers:
            worker.ready.wait()
        failed = next((w.start_error for w in self.workers if w.start_error), None)
        if failed:
            self.close()
            raise failed
        self.started = True

    def submit(self, job):
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            self.count("rejected")
            raise QueueFull(f"all {len(self.workers)} workers are busy and {self.queue_size} requests are "
                            "waiting; retry in a moment") from None
        return job

    def count(self, what, tokens=0):
        with self.lock:
            self.counters[what] += 1
            self.counters["tokens"] += tokens

    def free_device_memory(self):
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def stats(self):
        busy = sum(w.busy for w in self.workers)
        with self.lock:
            counters = dict(self.counters)
        return {
            "workers": {"total": len(self.workers), "busy": busy, "idle": len(self.workers) - busy},
            "queue": {"length": self.queue.qsize(), "limit": self.queue_size},
            "requests": {k: counters.get(k, 0) for k in ("served", "cancelled", "failed", "rejected")},
            "tokens_served": counters.get("tokens", 0),
            "models_loaded": counters.get("models_loaded", 0),
            "loaded": sorted({m for w in self.workers for m in w.loaded}),
        }

    def close(self):
        for worker in self.workers:
            if worker.is_alive():
                try:
                    self.queue.put_nowait(None)
                except queue.Full:
                    pass
