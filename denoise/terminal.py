"""The command line's output: its two consoles, where the human-readable
report goes (stdout, or stderr when ``--json -`` puts the JSON there), strict
JSON output, the progress bar of batch jobs (none with ``-q``), the package's
log records on stderr (``-v``/``-q``, before or after the command), how each
command's help reads (:class:`Command`: argument names, examples), and how a
command ends: a job's refusal as one line and its exit code, or its result
printed and the exit code it returned."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from typer.core import TyperCommand

from denoise.atomic import finite
from denoise.batch import EXIT_NOTHING, EXIT_OK, EXIT_USAGE
from denoise.logs import OneLineFormatter
from denoise.text import one_line

EXIT_INTERNAL, EXIT_INTERRUPTED = 70, 130
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
STDOUT = "-"  # --json - : the JSON goes to stdout
_QUIET = {"on": False}  # -q: no progress bars or step lines (set with the log level, per invocation)


def to_stdout(json_out: Path | None) -> bool:
    return json_out is not None and str(json_out) == STDOUT


def show(lines: Iterable[str], json_out: Path | None = None) -> None:
    """Print a human-readable report: to stdout, unless ``--json -`` keeps it for the JSON (then stderr)."""
    console = err if to_stdout(json_out) else out
    for line in lines:
        console.print(line, markup=False)


def show_step(text: str) -> None:
    """One step of a multi-step job, ``... TEXT``, on stderr (not with -q)."""
    if not _QUIET["on"]:
        err.print(f"... {text}", markup=False)


def progress_shown() -> bool:
    """Whether jobs draw their progress (not with -q)."""
    return not _QUIET["on"]


def present(printout, json_out: Path | None = None, with_json: bool = True) -> None:
    """Print a :class:`denoise.summaries.Printout` and write its JSON (``with_json``) where ``--json`` says."""
    if with_json and printout.data is not None and json_out is not None:
        emit_json(json_out, printout.data() if callable(printout.data) else printout.data)
    show([] if printout.alone and to_stdout(json_out) else printout.lines, json_out)
    for line in printout.stderr:
        err.print(line, markup=False)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """``error: MESSAGE`` on stderr; the exit (``code``) for the command to raise."""
    err.print(f"[red]error:[/red] {escape(message)}", markup=True, highlight=False)
    return typer.Exit(code)


@contextmanager
def refused(*errors: type[BaseException], code: int = EXIT_USAGE):
    """The job's refusals (``errors``) end the command: one line on stderr, exit ``code``."""
    try:
        yield
    except errors as exc:
        raise fail(str(exc), code) from exc


def finish(json_out: Path | None, printout) -> typer.Exit:
    """Print what the job returned (a :class:`denoise.summaries.Printout`), write its
    JSON; the exit to raise (its ``nothing`` as the error when there was nothing to do)."""
    present(printout, json_out)
    if printout.nothing and printout.code == EXIT_NOTHING:
        return fail(printout.nothing, EXIT_NOTHING)
    return typer.Exit(printout.code)


def emit_json(json_out: Path | None, data) -> None:
    """Strict JSON (non-finite numbers as null) to stdout (``-``) or atomically to a file."""
    if json_out is None:
        return
    if to_stdout(json_out):
        print(json.dumps(finite(data), indent=2, allow_nan=False), file=sys.stdout, flush=True)  # never styled
    else:
        from denoise.atomic import write_json

        write_json(json_out, data)


def guarded(app) -> None:
    """Run the Typer ``app`` with an unexpected exception reported as one
    line and exit code 70 (its traceback logged at DEBUG: -v), Ctrl-C as 130."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # the last boundary: anything that reaches here is a bug
        logger = logging.getLogger("ct_denoise")
        logger.debug("internal error", exc_info=True)
        hint = "" if logger.isEnabledFor(logging.DEBUG) else " (-v shows the traceback)"
        err.print(f"internal error (a bug in ct-denoise, please report it): {type(exc).__name__}: {one_line(exc)}"
                  + hint, markup=False)
        sys.exit(EXIT_INTERNAL)


def show_version(value: bool) -> None:
    """``--version``: print :func:`version_text` and exit."""
    if value:
        typer.echo(version_text())
        raise typer.Exit(EXIT_OK)


def version_text() -> str:
    """``ct-denoise VERSION (bundled model NAME@SHA256[:16])``; the version of
    the installed distribution, else of this checkout."""
    from importlib.metadata import PackageNotFoundError, version

    from denoise import __version__
    from denoise.hashing import sha256_file
    from denoise.inference import BUNDLED_MODEL

    try:
        installed = version("ct-denoise")
    except PackageNotFoundError:
        installed = __version__
    npz = BUNDLED_MODEL.with_name(BUNDLED_MODEL.name + ".npz")
    model = f"{npz.stem}@{sha256_file(npz)[:16]}" if npz.is_file() else "not installed"
    return f"ct-denoise {installed} (bundled model {model})"


class SliceRate(ProgressColumn):
    """Slices per second since the task began (a file's outcome may say it held several: ``frames``)."""

    def render(self, task) -> Text:
        if "slices" not in task.fields:  # the scan before the batch
            return Text("")
        elapsed, slices = task.elapsed, task.fields["slices"]
        return Text(f"{slices / elapsed:.3g} slices/s" if elapsed and slices else "- slices/s")


def progress_columns(label: str) -> list:
    """The columns of a job's bar: what, bar, files done/total, last outcome, time taken, slices per
    second, time left."""
    return [TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}"),
            TimeElapsedColumn(), SliceRate(), TimeRemainingColumn()]


@contextmanager
def batch_progress(label: str):
    """A Rich progress bar on stderr fed by the batch callbacks (none with -q): yields
    ``(on_plan, on_outcome)``; ``on_plan.scan`` reports the scan before the batch."""
    progress = Progress(*progress_columns(label), console=err, disable=_QUIET["on"])
    task = scanning = None
    slices = 0

    def on_scan(done: int, total: int):
        """The scan before a batch: one step per file found."""
        nonlocal scanning
        if scanning is None:
            scanning = progress.add_task("scan", total=total, last="")
        progress.update(scanning, completed=done, last="files read")

    def on_plan(total: int):
        nonlocal task
        if scanning is not None:
            progress.remove_task(scanning)
        task = progress.add_task(label, total=total, last="", slices=0)

    on_plan.scan = on_scan

    def on_outcome(outcome):
        nonlocal slices
        if task is not None:
            slices += getattr(outcome, "frames", 1)  # a batch file's slices (0: failed); a scored pair: 1
            progress.update(task, advance=1, last=getattr(outcome, "status", outcome), slices=slices)

    with progress:
        yield on_plan, on_outcome


def configure_logging(*, verbose: bool = False, quiet: bool = False) -> None:
    """Records of the package (logger ``ct_denoise``) go to stderr from INFO
    (``verbose``: DEBUG, ``quiet``: WARNING); pydicom's and pynetdicom's own
    loggers only from WARNING unless DEBUG (-v)."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    _QUIET["on"] = quiet and not verbose
    logger = logging.getLogger("ct_denoise")
    logger.setLevel(level)
    if not any(getattr(h, "ct_denoise", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(OneLineFormatter())
        handler.ct_denoise = True
        logger.addHandler(handler)
    for name in ("pydicom", "pynetdicom"):
        logging.getLogger(name).setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (Typer's test
    runner swaps it per invocation)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it; the property decides
        pass


# ------------------------------------------------------------ how a command's help reads

VERBOSE_HELP = "Log more: DEBUG records, pydicom's warnings per file, tracebacks of internal errors."
QUIET_HELP = "Log only warnings and errors; no progress bars."


def _verbose_after(value: bool) -> None:
    if value:
        configure_logging(verbose=True)


def _quiet_after(value: bool) -> None:
    if value:
        configure_logging(quiet=True)


def _log_options() -> list:
    """-v/-q as options of a command, after its name (Typer builds them from this signature)."""
    probe = typer.Typer(add_completion=False)

    @probe.command()
    def options(
        verbose: Annotated[bool, typer.Option("-v", "--verbose", callback=_verbose_after, expose_value=False,
                                              help=VERBOSE_HELP)] = False,
        quiet: Annotated[bool, typer.Option("-q", "--quiet", callback=_quiet_after, expose_value=False,
                                            help=QUIET_HELP)] = False,
    ):
        pass

    return typer.main.get_command(probe).params


class Command(TyperCommand):
    """A command whose help reads well: arguments by their upper-case names (``INPUT OUTPUT``,
    ``FOLDER...``, never a Python type), and -v/-q accepted after the command as before it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.param_type_name == "argument":
                param.metavar = (param.metavar or param.name).upper()
        self.params += _log_options()

    def _argument_name(self, param) -> str:
        return param.metavar + ("..." if param.nargs != 1 else "")

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = self._argument_name(param)
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx, formatter) -> None:
        records = {"argument": [], "option": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and param.param_type_name in records:
                if param.param_type_name == "argument":
                    record = (self._argument_name(param), record[1])
                records[param.param_type_name].append(record)
        for title, kind in (("Arguments", "argument"), ("Options", "option")):
            if records[kind]:
                with formatter.section(title):
                    formatter.write_dl(records[kind])


def examples(*lines: str) -> str:
    """The help's epilog: ``Examples:`` and each line as it is (not rewrapped)."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


def command(app: typer.Typer, *example_lines: str, name: str | None = None):
    """``app.command`` for a :class:`Command` whose help ends with ``example_lines``."""
    return app.command(name, cls=Command, epilog=examples(*example_lines))
