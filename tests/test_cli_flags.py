"""Tests for ocitool.cli_flags: the flag syntax both command lines share, help and usage errors."""

from __future__ import annotations

import pytest

from ocitool.cli_flags import Arg, Command, Flag, Program
from ocitool.errors import UsageError


def handler(options):
    """Do a thing.

    More about the thing.
    """


def run(options):
    """Run a command."""


FLAGS = [Flag("-b, --bundle", "Bundle directory.", default=".", metavar="DIR"),
         Flag("-d, --detach", "Detach.", kind="switch"),
         Flag("-t, --tty", "A terminal.", kind="switch"),
         Flag("-e, --env", "Environment.", kind="list"),
         Flag("--count", "How many.", convert=int, default=0),
         Flag("--mode", "Which mode.", choices=("fast", "slow"), default="fast"),
         Flag("--hidden", None)]
PROGRAM = Program("prog", "A program.", [Flag("--root", "State.")], {
    "thing": Command(handler, FLAGS, [Arg("ID", dest="container_id"), Arg("SIGNAL", "?", default="TERM")]),
    "run": Command(run, FLAGS, [Arg("IMAGE"), Arg("COMMAND", "*", dest="command_args")], usage_status=125),
    "many": Command(handler, [], [Arg("NAME", "+", dest="names")]),
    "raw": Command(handler, raw=True),
}, version="prog 1.0")


def test_flag_forms_and_defaults():
    options = PROGRAM.parse(["--root", "/r", "thing", "--bundle=/b", "-dt", "-e", "A=1", "-eB=2", "--count", "3",
                             "box"])
    assert (options.root, options.bundle, options.detach, options.tty, options.env, options.count, options.mode,
            options.hidden, options.container_id, options.signal) == \
        ("/r", "/b", True, True, ["A=1", "B=2"], 3, "fast", None, "box", "TERM")
    assert options.handler is handler and options.command == "thing"
    assert PROGRAM.parse(["thing", "-b/x", "box", "KILL"]).bundle == "/x"


def test_flags_may_follow_arguments_unless_the_command_takes_the_rest():
    options = PROGRAM.parse(["thing", "box", "--detach", "KILL"])
    assert (options.container_id, options.detach, options.signal) == ("box", True, "KILL")
    options = PROGRAM.parse(["run", "-t", "img", "sh", "-c", "ls --all", "--detach"])
    assert (options.tty, options.detach, options.image, options.command_args) == \
        (True, False, "img", ["sh", "-c", "ls --all", "--detach"])
    assert PROGRAM.parse(["thing", "--", "-odd-id"]).container_id == "-odd-id"


def test_counts_of_arguments():
    assert PROGRAM.parse(["many", "a", "b"]).names == ["a", "b"]
    assert PROGRAM.parse(["run", "img"]).command_args == []
    assert PROGRAM.parse(["raw", "--anything", "goes"]).arguments == ["--anything", "goes"]


@pytest.mark.parametrize(("argv", "message", "status"), [
    (["thing"], "the following arguments are required: ID (see 'prog thing --help')", 2),
    (["many"], "the following arguments are required: NAME", 2),
    (["thing", "a", "b", "c"], "unrecognized arguments: c", 2),
    (["thing", "--nope", "a"], "unrecognized arguments: --nope", 2),
    (["thing", "--bun", "x", "a"], "unrecognized arguments: --bun", 2),  # no abbreviations
    (["thing", "a", "--bundle"], "argument --bundle: expected one argument", 2),
    (["thing", "--detach=yes", "a"], "argument --detach: ignored explicit argument 'yes'", 2),
    (["thing", "--count", "x", "a"], "argument --count: invalid int value: 'x'", 2),
    (["thing", "--mode", "warp", "a"], "argument --mode: invalid choice: 'warp' (choose from 'fast', 'slow')", 2),
    (["run", "--nope", "img"], "unrecognized arguments: --nope (see 'prog run --help')", 125),
    (["--nope", "thing"], "unrecognized arguments: --nope (see 'prog --help')", 2),
    (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate' (choose from thing, run, many, raw)", 2),
])
def test_usage_errors(argv, message, status):
    with pytest.raises(UsageError) as raised:
        PROGRAM.parse(argv)
    assert str(raised.value).startswith(message) and raised.value.exit_code == status


def test_help_and_version(capsys):
    assert PROGRAM.parse(["thing", "--help"]) is None  # the missing ID is not an error then
    text = capsys.readouterr().out
    assert text.startswith("usage: prog thing [-h] [-b DIR] [-d] [-t] [-e ENV] [--count COUNT]")
    assert "Do a thing.\n\nMore about the thing." in text
    assert "  -b, --bundle DIR       Bundle directory.\n" in text and "--hidden" not in text
    assert PROGRAM.parse([]) is None and PROGRAM.parse(["-h"]) is None
    listing = capsys.readouterr().out
    assert "Commands:\n  thing      Do a thing.\n  run        Run a command.\n" in listing
    assert PROGRAM.parse(["--version", "thing"]) is None and capsys.readouterr().out == "prog 1.0\n"
