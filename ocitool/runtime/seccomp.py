"""The container process's seccomp filter: ``linux.seccomp`` compiled with libseccomp.

Two steps, so that the slow one can run once, outside the container:

- ``compile_filter`` validates the config and has libseccomp (``libseccomp.so.2``, which
  runc and crun depend on too; used through ctypes) build the BPF program, without loading
  it. With a cache directory it keeps the program there (see below) and reuses it.
- ``load_filter`` installs a compiled program with the seccomp(2) syscall; it needs no
  libseccomp, so a container's init can run it after pivot_root.

Ordering for the container's init (as runc's ``standard_init_linux``): the filter governs
every syscall after it is loaded, so load it as late as possible, but

- with ``process.noNewPrivileges``: set PR_SET_NO_NEW_PRIVS, drop capabilities, then call
  ``load_filter`` just before execve;
- without it, the kernel only lets a process holding CAP_SYS_ADMIN install a filter, so
  call ``load_filter`` before dropping capabilities (before ``drop_bounding``/setuid).

The filter never sets no_new_privs itself: that is ``process.noNewPrivileges``' job.

The cache holds one file per compiled filter, named by the sha256 of a canonical JSON of
everything the program depends on (the config, libseccomp's version and native
architecture, the kernel release, whose features libseccomp checks, and
``_CACHE_FORMAT``). A file is the program followed by its own sha256, so a damaged one
reads as a miss. Only a directory owned by our euid and writable by no one else is used.
"""

from __future__ import annotations

import ctypes
import errno
import os

from ocitool import cjson
from ocitool.errors import OcitoolError
from ocitool.once import once
from ocitool.fsutil import atomic_write
from ocitool.runtime import syscalls
from ocitool.runtime.capabilities import CAPABILITIES
from ocitool.log import get_logger

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

log = get_logger(__name__)

DOCKER_DEFAULT_PROFILE = os.path.join(os.path.dirname(__file__), "seccomp_default.json")
"""Docker's default profile in compact form; ``default_profile`` expands it."""

# libseccomp's action values (seccomp.h); ERRNO and TRACE carry a 16-bit errno.
_ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_ERRNO_ACTIONS = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")

# enum scmp_compare
_OPERATORS = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}

# The spec's architecture names, with libseccomp's name for seccomp_arch_resolve_name.
_ARCHS = {
    "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm", "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_MIPS": "mips", "SCMP_ARCH_MIPS64": "mips64", "SCMP_ARCH_MIPS64N32": "mips64n32",
    "SCMP_ARCH_MIPSEL": "mipsel", "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32",
    "SCMP_ARCH_PPC": "ppc", "SCMP_ARCH_PPC64": "ppc64", "SCMP_ARCH_PPC64LE": "ppc64le",
    "SCMP_ARCH_S390": "s390", "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc", "SCMP_ARCH_PARISC64": "parisc64",
    "SCMP_ARCH_RISCV64": "riscv64", "SCMP_ARCH_LOONGARCH64": "loongarch64",
    "SCMP_ARCH_M68K": "m68k", "SCMP_ARCH_SH": "sh", "SCMP_ARCH_SHEB": "sheb",
}

# The spec's filter flags: the libseccomp filter attribute that sets each, and the
# seccomp(2) flags libseccomp then loads with (include/uapi/linux/seccomp.h). TSYNC comes
# with TSYNC_ESRCH (kernel >= 5.7) as libseccomp >= 2.5 adds it; WAIT_KILLABLE_RECV only
# applies with a notify listener, which ocitool never asks for, so libseccomp passes none.
_FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": (4, 0x01 | 0x10),     # SCMP_FLTATR_CTL_TSYNC
    "SECCOMP_FILTER_FLAG_LOG": (6, 0x02),              # SCMP_FLTATR_CTL_LOG
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": (7, 0x04),       # SCMP_FLTATR_CTL_SSB
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": (10, 0),  # SCMP_FLTATR_CTL_WAITKILL
}
_ATTR_CTL_OPTIMIZE = 8
_NR_SCMP_ERROR = -1
_MAX_ARGS = 6
# libseccomp <= 2.5.4 mis-builds a binary tree for an empty filter; runc uses the same bound.
_BINARY_TREE_MIN_RULES = 32

_SECCOMP_SET_MODE_FILTER = 1
_BPF_INSN_SIZE = 8  # struct sock_filter
_BPF_MAXINSNS = 4096  # the kernel's limit on a program's length

_CACHE_FORMAT = 1  # bump when the cache file's layout or key changes
_DIGEST_SIZE = 32  # sha256


class _ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp."""

    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class _Version(ctypes.Structure):
    """struct scmp_version."""

    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    """struct sock_fprog: a BPF program for seccomp(2)."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class Rule:
    """One syscall's rule; ``field`` names its place in the config for errors."""

    __slots__ = ("field", "syscall", "action", "args")

    def __init__(self, field: str, syscall: str, action: int,
                 args: tuple[tuple[int, int, int, int], ...]) -> None:
        self.field, self.syscall, self.action = field, syscall, action
        self.args = args  # (index, operator, value, valueTwo)


class SeccompFilter:
    """A validated ``linux.seccomp``: libseccomp values, syscalls still by name."""

    __slots__ = ("default_action", "architectures", "flags", "rules")

    def __init__(self, default_action: int, architectures: tuple[str, ...], flags: tuple[str, ...],
                 rules: tuple[Rule, ...]) -> None:
        self.default_action, self.architectures = default_action, architectures
        self.flags, self.rules = flags, rules


class CompiledFilter:
    """A filter ready for seccomp(2): ``program`` is the BPF (``struct sock_filter`` array,
    8 bytes an instruction) and ``flags`` the SECCOMP_FILTER_FLAG_* bits to load it with."""

    __slots__ = ("program", "flags")

    def __init__(self, program: bytes, flags: int) -> None:
        self.program, self.flags = program, flags


def known_actions() -> list[str]:
    """The seccomp actions ``compile_filter`` accepts (for ``features``)."""
    return sorted(_ACTIONS)


def known_operators() -> list[str]:
    """The argument comparison operators ``compile_filter`` accepts."""
    return sorted(_OPERATORS)


def known_archs() -> list[str]:
    """The architecture names ``compile_filter`` knows (libseccomp may support fewer)."""
    return sorted(_ARCHS)


def known_flags() -> list[str]:
    """The seccomp filter flags ``compile_filter`` knows."""
    return sorted(_FLAGS)


def seccomp_supported() -> bool:
    """Whether both libseccomp and the kernel's seccomp support are present."""
    if _libseccomp() is None:
        return False
    with open("/proc/self/status", encoding="utf-8") as status:
        return any(line.startswith("Seccomp:") for line in status)


def parse_seccomp(config: dict) -> SeccompFilter:
    """Validate ``linux.seccomp`` without libseccomp, naming the bad field on error."""
    field = "linux.seccomp"
    _require(isinstance(config, dict), field, "must be an object")
    default = _action(config, field, "defaultAction", "defaultErrnoRet")
    architectures = _names(config.get("architectures"), f"{field}.architectures", _ARCHS,
                           "architecture")
    flags = _names(config.get("flags"), f"{field}.flags", _FLAGS, "flag")
    syscalls = config.get("syscalls") or []
    _require(isinstance(syscalls, list), f"{field}.syscalls", "must be an array")
    rules = tuple(rule for index, entry in enumerate(syscalls)
                  for rule in _rules(entry, f"{field}.syscalls[{index}]"))
    return SeccompFilter(default, architectures, flags, rules)


def compile_filter(seccomp: dict, cache_dir: str | os.PathLike[str] | None) -> CompiledFilter:
    """Validate ``linux.seccomp`` and build its BPF program with libseccomp, without loading it.

    Syscalls libseccomp does not know are skipped, as runc does, so one profile serves
    older and newer systems. With ``cache_dir`` (see the module docstring) a program built
    before is read back instead (building Docker's default profile takes ~15 ms; the config,
    valid when it was built, is not checked again) and a new one is stored; a cache that
    cannot be used or written costs only the build.
    """
    name = None if cache_dir is None or not isinstance(seccomp, dict) else _cache_name(seccomp)
    program = None if name is None else _read_entry(cache_dir, name)
    if program is not None:  # built from this very config, which was valid then
        return CompiledFilter(program, _load_flags(seccomp.get("flags") or ()))
    spec = parse_seccomp(seccomp)
    program = _build_program(spec)
    if name is not None:
        _write_entry(cache_dir, name, program)
    return CompiledFilter(program, _load_flags(spec.flags))


def load_filter(compiled: CompiledFilter) -> None:
    """Install ``compiled`` on this process with seccomp(2); libseccomp is not needed.

    Like libseccomp's load with the attributes ocitool sets, this leaves no_new_privs
    alone, so see the module docstring for when the init must call it.
    """
    buffer = ctypes.create_string_buffer(compiled.program, len(compiled.program))
    fprog = _SockFprog(len(compiled.program) // _BPF_INSN_SIZE, ctypes.addressof(buffer))
    try:
        syscalls.raw_syscall("seccomp", _SECCOMP_SET_MODE_FILTER, compiled.flags,
                             ctypes.c_void_p(ctypes.addressof(fprog)))
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EACCES:
            hint = " (without noNewPrivileges, loading a filter needs CAP_SYS_ADMIN)"
        raise OcitoolError(f"linux.seccomp: cannot load the filter: {os.strerror(exc.errno)}{hint}") from None


def require_library() -> ctypes.CDLL:
    """libseccomp, loaded now (a container's init must load it before pivot_root hides it)."""
    lib = _libseccomp()
    if lib is None:
        raise OcitoolError("linux.seccomp: libseccomp.so.2 is not installed (install libseccomp2)")
    return lib


def default_profile(capabilities: set[int] | frozenset[int]) -> dict:
    """A ``linux.seccomp`` object equivalent to Docker's default profile.

    ``capabilities`` are the process's bounding set (capability numbers), which Docker
    consults: holding e.g. CAP_SYS_ADMIN allows mount, unshare, setns and any clone.
    Simplified from Docker's: x86_64 and aarch64 only, and kernels from 4.8 on (ptrace
    is always allowed).
    """
    with open(DOCKER_DEFAULT_PROFILE, "rb") as file:
        profile = cjson.loads(file.read())
    machine = os.uname().machine  # what platform.machine() reads, without importing platform
    allowed = set(profile["allow"]) | set(profile["allowOnMachine"].get(machine, ()))
    for name, names in profile["allowWithCapability"].items():
        if CAPABILITIES[name] in capabilities:
            allowed.update(names)
    rules = [{key: value for key, value in rule.items() if key != "unlessCapability"}
             for rule in profile["rules"]
             if "unlessCapability" not in rule
             or CAPABILITIES[rule["unlessCapability"]] not in capabilities]
    result = {
        "defaultAction": profile["defaultAction"],
        "defaultErrnoRet": profile["defaultErrnoRet"],
        "syscalls": [{"names": sorted(allowed), "action": "SCMP_ACT_ALLOW"}, *rules],
    }
    if machine in profile["architectures"]:
        result["architectures"] = profile["architectures"][machine]
    return result


def _require(condition: bool, field: str, problem: str) -> None:
    if not condition:
        raise OcitoolError(f"{field}: {problem}")


def _known(name: object, known: dict) -> bool:
    """Whether ``name`` is one of the constant names in ``known``."""
    return isinstance(name, str) and name in known


def _uint(value: object, limit: int) -> bool:
    """Whether ``value`` is a JSON integer in [0, limit]."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


def _action(entry: dict, prefix: str, action_key: str, errno_key: str) -> int:
    """The libseccomp value of ``entry[action_key]``, with its errno (EPERM by default)."""
    field, errno_field = f"{prefix}.{action_key}", f"{prefix}.{errno_key}"
    name = entry.get(action_key)
    _require(name is not None, field, "is required")
    _require(name != "SCMP_ACT_NOTIFY", field,
             "SCMP_ACT_NOTIFY is not supported (ocitool has no seccomp agent support)")
    _require(_known(name, _ACTIONS), field, f"unknown action {cjson.dumps(name)}")
    errno_ret = entry.get(errno_key)
    if name not in _ERRNO_ACTIONS:
        _require(errno_ret is None, errno_field, f"{name} takes no errno")
        return _ACTIONS[name]
    if errno_ret is None:
        errno_ret = errno.EPERM
    _require(_uint(errno_ret, 0xFFFF), errno_field, "must be an integer from 0 to 65535")
    return _ACTIONS[name] | errno_ret


def _names(values: object, field: str, known: dict, what: str) -> tuple[str, ...]:
    """A validated list of constant names (architectures, flags)."""
    if values is None:
        return ()
    _require(isinstance(values, list), field, "must be an array")
    for index, value in enumerate(values):
        _require(_known(value, known), f"{field}[{index}]", f"unknown {what} {cjson.dumps(value)}")
    return tuple(values)


def _rules(entry: object, field: str) -> list[Rule]:
    """One ``syscalls[]`` entry as a rule per syscall name."""
    _require(isinstance(entry, dict), field, "must be an object")
    names = entry.get("names")
    _require(isinstance(names, list) and bool(names), f"{field}.names",
             "must be a non-empty array of syscall names")
    for index, name in enumerate(names):
        _require(isinstance(name, str) and bool(name), f"{field}.names[{index}]",
                 "must be a non-empty string")
    action = _action(entry, field, "action", "errnoRet")
    args = entry.get("args") or []
    _require(isinstance(args, list), f"{field}.args", "must be an array")
    conditions = tuple(_condition(arg, f"{field}.args[{index}]") for index, arg in enumerate(args))
    return [Rule(f"{field}.names[{index}]", name, action, conditions)
            for index, name in enumerate(names)]


def _condition(arg: object, field: str) -> tuple[int, int, int, int]:
    """One ``args[]`` entry as (index, operator, value, valueTwo)."""
    _require(isinstance(arg, dict), field, "must be an object")
    index, value, value_two, op = (arg.get(key) for key in ("index", "value", "valueTwo", "op"))
    _require(_uint(index, _MAX_ARGS - 1), f"{field}.index", "must be an integer from 0 to 5")
    _require(_uint(value, 2**64 - 1), f"{field}.value", "must be an unsigned 64-bit integer")
    _require(value_two is None or _uint(value_two, 2**64 - 1), f"{field}.valueTwo",
             "must be an unsigned 64-bit integer")
    _require(_known(op, _OPERATORS), f"{field}.op", f"unknown operator {cjson.dumps(op)}")
    return index, _OPERATORS[op], value, value_two or 0


@once
def _libseccomp() -> ctypes.CDLL | None:
    """libseccomp with the prototypes used here, or None when it is not installed."""
    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return None
    ctx, u32, c_int, c_str = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_char_p
    prototypes = {
        "seccomp_init": (ctx, [u32]),
        "seccomp_release": (None, [ctx]),
        "seccomp_attr_set": (c_int, [ctx, c_int, u32]),
        "seccomp_arch_resolve_name": (u32, [c_str]),
        "seccomp_arch_add": (c_int, [ctx, u32]),
        "seccomp_syscall_resolve_name": (c_int, [c_str]),
        "seccomp_rule_add_array": (c_int, [ctx, u32, c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)]),
        "seccomp_export_bpf": (c_int, [ctx, c_int]),
        "seccomp_arch_native": (u32, []),
        "seccomp_version": (ctypes.POINTER(_Version), []),
    }
    for name, (restype, argtypes) in prototypes.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


def _version(lib: ctypes.CDLL) -> str:
    version = lib.seccomp_version().contents
    return f"{version.major}.{version.minor}.{version.micro}"


def _set_attributes(lib: ctypes.CDLL, ctx: int, spec: SeccompFilter) -> None:
    """Architectures, flags and the attributes ocitool always wants."""
    if len(spec.rules) > _BINARY_TREE_MIN_RULES:
        lib.seccomp_attr_set(ctx, _ATTR_CTL_OPTIMIZE, 2)
    for index, arch in enumerate(spec.architectures):
        token = lib.seccomp_arch_resolve_name(_ARCHS[arch].encode())
        rc = lib.seccomp_arch_add(ctx, token) if token else -errno.EINVAL
        if rc not in (0, -errno.EEXIST):
            raise OcitoolError(f"linux.seccomp.architectures[{index}]: {arch} is not supported "
                               f"by libseccomp {_version(lib)}")
    for index, flag in enumerate(spec.flags):
        if lib.seccomp_attr_set(ctx, _FLAGS[flag][0], 1) != 0:
            raise OcitoolError(f"linux.seccomp.flags[{index}]: {flag} is not supported by "
                               f"libseccomp {_version(lib)} or the kernel")


def _add_rule(lib: ctypes.CDLL, ctx: int, rule: Rule) -> None:
    """Add ``rule``; one libseccomp rule per condition when an argument is tested twice.

    libseccomp cannot AND two comparisons of one argument, so (as runc does) such
    conditions become separate rules, which match when any of them does.
    """
    number = lib.seccomp_syscall_resolve_name(rule.syscall.encode())
    if number == _NR_SCMP_ERROR:
        log.debug("seccomp: syscall %s unknown to libseccomp %s, skipped", rule.syscall,
                  _version(lib))
        return
    indexes = [index for index, *_ in rule.args]
    groups = [[arg] for arg in rule.args] if len(set(indexes)) < len(indexes) else [rule.args]
    for group in groups:
        conditions = (_ArgCmp * len(group))(*(_ArgCmp(*arg) for arg in group))
        rc = lib.seccomp_rule_add_array(ctx, rule.action, number, len(group), conditions)
        if rc != 0:
            raise OcitoolError(f"{rule.field}: cannot add a rule for {rule.syscall}: "
                               f"{os.strerror(-rc)}")


def _build_program(spec: SeccompFilter) -> bytes:
    """``spec`` built into a BPF program by libseccomp."""
    lib = require_library()
    ctx = lib.seccomp_init(spec.default_action)
    if not ctx:
        raise OcitoolError("linux.seccomp.defaultAction: not supported by libseccomp or the kernel")
    try:
        _set_attributes(lib, ctx, spec)
        for rule in spec.rules:
            if rule.action != spec.default_action:  # redundant, and libseccomp refuses it
                _add_rule(lib, ctx, rule)
        return _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


def _export(lib: ctypes.CDLL, ctx: int) -> bytes:
    """The BPF program of ``ctx``, which libseccomp can only write to an fd: a memfd here."""
    fd = os.memfd_create("ocitool-seccomp", os.MFD_CLOEXEC)
    try:
        rc = lib.seccomp_export_bpf(ctx, fd)
        if rc != 0:
            raise OcitoolError(f"linux.seccomp: cannot build the filter: {os.strerror(-rc)}")
        return os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)


def _load_flags(names: tuple[str, ...] | list[str]) -> int:
    """The seccomp(2) flags libseccomp would load a filter with these ``flags`` names with."""
    flags = 0
    for name in names:
        flags |= _FLAGS[name][1]
    return flags


def _open_cache(cache_dir: str | os.PathLike[str], create: bool) -> int | None:
    """An fd of ``cache_dir`` (with ``create``, made 0700 if missing) when it can be trusted, else None.

    A program planted there would become a container's filter, so only our euid may be
    able to write there; using the fd keeps to the directory that was checked.
    """
    try:
        if create:
            os.makedirs(cache_dir, 0o700, exist_ok=True)
        fd = os.open(cache_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.debug("seccomp: cache %s not usable: %s", cache_dir, exc)
        return None
    info = os.fstat(fd)
    if info.st_uid == os.geteuid() and not info.st_mode & 0o022:
        return fd
    os.close(fd)
    report = log.warning if create else log.debug  # said once: storing the program comes next
    report("seccomp: cache %s not used: it must belong to uid %d and be writable by no one else",
           cache_dir, os.geteuid())
    return None


def _cache_name(config: dict) -> str | None:
    """The cache file for ``config``: the sha256 of all that its program depends on
    (None without libseccomp, whose absence building the program then reports)."""
    lib = _libseccomp()
    if lib is None:
        return None
    identity = {"format": _CACHE_FORMAT, "seccomp": config, "libseccomp": _version(lib),
                "arch": lib.seccomp_arch_native(), "kernel": os.uname().release}
    return _sha256(cjson.dumps(identity, compact=True, sort_keys=True).encode()).hex()


def _read_entry(cache_dir: str | os.PathLike[str], name: str) -> bytes | None:
    """The program in cache file ``name``, or None when it is missing or damaged (or the
    cache is missing or untrusted)."""
    directory = _open_cache(cache_dir, create=False)
    if directory is None:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
        try:
            data = os.read(fd, _BPF_MAXINSNS * _BPF_INSN_SIZE + _DIGEST_SIZE + 1)
        finally:
            os.close(fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.debug("seccomp: cache file %s unreadable: %s", name, exc)
        return None
    finally:
        os.close(directory)
    program, digest = data[:-_DIGEST_SIZE], data[-_DIGEST_SIZE:]
    if program and len(program) % _BPF_INSN_SIZE == 0 and _sha256(program) == digest:
        return program
    log.debug("seccomp: cache file %s is damaged", name)
    return None


def _write_entry(cache_dir: str | os.PathLike[str], name: str, program: bytes) -> None:
    """Store ``program`` and its digest as cache file ``name``, atomically (not durably:
    a file damaged by a crash reads as a miss)."""
    directory = _open_cache(cache_dir, create=True)
    if directory is None:
        return
    try:  # through /proc/self/fd, so that the file lands in the directory that was checked
        atomic_write(f"/proc/self/fd/{directory}/{name}", program + _sha256(program), 0o600,
                     durable=False)
    except OSError as exc:
        log.debug("seccomp: cannot cache the filter: %s", exc)
    finally:
        os.close(directory)


def _sha256(data: bytes) -> bytes:
    """The sha256 digest of ``data``."""
    return _sha256_constructor()(data).digest()


@once
def _sha256_constructor() -> Callable[[bytes], Any]:
    """CPython's built-in sha256 (``_sha2`` from 3.12, ``_sha256`` before) when it has one:
    ``hashlib`` would load OpenSSL, ~4 ms of a container's start."""
    for module in ("_sha2", "_sha256"):
        try:
            return __import__(module).sha256
        except ImportError:
            continue
    import hashlib

    return hashlib.sha256
