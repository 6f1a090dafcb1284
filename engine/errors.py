"""One error hierarchy for the engine; the service maps each class to an HTTP status."""

from __future__ import annotations


class TraceUsageError(Exception):
    """Root of every error the engine raises on purpose."""

    def __init__(self, reason: str, *, path: str | None = None) -> None:
        super().__init__(reason if path is None else f"{reason} (at {path})")
        self.reason = reason
        self.path = path


class QueryError(TraceUsageError):
    """A request's filter or query cannot be used; ``path`` says where."""


class QueryParseError(QueryError):
    """Malformed ``$expr``: unknown operator, wrong arity, bad operand."""


class UnsupportedQueryError(QueryError):
    """Well-formed, but names a field or construct the reference also rejects."""


class QueryTooComplexError(QueryError):
    """Nested deeper, or with more nodes, than the compiler accepts."""


class InvalidRequestError(TraceUsageError):
    """A request field outside its allowed values (e.g. ``summary_usage``)."""


class InputDataError(TraceUsageError):
    """Call rows or usage that cannot be read (missing columns, bad types)."""


class NotFoundError(TraceUsageError):
    """Unknown project, call or object."""


class AnswerTooLargeError(TraceUsageError):
    """A complete answer needs more calls than the request's ``limit`` allows (HTTP 413)."""
