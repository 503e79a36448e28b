"""Dataset plugins and the downloader, against a fake Hugging Face hub on 127.0.0.1.

Small parquet shards are generated once per module; each test gets a fresh hub (request log, faults)
and its own NANOCHAT_HOME (conftest), so downloads always start from an empty disk.
"""
import json
import os

os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HF_HUB_OFFLINE", None)

import pytest  # noqa: E402

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from fakehub import FakeHub  # noqa: E402
from nanochat import paths  # noqa: E402
from nanochat.data_cli import cmd_download, cmd_list  # noqa: E402
from nanochat.datasets import DatasetError, resolve  # noqa: E402
from nanochat.download import DownloadError, HubDataset, download, verify_shard  # noqa: E402
from nanochat.plugins import UnknownName  # noqa: E402

FINEWEB = "karpathy/fineweb-edu-100b-shuffle"
CLIMBMIX = "karpathy/climbmix-400b-shuffle"
FAST = {"token": False, "backoff": 0.01}  # no real token to the fake hub; retries without long sleeps


def docs_of(repo, index):
    return [f"{repo.split('/')[1]} shard {index} doc {j} " + "lorem ipsum " * j for j in range(12)]


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    for repo, shards in ((FINEWEB, [0, 1, 2, 3, 1822]), (CLIMBMIX, [0, 1, 2, 6542])):
        (root / repo).mkdir(parents=True)
        for i in shards:
            pq.write_table(pa.table({"text": docs_of(repo, i)}), root / repo / f"shard_{i:05d}.parquet",
                           row_group_size=4, compression="zstd")
    return root


@pytest.fixture
def hub(hub_root):
    with FakeHub(hub_root) as h:
        yield h


def shard_files(ds):
    return sorted(p.name for p in ds.local_dir().iterdir() if p.name.startswith("shard_"))


# -- hub datasets ----------------------------------------------------------------------------------
def test_download_with_two_workers_then_rerun_is_idempotent(hub):
    ds = resolve("fineweb-edu")
    summary = download(ds, 3, workers=2, endpoint=hub.url, **FAST)
    expected = ["shard_00000.parquet", "shard_00001.parquet", "shard_00002.parquet", "shard_01822.parquet"]
    assert sorted(summary.downloaded) == expected and summary.skipped == []
    assert shard_files(ds) == expected
    assert ds.local_dir() == paths.datasets_dir() / "fineweb-edu"
    assert not (ds.local_dir() / ".download").exists()  # staging (hub bookkeeping, partial files) is gone
    assert pq.read_table(ds.local_dir() / "shard_01822.parquet").column("text").to_pylist() == docs_of(FINEWEB, 1822)

    hub.requests.clear()
    again = download(ds, 3, workers=2, endpoint=hub.url, **FAST)
    assert again.downloaded == [] and sorted(again.skipped) == expected
    assert hub.gets(".parquet") == 0 and hub.requests == []

    # More training shards never move validation: it stays pinned to shard 1822.
    val = ds.shards("val")
    download(ds, 4, workers=2, endpoint=hub.url, **FAST)
    assert ds.shards("val") == val == [ds.local_dir() / "shard_01822.parquet"]
    assert [p.name for p in ds.shards("train")] == [f"shard_{i:05d}.parquet" for i in range(4)]


@pytest.mark.parametrize("fault", ["truncate", "drop"])
def test_a_broken_transfer_is_resumed(hub, fault):
    hub.fail(f"{FINEWEB}/shard_00001.parquet", fault)
    ds = resolve("fineweb-edu")
    download(ds, 2, workers=2, endpoint=hub.url, **FAST)
    assert hub.gets("shard_00001.parquet") == 2  # what it got (half, or nothing), then the rest
    assert verify_shard(ds.local_dir() / "shard_00001.parquet") == 12


def test_server_error_is_retried(hub, capsys):
    hub.fail(f"{FINEWEB}/shard_00000.parquet", "500", times=2)
    ds = resolve("fineweb-edu")
    download(ds, 1, workers=2, endpoint=hub.url, **FAST)
    assert hub.gets("shard_00000.parquet") == 3
    assert "attempt 2/5 failed" in capsys.readouterr().err
    assert verify_shard(ds.local_dir() / "shard_00000.parquet") == 12


def test_corrupt_download_is_fetched_again(hub):
    hub.fail(f"{FINEWEB}/shard_00002.parquet", "corrupt")  # right length, wrong bytes
    ds = resolve("fineweb-edu")
    download(ds, 3, workers=2, endpoint=hub.url, **FAST)
    assert hub.gets("shard_00002.parquet") == 2
    assert pq.read_table(ds.local_dir() / "shard_00002.parquet").column("text").to_pylist() == docs_of(FINEWEB, 2)


def test_a_server_that_keeps_serving_a_corrupt_file_is_named_in_the_error(hub):
    hub.fail(f"{FINEWEB}/shard_00001.parquet", "corrupt", times=99)
    ds = resolve("fineweb-edu")
    with pytest.raises(DownloadError) as err:
        download(ds, 3, workers=2, endpoint=hub.url, retries=3, **FAST)
    message = str(err.value)
    assert str(ds.local_dir() / "shard_00001.parquet") in message
    assert f"repo file {FINEWEB}/shard_00001.parquet" in message and "after 3 attempts" in message
    assert "nanochat data download fineweb-edu -n 3" in message
    assert hub.gets("shard_00001.parquet") == 3
    # The good shards stay; the bad one never appears under a shard name, not even partly.
    assert shard_files(ds) == ["shard_00000.parquet", "shard_00002.parquet", "shard_01822.parquet"]
    assert not list(ds.local_dir().rglob("*.incomplete"))


def test_errors_that_retrying_cannot_fix_fail_at_once(hub):
    class Missing(HubDataset):
        name, repo_id, num_shards = "missing", "nobody/nothing", 10

    with pytest.raises(DownloadError, match=r"nobody/nothing/shard_00000.parquet .*HTTP 404"):
        download(Missing(), 1, workers=1, endpoint=hub.url, **FAST)
    assert hub.gets("shard_00000.parquet") == 0


def test_a_damaged_shard_on_disk_is_replaced(hub):
    ds = resolve("fineweb-edu")
    ds.local_dir().mkdir(parents=True)
    good = (hub.root / FINEWEB / "shard_00000.parquet").read_bytes()
    (ds.local_dir() / "shard_00000.parquet").write_bytes(good[: len(good) // 2])  # e.g. an old in-place writer
    summary = download(ds, 1, workers=1, endpoint=hub.url, **FAST)
    assert "shard_00000.parquet" in summary.downloaded
    assert (ds.local_dir() / "shard_00000.parquet").read_bytes() == good


def test_climbmix_fetches_its_pinned_validation_shard(hub):
    ds = resolve("climbmix")
    download(ds, 2, workers=2, endpoint=hub.url, **FAST)
    assert shard_files(ds) == ["shard_00000.parquet", "shard_00001.parquet", "shard_06542.parquet"]
    assert ds.shards("val") == [ds.local_dir() / "shard_06542.parquet"]
    assert list(ds.iter_documents("val")) == docs_of(CLIMBMIX, 6542)


def test_missing_shards_name_the_download_command(hub):
    ds = resolve("fineweb-edu")
    with pytest.raises(DatasetError, match=r"missing training shards and its validation shard shard_01822.parquet"
                                           r".*nanochat data download fineweb-edu -n 1"):
        ds.shards("train")
    download(ds, 3, workers=2, endpoint=hub.url, **FAST)
    assert ds.too_few_shards(3) is None
    assert ds.too_few_shards(12) == ("too few shards for the horizon: you have 3, need 12: "
                                     "`nanochat data download fineweb-edu -n 12`")
    assert ds.shards_for_chars(1e9) == 4 and ds.num_shards == 1823
    (ds.local_dir() / "shard_01822.parquet").unlink()
    with pytest.raises(DatasetError, match="missing its validation shard shard_01822.parquet"):
        ds.shards("val")


def test_rank_strided_iteration_over_downloaded_shards(hub):
    ds = resolve("climbmix")
    download(ds, 3, workers=2, endpoint=hub.url, **FAST)
    seen = {}
    for rank in range(2):
        seen[rank] = [(pos.shard, pos.row_group) for _, pos in ds.iter_row_groups("train", rank=rank, world=2)]
    assert seen[0] == [(0, 0), (0, 2), (1, 0), (1, 2), (2, 0), (2, 2)]  # 3 row groups of 4 documents per shard
    assert seen[1] == [(0, 1), (1, 1), (2, 1)]
    docs = [d for rank in range(2) for docs, _ in ds.iter_row_groups("train", rank=rank, world=2) for d in docs]
    assert sorted(docs) == sorted(d for i in range(3) for d in docs_of(CLIMBMIX, i))


def test_download_and_list_commands(hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    assert cmd_download("climbmix", 1, 2) == 0
    assert "climbmix: 2 shard(s) ready" in capsys.readouterr().out
    assert cmd_list(True) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["climbmix"]["shards_on_disk"] == 2 and rows["climbmix"]["shards_available"] == 6543
    assert rows["climbmix"]["bytes"] > 0 and rows["fineweb-edu"]["shards_on_disk"] == 0
    assert rows["local"]["path"] is None
    assert cmd_list(False) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["NAME", "DESCRIPTION", "SHARDS", "SIZE", "PATH"]
    assert "2/6543" in table
    with pytest.raises(UnknownName, match="unknown dataset 'fineweb'; valid datasets: climbmix, fineweb-edu, local"):
        cmd_download("fineweb", 1, 2)
    with pytest.raises(DatasetError, match="-n N with N between 1 and 6542"):
        cmd_download("climbmix", 0, 2)


def test_specs(tmp_path):
    assert resolve("starter").spec == "starter"
    with pytest.raises(DatasetError, match="takes no argument"):
        resolve("fineweb-edu:x")
    with pytest.raises(UnknownName, match=f"use local:{tmp_path}"):
        resolve(str(tmp_path))
    with pytest.raises(DatasetError, match="needs a folder"):
        resolve("local:")
    with pytest.raises(DatasetError, match="needs a folder"):
        resolve("local").shards("train")
    assert resolve(f"local:{tmp_path}").spec == f"local:{tmp_path.resolve()}"


# -- local folders ---------------------------------------------------------------------------------
def local_cache_dirs():
    root = paths.datasets_dir() / "local"
    return sorted(root.iterdir()) if root.exists() else []


def test_local_txt_folder_is_converted_once_with_a_carved_validation_shard(tmp_path, capsys):
    src = tmp_path / "texts"
    (src / "sub").mkdir(parents=True)
    for i in range(30):
        where = src / "sub" if i >= 25 else src
        (where / f"doc{i:02d}.txt").write_text(f"document {i:02d}\nline two", encoding="utf-8")
    (src / "empty.txt").write_text("  \n")
    (src / "notes.md").write_text("ignored")
    (src / ".hidden.txt").write_text("ignored too")
    ds = resolve(f"local:{src}")
    train, val = list(ds.iter_documents("train")), list(ds.iter_documents("val"))
    assert len(train) == 28 and val == ["document 00\nline two", "document 20\nline two"]
    cache = ds.local_dir()
    assert cache.parent == paths.datasets_dir() / "local" and [p.name for p in ds.shard_paths()] == [
        "shard_00000.parquet", "shard_00001.parquet"]
    assert json.loads((cache / "source.json").read_text())["documents"] == 30
    assert "converting 31 file(s)" in capsys.readouterr().err

    again = resolve(f"local:{src}")  # same files: the cache is used as it is
    assert again.local_dir() == cache and "converting" not in capsys.readouterr().err
    (src / "doc03.txt").write_text("changed", encoding="utf-8")
    changed = resolve(f"local:{src}")
    assert changed.local_dir() != cache and local_cache_dirs() == [changed.local_dir()]  # the stale cache went
    assert "changed" in list(changed.iter_documents("train"))
    assert [d.spec for d in resolve("local").variants()] == ["local", f"local:{src.resolve()}"]


def test_local_jsonl_folder_makes_row_groups_of_1024(tmp_path):
    src = tmp_path / "lines"
    src.mkdir()
    with open(src / "a.jsonl", "w", encoding="utf-8") as f:
        for i in range(2100):
            f.write(json.dumps({"text": f"line {i}", "id": i}) + ("\n\n" if i == 7 else "\n"))
    ds = resolve(f"local:{src}")
    train, val = ds.shards("train"), ds.shards("val")
    pf = pq.ParquetFile(train[0])
    assert [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)] == [1024, 971]
    assert pq.ParquetFile(val[0]).metadata.num_rows == 105
    assert pf.metadata.row_group(0).column(0).compression == "ZSTD"


def test_local_parquet_folder_is_read_in_place_and_a_single_file_is_converted(tmp_path):
    src = tmp_path / "pq"
    src.mkdir()
    for i in range(3):
        pq.write_table(pa.table({"text": [f"p{i}-{j}" for j in range(10)], "n": list(range(10))}),
                       src / f"part{i}.parquet", row_group_size=5)
    ds = resolve(f"local:{src}")
    assert ds.local_dir() == src.resolve() and local_cache_dirs() == []
    assert [p.name for p in ds.shards("train")] == ["part0.parquet", "part1.parquet"]
    assert list(ds.iter_documents("val")) == [f"p2-{j}" for j in range(10)]

    single = tmp_path / "one"
    single.mkdir()
    pq.write_table(pa.table({"text": [f"d{j}" for j in range(40)]}), single / "all.parquet")
    one = resolve(f"local:{single}")
    assert one.local_dir() != single.resolve()
    assert list(one.iter_documents("val")) == ["d0", "d20"] and len(list(one.iter_documents("train"))) == 38


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "does not exist"),
    (lambda d: d.write_text("x"), "is a file, not a folder"),
    (lambda d: (d.mkdir(), (d / "a.csv").write_text("x")), r"no .parquet, .txt or .jsonl files in .* \(found: 1 .csv\)"),
    (lambda d: (d.mkdir(), (d / "a.jsonl").write_text('{"text": "ok"}\n{"text": "ok"}\n{"body": "no"}\n')),
     r"a.jsonl line 3 has no string `text` field \(keys: body\)"),
    (lambda d: (d.mkdir(), (d / "a.jsonl").write_text('{"text": "ok"}\n{"text": \n')),
     r"a.jsonl line 2 is not valid JSON"),
    (lambda d: (d.mkdir(), (d / "a.txt").write_bytes(b"caf\xe9")),
     r"a.txt is not UTF-8 text \(bad byte at offset 3\)"),
    (lambda d: (d.mkdir(), pq.write_table(pa.table({"body": ["x"]}), d / "a.parquet")),
     r"a.parquet has no `text` column"),
    (lambda d: (d.mkdir(), (d / "a.txt").write_text("only one")), "at least 2"),
])
def test_local_bad_input_is_named_and_leaves_nothing_behind(tmp_path, make, message):
    src = tmp_path / "src"
    make(src)
    before = sorted(p.name for p in src.iterdir()) if src.is_dir() else None
    with pytest.raises(DatasetError, match=message):
        resolve(f"local:{src}").shards("train")
    assert local_cache_dirs() == []  # no half-made cache
    assert (sorted(p.name for p in src.iterdir()) if src.is_dir() else None) == before  # the source is untouched
