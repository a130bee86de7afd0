//! `hearth`: the one command-line entry point. It parses arguments and dispatches to the crates;
//! the work itself lives in `checkpoints`, `executor`, `observer` and `scheduler`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "hearth", version, about = "Run tasks in sandboxes, keep a durable record, inspect it.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a task config (Aurora job, MesosTaskInstance or Thermos task JSON) and print it
    /// normalized, or every problem with its field path (exit 2).
    Validate {
        /// Path to the config file.
        config: PathBuf,
        /// Print the normalized task as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config, json } => validate(&config, json),
    }
}

fn validate(path: &std::path::Path, json: bool) -> ExitCode {
    match hearth_checkpoints::config::load(path) {
        Ok(task) => {
            if json {
                match serde_json::to_string_pretty(&task) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("hearth: cannot render {}: {e}", path.display());
                        return ExitCode::from(1);
                    }
                }
            } else {
                println!("{}: ok", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("hearth: {}: invalid task config:\n{errors}", path.display());
            ExitCode::from(2)
        }
    }
}
