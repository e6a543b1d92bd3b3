"""The command line: `pyaudit inspect`, with exit statuses per CONTRACT.md."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from pyaudit import __version__

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 2 with one line, as CONTRACT.md says."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _emit_json(doc: object) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def cmd_inspect(args: argparse.Namespace) -> int:
    from pyaudit.headers import Header, read_headers
    from pyaudit.report.inspect_view import inspect_json, print_inspect

    path: str = args.file
    if not os.path.exists(path):
        print(f"pyaudit inspect: {path}: no such file", file=sys.stderr)
        return EXIT_USAGE
    if os.path.isdir(path):
        print(f"pyaudit inspect: {path}: is a directory (use `pyaudit scan`)", file=sys.stderr)
        return EXIT_USAGE
    header: Header = read_headers([path], jobs=1)[0]
    if args.json:
        _emit_json(inspect_json(header))
    else:
        print_inspect(header, _console())
    return EXIT_OK if header.ok else EXIT_FAIL


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pyaudit",
        description="Audit ML model checkpoints without loading a single weight.",
    )
    parser.add_argument("--version", action="version", version=f"pyaudit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    inspect = commands.add_parser("inspect", help="print one .safetensors file's header, validated")
    inspect.add_argument("file", metavar="FILE.safetensors")
    inspect.add_argument("--json", action="store_true", help="machine output on stdout")
    inspect.add_argument("--jobs", type=int, default=None, help=argparse.SUPPRESS)
    inspect.set_defaults(run=cmd_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except BrokenPipeError:
        # `pyaudit ... | head`: the reader left; that is not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
