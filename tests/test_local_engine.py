"""The local engine computes, whatever its decode placement and batch size, exactly what the one-image
functions compute image by image: the same probabilities, properties, hashes and rejections."""

import hashlib

import numpy as np
import pytest
from PIL import Image

import builders
from audit import imaging
from audit.engines.local import LocalEngine
from audit.model import OnnxClassifier
from audit.sources import open_source

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = builders.image_folder(tmp_path_factory.mktemp("data") / "data", 9, confusers=2, metadata=True)
    builders.colour_image("red", size=40, mode="L").save(root / "red" / "grey.png")  # converted to RGB
    Image.new("RGBA", (20, 30), (0, 0, 255, 128)).save(root / "blue" / "alpha.png")  # other size, alpha
    (root / "green" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "green" / "empty.png").write_bytes(b"")
    model = builders.colour_model(root.parent / "model.onnx")
    return root, OnnxClassifier.load(model)


def reference(clf, source, batch_size, transform=None):
    """Image by image with the single-image functions, then the model on the same batches."""
    pre, limits = clf.card.preprocess, imaging.Limits()
    rows, rejected = [], []
    for s in source.samples:
        try:
            data = source.open(s.path, limits)
            img, size = imaging.decode(data, pre.color, limits)
        except imaging.ImageRejected as e:
            rejected.append((s.path, e.reason))
            continue
        sha, ph = hashlib.sha256(data).hexdigest(), imaging.phash_input(img)
        resized = imaging.resize(transform(img) if transform else img, pre)
        rows.append((s, imaging.to_tensor(resized, pre), imaging.grey(resized), size, sha, ph))
    proba = np.concatenate([clf.predict_proba(np.stack([r[1] for r in rows[i:i + batch_size]]))
                            for i in range(0, len(rows), batch_size)])
    props = imaging.batch_properties(np.stack([r[2] for r in rows]), np.array([r[3] for r in rows]))
    phash = imaging.batch_phash(np.stack([r[5] for r in rows]))
    return rows, proba, props, phash, rejected


@pytest.mark.parametrize(("workers", "on_caller"), [(0, False), (1, False), (1, True), (2, False), (2, True), (None, None)])
@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_engine_equals_image_by_image(folder, workers, on_caller, batch_size):
    root, clf = folder
    source = open_source(root, clf.labels)
    engine = LocalEngine(batch_size=batch_size, workers=workers, vectorise_on_caller=on_caller, progress=False)
    preds, rejected = engine.predict(clf, source)
    rows, proba, props, phash, want_rejected = reference(clf, source, batch_size)
    assert preds.paths == tuple(r[0].path for r in rows)
    assert [(s.path, s.reason) for s in rejected] == want_rejected
    assert {p for p, _ in want_rejected} == {"green/broken.png", "green/empty.png"}
    assert np.array_equal(preds.proba, proba)
    assert preds.properties.keys() == props.keys()
    assert all(np.array_equal(preds.properties[k], props[k].astype(float)) for k in props)
    assert preds.sha256 == tuple(r[4] for r in rows)
    assert np.array_equal(preds.phash, phash)
    assert list(preds.attributes["site"]) == [dict(r[0].attributes).get("site", "") for r in rows]


@pytest.mark.parametrize("workers", [0, 2])
def test_transformed_pass_equals_image_by_image(folder, workers):
    root, clf = folder
    source = open_source(root, clf.labels)
    flip = Image.Image.transpose
    transform = lambda im: flip(im, Image.Transpose.FLIP_LEFT_RIGHT)  # noqa: E731
    preds, _ = LocalEngine(batch_size=5, workers=workers, progress=False).predict(clf, source, transform=transform)
    rows, proba, props, _, _ = reference(clf, source, 5, transform)
    assert np.array_equal(preds.proba, proba)
    assert all(np.array_equal(preds.properties[k], props[k].astype(float)) for k in props)
    assert preds.sha256 == () and len(preds.phash) == 0  # hashes describe original files only


def test_a_decode_thread_stuck_in_a_read_never_holds_the_run_up():
    """The caller waits on a future, which a signal interrupts; closing does not join the stuck thread."""
    import os
    import signal
    import threading
    import time

    from audit.threads import DaemonThreads

    stuck = threading.Event()
    pool = DaemonThreads(1)
    future = pool.submit(lambda _: stuck.wait(), None)  # a read that never returns (a hung network file system)
    # Python's own Ctrl-C handler, as at a terminal: a suite started as a background job inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            future.result()
    finally:
        signal.signal(signal.SIGINT, previous)
    pool.close()
    assert time.monotonic() - t0 < 10
    stuck.set()


def test_batches_of_a_huge_card_fit_the_memory_budget():
    from audit.engines.batch import BATCH_BYTES, fitted_batch_size
    from audit.preprocess import Preprocess

    assert fitted_batch_size(64, Preprocess(size=(224, 224))) == 64
    assert fitted_batch_size(64, Preprocess(size=(4096, 4096), color="L")) == 4  # 64 MiB an image
    assert fitted_batch_size(64, Preprocess(size=(4096, 4096))) == 1  # 192 MiB: never below one image
    assert fitted_batch_size(64, Preprocess(size=(1024, 1024))) * 1024 * 1024 * 3 * 4 <= BATCH_BYTES


class _Classifier:
    """Records the thread counts the tuner asks for (the rule under test is ``OrtThreads``'s, not a model's)."""

    def __init__(self) -> None:
        self.threads, self.asked = 0, []

    def use_threads(self, n: int, keep_others: bool = False) -> bool:
        self.asked.append(n)
        self.threads = n
        return True


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("wait", "faster", "kept"), [
    (0.004, True, "fewer"),  # decoding holds the pass up, and fewer ORT threads are faster: kept
    (0.004, False, "default"),  # tried, slower: back to ORT's default
    (0.0002, True, "untried"),  # the model holds the pass up: every thread kept, nothing tried
])
def test_onnx_runtime_gets_fewer_threads_only_when_that_is_faster(wait, faster, kept):
    from audit.engines.local import OrtThreads

    clf, clock = _Classifier(), _Clock()
    tuner, run, batches = OrtThreads(clf, decode_threads=1, clock=clock), 0.001, 0
    while tuner is not None:
        batches += 1
        factor = 1.0 if clf.threads == 0 else 0.8 if faster else 1.2
        if batches == OrtThreads.WARM_UP + 2 * OrtThreads.WINDOW + 1:  # the machine got busier for a while:
            factor *= 3  # the alternating windows share it
        clock.now += (wait + run) * factor
        tuner = tuner.observe(wait, run)
    fewer = max(1, imaging.cpu_count() - 1)
    if kept == "untried":
        assert clf.asked == [] and batches == OrtThreads.WARM_UP + OrtThreads.WINDOW
        return
    assert batches == OrtThreads.WARM_UP + 2 * OrtThreads.ROUNDS * OrtThreads.WINDOW
    assert clf.asked[:2 * OrtThreads.ROUNDS - 1] == [fewer, 0] * (OrtThreads.ROUNDS - 1) + [fewer]  # alternated
    assert clf.threads == (fewer if kept == "fewer" else 0)


def test_a_new_session_gives_the_same_outputs_and_refuses_a_changed_file(tmp_path):
    model = builders.colour_model(tmp_path / "model.onnx")
    clf = OnnxClassifier.load(model)
    x = np.random.default_rng(0).standard_normal((16, *clf.graph.input_shape[1:])).astype(np.float32)
    before = clf.predict(x, with_features=True)
    assert clf.use_threads(1) and clf.threads == 1
    after = clf.predict(x, with_features=True)
    assert np.array_equal(before[0], after[0])
    assert (before[1] is None and after[1] is None) or np.array_equal(before[1], after[1])
    model.write_bytes(model.read_bytes() + b"\0")  # no longer the file loaded
    session = clf.session
    assert not clf.use_threads(2) and clf.session is session and clf.threads == 1
    assert clf.use_threads(1) and clf.session is session  # a session kept is reused, not made again
