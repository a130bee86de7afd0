//! `hearth scheduler ...`: serve, backups, restore, reconcile, password hashes.
//!
//! Serving, restoring and hashing are calls into `hearth_scheduler` (through [`crate::server`]);
//! `backup now|list` and `reconcile` are clients of the running scheduler's HTTP API.

use std::io::{IsTerminal, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::client::{Client, ConnectArgs};
use crate::output::{self, UsageError, fmt_bytes, fmt_time, table};
use crate::server;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SchedulerArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(subcommand)]
    pub command: Option<SchedulerCommand>,
}

/// How the scheduler serves (`hearth scheduler --bind ADDR --data DIR ...`). Every default is
/// Aurora's.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8081 or 0.0.0.0:8081.
    #[arg(long, required = true)]
    pub bind: Option<SocketAddr>,
    /// Directory of the scheduler's database (created if missing).
    #[arg(long, required = true)]
    pub data: Option<PathBuf>,
    /// Users, passwords and roles (Aurora's shiro INI); without it, every request is allowed.
    #[arg(long)]
    pub security_ini: Option<PathBuf>,
    /// Where hourly backups go [default: <data>/backups].
    #[arg(long)]
    pub backup_dir: Option<PathBuf>,
    /// Require authentication for reads too (they are open by default, as in Aurora).
    #[arg(long)]
    pub auth_reads: bool,
    /// Accept plaintext passwords in the security INI (refused by default: use
    /// `hearth scheduler hash-password`).
    #[arg(long)]
    pub allow_plaintext_passwords: bool,
    /// Tokens agents and executors must present, one per line; without it agents are not
    /// authenticated.
    #[arg(long)]
    pub agent_token_file: Option<PathBuf>,
    /// The cluster name jobs must carry in their key [default: any].
    #[arg(long)]
    pub cluster: Option<String>,
    /// An agent silent for this long is lost; its tasks are LOST and replaced.
    #[arg(long, default_value = "60s", value_parser = crate::args::duration)]
    pub agent_timeout: Duration,
    /// A task in a transient state (ASSIGNED, STARTING, KILLING, ...) this long becomes LOST.
    #[arg(long, default_value = "5m", value_parser = crate::args::duration)]
    pub transient_timeout: Duration,
    /// A task that ran less than this before it ended flapped.
    #[arg(long, default_value = "5m", value_parser = crate::args::duration)]
    pub flapping_threshold: Duration,
    /// How long the replacement of a flapping task waits THROTTLED (doubled per consecutive
    /// flapping ancestor).
    #[arg(long, default_value = "30s", value_parser = crate::args::duration)]
    pub initial_flapping_delay: Duration,
    /// The cap of that wait.
    #[arg(long, default_value = "5m", value_parser = crate::args::duration)]
    pub max_flapping_delay: Duration,
    /// First wait before a kill the agent has not confirmed is sent again.
    #[arg(long, default_value = "15s", value_parser = crate::args::duration)]
    pub kill_retry_initial: Duration,
    /// The cap of that wait (it doubles).
    #[arg(long, default_value = "5m", value_parser = crate::args::duration)]
    pub kill_retry_max: Duration,
    /// How often a backup is taken.
    #[arg(long, default_value = "1h", value_parser = crate::args::duration)]
    pub backup_interval: Duration,
    /// How many backups are kept.
    #[arg(long, default_value_t = 48)]
    pub backups_kept: usize,
    /// First wait before placing a task that could not be placed is tried again.
    #[arg(long, default_value = "1s", value_parser = crate::args::duration)]
    pub placement_retry_initial: Duration,
    /// The cap of that wait (it doubles).
    #[arg(long, default_value = "1m", value_parser = crate::args::duration)]
    pub placement_retry_max: Duration,
}

#[derive(Debug, Subcommand)]
pub enum SchedulerCommand {
    /// Take a backup now, or list the backups.
    Backup {
        #[command(subcommand)]
        what: BackupCommand,
    },
    /// Restore a backup into a fresh data directory (offline: the scheduler must not run on it).
    ///
    /// The restored scheduler holds kills of tasks it does not know (started after the backup)
    /// until `hearth scheduler reconcile --confirm`.
    Restore {
        /// The backup: a file, or a name `hearth scheduler backup list` shows (looked up in
        /// --backup-dir).
        backup: PathBuf,
        /// The data directory to restore into; must be empty or missing.
        #[arg(long)]
        data: PathBuf,
        /// Where to look up a backup given by name.
        #[arg(long)]
        backup_dir: Option<PathBuf>,
    },
    /// Show the reconcile hold after a restore; --confirm ends it (the tasks it kept alive are
    /// killed).
    Reconcile {
        #[arg(long)]
        confirm: bool,
        #[command(flatten)]
        connect: ConnectArgs,
        #[arg(long)]
        json: bool,
    },
    /// Hash a password for the security INI (argon2id). Reads it from stdin, or prompts on a
    /// terminal.
    HashPassword,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take a backup now; prints its name.
    Now {
        #[command(flatten)]
        connect: ConnectArgs,
        #[arg(long)]
        json: bool,
    },
    /// List the backups, oldest first.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: SchedulerArgs) -> ExitCode {
    match args.command {
        None => output::exit(serve(args.serve)),
        Some(cmd) => output::exit(dispatch(cmd)),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (Some(bind), Some(data)) = (args.bind, args.data.clone()) else {
        return Err(UsageError("hearth scheduler needs --bind ADDR and --data DIR".into()).into());
    };
    let agent_tokens = match &args.agent_token_file {
        Some(path) => read_tokens(path)?,
        None => Vec::new(),
    };
    server::serve_scheduler(&args, bind, data, agent_tokens)
}

/// Tokens, one per line; blank lines and `#` comments are skipped. Never logged.
pub fn read_tokens(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read token file {}: {e}", path.display())))?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() {
        return Err(UsageError(format!("token file {} holds no token", path.display())).into());
    }
    Ok(tokens)
}

fn dispatch(cmd: SchedulerCommand) -> anyhow::Result<()> {
    match cmd {
        SchedulerCommand::Backup {
            what: BackupCommand::Now { connect, json },
        } => {
            let client = Client::connect(&connect)?;
            let b = client.backup_now().context("scheduler backup now")?;
            if json {
                return output::print_json(&b);
            }
            println!("backup {} ({})", b.name, fmt_bytes(b.bytes));
            Ok(())
        }
        SchedulerCommand::Backup {
            what: BackupCommand::List { connect, json },
        } => {
            let client = Client::connect(&connect)?;
            let mut list = client.backups().context("scheduler backup list")?;
            if json {
                return output::print_json(&list);
            }
            list.sort_by_key(|b| b.created_ms);
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|b| vec![b.name.clone(), fmt_time(b.created_ms), fmt_bytes(b.bytes)])
                .collect();
            print!("{}", table(&["BACKUP", "CREATED", "SIZE"], &rows));
            Ok(())
        }
        SchedulerCommand::Restore {
            backup,
            data,
            backup_dir,
        } => {
            let file = match (&backup_dir, backup.exists()) {
                (_, true) => backup.clone(),
                (Some(dir), false) => dir.join(&backup),
                (None, false) => {
                    return Err(UsageError(format!(
                        "backup {} does not exist; give a path, or a name with --backup-dir",
                        backup.display()
                    ))
                    .into());
                }
            };
            server::restore(&file, &data)?;
            println!(
                "restored {} into {}; start the scheduler on it, check `hearth job list` and \
                 `hearth scheduler reconcile`, then `hearth scheduler reconcile --confirm` to \
                 kill the tasks it does not know",
                file.display(),
                data.display()
            );
            Ok(())
        }
        SchedulerCommand::Reconcile {
            confirm,
            connect,
            json,
        } => {
            let client = Client::connect(&connect)?;
            let status = if confirm {
                client
                    .reconcile(true)
                    .context("scheduler reconcile --confirm")?
            } else {
                client.reconcile_status().context("scheduler reconcile")?
            };
            if json {
                return output::print_json(&status);
            }
            if status.hold {
                println!(
                    "reconcile hold ON: {} unknown task{} kept alive; `hearth scheduler \
                     reconcile --confirm` kills them",
                    status.held.len(),
                    if status.held.len() == 1 { "" } else { "s" }
                );
            } else if confirm {
                println!("reconcile hold ended: unknown tasks are killed");
            } else {
                println!("no reconcile hold: unknown tasks are killed as agents report them");
            }
            let rows: Vec<Vec<String>> = status
                .held
                .iter()
                .map(|h| vec![h.task_id.clone(), h.agent.clone()])
                .collect();
            if !rows.is_empty() {
                print!("{}", table(&["TASK", "HOST"], &rows));
            }
            Ok(())
        }
        SchedulerCommand::HashPassword => {
            let password = read_password()?;
            println!("{}", server::hash_password(&password)?);
            Ok(())
        }
    }
}

/// The password from a prompt (twice) on a terminal, else all of stdin less one line ending.
fn read_password() -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("reading the password")?;
        let again = rpassword::prompt_password("Again: ").context("reading the password")?;
        if first != again {
            bail!("the two passwords differ; nothing was hashed");
        }
        first
    } else {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the password from stdin")?;
        let trimmed = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        trimmed.to_owned()
    };
    if password.is_empty() {
        return Err(UsageError("empty password: nothing was hashed".into()).into());
    }
    Ok(password)
}
