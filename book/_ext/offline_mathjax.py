"""Serve MathJax from the built book instead of a CDN, so formulas render offline.

Sphinx's ``mathjax`` extension loads MathJax 3 from cdn.jsdelivr.net: a book opened without a
network (a classroom, a laptop on a train) shows raw TeX. When the ``jupyter-server-mathjax``
package is installed (``pip install -e ".[dev]"`` installs it) this extension

* points ``mathjax_path`` at ``_static/mathjax/MathJax.js`` (the MathJax 2.7 that package ships)
  with a MathJax 2 configuration equivalent to the one myst-parser gives MathJax 3: typeset only
  the elements the Markdown parser marked as math, and
* copies that MathJax tree into ``_static/mathjax`` of the HTML output when the build finishes.

Without the package the CDN default stays, and the build says so once.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

TARGET = "mathjax"  # folder under the output's _static
# The combined configuration jupyter-server-mathjax ships: TeX and MathML input, HTML-CSS output.
CONFIG = "TeX-AMS-MML_HTMLorMML-full"


def mathjax_source() -> Path | None:
    """The folder holding ``MathJax.js`` from ``jupyter_server_mathjax``, or None."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        return None
    static = Path(jupyter_server_mathjax.__file__).resolve().parent / "static"
    ok = (static / "MathJax.js").is_file() and (static / "config" / f"{CONFIG}.js").is_file()
    return static if ok else None


def mathjax2_config(process_classes: str) -> dict:
    """MathJax 2 settings matching myst-parser's MathJax 3 ones.

    myst-parser has already found the math (``$...$``, ``$$...$$``, amsmath) and wrapped it in
    ``\\(...\\)`` / ``\\[...\\]`` inside elements of ``process_classes``; everything else is
    marked ``tex2jax_ignore mathjax_ignore``.
    """
    return {
        "tex2jax": {
            "inlineMath": [["\\(", "\\)"]],
            "displayMath": [["\\[", "\\]"]],
            "processEscapes": True,
            "processClass": process_classes,
            "ignoreClass": "tex2jax_ignore|mathjax_ignore",
        },
        "HTML-CSS": {"linebreaks": {"automatic": True}},
        "messageStyle": "none",
    }


def use_local_mathjax(app) -> None:
    """builder-inited (after myst-parser's handler): switch to the local MathJax 2."""
    if app.builder.format != "html":
        return
    if mathjax_source() is None:
        logger.info(
            "offline_mathjax: jupyter-server-mathjax is not installed; MathJax from the CDN"
        )
        return
    v3 = app.config.mathjax3_config or {}
    classes = v3.get("options", {}).get("processHtmlClass", "tex2jax_process|mathjax_process|math")
    app.config.mathjax_path = f"{TARGET}/MathJax.js?config={CONFIG}"
    app.config.mathjax2_config = mathjax2_config(classes)
    app.config.mathjax3_config = None


def copy_mathjax(app, exception) -> None:
    """build-finished: copy the MathJax tree next to the pages that load it."""
    if exception is not None or app.builder.format != "html":
        return
    src = mathjax_source()
    if src is None:
        return
    dest = Path(app.outdir) / "_static" / TARGET
    if (dest / "MathJax.js").is_file():
        return
    tmp = dest.with_name(TARGET + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("*.map"))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def setup(app):
    # myst-parser sets its MathJax 3 options at builder-inited with the default priority (500).
    app.connect("builder-inited", use_local_mathjax, priority=900)
    app.connect("build-finished", copy_mathjax)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
