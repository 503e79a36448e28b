"""Errors the API answers with, in OpenAI's error shape:
{"error": {"message": "...", "type": "invalid_request_error", "param": "temperature", "code": null}}."""
from nanochat.errors import NanochatError

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
         503: "server_busy_error"}


class ApiError(NanochatError):
    """An answer other than 200: status, a message that says what to do, the request field at fault."""

    def __init__(self, status, message, *, param=None, code=None, headers=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self):
        return error_body(self.status, self.message, param=self.param, code=self.code)


def error_body(status, message, *, param=None, code=None):
    return {"error": {"message": message, "type": TYPES.get(status, "api_error" if status >= 500 else
                                                                 "invalid_request_error"),
                      "param": param, "code": code}}
