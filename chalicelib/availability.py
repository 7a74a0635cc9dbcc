"""Whether a failure is the store's, not the request's or the report's.

The store is unavailable when a request to it gets no answer (connection refused, reset or
timed out: down, restarting, unreachable) or an answer that says "not now" (a 5xx, a
throttle). Then nothing is wrong with what was asked: an API request answers 503 naming the
store, and a report waits (the bridge's spool, SQS's redelivery) instead of being dropped.
Any other error (a refused condition, a validation error, a bug) is not the store's.
"""

from __future__ import annotations

# DynamoDB's (and the local store's) answers that mean "try again later", by error code:
# pynamodb keeps the code of the answer but not its HTTP status.
NOT_NOW = frozenset({
    "InternalServerError", "InternalFailure", "ServiceUnavailable", "ServiceUnavailableException",
    "ThrottlingException", "Throttling", "ProvisionedThroughputExceededException",
    "RequestLimitExceeded", "LimitExceededException",
})


def store_unavailable(exc: BaseException) -> str | None:
    """Why the store did not serve the request that raised ``exc`` (following its causes:
    pynamodb keeps botocore's exception as ``cause``); None if the store is not at fault."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as NoConnection

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, NoConnection | HTTPClientError):
            return f"no answer: {current}"
        if isinstance(current, ClientError):
            error = current.response.get("Error", {})
            status = current.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if error.get("Code") in NOT_NOW or int(status or 0) >= 500:
                return f"{error.get('Code') or status}: {error.get('Message') or current}"
        seen.add(id(current))
        current = getattr(current, "cause", None) or current.__cause__ or current.__context__
    return None
