"""The floor: bare inference over a folder of images, the cost every audit ratio is divided by.

Decode each image with Pillow, preprocess it as the model card says (``audit.imaging.resize`` and
``to_tensor``) and run ONNX Runtime in batches of 64, with the session options the tool uses
(``intra_op_num_threads`` from ``--threads``, no idle spinning). Nothing else: no accounting of
skipped files, no image properties, no hashes, no checks. Decoding happens on the main thread
(``--decode main``), or on a thread pool one batch ahead (``--decode pool``); on two cores the main
thread was the faster of the two, and the benchmarks take the faster one as the floor.

    .venv/bin/python benchmarks/floor.py --model models/fashion_mnist_scratch/model.onnx \\
        --data data/fashion-mnist/test
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from audit import imaging
from audit.model import Preprocess, resolve_card

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def image_files(data: Path) -> list[Path]:
    return sorted(p for p in data.rglob("*") if p.suffix.lower() in EXTENSIONS)


def session(model: Path, threads: int = 0) -> ort.InferenceSession:
    """An ONNX Runtime session with the tool's options (``audit.model.OnnxClassifier``)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])


def preprocess_of(model: Path) -> Preprocess:
    return Preprocess(**resolve_card(model, {})["preprocess"])


def load(path: Path, pre: Preprocess) -> np.ndarray:
    with Image.open(path) as img:
        img = img.convert(pre.color)
    return imaging.to_tensor(imaging.resize(img, pre), pre)


def _batch(files: list[Path], pre: Preprocess) -> np.ndarray:
    return np.stack([load(f, pre) for f in files])


def run_floor(sess: ort.InferenceSession, pre: Preprocess, files: list[Path], batch_size: int = 64,
              decode: str = "main", workers: int = 0) -> float:
    """Seconds to decode, preprocess and run every file once."""
    name = sess.get_inputs()[0].name
    batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    t0 = time.perf_counter()
    if decode == "main":
        for b in batches:
            sess.run(None, {name: _batch(b, pre)})
    else:
        workers = workers or os.cpu_count() or 1
        with ThreadPoolExecutor(workers) as pool:  # one batch per task, ``workers`` batches ahead
            pending = [pool.submit(_batch, b, pre) for b in batches[:workers]]
            for i in range(len(batches)):
                x = pending.pop(0).result()
                if i + workers < len(batches):
                    pending.append(pool.submit(_batch, batches[i + workers], pre))
                sess.run(None, {name: x})
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (the tool's default: 0)")
    ap.add_argument("--decode", choices=("main", "pool"), default="main")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    files, pre, sess = image_files(a.data), preprocess_of(a.model), session(a.model, a.threads)
    for _ in range(a.repeat):
        s = run_floor(sess, pre, files, a.batch_size, a.decode)
        print(f"{len(files)} images in {s:.3f} s ({len(files) / s:,.0f} images/s, decode on {a.decode})")


if __name__ == "__main__":
    main()
