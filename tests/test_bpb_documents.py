"""Bits per byte of a list of documents (per language, held-out text): the documents are packed, scored
and counted the way the validation split is."""
import math

import torch

from nanochat.datasets import documents_by_language, language_of
from nanochat.evaluation.bpb import documents_bpb
from nanochat.tokenizer import Tokenizer

EN = "The farmer fed the cat before the rain came over the hills."
ZH = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"


class UniformModel(torch.nn.Module):
    """Every next token equally likely: each scored target costs exactly ln(vocab) nats."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, y, reduction="mean"):
        return torch.full(y.shape, math.log(self.vocab_size))


def test_documents_are_grouped_by_language_in_order_with_a_cap():
    docs = [EN, ZH, EN + " 1", "Hello 你好", ZH + "一", EN + " 2"]
    assert language_of(ZH) == "zh" and language_of(EN) == "en"
    assert documents_by_language(docs) == {"en": [EN, EN + " 1", "Hello 你好", EN + " 2"], "zh": [ZH, ZH + "一"]}
    assert documents_by_language(docs, max_docs=1) == {"en": [EN], "zh": [ZH]}


def test_documents_bpb_counts_every_target_token_and_its_bytes():
    tok = Tokenizer.train([EN * 20, ZH * 20], 300, threads=1)
    token_bytes = torch.tensor(tok.token_bytes(), dtype=torch.int64)
    model = UniformModel(tok.vocab_size)
    for doc in (EN, ZH):
        n = len(tok.encode(doc))  # one row holds BOS + the document: n targets, all of the document's bytes
        got = documents_bpb(model, tok, [doc], seq_len=n, batch_size=1, max_tokens=10_000, token_bytes=token_bytes)
        expected = n * math.log(tok.vocab_size) / (math.log(2) * len(doc.encode("utf-8")))
        assert math.isclose(got, expected, rel_tol=1e-6), (doc, got, expected)  # float32 losses


def test_documents_bpb_stops_at_max_tokens():
    tok = Tokenizer.train([EN * 20, ZH * 20], 300, threads=1)
    token_bytes = torch.tensor(tok.token_bytes(), dtype=torch.int64)
    seen = []

    class Recording(UniformModel):
        def forward(self, x, y, reduction="mean"):
            seen.append(x.shape)
            return super().forward(x, y, reduction)

    documents_bpb(Recording(tok.vocab_size), tok, [EN] * 200, seq_len=16, batch_size=2, max_tokens=64,
                  token_bytes=token_bytes)
    assert seen == [(2, 16), (2, 16)]  # 64 tokens = two batches of 2 x 16, though the text holds more
