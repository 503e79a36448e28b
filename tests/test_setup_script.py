"""`./setup.sh` fails loudly: a failed step stops the set-up with the command and its last lines of output."""
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_a_failed_install_stops_setup_with_the_command_and_its_output(tmp_path):
    shutil.copy(REPO / "setup.sh", tmp_path / "setup.sh")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0"\n')
    # a real virtual environment without pip: the torch install really fails ("No module named pip")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / ".venv")], check=True,
                   capture_output=True)
    result = subprocess.run(["bash", str(tmp_path / "setup.sh")], capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "setup: FAILED: .venv/bin/python -m pip install --disable-pip-version-check -q torch" in result.stderr
    assert "  | " in result.stderr and "No module named pip" in result.stderr
    assert "installed nanochat" not in result.stdout and "setup: done" not in result.stdout
    assert not (tmp_path / ".venv" / ".nanochat-setup").exists()  # a failed set-up is not marked as done
