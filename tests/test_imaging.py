import numpy as np
import pytest
from PIL import Image, ImageFilter

from audit import imaging
from audit.model import Preprocess

pytestmark = pytest.mark.fast  # the tier run before every commit (scripts/test.sh --fast)


def test_batch_properties_match_per_image_definitions():
    rng = np.random.default_rng(0)
    greys = rng.integers(0, 256, (5, 12, 10), dtype=np.uint8)
    greys[0] = 0
    greys[0, 3:6, 3:6] = 255  # a bright square on black: ink coverage 9/120
    sizes = np.array([[100, 50], [10, 10], [3, 7], [640, 480], [1, 1]])
    props = imaging.batch_properties(greys, sizes)
    for i, g in enumerate(greys.astype(float) / 255):
        assert props["brightness"][i] == pytest.approx(g.mean(), rel=1e-5)
        assert props["contrast"][i] == pytest.approx(g.std(), rel=1e-4)
        lap = np.array([[g[y - 1, x] + g[y + 1, x] + g[y, x - 1] + g[y, x + 1] - 4 * g[y, x]
                         for x in range(1, g.shape[1] - 1)] for y in range(1, g.shape[0] - 1)])
        assert props["sharpness"][i] == pytest.approx(lap.var(), rel=1e-4)
    assert props["ink_coverage"][0] == pytest.approx(9 / 120)
    assert props["aspect_ratio"].tolist() == [2.0, 1.0, 3 / 7, 640 / 480, 1.0]
    assert props["resolution"].tolist() == [5000, 100, 21, 307200, 1]


def test_blur_lowers_sharpness():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32), dtype=np.uint8))
    blurred = img.filter(ImageFilter.GaussianBlur(2))
    p = imaging.batch_properties(np.stack([imaging.grey(img), imaging.grey(blurred)]), np.array([[32, 32]] * 2))
    assert p["sharpness"][1] < p["sharpness"][0] / 10


def test_shorter_side_then_center_crop():
    img = Image.new("RGB", (200, 100), "white")
    pre = Preprocess(size=(50, 50), resize="shorter_side_then_center_crop", crop_pct=0.5)
    out = imaging.resize(img, pre)
    assert out.size == (50, 50)
    t = imaging.to_tensor(out, Preprocess(size=(50, 50), mean=(0.5,), std=(0.5,)))
    assert t.shape == (3, 50, 50) and np.allclose(t, 1.0)
    nhwc = imaging.to_tensor(out, Preprocess(size=(50, 50), layout="NHWC"))
    assert nhwc.shape == (50, 50, 3)


def test_formats_outside_the_allow_list_are_named_and_never_parsed():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"
    assert imaging.sniff_format(eps) == "EPS" and imaging.sniff_format(b"\x89PNG\r\n\x1a\n") == "PNG"
    with pytest.raises(imaging.ImageRejected, match=r"image format EPS is not allowed \(allowed: PNG, JPEG"):
        imaging.decode(eps, "RGB")
    with pytest.raises(imaging.ImageRejected, match="not an image"):
        imaging.decode(b"plain text, no image", "RGB")


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P"])
@pytest.mark.parametrize("color", ["L", "RGB"])
@pytest.mark.parametrize("size", [(28, 28), (20, 24)])
def test_decoded_pixels_and_grey_levels_are_pillows_own(mode, color, size):
    """``decode_sample`` hands the grey levels it read for the pHash on as the model's pixels (or a colour image's
    grey levels) when nothing resized or converted the image: the bytes must be what Pillow gives directly."""
    import io

    from audit.engines.batch import decode_sample

    rgb = np.random.default_rng(2).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    src = Image.fromarray(rgb).convert(mode)
    buf = io.BytesIO()
    src.save(buf, "PNG")
    channels = 1 if color == "L" else 3
    pre = Preprocess(size=size, color=color, mean=(0.5,) * channels, std=(0.5,) * channels)
    got = decode_sample(buf.getvalue(), pre, imaging.Limits())
    with Image.open(io.BytesIO(buf.getvalue())) as img:
        shown = imaging.decode(buf.getvalue(), color)[0]  # transparency over white, as the audit shows it
        want = imaging.resize(shown, pre)
        assert img.size == got.size
    assert got.pixels == want.tobytes()
    assert got.grey == (None if color == "L" else want.convert("L").tobytes())
    grey_original = imaging.decode(buf.getvalue(), "L")[0]
    assert np.array_equal(got.phash_source, np.asarray(grey_original))


def test_read_all_reads_to_the_end_whatever_size_it_was_told(tmp_path):
    import os

    from audit.sources.base import read_all

    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 9000)  # over one read's chunk
    for told in (0, 10, 256 * 9000, 256 * 9000 + 5):  # shrunk, grown or as fstat said
        fd = os.open(path, os.O_RDONLY)
        try:
            assert read_all(fd, told) == path.read_bytes()
        finally:
            os.close(fd)
