"""nanochat.sandbox: the calculator tool and isolated execution of generated code."""
import os
import signal
import socket
import sys
import threading
import time

import pytest

from nanochat.sandbox import ExecResult, execute, use_calculator

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux-only mechanism")


def _group_alive(pgid: int, wait: float = 2.0) -> bool:
    """Whether any process of the group is still running, after giving SIGKILL a moment to land.

    Zombies do not count: a killed orphan waits for PID 1 to reap it, and some container inits never do.
    """
    deadline = time.monotonic() + wait
    while True:
        if os.path.isdir("/proc"):
            alive = any(state != "Z" for state, group in _proc_states() if group == pgid)
        else:
            try:
                os.killpg(pgid, 0)
                alive = True
            except ProcessLookupError:
                alive = False
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _proc_states():
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue
        yield fields[0], int(fields[2])


# -----------------------------------------------------------------------------
# execute: outcomes


def test_happy_path():
    r = execute("x = 6 * 7\nprint(x)")
    assert isinstance(r, ExecResult)
    assert (r.status, r.stdout, r.stderr, r.returncode) == ("ok", "42\n", "", 0)
    assert r.ok and 0 < r.duration < 5


def test_exception_is_captured_with_its_traceback():
    r = execute("def f():\n    raise ValueError('boom')\nf()")
    assert r.status == "error" and r.returncode == 1
    assert "Traceback" in r.stderr and "ValueError: boom" in r.stderr and "in f" in r.stderr
    assert "_child_main" not in r.stderr  # the sandbox's own frame is not shown


def test_syntax_error():
    r = execute("def f(:\n    pass")
    assert r.status == "error"
    assert "SyntaxError" in r.stderr


def test_exit_code_is_reported():
    assert execute("import sys; sys.exit(3)").returncode == 3
    assert execute("import sys; sys.exit(0)").status == "ok"


def test_infinite_loop_times_out_quickly():
    r = execute("while True:\n    pass", timeout=1.0)
    assert r.status == "timeout" and r.returncode == -signal.SIGKILL
    assert r.duration < 1.0 + 1.0


def test_timeout_even_after_the_program_closes_its_output():
    r = execute("import os, time\nos.close(1)\nos.close(2)\ntime.sleep(30)", timeout=1.0)
    assert r.status == "timeout" and r.duration < 2.0


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS does not enforce RLIMIT_AS")
def test_huge_allocation_is_a_memory_status():
    r = execute("x = bytearray(2 * 1024**3)", memory_mb=256)
    assert r.status == "memory"
    assert "MemoryError" in r.stderr


def test_print_flood_is_truncated_and_keeps_the_end():
    r = execute("import sys\nsys.stdout.write('x' * 20_000_000)\nprint('END')", max_output_bytes=10_000)
    assert r.status == "ok"
    assert len(r.stdout) < 10_000 + 200
    assert "bytes of output dropped" in r.stdout
    assert r.stdout.startswith("xxx") and r.stdout.endswith("END\n")


def test_stdin_given_and_closed_by_default():
    r = execute("import sys\nprint(sys.stdin.read().upper(), end='')", stdin="hello\nwörld\n")
    assert (r.status, r.stdout) == ("ok", "HELLO\nWÖRLD\n")
    r = execute("input()")
    assert r.status == "error" and "EOFError" in r.stderr


def test_unicode_output():
    r = execute("print('héllo 🙂 你好')\nimport sys; print('ünï', file=sys.stderr)")
    assert (r.status, r.stdout, r.stderr) == ("ok", "héllo 🙂 你好\n", "ünï\n")


def test_calls_from_several_threads():
    results = [None] * 4

    def work(i):
        results[i] = execute(f"print({i} * 10)")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.stdout for r in results] == ["0\n", "10\n", "20\n", "30\n"]


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="timeout"):
        execute("pass", timeout=0)
    with pytest.raises(ValueError, match="memory_mb"):
        execute("pass", memory_mb=1)


# -----------------------------------------------------------------------------
# execute: containment


def test_fork_bomb_is_contained():
    bombs = [
        "import os\nprint(os.getpid(), flush=True)\nwhile True:\n    os.fork()",
        "import os, subprocess, sys\nprint(os.getpid(), flush=True)\n"
        "while True:\n    subprocess.Popen([sys.executable, '-c', 'pass'])",
        "import multiprocessing, os\nprint(os.getpid(), flush=True)\n"
        "while True:\n    multiprocessing.Process(target=print).start()",
        "import os\nprint(os.getpid(), flush=True)\nos.system('sleep 60 &')",
    ]
    for code in bombs:
        r = execute(code, timeout=3.0)
        assert r.status == "error", (code, r)
        assert "disabled in the nanochat sandbox" in r.stderr
        assert not _group_alive(int(r.stdout.split()[0])), "processes were left behind"


def test_processes_started_behind_the_guards_do_not_outlive_the_run():
    # ctypes gets past the Python-level guards. An ordinary user's fork then fails on RLIMIT_NPROC; root is
    # exempt from that limit, and the process-group kill at the end must reap what it started.
    code = (
        "import ctypes, os, time\n"
        "print(os.getpid(), flush=True)\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.fork() == 0:\n"
        "    time.sleep(60)\n"
    )
    r = execute(code, timeout=3.0)
    assert r.status == "ok" and r.duration < 3.0  # the leftover must not hold the run open to the timeout
    assert not _group_alive(int(r.stdout.split()[0]))


def test_writes_outside_the_working_dir_fail_and_inside_are_cleaned_up(tmp_path):
    outside = tmp_path / "escaped.txt"
    attempts = [
        f"open({str(outside)!r}, 'w').write('x')",
        f"import pathlib\npathlib.Path({str(outside)!r}).write_text('x')",
        f"import os\nos.open({str(outside)!r}, os.O_WRONLY | os.O_CREAT)",
        f"import os\nos.chdir('/')\nopen({str(outside)!r}, 'a').write('x')",
        f"import os\nos.symlink({str(outside)!r}, 'link')\nopen('link', 'w').write('x')",
    ]
    for code in attempts:
        r = execute(code)
        assert r.status == "error" and "PermissionError" in r.stderr, (code, r)
        assert not outside.exists()

    inside = execute(
        "import os, shutil, tempfile\n"
        "os.makedirs('a/b')\n"
        "open('a/b/f.txt', 'w').write('hi')\n"
        "shutil.rmtree('a')\n"
        "open('kept.txt', 'w').write('hi')\n"
        "fd, name = tempfile.mkstemp()\n"
        "os.makedirs('locked/deep')\n"
        "os.chmod('locked', 0)\n"
        "print(os.getcwd())\n"
        "print(open('kept.txt').read(), os.path.dirname(name) == os.getcwd())"
    )
    assert inside.status == "ok", inside.stderr
    workdir, check = inside.stdout.splitlines()
    assert check == "hi True"
    assert not os.path.exists(workdir) and not os.path.exists(os.path.dirname(workdir))


def test_file_size_is_limited():
    r = execute("open('big', 'wb').write(b'x' * (64 << 20))")
    assert r.status == "error" and "File too large" in r.stderr


def test_sockets_cannot_reach_a_listening_server():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        attempts = [
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)",
            f"import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))",
            f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))",
            f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2)",
        ]
        for code in attempts:
            r = execute(code)
            assert r.status == "error", (code, r)
        server.settimeout(0)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody got through


def test_socketpair_still_works_for_asyncio():
    r = execute("import asyncio\nasync def f():\n    return 7\nprint(asyncio.run(f()))")
    assert (r.status, r.stdout) == ("ok", "7\n"), r.stderr


@linux_only
def test_network_namespace_stops_code_that_undoes_the_socket_guard():
    probe = execute("import os\nprint(os.readlink('/proc/self/ns/net'))")
    if probe.stdout.strip() == os.readlink("/proc/self/ns/net"):
        pytest.skip("this kernel/container refuses network namespaces; only the socket guard applies here")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        # A fresh copy of the _socket extension module does not have the guard installed.
        r = execute(
            "import importlib.util, sys\n"
            "del sys.modules['_socket']\n"
            "spec = importlib.util.find_spec('_socket')\n"
            "raw = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(raw)\n"
            "s = raw.socket(raw.AF_INET, raw.SOCK_STREAM)\n"
            "s.settimeout(2)\n"
            f"s.connect(('127.0.0.1', {port}))\n"
        )
        assert r.status == "error" and "OSError" in r.stderr, r
        server.settimeout(0)
        with pytest.raises(BlockingIOError):
            server.accept()


def test_signalling_the_parent_does_not_hurt_it():
    code = (
        "import os, signal\n"
        "for kill in (lambda: os.kill(os.getppid(), signal.SIGTERM),\n"
        "             lambda: os.killpg(os.getpgid(os.getppid()), signal.SIGTERM)):\n"
        "    try:\n"
        "        kill()\n"
        "        print('sent')\n"
        "    except PermissionError as e:\n"
        "        print('refused')\n"
    )
    r = execute(code)
    assert (r.status, r.stdout) == ("ok", "refused\nrefused\n"), r
    time.sleep(0.1)  # had a signal landed, this process would be gone by now


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("NANOCHAT_TEST_SECRET", "hunter2-do-not-leak")
    r = execute("import os\nprint(os.environ)\nprint(' '.join(os.environ))")
    assert r.status == "ok"
    assert "hunter2-do-not-leak" not in r.stdout and "NANOCHAT_TEST_SECRET" not in r.stdout
    assert set(r.stdout.splitlines()[-1].split()) <= {"PATH", "HOME", "TMPDIR", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                      "LC_CTYPE", "__CF_USER_TEXT_ENCODING"}


# -----------------------------------------------------------------------------
# use_calculator


@pytest.mark.parametrize("expr, expected", [
    ("1 + 2 * 3", "7"),
    ("10 / 4", "2.5"),
    ("7 // 2", "3"),
    ("-(3 - 5)", "2"),
    ("3.5 * 2", "7.0"),
    ("(1.5 + 2.5) / 2", "2.0"),
    ("1,234 + 1", "1235"),
    ("  12 * 12  ", "144"),
    ("'strawberry'.count('r')", "3"),
    ('"banana".count("a")', "3"),
    ("'mississippi'.count('ss')", "2"),
])
def test_calculator_answers(expr, expected):
    assert use_calculator(expr) == expected


def test_calculator_agrees_with_python_arithmetic():
    for expr in ["2 - 3 - 4", "100 / 3", "-7 // 2", "(2 + 3) * (4 - 1) / 5", "0.1 + 0.2", "+-+3", "8 / 2 * 4"]:
        assert use_calculator(expr) == str(eval(expr)), expr


@pytest.mark.parametrize("expr", [
    "",
    "2 ** 10",
    "__import__('os').system('ls')",
    "x + 1",
    "abs(-3)",
    "'abc'.upper()",
    "'abc'.count('a').real",
    "'abc'.count(x)",
    "open('f').count('a')",
    "'import'.count('i')",  # the blacklist applies inside strings too, as the reference engine does
    "'a'.count('a', start=1)",
    "'strawberry'.count('r', 5)",  # the comma is dropped first, which leaves a syntax error
    "().count(1)",
    "1 +",
    "1 / 0",
    "5 % 3",
    "1e5 * 2",
    "...",
    "2 < 3",
    "[1, 2].count(1)",
])
def test_calculator_refuses(expr):
    assert use_calculator(expr) is None


def test_calculator_refuses_huge_or_deep_input():
    assert use_calculator("9" * 200) is None  # a number beyond the magnitude cap
    assert use_calculator(" * ".join(["99999999999999999999"] * 6)) is None  # grows past the cap
    assert use_calculator("1 + " * 400 + "1") is None  # longer than the expression cap
    assert use_calculator("(" * 300 + "1" + ")" * 300) is None  # deeper than the parser allows
    assert use_calculator("-" * 900 + "1") in ("1", "-1", None)  # whatever it is, it returns


def test_calculator_is_fast():
    start = time.perf_counter()
    for _ in range(2000):
        use_calculator("12,345 * 678 + 9 / 3")
        use_calculator("'strawberry'.count('r')")
    per_call = (time.perf_counter() - start) / 4000
    assert per_call < 500e-6  # microseconds in practice; generous for a loaded machine
