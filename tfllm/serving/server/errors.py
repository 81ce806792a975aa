"""Errors with TF Serving's status codes, and how each maps to gRPC and to the REST API."""

import grpc

from tfllm import errors

# TF Serving's REST layer maps canonical codes to HTTP statuses this way (http_rest_api_handler);
# RESOURCE_EXHAUSTED for an oversized request is answered 413 by our REST front end.
_HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """A request failed with a TF Serving status.

    Args:
        code: a `grpc.StatusCode` name, e.g. "INVALID_ARGUMENT", "NOT_FOUND".
        message: what went wrong, in TF Serving's words where it has them.
        http_status: overrides the usual HTTP status for the code (413 for an oversized body).
    """

    def __init__(self, code, message, http_status=None):
        if code not in _HTTP_STATUS:
            raise ValueError(f"Invalid value for argument `code`. Expected a grpc.StatusCode name. Received: code={code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or _HTTP_STATUS[code]

    @property
    def grpc_code(self):
        return getattr(grpc.StatusCode, self.code)

    def rest_body(self):
        """TF Serving's REST error body."""
        return {"error": self.message}


def invalid_argument(message):
    """An INVALID_ARGUMENT status with `message` (TF Serving's own words where the server mimics it)."""
    return ServingError("INVALID_ARGUMENT", message)


def invalid_value(name, expected, value):
    """`tfllm.errors.invalid_argument`'s message for a request field, as an INVALID_ARGUMENT status.

    Only the exception type differs from the shared helper: a request error must carry a gRPC/HTTP
    status, so the server answers 400 instead of failing with a ValueError.
    """
    return errors.invalid_argument(name, expected, value, error=invalid_argument)


def not_found(message):
    return ServingError("NOT_FOUND", message)
