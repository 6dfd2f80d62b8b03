"""Encode and write on Ray (IO): a pool of encoder actors behind :class:`~milco_os.opensearch.ingest.BatchPool`.

Each actor loads the model once (``num_cpus``/``num_gpus`` per actor, torch or onnxruntime) and runs
:meth:`Ingester.write_batch` on the batches it is given: it validates, encodes, prunes and bulk-writes them to
OpenSearch itself, with the same retries as the single-process path. The driver (the ``milco-os`` process)
only reads the input (a JSONL file or the source index's point-in-time slices), hands each batch to the
least busy actor, and takes the results back **in input order**: every batch is then acknowledged exactly as
a local one (counts, dead-letter file, checkpoint), so a killed job resumes from its checkpoint and the
dead-letter file and exit codes are those of the single-process path. Writes are by ``_id``, so a batch
written twice (a retried task, a resumed job) is still one document per id.

Why actors fed by the driver rather than Ray Data ``map_batches`` over a read datasource: the input then
never has to be readable from the workers' machines (a local file, or an index only the driver may read), and
the checkpoint moves per acknowledged block, in order, which a streaming dataset does not expose. The cost
is the driver's reading and serialising, which ``bench/scale.py`` measures.

A killed actor is restarted (the model loaded again) and its unfinished batches are retried, each up to
``max_restarts`` times; past that the job stops with :class:`~milco_os.errors.WorkersLost`, its checkpoint
intact. Ray is imported only here, only when ``--ray`` is given (``pip install milco-os[ray]``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from milco_os.errors import ConfigError, WorkersLost
from milco_os.opensearch.bulk import BulkConfig, BulkOutcome
from milco_os.opensearch.ingest import MAX_DOCUMENT_CHARS, BatchResult

if TYPE_CHECKING:
    from milco_os.settings import Settings
    from milco_os.types import ModelInfo

log = logging.getLogger(__name__)

#: Batches queued per actor beyond the one it is encoding, so an actor never waits for the driver.
QUEUED_PER_ACTOR = 2


@dataclass(frozen=True)
class RayOptions:
    """Where and how the encoder actors run (``--ray``, ``--actors``, ``--num-cpus``, ``--num-gpus``)."""

    address: str | None = None  # None: a local Ray started for this job; "auto" or ray://...: an existing cluster
    actors: int | None = None  # None: as many as the cluster's CPUs (or GPUs, with num_gpus) allow
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_restarts: int = 3  # per actor; a batch is retried as often

    def __post_init__(self) -> None:
        if self.actors is not None and self.actors < 1:
            raise ConfigError(f"--actors {self.actors}: must be at least 1")
        if self.num_cpus <= 0 or self.num_gpus < 0:
            raise ConfigError(f"--num-cpus {self.num_cpus} / --num-gpus {self.num_gpus}: need num-cpus > 0, "
                              "num-gpus >= 0")
        if self.max_restarts < 0:
            raise ConfigError(f"max_restarts {self.max_restarts}: must be >= 0")


@dataclass(frozen=True)
class WorkerSpec:
    """What every actor needs to build its encoder and its writer (sent to the actors once)."""

    settings: Settings  # connection (its secrets travel to the actors inside Ray, never logged) and model
    index: str
    runtime: str = "torch"
    quantize: str | None = None
    config: BulkConfig = BulkConfig()
    id_field: str = "id"
    max_chars: int = MAX_DOCUMENT_CHARS


@dataclass(frozen=True)
class RayJob:
    """A job's request to run on Ray (what the CLI builds from ``--ray`` and friends)."""

    options: RayOptions
    settings: Settings
    runtime: str = "torch"
    quantize: str | None = None

    def pool(self, index: str, *, config: BulkConfig, id_field: str = "id",
             max_chars: int = MAX_DOCUMENT_CHARS) -> RayPool:
        spec = WorkerSpec(self.settings, index, self.runtime, self.quantize, config, id_field, max_chars)
        return RayPool(self.options, spec)


class BatchWorker:
    """The actor: one encoder (loaded once) and one writer into ``spec.index``."""

    def __init__(self, spec: WorkerSpec, threads: int, device: str) -> None:
        from milco_os.loading import load_encoder

        self.spec = spec
        # The encoder batches as in the single-process path (on a GPU: GPU_BATCHING, up to the block's size).
        kwargs: dict[str, Any] = {"device": device}
        if spec.runtime == "onnx":
            kwargs["intra_op_num_threads"] = threads
        else:
            import torch

            torch.set_num_threads(threads)
        self.encoder = load_encoder(spec.settings.model, spec.settings.cache_dir, runtime=spec.runtime,
                                    quantize=spec.quantize, **kwargs)
        self.ingester: Any = None  # made on the first batch: DEST may be created after the actors start

    def info(self) -> ModelInfo:
        return self.encoder.info

    def write_batch(self, docs: list[Any]) -> BatchResult:
        if self.ingester is None:
            from milco_os.opensearch.client import make_client
            from milco_os.opensearch.ingest import Ingester

            spec = self.spec
            self.ingester = Ingester(make_client(spec.settings), spec.index, self.encoder, config=spec.config,
                                     id_field=spec.id_field, max_chars=spec.max_chars)
        return self.ingester.write_batch(docs)


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) address must accept a connection: Ray itself waits minutes for an
    address where nothing listens."""
    import socket

    if address is None or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        msg = f"--ray-address {address}: cannot connect to the Ray cluster ({e.strerror or e})"
        raise ConfigError(msg) from None


def ray_module() -> Any:
    try:
        import ray
    except ImportError:
        msg = "--ray needs Ray: pip install 'milco-os[ray]'"
        raise ConfigError(msg) from None
    return ray


class RayPool:
    """Encoder actors on a Ray cluster, usable as an :class:`~milco_os.opensearch.ingest.BatchPool`.

    Use it as a context manager: leaving it kills the actors (and stops the local Ray it started)."""

    def __init__(self, options: RayOptions, spec: WorkerSpec) -> None:
        ray = ray_module()
        self.options = options
        self._connected = False
        if not ray.is_initialized():
            check_reachable(options.address)
            try:
                ray.init(address=options.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except ConnectionError as e:
                where = f"--ray-address {options.address}" if options.address else "--ray"
                msg = f"{where}: cannot connect to the Ray cluster ({e})"
                raise ConfigError(msg) from None
            self._connected = True
        self.actors: list[Any] = []
        try:
            n = options.actors or self._fitting_actors(ray.cluster_resources())
            actor_class = ray.remote(BatchWorker).options(
                num_cpus=options.num_cpus, num_gpus=options.num_gpus, max_restarts=options.max_restarts,
                max_task_retries=options.max_restarts,
            )
            threads = max(1, int(options.num_cpus))
            device = "cuda" if options.num_gpus > 0 else "cpu"
            self.actors = [actor_class.remote(spec, threads, device) for _ in range(n)]
            log.info("started %d encoder actors (%s CPU, %s GPU each)", n, options.num_cpus, options.num_gpus)
            self._info: ModelInfo = self._get(self.actors[0].info.remote())
        except BaseException:
            self.close()
            raise

    def _fitting_actors(self, resources: dict[str, float]) -> int:
        if self.options.num_gpus > 0:
            gpus = resources.get("GPU", 0.0)
            if gpus < self.options.num_gpus:
                msg = f"--num-gpus {self.options.num_gpus}: the Ray cluster has {gpus:g} GPUs"
                raise ConfigError(msg)
            return int(gpus // self.options.num_gpus)
        return max(1, int(resources.get("CPU", 1.0) // self.options.num_cpus))

    @property
    def info(self) -> ModelInfo:
        return self._info

    def results(self, tagged_batches: Iterable[tuple[list[Any], Any]]) -> Iterator[tuple[Any, BatchResult]]:
        """Each batch to the least busy actor, ``QUEUED_PER_ACTOR`` + 1 in flight per actor; results in input
        order. An empty batch (a reindex slice's end marker) needs no actor."""
        window = len(self.actors) * (QUEUED_PER_ACTOR + 1)
        busy = [0] * len(self.actors)
        pending: deque[tuple[Any, Any, int]] = deque()
        source = iter(tagged_batches)
        exhausted = False
        while True:
            while not exhausted and len(pending) < window:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                docs, tag = item
                if not docs:
                    pending.append((tag, None, -1))
                    continue
                i = busy.index(min(busy))
                busy[i] += 1
                pending.append((tag, self.actors[i].write_batch.remote(docs), i))
            if not pending:
                return
            tag, ref, i = pending.popleft()
            if ref is None:
                yield tag, BatchResult(0, BulkOutcome(), [], {})
                continue
            result = self._get(ref)
            busy[i] -= 1
            yield tag, result

    def _get(self, ref: Any) -> Any:
        """``ray.get``; an error raised inside an actor comes back as itself, a lost actor as WorkersLost."""
        ray = ray_module()
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, BaseException):
                raise e.cause from None
            raise
        except ray.exceptions.RayActorError as e:
            msg = (f"an encoder actor died and was restarted {self.options.max_restarts} times without finishing "
                   f"its batch ({type(e).__name__}; see the Ray logs for why: often memory)")
            raise WorkersLost(msg) from None

    def close(self) -> None:
        ray = ray_module()
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 (already gone)
                pass
        self.actors = []
        if self._connected:
            ray.shutdown()
            self._connected = False

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
