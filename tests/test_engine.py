"""The engine: KV-cache generation == naive generation, sampling, stops, the calculator tool, UTF-8 streaming.

A real tiny GPT and a real tiny tokenizer check the numbers; a scripted test double (a "model" that
writes a fixed token sequence) drives the tool state machine and the text stream exactly.
"""
import warnings

import pytest
import torch
import torch.nn as nn

from nanochat.engine import Engine, Utf8Stream, sample
from nanochat.model import GPT, GPTConfig
from nanochat.tokenizer import Tokenizer

TEXT = ("The quick brown fox jumps over the lazy dog. 12 + 34 = 46. Hello world! "
        "你好，世界！今天天气很好，我们去公园散步吧。")


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: more threads only contend on a shared machine
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train([TEXT] * 20, 300, threads=1)


@pytest.fixture(scope="module")
def model(tok):
    """Depth 2 with windows "SL": the short layer sees 128 tokens, so 150 new tokens cross it."""
    cfg = GPTConfig.from_depth(2, vocab_size=tok.vocab_size, sequence_len=256, head_dim=16, aspect_ratio=32,
                               window_pattern="SL")
    torch.manual_seed(0)
    with torch.device("meta"):
        m = GPT(cfg)
    m.to_empty(device="cpu")
    m.init_weights()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # init zeroes the output projections; make every path count
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        m.lm_head.weight[tok.bos_id:] = 0.0  # logit 0 for special tokens: never the argmax here
    assert cfg.window_sizes() == [128, 256]
    return m.eval()


def prompt(tok, text="Hello world"):
    return tok.encode(text, prepend="<|bos|>")


@torch.no_grad()
def perturbed_model(cfg, tok, dtype=None):
    """A model whose output projections are not zero (fresh ones are), so decoding paths can disagree; the
    special tokens are never produced."""
    torch.manual_seed(0)
    with torch.device("meta"):
        m = GPT(cfg) if dtype is None else GPT(cfg, compute_dtype=dtype)
    m.to_empty(device="cpu")
    m.init_weights()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape))
        m.lm_head.weight[tok.bos_id:] = 0.0
    return m


def naive_greedy(model, tokens, n, stops):
    """Generation without a cache: the whole sequence through the model for every new token."""
    ids, out = list(tokens), []
    for _ in range(n):
        nxt = model(torch.tensor([ids]))[0, -1].argmax().item()
        out.append(nxt)
        if nxt in stops:
            break
        ids.append(nxt)
    return out


# -- generation with the real model ------------------------------------------------------------------

def test_greedy_equals_naive_generation_across_the_short_window(model, tok):
    engine = Engine(model, tok)
    p = prompt(tok)
    expected = naive_greedy(model, p, 150, engine.stops)
    assert len(p) + len(expected) > 128 + 20  # well past the short window
    columns = list(engine.generate(p, num_samples=3, max_tokens=150, temperature=0.0))
    assert len(columns) == 150
    for row in range(3):
        assert [c[row] for c, _ in columns] == expected
    assert all(m == [1, 1, 1] for _, m in columns)
    assert engine.stop_reason == "max_tokens"


def test_compiled_decoding_gives_the_eager_tokens_and_sees_weight_changes(tok):
    cfg = GPTConfig.from_depth(1, vocab_size=tok.vocab_size, sequence_len=64, head_dim=16, aspect_ratio=32)
    m = perturbed_model(cfg, tok)
    eager, compiled = Engine(m, tok), Engine(m, tok, compile=True)
    run = lambda engine: engine.generate_batch(prompt(tok), num_samples=2, max_tokens=30, temperature=0.0)
    assert run(compiled) == run(eager)
    with torch.no_grad():  # a weight changed in place (training goes on): the next generation follows it
        m.lm_head.weight[:tok.bos_id].copy_(torch.randn(tok.bos_id, cfg.n_embd))
    tokens = run(eager)
    assert run(compiled) == tokens


def test_the_cpu_step_gives_the_forward_tokens_in_bf16_and_follows_weight_changes(tok):
    """CpuDecode (the default on a CPU) against decoding through GPT.forward, in bf16, past the short
    window: the same tokens, greedy and sampled (its logits come before the softcap)."""
    cfg = GPTConfig.from_depth(2, vocab_size=tok.vocab_size, sequence_len=256, head_dim=16, aspect_ratio=32,
                               window_pattern="SL")
    m = perturbed_model(cfg, tok, torch.bfloat16)
    fast, forward = Engine(m, tok), Engine(m, tok, cpu_step=False)
    assert fast.cpu_step is not None and forward.cpu_step is None
    run = lambda engine, **kw: engine.generate_batch(prompt(tok), num_samples=2, max_tokens=140, **kw)
    greedy = run(fast, temperature=0.0)
    assert greedy == run(forward, temperature=0.0)
    assert len(set(greedy[0][0])) > 20  # not one token repeated
    assert run(fast, temperature=1.0, top_k=20, seed=3) == run(forward, temperature=1.0, top_k=20, seed=3)
    assert run(fast, temperature=0.7, seed=4) == run(forward, temperature=0.7, seed=4)
    with torch.no_grad():  # a weight changed in place (training goes on): the next generation follows it
        m.transformer.h[0].mlp.c_fc.weight.mul_(-1.0)
    changed = run(fast, temperature=0.0)
    assert changed != greedy and changed == run(forward, temperature=0.0)


def test_the_rust_kernels_give_the_torch_steps_logits(tok):
    """CpuDecode with the Rust kernels (the default where the library is built) against the same step on
    torch ops, fed the same tokens past the short window: the same roundings, so the logits differ only
    by sum orders (a norm's, attention's): close in fp32, within a bf16 step or two in bf16; greedy tokens
    agree. Batch 1 runs attention in Rust too (here with grouped kv heads), batch 2 through SDPA."""
    from nanochat.cpu_decode import CpuDecode
    from nanochat.model import KVCache
    # depth 3: value embeddings on layers 0 and 2, the backout row after layer 1; depth 1: after the last
    for depth, dtype, tolerance, n, rows, kv_heads in ((3, torch.float32, 1e-4, 100, 1, 3),
                                                       (3, torch.bfloat16, 0.07, 100, 2, None),
                                                       (1, torch.bfloat16, 0.07, 40, 1, None)):
        cfg = GPTConfig.from_depth(depth, vocab_size=tok.vocab_size, sequence_len=256, head_dim=16, aspect_ratio=32,
                                   window_pattern="SL", n_kv_head=kv_heads)
        m = perturbed_model(cfg, tok, dtype)
        fused, plain = CpuDecode(m), CpuDecode(m, fused=False)
        assert fused.kernels is not None, "the Rust decode kernels are not built: ./setup.sh (or pip install ./rustbpe)"
        caches = [KVCache(cfg, rows, 200, device="cpu", dtype=m.kv_cache_dtype) for _ in range(2)]
        with torch.inference_mode():
            for cache in caches:
                m(torch.tensor([prompt(tok)] * rows), kv_cache=cache)
            steps = fused.prepare(caches[0]), plain.prepare(caches[1])
            ids, agree = torch.tensor([[5], [9]])[:rows], 0
            for _ in range(n):
                a, b = steps[0](ids), steps[1](ids)
                assert (a - b).abs().max().item() <= tolerance
                agree += torch.equal(a.argmax(-1), b.argmax(-1))
                ids = b.argmax(-1, keepdim=True)
            assert agree >= n - 2
            for written in ("prev_embedding", "k", "v"):  # what the steps leave in the cache agrees too
                assert (getattr(caches[0], written) - getattr(caches[1], written)).abs().max().item() <= tolerance


def test_without_the_rust_library_the_cpu_step_runs_on_torch_ops(tok, monkeypatch):
    import sys
    from types import SimpleNamespace

    from nanochat.decode_kernels import DecodeKernels
    stale = SimpleNamespace(lib=SimpleNamespace(ndec_version=lambda: 0))  # built from older sources
    monkeypatch.setitem(sys.modules, "nanochat_rustbpe._native", stale)
    assert DecodeKernels.load(torch.bfloat16) is None
    monkeypatch.setitem(sys.modules, "nanochat_rustbpe._native", None)  # makes the import fail
    cfg = GPTConfig.from_depth(1, vocab_size=tok.vocab_size, sequence_len=64, head_dim=16, aspect_ratio=32)
    m = perturbed_model(cfg, tok)
    engine = Engine(m, tok)
    assert engine.cpu_step is not None and engine.cpu_step.kernels is None
    run = lambda e: e.generate_batch(prompt(tok), num_samples=2, max_tokens=20, temperature=0.0)
    assert run(engine) == run(Engine(m, tok, cpu_step=False))


def test_two_generations_of_one_engine_may_interleave(model, tok):
    engine = Engine(model, tok)
    run = lambda text: engine.generate(prompt(tok, text), max_tokens=20, temperature=0.0)
    alone = [[c for c, _ in run(text)] for text in ("Hello world", "12 + 34")]
    a, b = run("Hello world"), run("12 + 34")
    mixed = [(next(a)[0], next(b)[0]) for _ in range(20)]
    assert [x for x, _ in mixed] == alone[0] and [y for _, y in mixed] == alone[1]
    assert alone[0] != alone[1]


def test_first_tokens_are_drawn_per_row(model, tok):
    engine = Engine(model, tok)
    first, _ = next(engine.generate(prompt(tok), num_samples=4, max_tokens=1, temperature=5.0))
    assert len(set(first)) > 1  # the upstream bug drew one token and copied it to every row
    first, _ = next(engine.generate(prompt(tok), num_samples=4, max_tokens=1, temperature=0.0))
    assert len(set(first)) == 1


def test_seed_reproducibility(model, tok):
    engine = Engine(model, tok)
    run = lambda seed: engine.generate_batch(prompt(tok), num_samples=2, max_tokens=20, temperature=1.0, seed=seed)
    assert run(7) == run(7)
    assert run(7)[0] != run(8)[0]


def test_sampling_support_is_restricted_by_top_k_and_top_p():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0, -1.0]]).expand(4000, -1)
    g = torch.Generator().manual_seed(0)
    assert set(sample(logits, g, 1.0).view(-1).tolist()) == set(range(6))
    assert set(sample(logits, g, 1.0, top_k=2).view(-1).tolist()) == {0, 1}
    probs = torch.softmax(logits[0], -1)  # 0.64, 0.23, 0.09, ...: top_p 0.8 keeps the first two
    assert probs[0] < 0.8 < probs[0] + probs[1]
    assert set(sample(logits, g, 1.0, top_p=0.8).view(-1).tolist()) == {0, 1}
    assert set(sample(logits, g, 1.0, top_k=3, top_p=0.5).view(-1).tolist()) == {0}
    assert sample(logits[:1], g, 0.0).item() == 0


def test_a_tiny_temperature_is_greedy_not_an_error(model, tok):
    logits = torch.tensor([[1.0, 3.0, -2.0, 2.9], [0.5, -1.0, 0.7, float("-inf")]])
    g = torch.Generator().manual_seed(0)
    for t in (1e-30, 1e-38, 1e-45):  # logits / t overflows fp32 below ~1e-37
        assert sample(logits, g, t).view(-1).tolist() == [1, 2]
        assert sample(logits, g, t, top_k=3, top_p=0.9).view(-1).tolist() == [1, 2]
    engine = Engine(model, tok)
    greedy = engine.generate_batch(prompt(tok), max_tokens=12, temperature=0.0)
    assert engine.generate_batch(prompt(tok), max_tokens=12, temperature=1e-40) == greedy


def test_top_k_one_is_greedy(model, tok):
    engine = Engine(model, tok)
    greedy = engine.generate_batch(prompt(tok), max_tokens=12, temperature=0.0)
    assert engine.generate_batch(prompt(tok), max_tokens=12, temperature=0.9, top_k=1) == greedy


def test_max_tokens_and_the_end_of_the_rotary_table(tok):
    cfg = GPTConfig.from_depth(1, vocab_size=tok.vocab_size, sequence_len=8, head_dim=16, aspect_ratio=32)
    with torch.device("meta"):
        m = GPT(cfg)
    m.to_empty(device="cpu")
    m.init_weights()
    with torch.no_grad():
        m.lm_head.weight[tok.bos_id:] = 0.0
    engine = Engine(m, tok)
    p = prompt(tok, "the quick brown fox jumps")
    assert len(list(engine.generate(p, max_tokens=0))) == 0
    assert len(list(engine.generate(p[:3], max_tokens=4))) == 4
    assert len(list(engine.generate(p[:3]))) == 8 - 3  # None: until the training context is full
    long = (p * 20)[:75]  # the rotary table covers 10 x 8 = 80 positions
    with pytest.warns(RuntimeWarning, match="80"):
        steps = list(engine.generate(long, max_tokens=50))
    assert len(steps) == 80 - 75 + 1 and engine.stop_reason == "context"
    with pytest.raises(ValueError, match="80 positions"):
        list(engine.generate(p * 20, max_tokens=5))
    with pytest.raises(ValueError, match="temperature"):
        list(engine.generate(p, temperature=-1))
    with pytest.raises(ValueError, match="token 9999"):
        list(engine.generate([9999]))


def test_complete_returns_the_continuation(model, tok):
    engine = Engine(model, tok)
    text = engine.complete("Hello", max_tokens=5, temperature=0.0)
    expected = naive_greedy(model, prompt(tok, "Hello"), 5, engine.stops)
    assert text == tok.decode(expected)


# -- a scripted model: writes fixed tokens, so the tool and the text stream can be checked exactly -------

class ScriptedModel(nn.Module):
    """The model's shape and cache handling, with logits that pick script[position] after the prompt.

    `script` is one token list for every row, or a list of token lists (one per row)."""

    def __init__(self, vocab_size, prompt_len, script):
        super().__init__()
        self.config = GPTConfig.from_depth(1, vocab_size=vocab_size, sequence_len=128, head_dim=16, aspect_ratio=32)
        self.compute_dtype = self.kv_cache_dtype = torch.float32
        self.register_buffer("cos", torch.zeros(1, 1280, 1, 8))
        self.anchor = nn.Parameter(torch.zeros(()))  # tells the engine the device
        self.prompt_len, self.script = prompt_len, script
        self.fed = []  # every token column fed back during decoding

    def forward(self, idx, kv_cache):
        B, T = idx.shape
        if T == 1:
            self.fed.append(idx[:, 0].tolist())
        i = kv_cache.pos + T - self.prompt_len  # index into the script of the next token
        logits = torch.zeros(B, T, self.config.vocab_size)
        scripts = self.script if self.script and isinstance(self.script[0], list) else [self.script] * B
        for row, script in enumerate(scripts[:B]):  # the prefill runs at batch 1
            logits[row, -1, script[i] if i < len(script) else 0] = 10.0
        kv_cache.advance(T)
        return logits


def chat_prompt(tok, engine, text="what is 12*7?"):
    return engine.chat_prompt([{"role": "user", "content": text}])


def test_the_calculator_output_is_forced_with_mask_zero(tok):
    sp = tok.encode_special
    engine = Engine(ScriptedModel(tok.vocab_size, 0, []), tok)
    p = chat_prompt(tok, engine)
    answer = [sp("<|output_start|>"), *tok.encode("84"), sp("<|output_end|>")]
    call = [sp("<|python_start|>"), *tok.encode("12*7"), sp("<|python_end|>")]
    tail = tok.encode(" is the answer") + [sp("<|assistant_end|>")]
    junk = [tok.encode("x")[0]] * len(answer)  # what the model would sample while the tool writes
    fake = ScriptedModel(tok.vocab_size, len(p), call + junk + tail)
    engine = Engine(fake, tok)

    steps = list(engine.generate(p, num_samples=2, max_tokens=100, temperature=0.0))
    tokens = [c[0] for c, _ in steps]
    masks = [m[0] for _, m in steps]
    assert tokens == call + answer + tail
    assert masks == [1] * len(call) + [0] * len(answer) + [1] * len(tail)
    assert all(c[0] == c[1] for c, _ in steps)
    assert [f[0] for f in fake.fed] == tokens[:-1]  # the forced tokens went through the model too
    assert engine.stop_reason == "done"

    results, result_masks = engine.generate_batch(p, num_samples=1, max_tokens=100, temperature=0.0)
    assert results[0] == p + call + answer + tail[:-1]  # the stop token is left out
    assert result_masks[0] == [0] * len(p) + masks[:-1]

    stream = engine.chat([{"role": "user", "content": "what is 12*7?"}], temperature=0.0)
    shown, reply = drain(stream)
    assert shown == "`python: 12*7` -> `84` is the answer"
    assert reply["content"] == [{"type": "python", "text": "12*7"}, {"type": "python_output", "text": "84"},
                                {"type": "text", "text": " is the answer"}]
    tok.render_conversation([{"role": "user", "content": "q"}, reply])  # the reply renders back


def test_no_answer_no_forced_tokens_and_a_prompt_inside_a_call(tok):
    sp = tok.encode_special
    engine = Engine(ScriptedModel(tok.vocab_size, 0, []), tok)
    # the calculator refuses names: nothing is forced, the model's own tokens follow
    p = chat_prompt(tok, engine)
    script = [sp("<|python_start|>"), *tok.encode("fox*2"), sp("<|python_end|>"), *tok.encode("ok"),
              sp("<|assistant_end|>")]
    engine = Engine(ScriptedModel(tok.vocab_size, len(p), script), tok)
    tokens, masks = engine.generate_batch(p, max_tokens=50, temperature=0.0)
    assert tokens[0][len(p):] == script[:-1] and set(masks[0][len(p):]) == {1}
    _, reply = drain(engine.chat([{"role": "user", "content": "what is 12*7?"}], temperature=0.0))
    assert reply["content"][:2] == [{"type": "python", "text": "fox*2"}, {"type": "python_output", "text": ""}]
    # a prompt that ends inside a call: the expression in the prompt is evaluated at <|python_end|>
    p = p + [sp("<|python_start|>")] + tok.encode("6*7")
    answer = [sp("<|output_start|>"), *tok.encode("42"), sp("<|output_end|>")]
    script = [sp("<|python_end|>")] + [0] * len(answer) + [sp("<|assistant_end|>")]
    engine = Engine(ScriptedModel(tok.vocab_size, len(p), script), tok)
    tokens, masks = engine.generate_batch(p, max_tokens=50, temperature=0.0)
    assert tokens[0][len(p):] == [sp("<|python_end|>"), *answer]
    assert masks[0][len(p):] == [1] + [0] * len(answer)


def test_a_finished_row_repeats_its_stop_token_with_mask_zero(tok):
    sp = tok.encode_special
    engine = Engine(ScriptedModel(tok.vocab_size, 0, []), tok)
    p = chat_prompt(tok, engine)
    a, b, end, bos = tok.encode("a")[0], tok.encode("b")[0], sp("<|assistant_end|>"), tok.bos_id
    scripts = [[a, end, b, b, b], [a, a, a, bos, b], [a, a, a, a, a]]
    engine = Engine(ScriptedModel(tok.vocab_size, len(p), scripts), tok)
    steps = list(engine.generate(p, num_samples=3, max_tokens=10, temperature=0.0))
    assert [c for c, _ in steps] == [[a, a, a], [end, a, a], [end, a, a], [end, bos, a], [end, bos, a]] + \
        [[end, bos, 0]] * 5
    assert [m for _, m in steps] == [[1, 1, 1], [1, 1, 1], [0, 1, 1], [0, 1, 1], [0, 0, 1]] + [[0, 0, 1]] * 5
    assert engine.stop_reason == "max_tokens"
    results, _ = engine.generate_batch(p, num_samples=3, max_tokens=10, temperature=0.0)
    assert [r[len(p):] for r in results] == [[a], [a, a, a], [a] * 5 + [0] * 5]


def drain(stream):
    """Text deltas of a chat/stream generator, and the reply message it returns."""
    deltas = []
    while True:
        try:
            deltas.append(next(stream))
        except StopIteration as stop:
            assert all("\ufffd" not in d for d in deltas), deltas
            return "".join(deltas), stop.value


def test_chinese_streams_without_broken_characters(tok):
    engine = Engine(ScriptedModel(tok.vocab_size, 0, []), tok)
    p = chat_prompt(tok, engine, "你好")
    text = "你好，世界！🙂 今天天气很好。"
    byte_tokens = list(text.encode("utf-8"))  # one token per byte: every character is split
    script = byte_tokens + [tok.encode_special("<|assistant_end|>")]
    engine = Engine(ScriptedModel(tok.vocab_size, len(p), script), tok)
    shown, reply = drain(engine.chat([{"role": "user", "content": "你好"}]))
    assert shown == text and reply == {"role": "assistant", "content": text}
    # cut in the middle of a character: the half character is dropped, never shown as U+FFFD
    engine = Engine(ScriptedModel(tok.vocab_size, len(p), byte_tokens[:4]), tok)
    shown, _ = drain(engine.chat([{"role": "user", "content": "你好"}], max_tokens=4))
    assert shown == "你"
    # the trained tokenizer's own merges for Chinese stream the same text
    stream = Utf8Stream(tok)
    ids = tok.encode(text)
    assert "".join(stream.push(i) for i in ids) + stream.flush() == text


def test_chat_checks_the_conversation_and_the_context(tok):
    engine = Engine(ScriptedModel(tok.vocab_size, 0, []), tok)
    with pytest.raises(ValueError, match="end with a user message"):
        engine.chat_prompt([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    p = engine.chat_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    assert p == tok.render_for_completion([{"role": "user", "content": "Be brief.\n\nhi"}])
    with pytest.raises(ValueError, match="context"):
        list(engine.chat([{"role": "user", "content": "word " * 100}]))
