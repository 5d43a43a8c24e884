"""Checks the ``streamgmm`` command makes before it works: filters read at parse time, usage
conflicts refused with status 2, model paths that would destroy an input refused before a fit,
and one-line explanations of what an empty or unfinished result means."""

from __future__ import annotations

import argparse
import operator
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from numbers import Integral
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from streamgmm.assignment.layout import SUCCESS, TEMPORARY, is_output_file
from streamgmm.estimator.constraints import PARAMETER_CONSTRAINTS, Interval, allowed
from streamgmm.io.lake.paths import check_not_input, describe_non_file, is_url, refuse_url
from streamgmm.io.sources.parquet import ParquetSource
from streamgmm.watch.lease import MAX_LEASE_SECONDS

if TYPE_CHECKING:  # pyarrow.dataset imports pandas: loaded only where a dataset is used
    import pyarrow.dataset as ds

FILTER = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(==|!=|<=|>=|<|>|=)\s*(.*?)\s*$")
COMPARISONS = {
    "==": operator.eq,
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
INT64 = (-(2**63), 2**63 - 1)
# Options naming where a command writes that take local (or mounted) paths only; assign's --out and
# watch's --state may also be object-store prefixes.
OUTPUTS = {
    "fit": ("model",),
    "select": ("model",),
    "watch": ("assign_out",),
    "plot": ("out",),
}


class CommandError(Exception):
    """A problem with the command's input, reported in one line."""


# ---------------------------------------------------------------------- at parse time


def parse_filter(text: str) -> ds.Expression:
    """``column OP value`` with OP one of == != < <= > >=; the value is a number if it reads
    as one, else a string (quotes optional). Anything else is a usage error, found here."""
    match = FILTER.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"cannot read filter {text!r}; expected e.g. 'day >= 3' or \"city == 'Oslo'\"")
    import pyarrow.dataset as ds

    name, op, raw = match.groups()
    value = filter_value(text, raw)
    try:
        return COMPARISONS[op](ds.field(name), ds.scalar(value))
    except (OverflowError, TypeError, pa.ArrowException) as exc:
        raise argparse.ArgumentTypeError(f"filter {text!r}: cannot compare with {raw} ({exc})") from None


def filter_value(text: str, raw: str) -> Any:
    """The value of a filter: a quoted string, an integer that fits 64 bits, a float, or a
    bare word (a value starting with an operator, e.g. from ``day => 3``, is a typo)."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    if not raw or raw[0] in "=<>!'\"":
        raise argparse.ArgumentTypeError(
            f"cannot read filter {text!r}: {'no value' if not raw else f'unexpected {raw!r}'}; "
            "expected e.g. 'day >= 3' or \"city == 'Oslo'\""
        )
    try:
        value = int(raw)
    except ValueError:
        try:
            return float(raw)
        except ValueError:
            return raw
    if not INT64[0] <= value <= INT64[1]:
        raise argparse.ArgumentTypeError(f"filter {text!r}: {raw} is out of the range of 64-bit integers")
    return value


def number(text: str) -> float:
    """A number, or a usage error saying so (argparse would name this function instead)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def positive_float(text: str) -> float:
    value = number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def lease_seconds(text: str) -> float:
    """A lease length: a number of seconds above 0 and at most a day (a killed watcher's lease
    keeps the prefix busy that long)."""
    value = number(text)
    if not 0 < value <= MAX_LEASE_SECONDS:
        raise argparse.ArgumentTypeError(f"expected seconds > 0 and at most {MAX_LEASE_SECONDS:.0f}, got {text}")
    return value


def point_in_time(text: str) -> datetime:
    """An ISO 8601 time (a date, or a date and time with an optional offset; naive means UTC), read
    at parse time so that a bad one is a usage error naming the option.

    >>> point_in_time("2026-11-01T12:00+01:00").isoformat()
    '2026-11-01T12:00:00+01:00'
    >>> point_in_time("2026-11-01").isoformat()
    '2026-11-01T00:00:00+00:00'
    """
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        # Python's own text ("Invalid isoformat string", a timedelta's repr for +25:00) names no option.
        raise argparse.ArgumentTypeError(
            f"cannot read {text!r} as a time; expected ISO 8601, e.g. 2026-11-01, 2026-11-01T12:00Z or "
            "2026-11-01T12:00+01:00 (an offset under 24 hours)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def argument_type(constraint: Interval, name: str) -> Callable[[str], Any]:
    """An argparse type reading an integer (or number) that ``constraint`` allows; a value it
    refuses is a usage error saying what was expected, which argparse prefixes with the option
    (not with ``name``, the function's name it would otherwise show).

    >>> argument_type(Interval(Integral, 1), "count")("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected an integer >= 1, got 0
    """
    convert = int if constraint.kind is Integral else float

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {constraint}, got {text!r}") from None
        if value not in constraint:
            raise argparse.ArgumentTypeError(f"expected {constraint}, got {text}")
        return value

    parse.__name__ = name
    return parse


def parameter_type(name: str) -> Callable[[str], Any]:
    """The argparse type of an option that sets the estimator parameter ``name``: its
    constraint in :data:`~streamgmm.estimator.constraints.PARAMETER_CONSTRAINTS`."""
    constraint = PARAMETER_CONSTRAINTS[name]
    if not isinstance(constraint, Interval):
        raise TypeError(f"{name} is not a number: give its option choices=allowed({name!r})")
    return argument_type(constraint, name)


positive_int = argument_type(Interval(Integral, 1), "positive_int")
# A random seed: numpy's generators take no negative one.
seed = argument_type(Interval(Integral, 0), "seed")


def fraction(text: str) -> float:
    """A number from 0 to 1 (a step size)."""
    value = number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Conflicts between options, as usage errors (status 2) before any work."""
    both = [name for name in getattr(args, "columns", None) or () if name in getattr(args, "passthrough", ())]
    if both:
        parser.error(f"--columns and --passthrough both name {both[0]!r}; a column is a feature or passed through")
    weight = getattr(args, "weight_column", None)
    for option in ("columns", "passthrough"):
        if weight is not None and weight in (getattr(args, option, None) or ()):
            parser.error(f"--weight-column {weight} is also in --{option}; the weight column is neither")
    for option in OUTPUTS.get(args.command, ()):
        if is_url(getattr(args, option, None)):
            parser.error(
                f"--{option.replace('_', '-')} {getattr(args, option)}: writing to a URL is not "
                "supported yet; give a local or mounted path"
            )
    if args.command == "assign" and args.out_format == "delta" and (args.scheduler or args.workers):
        parser.error("--out-format delta commits from this process; with --scheduler or --workers, write Parquet")
    if args.command == "select":
        from streamgmm.selection import parse_candidates

        try:
            parse_candidates(args.components)
        except ValueError as exc:
            parser.error(f"-k/--components: {exc}")
        types = allowed("covariance_type")
        unknown = [name for name in args.covariance if name not in types]
        if unknown:
            parser.error(f"--covariance: unknown type {unknown[0]!r}; expected some of {', '.join(types)}")


# ---------------------------------------------------------------------- before working


def check_model_path(path: str, inputs: list[str] = ()) -> None:
    """Before any record is read: a fit that cannot be saved, or whose saving would overwrite
    an input file or write into an input directory (``inputs``), is refused."""
    refuse_url(path, "--model")
    check_output_file(path, "--model")
    if os.path.lexists(path):
        problem = describe_non_file(path)
        if problem is not None and "dangling" not in problem:
            raise CommandError(f"--model {path}: {problem}")
    try:
        check_not_input(path, inputs, "--model")
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def check_output_file(path: str, option: str) -> None:
    """A file the command will write (``option`` names it): its folder must exist, and it must not
    be a directory; else the failure would name the temporary file written first."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CommandError(f"{option} {path}: directory {directory} does not exist")
    if os.path.isdir(path):
        raise CommandError(f"{option} {path}: is a directory, not a file")


def input_paths(sources: list[str], source: ParquetSource) -> list[str]:
    """What a model must not be written over or into: every input file, and every directory
    given as an input (a file written there would be read as input next time)."""
    return [file.path for file in source.files] + [path for path in sources if os.path.isdir(path)]


@contextmanager
def explained_empty(source: ParquetSource) -> Iterator[None]:
    """A fit that fails for want of records says so when the filter matches none of them."""
    try:
        yield
    except ValueError:
        if source.filter is not None and source.dataset.count_rows(filter=source.filter) == 0:
            raise CommandError(f"no records match the filter {source.filter} in {len(source.files)} file(s)") from None
        raise


# ---------------------------------------------------------------------- describing


def unfinished_output(path: str) -> dict[str, Any] | None:
    """A directory assign wrote into without finishing (no ``_SUCCESS``): what it holds."""
    if not os.path.isdir(path) or os.path.exists(os.path.join(path, SUCCESS)):
        return None
    finished, partial = 0, 0
    for directory, _, names in os.walk(path):
        for name in names:
            if TEMPORARY.match(name):
                partial += 1
            elif name.endswith(".parquet") and is_output_file(os.path.join(directory, name)):
                finished += 1
    if not finished and not partial:
        return None
    return {"kind": "unfinished output", "path": path, "finished_files": finished, "partial_files": partial}


def describe_unfinished(result: dict[str, Any]) -> str:
    return (
        f"{result['path']}: an unfinished streamgmm assign output (no {SUCCESS}: the run was stopped or failed); "
        f"{result['finished_files']} finished and {result['partial_files']} partial file(s); run assign again"
    )
