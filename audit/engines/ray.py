"""The Ray engine (docs/ARCHITECTURE.md §5): the local engine's per-image code, run by a Ray Data pipeline.

    samples (index, path) -> map_batches(read + decode + measure, audit.engines.batch)
      -> map_batches(ONNX Runtime, one session per actor, ActorPoolStrategy)
      -> iter_batches into this process -> rows put back in source order -> Predictions

* Same pixels, same numbers: workers call ``decode_batch``, the function the local engine calls, so the verdict does not depend on the engine (tests/test_engine_ray.py).
* Both map stages ask for the same CPUs, so Ray fuses them: each actor decodes its own batch and
  runs it, and only probabilities and measurements cross the object store, never pixels.
* One CPU of the cluster is left to Ray's own tasks. A fixed pool that holds every CPU hangs as
  soon as the pipeline needs a task (measured on 2 cores; see the README, "Auditing at scale").
  The pool has one actor per CPU, each asking for (CPUs - 1) / actors.
* An image that fails to decode is a row with its reason, never a failed task. A lost actor is
  restarted by Ray and its batches run again, so every image is still accounted for.
* This process streams output blocks; it never collects the dataset at once.

The images and the model file must be readable at the same paths on every node (a shared file
system), as for any Ray job reading files.

Example::

    engine = RayEngine()          # starts a local Ray; RayEngine("auto") joins this machine's cluster
    preds, rejected = engine.predict(classifier, source)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from audit import imaging
from audit.duplicates import THUMBNAIL_BYTES, ThumbnailStore
from audit.engines.batch import Collector, DecodedBatch, Transform, decode_batch, fitted_batch_size, run_model
from audit.engines.ray_cluster import connect
from audit.features import FeatureStore
from audit.errors import AuditError, UsageError
from audit.model import ModelCard, OnnxClassifier
from audit.preprocess import Preprocess
from audit.predictions import Predictions
from audit.progress import progress_bar
from audit.sources import DataSource, Sample, Skipped

RESERVED_CPUS = 1.0  # of the cluster's CPUs, left to Ray's own tasks
MIN_ACTOR_CPUS = 0.1
MAX_BLOCK_ROWS = 1024  # rows per input block (the unit Ray schedules, retries and reports progress on)
BLOCKS_PER_ACTOR = 4  # at least this many blocks per actor, so the pool stays busy to the end


@dataclass(frozen=True)
class RayRun:
    """Where one ``predict`` ran: for logs, tests and benchmarks."""

    images: int
    actors: int
    cpus_per_actor: float
    rows_per_node: tuple[tuple[str, int], ...]  # (Ray node id, rows it produced)
    seconds: float


class RayEngine:
    """Inference as a Ray Data pipeline, on a local Ray (``address=""``) or an existing cluster."""

    name = "ray"

    def __init__(self, address: str = "", *, batch_size: int = 0, actors: int = 0, cpus: int = 0,
                 threads: int = 0, limits: imaging.Limits = imaging.Limits(), progress: bool | None = None) -> None:
        self.address = address  # "" = start a local Ray with ``cpus`` CPUs (0 = every core)
        self.batch_size = batch_size
        self.actors = actors  # 0 = one per CPU of the cluster
        self.cpus = cpus
        self.threads = threads  # ONNX Runtime threads per actor; 0 = its share of CPUs, at least 1
        self.limits = limits
        self.progress = progress
        self.runs: list[RayRun] = []  # one per ``predict``: the main pass, then each probe's re-run

    def predict(self, classifier, source: DataSource, samples: Sequence[Sample] | None = None, *,
                transform: Transform | None = None, capture: bool = True, features: bool = False,
                desc: str = "inference", progress: bool | None = None) -> tuple[Predictions, list[Skipped]]:
        """Run ``classifier`` over ``samples`` (default: all of the source's); failures come back as skipped."""
        samples = source.samples if samples is None else samples
        features = features and transform is None
        if not samples:
            return Collector(classifier.labels, samples, capture).result()
        t0 = time.perf_counter()
        ray = connect(self.address, self.cpus)
        actors, cpus = pool_size(ray.cluster_resources().get("CPU", 0.0), self.actors)
        ds = self._pipeline(ray, classifier, source, samples, transform, capture, features, actors, cpus)
        rows = _Rows()
        show = self.progress if progress is None else progress
        with progress_bar(len(samples), desc, show) as bar, _worker_errors():
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                rows.add(batch)
                bar.update(len(batch["index"]))
        out = rows.collect(classifier.labels, samples, capture)
        self.runs.append(RayRun(len(samples), actors, cpus, rows.per_node(), time.perf_counter() - t0))
        return out

    def _pipeline(self, ray, classifier, source: DataSource, samples: Sequence[Sample],
                  transform: Transform | None, capture: bool, features: bool, actors: int, cpus: float):
        import pyarrow as pa
        from ray.data import ActorPoolStrategy

        n, size = len(samples), fitted_batch_size(self.batch_size, classifier.card.preprocess)
        # whole batches per block, so every model call gets the local engine's batch, image for image
        rows = size * max(1, min(MAX_BLOCK_ROWS // size, math.ceil(n / (actors * BLOCKS_PER_ACTOR * size))))
        paths = [s.path for s in samples]
        blocks = [pa.table({"index": pa.array(range(i, min(i + rows, n)), pa.int64()), "path": paths[i : i + rows]})
                  for i in range(0, n, rows)]
        decode = _Decode(_portable(source), classifier.card.preprocess, self.limits, transform, capture)
        threads = self.threads or max(1, math.floor(cpus))
        ds = ray.data.from_arrow(blocks)
        ds = ds.map_batches(decode, batch_size=size, num_cpus=cpus, batch_format="numpy")
        return ds.map_batches(_Infer, fn_constructor_args=(_portable_model(classifier, threads), features),
                              batch_size=size, num_cpus=cpus, batch_format="numpy",
                              compute=ActorPoolStrategy(size=actors))


def pool_size(cluster_cpus: float, actors: int = 0) -> tuple[int, float]:
    """(actors, CPUs per actor): one actor per CPU by default, ``RESERVED_CPUS`` left to Ray's tasks.

    >>> pool_size(2)
    (2, 0.5)
    """
    if cluster_cpus <= 0:
        raise UsageError("the Ray cluster has no CPUs", hint="start its nodes with --num-cpus N (N >= 1)")
    actors = actors or max(1, math.floor(cluster_cpus))
    return actors, max(MIN_ACTOR_CPUS, (cluster_cpus - RESERVED_CPUS) / actors)


@contextlib.contextmanager
def _worker_errors() -> Iterator[None]:
    """A user mistake raised on a worker (an ``AuditError``) surfaces as itself, not as Ray's wrapper."""
    from ray.exceptions import RayError

    try:
        yield
    except RayError as e:
        cause = e
        while cause is not None and not isinstance(cause, AuditError):
            cause = getattr(cause, "cause", None) or cause.__cause__
        if cause is None:
            raise
        raise cause from None


def _portable(source: DataSource) -> DataSource:
    """The source without its sample list (the workers get paths in their batches)."""
    return dataclasses.replace(source, samples=(), skipped=()) if dataclasses.is_dataclass(source) else source


@dataclass(frozen=True)
class _OnnxModel:
    """An ONNX model to load on the worker, with as many ONNX Runtime threads as the actor has CPUs."""

    path: str
    card: ModelCard
    threads: int

    def load(self) -> OnnxClassifier:
        return OnnxClassifier(self.path, self.card, threads=self.threads)


def _portable_model(classifier, threads: int):
    if isinstance(classifier, OnnxClassifier):
        return _OnnxModel(str(classifier.path), classifier.card, threads)
    return classifier  # e.g. the parity check's PyTorch model: it pickles as its files


@dataclass(frozen=True)
class _Decode:
    """Read, decode and measure one batch of samples (a Ray Data map function)."""

    source: DataSource
    pre: Preprocess
    limits: imaging.Limits
    transform: Transform | None
    capture: bool

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        d = decode_batch(self.source, [Sample(p, "") for p in paths], self.pre, self.limits, self.transform,
                         self.capture)
        reasons = {s.path: s.reason for s in d.rejected}
        ok = [i for i, p in enumerate(paths) if p not in reasons]
        h, w = self.pre.size
        shape = (self.pre.channels, h, w) if self.pre.layout == "NCHW" else (h, w, self.pre.channels)
        tensor = d.tensor if len(ok) == len(paths) else np.zeros((len(paths), *shape), np.float32)
        out = {"index": batch["index"], "tensor": tensor,
               "reason": np.array([reasons.get(p, "") for p in paths], dtype=object)}
        props = {f"prop:{k}": np.full(len(paths), np.nan) for k in imaging.PROPERTY_NAMES}
        sha, phash = np.full(len(paths), "", dtype=object), np.zeros(len(paths), np.uint64)
        captured = self.capture and self.transform is None  # the same in every block, even an all-rejected one
        thumbs = np.zeros((len(paths), THUMBNAIL_BYTES if captured else 0), np.uint8)
        if ok:
            if tensor is not d.tensor:  # some images failed: the decoded rows go into their places
                tensor[ok] = d.tensor
            for k, v in d.properties.items():
                props[f"prop:{k}"][ok] = v
            if captured:
                sha[ok], phash[ok], thumbs[ok] = d.sha256, d.phash, d.thumbnails
        return {**out, **props, "sha256": sha, "phash": phash, "thumbnail": thumbs}


class _Infer:
    """One ONNX Runtime session per actor, loaded once; maps a decoded batch to probabilities (and features)."""

    def __init__(self, model, features: bool = False) -> None:
        import ray

        self.classifier = model.load() if isinstance(model, _OnnxModel) else model
        self.features = features
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensor = batch.pop("tensor")
        ok = batch["reason"] == ""
        proba = np.full((len(ok), len(self.classifier.labels)), np.nan, np.float32)
        feats = np.zeros((len(ok), 0), np.float16)  # no columns: no features in this block
        if ok.any():
            proba[ok], f = run_model(self.classifier, np.ascontiguousarray(tensor[ok]), self.features)
            if f is not None:
                feats = np.zeros((len(ok), f.shape[1]), np.float16)
                feats[ok] = f
        return {**batch, "proba": proba, "features": feats, "node": np.full(len(ok), self.node, dtype=object)}


class _Rows:
    """Output blocks as they stream in; ``collect`` puts them back in source order.

    Thumbnails and features go to files as they arrive (``ThumbnailStore``, ``FeatureStore``), so they
    never pile up in memory.
    """

    CHUNK = 8192  # rows handed to the Collector at once

    def __init__(self) -> None:
        self.blocks: list[dict[str, np.ndarray]] = []
        self.nodes: Counter[str] = Counter()
        self.thumbnails = ThumbnailStore()
        self.features: FeatureStore | None = None

    def add(self, batch: dict[str, np.ndarray]) -> None:
        nodes, counts = np.unique(batch.pop("node").astype(str), return_counts=True)
        self.nodes.update(dict(zip(nodes.tolist(), counts.tolist())))
        thumbs = batch.pop("thumbnail")
        if thumbs.shape[1]:
            batch["thumbnail_row"] = np.asarray(self.thumbnails.append(thumbs))
        feats = batch.pop("features")
        batch["feature_row"] = np.full(len(feats), -1, np.int64)
        if feats.shape[1]:
            if self.features is None:
                self.features = FeatureStore(feats.shape[1])
            batch["feature_row"][:] = np.asarray(self.features.append(feats))
        self.blocks.append(batch)

    def per_node(self) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(self.nodes.items()))

    def collect(self, labels: Sequence[str], samples: Sequence[Sample],
                capture: bool) -> tuple[Predictions, list[Skipped]]:
        cols = {k: np.concatenate([b[k] for b in self.blocks]) for k in self.blocks[0]}
        self.blocks.clear()
        _, first = np.unique(cols["index"], return_index=True)  # sorted; a retried batch may come twice
        cols = {k: v[first] for k, v in cols.items()}
        if not np.array_equal(cols["index"], np.arange(len(samples))):
            raise RuntimeError(f"the Ray pipeline returned {len(first)} distinct rows for {len(samples)} images")
        capture = capture and "thumbnail_row" in cols
        out = Collector(labels, samples, capture)
        ok = cols["reason"] == ""
        out.rejected += [Skipped(samples[i].path, str(cols["reason"][i])) for i in np.flatnonzero(~ok)]
        keep = np.flatnonzero(ok)
        has_features = self.features is not None and (cols["feature_row"][keep] >= 0).all()
        for lo in range(0, len(keep), self.CHUNK):
            rows = keep[lo : lo + self.CHUNK]
            feats = self.features.read(cols["feature_row"][rows]) if has_features else None
            out.add(self._batch(cols, [samples[i] for i in rows], rows, capture), cols["proba"][rows], feats)
        self.thumbnails.close()
        if self.features is not None:
            self.features.close()
        return out.result()

    def _batch(self, cols: dict[str, np.ndarray], samples: list[Sample], rows: np.ndarray,
               capture: bool) -> DecodedBatch:
        props = {k: cols[f"prop:{k}"][rows] for k in imaging.PROPERTY_NAMES}
        if not capture:
            return DecodedBatch(tuple(samples), np.zeros(0, np.float32), props, (), np.zeros(0, np.uint64), ())
        return DecodedBatch(tuple(samples), np.zeros(0, np.float32), props,
                            tuple(str(h) for h in cols["sha256"][rows]), cols["phash"][rows].astype(np.uint64), (),
                            self.thumbnails.read(cols["thumbnail_row"][rows]))
