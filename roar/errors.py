"""Errors the domain code raises; servers turn them into gRPC statuses and in-band error events.

`code` is a gRPC status name, so a stage's failure keeps its meaning on the way to the client.
"""

import errno

# A write failed because the disk or the user's quota is full.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(error: OSError) -> bool:
    return error.errno in _DISK_FULL


class RoarError(Exception):
    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(RoarError):
    """The caller sent something unusable (undecodable audio, unknown option)."""

    code = "INVALID_ARGUMENT"


class ModelUnavailable(RoarError):
    """A model could not be loaded; the message names the setting that fixes it."""

    code = "FAILED_PRECONDITION"


class Cancelled(RoarError):
    code = "CANCELLED"

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)


class NotFound(RoarError):
    code = "NOT_FOUND"


class FailedPrecondition(RoarError):
    """The call is valid but the object is not in a state that allows it."""

    code = "FAILED_PRECONDITION"


class ResourceExhausted(RoarError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(RoarError):
    """Something the server needs does not answer now (its database); the call may be retried."""

    code = "UNAVAILABLE"


class OutOfRange(RoarError):
    code = "OUT_OF_RANGE"


class Unauthenticated(RoarError):
    """No API key, or one the server does not accept (unknown, wrong or revoked)."""

    code = "UNAUTHENTICATED"


class DiskFull(ResourceExhausted):
    def __init__(self, what: str) -> None:
        super().__init__(f"the server's disk is full: {what} could not be stored; try again later")


def internal_message(error: BaseException) -> str:
    """What a client is told of an unexpected error: its kind, never its text, which can name server
    paths or internals (the server logs the whole error)."""
    return f"internal error ({type(error).__name__}); the server's log has the details"
