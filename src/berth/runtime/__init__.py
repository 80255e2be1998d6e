"""The OCI runtime as a library: namespaces, cgroups, root filesystem, capabilities, seccomp.

Rules: sync, stdlib + ctypes only, and quick to import — it sits on every container's start
path. Kernel calls go through ``syscalls``; cgroup code takes its root as an argument; state is
written atomically under the runtime's root directory.
"""
