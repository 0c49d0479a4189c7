//! The command line: one variant per verb, its arguments in `commands/<verb>.rs`.

use crate::commands;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cove",
    version,
    about = "Build, run, inspect, test and diagnose microVMs",
    long_about = "cove takes a microVM from nothing to a tested, inspectable, running guest, \
                  and says exactly why when it is not."
)]
pub struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build, list and remove guest images.
    Image(commands::image::Args),
    /// Converge the VMs a spec file declares: build, create, start, check.
    Up(commands::up::Args),
    /// Stop and remove the VMs a spec file declares (data disks are kept).
    Down(commands::down::Args),
    /// Create a VM from an image (does not start it).
    Create(commands::create::Args),
    /// Run a VM in the foreground for a scheduler (systemd, Nomad, Kubernetes).
    Run(commands::run::Args),
    /// Boot a VM and wait until its agent answers.
    Start(commands::start::Args),
    /// Save a running VM (memory, devices, every disk) to restore or clone later; `ls`, `rm`.
    Snapshot(commands::snapshot::Args),
    /// Create and start new VMs from a snapshot (`NAME@TAG`); they share its memory image.
    Clone(commands::clone::Args),
    /// Shut a VM down gracefully, forcing it after a timeout.
    Stop(commands::stop::Args),
    /// Stop then start a VM.
    Restart(commands::restart::Args),
    /// End a VM's VMM at once.
    Kill(commands::kill::Args),
    /// Remove a VM and every file of it.
    Delete(commands::delete::Args),
    /// List VMs and their true state.
    #[command(alias = "ls")]
    List(commands::list::Args),
    /// Show one VM in detail.
    Show(commands::show::Args),
    /// Change a stopped VM's resources.
    Set(commands::set::Args),
    /// Print a VM's serial console log.
    Logs(commands::logs::Args),
    /// Attach to a VM's serial console.
    Console(commands::console::Args),
    /// Run a command inside a running VM.
    Exec(commands::exec::Args),
    /// Copy files into or out of a running VM (`NAME:/path` on either side).
    Cp(commands::cp::Args),
    /// List a running VM's processes.
    Ps(commands::ps::Args),
    /// Run a guest command under cove's own tracer: the files, libraries and addresses it asked
    /// for and did not get, and its exit status (no strace needed in the guest).
    Trace(commands::trace::Args),
    /// A guest binary's shared libraries as its loader would find them (no ldd needed).
    Ldd(commands::ldd::Args),
    /// Open a login shell in a running VM.
    Shell(commands::shell::Args),
    /// Check kernels against requirement profiles, explain syscalls, merge and build configs.
    Kernel(commands::kernel::Args),
    /// Check that this host can run cove's VMs, and say how to fix what is missing.
    Doctor(commands::doctor::Args),
    /// Read files from a stopped VM's disk without mounting it.
    Disk(commands::disk::Args),
    /// Run a VM's declared health checks.
    Test(commands::test::Args),
    /// Manage persistent data disks.
    Volume(commands::volume::Args),
    /// Manage cove networks: a bridge with DHCP, DNS (`NAME.cove`), NAT and isolation.
    Network(commands::network::Args),
    /// Explain why a VM failed, crashed or never became ready.
    Why(commands::why::Args),
    /// Time boots by phase (`cove bench boot IMAGE|VM`).
    Bench(commands::bench::Args),
    /// Serve cove's VM verbs as HTTP+JSON on a unix socket, for programs.
    Serve(commands::serve::Args),
    /// Print a shell's completion script (bash, zsh, fish).
    Completions(commands::completions::Args),
    /// Write cove's manual pages into a directory.
    Man(commands::man::Args),
    /// Run by `cove start`: the per-VM supervisor process.
    #[command(name = "__supervise", hide = true)]
    Supervise(commands::supervise::Args),
}
