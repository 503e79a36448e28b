"""Isolated Python execution: the calculator tool and running generated code (HumanEval).

Two tools live here:

- `use_calculator(expr)` answers the model's `<|python_start|>expr<|python_end|>` tool calls during generation.
  It runs in-process on every call, so it is a tiny AST evaluator for exactly two forms (arithmetic, and
  `'word'.count('x')`): microseconds, no `eval`, no signals, safe to call from any thread.
- `execute(code)` runs arbitrary generated code in a fresh `python -I -S` child process with resource limits, a
  throwaway working directory, a scrubbed environment, no network and a capped output, and always comes back
  with one of four statuses: "ok", "error", "timeout", "memory".

This file holds both halves of `execute`: the parent side (top) and the child side (`_child_main`, bottom),
which runs when the parent starts this very file as a script. On Linux the child first puts itself behind the
kernel boundary of `sandbox_boundary.py` (namespaces, a private root, no privileges), which holds against code
that undoes Python-level guards; then it applies its limits and guards to itself and runs the code. Where the
kernel refuses namespaces, only the limits and guards remain: NANOCHAT_SANDBOX decides whether that is
acceptable (see docs/sandbox.md).
"""
from __future__ import annotations

import ast
import builtins
import io
import math
import os
import selectors
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
import warnings
from dataclasses import dataclass

# -----------------------------------------------------------------------------
# The calculator tool

_ARITHMETIC_CHARS = frozenset("0123456789*+-/.() ")
_COUNT_CHARS = frozenset(string.ascii_letters + string.digits + "'\"()._ ")
# Same list as the reference engine, so the model sees the same tool behaviour; the AST check below is what
# actually keeps the evaluation safe.
_FORBIDDEN_WORDS = ("__", "import", "exec", "eval", "compile", "open", "file", "input", "raw_input",
                    "globals", "locals", "vars", "dir", "getattr", "setattr", "delattr", "hasattr")
_MAX_EXPR_CHARS = 1000  # tool calls are short; this also bounds parse time and string sizes
_MAX_MAGNITUDE = 10**100  # any intermediate result beyond this is refused (no `**`, so this is plenty)

_BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b}
_UNARY = {ast.UAdd: lambda a: +a, ast.USub: lambda a: -a}


def use_calculator(expr: str) -> str | None:
    """The calculator tool: the result of `expr` as text, or None when it is not allowed or fails.

    Commas are dropped first (the model writes 1,000). Allowed: arithmetic on numbers with + - * / // and
    parentheses (no `**`), or `'text'.count('x')` on a string literal. Anything else gives None.
    """
    expr = expr.replace(",", "").strip()
    if not expr or len(expr) > _MAX_EXPR_CHARS:
        return None
    chars = set(expr)
    if chars <= _ARITHMETIC_CHARS:
        if "**" in expr:
            return None
        evaluate = _arithmetic
    elif chars <= _COUNT_CHARS and ".count(" in expr and not any(w in expr.lower() for w in _FORBIDDEN_WORDS):
        evaluate = _string_count
    else:
        return None
    try:
        return str(evaluate(ast.parse(expr, mode="eval").body))
    except (SyntaxError, ValueError, TypeError, ArithmeticError, RecursionError, MemoryError):
        return None


def _arithmetic(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        value = node.value
    elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        value = _UNARY[type(node.op)](_arithmetic(node.operand))
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        value = _BINARY[type(node.op)](_arithmetic(node.left), _arithmetic(node.right))
    else:
        raise ValueError(f"not plain arithmetic: {ast.dump(node)}")
    if not abs(value) <= _MAX_MAGNITUDE:  # also catches inf and nan
        raise OverflowError(f"calculator result too large: {value!r:.40}")
    return value


def _string_count(node: ast.AST) -> int:
    # Exactly '<literal>'.count('<literal>'); commas are gone by now, so there can be no start/end arguments.
    ok = (isinstance(node, ast.Call) and not node.keywords and len(node.args) == 1
          and isinstance(node.func, ast.Attribute) and node.func.attr == "count"
          and isinstance(node.func.value, ast.Constant) and type(node.func.value.value) is str
          and isinstance(node.args[0], ast.Constant) and type(node.args[0].value) is str)
    if not ok:
        raise ValueError(f"not a '<text>'.count('<text>') call: {ast.dump(node)}")
    return node.func.value.value.count(node.args[0].value)


# -----------------------------------------------------------------------------
# Running code in a child process: the parent side

MAX_OUTPUT_BYTES = 64 * 1024  # per stream; more is cut from the middle (the end keeps the traceback)
_TAIL_BYTES = 4 * 1024  # how much of the end of a truncated stream is kept
_MAX_FILE_BYTES = 16 * 1024 * 1024  # RLIMIT_FSIZE: the largest file the code may write
_MAX_OPEN_FILES = 64  # RLIMIT_NOFILE
_READ_CHUNK = 64 * 1024
_POLL_SECONDS = 0.1  # how often the read loop checks whether the child has exited


@dataclass(frozen=True)
class ExecResult:
    status: str  # "ok" | "error" | "timeout" | "memory"
    stdout: str
    stderr: str
    returncode: int  # the child's exit code; negative = killed by that signal (-9 after a timeout)
    duration: float  # wall-clock seconds, start to finish

    @property
    def ok(self) -> bool:
        return self.status == "ok"


SETTING = "NANOCHAT_SANDBOX"  # auto (default) | strict | guards: see docs/sandbox.md
_SETTINGS = ("auto", "strict", "guards")


class SandboxUnavailable(RuntimeError):
    """NANOCHAT_SANDBOX=strict and this machine's kernel does not give the sandbox its boundary."""


def execute(code: str, *, timeout: float = 5.0, memory_mb: int = 256,
            max_output_bytes: int = MAX_OUTPUT_BYTES, stdin: str | None = None) -> ExecResult:
    """Run `code` as a Python program in a fresh, limited child process and report how it ended.

    "ok" = exit code 0; "error" = any other exit (the traceback is in stderr); "timeout" = still running after
    `timeout` seconds of wall clock (or out of CPU time) and killed, with everything it started;
    "memory" = it ran out of its `memory_mb` address space. Never raises for anything the code does; raises
    SandboxUnavailable when NANOCHAT_SANDBOX=strict and the kernel boundary cannot be built here.
    """
    if os.name != "posix":
        raise NotImplementedError("nanochat.sandbox.execute needs Linux or macOS (process groups, rlimits)")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive, finite number of seconds, got {timeout!r}")
    if memory_mb < 16:
        raise ValueError(f"memory_mb must be at least 16 (the interpreter itself needs some), got {memory_mb!r}")
    if max_output_bytes < 1:
        raise ValueError(f"max_output_bytes must be at least 1, got {max_output_bytes!r}")
    return _execute(code, timeout, memory_mb, max_output_bytes, stdin, _use_boundary())


_NOT_PROBED = object()
_boundary_reason = _NOT_PROBED  # what boundary_unavailable_reason() found, once per process
_boundary_lock = threading.Lock()
_warned_without_boundary = False


def boundary_unavailable_reason() -> str | None:
    """None when execute() runs code behind the kernel boundary on this machine, else the reason it cannot.

    Found out once per process by building the boundary around a one-line program.
    """
    global _boundary_reason
    with _boundary_lock:
        if _boundary_reason is _NOT_PROBED:
            _boundary_reason = _probe_boundary()
        return _boundary_reason


def _use_boundary() -> bool:
    global _warned_without_boundary
    setting = os.environ.get(SETTING, "").strip().lower() or "auto"
    if setting not in _SETTINGS:
        raise ValueError(f"{SETTING}={os.environ[SETTING]!r} is not a sandbox setting: use one of "
                         f"{', '.join(_SETTINGS)} (see docs/sandbox.md)")
    if setting == "guards":
        return False
    reason = boundary_unavailable_reason()
    if reason is None:
        return True
    if setting == "strict":
        raise SandboxUnavailable(
            f"{SETTING}=strict: refusing to run code without the kernel boundary ({reason}). Run on Linux with "
            f"user namespaces allowed (or as root with CAP_SYS_ADMIN), or set {SETTING}=auto to accept the "
            f"Python-level guards alone")
    if not _warned_without_boundary:
        _warned_without_boundary = True
        warnings.warn(f"nanochat.sandbox: no kernel boundary on this machine ({reason}); generated code runs "
                      f"behind Python-level guards only, which code written to escape can undo. "
                      f"Set {SETTING}=strict to refuse instead (see docs/sandbox.md).", RuntimeWarning, stacklevel=3)
    return False


def _probe_boundary() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"{sys.platform} has no Linux namespaces"
    result = _execute("print('inside')", 30.0, 256, MAX_OUTPUT_BYTES, None, boundary=True)
    if result.status == "ok" and result.stdout == "inside\n":
        return None
    lines = result.stderr.strip().splitlines() or [f"the probe ended with status {result.status}"]
    return lines[-1].removeprefix("sandbox: could not build the kernel boundary: ")


def _execute(code, timeout, memory_mb, max_output_bytes, stdin, boundary: bool) -> ExecResult:
    start = time.monotonic()
    root = tempfile.mkdtemp(prefix="nanochat-sandbox-")
    try:
        # The program and its stdin sit next to (not inside) the working directory the code may write to.
        program = os.path.join(root, "program.py")
        with open(program, "wb") as f:
            f.write(code.encode("utf-8", errors="surrogatepass"))
        workdir = os.path.join(root, "work")
        os.mkdir(workdir, 0o700)
        stdin_file = subprocess.DEVNULL  # the code reads EOF unless given input
        if stdin is not None:
            with open(os.path.join(root, "stdin.txt"), "w", encoding="utf-8", errors="replace") as f:
                f.write(stdin)
            stdin_file = open(f.name, "rb")  # a file, not a pipe: no deadlock however much input there is
            os.unlink(f.name)  # nameless: the code cannot reopen it for writing through /proc/self/fd/0
        try:
            return _run(program, workdir, stdin_file, start, timeout, memory_mb, max_output_bytes, boundary)
        finally:
            if stdin is not None:
                stdin_file.close()
    finally:
        _remove_tree(root)


def _run(program, workdir, stdin_file, start, timeout, memory_mb, max_output_bytes, boundary) -> ExecResult:
    cpu_seconds = math.ceil(timeout) + 1  # a backstop; the wall clock normally fires first
    # -I: isolated mode (PYTHON* variables ignored, no user site-packages, no script dir on sys.path);
    # -S: no `site` start-up, whose .pth files run code (an editable install's import hook takes tens of
    # milliseconds) before any limit is in place; the child puts our site-packages on its path itself.
    # -B: no .pyc files written; -X utf8: text I/O is UTF-8 whatever the locale.
    command = [sys.executable, "-I", "-S", "-B", "-X", "utf8", os.path.abspath(__file__),
               program, workdir, str(int(memory_mb * 1024 * 1024)), str(cpu_seconds),
               "boundary" if boundary else "guards", os.pathsep.join(_site_packages())]
    # Nothing inherited: no API keys, tokens or proxies. TMPDIR/HOME point into the working directory so
    # libraries that write scratch files stay inside it; numeric libraries are kept to one thread.
    env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    try:
        # A new session makes the child the leader of its own process group, so one killpg reaches
        # everything it started, and signals aimed at our group (Ctrl-C) do not reach it.
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdin=stdin_file, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:  # e.g. the machine is out of processes: report it, do not crash the caller
        return ExecResult("error", "", f"sandbox: could not start {sys.executable}: {e}\n", -1,
                          time.monotonic() - start)
    deadline = start + timeout
    try:
        stdout, stderr, timed_out = _collect(proc, deadline, max_output_bytes)
        if not timed_out:  # the pipes closed; the child may still be running without them
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        _kill_group(proc.pid)  # stragglers: the timed-out program, or anything it left behind
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    return ExecResult(_status(proc.returncode, timed_out, stderr.tail_text()), stdout.text(), stderr.text(),
                      proc.returncode, time.monotonic() - start)


def _site_packages() -> list[str]:
    """The site-packages directories on our path (a virtual environment's included), for the child's path."""
    return [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages") and os.path.isdir(p)]


def _collect(proc, deadline, cap) -> tuple[_Capture, _Capture, bool]:
    """Read stdout and stderr as they come until both close or the deadline passes (then True)."""
    stdout, stderr = _Capture(cap), _Capture(cap)
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ, stdout)
        selector.register(proc.stderr, selectors.EVENT_READ, stderr)
        exited = False
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return stdout, stderr, True
            for key, _ in selector.select(min(remaining, _POLL_SECONDS)):
                chunk = os.read(key.fd, _READ_CHUNK)
                if chunk:
                    key.data.add(chunk)
                else:
                    selector.unregister(key.fileobj)
            if not exited and proc.poll() is not None:
                exited = True
                # Leftovers holding our pipes open would keep us waiting. (The group id cannot be handed to
                # another process while members of the group remain, so killing it after the reap is safe.)
                _kill_group(proc.pid)
    return stdout, stderr, False


class _Capture:
    """One output stream, kept to about `cap` bytes: the start and the last few KiB, the middle dropped."""

    def __init__(self, cap: int):
        self.tail_cap = min(_TAIL_BYTES, cap // 4)
        self.head_cap = cap - self.tail_cap
        self.head, self.tail, self.dropped = bytearray(), bytearray(), 0

    def add(self, chunk: bytes) -> None:
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        excess = len(self.tail) - self.tail_cap
        if excess > 0:
            del self.tail[:excess]
            self.dropped += excess

    def tail_text(self) -> str:
        return bytes(self.head[-_TAIL_BYTES:] + self.tail)[-_TAIL_BYTES:].decode("utf-8", errors="replace")

    def text(self) -> str:
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        if not self.dropped:
            return head + tail
        return f"{head}\n[... sandbox: {self.dropped} bytes of output dropped ...]\n{tail}"


def _status(returncode: int, timed_out: bool, stderr_tail: str) -> str:
    if timed_out or returncode == -signal.SIGXCPU:  # wall clock, or RLIMIT_CPU
        return "timeout"
    if returncode == 0:
        return "ok"
    lines = stderr_tail.strip().splitlines()
    last = lines[-1] if lines else ""
    if last.startswith("MemoryError") or "Cannot allocate memory" in last:
        return "memory"
    return "error"


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:  # the group is already gone
        pass


def _remove_tree(root: str) -> None:
    shutil.rmtree(root, ignore_errors=True)
    if os.path.exists(root):
        # The code left directories it made unreadable (root is never stopped by that, so this is an ordinary
        # user, who owns them): open them up again, then remove the rest.
        for dirpath, dirnames, _ in os.walk(root):
            for name in dirnames:
                path = os.path.join(dirpath, name)
                if not os.path.islink(path):
                    try:
                        os.chmod(path, 0o700)
                    except OSError:
                        pass
        shutil.rmtree(root, ignore_errors=True)


# -----------------------------------------------------------------------------
# The child side: runs as
# `python -I -S <this file> program workdir memory_bytes cpu_seconds boundary|guards site-packages`

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000


def _child_main(program: str, workdir: str, memory_bytes: int, cpu_seconds: int, boundary: bool,
                site_packages: list[str]) -> None:
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core files from any of the processes below
    sys.path.extend(site_packages)  # third-party packages stay importable, without their .pth hooks
    with open(program, "rb") as f:
        source = f.read()
    if boundary:
        try:
            _load_boundary().enter(workdir, program, source, site_packages)  # returns in the program only
        except OSError as e:
            print(f"sandbox: could not build the kernel boundary: {e}", file=sys.stderr, flush=True)
            sys.exit(125)
    else:
        _isolate_network()
    _set_limits(memory_bytes, cpu_seconds)
    _install_guards(workdir)
    # Run the code as a fresh __main__ module that holds none of this file's names.
    main = types.ModuleType("__main__")
    main.__file__ = program
    sys.modules["__main__"] = main
    sys.argv = [program]
    try:
        # dont_inherit: the code must not pick up this file's `from __future__ import annotations`.
        exec(compile(source, program, "exec", dont_inherit=True), main.__dict__)
    except SystemExit:
        raise
    except BaseException as e:  # print the code's own traceback, without this file's frame on top
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)
        sys.exit(1)


def _load_boundary() -> types.ModuleType:
    """nanochat/sandbox_boundary.py: the child runs this file as a script, not from the package."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import sandbox_boundary
    finally:
        del sys.path[0]
    return sandbox_boundary


def _isolate_network() -> None:
    """Enter a new, empty network namespace (only a downed loopback) when the kernel allows it.

    Root may create one directly; an ordinary user may through a user namespace. Elsewhere (macOS, containers
    that forbid namespaces) this quietly does nothing and the socket guard in _install_guards remains.
    """
    if not sys.platform.startswith("linux"):
        return
    for flags in (_CLONE_NEWNET, _CLONE_NEWUSER | _CLONE_NEWNET):
        try:
            _unshare(flags)
            return
        except OSError:
            continue


def _unshare(flags: int) -> None:
    if hasattr(os, "unshare"):  # Python 3.12+
        os.unshare(flags)
        return
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _set_limits(memory_bytes: int, cpu_seconds: int) -> None:
    import resource
    limits = [
        ("RLIMIT_AS", memory_bytes),  # allocations beyond this raise MemoryError
        ("RLIMIT_CPU", cpu_seconds),  # SIGXCPU when spent (hard limit one second later: SIGKILL)
        ("RLIMIT_FSIZE", _MAX_FILE_BYTES),  # no file larger than this
        ("RLIMIT_CORE", 0),  # no core dumps
        # Few open files: each memory-backed file (memfd) may hold up to RLIMIT_FSIZE outside RLIMIT_AS.
        ("RLIMIT_NOFILE", _MAX_OPEN_FILES),
        # No new processes or threads. Root is exempt from this one, hence the fork guards below too.
        ("RLIMIT_NPROC", 0),
    ]
    for name, soft in limits:
        hard = soft + 1 if name == "RLIMIT_CPU" else soft
        try:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        except (AttributeError, ValueError, OSError):  # not on this platform (macOS ignores RLIMIT_AS)
            pass
    sys.modules["resource"] = None  # `import resource` now fails: the limits stay where they are


def _install_guards(workdir: str) -> None:
    """Python-level guards: no new processes, no signals to others, no sockets, writes only in `workdir`.

    They stop honest code and accidents; code that means to can undo them (ctypes, re-imports).
    """
    import _posixsubprocess
    import socket
    import _socket

    def refuse(what):
        def refused(*args, **kwargs):
            raise PermissionError(f"{what} is disabled in the nanochat sandbox")
        return refused

    # Processes: fork/exec/spawn of any kind (subprocess and multiprocessing go through these too).
    for name in ("fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "kill", "killpg"):
        if hasattr(os, name):
            setattr(os, name, refuse(f"os.{name}"))
    for name in dir(os):
        if name.startswith(("exec", "spawn")):
            setattr(os, name, refuse(f"os.{name}"))
    subprocess.Popen._execute_child = refuse("subprocess")  # where every Popen starts its process
    _posixsubprocess.fork_exec = refuse("starting a subprocess")  # multiprocessing's way in
    if hasattr(signal, "pidfd_send_signal"):
        signal.pidfd_send_signal = refuse("signal.pidfd_send_signal")

    # Network: no new sockets and no name lookups. socket.socket initialises through _socket.socket, so
    # guarding that one class covers both. Wrapping an existing descriptor stays allowed so that
    # socket.socketpair() (asyncio's event loop uses one) still works.
    c_socket = _socket.socket

    class GuardedSocket(c_socket):
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if fileno is None:
                raise PermissionError("network access is disabled in the nanochat sandbox")
            c_socket.__init__(self, family, type, proto, fileno)

    _socket.socket = _socket.SocketType = GuardedSocket
    for module in (socket, _socket):
        for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "create_connection",
                     "create_server"):
            if hasattr(module, name):
                setattr(module, name, refuse(f"socket.{name}"))

    # Files: anything that creates, changes or removes a path must resolve inside workdir. Reads are free.
    root = os.path.realpath(workdir)

    def check(path, dir_fd=None):
        if isinstance(path, int):  # an already-open descriptor
            return
        try:  # a path relative to a directory descriptor (shutil.rmtree uses these) resolves through /proc
            base = os.getcwd() if dir_fd is None else os.readlink(f"/proc/self/fd/{dir_fd}")
        except OSError:
            base = "/nonexistent"
        full = os.path.realpath(os.path.join(base, os.fsdecode(os.fspath(path))))
        if full != root and not full.startswith(root + os.sep):
            raise PermissionError(f"writing to {full} is disabled in the nanochat sandbox "
                                  f"(only the working directory {root} is writable)")

    def confine(function):
        def confined(*args, **kwargs):
            if kwargs.get("src_dir_fd") is not None or kwargs.get("dst_dir_fd") is not None:
                raise PermissionError("src_dir_fd/dst_dir_fd are disabled in the nanochat sandbox")
            for arg in args:
                if isinstance(arg, (str, bytes, os.PathLike)):
                    check(arg, kwargs.get("dir_fd"))
            return function(*args, **kwargs)
        return confined

    for name in ("remove", "unlink", "rmdir", "rename", "replace", "mkdir", "chmod", "chown", "lchown",
                 "link", "symlink", "truncate", "utime", "mkfifo", "mknod"):
        if hasattr(os, name):
            setattr(os, name, confine(getattr(os, name)))

    original_os_open = os.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & write_flags:
            check(path, kwargs.get("dir_fd"))
        return original_os_open(path, flags, *args, **kwargs)

    original_open = io.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            check(file)
        return original_open(file, mode, *args, **kwargs)

    os.open = guarded_os_open
    builtins.open = io.open = guarded_open


if __name__ == "__main__":
    _child_main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "boundary",
                [p for p in sys.argv[6].split(os.pathsep) if p])
