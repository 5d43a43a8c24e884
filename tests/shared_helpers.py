"""Helpers the tests share (importable from any test module: ``tests`` is on pytest's path).

The command run in this process, as a subprocess or on a pseudo-terminal, and its one error
line; models compared (parameters within a stated tolerance, or bit for bit); the scipy oracle
of a chunk's statistics; and model files taken apart and written member by member, bypassing
the writer's checks (for hostile files)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import traceback
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from streamgmm import MixtureParams, StreamingGaussianMixture
from streamgmm.cli.command import main
from streamgmm.em.novelty import Reservoir

# ---------------------------------------------------------------- the command


def cli(capsys, *argv: object) -> tuple[int, str, str]:
    """``streamgmm ARGV`` in this process (no start-up cost): (status, stdout, stderr); usage
    errors give 2."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def run_streamgmm(
    *args: object, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``python -m streamgmm ARGS`` as a subprocess (no stdin; ``env`` replaces the environment
    when given), its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "streamgmm", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def run_streamgmm_here(*args: object) -> subprocess.CompletedProcess:
    """``streamgmm ARGS`` in this process, saving the second of imports a subprocess pays, for
    tests that are not about the process; returned as :func:`run_streamgmm` returns it.

    stdout and stderr are captured as text (not terminals), what native libraries write to file
    descriptors 1 and 2 included (after Python's own text); an uncaught exception gives status 1
    and its traceback on stderr, as the interpreter would. The environment is restored after,
    since the command sets its storage options there. Not thread-safe (``sys.stdout`` and the
    descriptors are swapped), and Dask's log lines are not captured: keep cluster runs in a
    subprocess."""
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    environ = dict(os.environ)
    with native_output(1) as native_out, native_output(2) as native_err:
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(argv)
                except SystemExit as exc:  # argparse's usage errors
                    code = exc.code
                except Exception:
                    traceback.print_exc()
                    code = 1
        finally:
            os.environ.clear()
            os.environ.update(environ)
    stdout, stderr = out.getvalue() + "".join(native_out), err.getvalue() + "".join(native_err)
    return subprocess.CompletedProcess(["streamgmm", *argv], code, stdout, stderr)


@contextlib.contextmanager
def native_output(fd: int) -> Iterator[list[str]]:
    """File descriptor ``fd`` pointed at a temporary file for the block; yields a list that
    holds, once the block ends, what was written there (as text)."""
    written: list[str] = []
    with tempfile.TemporaryFile(mode="w+", errors="replace") as captured:
        saved = os.dup(fd)
        os.dup2(captured.fileno(), fd)
        try:
            yield written
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            captured.seek(0)
            written.append(captured.read())


def run_each_here(*commands: list) -> list[subprocess.CompletedProcess]:
    """Independent commands (argument lists) through :func:`run_streamgmm_here`, one after the other."""
    return [run_streamgmm_here(*command) for command in commands]


def run_streamgmm_concurrently(*commands: list, timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """Independent commands (argument lists), four at a time: each pays about a second of imports."""
    with ThreadPoolExecutor(max_workers=min(4, len(commands))) as pool:
        return list(pool.map(lambda argv: run_streamgmm(*argv, timeout=timeout), commands))


def one_error_line(err: str, *fragments: str) -> str:
    """The only line of ``err`` (no traceback), which holds every one of ``fragments``."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str, status: int = 1) -> str:
    """The command exited with ``status``, printed nothing on stdout and one line
    ``streamgmm: error: ...`` holding every one of ``fragments`` on stderr; that line."""
    assert result.returncode == status, (result.stdout, result.stderr)
    assert result.stdout == ""
    line = one_error_line(result.stderr, *fragments)
    assert line.startswith("streamgmm: error: "), line
    return line


def on_a_terminal(*args: object, timeout: float = 300) -> tuple[int, str, str]:
    """Run the command with stderr on a pseudo-terminal (120 columns): (exit code, stdout,
    what the terminal showed)."""
    import fcntl
    import pty
    import struct
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "streamgmm", *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            data = os.read(controller, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        shown += data
    stdout = process.stdout.read()
    process.wait(timeout=timeout)
    os.close(controller)
    return process.returncode, stdout, shown.decode(errors="replace")


# ---------------------------------------------------------------- models compared


def assert_same_parameters(
    a: StreamingGaussianMixture, b: StreamingGaussianMixture, *, atol: float, rtol: float = 0.0
) -> None:
    """The weights, means and covariances of two fitted models agree within ``atol`` and ``rtol``."""
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, atol=atol, err_msg=name)


def assert_same_fit(a: StreamingGaussianMixture, b: StreamingGaussianMixture, *, atol: float) -> None:
    """:func:`assert_same_parameters` within ``atol``, the same number of iterations, and final
    lower bounds within ``atol``."""
    assert_same_parameters(a, b, atol=atol)
    assert a.n_iter_ == b.n_iter_
    assert abs(a.lower_bound_ - b.lower_bound_) <= atol, (a.lower_bound_, b.lower_bound_)


def flat_fields(value: Any, name: str) -> dict[str, Any]:
    """Every array and scalar of a (nested) dataclass by dotted name, so a field added later is
    compared too; a reservoir is taken merged, as model files hold it."""
    if isinstance(value, Reservoir):
        # Records waiting to be merged are the same sample: compare it merged.
        value = replace(value.merged(), pending=(), capacity=0)
    if not is_dataclass(value):
        return {name: value}
    return {
        key: item
        for field in fields(value)
        for key, item in flat_fields(getattr(value, field.name), f"{name}.{field.name}").items()
    }


def assert_bit_identical(a: Any, b: Any, name: str) -> None:
    """Two (nested) dataclasses or values are equal bit for bit: every array in values and
    dtype, every scalar in value and type."""
    fa, fb = flat_fields(a, name), flat_fields(b, name)
    assert fa.keys() == fb.keys()
    for key, value in fa.items():
        other = fb[key]
        if isinstance(value, np.ndarray):
            assert isinstance(other, np.ndarray) and other.dtype == value.dtype, key
            assert np.array_equal(value, other), key
        else:
            assert type(value) is type(other) and value == other, (key, value, other)


FITTED_ARRAYS = ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_")
# The births' and merges' arrays a model file holds (``arrays/<name>.npy``).
MOVES_ARRAYS = (
    "moves.records",
    "moves.log_weights",
    "moves.keys",
    "moves.novel.shift",
    "moves.novel.counts",
    "moves.novel.sums",
    "moves.novel.second",
    "moves.sample.records",
    "moves.sample.log_weights",
    "moves.sample.keys",
)
FITTED_SCALARS = ("n_steps_", "records_seen_", "n_iter_", "converged_", "lower_bound_", "n_features_in_")


def assert_bit_identical_models(a: StreamingGaussianMixture, b: StreamingGaussianMixture) -> None:
    """Bit for bit: every fitted array and scalar, the lower bounds, the online state a stream
    resumes from (running statistics, counters, births' and merges' state) and the moves taken."""
    for name in FITTED_ARRAYS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert getattr(a, name).dtype == getattr(b, name).dtype, name
    for name in FITTED_SCALARS:
        assert getattr(a, name) == getattr(b, name), name
    assert a.lower_bounds_ == b.lower_bounds_
    sa, sb = a.online_state_, b.online_state_
    assert sa.statistics.arrays().keys() == sb.statistics.arrays().keys()
    for name, value in sa.statistics.arrays().items():
        assert np.array_equal(sb.statistics.arrays()[name], value), f"statistics.{name}"
    assert (sa.statistics.n_records, sa.statistics.log_likelihood, sa.statistics.covariance_type) == (
        sb.statistics.n_records,
        sb.statistics.log_likelihood,
        sb.statistics.covariance_type,
    )
    assert (sa.step, sa.records_seen) == (sb.step, sb.records_seen)
    assert (sa.moves is None) == (sb.moves is None)
    assert_bit_identical(sa.moves, sb.moves, "moves")
    assert a.fit_history_.moves == b.fit_history_.moves


# ---------------------------------------------------------------- the chunk oracle


def unit_matrices(covariance_type: str, k: int, d: int) -> np.ndarray:
    """Identity covariances (or precisions) of ``k`` components in ``d`` features, in the
    layout of ``covariance_type``."""
    return {
        "full": np.stack([np.eye(d)] * k),
        "tied": np.eye(d),
        "diag": np.ones((k, d)),
        "spherical": np.ones(k),
    }[covariance_type]


def dense_covariances(params: MixtureParams) -> np.ndarray:
    """Every component's covariance as a (K, d, d) matrix, whatever the covariance type."""
    k, d, c = params.n_components, params.n_features, params.covariances
    return {
        "full": lambda: c,
        "tied": lambda: np.broadcast_to(c, (k, d, d)),
        "diag": lambda: np.stack([np.diag(v) for v in c]),
        "spherical": lambda: c[:, None, None] * np.eye(d),
    }[params.covariance_type]()


def scipy_chunk_statistics(X: np.ndarray, params: MixtureParams, shift: np.ndarray) -> dict[str, np.ndarray]:
    """A chunk of complete records' E-step written out: scipy's densities, a log-sum-exp, and
    the statistics each covariance type keeps (about ``shift``): counts, sums, second, log_norm, resp."""
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    with np.errstate(divide="ignore"):  # a weight of zero: log 0 = -inf
        log_weights = np.log(params.weights)
    log_prob = np.column_stack(
        [
            w + multivariate_normal(m, c).logpdf(X).reshape(-1)
            for w, m, c in zip(log_weights, params.means, dense_covariances(params))
        ]
    ).reshape(X.shape[0], params.n_components)
    log_norm = logsumexp(log_prob, axis=1)
    resp = np.exp(log_prob - log_norm[:, None])
    u = X - shift
    second = {
        "full": lambda: np.einsum("nk,nd,ne->kde", resp, u, u),
        "tied": lambda: u.T @ u,
        "diag": lambda: resp.T @ (u * u),
        "spherical": lambda: resp.T @ (u * u),
    }[params.covariance_type]()
    return {"counts": resp.sum(axis=0), "sums": resp.T @ u, "second": second, "log_norm": log_norm, "resp": resp}


def random_params(
    covariance_type: str,
    k: int,
    d: int,
    rng: np.random.Generator,
    *,
    spread: float = 4.0,
    centre: float = 10.0,
    scale: float = 1.0,
) -> MixtureParams:
    """A random mixture of ``k`` components in ``d`` features: means ``spread`` apart about
    ``centre``, covariances of about ``scale`` (well conditioned)."""
    weights = rng.uniform(0.5, 1.5, k)
    means = rng.normal(scale=spread, size=(k, d)) + centre
    if covariance_type == "full":
        A = rng.normal(size=(k, d, d))
        covariances = (A @ A.transpose(0, 2, 1) / d + np.eye(d)) * scale
    elif covariance_type == "tied":
        A = rng.normal(size=(d, d))
        covariances = (A @ A.T / d + np.eye(d)) * scale
    elif covariance_type == "diag":
        covariances = rng.uniform(0.3, 3.0, (k, d)) * scale
    else:
        covariances = rng.uniform(0.3, 3.0, k) * scale
    return MixtureParams.from_covariances(weights / weights.sum(), means, covariances, covariance_type)


# ---------------------------------------------------------------- model files member by member


def members(path: Path) -> dict[str, bytes]:
    """A model file's members by name."""
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_zip(path: Path, contents: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    """A model file written member by member, bypassing the writer's checks."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, body in contents.items():
            archive.writestr(name, body)
    return path


def npy(array: np.ndarray) -> bytes:
    """An array as a ``.npy`` member (no pickles)."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def all_records(batches: Any) -> np.ndarray:
    """Every record of a source's batches (or of one sample) as one matrix: the features, with
    the weights as a last column for a weighted source."""
    if hasattr(batches, "stacked"):
        return batches.stacked()
    return np.concatenate([batch.stacked() for batch in batches])
