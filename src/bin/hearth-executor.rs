//! `hearth-executor`: the executor alone, for `hearth run`.
//!
//! ```text
//! hearth-executor --expect-version=VERSION [--log-format text|json] run CONFIG [OPTIONS]
//! ```
//!
//! `hearth run` parses its arguments and replaces itself with this program, given the same
//! arguments behind `--expect-version` (see `src/run_cmd.rs` for why), and the agent starts it
//! directly: the task's executor and its keeper then map only the code they run. It takes
//! exactly `hearth run`'s arguments, and refuses to run for a `hearth` of another version
//! (exit 2), since the two are one build installed side by side.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hearth::logging;
use hearth::run_cmd::{self, RunArgs};
use hearth_executor::{EXECUTABLE, VERSION};

#[derive(Debug, Parser)]
#[command(
    name = "hearth",
    version,
    about = "The executor of `hearth run`, which runs it (see `hearth run --help`)."
)]
struct Cli {
    /// How diagnostics on stderr are written (the filter is `HEARTH_LOG`, default `info`).
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
    /// The version of the `hearth` handing over; this program runs only for its own.
    #[arg(long, hide = true)]
    expect_version: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a task in the foreground until it ends (see `hearth run --help`).
    Run(RunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    if let Some(expected) = cli.expect_version.as_deref()
        && expected != VERSION
    {
        eprintln!(
            "hearth: {} is version {VERSION}, but hearth is {expected}: install both from the \
             same build",
            EXECUTABLE
        );
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Run(args) => run_cmd::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
