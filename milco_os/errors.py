"""One exception hierarchy. Messages name the input at fault and, where there is one, the fix."""

from __future__ import annotations


class MilcoError(Exception):
    """Base class of every error milco-os raises on purpose."""


class ConfigError(MilcoError):
    """A setting, option or file is missing or invalid."""


class ModelError(MilcoError):
    """A model cannot be found, loaded or does not match what is expected."""


class EncodingError(MilcoError):
    """Input text cannot be encoded (wrong type, invalid UTF-8, ...)."""


class ClusterError(MilcoError):
    """The local OpenSearch node cannot be provisioned, started, stopped or reached."""


class SearchIndexError(MilcoError):
    """An OpenSearch index operation failed (missing index, mapping or _meta mismatch, ...)."""


class IngestError(MilcoError):
    """Documents could not be written; ``failures`` lists (id, reason) for each one."""

    def __init__(self, msg: str, failures: list[tuple[str, str]] | None = None) -> None:
        super().__init__(msg)
        self.failures = failures or []


class DataError(MilcoError):
    """Training or evaluation data cannot be obtained or read."""
