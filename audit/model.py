"""The model contract (docs/ARCHITECTURE.md §7): a self-describing ONNX file, and a classifier over it.

A model card (labels, preprocessing, output kind, provenance) travels inside the ONNX file as
``metadata_props``. A model exported elsewhere still works: the card can come from a sidecar
``model.json`` with the same keys, or from CLI flags, and the graph itself tells us whether the
batch dimension is fixed, whether the layout is NHWC and whether a softmax is already applied.

Example::

    card = ModelCard(labels=("cat", "dog"), preprocess=Preprocess(size=(64, 64)))
    write_card("model.onnx", card)
    clf = OnnxClassifier.load("model.onnx")
    probs = clf.predict_proba(batch)  # (N, C) float32, rows sum to 1
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from audit import onnxwire
from audit.card_schema import OUTPUTS, check_card, check_preprocess_is_object
from audit.errors import ModelError
from audit.features import pooled
from audit.graph import GraphInfo, Located, inspect_graph, locate, with_output
from audit.preprocess import Preprocess

CARD_PREFIX = "audit."
# ONNX tensor types the classifier can feed and read; other float widths are cast at the boundary
FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to use a model correctly; stored in the ONNX file's metadata."""

    labels: tuple[str, ...]
    preprocess: Preprocess
    output: str = "logits"
    arch: str | None = None
    invariances: tuple[str, ...] = ()
    provenance: Mapping[str, Any] = field(default_factory=dict)
    features: str | None = None  # the penultimate tensor's name, where the graph search cannot find it

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "invariances", tuple(self.invariances))
        if self.output not in OUTPUTS:
            raise ModelError(f"card key 'audit.output' must be one of {list(OUTPUTS)}, got {self.output!r}")
        if len(self.labels) < 2:
            raise ModelError(f"a classifier needs at least 2 labels, got {list(self.labels)}")
        if len(set(self.labels)) != len(self.labels):
            raise ModelError(f"labels must be unique, got {list(self.labels)}")

    def to_metadata(self) -> dict[str, str]:
        """The card as ONNX ``metadata_props`` (JSON values under ``audit.*`` keys)."""
        props = {
            "labels": list(self.labels),
            "preprocess": asdict(self.preprocess),
            "output": self.output,
            "invariances": list(self.invariances),
            "provenance": dict(self.provenance),
        }
        if self.arch:
            props["arch"] = self.arch
        if self.features:
            props["features"] = self.features
        return {CARD_PREFIX + k: json.dumps(v) for k, v in props.items()}

    def to_dict(self) -> dict[str, Any]:
        return {k[len(CARD_PREFIX):]: json.loads(v) for k, v in self.to_metadata().items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "card") -> ModelCard:
        """Build a card from plain values (the sidecar ``model.json`` or decoded metadata)."""
        unknown = set(d) - {"labels", "preprocess", "output", "arch", "invariances", "provenance", "features"}
        if unknown:
            raise ModelError(f"{source}: unknown key(s) {sorted(unknown)}",
                             hint="expected labels, preprocess, output, arch, invariances, provenance, features")
        if "labels" not in d or "preprocess" not in d:
            raise ModelError(f"{source}: needs 'labels' and 'preprocess'")
        check_card(d, source)
        pre = dict(d["preprocess"])
        if isinstance(pre["size"], int):
            pre["size"] = [pre["size"]] * 2  # one side: a square input
        preprocess = Preprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in pre.items()})
        return cls(
            labels=tuple(d["labels"]),
            preprocess=preprocess,
            output=d.get("output", "logits"),
            arch=d.get("arch"),
            invariances=tuple(d.get("invariances", ())),
            provenance=dict(d.get("provenance", {})),
            features=d.get("features"),
        )


def model_name(path: Path) -> str:
    """A model's name for reports: the file stem, or its folder's name for a generic ``model.onnx``."""
    return path.stem if path.stem not in ("model", "best", "last") else path.resolve().parent.name


def read_metadata(path: str | Path, proto=None) -> dict[str, Any]:
    """The decoded ``audit.*`` metadata of an ONNX file (empty when it has none); ``proto`` is its parsed model."""
    model = proto if proto is not None else _load_proto(path)
    out = {}
    for prop in model.metadata_props:
        if prop.key.startswith(CARD_PREFIX):
            try:
                out[prop.key[len(CARD_PREFIX):]] = json.loads(prop.value)
            except json.JSONDecodeError:
                raise ModelError(f"{path}: metadata {prop.key!r} is not valid JSON") from None
    return out


def _load_proto(path: str | Path, data: bytes | None = None) -> onnxwire.Model:
    """The model's graph structure and metadata, read from its bytes without importing ``onnx`` (``audit.onnxwire``)."""
    try:
        return onnxwire.parse_model(Path(path).read_bytes() if data is None else data)
    except (onnxwire.WireError, OSError) as e:
        raise ModelError(f"cannot load {path} as an ONNX model: {str(e).splitlines()[0][:120]}",
                         hint="pass the .onnx file exported from your framework") from None


def write_card(path: str | Path, card: ModelCard) -> None:
    """Store ``card`` in the ONNX file at ``path`` (in place; other metadata is kept)."""
    import onnx

    model = onnx.load(str(path))
    meta = card.to_metadata()
    kept = [p for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))


class OnnxClassifier:
    """An ONNX Runtime session plus its card: batches of preprocessed images in, probabilities out."""

    def __init__(self, path: str | Path, card: ModelCard | Mapping[str, Any], *, threads: int = 0,
                 proto=None, data: bytes | None = None) -> None:
        self.path = Path(path)
        self.threads = threads
        if data is None:
            data = self.path.read_bytes()
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.size_bytes = len(data)
        proto = proto if proto is not None else _load_proto(path, data)
        named = card.features if isinstance(card, ModelCard) else card.get("features")
        self.features = locate(proto.graph, named)
        try:
            self.session = self._session(data, threads)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph types
            raise ModelError(f"cannot load {path} with ONNX Runtime: {str(e).splitlines()[0]}") from None
        self._sessions = {threads: self.session}  # by intra-op threads (use_threads)
        self.graph = inspect_graph(self.session, proto)
        self.card = _reconcile(card, self.graph, path)
        self.input_dtype = _float_type(self.session.get_inputs()[0], "input")
        output = self.session.get_outputs()[0]
        _float_type(output, "output")
        if len(output.shape) == 2 and isinstance(output.shape[1], int) and output.shape[1] != len(self.labels):
            raise ModelError(f"model output has shape {list(output.shape)} but the card lists "
                             f"{len(self.labels)} labels",
                             hint="check --labels or audit.labels")
        self.output_name = output.name

    def _session(self, data: bytes, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        # Idle ORT threads busy-wait by default; that steals the cores the decode threads need (measured:
        # 10k Fashion-MNIST images 7.0-9.5 s spinning vs 5.5 s not) and inflates /predict tail latency.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # the penultimate tensor as an extra output: the same session.run returns the model's features
        model_bytes = with_output(data, self.features.name) if self.features.name else data
        return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])

    def use_threads(self, threads: int, *, keep_others: bool = False) -> bool:
        """Go on with a session of ``threads`` intra-op threads, made from the model file unless one is kept;
        False (the session in use goes on) when the file cannot be read or is no longer the one loaded (its
        SHA-256 is checked). ``keep_others``: the other sessions are kept to switch back to (a trial)."""
        session = self._sessions.get(threads)
        if session is None:
            try:
                data = self.path.read_bytes()
                if hashlib.sha256(data).hexdigest() != self.sha256:
                    return False
                session = self._session(data, threads)
            except Exception:  # an unreadable file, or ORT's own error types
                return False
        self.session, self.threads = session, threads
        self._sessions = {**self._sessions, threads: session} if keep_others else {threads: session}
        return True

    @classmethod
    def load(cls, path: str | Path, *, overrides: Mapping[str, Any] | None = None,
             threads: int = 0) -> OnnxClassifier:
        """Load a model and resolve its card: ONNX metadata, then ``model.json``, then overrides."""
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}", hint="pass --model path/to/model.onnx")
        data = path.read_bytes()  # read once: the card, the session and the hash all come from these bytes
        proto = _load_proto(path, data)
        card = resolve_card(path, overrides or {}, proto)
        return cls(path, card, threads=threads, proto=proto, data=data)

    def __reduce__(self):  # rebuilt from the file in another process (an engine's worker)
        return (_rebuild, (self.path, self.card, self.threads))

    @property
    def labels(self) -> tuple[str, ...]:
        return self.card.labels

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for a preprocessed batch in the card's layout, shape (N, C)."""
        return self.predict(batch)[0]

    def predict(self, batch: np.ndarray, *, with_features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities (N, C), features (N, D) or None) from one ``session.run`` per batch.

        Features come back only when asked for and when the graph has them (``self.features``).
        """
        names = [self.output_name] + ([self.features.name] if with_features and self.features.name else [])
        if self.graph.fixed_batch == 1 and len(batch) != 1:
            runs = [self._run(batch[i : i + 1], names) for i in range(len(batch))]
            outs = [np.concatenate([r[k] for r in runs]) for k in range(len(names))]
        else:
            outs = self._run(batch, names)
        out = outs[0]
        feats = pooled(outs[1]) if len(outs) > 1 else None
        if feats is not None and len(feats) != len(out):  # e.g. test-time views batched through one classifier
            self.features = Located(None, f"the feature tensor {self.features.name!r} has {len(feats)} rows for "
                                          f"{len(out)} images (test-time views batched together?)")
            feats = None
        if out.ndim != 2 or out.shape[1] != len(self.labels):
            raise ModelError(
                f"model output has shape {list(out.shape)} but the card lists {len(self.labels)} labels",
                hint="check --labels or audit.labels",
            )
        if self.card.output == "logits":
            out = _softmax(out)
        return out.astype(np.float32, copy=False), feats

    def _run(self, batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
        feed = {self.graph.input_name: batch.astype(self.input_dtype, copy=False)}
        return self.session.run(names, feed)


def _float_type(arg, role: str) -> type:
    """The numpy type of a float ONNX input or output; other types are refused at load."""
    if arg.type not in FLOAT_TYPES:
        raise ModelError(f"model {role} {arg.name!r} has type {arg.type}; the audit works with float tensors "
                         f"(float32, float16 or float64)", hint="export the model with a float input and output")
    return FLOAT_TYPES[arg.type]


def _rebuild(path: Path, card: ModelCard, threads: int) -> OnnxClassifier:
    return OnnxClassifier(path, card, threads=threads)


def _softmax(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf logits give NaN rows, which the engine sets aside
        x = x.astype(np.float64) - x.max(axis=1, keepdims=True)
        e = np.exp(x)
        return e / e.sum(axis=1, keepdims=True)


def resolve_card(path: Path, overrides: Mapping[str, Any], proto=None) -> dict[str, Any]:
    """Merge the card sources in order: ONNX metadata < sidecar ``<model>.json`` < overrides.

    Returns a partial dict when labels or size are still unknown; ``OnnxClassifier`` completes
    it from the graph (size) or fails with a message naming the missing flag.
    """
    d: dict[str, Any] = read_metadata(path, proto)
    check_preprocess_is_object(d, str(path))
    sidecar = path.with_suffix(".json")
    if not sidecar.exists():
        sidecar = path.parent / "model.json"
    if sidecar.exists():
        try:
            extra = json.loads(sidecar.read_text())
        except json.JSONDecodeError as e:
            raise ModelError(f"sidecar {sidecar} is not valid JSON: {e}") from None
        if not isinstance(extra, dict):
            raise ModelError(f"sidecar {sidecar} must be a JSON object like the card (labels, preprocess, ...)")
        check_preprocess_is_object(extra, str(sidecar))
        d = _merge(d, extra)
    return _merge(d, overrides)


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if v is None:
            continue
        if k == "preprocess":
            out[k] = {**out.get(k, {}), **{pk: pv for pk, pv in v.items() if pv is not None}}
        else:
            out[k] = v
    return out


def _reconcile(card: ModelCard | Mapping[str, Any], graph: GraphInfo, path: Path) -> ModelCard:
    """Complete a partial card from the graph and check that the two agree."""
    if not isinstance(card, ModelCard):
        d = dict(card)
        pre = dict(d.get("preprocess", {}))
        pre.setdefault("layout", graph.layout)
        if "size" not in pre:
            if graph.size is None:
                raise ModelError(f"{path} has no audit.preprocess metadata and a dynamic input size",
                                 hint="pass --size H[,W] (and --mean/--std) or a model.json sidecar")
            pre["size"] = list(graph.size)
        if "color" not in pre and graph.channels == 1:
            pre["color"] = "L"
        if "output" not in d and graph.ends_in_softmax:
            d["output"] = "probabilities"
        if "labels" not in d:
            raise ModelError(f"{path} has no audit.labels metadata",
                             hint="pass --labels a,b,c or a model.json sidecar")
        d["preprocess"] = pre
        card = ModelCard.from_dict(d, source=str(path))
    pre = card.preprocess
    if graph.size is not None and tuple(graph.size) != tuple(pre.size):
        raise ModelError(f"the card says input size {list(pre.size)} but the graph expects {list(graph.size)}",
                         hint="fix --size or audit.preprocess.size")
    if graph.channels is not None and graph.channels != pre.channels:
        raise ModelError(f"the card says color {pre.color} ({pre.channels} channel(s)) but the graph expects "
                         f"{graph.channels}", hint="fix audit.preprocess.color")
    if pre.layout != graph.layout and graph.layout_certain:
        card = replace(card, preprocess=replace(pre, layout=graph.layout))  # the graph is the truth
    return card
