"""The container process's Linux capabilities: ``process.capabilities`` parsed and applied.

The container's init applies them in this order (as runc's ``finalizeNamespace`` does),
because each step needs privileges that a later one takes away:

1. ``drop_bounding(caps)`` while CAP_SETPCAP is still effective: PR_CAPBSET_DROP needs it,
   and both ``setuid`` to a non-root user and ``capset`` may remove it.
2. ``keep_caps_for_setuid()`` (PR_SET_KEEPCAPS), so that the permitted set survives the
   change to a non-root uid instead of being cleared by the kernel.
3. setgroups/setgid/setuid to ``process.user``.
4. ``apply_capabilities(caps)`` right before execve: effective, permitted and inheritable
   with capset, then the ambient set.

A seccomp filter loaded without noNewPrivileges needs CAP_SYS_ADMIN, so it must be loaded
before step 1 (see ``ocitool.runtime.seccomp``).
"""

from __future__ import annotations

from ocitool.errors import OcitoolError
from ocitool.log import get_logger
from ocitool.runtime.syscalls import (
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAP_AMBIENT_RAISE,
    PR_CAPBSET_DROP,
    PR_CAPBSET_READ,
    PR_SET_KEEPCAPS,
    capset,
    prctl,
)

log = get_logger(__name__)

# Kernel numbering (include/uapi/linux/capability.h): a name's index is its number.
_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
    "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON",
    "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)

CAPABILITIES: dict[str, int] = {name: number for number, name in enumerate(_NAMES)}
"""Every capability name this runtime knows, with its kernel number."""

SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")
"""The capability sets of ``process.capabilities``, in the spec's terms."""

# /proc/<pid>/status field for each set.
_STATUS_FIELDS = {"CapBnd": "bounding", "CapEff": "effective", "CapPrm": "permitted",
                  "CapInh": "inheritable", "CapAmb": "ambient"}


class CapabilitySets:
    """The capability numbers the container process keeps, per set."""

    __slots__ = ("bounding", "effective", "permitted", "inheritable", "ambient")

    def __init__(self, bounding: frozenset[int] = frozenset(), effective: frozenset[int] = frozenset(),
                 permitted: frozenset[int] = frozenset(), inheritable: frozenset[int] = frozenset(),
                 ambient: frozenset[int] = frozenset()) -> None:
        self.bounding = bounding
        self.effective = effective
        self.permitted = permitted
        self.inheritable = inheritable
        self.ambient = ambient

    def _fields(self) -> tuple[frozenset[int], ...]:
        return self.bounding, self.effective, self.permitted, self.inheritable, self.ambient

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CapabilitySets):
            return NotImplemented
        return self._fields() == other._fields()

    def __repr__(self) -> str:
        sets = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"CapabilitySets({sets})"


def last_cap() -> int:
    """The highest capability number the running kernel knows.

    Read from /proc/sys/kernel/cap_last_cap; a container's init may have no /proc, so
    then it is found by probing PR_CAPBSET_READ, which fails for unknown numbers.
    """
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as file:
            return int(file.read())
    except OSError:
        number = 0
        while _in_bounding(number + 1) is not None:
            number += 1
        return number


def current_capabilities(pid: int | str = "self") -> dict[str, int]:
    """The capability masks of process ``pid``, keyed by set name, from /proc/<pid>/status."""
    masks: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="utf-8") as file:
        for line in file:
            field, _, value = line.partition(":")
            if field in _STATUS_FIELDS:
                masks[_STATUS_FIELDS[field]] = int(value, 16)
    return masks


def parse_capabilities(config_caps: dict | None) -> CapabilitySets:
    """Validate ``process.capabilities`` into capability numbers.

    Unknown names are a config error. Known capabilities that this runtime cannot grant
    (absent from its own bounding set, or newer than the kernel) are skipped with a
    warning, as runc does, so a config written for a richer host still runs. A missing
    object or set means an empty set: the process keeps only what is listed.
    """
    if config_caps is None:
        config_caps = {}
    if not isinstance(config_caps, dict):
        raise OcitoolError("process.capabilities: must be an object")
    for key in config_caps:
        if key not in SETS:
            raise OcitoolError(f'process.capabilities: unknown capability set "{key}"')
    available = frozenset(number for number in range(last_cap() + 1) if _in_bounding(number))
    unavailable: set[str] = set()
    sets = {name: _parse_set(config_caps.get(name), f"process.capabilities.{name}",
                             available, unavailable)
            for name in SETS}
    if unavailable:
        log.warning("ignoring capabilities unavailable to the runtime: %s",
                    ", ".join(sorted(unavailable)))
    return CapabilitySets(**sets)


def _parse_set(names: object, field: str, available: frozenset[int],
               unavailable: set[str]) -> frozenset[int]:
    """One set's numbers; names the runtime cannot grant go to ``unavailable``."""
    if names is None:
        return frozenset()
    if not isinstance(names, list):
        raise OcitoolError(f"{field}: must be an array of capability names")
    numbers = set()
    for index, name in enumerate(names):
        if not isinstance(name, str):
            raise OcitoolError(f"{field}[{index}]: must be a string")
        if name not in CAPABILITIES:
            raise OcitoolError(f'{field}[{index}]: unknown capability "{name}"')
        if CAPABILITIES[name] in available:
            numbers.add(CAPABILITIES[name])
        else:
            unavailable.add(name)
    return frozenset(numbers)


def drop_bounding(caps: CapabilitySets) -> None:
    """Drop every capability not in ``caps.bounding`` from this process's bounding set.

    PR_CAPBSET_DROP needs CAP_SETPCAP in the effective set, so call this before setuid and
    before ``capset`` can take CAP_SETPCAP away. Capabilities already dropped are left
    alone, so calling it again later (``apply_capabilities`` does) needs no privilege.
    """
    for number in range(last_cap() + 1):
        if number not in caps.bounding and _in_bounding(number):
            prctl(PR_CAPBSET_DROP, number)


def keep_caps_for_setuid(keep: bool = True) -> None:
    """Set PR_SET_KEEPCAPS so the permitted set survives a setuid away from root.

    Without it the kernel clears the permitted and effective sets when all uids become
    non-zero, and ``apply_capabilities`` could no longer grant anything. execve resets
    the flag, so clearing it again (``keep=False``) is optional.
    """
    prctl(PR_SET_KEEPCAPS, int(keep))


def apply_capabilities(caps: CapabilitySets) -> None:
    """Give this process exactly ``caps``: bounding, then capset, then ambient.

    Call it in the container's init after setuid and right before execve; see the module
    docstring for the order of ``drop_bounding`` and ``keep_caps_for_setuid`` before it.
    Ambient capabilities that cannot be raised (not both permitted and inheritable) are
    skipped with a warning, as runc does.
    """
    drop_bounding(caps)
    try:
        capset(_mask(caps.effective), _mask(caps.permitted), _mask(caps.inheritable))
    except OSError as err:
        raise OcitoolError(
            f"process.capabilities: cannot set capabilities ({err.strerror}): effective must be "
            "within permitted, permitted within what the runtime holds, inheritable within "
            "bounding") from None
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    for number in sorted(caps.ambient):
        try:
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, number)
        except OSError as err:
            log.warning("cannot raise ambient capability %s: %s", _NAMES[number], err.strerror)


def _in_bounding(number: int) -> bool | None:
    """Whether capability ``number`` is in this process's bounding set; None when the
    kernel does not know it."""
    try:
        return prctl(PR_CAPBSET_READ, number) == 1
    except OSError:
        return None


def _mask(numbers: frozenset[int]) -> int:
    """A kernel capability mask with the bits ``numbers`` set."""
    return sum(1 << number for number in numbers)
