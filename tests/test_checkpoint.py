"""Damaged checkpoints never lose work: checksums catch them, the previous one is used, disk full is named."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from nanochat import checkpoint
from nanochat.distributed import World


def _save(directory, step, value):
    model = torch.nn.Linear(4, 4)
    torch.nn.init.constant_(model.weight, value)
    return checkpoint.save(directory, step, world=World(), model=model, meta={"note": value},
                           rank_state={"loop": {"step": step}}, keep=2)


def test_manifest_records_checksums_and_last_two_are_kept(tmp_path):
    for step in (1, 2, 3):
        _save(tmp_path, step, float(step))
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_000002", "step_000003"]
    files = json.loads((tmp_path / "step_000003" / "meta.json").read_text())["files"]
    assert set(files) == {"model.pt", "rank0.pt"} and all(len(f["sha256"]) == 64 for f in files.values())
    ckpt = checkpoint.load(tmp_path)
    assert ckpt.step == 3 and ckpt.skipped is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_latest_falls_back_to_previous_with_its_name(tmp_path, damage, capsys):
    _save(tmp_path, 1, 1.0)
    _save(tmp_path, 2, 2.0)
    file = tmp_path / "step_000002" / "model.pt"
    data = file.read_bytes()
    if damage == "truncate":
        file.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        file.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    else:
        file.unlink()
    ckpt = checkpoint.load(tmp_path)
    assert ckpt.step == 1 and ckpt.meta["note"] == 1.0
    assert str(file) in ckpt.skipped
    assert str(file) in capsys.readouterr().err
    assert ckpt.model_state()["weight"].eq(1.0).all()
    with pytest.raises(checkpoint.CheckpointError, match="model.pt"):
        checkpoint.load(tmp_path / "step_000002")  # asked for by name: refused, not silently swapped


def test_damaged_pointer_falls_back_to_newest_whole_step(tmp_path):
    _save(tmp_path, 1, 1.0)
    _save(tmp_path, 2, 2.0)
    (tmp_path / "latest.json").write_text('{"st')
    ckpt = checkpoint.load(tmp_path)
    assert ckpt.step == 2 and "latest.json" in ckpt.skipped


def test_all_damaged_is_an_error_naming_each_file(tmp_path):
    _save(tmp_path, 1, 1.0)
    _save(tmp_path, 2, 2.0)
    for step in (1, 2):
        (tmp_path / f"step_00000{step}" / "rank0.pt").write_bytes(b"")
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.load(tmp_path)
    assert "step_000001" in str(err.value) and "step_000002" in str(err.value) and "afresh" in str(err.value)


def test_disk_full_keeps_previous_checkpoint_and_says_how_much_is_needed(tmp_path):
    # RLIMIT_FSIZE makes writes past the limit fail with EFBIG, as a full disk fails with ENOSPC.
    script = textwrap.dedent(f"""
        import resource, signal, sys, torch
        from nanochat import checkpoint
        from nanochat.distributed import World
        d = {str(tmp_path)!r}
        checkpoint.save(d, 1, world=World(), model=torch.nn.Linear(4, 4), rank_state={{}})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        try:
            checkpoint.save(d, 2, world=World(), model=torch.nn.Linear(1000, 100), rank_state={{}})
        except checkpoint.CheckpointError as e:
            print(e); sys.exit(3)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "no space" in proc.stdout and "0.4 MiB" in proc.stdout and "previous checkpoint is intact" in proc.stdout
    assert not list(tmp_path.glob("step_000002*"))
    ckpt = checkpoint.load(tmp_path)
    assert ckpt.step == 1 and ckpt.skipped is None
