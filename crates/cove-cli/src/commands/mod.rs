//! One module per verb: its `Args` and its `run`.

pub(crate) mod agent_client;
pub mod bench;
pub mod clone;
pub mod completions;
pub mod console;
pub mod cp;
pub mod create;
pub mod delete;
pub mod disk;
pub mod doctor;
pub mod down;
pub mod exec;
pub mod image;
pub mod kernel;
pub mod kill;
pub mod ldd;
pub mod list;
pub mod logs;
pub mod man;
pub mod network;
pub mod ps;
pub mod restart;
pub mod run;
pub mod serve;
pub mod set;
pub mod shell;
pub mod show;
pub mod snapshot;
pub mod start;
pub mod stop;
pub mod supervise;
pub mod test;
pub mod trace;
pub mod up;
pub mod volume;
pub mod why;

use crate::cli::{Cli, Command};

/// The longest wait any `--timeout` accepts (a day): a deadline is `now +
/// timeout`, and a larger value (up to `u64::MAX` seconds) overflowed the
/// clock and panicked.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;

/// Parses a `--timeout` in seconds, 1 to [`MAX_TIMEOUT_SECS`].
pub fn timeout_secs() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS)
}
use crate::context::Ctx;
use std::process::ExitCode;

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // These two need no state directory and must work before one exists.
    let cli = match cli.command {
        Command::Completions(a) => return completions::run(a),
        Command::Man(a) => return man::run(cli.json, a),
        command => Cli { command, ..cli },
    };
    let ctx = Ctx::from_env(cli.json)?;
    match cli.command {
        Command::Image(a) => image::run(&ctx, a),
        Command::Up(a) => up::run(&ctx, a),
        Command::Down(a) => down::run(&ctx, a),
        Command::Create(a) => create::run(&ctx, a),
        Command::Run(a) => run::run(&ctx, a),
        Command::Start(a) => start::run(&ctx, a),
        Command::Snapshot(a) => snapshot::run(&ctx, a),
        Command::Clone(a) => clone::run(&ctx, a),
        Command::Stop(a) => stop::run(&ctx, a),
        Command::Restart(a) => restart::run(&ctx, a),
        Command::Kill(a) => kill::run(&ctx, a),
        Command::Delete(a) => delete::run(&ctx, a),
        Command::List(a) => list::run(&ctx, a),
        Command::Show(a) => show::run(&ctx, a),
        Command::Serve(a) => serve::run(&ctx, a),
        Command::Set(a) => set::run(&ctx, a),
        Command::Logs(a) => logs::run(&ctx, a),
        Command::Console(a) => console::run(&ctx, a),
        Command::Exec(a) => exec::run(&ctx, a),
        Command::Cp(a) => cp::run(&ctx, a),
        Command::Ps(a) => ps::run(&ctx, a),
        Command::Trace(a) => trace::run(&ctx, a),
        Command::Ldd(a) => ldd::run(&ctx, a),
        Command::Shell(a) => shell::run(&ctx, a),
        Command::Kernel(a) => kernel::run(&ctx, a),
        Command::Doctor(a) => doctor::run(&ctx, a),
        Command::Disk(a) => disk::run(&ctx, a),
        Command::Test(a) => test::run(&ctx, a),
        Command::Why(a) => why::run(&ctx, a),
        Command::Bench(a) => bench::run(&ctx, a),
        Command::Volume(a) => volume::run(&ctx, a),
        Command::Network(a) => network::run(&ctx, a),
        Command::Supervise(a) => supervise::run(&ctx, a),
        Command::Completions(_) | Command::Man(_) => unreachable!("handled above"),
    }
}
