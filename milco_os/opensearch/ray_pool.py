"""Encode and write on Ray (IO): a pool of encoder actors behind :class:`~milco_os.opensearch.ingest.BatchPool`.

Each actor loads the model once (``num_cpus``/``num_gpus`` per actor, torch or onnxruntime) and runs
:meth:`Ingester.write_batch` on the batches it is given: it validates, encodes, prunes and bulk-writes them to
OpenSearch itself, with the same retries as the single-process path. The driver (the ``milco-os`` process)
only reads the input (a JSONL file or the source index's point-in-time slices), hands each batch to the
least busy actor, and takes the results back **in input order**: every batch is then acknowledged exactly as
a local one (counts, dead-letter file, checkpoint), so a killed job resumes from its checkpoint and the
dead-letter file and exit codes are those of the single-process path.

Actors write at the same time, and a batch may be written twice (given to another actor after its first died
mid-write), so "the last write wins" would store whichever version of a repeated ``_id`` came last in time. The
Ray path therefore writes every document with an external version, its position in the input (after the job's
start time in nanoseconds, so a later job's versions are higher than an earlier one's): OpenSearch (and
Elasticsearch) keeps the highest, which is the id's last line in input order, whatever the actors do. An older
line that arrives after a newer one is refused with a version conflict; that is the expected outcome, counted as
superseded, never a failure (a batch written again finds its own versions where its first attempt got through:
those count as indexed). No set of ids is kept in memory.

Why actors fed by the driver rather than Ray Data ``map_batches`` over a read datasource: the input then
never has to be readable from the workers' machines (a local file, or an index only the driver may read), and
the checkpoint moves per acknowledged block, in order, which a streaming dataset does not expose. The cost
is the driver's reading and serialising, which ``bench/scale.py`` measures.

Ray restarts no actor by itself: the driver keeps the count per batch. When an actor dies (OOM killer, SIGKILL,
its machine), the driver replaces it with a new actor (the model loaded again) and gives each batch it had not
finished to the least busy other actor; a batch that sees ``max_batch_retries`` + 1 of its actors die stops the job
with :class:`~milco_os.errors.WorkersLost`, its checkpoint intact, however long the other actors stay healthy.
Ray is imported only here, only when ``--ray`` is given (``pip install milco-os[ray]``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from milco_os.errors import ConfigError, WorkersLost
from milco_os.opensearch.batch import MAX_DOCUMENT_CHARS, BatchResult
from milco_os.opensearch.bulk import BulkConfig, BulkOutcome

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
    max_batch_retries: int = 3  # times a batch is given to another actor after the one writing it died

    def __post_init__(self) -> None:
        if self.actors is not None and self.actors < 1:
            raise ConfigError(f"--actors {self.actors}: must be at least 1")
        if self.num_cpus <= 0 or self.num_gpus < 0:
            raise ConfigError(f"--num-cpus {self.num_cpus} / --num-gpus {self.num_gpus}: need num-cpus > 0, "
                              "num-gpus >= 0")
        if self.max_batch_retries < 0:
            raise ConfigError(f"max_batch_retries {self.max_batch_retries}: must be >= 0")


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

    def write_batch(self, docs: list[Any], first_version: int) -> BatchResult:
        if self.ingester is None:
            from milco_os.opensearch.client import make_client
            from milco_os.opensearch.ingest import Ingester

            spec = self.spec
            self.ingester = Ingester(make_client(spec.settings), spec.index, self.encoder, config=spec.config,
                                     id_field=spec.id_field, max_chars=spec.max_chars)
        return self.ingester.write_batch(docs, first_version=first_version)


@dataclass
class _Flight:
    """A batch on its way: the documents stay here until acknowledged, to be given to another actor if its own
    dies."""

    tag: Any
    docs: list[Any]
    first_version: int  # the external version of docs[0]; docs[i] has first_version + i
    ref: Any = None
    slot: int = -1  # where in the pool the actor writing it is ...
    actor: Any = None  # ... and that actor's handle (the slot may hold a new actor since)
    deaths: int = 0  # actors that died with it unfinished


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
            # No restarts and no task retries by Ray: Ray counts restarts over an actor's life, not per batch,
            # so the driver replaces dead actors and retries batches itself (see the module docstring).
            actor_class = ray.remote(BatchWorker).options(
                num_cpus=options.num_cpus, num_gpus=options.num_gpus, max_restarts=0, max_task_retries=0,
            )
            threads = max(1, int(options.num_cpus))
            device = "cuda" if options.num_gpus > 0 else "cpu"
            self._new_actor = lambda: actor_class.remote(spec, threads, device)
            self.actors = [self._new_actor() for _ in range(n)]
            log.info("started %d encoder actors (%s CPU, %s GPU each)", n, options.num_cpus, options.num_gpus)
            try:
                self._info: ModelInfo = self._get(self.actors[0].info.remote())
            except ray.exceptions.RayActorError as e:
                msg = (f"an encoder actor died before it loaded the model ({type(e).__name__}; see the Ray logs for "
                       "why: often memory)")
                raise WorkersLost(msg) from None
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
        order. An empty batch (a reindex slice's end marker) needs no actor. Document ``i`` of the job is written
        with the external version ``start + i`` (``start``: this call's time in nanoseconds)."""
        window = len(self.actors) * (QUEUED_PER_ACTOR + 1)
        busy = [0] * len(self.actors)
        pending: deque[_Flight] = deque()
        source = iter(tagged_batches)
        # Nanoseconds leave room for positions (a job writes far fewer documents than it lasts nanoseconds, so a
        # later job starts above an earlier one's last version) and last until 2262 in a signed 64-bit version.
        next_version = time.time_ns()
        exhausted = False
        while True:
            while not exhausted and len(pending) < window:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                docs, tag = item
                flight = _Flight(tag, docs, next_version)
                next_version += len(docs)
                if docs:
                    self._submit(flight, busy)
                pending.append(flight)
            if not pending:
                return
            flight = pending.popleft()
            if not flight.docs:
                yield flight.tag, BatchResult(0, BulkOutcome(), [], {})
                continue
            yield flight.tag, self._result(flight, busy)

    def _submit(self, flight: _Flight, busy: list[int], avoid: int = -1) -> None:
        """Give ``flight`` to the least busy actor (another than slot ``avoid`` when there is one)."""
        slots = [i for i in range(len(self.actors)) if i != avoid] or [avoid]
        i = min(slots, key=busy.__getitem__)
        busy[i] += 1
        flight.slot, flight.actor = i, self.actors[i]
        flight.ref = flight.actor.write_batch.remote(flight.docs, flight.first_version)

    def _result(self, flight: _Flight, busy: list[int]) -> BatchResult:
        """The batch's result; when its actor died, the batch again on another actor (the dead one replaced)."""
        ray = ray_module()
        while True:
            try:
                result = self._get(flight.ref)
            except ray.exceptions.RayActorError as e:
                busy[flight.slot] -= 1
                self._replace(flight.slot, flight.actor)
                flight.deaths += 1
                if flight.deaths > self.options.max_batch_retries:
                    msg = (f"{flight.deaths} encoder actors died in turn before finishing one batch "
                           f"({type(e).__name__}; see the Ray logs for why: often memory)")
                    raise WorkersLost(msg) from None
                log.warning("an encoder actor died (%s); its batch goes to another actor (attempt %d of %d)",
                            type(e).__name__, flight.deaths + 1, self.options.max_batch_retries + 1)
                self._submit(flight, busy, avoid=flight.slot)
                continue
            busy[flight.slot] -= 1
            return result

    def _replace(self, slot: int, dead: Any) -> None:
        """A new actor in ``slot`` for ``dead`` (once: the dead actor's other batches find it replaced)."""
        if self.actors[slot] is not dead:
            return
        ray = ray_module()
        try:  # an actor only unreachable for a while would otherwise stay, unused, holding its resources
            ray.kill(dead, no_restart=True)
        except Exception:  # noqa: BLE001 (already gone)
            pass
        self.actors[slot] = self._new_actor()

    def _get(self, ref: Any) -> Any:
        """``ray.get``; an error raised inside an actor comes back as itself (a lost actor: RayActorError)."""
        ray = ray_module()
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, BaseException):
                raise e.cause from None
            raise

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
