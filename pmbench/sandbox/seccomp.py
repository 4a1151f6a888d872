"""The sandbox's seccomp filter: a classic-BPF program refusing the syscalls that would
let a program leave its namespaces or reach the kernel's riskier corners.

Imported by the runner (pmbench/sandbox/runner.py, which runs with `python -I -S` and puts
this folder on its path), so stdlib only. Written by hand: libseccomp has no maintained
Python binding on PyPI, and the filter is a few dozen instructions.
"""

import ctypes
import os
import struct

CLONE_NS_FLAGS = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2

# --- seccomp -------------------------------------------------------------------------
# Refused with EPERM: namespace creation and joining, every mount call, tracing and other
# processes' memory, kexec, bpf, perf, keyrings, userfaultfd, io_uring (its requests bypass
# this filter), kernel modules, reboot/swap/acct, handles that walk around mounts.
# clone is refused only with a namespace flag; clone3 gets ENOSYS (its flags sit in memory
# a filter cannot read), and libc falls back to clone.
SYSCALLS = {
    "x86_64": (0xC000003E, {
        "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155,
        "chroot": 161, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "mount_setattr": 442, "ptrace": 101,
        "process_vm_readv": 310, "process_vm_writev": 311, "kexec_load": 246,
        "kexec_file_load": 320, "bpf": 321, "perf_event_open": 298, "add_key": 248,
        "request_key": 249, "keyctl": 250, "userfaultfd": 323, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "init_module": 175,
        "finit_module": 313, "delete_module": 176, "reboot": 169, "swapon": 167,
        "swapoff": 168, "acct": 163, "open_by_handle_at": 304, "name_to_handle_at": 303,
    }, {"clone": 56, "clone3": 435}),
    "aarch64": (0xC00000B7, {  # the generic table; not exercised on the project's machines
        "unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41,
        "chroot": 51, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "mount_setattr": 442, "ptrace": 117,
        "process_vm_readv": 270, "process_vm_writev": 271, "kexec_load": 104,
        "kexec_file_load": 294, "bpf": 280, "perf_event_open": 241, "add_key": 217,
        "request_key": 218, "keyctl": 219, "userfaultfd": 282, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "init_module": 105,
        "finit_module": 273, "delete_module": 106, "reboot": 142, "swapon": 224,
        "swapoff": 225, "acct": 89, "open_by_handle_at": 265, "name_to_handle_at": 264,
    }, {"clone": 220, "clone3": 435}),
}
PIVOT_ROOT = {arch: table[1]["pivot_root"] for arch, table in SYSCALLS.items()}
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000
EPERM, ENOSYS = 1, 38
LD_W_ABS, JEQ_K, JGE_K, JSET_K, RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
X32_BIT = 0x40000000  # x86_64 x32 syscalls carry it; refused outright


def seccomp_filter(machine: str) -> bytes:
    """The classic-BPF program (see SYSCALLS) for this architecture."""
    arch, deny, clone = SYSCALLS[machine]
    ins = [(LD_W_ABS, 0, 0, 4), (JEQ_K, 1, 0, arch), (RET_K, 0, 0, RET_ERRNO | EPERM),
           (LD_W_ABS, 0, 0, 0)]
    if machine == "x86_64":
        ins += [(JGE_K, 0, 1, X32_BIT), (RET_K, 0, 0, RET_ERRNO | EPERM)]
    for nr in deny.values():
        ins += [(JEQ_K, 0, 1, nr), (RET_K, 0, 0, RET_ERRNO | EPERM)]
    ins += [(JEQ_K, 0, 1, clone["clone3"]), (RET_K, 0, 0, RET_ERRNO | ENOSYS),
            (JEQ_K, 0, 3, clone["clone"]), (LD_W_ABS, 0, 0, 16),  # low half of args[0]
            (JSET_K, 0, 1, CLONE_NS_FLAGS), (RET_K, 0, 0, RET_ERRNO | EPERM),
            (RET_K, 0, 0, RET_ALLOW)]
    return b"".join(struct.pack("=HBBI", *i) for i in ins)


def install_seccomp() -> None:
    machine = os.uname().machine
    if machine not in SYSCALLS:
        raise OSError(f"no seccomp syscall table for {machine}")
    program = seccomp_filter(machine)
    buf = ctypes.create_string_buffer(program)
    fprog = struct.pack("HxxxxxxP", len(program) // 8, ctypes.addressof(buf))
    fbuf = ctypes.create_string_buffer(fprog)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                           ctypes.c_ulong]
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fbuf), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp: {os.strerror(err)}")
