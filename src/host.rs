//! `hearth host drain|activate|status`: maintenance of the agents' hosts.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use hearth_scheduler::wire::{HostMode, HostStatus};

use crate::client::{Client, ConnectArgs};
use crate::output::{self, fmt_bytes, fmt_relative, now_ms, table};

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Move every task off a host (DRAINING, replaced elsewhere) and place nothing new on it.
    Drain {
        host: String,
        #[command(flatten)]
        connect: ConnectArgs,
        #[arg(long)]
        json: bool,
    },
    /// End a host's maintenance: tasks may be placed on it again.
    Activate {
        host: String,
        #[command(flatten)]
        connect: ConnectArgs,
        #[arg(long)]
        json: bool,
    },
    /// List the hosts: maintenance mode, whether the agent syncs, resources used and free.
    Status {
        #[command(flatten)]
        connect: ConnectArgs,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: HostCommand) -> ExitCode {
    output::exit(dispatch(cmd))
}

fn dispatch(cmd: HostCommand) -> anyhow::Result<()> {
    match cmd {
        HostCommand::Drain {
            host,
            connect,
            json,
        } => {
            let client = Client::connect(&connect)?;
            let h = client
                .drain(&host)
                .with_context(|| format!("host drain {host}"))?;
            if json {
                return output::print_json(&h);
            }
            println!(
                "host {} is {} ({} active task{} to move off)",
                h.host,
                mode(h.mode),
                h.tasks,
                if h.tasks == 1 { "" } else { "s" }
            );
            Ok(())
        }
        HostCommand::Activate {
            host,
            connect,
            json,
        } => {
            let client = Client::connect(&connect)?;
            let h = client
                .activate(&host)
                .with_context(|| format!("host activate {host}"))?;
            if json {
                return output::print_json(&h);
            }
            println!("host {} is {}", h.host, mode(h.mode));
            Ok(())
        }
        HostCommand::Status { connect, json } => {
            let client = Client::connect(&connect)?;
            let mut hosts = client.hosts().context("host status")?;
            if json {
                return output::print_json(&hosts);
            }
            hosts.sort_by(|a, b| a.host.cmp(&b.host));
            if hosts.is_empty() {
                println!("no hosts: start an agent with `hearth agent --scheduler URL --root DIR`");
                return Ok(());
            }
            print!("{}", render_hosts(&hosts, now_ms()));
            Ok(())
        }
    }
}

fn mode(m: HostMode) -> &'static str {
    match m {
        HostMode::None => "active",
        HostMode::Scheduled => "scheduled for maintenance",
        HostMode::Draining => "DRAINING",
        HostMode::Drained => "DRAINED",
    }
}

pub fn render_hosts(hosts: &[HostStatus], now: i64) -> String {
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            vec![
                h.host.clone(),
                mode(h.mode).to_owned(),
                if h.alive { "up" } else { "SILENT" }.to_owned(),
                h.last_seen_ms
                    .map_or_else(|| "never".to_owned(), |ms| fmt_relative(ms, now)),
                h.tasks.to_string(),
                format!("{:.2}/{:.2}", h.used.cpu, h.resources.cpu),
                format!("{}/{}", fmt_bytes(h.used.ram), fmt_bytes(h.resources.ram)),
                format!("{}/{}", fmt_bytes(h.used.disk), fmt_bytes(h.resources.disk)),
                h.ports
                    .map_or_else(|| "-".to_owned(), |p| format!("{}-{}", p.first, p.last)),
                h.attributes
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    table(
        &[
            "HOST",
            "MODE",
            "AGENT",
            "LAST SYNC",
            "TASKS",
            "CPU",
            "RAM",
            "DISK",
            "PORTS",
            "ATTRIBUTES",
        ],
        &rows,
    )
}
