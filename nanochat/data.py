"""Token rows for training: documents (or conversations) packed into (B, T) batches, resumable exactly.

Packing is BOS-aligned best-fit: every row starts at a document boundary; each row is filled by
repeatedly taking the *longest* buffered document that still fits. When none fits:
  - "crop" mode (pretraining): the shortest buffered document is cut to fill the row exactly, so
    every position is trained on (no padding);
  - "pad" mode (SFT): nothing is ever cut; the rest of the row is BOS padding with no loss.
A background thread reads and tokenizes ahead. The loader's state — where the reader is plus the
buffered documents themselves — goes into checkpoints, so a resumed run sees exactly the batches
an uninterrupted run would have seen.
"""
import bisect
import queue
import threading
from typing import Callable, Iterator

import numpy as np

from nanochat import faults
from nanochat.datasets import Position

# An item is (token ids, loss mask or None); a source yields (items, position) and can restart from a position.
Item = tuple[list[int], list[int] | None]
SourceFactory = Callable[[dict | None], Iterator[tuple[list[Item], dict]]]


def document_source(dataset, tokenizer, split: str, *, rank: int = 0, world: int = 1, threads: int = 4,
                    epochs: int | None = None, doc_batch: int = 128) -> SourceFactory:
    """Documents of a dataset split, tokenized with BOS prepended, row group by row group.

    Training data is split between ranks by row group. The validation split is small (often one row
    group), so there every rank reads every group and keeps every world-th document instead.
    """
    by_document = split == "val" and world > 1

    def make(start):
        groups = dataset.iter_row_groups(split, rank=0 if by_document else rank, world=1 if by_document else world,
                                         start=Position.from_dict(start), epochs=epochs)
        for docs, position in groups:
            docs = docs[rank::world] if by_document else docs
            items = []
            for i in range(0, len(docs), doc_batch):  # small batches keep tokenizer threads busy
                ids = tokenizer.encode(docs[i:i + doc_batch], prepend=tokenizer.bos_id, num_threads=threads)
                items.extend((x, None) for x in ids)
            yield items, position.to_dict()
    return make


def conversation_source(conversations, tokenizer, *, rank: int = 0, world: int = 1, max_tokens: int = 2048,
                        loss_on: str = "assistant", epochs: int | None = 1) -> SourceFactory:
    """Conversations (a task mixture) rendered with their loss masks, this stream taking every world-th one.

    loss_on="assistant" trains only on what the assistant says (SFT); "all" on every token (midtraining).
    The position is the index of the last conversation read, with the epoch and the fraction done.
    """
    if loss_on not in ("assistant", "all"):
        raise ValueError(f"loss_on={loss_on!r} is not 'assistant' or 'all'")
    n = len(conversations)

    def make(start):
        index = rank if start is None else start["index"] + world
        epoch = 1 if start is None else start["epoch"]
        while epochs is None or epoch <= epochs:
            if index >= n:
                index, epoch = rank, epoch + 1
                continue
            ids, mask = tokenizer.render_conversation(conversations[index], max_tokens=max_tokens)
            if loss_on == "all":
                mask = [1] * len(ids)
            yield [(ids, mask)], {"index": index, "epoch": epoch, "progress": (epoch - 1) + (index + 1) / n}
            index += world
    return make


class _Buffer:
    """Documents waiting to be packed, kept sorted by length so best-fit is a binary search."""

    def __init__(self):
        self.keys: list[tuple[int, int]] = []  # (length, arrival number): ties go to the earliest arrival
        self.items: list[Item] = []
        self.arrivals = 0

    def __len__(self):
        return len(self.items)

    def add(self, item: Item) -> None:
        key = (len(item[0]), self.arrivals)
        self.arrivals += 1
        at = bisect.bisect_left(self.keys, key)
        self.keys.insert(at, key)
        self.items.insert(at, item)

    def pop_longest_fitting(self, room: int) -> Item | None:
        at = bisect.bisect_left(self.keys, (room + 1, -1)) - 1  # last key with length <= room
        if at < 0:
            return None
        length = self.keys[at][0]
        at = bisect.bisect_left(self.keys, (length, -1))  # the earliest arrival of that length
        self.keys.pop(at)
        return self.items.pop(at)

    def pop_shortest(self) -> Item:
        self.keys.pop(0)
        return self.items.pop(0)

    def state(self) -> dict:
        lengths = np.array([k[0] for k in self.keys], dtype=np.int64)
        tokens = np.concatenate([np.asarray(i[0], dtype=np.int32) for i in self.items]) if self.items else np.zeros(0, np.int32)
        masks = None
        if self.items and self.items[0][1] is not None:
            masks = np.concatenate([np.asarray(i[1], dtype=np.int8) for i in self.items])
        return {"lengths": lengths, "arrivals": np.array([k[1] for k in self.keys], dtype=np.int64),
                "tokens": tokens, "masks": masks, "next_arrival": self.arrivals}

    def load(self, state: dict) -> None:
        offsets = np.concatenate([[0], np.cumsum(state["lengths"])])
        masks = state["masks"]
        self.keys, self.items = [], []
        for i, arrival in enumerate(state["arrivals"]):
            lo, hi = offsets[i], offsets[i + 1]
            self.keys.append((int(hi - lo), int(arrival)))
            self.items.append((state["tokens"][lo:hi].tolist(), None if masks is None else masks[lo:hi].tolist()))
        self.arrivals = int(state["next_arrival"])


class _Reader(threading.Thread):
    """Runs a source ahead of the packer so reading and tokenizing overlap with training."""

    DONE = object()

    def __init__(self, source: SourceFactory, start: dict | None, ahead: int = 4):
        super().__init__(daemon=True)
        self.source, self.start_at = source, start
        self.out: queue.Queue = queue.Queue(maxsize=ahead)
        self.stopped = threading.Event()

    def run(self):
        try:
            for chunk in self.source(self.start_at):
                while not self.stopped.is_set():
                    try:
                        self.out.put(chunk, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self.stopped.is_set():
                    return
            self.out.put(self.DONE)
        except BaseException as exc:  # surface reader errors (corrupt shard, ...) in the training thread
            self.out.put(exc)

    def get(self):
        chunk = self.out.get()
        if isinstance(chunk, BaseException):
            raise chunk
        return chunk


def round_robin(loaders):
    """Batches from each loader in turn until one runs out; the loaders are closed when this is done or dropped."""
    try:
        while True:
            for loader in loaders:
                batch = next(loader, None)
                if batch is None:
                    return
                yield batch
    finally:
        for loader in loaders:
            loader.close()


def regroup(batches, device_batch: int) -> list:
    """One step's rows (a batch from each of a process's streams) re-cut into micro-batches of device_batch rows.

    A stream's rows do not depend on the device batch, so the same step trains on the same rows whatever
    the device batch: a smaller one only means more gradient accumulation (resuming with another device
    batch, or halving it after running out of memory, keeps the data where it was).
    """
    import torch
    if all(x.shape[0] == device_batch for x, _ in batches):
        return list(batches)  # the usual case: one stream per micro-batch, no copy
    inputs, targets = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    if inputs.shape[0] % device_batch:
        raise ValueError(f"{inputs.shape[0]} rows per step do not split into micro-batches of {device_batch}")
    return list(zip(inputs.split(device_batch), targets.split(device_batch)))


def in_steps(loaders, device_batch: int):
    """Micro-batches of device_batch rows, a step's worth at a time from all the loaders; closes them when done."""
    try:
        while True:
            batches = [next(loader, None) for loader in loaders]
            if any(b is None for b in batches):
                return
            yield from regroup(batches, device_batch)
    finally:
        for loader in loaders:
            loader.close()


class PackedLoader:
    """Yields (inputs, targets) of shape (B, T) on `device`; targets are -1 where there is no loss."""

    def __init__(self, source: SourceFactory, *, batch_size: int, seq_len: int, bos_id: int, device="cpu",
                 mode: str = "crop", buffer_size: int = 1000, state: dict | None = None):
        if mode not in ("crop", "pad"):
            raise ValueError(f"packing mode {mode!r} is not 'crop' or 'pad'")
        self.B, self.T, self.bos_id, self.mode, self.buffer_size = batch_size, seq_len, bos_id, mode, buffer_size
        self.device = device
        self.buffer = _Buffer()
        self.position = None  # position of the last chunk moved into the buffer
        self.exhausted = False
        if state is not None:
            self.buffer.load(state["buffer"])
            self.position = state["position"]
        self.source = source
        self.reader = _Reader(source, self.position)
        self.reader.start()

    def close(self):
        """Stop the reader thread and wait for it: a thread still tokenizing at interpreter exit can abort it."""
        self.reader.stopped.set()
        if self.reader.is_alive() and self.reader is not threading.current_thread():
            self.reader.join(timeout=60)

    def __del__(self):
        self.reader.stopped.set()

    def __iter__(self):
        return self

    def _refill(self) -> None:
        while len(self.buffer) < self.buffer_size and not self.exhausted:
            chunk = self.reader.get()
            if chunk is _Reader.DONE:
                self.exhausted = True
                break
            items, self.position = chunk
            for item in items:
                self.buffer.add(item)

    def _fill_row(self, row: np.ndarray, mask: np.ndarray) -> bool:
        """Pack one row of T+1 tokens; False if the data ran out before the row was started."""
        pos, room = 0, self.T + 1
        while pos < room:
            self._refill()
            if not len(self.buffer):
                if pos == 0:
                    return False
                break
            item = self.buffer.pop_longest_fitting(room - pos)
            if item is None:
                if self.mode == "pad":
                    break
                item = self.buffer.pop_shortest()  # crop it to fill the row exactly
            ids, item_mask = item
            n = min(len(ids), room - pos)
            row[pos:pos + n] = ids[:n]
            mask[pos:pos + n] = 1 if item_mask is None else item_mask[:n]
            pos += n
        row[pos:] = self.bos_id  # padding never counts in the loss
        mask[pos:] = 0
        return True

    def __next__(self):
        import torch
        rows = np.empty((self.B, self.T + 1), dtype=np.int64)
        masks = np.empty((self.B, self.T + 1), dtype=np.int8)
        faults.hit("loader")
        for b in range(self.B):
            if not self._fill_row(rows[b], masks[b]):
                raise StopIteration
        inputs = torch.from_numpy(rows[:, :-1].copy())
        targets = torch.from_numpy(np.where(masks[:, 1:] == 1, rows[:, 1:], -1))
        if torch.device(self.device).type == "cuda":
            inputs, targets = inputs.pin_memory(), targets.pin_memory()
        return inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        """Everything needed to continue exactly after the last batch returned (call it between batches)."""
        return {"position": self.position, "buffer": self.buffer.state(), "mode": self.mode}
