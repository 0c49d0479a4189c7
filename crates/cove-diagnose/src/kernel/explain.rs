//! Syscall → kernel option map: which option makes a syscall exist (an `ENOSYS` names a
//! syscall; this names the option to enable).

use serde::Serialize;

/// One syscall family and the options behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The syscall as asked.
    pub syscall: String,
    /// What the family is.
    pub feature: &'static str,
    /// Options that must all be enabled (without `CONFIG_`).
    pub options: Vec<&'static str>,
    /// Extra context (e.g. what else commonly needs it).
    pub note: &'static str,
}

impl Explanation {
    /// Fragment lines enabling the options.
    pub fn fragment(&self) -> Vec<String> {
        self.options
            .iter()
            .map(|o| format!("CONFIG_{o}=y"))
            .collect()
    }
}

struct Entry {
    syscalls: &'static [&'static str],
    feature: &'static str,
    options: &'static [&'static str],
    note: &'static str,
}

/// Hand-kept table: the kernel's syscall tables gate these behind `COND_SYSCALL`
/// (kernel/sys_ni.c) on the options below.
const TABLE: &[Entry] = &[
    Entry {
        syscalls: &[
            "shmget",
            "shmat",
            "shmdt",
            "shmctl",
            "semget",
            "semop",
            "semtimedop",
            "semctl",
            "msgget",
            "msgsnd",
            "msgrcv",
            "msgctl",
            "ipc",
        ],
        feature: "System V IPC",
        options: &["SYSVIPC"],
        note: "PostgreSQL's initdb and postmaster need it (`shmget: Function not implemented`)",
    },
    Entry {
        syscalls: &[
            "mq_open",
            "mq_unlink",
            "mq_timedsend",
            "mq_timedreceive",
            "mq_notify",
            "mq_getsetattr",
        ],
        feature: "POSIX message queues",
        options: &["POSIX_MQUEUE"],
        note: "",
    },
    Entry {
        syscalls: &["io_uring_setup", "io_uring_enter", "io_uring_register"],
        feature: "io_uring",
        options: &["IO_URING"],
        note: "may also be disabled at run time by the io_uring_disabled sysctl",
    },
    Entry {
        syscalls: &["bpf"],
        feature: "eBPF",
        options: &["BPF_SYSCALL"],
        note: "",
    },
    Entry {
        syscalls: &["userfaultfd"],
        feature: "userfaultfd",
        options: &["USERFAULTFD"],
        note: "",
    },
    Entry {
        syscalls: &["memfd_create"],
        feature: "memfd",
        options: &["MEMFD_CREATE"],
        note: "",
    },
    Entry {
        syscalls: &["memfd_secret"],
        feature: "secret memory",
        options: &["SECRETMEM"],
        note: "",
    },
    Entry {
        syscalls: &[
            "inotify_init",
            "inotify_init1",
            "inotify_add_watch",
            "inotify_rm_watch",
        ],
        feature: "inotify",
        options: &["INOTIFY_USER"],
        note: "",
    },
    Entry {
        syscalls: &["fanotify_init", "fanotify_mark"],
        feature: "fanotify",
        options: &["FANOTIFY"],
        note: "",
    },
    Entry {
        syscalls: &["signalfd", "signalfd4"],
        feature: "signalfd",
        options: &["SIGNALFD"],
        note: "",
    },
    Entry {
        syscalls: &["timerfd_create", "timerfd_settime", "timerfd_gettime"],
        feature: "timerfd",
        options: &["TIMERFD"],
        note: "",
    },
    Entry {
        syscalls: &["eventfd", "eventfd2"],
        feature: "eventfd",
        options: &["EVENTFD"],
        note: "",
    },
    Entry {
        syscalls: &[
            "epoll_create",
            "epoll_create1",
            "epoll_ctl",
            "epoll_wait",
            "epoll_pwait",
            "epoll_pwait2",
        ],
        feature: "epoll",
        options: &["EPOLL"],
        note: "",
    },
    Entry {
        syscalls: &["keyctl", "add_key", "request_key"],
        feature: "kernel keyrings",
        options: &["KEYS"],
        note: "",
    },
    Entry {
        syscalls: &["seccomp"],
        feature: "seccomp filters",
        options: &["SECCOMP", "SECCOMP_FILTER"],
        note: "container runtimes and systemd sandboxing need it",
    },
    Entry {
        syscalls: &["unshare", "setns", "clone3"],
        feature: "namespaces",
        options: &[
            "NAMESPACES",
            "USER_NS",
            "PID_NS",
            "NET_NS",
            "UTS_NS",
            "IPC_NS",
        ],
        note: "an EINVAL/ENOSYS from unshare/clone with CLONE_NEW* flags names the missing namespace type",
    },
    Entry {
        syscalls: &["name_to_handle_at", "open_by_handle_at"],
        feature: "file handles",
        options: &["FHANDLE"],
        note: "systemd requires it",
    },
    Entry {
        syscalls: &["perf_event_open"],
        feature: "perf events",
        options: &["PERF_EVENTS"],
        note: "",
    },
    Entry {
        syscalls: &["futex", "futex_waitv", "set_robust_list", "get_robust_list"],
        feature: "futexes",
        options: &["FUTEX"],
        note: "glibc threads need it",
    },
    Entry {
        syscalls: &["quotactl", "quotactl_fd"],
        feature: "disk quotas",
        options: &["QUOTACTL"],
        note: "",
    },
    Entry {
        syscalls: &["acct"],
        feature: "process accounting",
        options: &["BSD_PROCESS_ACCT"],
        note: "",
    },
    Entry {
        syscalls: &["kexec_load", "kexec_file_load"],
        feature: "kexec",
        options: &["KEXEC"],
        note: "kexec_file_load needs KEXEC_FILE",
    },
    Entry {
        syscalls: &["swapon", "swapoff"],
        feature: "swap",
        options: &["SWAP"],
        note: "",
    },
    Entry {
        syscalls: &["fadvise64", "fadvise64_64"],
        feature: "fadvise",
        options: &["ADVISE_SYSCALLS"],
        note: "",
    },
    Entry {
        syscalls: &["pkey_alloc", "pkey_free", "pkey_mprotect"],
        feature: "memory protection keys",
        options: &["X86_INTEL_MEMORY_PROTECTION_KEYS"],
        note: "",
    },
    Entry {
        syscalls: &[
            "landlock_create_ruleset",
            "landlock_add_rule",
            "landlock_restrict_self",
        ],
        feature: "Landlock",
        options: &["SECURITY_LANDLOCK"],
        note: "also needs `landlock` in the lsm= list",
    },
    Entry {
        syscalls: &["pidfd_open", "pidfd_send_signal", "pidfd_getfd"],
        feature: "pidfd",
        options: &["PIDFD"],
        note: "a separate option only on some kernels; usually always present",
    },
    Entry {
        syscalls: &["uselib"],
        feature: "uselib",
        options: &["USELIB"],
        note: "",
    },
    Entry {
        syscalls: &["process_vm_readv", "process_vm_writev"],
        feature: "cross-memory attach",
        options: &["CROSS_MEMORY_ATTACH"],
        note: "",
    },
    Entry {
        syscalls: &[
            "mbind",
            "set_mempolicy",
            "get_mempolicy",
            "migrate_pages",
            "move_pages",
        ],
        feature: "NUMA policy",
        options: &["NUMA"],
        note: "",
    },
];

/// All syscall names the map knows.
pub fn known_syscalls() -> impl Iterator<Item = &'static str> {
    TABLE.iter().flat_map(|e| e.syscalls.iter().copied())
}

/// The options behind a syscall, if the syscall is one that a config option can remove.
pub fn explain_syscall(syscall: &str) -> Option<Explanation> {
    let wanted = syscall.trim().trim_end_matches("()").to_ascii_lowercase();
    let entry = TABLE
        .iter()
        .find(|e| e.syscalls.contains(&wanted.as_str()))?;
    Some(Explanation {
        syscall: wanted,
        feature: entry.feature,
        options: entry.options.to_vec(),
        note: entry.note,
    })
}

/// Explain a query: a syscall (`shmget`), or an errno form (`ENOSYS shmget`,
/// `shmget: Function not implemented`, `Failed system call was shmget(key=2, …)`).
pub fn explain(query: &str) -> Option<Explanation> {
    syscall_in_text(query).and_then(|s| explain_syscall(&s))
}

/// Find a known syscall name mentioned in free text (a log line or a query).
pub fn syscall_in_text(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .find(|w| known_syscalls().any(|s| s == w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysv_ipc_calls_map_to_sysvipc() {
        for s in ["shmget", "semget", "msgget", "SHMGET()"] {
            assert_eq!(explain_syscall(s).unwrap().options, vec!["SYSVIPC"], "{s}");
        }
    }

    #[test]
    fn errno_forms_and_log_lines_are_understood() {
        let e = explain("ENOSYS shmget").unwrap();
        assert_eq!(e.options, vec!["SYSVIPC"]);
        assert_eq!(e.fragment(), vec!["CONFIG_SYSVIPC=y"]);
        let e = explain("DETAIL:  Failed system call was shmget(key=2, size=56, 03600).").unwrap();
        assert_eq!(e.syscall, "shmget");
        assert_eq!(
            explain("io_uring_setup: Function not implemented")
                .unwrap()
                .options,
            vec!["IO_URING"]
        );
        assert_eq!(
            explain("seccomp").unwrap().options,
            vec!["SECCOMP", "SECCOMP_FILTER"]
        );
        assert!(
            explain_syscall("unshare")
                .unwrap()
                .options
                .contains(&"USER_NS")
        );
        assert_eq!(
            explain_syscall("perf_event_open").unwrap().options,
            vec!["PERF_EVENTS"]
        );
        assert!(explain("ENOSYS read").is_none());
    }

    #[test]
    fn table_has_no_duplicate_syscalls() {
        let mut all: Vec<_> = known_syscalls().collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(n, all.len());
    }
}
