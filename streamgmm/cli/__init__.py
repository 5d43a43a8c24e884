"""The ``streamgmm`` command (:mod:`.command`) and its argument checks (:mod:`.checks`)."""

from streamgmm.cli.command import build_parser, main

__all__ = ["build_parser", "main"]
