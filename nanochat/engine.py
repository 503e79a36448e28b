"""The inference engine: KV-cache generation of many samples of one prompt, with the calculator tool.

    engine = Engine(model, tokenizer)
    for column, mask in engine.generate(prompt_ids, num_samples=4, max_tokens=64, temperature=0.8): ...
    results, masks = engine.generate_batch(prompt_ids, num_samples=4, max_tokens=64)
    engine.complete("The capital of France is", max_tokens=16)        # base model: plain text
    for delta in engine.chat([{"role": "user", "content": "hi"}]):    # chat model: one reply, streamed
        print(delta, end="")

How one generation runs:
1. prefill: the prompt goes through the model once, at batch 1, into a KV cache;
2. that cache is copied into every row of a num_samples-row decode cache (KVCache.prefill_from);
3. each row draws its first token from the prompt's last logits on its own (rows differ from token one);
4. decode: one token per row per step, fed back through the cache; a row is done at <|assistant_end|>
   or <|bos|>; the generation ends when every row is done, at max_tokens, or at the model's last position.

The tool: a row that writes <|python_start|> expr <|python_end|> gets expr evaluated by the calculator;
when there is an answer, <|output_start|> answer <|output_end|> is forced into that row (mask 0: the tool
wrote those tokens, not the model) before sampling resumes.

Speed: decoding a small model on a CPU is mostly per-step overhead, so a step is one forward, one
sampling op and one device->host read of the sampled ids (the only sync); the ids go back into the
model as the same tensor unless the tool forces a token. Everything runs under inference_mode.
On a CPU the forward of a decode step is CpuDecode (nanochat/cpu_decode.py): GPT.forward's
arithmetic in a few calls a layer (Rust kernels between the matmuls where the library is built),
giving the logits before the softcap (greedy and top-k need no softcap over the whole vocabulary).
Elsewhere (CUDA, MPS) it is GPT.forward, or the compiled step. The prefill asks GPT.forward for the
prompt's last logits only (last_only=True).
"""
import random
import warnings
from collections import deque

import torch

from nanochat.compiled_decode import CompiledDecode
from nanochat.cpu_decode import CpuDecode
from nanochat.model import GPT, KVCache, softcap
from nanochat.sandbox import use_calculator

# How chat() shows the tool's special tokens in a reply:  `python: 12*7` -> `84`
TOOL_SHOWN = {"<|python_start|>": "`python: ", "<|python_end|>": "`",
              "<|output_start|>": " -> `", "<|output_end|>": "`"}
BIG = 1 << 40  # "no limit" for render_conversation's truncation: the engine checks lengths itself


def sample(logits, generator, temperature, top_k=None, top_p=None, *, raw=False):
    """Next token ids (B, 1) from logits (B, V): argmax at T=0, else top-k / nucleus sampling.

    top_k keeps the k most likely tokens; top_p keeps the smallest set of most likely tokens whose
    probability reaches p. Both may be combined (top-k first). One multinomial draw per row.
    A temperature so small that every other token's probability underflows is greedy (no error).
    raw=True: the logits are the model's before its softcap (CpuDecode). The softcap keeps their
    order, so the argmax and the top-k are taken on them directly, and only what is sampled from
    is softcapped.
    """
    if temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)
    index = None
    if top_k is not None and 0 < top_k < logits.size(-1):
        logits, index = torch.topk(logits, top_k, dim=-1)  # sorted, most likely first
    if raw:
        logits = softcap(logits)
    # the max is taken off before dividing: at a tiny temperature logits / T overflows to inf (and
    # softmax gives NaN), while (logits - max) / T only runs to -inf: the argmax keeps all the mass
    probs = torch.softmax((logits - logits.amax(dim=-1, keepdim=True)) / temperature, dim=-1)
    if top_p is not None and top_p < 1.0:
        if index is None:
            probs, index = torch.sort(probs, dim=-1, descending=True)
        # drop a token when the tokens before it already reach top_p (the first one always stays)
        probs = probs.masked_fill(probs.cumsum(dim=-1) - probs >= top_p, 0.0)
    choice = torch.multinomial(probs, 1, generator=generator)
    return choice if index is None else index.gather(-1, choice)


class RowState:
    """One row's place in the tool protocol."""
    __slots__ = ("forced", "in_python", "expr", "done")

    def __init__(self):
        self.forced = deque()   # tokens the tool has yet to write into this row
        self.in_python = False  # between <|python_start|> and <|python_end|>
        self.expr = []          # the tokens of the expression being written
        self.done = False


class Engine:
    def __init__(self, model, tokenizer, *, compile=False, cpu_step=True, fused=True):
        """compile=True runs the decode steps through torch.compile (CompiledDecode). Measured on a
        2-core CPU (d4, bf16): about 1.2x the eager step at batch 1 and several times slower at batch 8
        (not yet explained), after a compile of minutes; it is meant for GPUs, where a step's many
        small kernel launches dominate.
        On a CPU, a GPT decodes through CpuDecode (the same arithmetic as GPT.forward in fewer ops,
        the same tokens); cpu_step=False decodes through GPT.forward there too (what the benchmark
        compares it with). fused=False keeps CpuDecode on torch ops instead of the Rust kernels
        (rustbpe/src/decode.rs: the same roundings, a norm's sum in another order)."""
        self.model, self.tokenizer = model, tokenizer
        self.compiled = CompiledDecode(model) if compile else None
        # exactly a GPT: a subclass (or a wrapper) may compute otherwise, so it keeps its own forward
        self.cpu_step = CpuDecode(model, fused=fused) if cpu_step and type(model) is GPT and not compile else None
        special = tokenizer.encode_special
        self.bos = tokenizer.bos_id
        self.assistant_start = special("<|assistant_start|>")
        self.assistant_end = special("<|assistant_end|>")
        self.python_start, self.python_end = special("<|python_start|>"), special("<|python_end|>")
        self.output_start, self.output_end = special("<|output_start|>"), special("<|output_end|>")
        self.stops = (self.assistant_end, self.bos)
        self.stop_reason = None  # why the last generation ended: "done", "max_tokens" or "context"

    # -- token level ---------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, tokens, *, num_samples=1, max_tokens=None, temperature=1.0, top_k=None, top_p=None,
                 seed=42):
        """Yield (token_column, mask_column) per step: one token per row; mask 1 = sampled, 0 = forced.

        max_tokens=None generates until the model's training context (sequence_len) is full. A finished
        row keeps yielding its stop token with mask 0 until every row is done.
        """
        model, B = self.model, num_samples
        tokens = self._check_prompt(tokens)
        _check_sampling(num_samples, temperature, top_k, top_p)
        steps, clipped = self._steps(len(tokens), max_tokens)
        self.stop_reason = "context" if clipped else "max_tokens"
        if steps == 0:
            return
        device = next(model.parameters()).device
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)

        # 1-2) prefill at batch 1, then replicate; the cache holds the prompt and every token fed back
        ids = torch.tensor([tokens], dtype=torch.long, device=device)
        # compiled: one spare position, so the cache is never read whole (that case is a graph of its own)
        spare = 1 if self.compiled is not None else 0
        cache = KVCache(model.config, B, len(tokens) + steps - 1 + spare, device=device, dtype=model.kv_cache_dtype)
        last = {"last_only": True} if type(model) is GPT else {}  # the prompt's last logits are all it needs
        if B == 1:
            logits = model(ids, kv_cache=cache, **last)[:, -1]
        else:
            prefill = KVCache(model.config, 1, len(tokens), device=device, dtype=model.kv_cache_dtype)
            logits = model(ids, kv_cache=prefill, **last)[:, -1].expand(B, -1)  # 3) each row still draws alone
            cache.prefill_from(prefill)
            del prefill

        raw = False  # whether decode() gives the logits before the softcap
        if self.compiled is not None:
            self.compiled.prepare()
            decode = lambda ids, kv_cache: self.compiled(ids, kv_cache)[:, -1]  # noqa: E731
        elif self.cpu_step is not None and device.type == "cpu":  # CPU only: see cpu_decode.py
            decode_step = self.cpu_step.prepare(cache)
            decode, raw = (lambda ids, kv_cache: decode_step(ids)), True
        else:
            decode = lambda ids, kv_cache: model(ids, kv_cache=kv_cache)[:, -1]  # noqa: E731
        rows = [RowState() for _ in range(B)]
        self._resume_open_python_block(tokens, rows)
        stops, python_start, python_end = self.stops, self.python_start, self.python_end
        finished = [0] * B  # the stop token of each finished row
        n_done = 0
        for step in range(steps):
            if step:
                logits = decode(feed, cache)
            feed = sample(logits, generator, temperature, top_k, top_p, raw=raw and step > 0)  # (B, 1)
            column = feed.view(-1).tolist()  # the one device -> host sync of the step
            masks = [1] * B
            forced = False
            for i, row in enumerate(rows):
                if row.done:
                    column[i], masks[i] = finished[i], 0
                    continue
                if row.forced:
                    column[i], masks[i], forced = row.forced.popleft(), 0, True
                token = column[i]
                if token in stops:
                    row.done, finished[i] = True, token
                    n_done += 1
                elif token == python_start:
                    row.in_python, row.expr = True, []
                elif token == python_end and row.in_python:
                    row.in_python = False
                    self._call_tool(row)
                elif row.in_python:
                    row.expr.append(token)
            if forced:
                feed = torch.tensor(column, dtype=torch.long, device=device).view(B, 1)
            if n_done == B:
                # before the yield: a consumer that stops at the stop token never resumes this generator
                self.stop_reason = "done"
                yield column, masks
                return
            yield column, masks

    def generate_batch(self, tokens, num_samples=1, **kw):
        """(results, masks): each row's full sequence, prompt included, without its stop token."""
        results = [list(tokens) for _ in range(num_samples)]
        masks = [[0] * len(tokens) for _ in range(num_samples)]
        done = [False] * num_samples
        for column, mask_column in self.generate(tokens, num_samples=num_samples, **kw):
            for i, (token, mask) in enumerate(zip(column, mask_column)):
                if done[i]:
                    continue
                if token in self.stops:
                    done[i] = True
                else:
                    results[i].append(token)
                    masks[i].append(mask)
        return results, masks

    def _call_tool(self, row):
        if row.expr:
            result = use_calculator(self.tokenizer.decode(row.expr))
            if result is not None:
                row.forced.extend([self.output_start, *self.tokenizer.encode(result), self.output_end])
        row.expr = []

    def _resume_open_python_block(self, tokens, rows):
        """A prompt that ends inside <|python_start|> ... continues that tool call in every row."""
        if self.python_start not in tokens:
            return
        start = len(tokens) - 1 - tokens[::-1].index(self.python_start)
        if self.python_end not in tokens[start:]:
            for row in rows:
                row.in_python, row.expr = True, tokens[start + 1:]

    def _check_prompt(self, tokens):
        if hasattr(tokens, "tolist"):
            tokens = tokens.tolist()
        if not isinstance(tokens, (list, tuple)) or not tokens:
            raise ValueError(f"the prompt must be a non-empty list of token ids, got {tokens!r:.80}")
        vocab = self.model.config.vocab_size
        bad = next((t for t in tokens if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab), None)
        if bad is not None:
            raise ValueError(f"prompt token {bad!r} is not an id in 0..{vocab - 1} (the model's vocabulary)")
        return list(tokens)

    def _steps(self, prompt_len, max_tokens):
        """(tokens to generate, whether max_tokens was cut short by the positions the model can address:
        its rotary table)."""
        positions = self.model.cos.size(1)
        context = self.model.config.sequence_len
        if max_tokens is None:
            if prompt_len >= context:
                raise ValueError(f"the prompt has {prompt_len} tokens and fills the model's context ({context}); "
                                 f"shorten it, or pass max_tokens to generate past the context")
            max_tokens = context - prompt_len
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
            raise ValueError(f"max_tokens must be a non-negative integer or None, got {max_tokens!r}")
        if prompt_len >= positions:
            raise ValueError(f"the prompt has {prompt_len} tokens but the model addresses only {positions} positions; "
                             f"shorten the prompt")
        fit = positions - prompt_len + 1  # the last token is sampled, never fed back
        if max_tokens > fit:
            warnings.warn(f"generation stops after {fit} tokens, not max_tokens={max_tokens}: the prompt "
                          f"({prompt_len}) plus new tokens would pass the model's last position ({positions})",
                          RuntimeWarning, stacklevel=3)
            return fit, True
        return max_tokens, False

    # -- text level ----------------------------------------------------------------------------------

    def stream(self, tokens, *, max_tokens, temperature=0.6, top_k=50, top_p=None, seed=None):
        """Text deltas of one row, UTF-8 safe, tool calls shown inline; stops at a stop token.

        When exhausted, the generator returns the reply as an assistant message: content is a string,
        or a list of text / python / python_output parts when the tool was used.
        """
        seed = random.randrange(1 << 62) if seed is None else seed
        text = Utf8Stream(self.tokenizer)
        reply = _Reply(self)
        shown = {self.tokenizer.encode_special(name): mark for name, mark in TOOL_SHOWN.items()}
        for column, _ in self.generate(tokens, max_tokens=max_tokens, temperature=temperature, top_k=top_k,
                                       top_p=top_p, seed=seed):
            token = column[0]
            if token in self.stops:
                break
            reply.add(token)
            if token in shown:
                delta = text.flush() + shown[token]
            else:
                delta = text.push(token)
            if delta:
                yield delta
        delta = text.flush()
        if delta:
            yield delta
        return reply.message()

    def complete(self, prompt_text, *, max_tokens=16, temperature=0.0, top_k=None, top_p=None, seed=42):
        """A base model's continuation of plain text (the prompt starts with <|bos|>)."""
        tokens = self.tokenizer.encode(prompt_text, prepend=self.bos)
        out = []
        for column, _ in self.generate(tokens, max_tokens=max_tokens, temperature=temperature, top_k=top_k,
                                       top_p=top_p, seed=seed):
            if column[0] in self.stops:
                break
            out.append(column[0])
        return self.tokenizer.decode(out)

    def chat_prompt(self, messages):
        """The tokens that ask for the next assistant reply: the conversation, then <|assistant_start|>."""
        if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
            raise ValueError("the conversation must end with a user message (the one to reply to)")
        ids, _ = self.tokenizer.render_conversation({"messages": messages}, max_tokens=BIG)
        return ids + [self.assistant_start]

    def chat(self, messages, *, max_tokens=512, temperature=0.6, top_k=50, top_p=None, seed=None):
        """Stream one assistant reply to `messages` ([{"role": "system"|"user"|"assistant", "content"}])
        as text deltas; the generator returns the reply as a message (see stream())."""
        tokens = self.chat_prompt(messages)
        room = self.model.config.sequence_len - len(tokens)
        if room < 1:
            raise ContextFull(f"the conversation has {len(tokens)} tokens and fills the model's context "
                              f"({self.model.config.sequence_len}); start a new conversation or drop early turns")
        return (yield from self.stream(tokens, max_tokens=min(max_tokens, room), temperature=temperature,
                                       top_k=top_k, top_p=top_p, seed=seed))


class ContextFull(ValueError):
    """The conversation leaves no room for a reply in the model's context."""


class Utf8Stream:
    """Token ids in, text out, never half a character: bytes are held back until they decode whole."""

    def __init__(self, tokenizer):
        self.tokenizer, self.pending = tokenizer, []

    def push(self, token):
        self.pending.append(token)
        text = self.tokenizer.decode(self.pending)
        if text.endswith("\ufffd"):  # an incomplete character: wait for its remaining bytes
            return ""
        self.pending.clear()
        return text

    def flush(self):
        """What is held back; a character cut off by the end of the generation is dropped."""
        text = self.tokenizer.decode(self.pending).rstrip("\ufffd") if self.pending else ""
        self.pending.clear()
        return text


class _Reply:
    """Collects a generated reply into the message format render_conversation reads back."""

    def __init__(self, engine):
        e = self.engine = engine
        self.switch = {e.python_start: "python", e.python_end: "text", e.output_start: "python_output",
                       e.output_end: "text"}
        self.parts, self.kind, self.tokens = [], "text", []

    def add(self, token):
        if token in self.switch:
            self._close()
            self.kind = self.switch[token]
        else:
            self.tokens.append(token)

    def _close(self):
        if self.tokens or self.kind == "python":  # an empty call is still a call
            self.parts.append({"type": self.kind, "text": self.engine.tokenizer.decode(self.tokens)})
        self.tokens = []

    def message(self):
        self._close()
        parts = []
        for part in self.parts + [None]:
            kind = part and part["type"]
            if kind == "python_output" and not (parts and parts[-1]["type"] == "python"):
                kind = "text"  # an output block the model wrote without a call: keep it as text
            if parts and parts[-1]["type"] == "python" and kind != "python_output":
                parts.append({"type": "python_output", "text": ""})  # the calculator had no answer
            if part is None:
                break
            if kind == "text" and parts and parts[-1]["type"] == "text":
                parts[-1]["text"] += part["text"]
            else:
                parts.append({"type": kind, "text": part["text"]})
        if all(p["type"] == "text" for p in parts):
            return {"role": "assistant", "content": "".join(p["text"] for p in parts)}
        return {"role": "assistant", "content": parts}


def _check_sampling(num_samples, temperature, top_k, top_p):
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ValueError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise ValueError(f"top_k must be a positive integer, or None / 0 for no limit, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], or None for no limit, got {top_p!r}")
