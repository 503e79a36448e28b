"""The packing loader: BOS-aligned best-fit rows, crop vs pad, rank sharding and exact resume."""
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from nanochat.data import PackedLoader, _Buffer, document_source
from nanochat.datasets import ShardedDataset

BOS = 256


class ByteTokens:
    """Bytes as token ids with BOS = 256: enough to test packing without training a tokenizer."""

    bos_id = BOS

    def encode(self, texts, prepend=None, num_threads=1):
        return [([prepend] if prepend is not None else []) + list(t.encode()) for t in texts]


@pytest.fixture
def dataset(tmp_path):
    rng = random.Random(0)
    for shard in range(3):
        docs = ["".join(rng.choice("abcdefgh ") for _ in range(rng.randint(1, 90))) for _ in range(64)]
        pq.write_table(pa.table({"text": docs}), tmp_path / f"shard_{shard:05d}.parquet", row_group_size=8)

    class Folder(ShardedDataset):
        name = "folder"

        def local_dir(self):
            return tmp_path
    return Folder()


def make_loader(dataset, state=None, rank=0, world=1, B=4, T=64):
    source = document_source(dataset, ByteTokens(), "train", rank=rank, world=world, threads=1)
    return PackedLoader(source, batch_size=B, seq_len=T, bos_id=BOS, buffer_size=50, state=state)


def test_rows_start_with_bos_and_crop_mode_trains_on_every_position(dataset):
    loader = make_loader(dataset)
    for _ in range(5):
        x, y = next(loader)
        assert x.shape == (4, 64) and y.shape == (4, 64) and x.dtype == torch.int64
        assert (x[:, 0] == BOS).all()
        assert (y != -1).all()  # crop mode: 100% utilisation, no padding
        assert torch.equal(x[:, 1:], y[:, :-1])
    loader.close()


def test_resume_from_state_gives_exactly_the_same_batches(dataset):
    loader = make_loader(dataset)
    for _ in range(7):
        next(loader)
    state = loader.state_dict()
    expected = [next(loader) for _ in range(10)]
    loader.close()
    resumed = make_loader(dataset, state=state)
    for (x, y), (rx, ry) in zip(expected, (next(resumed) for _ in range(10))):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    resumed.close()


def test_ranks_read_disjoint_row_groups(dataset):
    firsts = []
    for rank in range(2):
        source = document_source(dataset, ByteTokens(), "train", rank=rank, world=2, threads=1, epochs=1)
        firsts.append({pos["row_group"] for _, pos in source(None) if pos["shard"] == 0})
    assert firsts == [{0, 2, 4, 6}, {1, 3, 5, 7}]


def test_validation_is_split_by_document_so_every_rank_gets_some(dataset):
    per_rank = []
    for rank in range(2):
        source = document_source(dataset, ByteTokens(), "val", rank=rank, world=2, threads=1, epochs=1)
        per_rank.append([ids for items, _ in source(None) for ids, _ in items])
    whole = [ids for items, _ in document_source(dataset, ByteTokens(), "val", threads=1, epochs=1)(None) for ids, _ in items]
    assert per_rank[0] == whole[0::2] and per_rank[1] == whole[1::2]


def test_pad_mode_never_cuts_a_conversation(dataset):
    rng = random.Random(1)
    convs = [[BOS] + [rng.randrange(256) for _ in range(rng.randint(3, 40))] for _ in range(200)]

    def source(start):
        for i in range(0 if start is None else start["index"] + 1, len(convs)):
            ids = convs[i]
            yield [(ids, [0] + [1] * (len(ids) - 1))], {"index": i}

    loader = PackedLoader(source, batch_size=2, seq_len=48, bos_id=BOS, mode="pad", buffer_size=20)
    seen = []
    for x, y in loader:
        for row_x, row_y in zip(x.tolist(), y.tolist()):
            full = row_x + [row_y[-1] if row_y[-1] != -1 else BOS]
            starts = [i for i, t in enumerate(full) if t == BOS]
            for a, b in zip(starts, starts[1:] + [len(full)]):
                piece = full[a:b]
                if len(piece) > 1 and piece in convs:
                    seen.append(piece)
    assert len(seen) > 150  # whole conversations come out intact
    assert loader.exhausted


def test_best_fit_buffer_matches_a_plain_linear_search():
    rng = random.Random(3)
    fast, plain = _Buffer(), []
    for n in range(300):
        item = ([0] * rng.randint(1, 50), None)
        fast.add(item)
        plain.append((n, item))
        if rng.random() < 0.5:
            room = rng.randint(1, 60)
            fits = [(len(it[0]), -k) for k, it in plain if len(it[0]) <= room]
            want = max(fits) if fits else None
            got = fast.pop_longest_fitting(room)
            if want is None:
                assert got is None
            else:
                k = -want[1]
                assert got is dict(plain)[k]
                plain = [(j, it) for j, it in plain if j != k]


def test_buffer_state_round_trip():
    buf = _Buffer()
    for n in (5, 3, 5, 9):
        buf.add((list(range(n)), [1] * n))
    copy = _Buffer()
    copy.load(buf.state())
    assert copy.keys == buf.keys and copy.items == buf.items and copy.arrivals == buf.arrivals
