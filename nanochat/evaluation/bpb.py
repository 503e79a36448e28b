"""Bits per byte: a loss that does not depend on the tokenizer, so models with different vocabularies compare.

Each target token's loss (nats) is summed and divided by the UTF-8 bytes those tokens stand for.
Special tokens and masked targets (-1) have 0 bytes and are left out of both sums.
"""
import math

import torch


@torch.no_grad()
def evaluate_bpb(model, batches, steps: int, token_bytes: torch.Tensor, world=None) -> float:
    """Mean bits per byte over `steps` (inputs, targets) batches; summed over ranks when distributed.

    `batches` is consumed: when it has a close() (a generator, a loader) it is closed at the end.
    """
    token_bytes = token_bytes.to(next(model.parameters()).device)
    total_nats = torch.zeros((), dtype=torch.float64, device=token_bytes.device)
    total_bytes = torch.zeros((), dtype=torch.float64, device=token_bytes.device)
    for _ in range(steps):
        batch = next(batches, None)
        if batch is None:
            break
        x, y = batch
        loss = model(x, y, reduction="none").reshape(-1).double()
        y = y.reshape(-1)
        nbytes = torch.where(y >= 0, token_bytes[y.clamp(min=0)], 0)
        counted = nbytes > 0
        total_nats += (loss * counted).sum()
        total_bytes += nbytes.sum()
    if hasattr(batches, "close"):
        batches.close()
    if world is not None and world.size > 1:
        total_nats, total_bytes = world.all_reduce_sum([total_nats.item(), total_bytes.item()])
    else:
        total_nats, total_bytes = total_nats.item(), total_bytes.item()
    return total_nats / (math.log(2) * total_bytes) if total_bytes > 0 else float("inf")


def documents_bpb(model, tokenizer, docs: list[str], *, seq_len: int, batch_size: int, max_tokens: int,
                  token_bytes: torch.Tensor) -> float:
    """Bits per byte of a list of documents, packed into rows the way the validation split is (each row
    starts at a document, BOS first; a document that does not fit is cut), up to `max_tokens` tokens.

    Used for figures per language and on held-out text from outside the dataset; rows left over after the
    last full batch are not scored, so give a batch size that the text fills several times.
    """
    from nanochat.data import PackedLoader

    def source(start):
        if start is None:  # one chunk: the whole list
            ids = tokenizer.encode(docs, prepend=tokenizer.bos_id)
            yield [(x, None) for x in ids], {"documents": len(docs)}

    device = token_bytes.device
    loader = PackedLoader(source, batch_size=batch_size, seq_len=seq_len, bos_id=tokenizer.bos_id, device=device)
    return evaluate_bpb(model, loader, max(1, max_tokens // (batch_size * seq_len)), token_bytes)
