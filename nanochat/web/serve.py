"""`nanochat serve`: the chat page and the OpenAI-compatible API on this machine, served by waitress.

    nanochat serve                          # http://127.0.0.1:8000, the newest finished chat model
    nanochat serve --run myrun --stage sft  # a particular model (any finished model can still be asked for)
    nanochat serve --host 0.0.0.0           # reachable from the network: an API key is required

waitress (pure Python, Linux / macOS / Windows) runs it, never Flask's development server. Its thread
count covers the workers, the whole queue and a few spare threads, so a request beyond the queue is
answered 503 at once instead of waiting unseen for a free thread.
"""
import errno
import ipaddress
import os
import secrets
import socket
import sys

from nanochat.errors import NanochatError
from nanochat.i18n import t
from nanochat.models import add_model_arguments
from nanochat.web import QUEUE_SIZE

SPARE_THREADS = 8  # for the page, /api/stats, /v1/models and the 503s while every worker is busy


class ServeError(NanochatError):
    pass


def add_arguments(parser) -> None:
    add_model_arguments(parser, "to serve by default")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address to listen on (default 127.0.0.1: this machine only; any other needs a key)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=None,
                        help="engine workers, one model replica each (default: one per GPU, 1 on a CPU)")
    parser.add_argument("--queue-size", type=int, default=QUEUE_SIZE,
                        help=f"requests that may wait for a worker; past that the API answers 503 (default {QUEUE_SIZE})")
    parser.add_argument("--max-models", type=int, default=2,
                        help="models a worker keeps loaded; the least recently used is unloaded past that")
    parser.add_argument("--api-key", help="the key API calls must send (default: $NANOCHAT_API_KEY; with a "
                                          "non-loopback --host and no key, one is generated and printed)")
    parser.add_argument("--open", action="store_true", help="open the chat page in the browser")


def is_loopback(host) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def port_free(host, port) -> bool:
    """Whether `port` can be bound on `host`; ServeError for an address this machine cannot listen on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}: {exc.strerror or exc}") from None
    with sock:
        if os.name != "nt":  # the same option waitress sets: a port in TIME_WAIT is still usable
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES) or getattr(exc, "winerror", None) == 10048:
                return False
            raise ServeError(f"cannot listen on --host {host}: {exc.strerror or exc} (is it an address of this "
                             "machine? 127.0.0.1 is this machine only, 0.0.0.0 every interface)") from None
    return True


def next_free_port(host, port) -> int | None:
    return next((p for p in range(port + 1, min(port + 100, 65536)) if port_free(host, p)), None)


def default_workers(device) -> int:
    from nanochat.backend import select
    backend = select(device)
    if backend.name == "cuda":
        import torch
        return max(1, torch.cuda.device_count())
    return 1


def main(args) -> int:
    from nanochat.web import create_app
    from nanochat.web.catalog import choose_default

    for name in ("port", "workers", "queue_size", "max_models"):
        value = getattr(args, name)
        low = 0 if name == "port" else 1
        if value is not None and not (low <= value <= (65535 if name == "port" else 10_000)):
            raise ServeError(f"--{name.replace('_', '-')} {value} is out of range")
    key = args.api_key or os.environ.get("NANOCHAT_API_KEY") or None
    generated = False
    if key is None and not is_loopback(args.host):
        key, generated = secrets.token_urlsafe(24), True
    if not port_free(args.host, args.port):
        free = next_free_port(args.host, args.port)
        hint = f"; try --port {free}" if free else ""
        raise ServeError(f"port {args.port} on {args.host} is in use (another nanochat serve?){hint}")

    default = choose_default(args.run, args.stage, args.checkpoint, args.tokenizer)
    workers = args.workers or default_workers(args.device)
    print(t("serve.loading", model=default.id, step=default.step, workers=workers), file=sys.stderr, flush=True)
    app = create_app(default_model=default, workers=workers, api_key=key, max_models=args.max_models,
                     queue_size=args.queue_size, device=args.device)
    return run(app, args.host, args.port, key, generated, workers + args.queue_size + SPARE_THREADS, args.open)


def run(app, host, port, key, generated, threads, open_browser) -> int:
    """Serve `app` with waitress until Ctrl-C."""
    from waitress import create_server

    # waitress refuses bodies past its own limit in plain text; below it the app answers 413 in JSON
    try:
        server = create_server(app, host=host, port=port, threads=threads, channel_request_lookahead=1,
                               max_request_body_size=8 * app.config["MAX_CONTENT_LENGTH"], ident="nanochat")
    except OSError as exc:  # taken while the model loaded, or an address this machine does not have
        app.extensions["nanochat"].pool.close()
        free = next_free_port(host, port) if port else None
        hint = f"; try --port {free}" if free else ""
        raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror or exc}){hint}") from None
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{server.effective_port}/"
    if not is_loopback(host):
        print(t("serve.beyond", host=host), flush=True)
    if generated:
        print(t("serve.key_generated", secret=key), flush=True)
    elif key:
        print(t("serve.key_given"), flush=True)
    print(t("serve.serving", url=url), flush=True)
    if open_browser:
        import threading
        import webbrowser
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    try:
        server.run()  # returns on Ctrl-C (waitress catches it)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        app.extensions["nanochat"].pool.close()
    print(t("serve.stopped"), file=sys.stderr)
    return 0
