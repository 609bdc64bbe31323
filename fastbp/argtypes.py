"""argparse types for output files: checked when the flags are parsed, before any work starts,
so a typo in ``--plot`` or ``--save`` never costs a training run (``fastbp train --plot
/nonexistent/c.png`` fails at once, naming the flag and the path)."""

from __future__ import annotations

import argparse

from .files import check_writable, figure_format


def output_file(what: str):
    """A type for a flag naming a file to write ``what`` to: its folder must exist and be
    writable, and it must not be a folder."""

    def parse(text: str) -> str:
        try:
            return check_writable(text, what)
        except OSError as exc:
            raise argparse.ArgumentTypeError(exc.strerror or str(exc)) from None

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def figure_file(text: str) -> str:
    """A type for a flag naming an image to write: writable, and a format Matplotlib writes
    (from the extension). Whether Matplotlib is installed each command checks itself, naming
    its extra."""
    try:
        figure_format(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return output_file("figure")(text)
