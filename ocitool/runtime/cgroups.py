"""Control groups for containers: create, limit, join, list, signal, freeze and remove.

:func:`cgroup_manager` picks one of two managers from what is mounted:

- :class:`V2Manager` when ``/sys/fs/cgroup`` is the cgroup2 (unified) filesystem, as on most
  current distributions. One directory holds everything. Before writing a controller's file,
  the controller is enabled in ``cgroup.subtree_control`` of every ancestor, never in the
  container's own cgroup: that one holds processes, and cgroup v2 lets no cgroup both hold
  processes and hand controllers to children ("no internal processes").
- :class:`V1Manager` otherwise: cgroup v1, or "hybrid" v1 plus a cgroup2 mount at
  ``/sys/fs/cgroup/unified``. It makes the container's directory in every v1 hierarchy and
  writes each controller's files in that controller's hierarchy. The hybrid cgroup2 mount is
  joined as well, through a :class:`V2Manager` that also serves what v1 cannot: the
  ``unified`` settings, and ``hugepageLimits`` when hugetlb is bound to cgroup2, not to v1.

``linux.resources`` holds the spec's v1-shaped values. The pure functions :func:`v1_plan`
and :func:`v2_plan` validate them (naming the bad field) and turn them into the file writes
to make, converting for cgroup v2 as runc does (cpu.shares -> cpu.weight, blkio weight ->
io.weight, memory+swap -> memory.swap.max). A value the kernel refuses is reported with its
field, file and value.

``to_state()`` gives a plain dict for state.json; :func:`manager_from_state` rebuilds the
manager from it, so ``kill``, ``ps`` and ``delete`` find the cgroup without the config.
"""

from __future__ import annotations

import _signal  # the C module: signal.py builds enums at import (~2 ms of a runtime command)
import abc
import errno
import os
import posixpath
import time

from ocitool.errors import OcitoolError
from ocitool.fsutil import write_in_one_call
from ocitool.runtime import syscalls
from ocitool.log import get_logger

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

log = get_logger(__name__)

CGROUP_ROOT = "/sys/fs/cgroup"
DEFAULT_PARENT = "/ocitool"
_MOUNTINFO = "/proc/self/mountinfo"
_SELF_CGROUP = "/proc/self/cgroup"
_PROC_CGROUPS = "/proc/cgroups"
_TIMEOUT = 5.0          # seconds to wait for processes to die or to freeze
_POLL = 0.01
_RESOURCES = "linux.resources"

# blockIO throttle field -> (v1 file, v2 io.max key)
_THROTTLES = {
    "throttleReadBpsDevice": ("blkio.throttle.read_bps_device", "rbps"),
    "throttleWriteBpsDevice": ("blkio.throttle.write_bps_device", "wbps"),
    "throttleReadIOPSDevice": ("blkio.throttle.read_iops_device", "riops"),
    "throttleWriteIOPSDevice": ("blkio.throttle.write_iops_device", "wiops"),
}


# ---------------------------------------------------------------- planning (pure)

class Write:
    """One planned write to a cgroup file.

    ``controller`` owns the file ("" for core cgroup files). ``choices`` are (file, value)
    alternatives for kernels that name a knob differently (CFQ's ``blkio.weight`` or BFQ's
    ``blkio.bfq.weight``): the first file that exists is written. ``field`` is the config
    field, for error messages. An ``optional`` write is skipped when no file exists;
    otherwise that is an error. (A plain class: ``collections.namedtuple`` would cost every
    runtime command the import of ``collections``.)
    """

    __slots__ = ("controller", "choices", "field", "optional")

    def __init__(self, controller: str, choices: tuple[tuple[str, str], ...], field: str,
                 optional: bool = False) -> None:
        self.controller, self.choices, self.field, self.optional = controller, choices, field, optional

    def _values(self) -> tuple[Any, ...]:
        return self.controller, self.choices, self.field, self.optional

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Write) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return "Write({!r}, {!r}, {!r}, optional={!r})".format(*self._values())


def _one(controller: str, file: str, value: str, field: str) -> Write:
    return Write(controller, ((file, value),), field)


def _skip(field: str, why: str) -> None:
    log.debug("%s: not applied: %s", field, why)


def _object(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OcitoolError(f"{field}: must be an object")
    return value


def _objects(section: dict[str, Any], key: str, field: str) -> list[dict[str, Any]]:
    value = section.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise OcitoolError(f"{field}.{key}: must be a list of objects")
    return value


def _int(section: dict[str, Any], key: str, field: str, *, low: int | None = None, high: int | None = None,
         zero_unset: bool = False, required: bool = False) -> int | None:
    """``section[key]`` as an int in [low, high]; None when absent (or 0 with ``zero_unset``)."""
    value = section.get(key)
    if value is None:
        if required:
            raise OcitoolError(f"{field}.{key}: is required")
        return None
    if type(value) is not int:
        raise OcitoolError(f"{field}.{key}: must be an integer")
    if zero_unset and value == 0:
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise OcitoolError(f"{field}.{key}: must be {bounds}")
    return value


def _limit(section: dict[str, Any], key: str, field: str) -> int | None:
    """A limit where -1 means unlimited and 0 (or absence) means "leave as is", as in runc."""
    value = _int(section, key, field, zero_unset=True)
    if value is not None and value < -1:
        raise OcitoolError(f"{field}.{key}: must be a positive integer or -1")
    return value


def _bool(section: dict[str, Any], key: str, field: str, *, required: bool = False) -> bool | None:
    value = section.get(key)
    if value is None and required:
        raise OcitoolError(f"{field}.{key}: is required")
    if value is not None and not isinstance(value, bool):
        raise OcitoolError(f"{field}.{key}: must be true or false")
    return value


def _string(section: dict[str, Any], key: str, field: str) -> str | None:
    value = section.get(key)
    if value is not None and not isinstance(value, str):
        raise OcitoolError(f"{field}.{key}: must be a string")
    return value or None


def _max(value: int) -> str:
    """A cgroup v2 limit: "max" for unlimited (-1)."""
    return "max" if value == -1 else str(value)


def _device(entry: dict[str, Any], field: str) -> str:
    major = _int(entry, "major", field, low=0, required=True)
    minor = _int(entry, "minor", field, low=0, required=True)
    return f"{major}:{minor}"


def cpu_weight(shares: int) -> int:
    """cgroup v2 ``cpu.weight`` [1, 10000] for v1 ``cpu.shares`` [2, 262144], linearly (runc's formula)."""
    shares = min(max(shares, 2), 262144)
    return 1 + ((shares - 2) * 9999) // 262142


def io_weight(weight: int) -> int:
    """cgroup v2 ``io.weight`` [1, 10000] for a v1 blkio weight [10, 1000], linearly (runc's formula)."""
    weight = min(max(weight, 10), 1000)
    return 1 + ((weight - 10) * 9999) // 990


def swap_max(swap: int | None, limit: int | None) -> int | None:
    """cgroup v2 ``memory.swap.max`` for the spec's ``swap`` (memory plus swap) and ``limit``.

    -1 is unlimited and None leaves the setting alone. As in runc, unlimited memory without a
    swap value makes swap unlimited too, and an unlimited side is passed through.
    """
    field = f"{_RESOURCES}.memory.swap"
    if swap is None:
        return -1 if limit == -1 else None
    if swap == -1 or limit == -1:
        return swap
    if limit is None:
        raise OcitoolError(f"{field}: needs {_RESOURCES}.memory.limit on cgroup v2 (swap counts memory plus swap)")
    return swap - limit


def _memory_values(memory: dict[str, Any], field: str) -> dict[str, Any]:
    """The memory settings, validated alike for v1 and v2 (a config good on one host is good on the other)."""
    values: dict[str, Any] = {key: _limit(memory, key, field)
                              for key in ("limit", "reservation", "swap", "kernel", "kernelTCP")}
    values["swappiness"] = _int(memory, "swappiness", field, low=0, high=100)
    for key in ("disableOOMKiller", "useHierarchy", "checkBeforeUpdate"):
        values[key] = _bool(memory, key, field)
    limit, swap = values["limit"], values["swap"]
    if limit is not None and swap is not None and 0 < swap < limit:
        raise OcitoolError(f"{field}.swap: must be -1 or at least {field}.limit (it limits memory plus swap)")
    if values["kernel"] is not None:
        _skip(f"{field}.kernel", "kernel memory limits are obsolete")
    return values


def _memory_v1(memory: dict[str, Any], current_limit: int) -> list[Write]:
    field = f"{_RESOURCES}.memory"
    values = _memory_values(memory, field)
    limit, swap = values["limit"], values["swap"]
    if limit == -1 and swap is None:
        swap = -1                         # unlimited memory: unlimited memory+swap as well (runc)
    limit_writes = [_one("memory", "memory.limit_in_bytes", str(limit), f"{field}.limit")] if limit else []
    swap_writes = [Write("memory", (("memory.memsw.limit_in_bytes", str(swap)),), f"{field}.swap",
                         optional=swap == -1)] if swap else []
    # The kernel keeps limit <= memory+swap at every step: raise memory+swap first unless
    # that would put it under the current limit (then the limit must come down first).
    swap_first = swap is not None and (swap == -1 or swap >= current_limit)
    writes = swap_writes + limit_writes if swap_first else limit_writes + swap_writes
    simple = {"reservation": "memory.soft_limit_in_bytes", "kernelTCP": "memory.kmem.tcp.limit_in_bytes"}
    writes += [_one("memory", file, str(values[key]), f"{field}.{key}")
               for key, file in simple.items() if values[key] is not None]
    if values["swappiness"] is not None:
        writes.append(_one("memory", "memory.swappiness", str(values["swappiness"]), f"{field}.swappiness"))
    if values["disableOOMKiller"]:
        writes.append(_one("memory", "memory.oom_control", "1", f"{field}.disableOOMKiller"))
    if values["useHierarchy"] is not None:
        writes.append(_one("memory", "memory.use_hierarchy", str(int(values["useHierarchy"])), f"{field}.useHierarchy"))
    return writes


def _memory_v2(memory: dict[str, Any]) -> list[Write]:
    field = f"{_RESOURCES}.memory"
    values = _memory_values(memory, field)
    writes = []
    swap = swap_max(values["swap"], values["limit"])
    if swap is not None:                  # no file without swap accounting: "max" and 0 are then moot (runc)
        writes.append(Write("memory", (("memory.swap.max", _max(swap)),), f"{field}.swap", optional=swap in (-1, 0)))
    for key, file in (("limit", "memory.max"), ("reservation", "memory.low")):
        if values[key] is not None:
            writes.append(_one("memory", file, _max(values[key]), f"{field}.{key}"))
    for key in ("kernelTCP", "swappiness", "disableOOMKiller", "useHierarchy"):
        if values[key] is not None:
            _skip(f"{field}.{key}", "cgroup v2 has no such setting")
    return writes


def _cpu_values(cpu: dict[str, Any], field: str) -> dict[str, Any]:
    return {
        "shares": _int(cpu, "shares", field, low=2, high=262144, zero_unset=True),
        "quota": _limit(cpu, "quota", field),
        "period": _int(cpu, "period", field, low=1, zero_unset=True),
        "burst": _int(cpu, "burst", field, low=0),
        "realtimeRuntime": _limit(cpu, "realtimeRuntime", field),
        "realtimePeriod": _int(cpu, "realtimePeriod", field, low=1, zero_unset=True),
        "idle": _int(cpu, "idle", field, low=0, high=1),
        "cpus": _string(cpu, "cpus", field),
        "mems": _string(cpu, "mems", field),
    }


def _cpuset(values: dict[str, Any], field: str) -> list[Write]:
    return [_one("cpuset", f"cpuset.{key}", values[key], f"{field}.{key}")
            for key in ("cpus", "mems") if values[key] is not None]


def _cpu_v1(cpu: dict[str, Any]) -> list[Write]:
    field = f"{_RESOURCES}.cpu"
    values = _cpu_values(cpu, field)
    files = (("shares", "cpu.shares"), ("period", "cpu.cfs_period_us"), ("quota", "cpu.cfs_quota_us"),
             ("burst", "cpu.cfs_burst_us"), ("realtimePeriod", "cpu.rt_period_us"),
             ("realtimeRuntime", "cpu.rt_runtime_us"), ("idle", "cpu.idle"))
    writes = [_one("cpu", file, str(values[key]), f"{field}.{key}") for key, file in files if values[key] is not None]
    return writes + _cpuset(values, field)


def _cpu_v2(cpu: dict[str, Any]) -> list[Write]:
    field = f"{_RESOURCES}.cpu"
    values = _cpu_values(cpu, field)
    for key in ("realtimeRuntime", "realtimePeriod"):
        if values[key] is not None:
            raise OcitoolError(f"{field}.{key}: cgroup v2 has no realtime CPU limits")
    writes = []
    if values["shares"] is not None:
        writes.append(_one("cpu", "cpu.weight", str(cpu_weight(values["shares"])), f"{field}.shares"))
    if values["quota"] is not None or values["period"] is not None:
        quota = values["quota"] if values["quota"] is not None else -1
        period = f" {values['period']}" if values["period"] is not None else ""
        key = "quota" if values["quota"] is not None else "period"
        writes.append(_one("cpu", "cpu.max", _max(quota) + period, f"{field}.{key}"))
    if values["burst"] is not None:
        writes.append(_one("cpu", "cpu.max.burst", str(values["burst"]), f"{field}.burst"))
    if values["idle"] is not None:
        writes.append(_one("cpu", "cpu.idle", str(values["idle"]), f"{field}.idle"))
    return writes + _cpuset(values, field)


def _pids(pids: dict[str, Any]) -> list[Write]:
    """``pids.max`` (the same file in v1 and v2); a negative limit is unlimited, 0 leaves it alone (runc)."""
    field = f"{_RESOURCES}.pids"
    if not pids:
        return []
    limit = _int(pids, "limit", field, required=True, zero_unset=True)
    return [] if limit is None else [_one("pids", "pids.max", "max" if limit < 0 else str(limit), f"{field}.limit")]


def _weight(entry: dict[str, Any], key: str, field: str) -> int | None:
    return _int(entry, key, field, low=10, high=1000, zero_unset=True)


def _blkio_v1(io: dict[str, Any]) -> list[Write]:
    field = f"{_RESOURCES}.blockIO"
    writes = []
    weight = _weight(io, "weight", field)
    if weight is not None:
        writes.append(Write("blkio", (("blkio.weight", str(weight)), ("blkio.bfq.weight", str(weight))),
                            f"{field}.weight"))
    leaf = _weight(io, "leafWeight", field)
    if leaf is not None:
        writes.append(_one("blkio", "blkio.leaf_weight", str(leaf), f"{field}.leafWeight"))
    for index, entry in enumerate(_objects(io, "weightDevice", field)):
        entry_field = f"{field}.weightDevice[{index}]"
        device = _device(entry, entry_field)
        weight = _weight(entry, "weight", entry_field)
        if weight is not None:
            value = f"{device} {weight}"
            writes.append(Write("blkio", (("blkio.weight_device", value), ("blkio.bfq.weight_device", value)),
                                f"{entry_field}.weight"))
        leaf = _weight(entry, "leafWeight", entry_field)
        if leaf is not None:
            writes.append(_one("blkio", "blkio.leaf_weight_device", f"{device} {leaf}", f"{entry_field}.leafWeight"))
    for key, (file, _) in _THROTTLES.items():
        for index, entry in enumerate(_objects(io, key, field)):
            entry_field = f"{field}.{key}[{index}]"
            rate = _int(entry, "rate", entry_field, low=0, required=True)
            writes.append(_one("blkio", file, f"{_device(entry, entry_field)} {rate}", entry_field))
    return writes


def _io_v2(io: dict[str, Any]) -> list[Write]:
    field = f"{_RESOURCES}.blockIO"
    writes = []
    weight = _weight(io, "weight", field)
    if weight is not None:                # BFQ takes the v1 value; io.weight (io.cost) needs converting
        writes.append(Write("io", (("io.bfq.weight", str(weight)), ("io.weight", f"default {io_weight(weight)}")),
                            f"{field}.weight"))
    if _weight(io, "leafWeight", field) is not None:
        _skip(f"{field}.leafWeight", "cgroup v2 has no leaf weights")
    for index, entry in enumerate(_objects(io, "weightDevice", field)):
        entry_field = f"{field}.weightDevice[{index}]"
        device = _device(entry, entry_field)
        weight = _weight(entry, "weight", entry_field)
        if weight is not None:
            writes.append(Write("io", (("io.bfq.weight", f"{device} {weight}"),
                                       ("io.weight", f"{device} {io_weight(weight)}")), f"{entry_field}.weight"))
        if _weight(entry, "leafWeight", entry_field) is not None:
            _skip(f"{entry_field}.leafWeight", "cgroup v2 has no leaf weights")
    for key, (_, name) in _THROTTLES.items():
        for index, entry in enumerate(_objects(io, key, field)):
            entry_field = f"{field}.{key}[{index}]"
            rate = _int(entry, "rate", entry_field, low=0, required=True)
            writes.append(_one("io", "io.max", f"{_device(entry, entry_field)} {name}={rate or 'max'}", entry_field))
    return writes


def _hugetlb(resources: dict[str, Any], *, v2: bool) -> list[Write]:
    """Page fault limits, plus reservation limits where the kernel has them (both, as runc)."""
    writes = []
    for index, entry in enumerate(_objects(resources, "hugepageLimits", _RESOURCES)):
        field = f"{_RESOURCES}.hugepageLimits[{index}]"
        size = entry.get("pageSize")
        if not _is_page_size(size):
            raise OcitoolError(f"{field}.pageSize: must be a size such as 64KB, 2MB or 1GB")
        limit = str(_int(entry, "limit", field, low=0, required=True))
        usage, reserved = ("max", "rsvd.max") if v2 else ("limit_in_bytes", "rsvd.limit_in_bytes")
        writes.append(_one("hugetlb", f"hugetlb.{size}.{usage}", limit, field))
        writes.append(Write("hugetlb", ((f"hugetlb.{size}.{reserved}", limit),), field, optional=True))
    return writes


def _devices(resources: dict[str, Any]) -> list[Write]:
    """The device allow list, rule by rule in the listed order (devices.allow / devices.deny)."""
    writes = []
    for index, rule in enumerate(_objects(resources, "devices", _RESOURCES)):
        field = f"{_RESOURCES}.devices[{index}]"
        allow = _bool(rule, "allow", field, required=True)
        kind = _string(rule, "type", field) or "a"
        if kind not in ("a", "b", "c"):
            raise OcitoolError(f"{field}.type: must be a, b or c")
        major, minor = (_int(rule, key, field, low=-1) for key in ("major", "minor"))
        access = _string(rule, "access", field) or "rwm"
        if not set(access) <= set("rwm"):
            raise OcitoolError(f"{field}.access: must be made of r, w and m")
        numbers = ":".join("*" if n is None or n == -1 else str(n) for n in (major, minor))
        file = "devices.allow" if allow else "devices.deny"
        writes.append(_one("devices", file, f"{kind} {numbers} {access}", field))
    return writes


def _network(network: dict[str, Any]) -> list[Write]:
    """net_cls and net_prio, which exist in cgroup v1 only."""
    field = f"{_RESOURCES}.network"
    writes = []
    class_id = _int(network, "classID", field, low=0)
    if class_id is not None:
        writes.append(_one("net_cls", "net_cls.classid", str(class_id), f"{field}.classID"))
    for index, entry in enumerate(_objects(network, "priorities", field)):
        entry_field = f"{field}.priorities[{index}]"
        name = _string(entry, "name", entry_field)
        if name is None:
            raise OcitoolError(f"{entry_field}.name: is required")
        priority = _int(entry, "priority", entry_field, low=0, required=True)
        writes.append(_one("net_prio", "net_prio.ifpriomap", f"{name} {priority}", entry_field))
    return writes


def _rdma(rdma: dict[str, Any]) -> list[Write]:
    """``rdma.max`` per device (the same file in v1 and v2)."""
    writes = []
    for device, limits in rdma.items():
        field = f"{_RESOURCES}.rdma.{device}"
        limits = _object(limits, field)
        parts = [f"{name}={value}" for key, name in (("hcaHandles", "hca_handle"), ("hcaObjects", "hca_object"))
                 if (value := _int(limits, key, field, low=0)) is not None]
        if not parts:
            raise OcitoolError(f"{field}: give hcaHandles or hcaObjects")
        writes.append(_one("rdma", "rdma.max", f"{device} {' '.join(parts)}", field))
    return writes


def _unified(unified: dict[str, Any]) -> list[Write]:
    """Raw cgroup v2 files; the controller is the file's prefix ("cgroup." files are core)."""
    writes = []
    for key, value in unified.items():
        field = f"{_RESOURCES}.unified.{key}"
        if "/" in key or "." not in key.strip("."):
            raise OcitoolError(f"{field}: not a cgroup file name")
        if not isinstance(value, str):
            raise OcitoolError(f"{field}: must be a string")
        controller = key.split(".", 1)[0]
        writes.append(_one("" if controller == "cgroup" else controller, key, value, field))
    return writes


def _sections(resources: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``resources`` itself and its object-valued sections ({} when absent), shapes checked."""
    resources = _object(resources, _RESOURCES)
    sections = {key: _object(resources.get(key), f"{_RESOURCES}.{key}")
                for key in ("memory", "cpu", "pids", "blockIO", "network", "rdma", "unified")}
    return resources, sections


def v1_plan(resources: dict[str, Any] | None, current_memory_limit: int = 0) -> list[Write]:
    """The cgroup v1 writes for ``linux.resources``, validated.

    ``current_memory_limit`` (memory.limit_in_bytes now) decides the order of the limit and
    memory+swap writes. ``unified`` is left out: only cgroup v2 can apply it.
    """
    resources, sections = _sections(resources)
    return (_memory_v1(sections["memory"], current_memory_limit) + _cpu_v1(sections["cpu"])
            + _pids(sections["pids"]) + _blkio_v1(sections["blockIO"]) + _hugetlb(resources, v2=False)
            + _network(sections["network"]) + _rdma(sections["rdma"]) + _devices(resources))


def v2_plan(resources: dict[str, Any] | None) -> list[Write]:
    """The cgroup v2 writes for ``linux.resources``, validated and converted; ``unified`` last."""
    resources, sections = _sections(resources)
    if _devices(resources):               # validated all the same
        _skip(f"{_RESOURCES}.devices", "cgroup v2 controls devices with an eBPF program, which ocitool does not load")
    if _network(sections["network"]):
        _skip(f"{_RESOURCES}.network", "cgroup v2 has no net_cls or net_prio controller")
    return (_memory_v2(sections["memory"]) + _cpu_v2(sections["cpu"]) + _pids(sections["pids"])
            + _io_v2(sections["blockIO"]) + _hugetlb(resources, v2=True) + _rdma(sections["rdma"])
            + _unified(sections["unified"]))


# ---------------------------------------------------------------- paths and mounts

def _is_page_size(size: object) -> bool:
    """``64KB``, ``2MB``, ``1GB``: a number without leading zeros, then KB, MB or GB."""
    if not isinstance(size, str) or size[-2:] not in ("KB", "MB", "GB"):
        return False
    number = size[:-2]
    return number.isascii() and number.isdigit() and not number.startswith("0")


def cgroups_path(value: Any, container_id: str, *, systemd: bool = False) -> str:
    """The container's cgroup path: "/a/b" (from each hierarchy's root) or "a/b" (from ocitool's own cgroup).

    Unset means "/ocitool/<id>". A systemd-style "slice:prefix:name" (always with ``systemd``)
    becomes the path systemd would give that unit: "system.slice:ocitool:abc" is
    "/system.slice/ocitool-abc.scope". ocitool makes that directory itself, without systemd.
    """
    field = "linux.cgroupsPath"
    if value is None or value == "":
        return f"{DEFAULT_PARENT}/{container_id}"
    if not isinstance(value, str):
        raise OcitoolError(f"{field}: must be a string")
    colon_parts = value.split(":")
    if systemd or (len(colon_parts) == 3 and colon_parts[2] and "/" not in value):  # "slice:prefix:name"
        value = _systemd_unit_path(value)
    parts = [part for part in value.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise OcitoolError(f"{field}: must not contain '..'")
    if not parts:
        raise OcitoolError(f"{field}: must not be the root cgroup")
    return ("/" if value.startswith("/") else "") + "/".join(parts)


def _systemd_unit_path(value: str) -> str:
    field = "linux.cgroupsPath"
    parts = value.split(":")
    if len(parts) != 3 or not parts[2] or "/" in value:
        raise OcitoolError(f'{field}: systemd cgroups need "slice:prefix:name", not {value!r}')
    slice_name, prefix, name = parts
    slice_name = slice_name or "system.slice"
    stem = slice_name.removesuffix(".slice")
    if stem == slice_name or (stem != "-" and "" in stem.split("-")):
        raise OcitoolError(f"{field}: {slice_name!r} is not a systemd slice name")
    words = [] if stem == "-" else stem.split("-")
    slices = ["-".join(words[:count]) + ".slice" for count in range(1, len(words) + 1)]
    unit = name if name.endswith(".slice") else f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    path = "/" + "/".join(slices + [unit])
    log.debug("cgroupsPath %s: using %s directly (ocitool does not ask systemd to manage it)", value, path)
    return path


class _Mount:
    """A cgroup mount: ``root`` is the cgroup shown at the mountpoint; a v1 hierarchy's
    controllers are among its super ``options``."""

    __slots__ = ("mountpoint", "root", "fstype", "options")

    def __init__(self, mountpoint: str, root: str, fstype: str, options: tuple[str, ...]) -> None:
        self.mountpoint, self.root, self.fstype, self.options = mountpoint, root, fstype, options


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        return file.read()


def _unescape(text: str) -> str:
    if "\\" not in text:  # the common case, without a regex substitution per mountinfo field
        return text
    import re
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), text)


def _mounts() -> list[_Mount]:
    mounts = []
    for line in _read(_MOUNTINFO).splitlines():
        fields = line.split()
        tail = fields.index("-")
        mounts.append(_Mount(_unescape(fields[4]), _unescape(fields[3]), fields[tail + 1],
                             tuple(fields[tail + 3].split(","))))
    return mounts


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup per hierarchy, keyed by sorted controller list ("" for cgroup v2)."""
    own = {}
    for line in _read(_SELF_CGROUP).splitlines():
        _, controllers, path = line.split(":", 2)
        own[",".join(sorted(controllers.split(",")))] = path
    return own


def _directory(mount: _Mount, own: str, path: str) -> str:
    """Where ``path`` is in ``mount``: absolute from the mount's top, relative from our own cgroup."""
    if path.startswith("/"):
        return posixpath.join(mount.mountpoint, path[1:])
    inside = posixpath.relpath(own, mount.root)
    if inside == ".." or inside.startswith("../"):
        inside = "."
    return posixpath.normpath(posixpath.join(mount.mountpoint, inside, path))


def _v1_hierarchies(mounts: list[_Mount]) -> dict[str, _Mount]:
    """The mounted v1 hierarchies by key: their controllers ("cpu,cpuacct") or name ("name=systemd")."""
    known = {line.split()[0] for line in _read(_PROC_CGROUPS).splitlines() if line and not line.startswith("#")}
    hierarchies: dict[str, _Mount] = {}
    for mount in mounts:
        controllers = sorted(o for o in mount.options if o in known or o.startswith("name="))
        if mount.fstype == "cgroup" and controllers:
            hierarchies.setdefault(",".join(controllers), mount)
    return hierarchies


def cgroup_manager(container_id: str, linux: dict[str, Any] | None, *, rootless: bool = False,
                   systemd: bool = False) -> CgroupManager:
    """The manager for the container's cgroup (nothing is created until ``create()``).

    cgroup v2 when /sys/fs/cgroup is a cgroup2 mount, else the v1 (or hybrid) hierarchies.
    """
    path = cgroups_path((linux or {}).get("cgroupsPath"), container_id, systemd=systemd)
    mounts = _mounts()
    own = _own_cgroups()
    top = [mount for mount in mounts if mount.mountpoint == CGROUP_ROOT]
    if top and top[-1].fstype == "cgroup2":
        return V2Manager(path, CGROUP_ROOT, _directory(top[-1], own.get("", "/"), path), rootless=rootless)
    dirs = {key: _directory(mount, own.get(key, "/"), path) for key, mount in _v1_hierarchies(mounts).items()}
    cgroup2 = next((mount for mount in mounts if mount.fstype == "cgroup2"), None)
    unified = None
    if cgroup2 is not None:
        unified = V2Manager(path, cgroup2.mountpoint, _directory(cgroup2, own.get("", "/"), path), rootless=rootless)
    if not dirs and not rootless:
        raise OcitoolError(f"no cgroup hierarchy is mounted under {CGROUP_ROOT}")
    return V1Manager(path, dirs, unified, rootless=rootless)


def manager_from_state(state: dict[str, Any]) -> CgroupManager:
    """The manager a ``to_state()`` dict describes ({} gives one with no cgroup)."""
    try:
        if state.get("version") == 2:
            return _v2_from_state(state)
        unified = state.get("unified")
        return V1Manager(state.get("path", ""), dict(state.get("dirs", {})),
                         _v2_from_state(unified) if unified else None, rootless=state.get("rootless", False))
    except (KeyError, TypeError, AttributeError, ValueError):
        raise OcitoolError("state.json: the cgroup record is damaged") from None


def _v2_from_state(state: dict[str, Any]) -> V2Manager:
    return V2Manager(state["path"], state["root"], state["dir"], rootless=state["rootless"])


# ---------------------------------------------------------------- file operations

def _write(path: str, value: str, field: str) -> None:
    """Write ``value`` in one write(2), as cgroup files want; a refusal names field, value and file."""
    try:
        write_in_one_call(path, value)
    except OSError as error:
        raise OcitoolError(f"{field}: the kernel refused {value!r} in {path}: {error.strerror}") from None


def _keyed(path: str) -> dict[str, str]:
    """A "key value" per line file (memory.events, cgroup.events, memory.oom_control); {} if absent."""
    try:
        text = _read(path)
    except OSError:
        return {}
    return dict(line.split(None, 1) for line in text.splitlines() if " " in line)


def _execute(plan: list[Write], directory_of: Callable[[str], str | None], *, skip_missing: bool = False) -> None:
    """Make the planned writes, each in the directory of its controller's hierarchy."""
    for write in plan:
        directory = directory_of(write.controller)
        if directory is None:
            if skip_missing:
                _skip(write.field, f"no writable {write.controller} cgroup (rootless)")
                continue
            raise OcitoolError(f"{write.field}: the {write.controller} cgroup controller is not mounted")
        choice = next(((file, value) for file, value in write.choices
                       if os.path.exists(posixpath.join(directory, file))), None)
        if choice is None:
            if not write.optional:
                files = " or ".join(file for file, _ in write.choices)
                raise OcitoolError(f"{write.field}: {directory} has no {files} (not supported by this kernel)")
            continue
        _write(posixpath.join(directory, choice[0]), choice[1], write.field)


def _make(directory: str, rootless: bool) -> bool:
    """mkdir -p ``directory``; False when a rootless container may not (it then runs without it)."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        if rootless and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            log.debug("rootless: no cgroup %s (%s)", directory, error.strerror)
            return False
        raise OcitoolError(f"cannot create cgroup {directory}: {error.strerror}") from None
    return True


def _inherit_cpuset(directory: str) -> None:
    """New v1 cpusets start with no CPUs and memory nodes, so no task could join: copy the parent's."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        empty = []
        current = directory
        while not _read(posixpath.join(current, name)).strip():
            empty.append(current)
            current = posixpath.dirname(current)
        for child in reversed(empty):
            value = _read(posixpath.join(posixpath.dirname(child), name)).strip()
            _write(posixpath.join(child, name), value, f"cgroup {child}")


def _join(directory: str, pid: int) -> None:
    for attempt in range(5):
        try:
            write_in_one_call(posixpath.join(directory, "cgroup.procs"), str(pid))
            return
        except OSError as error:
            if error.errno == errno.EINVAL and attempt < 4:    # a task still being forked: retry
                time.sleep(0.03)
                continue
            raise OcitoolError(f"cannot move pid {pid} into cgroup {directory}: {error.strerror}") from None


def _procs_under(directory: str) -> set[int]:
    pids: set[int] = set()
    for current, _, _ in os.walk(directory):
        try:
            pids.update(int(pid) for pid in _read(posixpath.join(current, "cgroup.procs")).split())
        except OSError:                   # removed meanwhile, or a threaded cgroup
            continue
    return pids


def _remove_tree(directory: str, deadline: float) -> None:
    """rmdir ``directory`` and its sub-cgroups, deepest first, waiting out a busy (still emptying) cgroup."""
    for current in reversed([current for current, _, _ in os.walk(directory)]):
        while True:
            try:
                os.rmdir(current)
                break
            except FileNotFoundError:
                break
            except OSError as error:
                if error.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise OcitoolError(f"cannot remove cgroup {current}: {error.strerror}") from None
                time.sleep(_POLL)


def _wait(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + _TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL)
    return True


# ---------------------------------------------------------------- managers

class CgroupManager(abc.ABC):
    """One container's cgroup, in every hierarchy it lives in."""

    path: str
    rootless: bool
    dirs: dict[str, str]                  # hierarchy key -> the container's directory in it

    def _all_dirs(self) -> list[str]:
        return list(self.dirs.values())

    def create(self) -> None:
        """Make the cgroup's directories (idempotent); rootless, only where that is allowed."""
        for key, directory in list(self.dirs.items()):
            if not _make(directory, self.rootless):
                del self.dirs[key]

    @abc.abstractmethod
    def apply(self, resources: dict[str, Any] | None) -> None:
        """Set the limits of ``linux.resources`` (None: nothing to set)."""

    def add(self, pid: int) -> None:
        """Move ``pid`` into the cgroup in every hierarchy."""
        for directory in self._all_dirs():
            _join(directory, pid)

    def v1_dirs(self) -> list[str]:
        """The container's directories in cgroup v1 hierarchies."""
        return []

    def v2_dir(self) -> str | None:
        """The container's directory in the cgroup2 hierarchy, if it has one."""
        return self.dirs.get("")

    def pids(self) -> list[int]:
        """Every process in the cgroup and its sub-cgroups."""
        found: set[int] = set()
        for directory in self._all_dirs():
            found |= _procs_under(directory)
        return sorted(found)

    def exists(self) -> bool:
        """Whether any of the cgroup's directories is there."""
        return any(os.path.isdir(directory) for directory in self._all_dirs())

    def kill_all(self, sig: int) -> None:
        """Send ``sig`` to every process in the cgroup."""
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if sig == _signal.SIGKILL and self.frozen():
            self.thaw()                   # frozen v1 tasks only die once thawed

    @abc.abstractmethod
    def freeze(self) -> None:
        """Stop every process in the cgroup (``pause``); returns once they are frozen."""

    @abc.abstractmethod
    def thaw(self) -> None:
        """Let frozen processes run again (``resume``)."""

    @abc.abstractmethod
    def frozen(self) -> bool:
        """Whether the cgroup is frozen."""

    def destroy(self) -> None:
        """SIGKILL what is left, wait (at most ~5 s) until it is gone, and remove the cgroup everywhere."""
        if self._remove_if_empty():
            return
        deadline = time.monotonic() + _TIMEOUT
        while pids := self.pids():
            if time.monotonic() > deadline:
                raise OcitoolError(f"cgroup {self.path}: processes {pids} survived SIGKILL for {_TIMEOUT:g} s")
            self.kill_all(_signal.SIGKILL)
            time.sleep(_POLL)
        for directory in self._all_dirs():
            _remove_tree(directory, deadline)

    def _remove_if_empty(self) -> bool:
        """The common case of :meth:`destroy`, with nothing left to kill: rmdir, which the kernel
        refuses (EBUSY) while a cgroup holds processes or sub-cgroups. False if any was refused."""
        for directory in self._all_dirs():
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                continue
            except OSError:
                return False
        return True

    @abc.abstractmethod
    def oom_killed(self) -> bool:
        """Whether the memory controller has killed a process of the cgroup for lack of memory."""

    @abc.abstractmethod
    def to_state(self) -> dict[str, Any]:
        """A plain dict for state.json; :func:`manager_from_state` turns it back into the manager."""


class V2Manager(CgroupManager):
    """A cgroup in the cgroup v2 hierarchy mounted at ``root``."""

    def __init__(self, path: str, root: str, directory: str | None, *, rootless: bool = False) -> None:
        self.path = path
        self.root = root
        self.rootless = rootless
        self.dirs = {"": directory} if directory else {}

    def apply(self, resources: dict[str, Any] | None) -> None:
        """Enable the controllers the writes need in every ancestor, then write the converted values."""
        plan = v2_plan(resources)
        if not plan:
            return
        if self.rootless and not self.exists():
            _skip(_RESOURCES, "rootless, without a delegated cgroup")
            return
        needed: dict[str, str] = {}
        for write in plan:
            if write.controller:
                needed.setdefault(write.controller, write.field)
        self._enable(needed)
        _execute(plan, lambda _: self.dirs[""])

    def _enable(self, needed: dict[str, str]) -> None:
        """Enable the ``needed`` controllers (-> a field wanting it) in each ancestor's subtree_control."""
        relative = posixpath.relpath(posixpath.dirname(self.dirs[""]), self.root)
        parts = [] if relative == "." else relative.split("/")
        for depth in range(len(parts) + 1):
            parent = posixpath.join(self.root, *parts[:depth])
            available = _read(posixpath.join(parent, "cgroup.controllers")).split()
            for controller, field in needed.items():
                if controller not in available:
                    raise OcitoolError(f"{field}: the cgroup v2 controller {controller!r} is not available in "
                                       f"{parent} (it has: {' '.join(available) or 'none'})")
            control = posixpath.join(parent, "cgroup.subtree_control")
            missing = [controller for controller in needed if controller not in _read(control).split()]
            if missing:
                self._enable_in(control, missing, needed[missing[0]])

    @staticmethod
    def _enable_in(control: str, controllers: list[str], field: str) -> None:
        value = " ".join(f"+{controller}" for controller in controllers)
        try:
            write_in_one_call(control, value)
        except OSError as error:
            hint = (" (cgroup v2 allows no processes in a cgroup that gives controllers to its children)"
                    if error.errno == errno.EBUSY else "")
            raise OcitoolError(f"{field}: cannot enable {' '.join(controllers)} in {control}: "
                               f"{error.strerror}{hint}") from None

    def kill_all(self, sig: int) -> None:
        """Send ``sig`` to every process; SIGKILL through cgroup.kill, which no fork can escape."""
        directory = self.dirs.get("")
        if sig == _signal.SIGKILL and directory and os.path.exists(posixpath.join(directory, "cgroup.kill")):
            _write(posixpath.join(directory, "cgroup.kill"), "1", f"cgroup {self.path}")
        else:
            super().kill_all(sig)

    def freeze(self) -> None:
        self._set_frozen(True)

    def thaw(self) -> None:
        self._set_frozen(False)

    def _set_frozen(self, frozen: bool) -> None:
        directory = self.dirs.get("")
        if directory is None:
            raise OcitoolError(f"cgroup {self.path}: no cgroup to {'freeze' if frozen else 'thaw'} (rootless)")
        _write(posixpath.join(directory, "cgroup.freeze"), str(int(frozen)), f"cgroup {self.path}")
        if not _wait(lambda: self.frozen() == frozen):
            raise OcitoolError(f"cgroup {self.path}: not {'frozen' if frozen else 'thawed'} after {_TIMEOUT:g} s")

    def frozen(self) -> bool:
        return bool(self.dirs) and _keyed(posixpath.join(self.dirs[""], "cgroup.events")).get("frozen") == "1"

    def oom_killed(self) -> bool:
        events = _keyed(posixpath.join(self.dirs[""], "memory.events")) if self.dirs else {}
        return int(events.get("oom_kill", "0")) > 0

    def to_state(self) -> dict[str, Any]:
        return {"version": 2, "path": self.path, "root": self.root, "dir": self.dirs.get(""),
                "rootless": self.rootless}


class V1Manager(CgroupManager):
    """A cgroup in every cgroup v1 hierarchy, plus the hybrid cgroup2 mount when there is one."""

    def __init__(self, path: str, dirs: dict[str, str], unified: V2Manager | None, *,
                 rootless: bool = False) -> None:
        self.path = path
        self.dirs = dirs
        self.unified = unified
        self.rootless = rootless

    def _all_dirs(self) -> list[str]:
        return super()._all_dirs() + (self.unified._all_dirs() if self.unified else [])

    def v1_dirs(self) -> list[str]:
        return list(self.dirs.values())

    def v2_dir(self) -> str | None:
        return self.unified.v2_dir() if self.unified else None

    def _dir_of(self, controller: str) -> str | None:
        return next((d for key, d in self.dirs.items() if controller in key.split(",")), None)

    def create(self) -> None:
        super().create()
        cpuset = self._dir_of("cpuset")
        if cpuset:
            _inherit_cpuset(cpuset)
        if self.unified:
            self.unified.create()

    def apply(self, resources: dict[str, Any] | None) -> None:
        """Write v1 files; hand ``unified`` (and hugepageLimits if hugetlb is a v2 controller) to cgroup2."""
        resources = _object(resources, _RESOURCES)
        delegated = {key: resources[key] for key in ("unified", "hugepageLimits")
                     if resources.get(key) and (key == "unified" or self._dir_of("hugetlb") is None)}
        if delegated and self.unified is None:
            key = next(iter(delegated))
            need = "cgroup v2" if key == "unified" else "the hugetlb controller"
            raise OcitoolError(f"{_RESOURCES}.{key}: needs {need}, which is not mounted")
        own = {key: value for key, value in resources.items() if key not in delegated}
        _execute(v1_plan(own, self._memory_limit()), self._dir_of, skip_missing=self.rootless)
        if delegated and self.unified:
            self.unified.apply(delegated)

    def _memory_limit(self) -> int:
        memory = self._dir_of("memory")
        try:
            return int(_read(posixpath.join(memory, "memory.limit_in_bytes"))) if memory else 0
        except FileNotFoundError:
            return 0

    def freeze(self) -> None:
        self._set_state("FROZEN")

    def thaw(self) -> None:
        self._set_state("THAWED")

    def _set_state(self, state: str) -> None:
        directory = self._dir_of("freezer")
        if directory is None:
            raise OcitoolError(f"cgroup {self.path}: the freezer cgroup controller is not mounted")
        control = posixpath.join(directory, "freezer.state")
        _write(control, state, f"cgroup {self.path}")
        if not _wait(lambda: _read(control).strip() == state):
            if state == "FROZEN":
                _write(control, "THAWED", f"cgroup {self.path}")
            raise OcitoolError(f"cgroup {self.path}: still not {state.lower()} after {_TIMEOUT:g} s")

    def frozen(self) -> bool:
        directory = self._dir_of("freezer")
        try:
            return directory is not None and _read(posixpath.join(directory, "freezer.state")).strip() == "FROZEN"
        except FileNotFoundError:
            return False

    def oom_killed(self) -> bool:
        memory = self._dir_of("memory")
        control = _keyed(posixpath.join(memory, "memory.oom_control")) if memory else {}
        return int(control.get("oom_kill", "0")) > 0 or control.get("under_oom") == "1"

    def to_state(self) -> dict[str, Any]:
        return {"version": 1, "path": self.path, "dirs": dict(self.dirs), "rootless": self.rootless,
                "unified": self.unified.to_state() if self.unified else None}


# ---------------------------------------------------------------- entering

class Entry:
    """Brings a new child process into a container's cgroup without moving it from outside.

    Writing another process's pid into ``cgroup.procs`` takes a global lock whose first writer
    waits out an RCU grace period, ~10 ms on every create and exec. Two ways in skip that lock:
    a child cloned straight into its cgroup v2 directory (clone3 with CLONE_INTO_CGROUP), and a
    single-threaded process writing "0" (itself) into a v1 hierarchy's ``tasks`` file. Where
    clone3 is unavailable (kernels before 5.7, a parent with threads), :meth:`finish` moves the
    child into the v2 cgroup the old way.

    ``pid = entry.fork()``; the child calls :meth:`join` before anything else, the parent
    :meth:`finish` with the pid.
    """

    __slots__ = ("_v2_dir", "_v2_fd", "_tasks", "born_in_v2")

    def __init__(self, manager: CgroupManager) -> None:
        self._v2_dir = manager.v2_dir()
        self._v2_fd: int | None = None
        self._tasks: list[tuple[str, int]] = []  # (v1 directory, fd of its tasks file)
        self.born_in_v2 = False                  # set by fork()
        try:
            self._tasks = [(directory, _open_tasks(directory)) for directory in manager.v1_dirs()]
            if self._v2_dir and _single_threaded():
                self._v2_fd = os.open(self._v2_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except BaseException:
            self.close()
            raise

    def fork(self) -> int:
        """Fork, into the v2 cgroup where the kernel allows it; 0 in the child."""
        if self._v2_fd is not None:
            try:
                pid = syscalls.fork_into_cgroup(self._v2_fd)
                self.born_in_v2 = True
                return pid
            except OSError as error:
                log.debug("clone3 into %s refused (%s): moving the child instead", self._v2_dir, error.strerror)
        return os.fork()

    def join(self) -> None:
        """In the child: move itself into every v1 hierarchy's cgroup."""
        try:
            for directory, fd in self._tasks:
                try:
                    os.write(fd, b"0")
                except OSError as error:
                    raise OcitoolError(f"cannot join cgroup {directory}: {error.strerror}") from None
        finally:
            self.close()

    def finish(self, pid: int) -> None:
        """In the parent: move the child into the v2 cgroup unless it was born there."""
        self.close()
        if self._v2_dir and not self.born_in_v2:
            _join(self._v2_dir, pid)

    def close(self) -> None:
        """Close the files opened for entering (the child needs them only until :meth:`join`)."""
        for _, fd in self._tasks:
            os.close(fd)
        if self._v2_fd is not None:
            os.close(self._v2_fd)
        self._tasks, self._v2_fd = [], None


def _open_tasks(directory: str) -> int:
    path = posixpath.join(directory, "tasks")
    try:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as error:
        raise OcitoolError(f"cannot join cgroup {directory}: {error.strerror}") from None


def _single_threaded() -> bool:
    return len(os.listdir("/proc/self/task")) == 1
