"""The progress file of a resumable job (file ingest, reindex): one JSON file, written atomically.

``{"job": {...}, "progress": {...}, "finished": false}``: ``job`` identifies the job (what is read, where it
is written), so a checkpoint is never applied to another job; ``progress`` is the job's own (a line number,
per-slice positions, counters) and moves only after a batch is acknowledged. A job that ended with failed
documents keeps its file marked ``finished``, so its record survives until a fresh run starts over.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from milco_os.errors import ConfigError
from milco_os.paths import write_text_atomic


class InterruptedJob(ConfigError):
    """A fresh run found the checkpoint of an interrupted run of the same kind."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"an interrupted run left the checkpoint {path}")
        self.path = path


class NothingToResume(ConfigError):
    """A resume was asked for, but there is no checkpoint."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"no checkpoint {path}; nothing to resume")
        self.path = path


@dataclass
class Checkpoint:
    path: Path
    job: dict[str, Any]
    progress: dict[str, Any] = field(default_factory=dict)
    finished: bool = False

    @classmethod
    def open(cls, path: Path, job: dict[str, Any], progress: dict[str, Any], *, resume: bool) -> Checkpoint:
        """The job's checkpoint: read back (``resume``), or a new one saved at once (so that a kill right
        after the job's first side effect still leaves a resumable job). A fresh run refuses to overwrite an
        interrupted run's file and replaces a finished run's."""
        path = Path(path)
        if resume:
            if not path.exists():
                raise NothingToResume(path)
            return cls._load(path, job, progress)
        if path.exists():
            if not cls._finished(path):
                raise InterruptedJob(path)
            path.unlink()
        checkpoint = cls(path, job, copy.deepcopy(progress))
        checkpoint.save()
        return checkpoint

    @classmethod
    def _load(cls, path: Path, job: dict[str, Any], progress: dict[str, Any]) -> Checkpoint:
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            saved_job, saved_progress = state["job"], state["progress"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            msg = f"cannot read the checkpoint {path}: {e}"
            raise ConfigError(msg) from None
        if saved_job != job:
            msg = f"the checkpoint {path} is for {_describe(saved_job)}, not {_describe(job)}"
            raise ConfigError(msg)
        merged = {**copy.deepcopy(progress), **saved_progress}
        for key, default in progress.items():
            if type(merged[key]) is not type(default):
                msg = f"cannot read the checkpoint {path}: {key!r} is {merged[key]!r}"
                raise ConfigError(msg)
        return cls(path, job, merged)

    @staticmethod
    def _finished(path: Path) -> bool:
        try:
            return json.loads(path.read_text(encoding="utf-8")).get("finished") is True
        except (OSError, ValueError, AttributeError):
            return False

    def save(self) -> None:
        state = {"job": self.job, "progress": self.progress, "finished": self.finished}
        write_text_atomic(self.path, json.dumps(state))

    def finish(self) -> None:
        """Keep the file as the record of a run that ended with failures (a fresh run replaces it)."""
        self.finished = True
        self.save()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _describe(job: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v!r}" for k, v in job.items())
