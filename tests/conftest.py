"""Every test gets its own NANOCHAT_HOME and loads no third-party plugin unless it asks for one."""
import os
import signal
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
REPO = TESTS.parent
# Stages and plugins written for tests live in tests/fixtures (importable as plain modules).
sys.path.insert(0, str(TESTS / "fixtures"))
os.environ["NANOCHAT_PLUGINS"] = ""
os.environ["NANOCHAT_OFFLINE"] = "1"  # nothing may reach beyond 127.0.0.1 (e.g. tiktoken's gpt2 vocab)
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
# A suite started in the background by a script (`./test.sh &`) inherits SIGINT ignored, and so would every
# process a test starts: the tests that stop a run or a server with Ctrl-C (SIGINT) need it handled.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def nanochat_home(tmp_path, monkeypatch):
    home = tmp_path / "nanochat-home"
    monkeypatch.setenv("NANOCHAT_HOME", str(home))
    monkeypatch.setenv("NANOCHAT_PLUGINS", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS / "fixtures"), os.environ.get("PYTHONPATH", "")]))
    from nanochat import plugins
    plugins.reset()
    yield home
    plugins.reset()


@pytest.fixture
def cli():
    """Run the real `nanochat` console script in a subprocess: cli(*args, env=..., check=True)."""
    import subprocess
    exe = Path(sys.executable).parent / "nanochat"

    def run(*args, env=None, timeout=300, check=True):
        result = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, **(env or {})})
        if check and result.returncode != 0:
            raise AssertionError(f"nanochat {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result
    return run
