"""Runtime stage: runs a runtime-spec bundle as a Linux container (runc's job).

Modules, each one job:
- ``syscalls``: thin ctypes wrappers for what ``os`` lacks (unshare, setns, mount, umount2,
  pivot_root, sethostname, setdomainname, prctl, capget/capset, close_range, ...).
- ``spec``: load and validate a bundle's config.json into plain dicts, naming the bad field.
- ``namespaces``: creating/joining namespaces and writing uid/gid mappings.
- ``mounts``: preparing the rootfs inside the new mount namespace (mounts, /dev, devices,
  pivot_root, masked and read-only paths), never following symlinks out of the rootfs.
- ``cgroups``: v1 and v2 managers (create, limits, add pid, list pids, kill, remove).
- ``capabilities``, ``seccomp``: the process's privileges.
- ``process``: the last steps before execve (rlimits, user, capabilities, seccomp, exec).
- ``state``: the state directory and state.json.
- ``container``: the lifecycle (create, start, run, kill, delete, exec, ps).
- ``terminal``, ``hooks``: ptys and console sockets; OCI hooks.
"""
