"""The sandbox's seccomp filter: a classic-BPF program refusing the syscalls that would
let a program leave its namespaces or reach the kernel's riskier corners, and the socket
families a Python program has no use for inside them.

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
# this filter), kernel modules, reboot/swap/acct, handles that walk around mounts, memfd
# (an executable file outside the noexec scratch).
# socket() is allowed for AF_UNIX, AF_INET and AF_INET6 (both fail anyway in the empty
# network namespace) and AF_NETLINK's NETLINK_ROUTE (an interface list: only "lo");
# socketpair() for AF_UNIX; every other family (AF_VSOCK, AF_PACKET, other netlink
# protocols, ...) gets EAFNOSUPPORT.
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
        "memfd_create": 319,
    }, {"clone": 56, "clone3": 435, "socket": 41, "socketpair": 53}),
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
        "memfd_create": 279,
    }, {"clone": 220, "clone3": 435, "socket": 198, "socketpair": 199}),
}
PIVOT_ROOT = {arch: table[1]["pivot_root"] for arch, table in SYSCALLS.items()}
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000
EPERM, ENOSYS, EAFNOSUPPORT = 1, 38, 97
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, NETLINK_ROUTE = 1, 2, 10, 16, 0
LD_W_ABS, JEQ_K, JGE_K, JSET_K, RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
ARCH, NR, ARG0, ARG2 = 4, 0, 16, 32  # offsets in struct seccomp_data (low half of args)
X32_BIT = 0x40000000  # x86_64 x32 syscalls carry it; refused outright


def _ret(value: int) -> tuple:
    return (RET_K, 0, 0, value)


def _load(offset: int) -> tuple:
    return (LD_W_ABS, 0, 0, offset)


def seccomp_filter(machine: str) -> bytes:
    """The classic-BPF program (see SYSCALLS) for this architecture. Jumps name labels
    (assembled below) so that the program reads top to bottom."""
    arch, deny, special = SYSCALLS[machine]
    refuse, family = _ret(RET_ERRNO | EPERM), _ret(RET_ERRNO | EAFNOSUPPORT)
    ins: list = [_load(ARCH), (JEQ_K, 1, 0, arch), refuse, _load(NR)]
    if machine == "x86_64":
        ins += [(JGE_K, 0, 1, X32_BIT), refuse]
    for nr in deny.values():
        ins += [(JEQ_K, 0, 1, nr), refuse]
    ins += [(JEQ_K, 0, 1, special["clone3"]), _ret(RET_ERRNO | ENOSYS),
            (JEQ_K, "socket", 0, special["socket"]),
            (JEQ_K, "socketpair", "clone", special["socketpair"]),
            "socket", _load(ARG0), (JEQ_K, "allow", 0, AF_UNIX), (JEQ_K, "allow", 0, AF_INET),
            (JEQ_K, "allow", 0, AF_INET6), (JEQ_K, 0, "family", AF_NETLINK),
            _load(ARG2), (JEQ_K, "allow", "family", NETLINK_ROUTE),
            "socketpair", _load(ARG0), (JEQ_K, "allow", "family", AF_UNIX),
            "family", family,
            "clone", (JEQ_K, 0, "allow", special["clone"]), _load(ARG0),
            (JSET_K, 0, "allow", CLONE_NS_FLAGS), refuse,
            "allow", _ret(RET_ALLOW)]
    return _assemble(ins)


def _assemble(ins: list) -> bytes:
    """Resolve label jumps to the offsets classic BPF counts from the next instruction."""
    labels, code = {}, []
    for item in ins:
        if isinstance(item, str):
            labels[item] = len(code)
        else:
            code.append(item)
    out = []
    for i, (op, jt, jf, k) in enumerate(code):
        jt, jf = (labels[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf))
        out.append(struct.pack("=HBBI", op, jt, jf, k))
    return b"".join(out)


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
