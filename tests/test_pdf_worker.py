"""The PDF is laid out by a worker process started before the audit: the same report as in this process, and no
worker left behind when a run ends early."""

from __future__ import annotations

import builders
import pytest
from pypdf import PdfReader

from audit.cli import main
from audit.errors import EXIT_USAGE
from audit.render.pdf import PdfWorker, write_pdf

HTML = "<html><body><h1>Report</h1>" + "<p>line</p>" * 200 + "</body></html>"


def test_a_worker_writes_the_pdf_this_process_writes(tmp_path):
    worker = PdfWorker()
    (tmp_path / "report.html").write_text(HTML, encoding="utf-8")
    worker.submit(tmp_path / "report.html", tmp_path / "worker.pdf")
    worker.wait()
    write_pdf(HTML, tmp_path / "here.pdf")
    texts = [[p.extract_text() for p in PdfReader(tmp_path / f).pages] for f in ("worker.pdf", "here.pdf")]
    assert texts[0] == texts[1] and len(texts[0]) > 1


def test_a_worker_with_nothing_to_do_is_stopped(tmp_path):
    worker = PdfWorker()
    proc = worker.proc
    worker.close()
    assert proc.poll() is not None


def test_a_run_that_fails_leaves_no_worker(tmp_path, monkeypatch):
    from audit.render import pdf as pdf_module

    started = []

    class Recorded(pdf_module.PdfWorker):
        def __init__(self):
            super().__init__()
            started.append(self.proc)

    monkeypatch.setattr(pdf_module, "PdfWorker", Recorded)
    data = builders.image_folder(tmp_path / "data", 3)
    for f in data.rglob("*.png"):
        f.write_bytes(b"not an image")  # every image rejected: exit 2 after the worker started
    code = main(["run", "--model", str(builders.colour_model(tmp_path / "m.onnx")), "--data", str(data),
                 "--out", str(tmp_path / "out"), "--no-progress", "--no-latency"])
    assert code == EXIT_USAGE
    assert started and all(p.poll() is not None for p in started)


@pytest.mark.parametrize("pdf", [True, False])
def test_the_cli_writes_the_pdf_only_when_asked(tmp_path, pdf):
    out = tmp_path / "out"
    main(["run", "--model", str(builders.colour_model(tmp_path / "m.onnx")),
          "--data", str(builders.image_folder(tmp_path / "data", 12)), "--out", str(out), "--no-progress",
          "--no-latency", "--no-invariance", "--n-boot", "50", *([] if pdf else ["--no-pdf"])])
    assert (out / "report.pdf").exists() == pdf
    if pdf:
        assert "Verdict" in PdfReader(out / "report.pdf").pages[0].extract_text()
