"""Upgrade (IO): re-encode a milco-os index with another model (a newer version of its own, by default) into a new
index created with the same options, then point the name users search by at it.

The name is an alias (``docs`` -> ``docs-milco-mini-1``) or an index itself. The work is
:func:`milco_os.opensearch.reindex.reindex` (resumable from its checkpoint, verified by count); only a new index that
holds every document of the old one takes the name: the alias moves in one atomic request, and an index that was
the name itself is removed in that same request (the only way its name can become an alias). Documents written to
the old index while the job runs are not carried over: pause writers, or upgrade again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milco_os.errors import ConfigError, SearchIndexError
from milco_os.opensearch.bulk import BulkConfig
from milco_os.opensearch.indices import created_spec, index_info
from milco_os.opensearch.ingest import JobProgress
from milco_os.opensearch.reindex import ReindexReport, default_checkpoint_path, reindex, swap_alias

if TYPE_CHECKING:
    from milco_os.opensearch.engine import Client
    from milco_os.opensearch.ray_pool import RayJob
    from milco_os.runtime.encoder import SparseEncoder


@dataclass(frozen=True)
class UpgradePlan:
    """What an upgrade of ``name`` reads and writes: ``source`` is the index behind it (``name`` itself when it is
    no alias)."""

    name: str
    source: str
    dest: str
    is_alias: bool


@dataclass
class UpgradeReport:
    plan: UpgradePlan
    before: dict[str, Any]  # index_info of the old index
    after: dict[str, Any]  # index_info of the new one
    reindex: ReindexReport
    moved: bool  # the name points at the new index

    def to_dict(self) -> dict[str, Any]:
        def summary(info: dict[str, Any]) -> dict[str, Any]:
            return {"index": info["index"], "model": info["meta"]["model"]["name"], "documents": info["documents"],
                    "size_bytes": info["size_bytes"]}

        return {"name": self.plan.name, "moved": self.moved, "old_index_kept": self.plan.is_alias,
                "before": summary(self.before), "after": summary(self.after)}


def dest_name(name: str, model: str) -> str:
    """The new index's default name: ``docs`` + ``milco-mini@2`` -> ``docs-milco-mini-2``."""
    return f"{name}-{re.sub(r'[^a-z0-9_]+', '-', model.lower()).strip('-')}"


def plan_upgrade(client: Client, name: str, model: str, dest: str | None = None) -> UpgradePlan:
    """Where an upgrade of ``name`` to ``model`` reads and writes (refusals before any work)."""
    is_alias = bool(client.indices.exists_alias(name=name))
    if is_alias:
        holders = sorted(client.indices.get_alias(name=name))
        if len(holders) != 1:
            msg = f"alias {name!r} points at {len(holders)} indices ({', '.join(holders)}); upgrade needs exactly one"
            raise SearchIndexError(msg)
        source = holders[0]
    else:
        source = name
    dest = dest or dest_name(name, model)
    if dest in (name, source):
        msg = f"--dest {dest!r}: the new index needs a name of its own"
        raise ConfigError(msg)
    return UpgradePlan(name=name, source=source, dest=dest, is_alias=is_alias)


def upgrade(
    client: Client,
    plan: UpgradePlan,
    encoder: SparseEncoder | None,
    *,
    cache_dir: Path,
    resume: bool = False,
    slices: int = 1,
    config: BulkConfig | None = None,
    dead_letter: Path | None = None,
    progress: JobProgress | None = None,
    ray: RayJob | None = None,
) -> UpgradeReport:
    """Re-encode ``plan.source`` into ``plan.dest`` (created with the source's options) with ``encoder`` (or Ray
    actors), and once it holds every document, give it ``plan.name`` (see the module docstring)."""
    before = index_info(client, plan.source)
    spec = created_spec(client, plan.source)
    report = reindex(client, plan.source, plan.dest, encoder, spec=spec, slices=slices, resume=resume,
                     checkpoint_path=default_checkpoint_path(cache_dir, plan.source, plan.dest), config=config,
                     dead_letter=dead_letter, progress=progress, ray=ray)
    if report.verified:
        if plan.is_alias:
            swap_alias(client, plan.name, plan.dest)
        else:
            replace_index(client, plan.source, plan.dest)
    return UpgradeReport(plan=plan, before=before, after=index_info(client, plan.dest), reindex=report,
                         moved=report.verified)


def replace_index(client: Client, old: str, new: str) -> None:
    """Remove the index ``old`` and make its name an alias of ``new``, in one atomic request."""
    client.indices.update_aliases(body={"actions": [{"remove_index": {"index": old}},
                                                    {"add": {"index": new, "alias": old}}]})
