"""Helpers the tests share (importable from any test module: ``tests`` is on pytest's path).

The command run in this process or on a pseudo-terminal, and model files taken apart and
written member by member, bypassing the writer's checks (for hostile files)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from streamgmm.cli.command import main


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
