"""The seccomp filter every local sandbox command runs under (bubblewrap's `--seccomp FD`).

A classic BPF program, assembled here by hand (no libseccomp needed), in the spirit of
Flatpak's: it denies what a sandboxed command has no business calling and what has led
out of containers before, and lets everything else through.

- Architectures: x86_64 and aarch64 are checked by `seccomp_data.arch`; a call made under
  any other ABI (i386 through `int 0x80`, or anything else) kills the process, and on
  x86_64 the x32 ABI (numbers with bit 30 set) fails with EPERM.
- EPERM: unshare, setns, mount and the new mount API (umount2, pivot_root, move_mount,
  open_tree, fsopen, fsconfig, fsmount, fspick, mount_setattr), chroot, ptrace,
  process_vm_readv/writev, keyctl/add_key/request_key, bpf, userfaultfd, perf_event_open,
  io_uring, kernel modules and kexec, swap, reboot, acct, quotactl, clock setting, syslog,
  open_by_handle_at/name_to_handle_at, iopl/ioperm; clone with any CLONE_NEW* flag; ioctl
  TIOCSTI and TIOCLINUX (typing into a terminal).
- ENOSYS: clone3, whose flags sit behind a pointer a filter cannot read; libc then falls
  back to clone, which is checked.

The program is written to a private file once per process; bubblewrap gets it on a file
descriptor opened by the `sh` that starts it (the SDK spawns PTY commands itself, with no
way to pass a descriptor down).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

# <linux/audit.h>
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
X32_SYSCALL_BIT = 0x40000000

# <linux/seccomp.h>
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

# <linux/filter.h> opcodes
BPF_LD_W_ABS = 0x00 | 0x00 | 0x20
BPF_JMP_JEQ_K = 0x05 | 0x10 | 0x00
BPF_JMP_JGE_K = 0x05 | 0x30 | 0x00
BPF_JMP_JSET_K = 0x05 | 0x40 | 0x00
BPF_RET_K = 0x06 | 0x00

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6];
OFFSET_NR = 0
OFFSET_ARCH = 4


def offset_arg_low(index: int) -> int:
    """The low 32 bits of args[index] (both architectures here are little-endian)."""
    return 16 + 8 * index


# <linux/sched.h>
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEW_ANY = (
    CLONE_NEWTIME
    | CLONE_NEWNS
    | CLONE_NEWCGROUP
    | CLONE_NEWUTS
    | CLONE_NEWIPC
    | CLONE_NEWUSER
    | CLONE_NEWPID
    | CLONE_NEWNET
)

# <asm-generic/ioctls.h>
TIOCSTI = 0x5412
TIOCLINUX = 0x541C

# The calls that fail with EPERM, by name. Numbers per architecture below; a name missing
# from an architecture's table does not exist there (e.g. iopl on aarch64).
DENIED = (
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "userfaultfd",
    "perf_event_open",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "quotactl",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "syslog",
    "open_by_handle_at",
    "name_to_handle_at",
    "iopl",
    "ioperm",
)

# x86_64 numbers (<asm/unistd_64.h>).
X86_64 = {
    "ioctl": 16,
    "clone": 56,
    "ptrace": 101,
    "syslog": 103,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "pivot_root": 155,
    "clock_settime": 227,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "clone3": 435,
    "mount_setattr": 442,
}

# aarch64 numbers (<asm-generic/unistd.h>).
AARCH64 = {
    "ioctl": 29,
    "umount2": 39,
    "mount": 40,
    "pivot_root": 41,
    "chroot": 51,
    "quotactl": 60,
    "acct": 89,
    "unshare": 97,
    "kexec_load": 104,
    "init_module": 105,
    "delete_module": 106,
    "clock_settime": 112,
    "syslog": 116,
    "ptrace": 117,
    "reboot": 142,
    "settimeofday": 170,
    "add_key": 217,
    "request_key": 218,
    "keyctl": 219,
    "clone": 220,
    "swapon": 224,
    "swapoff": 225,
    "perf_event_open": 241,
    "name_to_handle_at": 264,
    "open_by_handle_at": 265,
    "clock_adjtime": 266,
    "setns": 268,
    "process_vm_readv": 270,
    "process_vm_writev": 271,
    "finit_module": 273,
    "bpf": 280,
    "userfaultfd": 282,
    "kexec_file_load": 294,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "clone3": 435,
    "mount_setattr": 442,
}

ARCHITECTURES = {AUDIT_ARCH_X86_64: X86_64, AUDIT_ARCH_AARCH64: AARCH64}


@dataclass
class _Insn:
    code: int
    k: int
    jt: str | int = 0
    jf: str | int = 0
    label: str | None = None


class _Assembler:
    """Instructions with symbolic forward jump targets, resolved to BPF's 8-bit offsets."""

    def __init__(self) -> None:
        self.insns: list[_Insn] = []
        self.labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        if name in self.labels:
            raise ValueError(f"label {name} defined twice")
        self.labels[name] = len(self.insns)

    def load(self, offset: int) -> None:
        self.insns.append(_Insn(BPF_LD_W_ABS, offset))

    def jump(self, code: int, k: int, jt: str | int = 0, jf: str | int = 0) -> None:
        self.insns.append(_Insn(code, k, jt, jf))

    def ret(self, value: int) -> None:
        self.insns.append(_Insn(BPF_RET_K, value))

    def assemble(self) -> bytes:
        out = bytearray()
        for index, insn in enumerate(self.insns):
            offsets = []
            for target in (insn.jt, insn.jf):
                if isinstance(target, str):
                    offset = self.labels[target] - index - 1
                else:
                    offset = target
                if not 0 <= offset <= 255:
                    raise ValueError(f"jump from {index} to {target!r} out of range ({offset})")
                offsets.append(offset)
            out += struct.pack("=HBBI", insn.code, offsets[0], offsets[1], insn.k & 0xFFFFFFFF)
        if len(self.insns) > 4096:
            raise ValueError("seccomp program too long")
        return bytes(out)


def _section(asm: _Assembler, name: str, table: dict[str, int], *, x32_guard: bool) -> None:
    asm.label(name)
    asm.load(OFFSET_NR)
    if x32_guard:
        # x32 numbers (and anything past them) are refused outright.
        asm.jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, jt="eperm")
    for call in DENIED:
        if call in table:
            asm.jump(BPF_JMP_JEQ_K, table[call], jt="eperm")
    asm.jump(BPF_JMP_JEQ_K, table["clone3"], jt="enosys")
    asm.jump(BPF_JMP_JEQ_K, table["clone"], jt=f"{name}_clone")
    asm.jump(BPF_JMP_JEQ_K, table["ioctl"], jt=f"{name}_ioctl")
    asm.ret(SECCOMP_RET_ALLOW)
    asm.label(f"{name}_clone")
    asm.load(offset_arg_low(0))  # clone(flags, ...) on both architectures
    asm.jump(BPF_JMP_JSET_K, CLONE_NEW_ANY, jt="eperm")
    asm.ret(SECCOMP_RET_ALLOW)
    asm.label(f"{name}_ioctl")
    asm.load(offset_arg_low(1))  # ioctl(fd, request, ...)
    asm.jump(BPF_JMP_JEQ_K, TIOCSTI, jt="eperm")
    asm.jump(BPF_JMP_JEQ_K, TIOCLINUX, jt="eperm")
    asm.ret(SECCOMP_RET_ALLOW)


def build_filter() -> bytes:
    """The compiled program: an array of struct sock_filter, as `bwrap --seccomp` reads it."""
    asm = _Assembler()
    asm.load(OFFSET_ARCH)
    asm.jump(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, jt="x86_64")
    asm.jump(BPF_JMP_JEQ_K, AUDIT_ARCH_AARCH64, jt="aarch64")
    asm.ret(SECCOMP_RET_KILL_PROCESS)
    _section(asm, "x86_64", X86_64, x32_guard=True)
    _section(asm, "aarch64", AARCH64, x32_guard=False)
    asm.label("eperm")
    asm.ret(SECCOMP_RET_ERRNO | errno.EPERM)
    asm.label("enosys")
    asm.ret(SECCOMP_RET_ERRNO | errno.ENOSYS)
    return asm.assemble()


# --- the filter on disk ------------------------------------------------------------

_lock = threading.Lock()
_written: Path | None = None


class SeccompUnavailable(OSError):
    pass


def _private_dir() -> Path:
    """A directory only this user can write: <tmp>/harness-seccomp-<euid>, checked every time."""
    path = Path(tempfile.gettempdir()) / f"harness-seccomp-{os.geteuid()}"
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise SeccompUnavailable(f"{path} is not a private directory of uid {os.geteuid()}")
    return path


def filter_path() -> Path:
    """The filter's file (written once per process; rewritten if something removed it)."""
    global _written
    with _lock:
        if _written is not None and _written.is_file():
            return _written
        program = build_filter()
        directory = _private_dir()
        path = directory / f"filter-{hashlib.sha256(program).hexdigest()[:16]}.bpf"
        fd, scratch = tempfile.mkstemp(dir=directory, prefix=".filter-")
        try:
            os.write(fd, program)
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        os.replace(scratch, path)
        _written = path
        return path
