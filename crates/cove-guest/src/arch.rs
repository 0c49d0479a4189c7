//! The guest's CPU architecture: the one definition of what differs between an x86-64 and an
//! arm64 guest as far as the guest contract goes (Debian's architecture name, the console
//! device, the agent's Rust target, the ELF machine of its binaries).

use std::fmt;

/// A guest architecture, named as Debian names it (`amd64`, `arm64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Arch {
    /// x86-64 (`qemu-system-x86_64`, `microvm` or `q35`).
    #[default]
    Amd64,
    /// AArch64 (`qemu-system-aarch64 -M virt`).
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// Debian's name, used for packages (`busybox-static:arm64`) and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Debian's name or the kernel's (`x86_64`, `aarch64`).
    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "amd64" | "x86_64" | "x86-64" => Some(Arch::Amd64),
            "arm64" | "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// The serial console the guest kernel writes to (`console=`): the 8250 UART on x86, the
    /// PL011 of QEMU's `virt` machine on arm64.
    pub fn console(self) -> &'static str {
        match self {
            Arch::Amd64 => "ttyS0",
            Arch::Arm64 => "ttyAMA0",
        }
    }

    /// The Rust target the static agent is built for.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-unknown-linux-gnu",
            Arch::Arm64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// `e_machine` of this architecture's ELF binaries (EM_X86_64, EM_AARCH64).
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::Amd64 => 62,
            Arch::Arm64 => 183,
        }
    }

    /// The architecture this program was built for.
    pub fn host() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Arm64
        } else {
            Arch::Amd64
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An architecture name that is neither Debian's nor the kernel's for a supported one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownArch(pub String);

impl fmt::Display for UnknownArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown architecture `{}`; cove boots `amd64` (x86_64) and `arm64` (aarch64)",
            self.0
        )
    }
}

impl std::error::Error for UnknownArch {}

impl std::str::FromStr for Arch {
    type Err = UnknownArch;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Arch::parse(s).ok_or_else(|| UnknownArch(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_kernel_names_are_accepted() {
        for a in Arch::ALL {
            assert_eq!(a.as_str().parse::<Arch>(), Ok(a));
        }
        assert_eq!("aarch64".parse::<Arch>(), Ok(Arch::Arm64));
        assert_eq!("x86_64".parse::<Arch>(), Ok(Arch::Amd64));
        let err = "riscv64".parse::<Arch>().unwrap_err().to_string();
        assert!(err.contains("riscv64") && err.contains("arm64"), "{err}");
    }
}
