"""The command line: `pyaudit scan`, `inspect`, `expect`, with exit statuses per CONTRACT.md."""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import stat
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from pyaudit import __version__
from pyaudit.report.sizes import plural

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 2 with one line, as CONTRACT.md says."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _render(draw: Any) -> None:
    """Draw with rich: straight to a terminal; to a file or pipe, 200 columns wide and
    without the padding rich leaves at line ends."""
    import io

    from rich.console import Console

    if sys.stdout.isatty():
        draw(Console(highlight=False))
        return
    buffer = io.StringIO()
    draw(Console(file=buffer, highlight=False, width=200, color_system=None))
    sys.stdout.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))


STREAM_JSON_ABOVE = 8 << 20  # header bytes past which `inspect --json` streams its output


def _emit_json(doc: object, *, stream: bool = False) -> None:
    """``doc`` as indented JSON on stdout. ``stream``: written piece by piece (slower), so
    that a huge document (a header of millions of ``__metadata__`` keys) is not also held
    as one string: 1.36 GB -> 0.86 GB peak for a 94 MB header of 2M keys."""
    if stream:
        json.dump(doc, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def cmd_inspect(args: argparse.Namespace) -> int:
    from pyaudit.headers import Header, read_headers
    from pyaudit.report.inspect_view import inspect_json, print_inspect

    path: str = args.file
    if not os.path.exists(path):
        print(f"pyaudit inspect: {path}: no such file", file=sys.stderr)
        return EXIT_USAGE
    if os.path.isdir(path):
        return _inspect_state_dir(path, args.json)
    from pyaudit.formats import sniff

    fmt = "unknown"
    try:  # non-blocking: a FIFO must not hang; unreadable: the header reader says so
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                fmt = sniff(os.pread(fd, 9, 0))
        finally:
            os.close(fd)
    except OSError:
        pass
    if fmt == "torch":
        from pyaudit.formats.torch_pickle import read_torch
        from pyaudit.report.inspect_view import print_torch_inspect, torch_inspect_json

        ckpt = read_torch(path)
        if args.json:
            _emit_json(torch_inspect_json(ckpt))
        else:
            _render(lambda console: print_torch_inspect(ckpt, console))
        plain = ckpt.kind == "pickle" and not ckpt.core.is_dcp  # not what torch.save writes
        return EXIT_OK if ckpt.ok and not ckpt.unsafe_globals() and not plain else EXIT_FAIL
    header: Header = read_headers([path], jobs=1)[0]
    if fmt == "unknown" and header.rule == "header-too-large":
        from pyaudit.report.inspect_view import neither_json

        if args.json:
            _emit_json(neither_json(path, header.file_size))
        else:
            print(f"{path}: not a safetensors or torch file")
        return EXIT_FAIL
    if args.json:
        _emit_json(inspect_json(header), stream=header.header_size > STREAM_JSON_ABOVE)
    else:
        _render(lambda console: print_inspect(header, console))
    return EXIT_OK if header.ok else EXIT_FAIL


def _inspect_state_dir(path: str, as_json: bool) -> int:
    """A sharded training state's folder (DCP ``.metadata`` + shards, DeepSpeed
    ``global_step*``): its records, read as data. Any other folder is for ``scan``."""
    from pyaudit.formats.dcp import METADATA, read_dcp
    from pyaudit.formats.deepspeed import STEP_DIR, read_deepspeed
    from pyaudit.report import inspect_view as view

    if os.path.isfile(os.path.join(path, METADATA)):
        dcp = read_dcp(path)
        if as_json:
            _emit_json(view.dcp_inspect_json(dcp))
        else:
            _render(lambda console: view.print_dcp_inspect(dcp, console))
        return EXIT_OK if dcp.ok else EXIT_FAIL
    if STEP_DIR.search(os.path.basename(os.path.normpath(path))):
        step = read_deepspeed(path)
        if as_json:
            _emit_json(view.deepspeed_inspect_json(step))
        else:
            _render(lambda console: view.print_deepspeed_inspect(step, console))
        ok = step.partitions_complete and not step.problems
        return EXIT_OK if ok else EXIT_FAIL
    print(
        f"pyaudit inspect: {path}: is a directory (use `pyaudit scan`; inspect reads a weights "
        "file, a DCP folder with .metadata, or a DeepSpeed global_step* folder)",
        file=sys.stderr,
    )
    return EXIT_USAGE


def _jobs(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def cmd_scan(args: argparse.Namespace) -> int:
    first_pages = {}
    fetchers: dict[str, Any] = {}
    if not args.verify_data and not args.dask and any("://" in p for p in args.paths):
        from pyaudit.firstpage import ask

        # Each s3:// PATH's first listing page, asked now where it can be (pyaudit.firstpage),
        # then the process its GETs go to started (pyaudit.fetcher): every import below
        # overlaps the page's round trip and the process's own imports.
        first_pages = ask(args.paths)
        from pyaudit.fetcher import spawn

        fetchers = spawn(args.paths)
    try:
        return _scan(args, first_pages, fetchers)
    finally:
        for fetcher in fetchers.values():  # (those no listing took)
            fetcher.close()


def _scan(args: argparse.Namespace, first_pages: Any, fetchers: dict[str, Any]) -> int:

    import time
    from pathlib import Path

    from pyaudit.discover import is_url

    missing = [p for p in args.paths if not is_url(p) and not os.path.exists(p)]
    if missing:
        for p in missing:
            print(f"pyaudit scan: {p}: no such file or directory", file=sys.stderr)
        return EXIT_USAGE
    odd = [p for p in args.paths if not is_url(p) and not (os.path.isdir(p) or os.path.isfile(p))]
    if odd:
        for p in odd:
            print(f"pyaudit scan: {p}: not a directory or a file", file=sys.stderr)
        return EXIT_USAGE
    remote = any(is_url(p) for p in args.paths)
    cluster_errors: list[str] = []
    if args.dask:
        from pyaudit import distributed

        try:
            distributed.require()
        except distributed.DaskUnavailable as e:
            print(f"pyaudit scan: {e}", file=sys.stderr)
            return EXIT_USAGE
        urls = [p for p in args.paths if is_url(p)]
        if urls:
            print(f"pyaudit scan: --dask: {urls[0]}: scan URLs without --dask", file=sys.stderr)
            return EXIT_USAGE
    if args.html and not os.path.isdir(os.path.dirname(os.path.abspath(args.html))):
        print(f"pyaudit scan: --html {args.html}: no such directory", file=sys.stderr)
        return EXIT_USAGE
    if remote:
        from pyaudit.remote import RemoteError, discard, prepare, start_listing

        try:
            # Listings first: the imports below overlap their first round trips.
            if not args.verify_data:
                start_listing(args.paths, args.jobs, first_pages, fetchers)
        except RemoteError as e:
            print(f"pyaudit scan: {e}", file=sys.stderr)
            return EXIT_USAGE

    from pyaudit.api import reports as scan_reports
    from pyaudit.auditing.results import AuditOptions, ScanSummary
    from pyaudit.sweep import load_base

    if remote:
        try:
            # Each URL is listed now (its first page): one that cannot be is a usage error.
            prepare(args.paths, args.verify_data, args.jobs)
        except RemoteError as e:
            print(f"pyaudit scan: {e}", file=sys.stderr)
            return EXIT_USAGE
    options = AuditOptions(
        expect=args.expect,
        base=Path(args.base) if args.base else None,
        fail_on=args.fail_on,
        verify_data=args.verify_data,
        oracle=args.oracle,
        fast_path=args.fast_path,
        expect_runs=tuple(args.expect_run or ()),
    )
    base_expected = None
    if options.base is not None:
        error = None
        if not options.base.is_dir():
            error = f"--base {options.base}: not a directory"
        else:
            try:
                base_expected = load_base(options.base, args.jobs)
            except ValueError as e:
                error = str(e)
        if error is not None:
            if remote:
                discard(args.paths)  # listed for nothing: not kept for a later scan
            print(f"pyaudit scan: {error}", file=sys.stderr)
            return EXIT_USAGE
    from pyaudit.report.progress import SweepProgress

    start = time.perf_counter()
    summary = ScanSummary()
    from pyaudit.oracle import OracleSession
    from pyaudit.report.json_report import checkpoint_line

    reports = []
    lines: list[str] = []  # --json: each report as its JSON line, not as an object
    oracle = OracleSession()  # its worker starts on first need, and stops below
    sweep = scan_reports(
        args.paths,
        options,
        args.jobs,
        base_expected,
        dask=args.dask,
        ordered=not args.jsonl,
        oracle=oracle,
    )
    if args.dask:
        sweep = distributed.until_error(cluster_errors, sweep)
    table = not (args.json or args.jsonl or args.markdown or args.html)
    if table:  # (rich: not imported for the machine outputs)
        from pyaudit.report.table import keep_for_table
    passes_kept = 0
    with oracle, SweepProgress(SweepProgress.wanted(args.json or args.jsonl)) as progress:
        for report in sweep:
            summary.add(report)
            progress.advance(report.status)
            if args.jsonl:
                sys.stdout.write(checkpoint_line(report) + "\n")
                sys.stdout.flush()
            elif args.json and not args.html:
                lines.append(checkpoint_line(report))
                continue
            if table:
                if keep_for_table(report, passes_kept, args.all):
                    passes_kept += report.status == "pass"
                    reports.append(report)
            elif not args.jsonl or args.html:
                reports.append(report)
    if cluster_errors:
        print(f"pyaudit scan: {cluster_errors[0]}", file=sys.stderr)
        return EXIT_USAGE
    summary.seconds = time.perf_counter() - start
    transfer = getattr(sweep, "transfer", None)  # remote stores: requests and bytes
    if transfer is not None:
        summary.remote = transfer.to_json()
    if oracle.used:
        summary.oracle = oracle.stats.to_json()
    if not summary.checkpoints:
        # Nothing audited is not a pass: a mistyped path, an empty folder. The machine
        # outputs still get a valid (empty) document.
        print("pyaudit scan: no checkpoints found under " + ", ".join(args.paths), file=sys.stderr)
    if args.jsonl:
        pass
    elif args.json:
        from pyaudit.report.json_report import write_scan_json

        write_scan_json(
            sys.stdout, lines or [checkpoint_line(r) for r in reports], summary.to_json()
        )
    elif args.markdown:
        from pyaudit.report.markdown import scan_markdown

        sys.stdout.write(scan_markdown(reports, summary.to_json(), args.paths))
    elif summary.checkpoints:
        from pyaudit.report.table import print_scan

        _render(lambda console: print_scan(reports, summary.to_json(), console, args.all))
    if args.html:
        from pyaudit.report.html import write_html

        try:
            write_html(args.html, reports, summary.to_json(), args.paths)
        except OSError as e:
            print(f"pyaudit scan: --html {args.html}: {e.strerror or e}", file=sys.stderr)
            return EXIT_USAGE
        wrote = plural(len(reports), "checkpoint")
        print(f"pyaudit scan: wrote {args.html} ({wrote})", file=sys.stderr)
    if not summary.checkpoints:
        return EXIT_USAGE
    return EXIT_FAIL if summary.failed else EXIT_OK


def _expect_run(value: str) -> tuple[str, str]:
    from pyaudit.runs import parse_expect_run

    try:
        return parse_expect_run(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_expect(args: argparse.Namespace) -> int:
    """Exit statuses as scan's: 2 when the command line names no config (no such file, a
    directory without one, an unknown --layout); 1 when the config named cannot give a
    manifest (unreadable, not JSON, invalid fields, a family without a spec)."""
    from pathlib import Path

    from pyaudit.manifest import (
        ManifestError,
        UnknownArchitecture,
        build_manifest,
        layouts,
        manifest_to_json,
    )
    from pyaudit.runfiles import load_json

    path = Path(args.config)
    if path.is_dir():
        path = path / "config.json"
    if not os.path.lexists(path):
        print(f"pyaudit expect: {path}: no such file", file=sys.stderr)
        return EXIT_USAGE
    config, problem = load_json(path, str(path))
    if config is None:
        reason = problem.message() if problem is not None else f"{path}: no such file"
        print(f"pyaudit expect: {reason}", file=sys.stderr)
        return EXIT_FAIL if problem is not None else EXIT_USAGE
    try:
        manifest = build_manifest(config, args.layout)
    except UnknownArchitecture as e:
        print(f"pyaudit expect: {path}: {e}", file=sys.stderr)
        return EXIT_FAIL
    except ManifestError as e:
        print(f"pyaudit expect: {path}: {e}", file=sys.stderr)
        return EXIT_FAIL
    except ValueError as e:  # an unknown --layout
        print(f"pyaudit expect: {path}: {e}", file=sys.stderr)
        return EXIT_USAGE
    doc = manifest_to_json(manifest)
    if args.json:
        _emit_json(doc)
        return EXIT_OK
    from pyaudit.report.expect_view import print_expect

    names = [lay.name for lay in layouts(config)]
    _render(lambda console: print_expect(manifest, names, console))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pyaudit",
        description="Audit ML model checkpoints without loading a single weight.",
        epilog="The JSON report, the finding codes and the exit statuses are fixed by "
        "docs/CONTRACT.md in pyaudit's source repository.",
    )
    parser.add_argument("--version", action="version", version=f"pyaudit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    scan = commands.add_parser(
        "scan", help="find every checkpoint under each PATH and audit it"
    )
    scan.add_argument("paths", nargs="+", metavar="PATH")
    out = scan.add_mutually_exclusive_group()
    out.add_argument(
        "--json", action="store_true", help="one JSON report on stdout (docs/CONTRACT.md)"
    )
    out.add_argument(
        "--jsonl", action="store_true", help="one JSON object per checkpoint, as audited"
    )
    out.add_argument(
        "--markdown", action="store_true", help="a Markdown summary (PR, CI job summary)"
    )
    scan.add_argument(
        "--html", metavar="FILE", help="also write a self-contained HTML page to FILE"
    )
    scan.add_argument(
        "--all", action="store_true",
        help="list every passing checkpoint in the terminal report (default: the checkpoints "
        "that are not PASS, then passing ones up to a screenful)",
    )
    scan.add_argument(
        "--jobs",
        type=_jobs,
        default=None,
        help="threads reading headers (default: chosen per batch: cores - 1 when headers "
        "are in the page cache, up to 4 x cores when they are read from disk); for a "
        "remote PATH, 8 x N requests in flight (default: 128)",
    )
    scan.add_argument(
        "--expect", choices=("auto", "full", "adapter"), default="auto",
        help="what the checkpoints must be (default: what the run's own files say)",
    )
    scan.add_argument(
        "--expect-run", action="append", type=_expect_run, metavar="PATTERN=KIND",
        help="what the checkpoints of the runs whose path matches the glob PATTERN must be "
        "(full or adapter), e.g. --expect-run 'grpo-*=full' --expect-run 'sft-lora*=adapter'; "
        "repeatable, the last matching one wins; --expect overrides it",
    )
    scan.add_argument(
        "--base", metavar="DIR", help="a reference checkpoint whose tensors each must hold"
    )
    scan.add_argument(
        "--verify-data", action="store_true",
        help="also read tensor bytes (streamed, flat memory): NaN / Inf / all-zero tensors",
    )
    oracle = scan.add_mutually_exclusive_group()
    oracle.add_argument(
        "--oracle", choices=("transformers",), default="auto",
        help="for a family without a spec, build the manifest with the installed transformers "
        "(meta device, no weights, one worker process per scan, answers cached on disk in "
        "$PYAUDIT_CACHE_DIR/oracle or ~/.cache/pyaudit/oracle); the default when torch and "
        "transformers are installed",
    )
    oracle.add_argument(
        "--no-oracle", dest="oracle", action="store_const", const=None,
        help="never ask transformers: a family without a spec gets the structural checks and "
        "a consensus with the checkpoints sharing its config.json",
    )
    scan.add_argument(
        "--fail-on", choices=("error", "warning"), default="error",
        help="the least severe finding that fails a checkpoint (default: error)",
    )
    scan.add_argument(
        "--dask", metavar="ADDRESS", default=None,
        help="audit on a Dask cluster: a scheduler address (tcp://host:8786) or 'local'; the store "
        "must be on a filesystem the workers share (pip install 'pyaudit[dask]')",
    )
    # Every checkpoint through the reference path, the native fast path never deciding:
    # the tests hold each report equal to the one the fast path gives.
    scan.add_argument(
        "--no-fast-path", dest="fast_path", action="store_false", help=argparse.SUPPRESS
    )
    scan.set_defaults(run=cmd_scan)

    inspect = commands.add_parser("inspect", help="print one .safetensors file's header, validated")
    inspect.add_argument("file", metavar="FILE.safetensors")
    inspect.add_argument("--json", action="store_true", help="machine output on stdout")
    inspect.add_argument("--jobs", type=int, default=None, help=argparse.SUPPRESS)
    inspect.set_defaults(run=cmd_inspect)

    expect = commands.add_parser(
        "expect", help="print the tensor manifest a config.json implies"
    )
    expect.add_argument(
        "config", metavar="CONFIG", help="a config.json, or a directory holding one"
    )
    expect.add_argument("--json", action="store_true", help="machine output on stdout")
    expect.add_argument(
        "--layout", default=None, help="a naming layout of the family (default: the first)"
    )
    expect.add_argument("--jobs", type=int, default=None, help=argparse.SUPPRESS)
    expect.set_defaults(run=cmd_expect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except BrokenPipeError:
        # `pyaudit ... | head`: the reader left; that is not an error of ours.
        _reader_gone(sys.stdout)
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


def _reader_gone(stream: Any) -> None:
    """``stream``'s reader left: what is still buffered for it goes to /dev/null (a later
    flush, at exit included, would fail again and say so)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)


def run() -> NoReturn:
    """The ``pyaudit`` command (and ``python -m pyaudit``): :func:`main`, then the process
    ends as soon as its output is out. The interpreter's teardown (every module's objects
    freed one by one, the collector run over them: ~20 ms after a sweep of 1,000
    checkpoints) does nothing a finished command needs, so it is skipped as mypy skips it:
    the streams flushed and the ``atexit`` functions run, as a normal exit does, then
    ``os._exit``. Where a thread of ours still runs (none should), the exit is the normal
    one, which waits for it.

    The collector runs a pass every 10,000 new container objects, not every 700: a command
    that imports its modules and sweeps once, freeing almost everything by reference count,
    spent ~30 ms of a 1,000-checkpoint remote sweep in ~180 passes (the event loop's
    futures and handles), ~12 ms in 9 this way; cyclic garbage still goes, a pass later.
    The middle generation is collected every 100 of those passes, not every 10: each of its
    passes walks every object that survived the young ones since (a remote sweep's listing,
    requests and reports), 2 passes of ~3 ms in that sweep, ~0.5 ms in 1 this way."""
    gc.set_threshold(10_000, 100, gc.get_threshold()[2])
    status = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:  # the reader left (`| head`): as main() takes it
            _reader_gone(stream)
            if stream is sys.stdout:
                status = EXIT_OK
        except (OSError, ValueError):  # closed, or no descriptor: nothing more can go out
            pass
    import threading

    run_exit_functions = getattr(atexit, "_run_exitfuncs", None)
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if run_exit_functions is None or any(not t.daemon for t in others):
        raise SystemExit(status)
    run_exit_functions()
    os._exit(status)


if __name__ == "__main__":
    run()
