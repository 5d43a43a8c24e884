"""What the ``streamgmm`` commands print: each summary as lines for a person (``--json`` prints
the summary itself)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamgmm.assignment.layout import SUCCESS
from streamgmm.cli.checks import (
    describe_unfinished,
)
from streamgmm.watch.drift import describe_moves

# ---------------------------------------------------------------------- progress


def describe(result: dict[str, Any]) -> str:
    """The human-readable form of a command's summary."""
    kind = result.get("command") or result.get("kind")
    special = _DESCRIBERS.get(kind)
    return special(result) if special is not None else _describe_model(result, kind)


def _describe_assign(result: dict[str, Any]) -> str:
    return (
        f"wrote responsibilities of {result['records']:,} records to {result['files']} file(s) in {result['out']} "
        f"in {result['seconds']:.1f} s"
        + (f"; {result['skipped']:,} {skipped_rows(result)} written as nulls" if result["skipped"] else "")
    )


def _describe_watch(result: dict[str, Any]) -> str:
    return (
        f"watch: {result['files_consumed']} file(s) consumed ({result['records_used']:,} records, "
        f"{result['records_skipped']:,} skipped), {result['files_quarantined']} quarantined, "
        f"{result['files_duplicate']} duplicate(s)"
        + (f", {result['files_flagged']} flagged by the drift signal" if result.get("files_flagged") else "")
        + f"; model at {result['model'] or 'none yet'}"
        + (f"; stopped by {result['stopped_by']}" if result["stopped_by"] else "")
    )


def _describe_select(result: dict[str, Any]) -> str:
    best = result["best"]
    return (
        f"{len(result['candidates'])} candidate(s) fitted in {result['n_passes']} shared pass(es) over "
        f"{result['records_per_pass']:,} records, scored on {result['scored_on']} (N = {result['n_scored']:,}) "
        f"in {result['seconds']:.1f} s\n{result['table']}\nbest by {result['criterion'].upper()}: "
        f"K = {best['n_components']}, {best['covariance_type']}"
        + (f"; model written to {result['model']}" if result["model"] else "")
    )


def _describe_plot(result: dict[str, Any]) -> str:
    return f"wrote {result['out']} ({result['width']}x{result['height']} PNG)"


def _describe_parquet(result: dict[str, Any]) -> str:
    lines = [
        f"{result['path']}: Parquet data, {result['records']:,} records in {result['files']} file(s), "
        f"{result['row_groups']} row group(s)"
        + (f", {len(result['empty_files'])} empty file(s) skipped" if result["empty_files"] else ""),
        f"numeric columns (features by default): {', '.join(result['numeric_columns'])}",
    ]
    if result["other_columns"]:
        lines.append(f"other columns: {', '.join(result['other_columns'])}")
    if result["partitions"]:
        lines.append(f"hive partition keys: {', '.join(result['partitions'])}")
    if result["unfinished_output"]:
        lines.append(f"written by streamgmm assign but without {SUCCESS}: an unfinished output")
    return "\n".join(lines)


def _describe_model(result: dict[str, Any], kind: str | None) -> str:
    """A fit's summary, a model file's, an output file's or an output directory's."""
    components = f"{result['n_components']} {result['covariance_type']} components"
    if kind == "output directory":
        return (
            f"{result['path']}: streamgmm output, {result['rows']:,} records in {len(result['files'])} file(s), "
            f"{result['skipped']:,} skipped; model {result['model_fingerprint'][:12]}, "
            f"{components} over {', '.join(result['feature_names'])}"
        )
    if kind == "fit":
        weighted = f", weighted by {result['weight_column']}" if result.get("weight_column") else ""
        lines = [
            f"fitted {components} on {result['records']:,} records{weighted} ({result['skipped']:,} skipped) from "
            f"{result['files']} file(s) in {result['seconds']:.1f} s; {lower_bound_text(result)}; "
            f"model written to {result['model']}"
        ]
    else:  # a model file or an output file
        lines = [f"{result['path']}: {kind}, {components} over {', '.join(result['feature_names'])}"]
        if kind == "model":
            lines.append(
                f"fitted by {result['algorithm']} EM: {result['records_seen']:,} records seen, "
                f"{result['n_iter']} pass(es)/iteration(s), {lower_bound_text(result)}"
            )
            lines.append(result["fit_history_summary"])
    return "\n".join(lines + component_table(result["weights"], result["means"]))


def describe_state(result: dict[str, Any]) -> str:
    lines = [
        f"{result['path']}: watcher state, {result['files_consumed']} file(s) consumed, "
        f"{result['files_quarantined']} quarantined, {result['files_duplicate']} duplicate(s); "
        f"{result['records_used']:,} records used, {result['records_skipped']:,} skipped; "
        f"last update {result['last_update'] or 'never'}"
    ]
    if result["model"] is None:
        return lines[0] + " (no model yet)"
    lines.append(
        f"{result['n_components']} {result['covariance_type']} components over "
        f"{', '.join(result['feature_names'])}, {result['n_steps']:,} online steps, step floor {result['step_floor']}, "
        f"moves {result['moves']}"
    )
    lines += component_table(result["weights"], result["means"])
    lines.append("recent files (largest move of a mean, of a weight):")
    for entry in result["recent"]:
        moved = "" if entry["mean_shift"] is None else f"  {entry['mean_shift']:.4g}, {entry['weight_shift']:.4g}"
        lines.append(
            f"  {entry['sequence']:>6}  {entry['status']:<11} {entry['records_used']:>10,}  {entry['path']}{moved}"
        )
    if result["mean_displacement_since_oldest_kept"] is not None:
        shown = ", ".join(f"{v:.4g}" for v in result["mean_displacement_since_oldest_kept"])
        lines.append(f"means moved since {result['models'][0]} (oldest kept): [{shown}]")
    for entry in result["quarantined"][-5:]:
        lines.append(f"quarantined {entry['path']}: {entry['reason']}")
    if result.get("drift"):
        lines += describe_drift(result["drift"])
    return "\n".join(lines)


def describe_drift(drift: dict[str, Any]) -> list[str]:
    """The drift series: each recent file's score against the level of the files before it."""
    flagged = drift["files_flagged"]
    last = drift["last_flagged"]
    lines = [
        f"drift: {drift['files_scored']} file(s) scored, {flagged} flagged"
        + (f" (last: {last['path']}, file {last['sequence']})" if last else "")
        + f"; score = mean log-likelihood per record before learning the file, level = weighted mean "
        f"(sd) of earlier scores, half-life {drift['half_life_files']} files; flagged = more than "
        f"{drift['flag_sds']:g} sd and {drift['min_drop']:g} nat/record below the level"
    ]
    if not drift["series"]:
        return lines
    lines.append(f"  {'file':>6} {'records':>10} {'score':>10} {'level':>10} {'(sd)':>8}  flag  path  moves")
    for point in drift["series"]:
        sd = f"({point['level_sd']:.3g})" if point["level_sd"] is not None else ""
        lines.append(
            f"  {_shown(point['sequence'], 'd'):>6} {_shown(point['records_used'], ',d'):>10} "
            f"{_shown(point['score'], '.4f'):>10} {_shown(point['level'], '.4f'):>10} {sd:>8}  "
            f"{'**' if point['flagged'] else '':<4}  {point['path']}"
            + (f"  {describe_moves(point['moves'])}" if point["moves"] else "")
        )
    return lines


def _shown(value: Any, spec: str) -> str:
    """A number of the drift series, or ``-`` where there is none."""
    return "-" if value is None else format(value, spec)


def skipped_rows(result: dict[str, Any]) -> str:
    """What the rows an assign left out lacked, under its nan_policy."""
    if result.get("nan_policy") == "marginalize":
        return "with no feature observed"
    return "with null, NaN or infinite features"


def lower_bound_text(result: dict[str, Any]) -> str:
    if result["algorithm"] != "online":  # the last stage was exact EM
        return f"mean log-likelihood {result['lower_bound']:.4f}"
    # Online EM scores each mini-batch before the update that learns from it: an average over
    # the pass, lower than the final model would score.
    return f"mean log-likelihood {result['lower_bound']:.4f} over the last pass (each batch before its update)"


def component_table(weights: Sequence[float], means: Sequence[Sequence[float]]) -> list[str]:
    lines = ["component  weight   mean"]
    for k, (weight, mean) in enumerate(zip(weights, means)):
        shown = ", ".join(f"{v:.4g}" for v in mean[:8]) + (", ..." if len(mean) > 8 else "")
        lines.append(f"{k:>9}  {weight:.4f}   [{shown}]")
    return lines


# The summaries with a form of their own; the others describe a model.
_DESCRIBERS = {
    "assign": _describe_assign,
    "watch": _describe_watch,
    "watch state": describe_state,
    "unfinished output": describe_unfinished,
    "select": _describe_select,
    "plot": _describe_plot,
    "parquet data": _describe_parquet,
}
