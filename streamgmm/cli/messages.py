"""Library messages in the command's words.

The library's errors and warnings name what a Python caller sets (``nan_policy='skip'``,
``overwrite=True``, ``held_out=N``); the command prints them with the option that sets the same
thing (``--nan-policy skip``, ``--overwrite``, ``--held-out N``), so that each audience reads its
own spelling.

Examples
--------
>>> from streamgmm.cli.messages import in_cli_words
>>> in_cli_words("lake/a.parquet, row 7, column 'x': null or NaN (nan_policy='raise'; "
...              "use nan_policy='skip' to leave such rows out)")
"lake/a.parquet, row 7, column 'x': null or NaN (--nan-policy raise; use --nan-policy skip to leave such rows out)"
>>> in_cli_words("state holds a model fitted with nan_policy='marginalize', not 'raise'; use another state directory")
'state holds a model fitted with --nan-policy marginalize, not raise; use another state directory'
"""

from __future__ import annotations

import re

# (pattern, replacement): each Python spelling a command's run can meet, and the option for it.
SPELLINGS = [
    (re.compile(r"\bnan_policy='(\w+)', not '(\w+)'"), r"--nan-policy \1, not \2"),
    (re.compile(r"\bnan_policy='(\w+)'"), r"--nan-policy \1"),
    (re.compile(r"\boverwrite=True \(--overwrite\)"), "--overwrite"),
    (re.compile(r"\bheld_out=(\d+)"), r"--held-out \1"),
    (re.compile(r"\bheld_out needs max_passes=1\b"), "--held-out needs --passes 1"),
    (re.compile(r"^version and as_of apply\b"), "--version and --as-of apply"),
    (re.compile(r"\bn_components \(-k\)"), "-k/--components"),
    (
        re.compile(r"^Expected n_samples >= n_components but got n_components = (\d+), n_samples = (\d+)\b.*$"),
        r"-k/--components \1 is more than the \2 records read",
    ),
    (
        re.compile(
            r"^(cannot read feature pairs|feature \d+ is out of range|no feature pairs|at most \d+ feature pairs)"
        ),
        r"--pairs: \1",
    ),
]


def in_cli_words(message: str) -> str:
    """``message`` with each parameter spelled as the command's option that sets it."""
    for pattern, replacement in SPELLINGS:
        message = pattern.sub(replacement, message)
    return message
