"""Serve an audited model over HTTP (docs/ARCHITECTURE.md §10): ``POST /predict``, ``GET /health``, ``GET /model``.

The server loads the model with ``OnnxClassifier.load`` and turns bytes into a tensor with
``audit.imaging`` (decode, resize, to_tensor): the same code, card and limits as the audit, so
``/predict`` answers what the audit measured. Before it listens it runs one image through the
model and refuses (exit 2) a model that cannot answer.

Bad input never takes the server down: a body over the size limit, malformed JSON, wrong field
names, bad base64, bytes that are not an image, a format outside the allow-list and images with
too many pixels (decompression bombs) each get a 4xx answer ``{"error": code, "detail": message}``;
a model fault on one input (NaN output) gets a 500 in the same shape. Resources are bounded:
decoded pixels in flight (the pixel budget, 503 past its queue timeout), open connections, and
the time a request may take to arrive (408).

Modules: ``options`` (limits and scheduling, validated), ``schema`` (the HTTP contract),
``errors``, ``images`` (base64 and header checks), ``runner`` (the model, dtype casts, the
self-check), ``budget`` (the pixel budget), ``batching`` (micro-batches), ``service`` (one
prediction), ``endpoint`` (``/predict`` as plain ASGI), ``guard`` (read deadline, connection cap),
``app`` (FastAPI and uvicorn).

Example::

    python -m audit serve --model model.onnx --port 8000
    curl -s localhost:8000/predict -H 'Content-Type: application/json' \\
         -d "{\\"image_b64\\": \\"$(base64 -w0 cat.png)\\"}"
    {"class":"cat","prob":0.94}

or from Python::

    app = create_app("model.onnx")
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from audit.serve.app import bind, create_app, serve
from audit.serve.errors import ApiError
from audit.serve.images import decode_base64
from audit.serve.options import DEFAULT_FORMATS, Scheduling, ServeLimits
from audit.serve.service import PredictService

__all__ = ["DEFAULT_FORMATS", "ApiError", "PredictService", "Scheduling", "ServeLimits", "bind", "create_app",
           "decode_base64", "serve"]
