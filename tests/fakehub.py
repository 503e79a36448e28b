"""A fake Hugging Face Hub on 127.0.0.1 for tests: real huggingface_hub code talks to it over HTTP.

Files live in a folder laid out as `<root>/<org>/<name>/<path in repo>` and are served as *dataset*
repos at one fixed commit. It answers what `hf_hub_download`, `HfApi.list_repo_tree` and
`HfApi.dataset_info` ask for, honours Range requests (resumed downloads), and can misbehave on
purpose: `hub.fail(path, "500" | "truncate" | "corrupt" | "drop", times=N)`.

Use it as a context manager or through the `fake_hub` fixture:
    with FakeHub(root) as hub:
        hf_hub_download("org/name", "file.parquet", repo_type="dataset", endpoint=hub.url)
"""
import hashlib
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self._faults: dict[str, list] = {}  # repo path -> [mode, remaining]
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                hub._serve(self, head=True)

            def do_GET(self):
                hub._serve(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    # -- test controls ---------------------------------------------------------------------------
    def fail(self, repo_path: str, mode: str, times: int = 1) -> None:
        """Make the next `times` GETs of `org/name/path` fail: 500, truncate, corrupt or drop the connection."""
        assert mode in ("500", "truncate", "corrupt", "drop")
        with self._lock:
            self._faults[repo_path] = [mode, times]

    def gets(self, suffix: str) -> int:
        return sum(1 for m, p in self.requests if m == "GET" and p.endswith(suffix))

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    # -- serving ---------------------------------------------------------------------------------
    def _take_fault(self, repo_path: str):
        with self._lock:
            fault = self._faults.get(repo_path)
            if not fault or fault[1] <= 0:
                return None
            fault[1] -= 1
            return fault[0]

    def _serve(self, h, head: bool):
        path = urllib.parse.urlparse(h.path).path
        self.requests.append(("HEAD" if head else "GET", path))
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] == ["api", "datasets"] and (len(parts) == 4 or len(parts) >= 6 and parts[4] == "revision"):
            return self._json(h, self._info("/".join(parts[2:4])), head)
        if parts[:2] == ["api", "datasets"] and len(parts) >= 6 and parts[4] == "tree":
            return self._json(h, self._tree("/".join(parts[2:4]), "/".join(parts[6:])), head)
        if parts[:1] == ["datasets"] and len(parts) >= 6 and parts[3] == "resolve":
            return self._file(h, "/".join(parts[1:3]), "/".join(parts[5:]), head)
        return self._error(h, 404, "Entry not found")

    def _repo_dir(self, repo: str) -> Path:
        return self.root / repo

    def _info(self, repo: str):
        files = sorted(p for p in self._repo_dir(repo).rglob("*") if p.is_file())
        if not files:
            return None
        return {"id": repo, "sha": COMMIT, "private": False,
                "siblings": [{"rfilename": str(p.relative_to(self._repo_dir(repo)))} for p in files]}

    def _tree(self, repo: str, sub: str):
        base = self._repo_dir(repo) / sub
        if not base.exists():
            return None
        entries = []
        for p in sorted(base.rglob("*")):
            rel = str(p.relative_to(self._repo_dir(repo)))
            if p.is_dir():
                entries.append({"type": "directory", "path": rel, "oid": COMMIT[:40]})
            else:
                entries.append({"type": "file", "path": rel, "size": p.stat().st_size, "oid": _etag(p)})
        return entries

    def _json(self, h, payload, head):
        if payload is None:
            return self._error(h, 404, "Repository not found")
        body = json.dumps(payload).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _error(self, h, code, message):
        body = json.dumps({"error": message}).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("X-Error-Message", message)
        h.end_headers()
        h.wfile.write(body)

    def _file(self, h, repo: str, rel: str, head: bool):
        path = self._repo_dir(repo) / rel
        if not path.is_file():
            return self._error(h, 404, "Entry not found")
        data = path.read_bytes()
        fault = None if head else self._take_fault(f"{repo}/{rel}")
        if fault == "500":
            return self._error(h, 500, "Internal Error (injected)")
        start = 0
        rng = h.headers.get("Range")
        if rng and rng.startswith("bytes=") and not head:
            start = int(rng[6:].split("-")[0] or 0)
        body = data[start:]
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", COMMIT)
        h.send_header("ETag", f'"{_etag(path)}"')
        h.send_header("Content-Length", str(len(body)))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        if head:
            return
        if fault == "truncate":  # promise the whole file, send half, close
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        if fault == "drop":
            h.close_connection = True
            return
        if fault == "corrupt":  # right length, wrong bytes
            body = bytes(b ^ 0xFF for b in body)
        h.wfile.write(body)


def _etag(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
