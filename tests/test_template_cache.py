"""The report templates' compiled code is kept between runs (``audit.render.html._BytecodeCache``): the same report
from the cache, a template edited since compiled again, and a cache that cannot be read or written passed over."""

import os
import pickle

import jinja2
import pytest

from audit.render import html

pytestmark = pytest.mark.fast


def _env(folder, cache):
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), bytecode_cache=cache, autoescape=True)


def _render(folder, cache) -> str:
    return _env(folder, cache).get_template("page.j2").render(items=["a", "<b>"])


@pytest.fixture
def templates(tmp_path):
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "page.j2").write_text("{% for i in items %}<li>{{ i }}</li>{% endfor %}")
    return folder


def test_the_report_environment_keeps_compiled_templates():
    assert isinstance(html._env().bytecode_cache, html._BytecodeCache)


def test_a_cached_template_renders_as_a_fresh_one_and_an_edited_one_is_compiled_again(tmp_path, templates):
    cache = html._BytecodeCache(str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    fresh = _render(templates, None)
    assert _render(templates, cache) == fresh
    assert len(os.listdir(tmp_path / "cache")) == 1  # written
    assert _render(templates, cache) == fresh  # read back by a new environment
    (templates / "page.j2").write_text("{% for i in items %}<p>{{ i }}</p>{% endfor %}")
    assert _render(templates, cache) == "<p>a</p><p>&lt;b&gt;</p>"


def test_a_corrupt_or_unwritable_cache_is_passed_over(tmp_path, templates):
    folder = tmp_path / "cache"
    folder.mkdir()
    cache = html._BytecodeCache(str(folder))
    fresh = _render(templates, None)
    _render(templates, cache)
    checksum = cache.get_source_checksum((templates / "page.j2").read_text())
    for name in os.listdir(folder):  # the right header, then code that does not unmarshal
        (folder / name).write_bytes(jinja2.bccache.bc_magic + pickle.dumps(checksum, 2) + b"\xff garbage")
    assert _render(templates, cache) == fresh
    missing = html._BytecodeCache(str(tmp_path / "no such folder"))  # every write fails
    assert _render(templates, missing) == fresh
