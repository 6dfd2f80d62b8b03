"""One exception hierarchy. Messages name the input at fault and, where there is one, the fix."""

from __future__ import annotations

from pathlib import Path


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


class IndexNotFound(SearchIndexError):
    """The index (or alias) does not exist."""

    def __init__(self, index: str) -> None:
        super().__init__(f"index {index!r} does not exist")
        self.index = index


class IndexExists(SearchIndexError):
    """An index that a job would create exists already."""

    def __init__(self, index: str) -> None:
        super().__init__(f"index {index!r} already exists")
        self.index = index


class ModelMismatch(SearchIndexError):
    """The index was not built by milco-os, or by another model or term-key scheme than the loaded one."""

    def __init__(self, msg: str, index: str, index_model: str | None = None) -> None:
        super().__init__(msg)
        self.index = index
        self.index_model = index_model  # the model that built the index, when it is a milco-os index


class IngestError(MilcoError):
    """Documents could not be written; ``failures`` lists (id, reason) for each one."""

    def __init__(self, msg: str, failures: list[tuple[str, str]] | None = None) -> None:
        super().__init__(msg)
        self.failures = failures or []


class JobStopped(IngestError):
    """A job stopped before its end. It names where its progress is saved (``checkpoint``; ``--resume``
    continues from there) or where unwritten documents went (``dead_letter``)."""

    checkpoint: Path | None = None
    dead_letter: Path | None = None


class OpenSearchUnavailable(JobStopped):
    """OpenSearch stayed unreachable (or kept answering 429/5xx) after the bounded retries."""


class WorkersLost(JobStopped):
    """Encoder workers (Ray actors) kept dying: a batch was still unwritten after it was given to new actors."""


class DataError(MilcoError):
    """Training or evaluation data cannot be obtained or read."""
