"""The book's offline MathJax extension (book/_ext/offline_mathjax.py)."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ext():
    spec = importlib.util.spec_from_file_location(
        "offline_mathjax", REPO / "book" / "_ext" / "offline_mathjax.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _app(outdir, fmt="html"):
    config = SimpleNamespace(
        mathjax_path="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js",
        mathjax2_config=None,
        mathjax3_config={"options": {"processHtmlClass": "tex2jax_process|math|output_area"}},
    )
    return SimpleNamespace(builder=SimpleNamespace(format=fmt), config=config, outdir=str(outdir))


def test_book_config_loads_the_extension():
    text = (REPO / "book" / "_config.yml").read_text()
    assert "offline_mathjax: _ext" in text


def test_switches_to_local_mathjax2_and_copies_it(ext, tmp_path):
    pytest.importorskip("jupyter_server_mathjax")
    src = ext.mathjax_source()
    assert src is not None and (src / "MathJax.js").is_file()
    app = _app(tmp_path)
    ext.use_local_mathjax(app)
    assert app.config.mathjax_path == f"mathjax/MathJax.js?config={ext.CONFIG}"
    assert app.config.mathjax3_config is None
    # myst-parser's choice of elements to typeset carries over to MathJax 2.
    tex = app.config.mathjax2_config["tex2jax"]
    assert tex["processClass"] == "tex2jax_process|math|output_area"
    assert tex["inlineMath"] == [["\\(", "\\)"]]

    ext.copy_mathjax(app, None)
    dest = tmp_path / "_static" / "mathjax"
    assert (dest / "MathJax.js").is_file()
    assert (dest / "config" / f"{ext.CONFIG}.js").is_file()
    assert not (tmp_path / "_static" / "mathjax.partial").exists()


def test_leaves_other_builders_and_failed_builds_alone(ext, tmp_path):
    latex = _app(tmp_path, fmt="latex")
    ext.use_local_mathjax(latex)
    assert latex.config.mathjax_path.startswith("https://")
    ext.copy_mathjax(_app(tmp_path), RuntimeError("build failed"))
    assert not (tmp_path / "_static").exists()


def test_without_the_package_keeps_the_cdn(ext, tmp_path, monkeypatch):
    monkeypatch.setattr(ext, "mathjax_source", lambda: None)
    app = _app(tmp_path)
    ext.use_local_mathjax(app)
    assert app.config.mathjax_path.startswith("https://")
    assert app.config.mathjax3_config is not None
