"""`nanochat serve`'s Flask app: the chat page and the OpenAI-compatible API over one pool of engine workers.

    app = create_app(default_model="myrun/sft", workers=1, api_key=None)   # then any WSGI server

The API's errors are JSON in OpenAI's shape on /v1/... and /api/...; with an API key set, every call
there needs `Authorization: Bearer <key>` (or `X-API-Key: <key>`), except /api/health. Flask and torch are
imported inside create_app, so importing this package (as `nanochat --help` does) stays cheap.
"""
import hmac
import importlib.util
import sys
from dataclasses import dataclass

QUEUE_SIZE = 32


@dataclass
class ServerState:
    """What the routes share: app.extensions["nanochat"]."""
    catalog: object   # nanochat.web.catalog.ModelCatalog
    pool: object      # nanochat.web.workers.WorkerPool
    api_key: str | None


def create_app(*, default_model=None, workers=1, api_key=None, max_models=2, queue_size=QUEUE_SIZE, device="auto",
               start=True):
    """The app. `default_model`: a ServedModel, a "<run>/<kind>" id, or None for the newest chat model.
    With start=True the workers start now and each loads the default model: a damaged one raises here."""
    from flask import Flask, jsonify, request
    from werkzeug.exceptions import HTTPException

    from nanochat.models import ModelError
    from nanochat.web import api
    from nanochat.web.catalog import ModelCatalog, ServedModel, choose_default
    from nanochat.web.errors import ApiError, error_body
    from nanochat.web.validation import MAX_BODY_BYTES
    from nanochat.web.workers import WorkerPool

    if isinstance(default_model, str):
        run, _, kind = default_model.partition("/")
        default_model = choose_default(run=run, stage=kind or None)
    elif default_model is None:
        try:
            default_model = choose_default()
        except ModelError:
            default_model = None  # nothing trained yet: the page says how to train one
    if default_model is not None and not isinstance(default_model, ServedModel):
        raise TypeError(f"default_model must be a ServedModel, a model id or None, got {default_model!r}")

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["JSON_SORT_KEYS"] = False
    app.json.ensure_ascii = False
    catalog = ModelCatalog(default_model)
    pool = WorkerPool(catalog, workers=workers, queue_size=queue_size, max_models=max_models, device=device)
    app.extensions["nanochat"] = ServerState(catalog=catalog, pool=pool, api_key=api_key or None)

    def is_api(path):
        return path.startswith(("/v1/", "/api/")) or path in ("/v1", "/api")

    @app.before_request
    def check_key():
        if not api_key or not is_api(request.path) or request.path == "/api/health":
            return None
        given = request.headers.get("X-API-Key") or ""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = token.strip()
        if not hmac.compare_digest(given.encode("utf-8", "replace"), api_key.encode("utf-8")):
            what = "a wrong API key" if given else "no API key"
            return jsonify(error_body(401, f"this server needs its API key and got {what}; send the header "
                                           "'Authorization: Bearer <key>' (the key `nanochat serve` printed)",
                                      code="invalid_api_key")), 401
        return None

    @app.errorhandler(ApiError)
    def api_error(exc):
        return jsonify(exc.body()), exc.status, exc.headers

    @app.errorhandler(api.ClientGone)
    def client_gone(exc):
        return "", 499  # nobody reads it: the client closed the connection

    @app.errorhandler(HTTPException)
    def http_error(exc):
        if not is_api(request.path):
            return exc
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"the request body is larger than {MAX_BODY_BYTES:,} bytes"
        elif exc.code == 404:
            message = f"no API endpoint {request.path}; see the API section of docs/web.md"
        elif exc.code == 405:
            message = f"{request.path} does not take {request.method}"
        return jsonify(error_body(exc.code, message)), exc.code

    @app.errorhandler(Exception)
    def server_error(exc):
        import traceback
        traceback.print_exc(file=sys.stderr)
        body = error_body(500, f"internal error ({type(exc).__name__}); the server log has the details")
        return (jsonify(body), 500) if is_api(request.path) else ("internal server error", 500)

    app.register_blueprint(api.bp)
    if importlib.util.find_spec("nanochat.web.page") is not None:  # the chat page, where it is installed
        from nanochat.web.page import bp as page_bp
        app.register_blueprint(page_bp)
    if start:
        pool.start()
    return app
