"""The one exception tree of kefu.

Every package raises these; only the edges (CLI, HTTP API) convert them into exit codes or
JSON errors. Each error carries a message that says what was wrong and what to do.
"""

from __future__ import annotations


class KefuError(Exception):
    """Base class: a failure kefu understands and can explain to a person."""

    exit_code = 1
    http_status = 500


class ConfigError(KefuError):
    """A setting or argument has a value that is not allowed."""

    exit_code = 2
    http_status = 400


class KBError(KefuError):
    """The knowledge base (or a user's documents) cannot be read or fails validation."""

    exit_code = 3
    http_status = 422

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class ModelError(KefuError):
    """The embedding model cannot be prepared or loaded."""

    exit_code = 4
    http_status = 503


class IndexStateError(KefuError):
    """The index is missing, corrupt, or does not match the configured model/normaliser."""

    exit_code = 5
    http_status = 503


class IndexMissingError(IndexStateError):
    """No index has been built yet."""


class IndexMismatchError(IndexStateError):
    """The index was built for another model, normaliser or format."""


class BuildInProgressError(IndexStateError):
    """Another build holds the index home."""


class NotFoundError(KefuError):
    """A named object (entry, build, ticket) does not exist."""

    exit_code = 6
    http_status = 404


class InputError(KefuError):
    """A request or query is malformed (too long, wrong type)."""

    exit_code = 2
    http_status = 422


class ForbiddenError(KefuError):
    """The caller is known but may not do this (a shop's admin token outside its shop)."""

    exit_code = 2
    http_status = 403
