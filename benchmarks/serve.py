"""`nanochat serve` under load: 1, 4 and 16 concurrent streaming clients, beside the engine's own rate.

    python benchmarks/serve.py                                  # a tiny model made for the run, its own server
    python benchmarks/serve.py --run myrun --stage sft          # your model, on a server this script starts
    python benchmarks/serve.py --url http://127.0.0.1:8000 --run myrun --stage sft   # a server you started

Each client sends streaming requests one after another (greedy, --tokens new tokens, usage included) and
records the time to the first text and the tokens it got. Per concurrency level: tokens/s served (all
tokens / wall time) and the p50 / p95 time to first token. The engine's own rate is the same reply
generated in this process with Engine.chat on the same checkpoint, measured between the server rounds;
the server's overhead at one client is 1 - served rate / engine rate. A shared machine's speed moves,
so the 1-client figures are medians of interleaved engine and server rounds. The tiny model's stop tokens
are switched off (tests/webhome.py, model tiny/mid), so every reply has exactly --tokens tokens.
The last line is one JSON document.
"""
import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # webhome (the tiny model) and webserver (starting the server)

PROMPT = [{"role": "user", "content": "Tell me a story about the sea."}]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def stream_once(host, port, model, tokens, headers):
    """(seconds to the first text, tokens received, seconds in all, the worker's own tok/s) for one streamed
    reply."""
    body = json.dumps({"model": model, "messages": PROMPT, "max_tokens": tokens, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}})
    conn = http.client.HTTPConnection(host, port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json", **headers})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read()[:300]!r}")
    first, got, buffer, worker_rate = None, 0, b"", 0.0
    while chunk := response.read1(65536):
        buffer += chunk
        while b"\n\n" in buffer:
            frame, buffer = buffer.split(b"\n\n", 1)
            data = frame.removeprefix(b"data: ")
            if data == b"[DONE]":
                continue
            event = json.loads(data)
            if first is None and event["choices"] and event["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
            if event.get("usage"):
                got = event["usage"]["completion_tokens"]
            if event.get("nanochat"):
                worker_rate = event["nanochat"]["tok_per_s"]
    conn.close()
    total = time.perf_counter() - start
    return (first if first is not None else total), got, total, worker_rate


def server_round(host, port, model, clients, requests_each, tokens, headers):
    results, lock = [], threading.Lock()

    def client():
        for _ in range(requests_each):
            out = stream_once(host, port, model, tokens, headers)
            with lock:
                results.append(out)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    ttft = sorted(r[0] for r in results)
    return {"clients": clients, "requests": len(results), "tokens": sum(r[1] for r in results),
            "tok_per_s": round(sum(r[1] for r in results) / wall, 1),
            "worker_tok_per_s": round(statistics.median(r[3] for r in results), 1),
            "ttft_p50_s": round(statistics.median(ttft), 4),
            "ttft_p95_s": round(ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))], 4)}


def engine_round(engine, tokens):
    """(tokens/s, seconds to the first text) of one reply generated in this process."""
    from nanochat.web.workers import Job
    engine.job = Job(None, PROMPT, max_tokens=tokens, temperature=0.0, top_k=None)  # counts this reply's tokens
    start = time.perf_counter()
    first = None
    stream = engine.chat(PROMPT, max_tokens=tokens, temperature=0.0)
    for _ in stream:
        first = first or time.perf_counter() - start
    count = engine.job.tokens
    return count / (time.perf_counter() - start), first or 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--run", help="the run whose model to use (default: a tiny model made for the benchmark)")
    parser.add_argument("--stage", default=None, help="its model: rl, sft, mid or base")
    parser.add_argument("--api-key", default=os.environ.get("NANOCHAT_API_KEY"))
    parser.add_argument("--tokens", type=int, default=256, help="new tokens per reply")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved engine / server rounds at 1 client")
    parser.add_argument("--requests", type=int, default=2, help="requests per client at 4 and 16 clients")
    parser.add_argument("--depth", type=int, default=4, help="the tiny model's depth")
    parser.add_argument("--workers", type=int, default=None, help="engine workers of the server it starts")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from webserver import Server
    from nanochat.models import load_engine
    from nanochat.web.workers import CountingEngine

    tmp = None
    if args.run is None:
        from webhome import make_home
        tmp = tempfile.TemporaryDirectory()
        home = Path(tmp.name)
        log(f"making a tiny model (depth {args.depth}) in {home}")
        make_home(home, depth=args.depth, sequence_len=max(512, args.tokens + 64))
        os.environ["NANOCHAT_HOME"] = str(home)
        run, stage = "tiny", "mid"
    else:
        home, run, stage = Path(os.environ.get("NANOCHAT_HOME", "")), args.run, args.stage
    if args.device == "cpu":  # as the server it starts: fp32, one torch thread (tests/webserver.py)
        import torch
        os.environ.setdefault("NANOCHAT_DTYPE", "fp32")
        torch.set_num_threads(1)
    plain, _, loaded, ref = load_engine(run, stage, device=args.device)
    engine = CountingEngine(plain.model, plain.tokenizer)
    model = ref.id
    log(f"engine in this process: {loaded}")

    server = None
    if args.url:
        host, port = args.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    else:
        extra = ["--run", run, "--stage", stage, "--device", args.device]
        if args.workers:
            extra += ["--workers", str(args.workers)]
        server = Server(home, *extra)
        host, port = server.host, server.port
        log(f"server: {server.url} ({' '.join(extra)})")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    port = int(port)
    try:
        engine_round(engine, 8)  # warm up both sides
        stream_once(host, port, model, 8, headers)
        engine_rates, engine_ttft, one = [], [], []
        for i in range(args.rounds):
            rate, ttft = engine_round(engine, args.tokens)
            engine_rates.append(rate)
            engine_ttft.append(ttft)
            one.append(server_round(host, port, model, 1, 1, args.tokens, headers))
            log(f"round {i + 1}: engine {rate:.0f} tok/s, server {one[-1]['tok_per_s']:.0f} tok/s at 1 client "
                f"(its worker: {one[-1]['worker_tok_per_s']:.0f})")
        engine_rate = statistics.median(engine_rates)
        served_one = statistics.median(r["tok_per_s"] for r in one)
        ttft = sorted(r["ttft_p50_s"] for r in one)  # one request per round: its own time to first token
        levels = {"1": {"clients": 1, "requests": len(one), "tokens": sum(r["tokens"] for r in one),
                        "tok_per_s": served_one,
                        "worker_tok_per_s": round(statistics.median(r["worker_tok_per_s"] for r in one), 1),
                        "ttft_p50_s": round(statistics.median(ttft), 4),
                        "ttft_p95_s": ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))]}}
        for clients in (4, 16):
            levels[str(clients)] = server_round(host, port, model, clients, args.requests, args.tokens, headers)
            log(f"{clients} clients: {levels[str(clients)]}")
    finally:
        if server is not None:
            server.stop()
        if tmp is not None:
            tmp.cleanup()
    result = {"model": model, "device": args.device, "tokens_per_reply": args.tokens,
              "engine": {"tok_per_s": round(engine_rate, 1), "ttft_s": round(statistics.median(engine_ttft), 4)},
              "server": levels, "overhead_1_client": round(1 - served_one / engine_rate, 4),
              "overhead_1_client_vs_its_worker": round(1 - served_one / levels["1"]["worker_tok_per_s"], 4)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
