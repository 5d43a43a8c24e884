"""Sphinx configuration of the API reference (``scripts/docs`` builds it into build/docs)."""

import streamgmm

project = "streamgmm"
author = "streamgmm developers"
copyright = "streamgmm developers"
release = streamgmm.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_parser",
]

root_doc = "index"
exclude_patterns = ["_build"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_heading_anchors = 4

autodoc_member_order = "bysource"
autodoc_typehints = "none"
autosummary_generate = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

html_theme = "alabaster"

# numpydoc's validation, every check except those that ask for more than this project writes: its
# short docstrings are one prose paragraph (no Returns, See Also, Examples or extended summary, a
# summary that may wrap, parameters described in prose) and it does not capitalise descriptions.
# What stays on catches docstrings that disagree with the code: a documented parameter the
# signature lacks or orders differently, a parameter without a description, malformed sections.
numpydoc_validation_checks = {
    "all",
    "ES01",  # no extended summary
    "EX01",  # no Examples section
    "GL02",  # closing quotes on their own line
    "PR01",  # a parameter described in the prose rather than in a Parameters section
    "PR08",  # description starts with a capital letter
    "RT01",  # no Returns section
    "RT02",  # "name : type" on the Returns line
    "SA01",  # no See Also section
    "SS06",  # summary on one line
    "YD01",  # no Yields section
}
# The watcher's docstrings list its options one per line as "name : what it does", which numpydoc
# reads as types without descriptions.
numpydoc_validation_exclude = {r"^streamgmm\.watch\."}
