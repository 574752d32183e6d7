"""Running test work in a forked child, so privilege and namespace changes never touch pytest itself."""

from __future__ import annotations

import os
import pickle
import traceback
from collections.abc import Callable
from typing import Any

from ocitool.runtime import syscalls


def in_child(work: Callable[[], Any], unshare: int = 0) -> Any:
    """Run ``work`` in a forked child after ``unshare(unshare)``; return its result or raise its exception."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            try:
                if unshare:
                    syscalls.unshare(unshare)
                report = ("value", work())
            except BaseException as exc:  # everything must reach the parent
                exc.add_note("in the child:\n" + traceback.format_exc())
                report = ("error", exc)
            with os.fdopen(write_fd, "wb") as pipe:
                try:
                    pipe.write(pickle.dumps(report))
                except Exception:  # noqa: BLE001 - an unpicklable exception
                    pipe.write(pickle.dumps(("error", RuntimeError(repr(report[1])))))
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert data, f"child died without reporting: status {status:#x}"
    kind, value = pickle.loads(data)
    if kind == "error":
        raise value
    return value


def exec_in_child(prepare: Callable[[], None], argv: list[str]) -> tuple[int, str]:
    """Fork, run ``prepare`` in the child and exec ``argv``; return (exit code, output).

    A failure before the exec is written to the output and exits 127.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            os.dup2(write_fd, 1)
            os.dup2(write_fd, 2)
            prepare()
            os.execv(argv[0], argv)
        except BaseException as err:  # report, never return into pytest
            os.write(2, f"{type(err).__name__}: {err}\n".encode())
        finally:
            os._exit(127)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        output = pipe.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output
