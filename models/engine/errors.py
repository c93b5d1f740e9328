"""Errors a caller of the fill-mask engine can cause or meet.

Each one carries a stable ``code`` (used in the worker's JSON errors and by the bot to pick a template),
an HTTP status for the worker, and a message written for a person typing into a chat.
"""

from __future__ import annotations


class FillMaskError(Exception):
    """Base class: something about this request that the caller can fix or retry."""

    code = "fill_mask_error"
    http_status = 400

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class EmptyInputError(FillMaskError):
    code = "empty_input"


class NoMaskError(FillMaskError):
    code = "no_mask"


class TooManyMasksError(FillMaskError):
    code = "too_many_masks"


class InputTooLongError(FillMaskError):
    code = "input_too_long"
    http_status = 413


class InvalidParameterError(FillMaskError):
    code = "invalid_parameter"


class TargetNotSingleTokenError(FillMaskError):
    code = "target_not_single_token"


class BusyError(FillMaskError):
    """The queue is full: the caller should try again in a moment."""

    code = "busy"
    http_status = 503


class RequestTimeoutError(FillMaskError):
    code = "timeout"
    http_status = 504


class ModelNotReadyError(FillMaskError):
    code = "not_ready"
    http_status = 503


class ModelLoadFailedError(FillMaskError):
    """The worker's model failed to load; the worker is about to exit so that its supervisor restarts it."""

    code = "model_failed"
    http_status = 503


class ShuttingDownError(FillMaskError):
    code = "shutting_down"
    http_status = 503


class ModelOverloadedError(FillMaskError):
    """Even a batch of one did not fit in device memory."""

    code = "out_of_memory"
    http_status = 507


class CallerBusyError(BusyError):
    """This caller already has as many sentences in the worker's queue as one caller may: the others' share is
    kept for them. (Code ``busy``, as for a full queue; 429 tells the caller it is theirs to slow down.)"""

    http_status = 429


class UnauthorizedError(FillMaskError):
    """The worker asks for ``Authorization: Bearer <WORKER_TOKEN>``, and the request had no such token."""

    code = "unauthorized"
    http_status = 401


class WorkerUnavailableError(FillMaskError):
    """The remote worker could not be reached (or kept failing) after retries."""

    code = "worker_unavailable"
    http_status = 502


ERRORS_BY_CODE: dict[str, type[FillMaskError]] = {
    cls.code: cls
    for cls in (
        FillMaskError,
        EmptyInputError,
        NoMaskError,
        TooManyMasksError,
        InputTooLongError,
        InvalidParameterError,
        TargetNotSingleTokenError,
        BusyError,
        RequestTimeoutError,
        ModelNotReadyError,
        ModelLoadFailedError,
        ShuttingDownError,
        ModelOverloadedError,
        UnauthorizedError,
        WorkerUnavailableError,
    )
}
