"""Seccomp: validating ``linux.seccomp``, compiling it with libseccomp (and caching the
program), loading it with seccomp(2), Docker's default profile.

Filters are only ever loaded in forked children (see ``test_capabilities``'s helpers) so
the pytest process stays unrestricted.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import platform
from collections.abc import Callable
from pathlib import Path

import pytest

from ocitool.errors import OcitoolError
from ocitool.runtime import seccomp, syscalls
from ocitool.runtime.capabilities import CAPABILITIES
from ocitool.runtime.seccomp import (
    CompiledFilter,
    compile_filter,
    default_profile,
    load_filter,
    parse_seccomp,
)
from support.fork import exec_in_child, in_child
from test_capabilities import BUSYBOX

def load_compiled(config: dict) -> None:
    load_filter(compile_filter(config, None))


needs_seccomp = pytest.mark.skipif(not seccomp.seccomp_supported(),
                                   reason="libseccomp or kernel seccomp support is missing")

DOCKER_CAPS = {CAPABILITIES[name] for name in (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE")}
ADDR_NO_RANDOMIZE = 0x0040000
PERSONALITY_QUERY = 0xFFFFFFFF
NR_CLONE3 = 435  # the same on x86_64 and aarch64

_libc = ctypes.CDLL(None, use_errno=True)


def call_errno(function: str, *args: int) -> int:
    """Call a libc function; 0 on success, else its errno."""
    result = getattr(_libc, function)(*(ctypes.c_ulong(arg) for arg in args))
    return ctypes.get_errno() if result == -1 else 0


def mkdir_errno(path: Path) -> int:
    try:
        os.mkdir(path)
    except OSError as err:
        return err.errno
    return 0


def loaded_then(config: dict, check):  # type: ignore[no-untyped-def]
    """A child's work: load ``config``, then return ``check()``."""
    def work():  # type: ignore[no-untyped-def]
        load_compiled(config)
        return check()
    return work


def test_features_lists() -> None:
    assert "SCMP_ACT_ERRNO" in seccomp.known_actions()
    assert "SCMP_ACT_KILL_PROCESS" in seccomp.known_actions()
    assert "SCMP_ACT_NOTIFY" not in seccomp.known_actions()
    assert seccomp.known_operators() == ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE",
                                         "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"]
    assert {"SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64", "SCMP_ARCH_X86"} <= set(seccomp.known_archs())
    assert "SECCOMP_FILTER_FLAG_LOG" in seccomp.known_flags()
    assert seccomp.seccomp_supported()


@needs_seccomp
@pytest.mark.parametrize("errno_ret, expected", [(None, errno.EPERM), (38, errno.ENOSYS),
                                                 (errno.EROFS, errno.EROFS)])
def test_errno_rule_fails_mkdir(tmp_path: Path, errno_ret: int | None, expected: int) -> None:
    rule = {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}
    if errno_ret is not None:
        rule["errnoRet"] = errno_ret
    config = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]}
    assert in_child(loaded_then(config, lambda: mkdir_errno(tmp_path / "d"))) == expected
    assert not (tmp_path / "d").exists()
    assert mkdir_errno(tmp_path / "d") == 0  # the test process itself is not filtered


@needs_seccomp
def test_unknown_syscall_names_are_skipped(tmp_path: Path) -> None:
    config = {"defaultAction": "SCMP_ACT_ALLOW",
              "syscalls": [{"names": ["no_such_syscall", "mkdir", "mkdirat"],
                            "action": "SCMP_ACT_ERRNO"}]}
    assert in_child(loaded_then(config, lambda: mkdir_errno(tmp_path / "d"))) == errno.EPERM


@needs_seccomp
def test_argument_rule() -> None:
    """personality(0xffffffff) only queries; any other persona is denied."""
    config = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES,
         "args": [{"index": 0, "value": PERSONALITY_QUERY, "op": "SCMP_CMP_NE"}]}]}
    check = lambda: [call_errno("personality", PERSONALITY_QUERY),  # noqa: E731
                     call_errno("personality", ADDR_NO_RANDOMIZE)]
    assert in_child(loaded_then(config, check)) == [0, errno.EACCES]


@needs_seccomp
def test_conditions_on_one_argument_match_separately() -> None:
    """Two tests of one argument in an entry become two rules (either denies), like runc."""
    config = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": ADDR_NO_RANDOMIZE, "op": "SCMP_CMP_EQ"},
                  {"index": 0, "value": 0x0008, "op": "SCMP_CMP_EQ"}]}]}
    check = lambda: [call_errno("personality", value)  # noqa: E731
                     for value in (ADDR_NO_RANDOMIZE, 0x0008, PERSONALITY_QUERY)]
    assert in_child(loaded_then(config, check)) == [errno.EPERM, errno.EPERM, 0]


BUSYBOX_TRUE_SYSCALLS = ["execve", "brk", "arch_prctl", "set_tid_address", "set_robust_list",
                         "rseq", "prlimit64", "mprotect", "readlink", "getrandom", "getuid",
                         "prctl", "mmap", "munmap", "write", "exit", "exit_group"]


@needs_seccomp
def test_default_errno_with_an_allow_list_runs_busybox() -> None:
    config = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.EPERM,
              "syscalls": [{"names": BUSYBOX_TRUE_SYSCALLS, "action": "SCMP_ACT_ALLOW"}]}
    assert exec_in_child(lambda: load_compiled(config), [BUSYBOX, "true"]) == (0, "")

    config["syscalls"][0]["names"] = [name for name in BUSYBOX_TRUE_SYSCALLS if name != "execve"]
    code, output = exec_in_child(lambda: load_compiled(config), [BUSYBOX, "true"])
    assert code == 127 and "PermissionError" in output


@needs_seccomp
def test_docker_default_profile_runs_a_shell() -> None:
    profile = default_profile(DOCKER_CAPS)
    code, output = exec_in_child(lambda: load_compiled(profile), [
        BUSYBOX, "sh", "-c", "echo ok; ls /; /bin/busybox true && echo forked"])
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0] == "ok" and "proc" in lines and lines[-1] == "forked"


@needs_seccomp
def test_docker_default_profile_denies_namespaces_without_cap_sys_admin(tmp_path: Path) -> None:
    def check() -> dict[str, int]:
        results = {"personality query": call_errno("personality", PERSONALITY_QUERY),
                   "personality other": call_errno("personality", ADDR_NO_RANDOMIZE),
                   "clone3": call_errno("syscall", NR_CLONE3, 0, 0)}
        for name, call in (("unshare", lambda: syscalls.unshare(syscalls.CLONE_NEWUTS)),
                           ("mount", lambda: syscalls.mount("tmpfs", str(tmp_path), "tmpfs"))):
            try:
                call()
                results[name] = 0
            except OSError as err:
                results[name] = err.errno
        return results

    assert in_child(loaded_then(default_profile(DOCKER_CAPS), check)) == {
        "personality query": 0, "personality other": errno.EPERM,
        "clone3": errno.ENOSYS, "unshare": errno.EPERM, "mount": errno.EPERM}


@needs_seccomp
def test_docker_default_profile_with_cap_sys_admin_allows_unshare() -> None:
    profile = default_profile(DOCKER_CAPS | {CAPABILITIES["CAP_SYS_ADMIN"]})
    assert in_child(loaded_then(profile, lambda: syscalls.unshare(syscalls.CLONE_NEWUTS))) is None


def test_default_profile_grows_with_capabilities() -> None:
    def allowed(profile: dict) -> set[str]:
        return {name for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW"
                and "args" not in rule for name in rule["names"]}

    plain = default_profile(set())
    admin = default_profile({CAPABILITIES["CAP_SYS_ADMIN"], CAPABILITIES["CAP_SYS_PTRACE"]})
    assert plain["defaultAction"] == "SCMP_ACT_ERRNO" and plain["defaultErrnoRet"] == errno.EPERM
    assert {"read", "execve", "ptrace", "seccomp"} <= allowed(plain)
    assert not {"unshare", "mount", "setns", "clone", "chroot", "kcmp"} & allowed(plain)
    assert {"unshare", "mount", "setns", "clone", "clone3", "kcmp"} <= allowed(admin)
    assert "chroot" in allowed(default_profile({CAPABILITIES["CAP_SYS_CHROOT"]}))
    assert any(rule["names"] == ["clone3"] and rule.get("errnoRet") == errno.ENOSYS
               for rule in plain["syscalls"])
    assert not any("clone3" in rule["names"] and rule["action"] != "SCMP_ACT_ALLOW"
                   for rule in admin["syscalls"])
    if platform.machine() == "x86_64":
        assert plain["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        assert "arch_prctl" in allowed(plain)
    parse_seccomp(admin)  # a valid linux.seccomp object


@needs_seccomp
def test_loads_with_no_new_privs_and_without_cap_sys_admin(tmp_path: Path) -> None:
    config = {"defaultAction": "SCMP_ACT_ALLOW",
              "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}

    def drop_sys_admin() -> None:
        effective, permitted, inheritable = syscalls.capget()
        without = ~(1 << CAPABILITIES["CAP_SYS_ADMIN"])
        syscalls.capset(effective & without, permitted & without, inheritable)

    def with_nnp() -> int:
        drop_sys_admin()
        syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
        load_compiled(config)
        return mkdir_errno(tmp_path / "d")

    def without_nnp() -> None:
        drop_sys_admin()
        load_compiled(config)

    assert in_child(with_nnp) == errno.EPERM
    with pytest.raises(OcitoolError, match="linux.seccomp: cannot load the filter.*"
                                         "CAP_SYS_ADMIN"):
        in_child(without_nnp)


@needs_seccomp
def test_architectures_and_flags_load() -> None:
    config = {"defaultAction": "SCMP_ACT_ALLOW",
              "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
              if platform.machine() == "x86_64" else ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
              "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                        "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
              "syscalls": [{"names": ["sched_yield"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5}]}
    assert in_child(loaded_then(config, lambda: call_errno("sched_yield"))) == 5


@pytest.mark.parametrize("config, message", [
    ([], "linux.seccomp: must be an object"),
    ({}, "linux.seccomp.defaultAction: is required"),
    ({"defaultAction": "SCMP_ACT_NOPE"}, 'linux.seccomp.defaultAction: unknown action "SCMP_ACT_NOPE"'),
    ({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1},
     "linux.seccomp.defaultErrnoRet: SCMP_ACT_ALLOW takes no errno"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY is not supported"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]},
     'linux.seccomp.architectures[0]: unknown architecture "SCMP_ARCH_Z80"'),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_FAST"]},
     'linux.seccomp.flags[0]: unknown flag "SECCOMP_FILTER_FLAG_FAST"'),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {"names": ["read"]}},
     "linux.seccomp.syscalls: must be an array"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO"}, {"names": [], "action": "SCMP_ACT_ERRNO"}]},
     "linux.seccomp.syscalls[1].names: must be a non-empty array"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read", ""], "action": "SCMP_ACT_ERRNO"}]},
     "linux.seccomp.syscalls[0].names[1]: must be a non-empty string"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"]}]},
     "linux.seccomp.syscalls[0].action: is required"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]},
     "linux.seccomp.syscalls[0].action: SCMP_ACT_NOTIFY is not supported"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_KILL", "errnoRet": 1}]},
     "linux.seccomp.syscalls[0].errnoRet: SCMP_ACT_KILL takes no errno"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": -1}]},
     "linux.seccomp.syscalls[0].errnoRet: must be an integer from 0 to 65535"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                                        "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]},
     "linux.seccomp.syscalls[0].args[0].index: must be an integer from 0 to 5"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                                        "args": [{"index": 0, "op": "SCMP_CMP_EQ"}]}]},
     "linux.seccomp.syscalls[0].args[0].value: must be an unsigned 64-bit integer"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                                        "args": [{"index": 0, "value": 1, "op": "=="}]}]},
     'linux.seccomp.syscalls[0].args[0].op: unknown operator "=="'),
])
def test_malformed_config_names_the_field(tmp_path: Path, config: object, message: str) -> None:
    with pytest.raises(OcitoolError) as raised:
        parse_seccomp(config)  # type: ignore[arg-type]
    assert str(raised.value).startswith(message)
    with pytest.raises(OcitoolError) as raised:
        compile_filter(config, tmp_path / "cache")  # type: ignore[arg-type]
    assert str(raised.value).startswith(message)
    assert not (tmp_path / "cache").exists()


def test_missing_libseccomp_is_an_error_only_with_a_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seccomp, "_libseccomp", lambda: None)
    assert not seccomp.seccomp_supported()
    with pytest.raises(OcitoolError, match="linux.seccomp: libseccomp.so.2 is not installed"):
        compile_filter({"defaultAction": "SCMP_ACT_ALLOW"}, None)


# seccomp(2) filter flags (include/uapi/linux/seccomp.h)
FLAG_TSYNC, FLAG_LOG, FLAG_SPEC_ALLOW, FLAG_TSYNC_ESRCH = 0x01, 0x02, 0x04, 0x10


def denying_mkdir(errno_ret: int) -> dict:
    """A default-allow config whose only rule fails mkdir with ``errno_ret``."""
    return {"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": errno_ret}]}


def mkdir_errno_under(compiled: CompiledFilter, path: Path) -> int:
    """In a child: load ``compiled``, then mkdir ``path``; the errno (0 when created)."""
    def work() -> int:
        load_filter(compiled)
        return mkdir_errno(path)
    return in_child(work)


def cache_file(program: bytes) -> bytes:
    """What the cache stores for ``program``: the program, then its sha256."""
    return program + hashlib.sha256(program).digest()


def the_cache_file(cache: Path) -> Path:
    (path,) = cache.iterdir()
    return path


@needs_seccomp
def test_compiled_filter_loads_without_libseccomp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = compile_filter(denying_mkdir(errno.EROFS), None)
    assert compiled.flags == 0 and compiled.program and len(compiled.program) % 8 == 0
    monkeypatch.setattr(seccomp, "_libseccomp", lambda: None)  # as if missing, as after pivot_root

    def work() -> int:
        load_filter(compiled)
        (tmp_path / "file").write_text("allowed")  # the default action lets other syscalls through
        return mkdir_errno(tmp_path / "d")

    assert in_child(work) == errno.EROFS
    assert (tmp_path / "file").read_text() == "allowed" and not (tmp_path / "d").exists()


def test_flags_are_what_libseccomp_loads_with() -> None:
    config = {"defaultAction": "SCMP_ACT_ALLOW", "flags": [
        "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}
    assert compile_filter(config, None).flags == FLAG_TSYNC | FLAG_TSYNC_ESRCH | FLAG_LOG | FLAG_SPEC_ALLOW


@needs_seccomp
def test_cache_miss_stores_the_program_and_a_hit_returns_it(tmp_path: Path) -> None:
    cache = tmp_path / "state" / "seccomp"
    profile = {**default_profile(DOCKER_CAPS), "flags": ["SECCOMP_FILTER_FLAG_LOG"]}
    miss = compile_filter(profile, cache)
    assert cache.stat().st_mode & 0o777 == 0o700
    path = the_cache_file(cache)
    assert len(path.name) == 64 and path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes() == cache_file(miss.program)
    assert miss.program == compile_filter(profile, None).program

    hit = compile_filter(profile, cache)
    assert (hit.program, hit.flags) == (miss.program, FLAG_LOG)
    assert the_cache_file(cache) == path  # nothing rewritten, no temporary file left

    compile_filter(denying_mkdir(errno.EPERM), cache)
    assert len(list(cache.iterdir())) == 2


@needs_seccomp
def test_a_hit_loads_the_cached_program(tmp_path: Path) -> None:
    """The cached file is what counts: replaced by another program, that one is used."""
    cache = tmp_path / "cache"
    compile_filter(denying_mkdir(errno.EPERM), cache)
    other = compile_filter(denying_mkdir(errno.EROFS), None).program
    the_cache_file(cache).write_bytes(cache_file(other))

    hit = compile_filter(denying_mkdir(errno.EPERM), cache)
    assert hit.program == other
    assert mkdir_errno_under(hit, tmp_path / "d") == errno.EROFS


@needs_seccomp
@pytest.mark.parametrize("damage", [
    lambda data: b"",
    lambda data: data[:-3],                     # not whole instructions
    lambda data: data[:-8],                     # an instruction short
    lambda data: data[:-40] + data[-32:],       # an instruction short, the digest kept
    lambda data: bytes([data[0] ^ 1]) + data[1:],
], ids=["empty", "torn", "truncated", "instruction missing", "changed"])
def test_damaged_cache_file_is_a_miss_and_rewritten(tmp_path: Path,
                                                    damage: Callable[[bytes], bytes]) -> None:
    cache = tmp_path / "cache"
    good = compile_filter(denying_mkdir(errno.EPERM), cache).program
    path = the_cache_file(cache)
    path.write_bytes(damage(path.read_bytes()))

    assert compile_filter(denying_mkdir(errno.EPERM), cache).program == good
    assert path.read_bytes() == cache_file(good)


@needs_seccomp
def test_unreadable_unwritable_cache_file_only_costs_the_build(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    good = compile_filter(denying_mkdir(errno.EPERM), cache).program
    path = the_cache_file(cache)
    path.unlink()
    (path / "in the way").mkdir(parents=True)  # read: EISDIR; rename onto it: not empty

    assert compile_filter(denying_mkdir(errno.EPERM), cache).program == good
    assert the_cache_file(cache) == path and path.is_dir()


def group_writable(path: Path) -> None:
    path.chmod(0o770)


def world_writable(path: Path) -> None:
    path.chmod(0o1777)


def owned_by_nobody(path: Path) -> None:
    os.chown(path, 65534, 65534)


@needs_seccomp
@pytest.mark.parametrize("weaken", [group_writable, world_writable, owned_by_nobody])
def test_cache_others_can_write_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                            weaken: Callable[[Path], None]) -> None:
    cache = tmp_path / "cache"
    good = compile_filter(denying_mkdir(errno.EPERM), cache).program
    path = the_cache_file(cache)
    planted = cache_file(compile_filter(denying_mkdir(errno.EROFS), None).program)
    path.write_bytes(planted)
    weaken(cache)

    compiled = compile_filter(denying_mkdir(errno.EPERM), cache)
    assert compiled.program == good and path.read_bytes() == planted  # neither used nor rewritten
    assert mkdir_errno_under(compiled, tmp_path / "d") == errno.EPERM
    assert caplog.text.count(f"cache {cache} not used") == 1
