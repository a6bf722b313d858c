"""Sphinx configuration of fastce's documentation.

Build (from the repository root, after ``pip install ".[docs]"``)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Pages are MyST Markdown (``*.md``); the API reference is generated from the numpydoc docstrings
(autodoc + autosummary stubs under ``docs/api/generated/``, not committed), the CLI reference from
``fastce.cli.build_parser()`` (sphinx-argparse).
"""
from __future__ import annotations

import datetime
import logging
import os
import re
import sys

# Document the fastce that the build imports: an installed one, or src/ of this checkout when it is
# not installed (the compiled extension must be there: `pip install -e .` or a build_ext --inplace).
try:
    import fastce  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "src")))
    import fastce  # noqa: F401

# -- Project -------------------------------------------------------------------------------------
project = "fastce"
author = "the fastce developers"
copyright = f"{datetime.date.today().year}, {author}"
release = fastce.__version__
version = ".".join(release.split(".")[:2])

# -- Extensions ----------------------------------------------------------------------------------
extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "sphinxarg.ext",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**/.ipynb_checkpoints"]
templates_path = ["_templates"]

# MyST: ::: fences, $math$, and #anchors for headings down to ###.
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# -- API reference: autodoc + autosummary + numpydoc ---------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": False, "inherited-members": False}
# The signatures carry type hints (fastce._typing's Literal aliases, ArrayLike): the docstrings'
# Parameters sections already say the types, so the signatures are shown without them, and
# Sphinx never has to resolve those aliases (which would warn under nitpicky).
autodoc_typehints = "none"
autodoc_type_aliases = {
    "Reduction": "fastce._typing.Reduction",
    "IsaName": "fastce._typing.IsaName",
    "ArrayLike": "fastce._typing.ArrayLike",
    "NumThreads": "fastce._typing.NumThreads",
    "TopK": "fastce._typing.TopK",
    "NDArray": "fastce._typing.NDArray",
    "Scalar": "fastce._typing.Scalar",
}
autodoc_member_order = "bysource"
# Class members are listed by the class template (docs/_templates/autosummary/class.rst), not by
# numpydoc's own autosummary tables (which need a stub page per member).
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_attributes_as_param_list = True
# Types in numpydoc "Parameters" are free text ("array_like of int, shape (N,)"): no cross-refs.
nitpicky = False

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
}
# The build must not need the network (CI and offline machines): intersphinx only when asked.
if not os.environ.get("FASTCE_DOCS_INTERSPHINX"):
    intersphinx_mapping = {}

# -- HTML ----------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"fastce {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "header_links_before_dropdown": 8,
    "secondary_sidebar_items": ["page-toc"],
}
html_sidebars = {"index": []}
html_show_sourcelink = False
# Command lines show "--option", never an en dash.
smartquotes = False

# "Score" and "score" (and the like) would be one file on a case-insensitive file system.
autosummary_filename_map = {
    "fastce.Score": "fastce.Score-class",
}

# -- Tolerances for pages written separately --------------------------------------------------
# The performance notes (docs/performance/notes_*.md) and the design pages beside
# docs/design/index.md are written separately and included by glob toctrees: a glob that matches
# nothing (yet) is not an error. Sphinx logs that warning without a type, so suppress_warnings
# cannot name it; a filter drops exactly that message for exactly these patterns.
_OPTIONAL_GLOBS = {"notes_*", "*"}


class _OptionalGlobFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if "toctree glob pattern" in msg and "didn't match any documents" in msg:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            return not (args and args[0] in _OPTIONAL_GLOBS)
        return True


# -- The CLI reference: argparse help is plain text, not reStructuredText ----------------------
# sphinx-argparse parses every help string, description and epilog as reStructuredText, so a
# `|V2` or a `N*C` in a help string becomes broken markup, and the "examples:" epilogs (indented
# command lines) become definition lists. Render them as what they are: text paragraphs, with
# indented lines as literal blocks.
def _plain_text_nodes(text: str):
    from docutils import nodes

    out, para, lit = [], [], []

    def flush():
        if para:
            # sphinx-argparse itself appends "Default: ``value``": keep that one markup.
            joined = " ".join(line.strip() for line in para)
            p = nodes.paragraph()
            for i, piece in enumerate(re.split(r"``(.+?)``", joined)):
                if piece:
                    p += nodes.literal(piece, piece) if i % 2 else nodes.Text(piece)
            out.append(p)
            para.clear()
        if lit:
            body = "\n".join(lit)
            out.append(nodes.literal_block(body, body))
            lit.clear()

    for line in text.splitlines():
        if not line.strip():
            flush()
        elif line[:1].isspace():
            if para:
                flush()
            lit.append(line.rstrip())
        else:
            if lit:
                flush()
            para.append(line)
    flush()
    return out


def _patch_sphinxarg() -> None:
    import sphinxarg.ext as ext

    if getattr(ext.render_list, "_fastce_plain", False):
        return
    original = ext.render_list

    def render_list(items, markdown_help, settings=None):
        result = []
        for item in items:
            if isinstance(item, str):
                result += _plain_text_nodes(item)
            else:
                result += original([item], markdown_help, settings)
        return result

    render_list._fastce_plain = True
    ext.render_list = render_list


def setup(app):
    logging.getLogger("sphinx.sphinx.directives.other").addFilter(_OptionalGlobFilter())
    _patch_sphinxarg()
