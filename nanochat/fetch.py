"""The one way nanochat fetches things from the network: dataset shards (download.py), task data from the
hub (task_data.py) and the CORE eval bundle (evaluation/bundle.py) all go through the pieces here.

- `offline(url)`: the one offline switch. `NANOCHAT_OFFLINE=1` forbids every host but this machine (file://
  and loopback stay allowed, which is how the tests' fake servers work); `HF_HUB_OFFLINE=1`, the variable
  huggingface_hub users already know, forbids everything. Both are read here and nowhere else.
- `retrying(attempt, ...)`: the one retry policy: exponential backoff, errors that retrying cannot fix
  raised at once, and a transfer that made progress earning fresh tries.
- `PERMANENT_HTTP`: the HTTP answers that retrying cannot fix.
- `unreachable(url)`: one quick TCP connect, so a machine with no network learns it at once.
- `TransferProgress`: the one progress display (a line per finished file, a live status line on a terminal);
  `hub_byte_counter` feeds it from huggingface_hub downloads instead of hub's own bars.
"""
import os
import socket
import threading
import time
import urllib.parse
from typing import Callable, TypeVar

OFFLINE_VARS = ("HF_HUB_OFFLINE", "NANOCHAT_OFFLINE")
PERMANENT_HTTP = frozenset({400, 401, 403, 404, 410})  # wrong name, or no access: retrying will not help
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
T = TypeVar("T")


def _is_set(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def is_local(url: str | None) -> bool:
    """True for file:// URLs and this machine's loopback addresses: what stays allowed under NANOCHAT_OFFLINE."""
    parsed = urllib.parse.urlsplit(url or "")
    return parsed.scheme == "file" or parsed.hostname in ("127.0.0.1", "localhost", "::1")


def offline(url: str | None = None) -> str | None:
    """The variable that forbids fetching `url` (None = the default hub), or None when fetching is allowed."""
    if _is_set("HF_HUB_OFFLINE"):
        return "HF_HUB_OFFLINE"
    if _is_set("NANOCHAT_OFFLINE") and not is_local(url):
        return "NANOCHAT_OFFLINE"
    return None


def unreachable(url: str | None) -> str | None:
    """Why the host of `url` (None = huggingface.co) cannot be reached, or None when it can or a proxy is set.

    huggingface_hub retries a dead connection for about 25 s; one TCP connect answers in at most 5.
    """
    if any(os.environ.get(v) for v in PROXY_VARS):
        return None
    parsed = urllib.parse.urlsplit(url or "https://huggingface.co")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=5).close()
        return None
    except OSError as exc:
        return f"{parsed.hostname}:{port}: {exc.strerror or exc}"


def retrying(attempt: Callable[[int], T], *, tries: int, backoff: float, fatal: tuple = (),
             on_retry: Callable[[int, BaseException, float], None] | None = None,
             wait: Callable[[float], object] = time.sleep, progressed: Callable[[], bool] | None = None) -> T:
    """Call `attempt(n)` for n = 1, 2, ... until it returns, and return what it returned.

    An exception of a `fatal` type passes through at once. Any other is retried after `backoff`, then 2x, 4x
    ... seconds (`on_retry(n, error, delay)` is told first, `wait(delay)` sleeps), until `tries` attempts in a
    row have failed; then the last error is raised. When `progressed()` says a failed attempt still got
    somewhere (a resumed transfer grew), the count starts again: a slow, flaky link still finishes.
    """
    failures = 0
    for n in range(1, 1 << 30):
        try:
            return attempt(n)
        except fatal:
            raise
        except Exception as exc:
            failures = 0 if progressed is not None and progressed() else failures + 1
            if failures >= tries:
                raise
            delay = backoff * 2 ** max(failures - 1, 0)
            if on_retry is not None:
                on_retry(n, exc, delay)
            wait(delay)
    raise AssertionError("unreachable")


def size_text(n: float) -> str:
    """Bytes for people: 512 B, 3.4 MB, 1.2 GB (powers of 1000, like the hub shows them)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


class TransferProgress:
    """One line per event, plus a live status line (files done, bytes, rate) when `out` is a terminal.

    Lines go to `out` (a text stream), or to `log(text)` when given (a stage's log): there, instead of the
    live line, one line says how far a long transfer got about every tenth of it (see `expect_bytes`).
    Thread-safe: download threads call `add_bytes` as bytes arrive and `line` when a file is done or retried.
    """

    def __init__(self, label: str, total: int, out=None, unit: str = "files", *, log=None):
        self.label, self.total, self.out, self.unit, self.log = label, total, out, unit, log
        self.done = self.bytes = 0
        self.start = self.shown = time.monotonic()
        self.live = log is None and hasattr(out, "isatty") and out.isatty()
        self.lock = threading.Lock()
        self.expect_bytes(None, 0)

    def expect_bytes(self, expected: int | None, have: int) -> None:
        """A transfer of `expected` bytes (None = unknown) starts, with `have` already here (a resume)."""
        self.expected, self.bytes = expected, have
        self.step = max((expected or 0) // 10, 16 << 20)  # about ten lines, none closer than 16 MiB
        self.next_report = have + self.step

    def add_bytes(self, n: int) -> None:
        with self.lock:
            self.bytes += n
            if self.live and time.monotonic() - self.shown > 0.25:
                self._status()
        if self.log is not None and self.bytes >= self.next_report:
            self.next_report += self.step
            self.line(f"{self.label}: {self.bytes / 1e6:.1f}" + (f" / {self.expected / 1e6:.1f}" if self.expected
                                                                    else "") + " MB")

    def line(self, text: str, finished: bool = False) -> None:
        with self.lock:
            self.done += finished
            text = f"[{self.done}/{self.total}] {text}" if finished else text
            if self.log is not None:
                self.log(text)
                return
            if self.live:
                self.out.write("\r\033[K")
            self.out.write(f"  {text}\n")
            if self.live:
                self._status()
            self.out.flush()

    def _status(self) -> None:
        rate = self.bytes / max(time.monotonic() - self.start, 1e-6)
        self.out.write(f"\r\033[K{self.label}: {self.done}/{self.total} {self.unit}, {size_text(self.bytes)}, "
                       f"{size_text(rate)}/s")
        self.out.flush()
        self.shown = time.monotonic()

    def close(self) -> None:
        if self.live:
            self.out.write("\r\033[K")
            self.out.flush()


def hub_byte_counter(progress: TransferProgress, on_update: Callable[[], None] | None = None) -> type:
    """A tqdm class for huggingface_hub's `tqdm_class=` that draws nothing and feeds `progress` instead.

    `on_update()` is called with every chunk; raising there stops the download (Ctrl-C in another thread).
    """
    from tqdm import tqdm

    class ByteCounter(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if on_update is not None:
                on_update()
            progress.add_bytes(n or 0)

        # Having these tells huggingface_hub's Xet path to use one bar, not a second one for network bytes
        # (which would count every byte twice); we show file bytes only.
        def update_transfer(self, n=1):
            pass

        def set_transfer_postfix_str(self, *args, **kwargs):
            pass

    return ByteCounter
