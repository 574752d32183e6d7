"""The container process's last steps: privileges, limits, and execve.

Order matters and follows runc: rlimits and oom score while we still hold
CAP_SYS_RESOURCE; seccomp before dropping CAP_SYS_ADMIN when noNewPrivileges is off (the
kernel demands one of the two); the bounding set drop while CAP_SETPCAP is held; the uid
change with PR_SET_KEEPCAPS so capset can still grant what the config asks; fds other
than stdio and ``--preserve-fds`` marked close-on-exec; the process made non-dumpable
until execve so nothing in the container can reach the runtime through /proc.
"""

from __future__ import annotations

import os
import resource

from ocitool.errors import OcitoolError
from ocitool.fsutil import write_in_one_call
from ocitool.runtime import capabilities, seccomp, syscalls

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from typing import Any, NoReturn

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ExecutableError(OcitoolError):
    """The command is missing (exit status 127) or cannot be executed (126)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def make_undumpable() -> None:
    """Hide this process's /proc entries (exe, fds, memory) from container processes."""
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)


def find_executable(args0: str, env: list[str], cwd: str) -> str:
    """Where ``args0`` is, looked up like execvp in the container's PATH (or relative to cwd)."""
    if "/" in args0:
        return _check_executable(os.path.join(cwd, args0), args0)
    search = dict(item.split("=", 1) for item in env).get("PATH", DEFAULT_PATH)
    denied = None
    for directory in search.split(":"):
        candidate = os.path.join(directory or ".", args0)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            denied = candidate
    if denied:
        raise ExecutableError(f'exec: "{args0}": permission denied', 126)
    raise ExecutableError(f'exec: "{args0}": executable file not found in $PATH', 127)


def _check_executable(path: str, shown: str) -> str:
    if not os.path.exists(path):
        raise ExecutableError(f'exec: "{shown}": no such file or directory', 127)
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise ExecutableError(f'exec: "{shown}": permission denied', 126)
    return path


def set_rlimits(rlimits: list[dict[str, Any]]) -> None:
    """Apply ``process.rlimits``; an unknown name or a refused value names the limit."""
    for index, rlimit in enumerate(rlimits):
        name = rlimit["type"]
        number = getattr(resource, name, None)
        if not name.startswith("RLIMIT_") or number is None:
            raise OcitoolError(f"process.rlimits[{index}].type: unknown resource {name}")
        try:
            resource.setrlimit(number, (rlimit["soft"], rlimit["hard"]))
        except (ValueError, OSError) as exc:
            raise OcitoolError(f"process.rlimits[{index}]: cannot set {name} to "
                               f"{rlimit['soft']}/{rlimit['hard']}: {exc}") from None


def set_oom_score_adj(value: int | None) -> None:
    if value is not None:
        write_in_one_call("/proc/self/oom_score_adj", str(value))


class PreparedProcess:
    """A process config parsed, and its seccomp filter compiled, by the runtime before the
    container exists (while the host's files, libseccomp and /proc, are visible)."""

    __slots__ = ("config", "capabilities", "seccomp", "labels")

    def __init__(self, config: dict[str, Any], capabilities: capabilities.CapabilitySets,
                 seccomp: seccomp.CompiledFilter | None, labels: list[tuple[str, str]]) -> None:
        self.config = config
        self.capabilities = capabilities
        self.seccomp = seccomp
        self.labels = labels  # (/proc/self/attr file, value) for the LSMs this host runs


def prepare_process(config: dict[str, Any], seccomp_config: dict[str, Any] | None,
                    seccomp_cache: str | None = None) -> PreparedProcess:
    """Validate capabilities and seccomp (errors name the field) and compile the seccomp filter,
    reusing a program compiled before from the ``seccomp_cache`` directory."""
    seccomp_filter = seccomp.compile_filter(seccomp_config, seccomp_cache) if seccomp_config is not None else None
    return PreparedProcess(config, capabilities.parse_capabilities(config.get("capabilities")), seccomp_filter,
                           _security_labels(config))


def _security_labels(config: dict[str, Any]) -> list[tuple[str, str]]:
    """AppArmor profile and SELinux label to apply at execve, where the host has that LSM
    (elsewhere they are ignored, as runc does)."""
    labels = []
    if config.get("apparmorProfile") and _apparmor_enabled():
        attr = "apparmor/exec" if os.path.exists("/proc/self/attr/apparmor/exec") else "exec"
        labels.append((attr, f"exec {config['apparmorProfile']}"))
    if config.get("selinuxLabel") and os.path.exists("/sys/fs/selinux/enforce"):
        labels.append(("exec", config["selinuxLabel"]))
    return labels


def _apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled", encoding="utf-8") as file:
            return file.read().startswith("Y")
    except OSError:
        return False


def _apply_labels(labels: list[tuple[str, str]]) -> None:
    for attr, value in labels:
        try:
            write_in_one_call(f"/proc/self/attr/{attr}", value)
        except OSError as exc:
            raise OcitoolError(f"cannot apply security label {value!r}: {exc.strerror}") from None


def become_process(prepared: PreparedProcess, preserve_fds: int, in_user_namespace: bool) -> None:
    """Drop to the configured user, capabilities and seccomp filter, in runc's order."""
    config, caps, seccomp_filter = prepared.config, prepared.capabilities, prepared.seccomp
    no_new_privs = config.get("noNewPrivileges", False)
    if seccomp_filter and not no_new_privs:
        seccomp.load_filter(seccomp_filter)
    _close_extra_fds(preserve_fds)
    capabilities.drop_bounding(caps)
    capabilities.keep_caps_for_setuid(True)
    _set_user(config.get("user") or {}, in_user_namespace)
    capabilities.keep_caps_for_setuid(False)
    capabilities.apply_capabilities(caps)
    os.chdir(config["cwd"])
    _apply_labels(prepared.labels)
    if no_new_privs:
        syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
        if seccomp_filter:
            seccomp.load_filter(seccomp_filter)


def _set_user(user: dict[str, Any], in_user_namespace: bool) -> None:
    groups = user.get("additionalGids") or []
    try:
        if groups or not in_user_namespace:
            os.setgroups(groups)
    except PermissionError:
        raise OcitoolError("process.user.additionalGids: setgroups is not allowed in this user namespace "
                           "(rootless with a single mapped id)") from None
    try:
        os.setresgid(user.get("gid", 0), user.get("gid", 0), user.get("gid", 0))
        os.setresuid(user.get("uid", 0), user.get("uid", 0), user.get("uid", 0))
    except OSError as exc:
        raise OcitoolError(f"process.user: cannot switch to uid {user.get('uid', 0)} gid {user.get('gid', 0)} "
                           f"({exc.strerror}); is it mapped in the user namespace?") from None
    os.umask(user.get("umask", 0o022))


def _close_extra_fds(preserve_fds: int) -> None:
    """Only stdio and the preserved fds may cross execve (the CVE-2024-21626 class)."""
    for fd in range(3, 3 + preserve_fds):
        os.set_inheritable(fd, True)
    syscalls.close_range(3 + preserve_fds, flags=syscalls.CLOSE_RANGE_CLOEXEC)


def exec_process(path: str, args: list[str], env: list[str]) -> NoReturn:
    """Replace this process with the container's command."""
    environment = dict(item.split("=", 1) for item in env)
    try:
        os.execve(path, args, environment)
    except OSError as exc:
        code = 127 if exc.errno == 2 else 126
        raise ExecutableError(f'exec: "{args[0]}": {exc.strerror}', code) from None
