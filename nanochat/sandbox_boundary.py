"""The kernel boundary around sandboxed code on Linux: namespaces, a private root, no privileges.

`nanochat.sandbox` starts a fresh `python -I -S` child for every run; when the kernel allows it, that child calls
`enter()` before it touches the code it was given. `enter()` splits the child into three processes:

    supervisor   outside the new PID namespace; waits, then exits exactly as the program did
      init       PID 1 of the new PID namespace; builds the private root, drops privileges, reaps
        program  PID 2; filters its system calls, then `enter()` returns here and the caller applies its
                 limits and runs the code

and isolates them from everything else with the kernel, so that code which undoes the Python-level guards
(ctypes, C extensions, re-imports) still cannot get out:

- PID namespace with its own /proc: no other process can be seen, signalled or traced, the trainer least of
  all. When init exits, the kernel kills everything left in the namespace (a `setsid` + fork included), and
  init dies with the supervisor (parent-death signal), which the caller kills at the timeout.
- Mount namespace with a new root on a tmpfs: only the interpreter's own files and the system libraries
  (read-only), a few device files, a private read-only /proc, and the work directory, a fresh size-limited
  tmpfs at the same path. Nothing else of the host's filesystem exists, so no other file can be read, written,
  created or removed, and no Unix socket of the host can be reached.
- Network namespace: no interface but a downed loopback; no network at all, 127.0.0.1 included.
- IPC and UTS namespaces: no shared memory or message queues of the host; a new session keyring, so none of
  the caller's kernel keys.
- A seccomp filter (x86_64 and aarch64) refuses the system calls that open the kernel up most: namespaces and
  mounts, kernel keys, eBPF, perf, userfaultfd, ptrace, io_uring and the like.
- No privileges: when started as real root the program runs as `nobody` (65534) with no supplementary groups;
  otherwise it keeps the caller's uid inside a user namespace with every capability dropped. Either way
  `no_new_privs` is set, so no set-uid program or file capability gives any back.

Every step calls the kernel through `ctypes` and the C library (Python 3.11 has no `os.unshare`; no tool such
as `unshare(1)` or `bwrap` is needed); a step the kernel refuses raises `BoundaryError` naming the step and
the reason.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
_NAMESPACES = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 32, 4096, 8192, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

NOBODY = 65534  # the kernel's overflow uid/gid: owns nothing on the host
WORK_DISK_BYTES = 64 * 1024 * 1024  # the work directory's tmpfs: all files together
WORK_DISK_FILES = 4096  # ...and at most this many files and directories
# System directories the interpreter and its C extensions load from; each is bound read-only if it exists.
_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                 "/etc/ld.so.cache", "/etc/localtime")
_DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
# keyctl(2) has no libc wrapper and a number per architecture; unknown ones keep the caller's session keyring.
_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "riscv64": 219}.get(os.uname().machine)
_KEYCTL_JOIN_SESSION_KEYRING = 1
_SYS_MOUNT_SETATTR = 442  # the same number on every architecture (Linux 5.12+); glibc wraps it from 2.36 only
_AT_FDCWD, _AT_RECURSIVE, _MOUNT_ATTR_RDONLY = -100, 0x8000, 1

_libc = ctypes.CDLL(None, use_errno=True)


class BoundaryError(OSError):
    """The kernel refused a step of building the boundary (the message names the step and the reason)."""


def _call(what: str, result: int) -> int:
    if result == -1:
        errno = ctypes.get_errno()
        raise BoundaryError(errno, f"{what}: {os.strerror(errno)}")
    return result


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda s: None if s is None else os.fsencode(s)  # noqa: E731 - four arguments, one rule
    _call(f"mount {target}", _libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags),
                                         encode(data)))


def enter(workdir: str, program: str, source: bytes, site_packages: list[str]) -> None:
    """Put this process behind the boundary. Returns only in the program process; the others exit here.

    `workdir` becomes a fresh tmpfs (the only writable place) and the current directory; `program` is the
    path the code is shown under (tracebacks read it), holding `source`; `site_packages` stay visible too.
    """
    if not sys.platform.startswith("linux"):
        raise BoundaryError(0, f"{sys.platform} has no Linux namespaces")
    uid, gid = os.getuid(), os.getgid()
    try:
        if not (os.geteuid() == 0 and _maps_nobody()):
            raise BoundaryError(1, "not root")
        _unshare(_NAMESPACES)  # root may create them directly, and then becomes nobody
        become_nobody = True
    except BoundaryError:
        _unshare(CLONE_NEWUSER | _NAMESPACES)  # the unprivileged way: a user namespace owns the others
        become_nobody = False
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    status_read, status_write = os.pipe()
    init = os.fork()  # the first child after unshare(CLONE_NEWPID) is PID 1 of the new namespace
    if init == 0:
        os.close(status_read)
        _init(status_write, workdir, program, source, site_packages, become_nobody)
        return
    os.close(status_write)
    _supervise(init, status_read)


def _maps_nobody() -> bool:
    """Whether this user namespace has uid and gid 65534 (root in a container's user namespace may not)."""
    for ids in ("/proc/self/uid_map", "/proc/self/gid_map"):
        with open(ids) as f:
            ranges = [tuple(map(int, line.split())) for line in f if line.strip()]
        if not any(inside <= NOBODY < inside + count for inside, _, count in ranges):
            return False
    return True


def _unshare(flags: int) -> None:
    if hasattr(os, "unshare"):  # Python 3.12+
        try:
            os.unshare(flags)
        except OSError as e:
            raise BoundaryError(e.errno, f"unshare: {e.strerror}") from None
        return
    _call("unshare", _libc.unshare(ctypes.c_int(flags)))


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise BoundaryError(e.errno, f"writing {path}: {e.strerror}") from None


def _supervise(init: int, status_read: int) -> None:
    """Wait for init and leave the way the program did: its exit code, or killed by its signal."""
    _, init_status = os.waitpid(init, 0)
    report = os.read(status_read, 64)
    if not report:  # init failed before the program ended: it has said why on stderr
        os._exit(os.waitstatus_to_exitcode(init_status) or 1)
    code = os.waitstatus_to_exitcode(int(report))
    if code >= 0:
        os._exit(code)
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
    os._exit(128 - code)  # not reached for a deadly signal


def _init(status_write: int, workdir: str, program: str, source: bytes, site_packages: list[str],
          become_nobody: bool) -> None:
    try:
        # The caller kills the supervisor at the timeout; this takes init, and with it the namespace, along.
        _call("prctl(PR_SET_PDEATHSIG)", _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0))
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # no KeyboardInterrupt handler the program could trigger
        _limit_shared_memory()
        _leave_session_keyring()
        _build_root(workdir, program, source, site_packages, NOBODY if become_nobody else None)
        _drop_privileges(become_nobody)
        # Privileges changed, which cleared the parent-death signal: set it again. Not dumpable: the program,
        # running as the same user, cannot trace init to clear it.
        _call("prctl(PR_SET_PDEATHSIG)", _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0))
        _call("prctl(PR_SET_DUMPABLE)", _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0))
        program_pid = os.fork()
    except BaseException as e:
        print(f"sandbox: could not build the kernel boundary: {e}", file=sys.stderr, flush=True)
        os._exit(125)
    if program_pid == 0:
        os.close(status_write)
        _call("prctl(PR_SET_DUMPABLE)", _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0))  # its own /proc/self works
        _filter_system_calls()
        return
    # PID 1: reap every child; when the program ends, report how and leave. The kernel then kills the rest.
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == program_pid:
            os.write(status_write, str(status).encode())
            os._exit(0)


def _leave_session_keyring() -> None:
    """Join a new, empty session keyring. The caller's would stay readable: keys in a process's own session
    keyring count as possessed, whoever the process runs as. (Where keyctl is refused, it is refused to the
    program as well.)"""
    if _SYS_KEYCTL is not None:
        _libc.syscall(ctypes.c_long(_SYS_KEYCTL), _KEYCTL_JOIN_SESSION_KEYRING, None)


# System calls no sandboxed program needs, each a wide door into the kernel: namespaces and mounts (a nested
# user namespace gives capabilities back inside it), kernel keys, eBPF, perf, userfaultfd, tracing, other
# processes' memory, kernel modules and kexec, file handles, io_uring. By number, per architecture.
_DENIED_SYSTEM_CALLS = {
    "x86_64": (272, 308, 165, 166, 155, 161, 250, 248, 249, 321, 298, 323, 101, 310, 311, 246, 320, 175, 313,
               176, 304, 303),
    "aarch64": (97, 268, 40, 39, 41, 51, 219, 217, 218, 280, 241, 282, 117, 270, 271, 104, 294, 105, 273, 106,
                265, 264),
}
_COMMON_DENIED = (425, 426, 427, 428, 429, 430, 431, 432, 433, 442)  # io_uring, new mount API: same everywhere
_CLONE = {"x86_64": 56, "aarch64": 220}
_CLONE3 = 435
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_X32_SYSCALL_BIT = 0x40000000  # x86_64's x32 numbering: another way to name the same calls
_NAMESPACE_FLAGS = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | 0x02000000
PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000


class _Instruction(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Instruction))]


def _filter_system_calls() -> None:
    """A seccomp filter that fails the calls above with EPERM (and clone3 with ENOSYS, so that the C library
    falls back to clone, whose flags a filter can read). On other architectures there is no filter."""
    machine = os.uname().machine
    if machine not in _AUDIT_ARCH:
        return
    load, jump_eq, jump_ge, jump_set, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, JMP|JEQ|K, ..., RET|K
    deny = (ret, 0, 0, _RET_ERRNO | 1)  # EPERM
    denied = _DENIED_SYSTEM_CALLS[machine] + _COMMON_DENIED
    # Offsets in struct seccomp_data: nr 0, arch 4, args[0] 16 (low half, little-endian).
    code = [(load, 0, 0, 4), (jump_eq, 1, 0, _AUDIT_ARCH[machine]), deny, (load, 0, 0, 0)]
    if machine == "x86_64":
        code += [(jump_ge, 0, 1, _X32_SYSCALL_BIT), deny]
    for number in denied:
        code += [(jump_eq, 0, 1, number), deny]
    code += [(jump_eq, 0, 1, _CLONE3), (ret, 0, 0, _RET_ERRNO | 38),  # ENOSYS
             (jump_eq, 0, 3, _CLONE[machine]), (load, 0, 0, 16), (jump_set, 0, 1, _NAMESPACE_FLAGS), deny,
             (ret, 0, 0, _RET_ALLOW)]
    instructions = (_Instruction * len(code))(*(_Instruction(*i) for i in code))
    program = _Program(len(code), instructions)
    _call("seccomp", _libc.prctl(PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0))


def _limit_shared_memory() -> None:
    """No System V shared memory or message queues in the new IPC namespace: they would hold memory that
    RLIMIT_AS does not count. (Kernels that refuse these writes keep their defaults.)"""
    for name in ("shmall", "shmmni", "msgmni"):
        try:
            with open(f"/proc/sys/kernel/{name}", "w") as f:
                f.write("0")
        except OSError:
            pass


def _build_root(workdir: str, program: str, source: bytes, site_packages: list[str], owner: int | None) -> None:
    """Build the new root on a tmpfs next to the work directory and switch to it (see the module docstring)."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates back to the host
    new = os.path.join(os.path.dirname(workdir), "root")
    os.mkdir(new, 0o755)
    _mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    # The interpreter's own tree (the standard library) and the site-packages it imports from.
    interpreter = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for path in list(_SYSTEM_PATHS) + sorted(interpreter) + [os.path.realpath(p) for p in site_packages]:
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin stays a link
            _make_parents(new, path)
            if not os.path.lexists(new + path):
                os.symlink(os.readlink(path), new + path)
        elif os.path.exists(path) and not os.path.exists(new + path):
            _bind(path, new + path, read_only=True)
    for device in _DEVICES:
        if os.path.exists(device):
            _bind(device, new + device, read_only=False)
    os.makedirs(new + "/proc", exist_ok=True)
    os.makedirs(new + workdir)
    owner_option = f",uid={owner},gid={owner}" if owner is not None else ""
    _mount("tmpfs", new + workdir, "tmpfs", MS_NOSUID | MS_NODEV,
           f"mode=0700,size={WORK_DISK_BYTES},nr_inodes={WORK_DISK_FILES}{owner_option}")
    _make_parents(new, program)
    with open(new + program, "wb") as f:  # outside the work dir: the code cannot change what it is shown as
        f.write(source)
    try:  # a /proc of this PID namespace only, read-only; mounted while the host's is still in view, since
        # a user namespace may only mount a proc where a full one is already visible
        _mount("proc", new + "/proc", "proc", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except BoundaryError:
        pass  # some containers forbid a new proc; an empty /proc hides the host's just as well
    _switch_root(new)
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(workdir)


def _make_parents(new: str, path: str) -> None:
    os.makedirs(new + os.path.dirname(path), mode=0o755, exist_ok=True)


def _bind(source: str, target: str, read_only: bool) -> None:
    _make_parents("", target)
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        open(target, "wb").close()
    _mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        _make_read_only(source, target)


def _make_read_only(source: str, target: str) -> None:
    """Read-only, submounts included (mount_setattr, Linux 5.12+), else the top mount only."""
    attr = (ctypes.c_uint64 * 4)(_MOUNT_ATTR_RDONLY, 0, 0, 0)  # struct mount_attr: set, clear, propagation, userns
    if _libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), _AT_FDCWD, os.fsencode(target), _AT_RECURSIVE, attr,
                     ctypes.c_size_t(ctypes.sizeof(attr))) == 0:
        return
    # A remount must repeat the flags a user namespace locks (nosuid, nodev, noexec, atime), or it is refused.
    flags = os.statvfs(source).f_flag
    kept = [(os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
            (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME)]
    extra = sum(ms for st, ms in kept if flags & st)
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | extra)


def _switch_root(new: str) -> None:
    """Make `new` the root and drop the old one from this mount namespace."""
    os.chdir(new)
    pivot_root = getattr(_libc, "pivot_root", None)
    if pivot_root is not None and pivot_root(b".", b".") == 0:
        _call("umount the old root", _libc.umount2(b".", MNT_DETACH))  # the old root sat on top of the new one
    else:  # no pivot_root in this libc, or refused (the old root is not a mount point): stack the new on top
        _mount(new, "/", None, MS_MOVE)
        _call("chroot", _libc.chroot(b"."))
    os.chdir("/")


def _drop_privileges(become_nobody: bool) -> None:
    _call("prctl(PR_SET_NO_NEW_PRIVS)", _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    for capability in range(64):  # no capability can come back through exec
        _libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0)  # EINVAL past the last one the kernel knows
    if become_nobody:  # leaving uid 0 clears every capability
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        return
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable (x2): all empty
    _call("capset", _libc.capset(header, data))
