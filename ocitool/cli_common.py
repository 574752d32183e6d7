"""What both command lines (``ocitool`` and ``ocitool-runtime``) share: global flags, then one
command whose parser alone is built; one-line errors with the right exit status, tracebacks
only when debugging, and a fast exit.

Both parse with ``argparse`` and load only what the chosen command needs: start-up is most
of the time of a runtime command, and of ``ocitool run`` with a cached image.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from ocitool import log
from ocitool.errors import OcitoolError, UsageError

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from typing import NoReturn

Report = Callable[[str], None]
Handler = Callable[[argparse.Namespace], "int | None"]
Commands = dict[str, tuple[Handler, Callable[[argparse.ArgumentParser], None]]]  # name -> (handler, its flags)


class Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's help layout, sized to the terminal without importing ``shutil`` (~3 ms with
    the compression modules it loads), which argparse would do for every argument."""

    def __init__(self, prog: str) -> None:
        try:
            columns = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (ValueError, OSError, AttributeError):
            columns = 80
        super().__init__(prog, width=max(columns - 2, 40))


class Parser(argparse.ArgumentParser):
    """Usage errors are raised (one line, exit status ``usage_status``), not printed with the usage text."""

    def __init__(self, prog: str, description: str | None, usage_status: int = 2) -> None:
        super().__init__(prog=prog, description=_dedent(description), formatter_class=Formatter,
                         allow_abbrev=False)
        self.usage_status = usage_status

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')", self.usage_status)


def _dedent(text: str | None) -> str | None:
    """A docstring's text without its indentation (``inspect.cleandoc`` costs ~7 ms of imports)."""
    if text is None:
        return None
    lines = text.strip().splitlines()
    return "\n".join([lines[0]] + [line[4:] if line.startswith("    ") else line for line in lines[1:]])


def add_command_arguments(parser: argparse.ArgumentParser, commands: Commands) -> None:
    """The COMMAND argument and everything after it, which :func:`parse_command_line` hands on."""
    parser.epilog = "Commands:\n" + "\n".join(f"  {name:<10} {_dedent(handler.__doc__).splitlines()[0]}"
                                               for name, (handler, _) in commands.items())
    parser.add_argument("command", metavar="COMMAND", nargs="?", choices=list(commands),
                        help="See the list below; 'COMMAND --help' shows its flags.")
    parser.add_argument("arguments", metavar="...", nargs=argparse.REMAINDER, help="The command's flags and arguments.")


def parse_global_flags(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace | None:
    """The global flags, the command and its unparsed ``arguments``; None once help or the version was printed."""
    try:
        options = parser.parse_args(args)
    except SystemExit:  # --help and --version, which argparse prints and exits 0 for
        return None
    if not options.command:
        parser.print_help()
        return None
    return options


def parse_command_flags(prog: str, commands: Commands, options: argparse.Namespace) -> bool:
    """Add the command's flags and ``handler`` to ``options``; False once its help was printed."""
    try:
        command_parser(prog, commands, options.command).parse_args(options.arguments, namespace=options)
    except SystemExit:
        return False
    return True


def no_arguments(command: argparse.ArgumentParser) -> None:
    """The flags of a command that has none."""


def command_parser(prog: str, commands: Commands, name: str) -> argparse.ArgumentParser:
    """The parser of command ``name``: its flags and arguments."""
    handler, add_arguments = commands[name]
    parser = Parser(f"{prog} {name}", handler.__doc__)
    add_arguments(parser)
    parser.set_defaults(handler=handler)
    return parser


def run_guarded(command: Callable[[], int | None], report: Report, debug: bool) -> NoReturn:
    """Run ``command`` and exit with its status; a failure becomes one ``report``\\ ed line."""
    try:
        code = command()
    except KeyboardInterrupt:
        _fail(report, "interrupted", 130)
    except OcitoolError as exc:
        _print_traceback(debug)
        _fail(report, str(exc), exc.exit_code)
    except Exception as exc:  # a bug: one line unless debugging
        _print_traceback(debug)
        _fail(report, f"internal error: {exc.__class__.__name__}: {exc} (debug logging shows the traceback)", 1)
    fast_exit(code if isinstance(code, int) else 0)


def _print_traceback(debug: bool) -> None:
    if debug:
        import traceback
        traceback.print_exc()


def _fail(report: Report, message: str, code: int) -> NoReturn:
    report(message)
    fast_exit(code)


def fast_exit(code: int) -> NoReturn:
    """Flush and leave without the interpreter's teardown (~20 ms of garbage collection per command)."""
    log.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
