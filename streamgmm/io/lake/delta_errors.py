"""deltalake's errors as one short reason a person can act on.

delta-rs reports a damaged log in its own words: a truncated commit file as a JSON error followed
by the frames of a Rust backtrace, a missing commit as a dump of two ``ParsedLogPath`` structures
(about a thousand characters). :func:`delta_load_problem` says instead which version's commit is
missing or unreadable, naming its file under ``_delta_log/``.

Examples
--------
>>> from streamgmm.io.lake.delta_errors import delta_load_problem
>>> gap = ("Kernel error: Generic delta kernel error: Expected contiguous commit files, but found gap: "
...        "ParsedLogPath { filename: \\"00000000000000000001.json\\", version: 1 } -> "
...        "ParsedLogPath { filename: \\"00000000000000000004.json\\", version: 4 }")
>>> print(delta_load_problem("/no/table", gap))  # doctest: +NORMALIZE_WHITESPACE
the log has no commit for versions 2 to 3
(_delta_log/00000000000000000002.json is missing; versions 1 and 4 are there)
"""

from __future__ import annotations

import json
import os
import re

# Where a Rust backtrace starts in an error's text: its frame 0.
_BACKTRACE = re.compile(r"\s0:\s")
# The prefixes delta-rs puts before the reason, in the order they nest.
_PREFIXES = ("Kernel error:", "Generic delta kernel error:", "Generic error:", "Generic DeltaTable error:")
MAX_REASON = 300


def delta_load_problem(path: str, error: BaseException | str) -> str:
    """One line saying what is wrong with the log of the Delta table at ``path``, from the
    error deltalake raised while loading it (no backtrace, no internal structures)."""
    text = " ".join(str(error).split())
    if "Expected contiguous commit files, but found gap" in text:
        versions = [int(number) for number in re.findall(r"\bversion: (\d+)", text)]
        if len(versions) >= 2 and versions[1] > versions[0] + 1:
            first, last = versions[0] + 1, versions[1] - 1
            which = f"version {first}" if first == last else f"versions {first} to {last}"
            return (
                f"the log has no commit for {which} (_delta_log/{first:020d}.json is missing; versions "
                f"{versions[0]} and {versions[1]} are there)"
            )
    text = _BACKTRACE.split(text, maxsplit=1)[0].strip()
    for prefix in _PREFIXES:
        text = text.removeprefix(prefix).strip()
    if "json" in text.lower():
        damaged = _unreadable_commit(path)
        if damaged is not None:
            version, name = damaged
            detail = text[:120]
            return f"the commit of version {version} (_delta_log/{name}) is not valid JSON (truncated?): {detail}"
    return text[:MAX_REASON]


def _unreadable_commit(path: str) -> tuple[int, str] | None:
    """The first commit file of a local table's log that does not parse line by line as JSON:
    ``(version, file name)``; None where there is none (or the log is not local)."""
    folder = os.path.join(path.removeprefix("file://"), "_delta_log")
    if "://" in path.removeprefix("file://") or not os.path.isdir(folder):
        return None
    commits = sorted(name for name in os.listdir(folder) if re.fullmatch(r"\d{20}\.json", name))
    for name in commits:
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as commit:
                for line in commit:
                    if line.strip():
                        json.loads(line)
        except (OSError, ValueError):
            return int(name[:20]), name
    return None
