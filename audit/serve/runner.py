"""The model behind ``/predict``: float32 pixels in, checked probabilities out, and the start-up self-check.

``ModelRunner`` casts the preprocessed float32 batch to the graph's input type (float16 and
float64 models work) and raises ``ModelFault`` (a 500 JSON answer) when ONNX Runtime fails.
``self_check`` runs one plain grey image through it before the server listens and refuses, with
a ``ModelError`` (exit 2), a model that cannot answer: an error, an output count that does not
match the labels, NaN/Inf, or "probabilities" that do not sum to 1. It also times the model and
the decode, which is what the inline-or-thread decision acts on.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from audit import imaging
from audit.errors import ModelError
from audit.model import OnnxClassifier
from audit.serve.errors import ApiError, first_line

INPUT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
PROBABILITY_TOLERANCE = 1e-3  # fp16 softmax outputs sum to 1 within ~1e-3


class ModelFault(ApiError):
    """The model failed on this input: a 500 JSON answer, the request was fine."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(500, error, detail)


class ModelRunner:
    """``run(batch)`` -> probabilities (N, C), float32, for a float32 batch in the card's layout.

    Example::

        runner = ModelRunner(OnnxClassifier.load("model.onnx"))
        runner.run(np.zeros((2, 3, 224, 224), np.float32)).shape  # (2, n_classes)
    """

    def __init__(self, clf: OnnxClassifier) -> None:
        self.clf = clf
        self.input_type = clf.session.get_inputs()[0].type
        if self.input_type not in INPUT_TYPES:
            raise ModelError(f"model input {clf.graph.input_name!r} is {self.input_type}; the server feeds "
                             f"normalised pixels as one of {', '.join(INPUT_TYPES)}",
                             hint="export the model with a floating-point image input")
        self.dtype = INPUT_TYPES[self.input_type]

    def run(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self.clf.predict_proba(batch.astype(self.dtype, copy=False))
        except ModelError as e:
            raise ModelFault("model_fault", f"the model's answer cannot be used: {e}") from None
        except Exception as e:  # ORT raises its own Fail/InvalidArgument types
            raise ModelFault("model_fault", f"ONNX Runtime failed on this input: {first_line(e)}") from None


def checked_row(proba: np.ndarray) -> np.ndarray:
    """One image's probabilities, or ``ModelFault`` when the model gave NaN/Inf for it."""
    if not np.isfinite(proba).all():
        bad = int((~np.isfinite(proba)).sum())
        raise ModelFault("model_output_not_finite",
                         f"the model returned NaN/Inf for this image ({bad} of {proba.size} class scores); the "
                         "request is valid, the model is at fault")
    return proba


def rank(proba: np.ndarray, labels: tuple[str, ...], top_k: int) -> list[tuple[str, float]]:
    """The ``top_k`` most probable (class, probability) pairs, best first; ties keep the first class (argmax)."""
    if top_k == 1:
        i = int(np.argmax(proba))
        return [(labels[i], float(proba[i]))]
    order = np.argsort(-proba, kind="stable")[:top_k]
    return [(labels[i], float(proba[i])) for i in order]


@dataclass(frozen=True)
class Calibration:
    """What the self-check measured: the model's own time and the decode's time per pixel."""

    model_ms: float  # fastest batch-1 run of the check image
    prepare_ms_per_pixel: float  # decode + resize + normalise of a noise PNG, per source pixel

    def cost_ms(self, pixels: int) -> float:
        return self.model_ms + pixels * self.prepare_ms_per_pixel

    def to_dict(self) -> dict[str, float]:
        return {"model_ms": round(self.model_ms, 4), "prepare_us_per_kpixel": round(self.prepare_ms_per_pixel * 1e6, 3)}


def self_check(runner: ModelRunner, max_batch: int, limits: imaging.Limits) -> Calibration:
    """Run a plain grey image through the model; ``ModelError`` when it cannot answer. See the module doc."""
    clf = runner.clf
    pre = clf.card.preprocess
    x = imaging.to_tensor(Image.new(pre.color, (pre.size[1], pre.size[0]), 128), pre)[None]
    where = f"self-check of {clf.path.name} on one grey {pre.size[0]}x{pre.size[1]} image"
    try:
        proba = runner.run(x)
    except ModelFault as e:
        raise ModelError(f"{where}: {e.detail}", hint="check the model with python -m audit run") from None
    if max_batch > 1:
        try:
            runner.run(np.concatenate([x, x]))
        except ModelFault as e:
            raise ModelError(f"{where}, as a batch of 2: {e.detail}", hint="serve it with --max-batch 1") from None
    if not np.isfinite(proba).all():
        raise ModelError(f"{where}: the model outputs NaN/Inf; refusing to serve a model that cannot answer",
                         hint="check the export (fp16 overflow, a division by zero) with python -m audit run")
    total = float(proba.sum())
    if clf.card.output == "probabilities" and abs(total - 1.0) > PROBABILITY_TOLERANCE:
        raise ModelError(f"{where}: the card says the output is probabilities but they sum to {total:.4g}",
                         hint="pass --output-kind logits (or fix audit.output)")
    return Calibration(_time_model(runner, x), _time_prepare(pre, limits))


def _fastest_ms(fn, repeats: int = 7, budget_ms: float = 500.0) -> float:
    """The fastest of up to ``repeats`` timed calls after one untimed call: robust to other load on the machine.
    Stops once the timed calls took ``budget_ms`` (a 4096 px card need not be run eight times to start)."""
    fn()
    best, spent = float("inf"), 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        took = time.perf_counter() - t0
        best, spent = min(best, took), spent + took
        if spent * 1000.0 >= budget_ms:
            break
    return best * 1000.0


def _time_model(runner: ModelRunner, x: np.ndarray) -> float:
    return _fastest_ms(lambda: runner.run(x))


PROBE_SIDE = (32, 512)  # the decode probe's side: the card's, within these bounds (a 4096 px card: 512)


def _time_prepare(pre, limits: imaging.Limits) -> float:
    """Decode + resize + normalise time per source pixel, on a noise PNG of about the card's size. The probe is
    the server's own, not a request: it is decoded under its own limits, so legal request limits smaller than
    it (a --max-pixels of 500, a small --max-request-bytes) never fail the start-up."""
    h, w = (min(max(side, PROBE_SIDE[0]), PROBE_SIDE[1]) for side in pre.size)
    noise = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise, "RGB").convert(pre.color).save(buf, format="PNG")
    data = buf.getvalue()
    probe = imaging.Limits(max_bytes=max(limits.max_bytes, len(data)), max_pixels=max(limits.max_pixels, h * w),
                           formats=("PNG",))
    return _fastest_ms(lambda: prepare(data, pre, probe)) / (h * w)


def prepare(data: bytes, pre, limits: imaging.Limits) -> np.ndarray:
    """Image file bytes -> one float32 model input, exactly as the audit preprocesses; 422 when undecodable."""
    try:
        img, _ = imaging.decode(data, pre.color, limits)
    except imaging.ImageRejected as e:
        raise ApiError(422, "undecodable_image",
                       f"image_b64 decodes to an image that cannot be used: {e.reason}") from None
    return imaging.to_tensor(imaging.resize(img, pre), pre)
