//! `hearth agent ...`: one per host; registers with the scheduler, launches and kills the
//! tasks it is given (`hearth run` / `hearth kill` children), and re-adopts them after its own
//! restart. The work is `hearth_agent::run` (through [`crate::server`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::output;

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The scheduler's URL.
    #[arg(long, env = "HEARTH_SCHEDULER", default_value = hearth_scheduler::wire::DEFAULT_SCHEDULER_URL)]
    pub scheduler: String,
    /// The checkpoint root of this host's tasks; the agent keeps its own files under
    /// <root>/agent.
    #[arg(long)]
    pub root: PathBuf,
    /// This host's name as the scheduler knows it [default: the host name].
    #[arg(long)]
    pub name: Option<String>,
    /// An attribute for constraints, KEY=VALUE (repeatable), e.g. rack=r1,
    /// dedicated=role/name.
    #[arg(long = "attribute", value_parser = crate::args::key_value)]
    pub attributes: Vec<(String, String)>,
    /// Resources offered, any subset of cpu=4,ram=8GiB,disk=100GiB [default: what the host
    /// has].
    #[arg(long)]
    pub resources: Option<String>,
    /// The range tasks' ports come from.
    #[arg(long, default_value = "31000-32000")]
    pub ports: String,
    /// The token to present to the scheduler (first line of the file); executors get it too.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// An extra argument for every `hearth run` it starts (repeatable), e.g.
    /// --run-arg=--no-setuid to run tasks as the agent's own user.
    #[arg(long = "run-arg", allow_hyphen_values = true)]
    pub run_args: Vec<String>,
}

pub fn run(args: AgentArgs) -> ExitCode {
    output::exit(crate::server::run_agent(&args))
}
