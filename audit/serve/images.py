"""From ``image_b64`` to a checked image file: strict base64, then the header against the limits.

Nothing here decodes pixels: ``check_header`` reads only the header (format, width, height), so a
decompression bomb or a format outside the allow-list is refused before it can allocate.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image

from audit import imaging
from audit.serve.errors import ApiError, first_line
from audit.serve.options import ServeLimits


def decode_base64(text: str, max_bytes: int) -> bytes:
    """Strict base64 (whitespace and a ``data:...;base64,`` prefix allowed); raises ``ApiError``.

    Example::

        decode_base64("data:image/png;base64,iVBORw0KGgo=", 1000)  # b"\\x89PNG\\r\\n\\x1a\\n"
    """
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise ApiError(422, "invalid_base64", "image_b64 is a data URL but not a base64 one; "
                                                  "expected data:image/<type>;base64,<data>")
    if any(c in text for c in " \n\r\t"):
        text = "".join(text.split())
    if len(text) // 4 * 3 > max_bytes + 2:
        raise ApiError(413, "payload_too_large", f"image_b64 holds about {len(text) // 4 * 3:,} bytes; the limit is "
                                                 f"{max_bytes:,}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ApiError(422, "invalid_base64", f"image_b64 is not valid base64 ({e}); encode the file's bytes "
                                              "with the standard alphabet (e.g. base64 -w0 image.png)") from None


def check_header(data: bytes, limits: ServeLimits) -> int:
    """The image's pixel count (width x height), after checking format and size on the header alone."""
    if not data:
        raise ApiError(422, "empty_image", "image_b64 is empty; send the base64 of an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=limits.formats) as im:
                w, h = im.size
    except Image.DecompressionBombError:
        raise ApiError(413, "image_too_large", f"the image has too many pixels (limit {limits.max_pixels:,}); "
                                               "possible decompression bomb") from None
    except Image.UnidentifiedImageError:
        other = imaging.sniff_format(data)
        if other is not None and other not in limits.formats:
            raise ApiError(415, "unsupported_format", f"image format {other} is not accepted; "
                                                      f"allowed: {', '.join(limits.formats)}") from None
        raise ApiError(422, "not_an_image", f"image_b64 decodes to {len(data):,} bytes that are not an image "
                                            f"(allowed formats: {', '.join(limits.formats)})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ApiError(422, "undecodable_image",
                       f"image_b64 decodes to an unreadable image ({first_line(e, 80)})") from None
    if w * h > limits.max_pixels:
        raise ApiError(413, "image_too_large", f"the image is {w}x{h} = {w * h:,} pixels; the limit is "
                                               f"{limits.max_pixels:,} (possible decompression bomb); resize it")
    if w * h == 0:
        raise ApiError(422, "undecodable_image", f"the image is {w}x{h}: it has no pixels")
    return w * h
