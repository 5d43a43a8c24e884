"""A summary of a ``py-spy record --threads --idle -f raw`` output by thread and step, for
``scripts/profile_pass.py --py-spy FILE``."""

from __future__ import annotations

from collections import defaultdict

# py-spy frames by function name, most specific first: the step a sample is charged to.
STEPS = [
    ("take_gil", "waiting for the GIL"),
    ("get", "waiting: queue get (starved)"),
    ("put", "waiting: queue put (blocked)"),
    ("cholesky", "M-step: cholesky"),
    ("to_params", "M-step (to_params)"),
    ("blend", "blend"),
    ("reseed", "re-seeding check (reseed)"),
    ("lowest", "worst records (lowest)"),
    ("expansion", "kernel inputs"),
    ("expanded_log_density", "kernel inputs"),
    ("direct_form", "kernel inputs"),
    ("fused_run", "C kernel (_fused.run)"),
    ("chunk_statistics", "E-step wrapper"),
    ("online_update", "online_update (rest)"),
    ("asfortranarray", "column-major copy"),
    ("in_range", "range / NaN check"),
    ("to_matrix", "to float64"),
    ("fragment", "footer / fragment"),
    ("_group_rows", "pyarrow decode"),
    ("chunks", "permute + gather"),
]


def summarise_py_spy(path: str, main: str, readers: tuple[str, ...], threads: tuple[str, ...]) -> None:
    """Samples of a ``py-spy record --threads --idle -f raw`` output of ``--passes-only`` by
    thread and step, leaving out the first fit (the main thread's ``build`` and the reading
    threads first started)."""
    samples: list[tuple[str, int, str, int]] = []
    for line in open(path):
        stack, _, count = line.rstrip().rpartition(" ")
        frames = stack.split(";")
        head, _, thread = frames[0].partition(": ")
        tid = int(head.split("(")[1].rstrip(")"), 0)
        names = {frame.split(" (")[0].rsplit(".", 1)[-1] for frame in frames[1:]}
        if thread == main and "one_pass" not in names:
            continue  # the first fit, or start-up
        kernel = any("streamgmm/kernels/_fused" in frame for frame in frames)
        step = next((label for name, label in STEPS if name in names), "other")
        if kernel and step not in ("waiting for the GIL",):
            step = "C kernel (_fused.run)"
        samples.append((thread, tid, step, int(count)))
    first = {
        thread: min(t for name, t, _, _ in samples if name == thread)
        for thread in readers
        if any(name == thread for name, _, _, _ in samples)
    }
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for thread, tid, step, count in samples:
        if first.get(thread) != tid:
            totals[thread if thread in threads else "other threads"][step] += count
    for kind in (*threads, "other threads"):
        steps = totals.get(kind)
        if not steps:
            continue
        total = sum(steps.values())
        print(f"{kind}: {total} samples")
        for step, count in sorted(steps.items(), key=lambda item: -item[1]):
            print(f"  {step:<40}{count:8d}{100 * count / total:7.1f}%")
