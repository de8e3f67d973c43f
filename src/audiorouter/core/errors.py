"""Provider-neutral errors. Each carries an HTTP status, a machine code, the offending field and metadata;
the API layer renders them in the dialect's envelope (OpenRouter or OpenAI)."""
from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    status: int = 500
    type: str = "server_error"

    def __init__(self, message: str, *, param: str | None = None, metadata: dict[str, Any] | None = None,
                 status: int | None = None, headers: dict[str, str] | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.metadata = dict(metadata or {})
        if param and "param" not in self.metadata:
            self.metadata["param"] = param
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})
        self.code = code or self.type


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class AuthError(GatewayError):
    status = 401
    type = "authentication_error"


class PaymentRequired(GatewayError):
    status = 402
    type = "insufficient_quota"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "request_too_large"


class ClientClosed(GatewayError):
    """The client closed the connection before its request body was complete. A normal event, not a fault:
    there is nobody left to answer (499, nginx's number for it, is what the access log shows) and a ledger
    row, if one was open, ends `cancelled`."""
    status = 499
    type = "client_closed_request"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"


class Overloaded(GatewayError):
    """Our own capacity is exhausted (local worker queue full)."""
    status = 503
    type = "overloaded_error"


class UpstreamError(GatewayError):
    """A provider failed; `retryable` tells the router whether another attempt may succeed."""
    status = 502
    type = "upstream_error"

    def __init__(self, message: str, *, retryable: bool = True, upstream_status: int | None = None,
                 retry_after: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.retryable = retryable
        self.upstream_status = upstream_status
        self.retry_after = retry_after


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"
