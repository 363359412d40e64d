"""``laueflow`` console entry point: one subcommand per module of :mod:`laueflow.cli`.

Each subcommand module exposes ``add_parser(subparsers)`` which registers its parser and sets
``func`` (called with the parsed namespace; returns an exit code).
"""
from __future__ import annotations

import argparse
import errno
import importlib
import sys

from .. import __version__
from ..io.store_lock import StoreLockedError

#: file-system refusals reported as a user error (exit 2) rather than a traceback
_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.ENAMETOOLONG, errno.EDQUOT}

#: subcommand modules, in the order they are listed by ``laueflow --help``
SUBCOMMANDS = ["demo", "simulate", "ingest", "run", "submit", "evaluate", "train", "export", "index", "segment",
               "report"]


class UserError(Exception):
    """An error caused by the user's input: printed without a traceback, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="laueflow",
        description="Laue microdiffraction scans → orientation, strain and microstructure maps.",
        epilog="Example: laueflow demo --out demo/   (simulate, ingest, run and evaluate a small scan)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"laueflow {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"laueflow.cli.{name}")
        except ModuleNotFoundError as err:  # a subcommand still being written
            if err.name != f"laueflow.cli.{name}":
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError, FileExistsError, ValueError, StoreLockedError) as err:
        print(f"laueflow {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in _PATH_ERRNOS:
            raise
        where = f" {err.filename}" if err.filename else ""
        print(f"laueflow {args.command}: error: cannot write or read{where}: {err.strerror}. Check the path, its "
              "permissions and the free space, then run the same command again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"laueflow {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # `python -m laueflow.cli.main`: the module's classes, not __main__'s copies
    from laueflow.cli.main import main as _main

    sys.exit(_main())
