"""The container process's seccomp filter: ``linux.seccomp`` compiled with libseccomp.

libseccomp (``libseccomp.so.2``, which runc and crun depend on too) is used through
ctypes; it is only needed when a config has a ``linux.seccomp`` object.

Ordering for the container's init (as runc's ``standard_init_linux``): the filter governs
every syscall after it is loaded, so load it as late as possible, but

- with ``process.noNewPrivileges``: set PR_SET_NO_NEW_PRIVS, drop capabilities, then call
  ``load_seccomp`` just before execve;
- without it, the kernel only lets a process holding CAP_SYS_ADMIN install a filter, so
  call ``load_seccomp`` before dropping capabilities (before ``drop_bounding``/setuid).

The filter never sets no_new_privs itself: that is ``process.noNewPrivileges``' job.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from ocitool.errors import OcitoolError
from ocitool.runtime.capabilities import CAPABILITIES
from ocitool.log import get_logger

log = get_logger(__name__)

DOCKER_DEFAULT_PROFILE = Path(__file__).with_name("seccomp_default.json")
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

# The spec's filter flags, each with the libseccomp filter attribute that sets it.
_FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 4,               # SCMP_FLTATR_CTL_TSYNC
    "SECCOMP_FILTER_FLAG_LOG": 6,                 # SCMP_FLTATR_CTL_LOG
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 7,          # SCMP_FLTATR_CTL_SSB
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 10,  # SCMP_FLTATR_CTL_WAITKILL
}
_ATTR_CTL_NNP = 3
_ATTR_CTL_OPTIMIZE = 8
_ATTR_API_SYSRAWRC = 9
_NR_SCMP_ERROR = -1
_MAX_ARGS = 6
# libseccomp <= 2.5.4 mis-builds a binary tree for an empty filter; runc uses the same bound.
_BINARY_TREE_MIN_RULES = 32


class _ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp."""

    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class _Version(ctypes.Structure):
    """struct scmp_version."""

    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


@dataclass(frozen=True)
class Rule:
    """One syscall's rule; ``field`` names its place in the config for errors."""

    field: str
    syscall: str
    action: int
    args: tuple[tuple[int, int, int, int], ...]  # (index, operator, value, valueTwo)


@dataclass(frozen=True)
class SeccompFilter:
    """A validated ``linux.seccomp``: libseccomp values, syscalls still by name."""

    default_action: int
    architectures: tuple[str, ...]
    flags: tuple[str, ...]
    rules: tuple[Rule, ...]


def known_actions() -> list[str]:
    """The seccomp actions ``load_seccomp`` accepts (for ``features``)."""
    return sorted(_ACTIONS)


def known_operators() -> list[str]:
    """The argument comparison operators ``load_seccomp`` accepts."""
    return sorted(_OPERATORS)


def known_archs() -> list[str]:
    """The architecture names ``load_seccomp`` knows (libseccomp may support fewer)."""
    return sorted(_ARCHS)


def known_flags() -> list[str]:
    """The seccomp filter flags ``load_seccomp`` knows."""
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


def load_seccomp(config: dict | None) -> None:
    """Install the ``linux.seccomp`` filter on this process (nothing when ``config`` is None).

    Syscalls libseccomp does not know are skipped, as runc does, so one profile serves
    older and newer systems. See the module docstring for when the init must call this.
    """
    if config is not None:
        install_filter(parse_seccomp(config))


def require_library() -> ctypes.CDLL:
    """libseccomp, loaded now (a container's init must load it before pivot_root hides it)."""
    lib = _libseccomp()
    if lib is None:
        raise OcitoolError("linux.seccomp: libseccomp.so.2 is not installed (install libseccomp2)")
    return lib


def install_filter(spec: SeccompFilter) -> None:
    """Build the parsed filter with libseccomp and load it into the kernel for this process."""
    lib = require_library()
    ctx = lib.seccomp_init(spec.default_action)
    if not ctx:
        raise OcitoolError("linux.seccomp.defaultAction: not supported by libseccomp or the kernel")
    try:
        _set_attributes(lib, ctx, spec)
        for rule in spec.rules:
            if rule.action != spec.default_action:  # redundant, and libseccomp refuses it
                _add_rule(lib, ctx, rule)
        _load(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


def default_profile(capabilities: set[int] | frozenset[int]) -> dict:
    """A ``linux.seccomp`` object equivalent to Docker's default profile.

    ``capabilities`` are the process's bounding set (capability numbers), which Docker
    consults: holding e.g. CAP_SYS_ADMIN allows mount, unshare, setns and any clone.
    Simplified from Docker's: x86_64 and aarch64 only, and kernels from 4.8 on (ptrace
    is always allowed).
    """
    profile = json.loads(DOCKER_DEFAULT_PROFILE.read_text(encoding="utf-8"))
    machine = platform.machine()
    allowed = set(profile["allow"]) | set(profile["allowOnMachine"].get(machine, ()))
    for name, syscalls in profile["allowWithCapability"].items():
        if CAPABILITIES[name] in capabilities:
            allowed.update(syscalls)
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
    _require(_known(name, _ACTIONS), field, f"unknown action {json.dumps(name)}")
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
        _require(_known(value, known), f"{field}[{index}]", f"unknown {what} {json.dumps(value)}")
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
    _require(_known(op, _OPERATORS), f"{field}.op", f"unknown operator {json.dumps(op)}")
    return index, _OPERATORS[op], value, value_two or 0


@functools.cache
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
        "seccomp_load": (c_int, [ctx]),
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
    # The caller sets no_new_privs from process.noNewPrivileges; libseccomp would force it.
    lib.seccomp_attr_set(ctx, _ATTR_CTL_NNP, 0)
    # Report the kernel's errno from seccomp_load (libseccomp >= 2.5.2; else -ECANCELED).
    lib.seccomp_attr_set(ctx, _ATTR_API_SYSRAWRC, 1)
    if len(spec.rules) > _BINARY_TREE_MIN_RULES:
        lib.seccomp_attr_set(ctx, _ATTR_CTL_OPTIMIZE, 2)
    for index, arch in enumerate(spec.architectures):
        token = lib.seccomp_arch_resolve_name(_ARCHS[arch].encode())
        rc = lib.seccomp_arch_add(ctx, token) if token else -errno.EINVAL
        if rc not in (0, -errno.EEXIST):
            raise OcitoolError(f"linux.seccomp.architectures[{index}]: {arch} is not supported "
                               f"by libseccomp {_version(lib)}")
    for index, flag in enumerate(spec.flags):
        if lib.seccomp_attr_set(ctx, _FLAGS[flag], 1) != 0:
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


def _load(lib: ctypes.CDLL, ctx: int) -> None:
    rc = lib.seccomp_load(ctx)
    if rc == 0:
        return
    hint = ""
    if -rc in (errno.EACCES, errno.EPERM, errno.ECANCELED):
        hint = " (without noNewPrivileges, loading a filter needs CAP_SYS_ADMIN)"
    raise OcitoolError(f"linux.seccomp: cannot load the filter: {os.strerror(-rc)}{hint}")
