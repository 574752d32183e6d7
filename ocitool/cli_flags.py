"""The command-line parser of ``ocitool`` and ``ocitool-runtime``: global flags, a command, its flags.

Flags are declared as data (:class:`Flag`, :class:`Arg`, :class:`Command`) and parsed with
the usual syntax: ``--name value`` or ``--name=value``, ``-x value`` or ``-xvalue``, bundled
switches (``-it``), ``--`` ending the flags, long names matched exactly. A command whose last
argument takes the rest (``exec ID CMD...``, ``run IMAGE COMMAND...``) stops reading flags at
its first argument, as runc and Docker do; other commands accept flags after arguments too.

Why not argparse: engines start ``ocitool-runtime`` several times per container, and a warm
``ocitool run`` is mostly start-up. argparse cost ~4 ms of each (importing it, building its
parsers, and the gettext look-ups each builds), about a tenth of a runtime ``run``.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

from ocitool.errors import UsageError

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    Handler = Callable[[SimpleNamespace], "int | None"]

HELP_FLAG_TEXT = "show this help message and exit"


class Flag:
    """A flag. ``kind`` is ``"switch"`` (True when given), ``"value"`` (the last value given)
    or ``"list"`` (every value given, in order); ``convert`` turns the text into the value
    (a ValueError is reported as a usage error), and a flag without ``help`` is not listed."""

    __slots__ = ("names", "dest", "kind", "metavar", "help", "default", "convert", "choices")

    def __init__(self, names: str, help: str | None, *, kind: str = "value", dest: str | None = None,
                 metavar: str | None = None, default: Any = None, convert: Callable[[str], Any] | None = None,
                 choices: Sequence[str] | None = None) -> None:
        self.names = tuple(names.split(", "))          # "-b, --bundle"
        self.dest = dest or self.names[-1].lstrip("-").replace("-", "_")
        self.kind = kind
        self.metavar = metavar or self.dest.upper()
        self.help = help
        self.default = False if kind == "switch" and default is None else default
        self.convert = convert
        self.choices = tuple(choices) if choices else None

    def initial(self) -> Any:
        """The value before the command line is read (a fresh list for ``"list"``)."""
        return [] if self.kind == "list" else self.default

    def read(self, text: str) -> Any:
        """``text`` converted and checked, or a usage error naming the flag."""
        if self.choices and text not in self.choices:
            choose = ", ".join(repr(choice) for choice in self.choices)
            raise _usage(f"argument {self.names[-1]}: invalid choice: {text!r} (choose from {choose})")
        if self.convert is None:
            return text
        try:
            return self.convert(text)
        except ValueError as exc:
            why = f"invalid {self.convert.__name__} value: {text!r}" if self.convert in (int, float) else str(exc)
            raise _usage(f"argument {self.names[-1]}: {why}") from None


class Arg:
    """A positional argument. ``count``: ``"1"`` (required), ``"?"`` (optional, else ``default``),
    ``"+"`` (one or more) or ``"*"`` (all that follow, flags included)."""

    __slots__ = ("name", "dest", "count", "default", "help")

    def __init__(self, name: str, count: str = "1", *, dest: str | None = None, default: Any = None,
                 help: str | None = None) -> None:
        self.name = name
        self.dest = dest or name.lower()
        self.count = count
        self.default = default
        self.help = help


class Command:
    """A command: what runs it (its docstring is its help), its flags and its arguments;
    ``usage_status`` is the exit status for a command line it cannot parse. A ``raw`` command
    gets its arguments unparsed, as ``arguments`` (``ocitool runtime`` hands them on)."""

    __slots__ = ("handler", "flags", "args", "usage_status", "raw")

    def __init__(self, handler: Handler, flags: Sequence[Flag] = (), args: Sequence[Arg] = (),
                 usage_status: int = 2, raw: bool = False) -> None:
        self.handler = handler
        self.flags = list(flags)
        self.args = list(args)
        self.usage_status = usage_status
        self.raw = raw


class Program:
    """A program of commands: its global flags (with one that prints ``version``), its
    description, then one of ``commands``."""

    __slots__ = ("name", "description", "flags", "commands", "version")

    def __init__(self, name: str, description: str, flags: Sequence[Flag], commands: dict[str, Command], *,
                 version: str, version_flag: str = "--version") -> None:
        self.name = name
        self.description = description
        self.flags = [Flag(version_flag, "show the version and exit", kind="switch", dest="version"), *flags]
        self.commands = commands
        self.version = version

    def parse(self, argv: list[str]) -> SimpleNamespace | None:
        """The global flags, ``command`` and the command's flags and arguments, with ``handler``
        set; None once a help text or the version was printed (``-h``, ``--version``, no command)."""
        global_args = [Arg("COMMAND", "?", dest="command"), Arg("...", "*", dest="arguments")]
        options = _parse(self.name, self.flags, global_args, argv, stop_at_argument=True)
        if options.version:
            print(self.version)
            return None
        if options.help or not options.command:
            print(self.help())
            return None
        command = self.commands.get(options.command)
        if command is None:
            raise _usage(f"argument COMMAND: invalid choice: {options.command!r} "
                         f"(choose from {', '.join(self.commands)})", self.name)
        if command.raw:
            options.handler = command.handler
            return options
        prog = f"{self.name} {options.command}"
        stop = bool(command.args) and command.args[-1].count == "*"
        parsed = _parse(prog, command.flags, command.args, options.arguments, stop_at_argument=stop,
                        usage_status=command.usage_status)
        if parsed.help:
            print(command_help(prog, command))
            return None
        vars(options).update(vars(parsed), handler=command.handler)
        return options

    def help(self) -> str:
        """The program's help: usage, description, global flags and the list of commands."""
        listing = "\n".join(f"  {name:<10} {_summary(command.handler.__doc__)}"
                            for name, command in self.commands.items())
        return (f"{_usage_line(self.name, self.flags, [Arg('COMMAND'), Arg('...', '*')])}\n\n{self.description}\n\n"
                f"{_flag_table(self.flags)}\n\nCommands:\n{listing}\n\n"
                f"'{self.name} COMMAND --help' shows a command's flags.")


def command_help(prog: str, command: Command) -> str:
    """A command's help: usage, its docstring, its arguments and flags."""
    text = f"{_usage_line(prog, command.flags, command.args)}\n\n{_dedent(command.handler.__doc__ or '')}"
    described = [arg for arg in command.args if arg.help]
    if described:
        text += "\n\narguments:\n" + "\n".join(_row(arg.name, arg.help or "") for arg in described)
    return f"{text}\n\n{_flag_table(command.flags)}"


# ---------------------------------------------------------------- parsing

def _parse(prog: str, flags: list[Flag], args: list[Arg], argv: list[str], *, stop_at_argument: bool,
           usage_status: int = 2) -> SimpleNamespace:
    """Flags (plus ``help``) and arguments of one command line, as attributes."""
    by_name = {name: flag for flag in flags for name in flag.names}
    values: dict[str, Any] = {flag.dest: flag.initial() for flag in flags}
    values["help"] = False
    try:
        positionals = _scan(argv, by_name, values, stop_at_argument)
        if not values["help"]:  # with -h, arguments are not checked
            values.update(_place(args, positionals))
    except UsageError as exc:
        raise _usage(str(exc), prog, usage_status) from None
    return SimpleNamespace(**values)


def _scan(argv: list[str], by_name: dict[str, Flag], values: dict[str, Any], stop_at_argument: bool) -> list[str]:
    """Store the flags of ``argv`` in ``values``; return its arguments, in order."""
    positionals: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        index += 1
        if token == "--":
            return positionals + argv[index:]
        if token.startswith("--"):
            name, has_value, value = token.partition("=")
            if has_value:
                _store(_flag(name, by_name, token), value, values, explicit=True)
            else:
                index = _take(_flag(name, by_name, token), argv, index, values)
        elif token.startswith("-") and len(token) > 1:
            index = _short_flags(token, argv, index, by_name, values)
        else:
            positionals.append(token)
            if stop_at_argument:
                return positionals + argv[index:]
    return positionals


def _short_flags(token: str, argv: list[str], index: int, by_name: dict[str, Flag], values: dict[str, Any]) -> int:
    """``-it`` (switches), ``-bDIR`` or ``-b DIR``; returns the index after what was used."""
    for position in range(1, len(token)):
        flag = _flag("-" + token[position], by_name, token)
        rest = token[position + 1:]
        if flag is None or flag.kind == "switch":
            _store(flag, "", values, explicit=False)
        elif rest:
            _store(flag, rest, values, explicit=True)
            return index
        else:
            return _take(flag, argv, index, values)
    return index


def _flag(name: str, by_name: dict[str, Flag], token: str) -> Flag | None:
    """The flag called ``name``; None for -h/--help; a usage error for an unknown one."""
    if name in ("-h", "--help"):
        return None
    flag = by_name.get(name)
    if flag is None:
        raise UsageError(f"unrecognized arguments: {token}")
    return flag


def _take(flag: Flag | None, argv: list[str], index: int, values: dict[str, Any]) -> int:
    """Store a flag given without ``=value``: a switch, or one that takes the next word."""
    if flag is None or flag.kind == "switch":
        _store(flag, "", values, explicit=False)
        return index
    if index >= len(argv):
        raise UsageError(f"argument {flag.names[-1]}: expected one argument")
    _store(flag, argv[index], values, explicit=True)
    return index + 1


def _store(flag: Flag | None, text: str, values: dict[str, Any], explicit: bool) -> None:
    if flag is None:
        values["help"] = True
    elif flag.kind == "switch":
        if explicit:
            raise UsageError(f"argument {flag.names[-1]}: ignored explicit argument {text!r}")
        values[flag.dest] = True
    elif flag.kind == "list":
        values[flag.dest].append(flag.read(text))
    else:
        values[flag.dest] = flag.read(text)


def _place(args: list[Arg], positionals: list[str]) -> dict[str, Any]:
    """The arguments by destination; a usage error for missing or extra ones."""
    placed: dict[str, Any] = {}
    remaining = list(positionals)
    missing = []
    for arg in args:
        if arg.count in ("+", "*"):
            placed[arg.dest], remaining = remaining, []
            if arg.count == "+" and not placed[arg.dest]:
                missing.append(arg.name)
        elif remaining:
            placed[arg.dest] = remaining.pop(0)
        elif arg.count == "1":
            missing.append(arg.name)
        else:
            placed[arg.dest] = arg.default
    if missing:
        raise UsageError(f"the following arguments are required: {', '.join(missing)}")
    if remaining:
        raise UsageError(f"unrecognized arguments: {' '.join(remaining)}")
    return placed


def _usage(message: str, prog: str | None = None, status: int = 2) -> UsageError:
    return UsageError(f"{message} (see '{prog} --help')" if prog else message, status)


# ---------------------------------------------------------------- help

def _usage_line(prog: str, flags: list[Flag], args: list[Arg]) -> str:
    shown = ["[-h]"] + [f"[{_flag_form(flag, short=True)}]" for flag in flags if flag.help]
    shown += [{"1": arg.name, "?": f"[{arg.name}]", "+": f"{arg.name} [{arg.name} ...]",
               "*": f"[{arg.name} ...]" if arg.name != "..." else "..."}[arg.count] for arg in args]
    return _wrap(f"usage: {prog} ", shown)


def _wrap(lead: str, words: list[str]) -> str:
    """``words`` after ``lead``, continued under it past the terminal's width."""
    width = _columns()
    lines, line = [], lead
    for word in words:
        if len(line) + len(word) + 1 > width and line.strip() != lead.strip():
            lines.append(line.rstrip())
            line = " " * len(lead)
        line += word + " "
    return "\n".join(lines + [line.rstrip()])


def _flag_form(flag: Flag, short: bool = False) -> str:
    names = flag.names[:1] if short else flag.names
    value = "" if flag.kind == "switch" else " " + ("{" + ",".join(flag.choices) + "}" if flag.choices
                                                     else flag.metavar)
    return ", ".join(names) + value


def _flag_table(flags: list[Flag]) -> str:
    rows = [_row("-h, --help", HELP_FLAG_TEXT)]
    rows += [_row(_flag_form(flag), flag.help) for flag in flags if flag.help]
    return "options:\n" + "\n".join(rows)


def _row(left: str, text: str) -> str:
    """``left`` and ``text`` in two columns, ``text`` wrapped at the terminal's width."""
    indent = " " * 25
    lines = _wrap(indent, text.split()).splitlines()
    first = f"  {left:<22} {lines[0].strip()}" if len(left) <= 22 else f"  {left}\n{lines[0]}"
    return "\n".join([first] + lines[1:])


def _summary(doc: str | None) -> str:
    return _dedent(doc or "").split("\n", 1)[0]


def _dedent(text: str) -> str:
    """A docstring's text without its indentation (``inspect.cleandoc`` costs ~7 ms of imports)."""
    lines = text.strip().splitlines() or [""]
    return "\n".join([lines[0]] + [line[4:] if line.startswith("    ") else line for line in lines[1:]])


def _columns() -> int:
    """The terminal's width (80 in a pipe), without importing ``shutil``."""
    try:
        return int(os.environ.get("COLUMNS", "")) or os.get_terminal_size(sys.__stdout__.fileno()).columns
    except (ValueError, OSError, AttributeError):
        return 80
