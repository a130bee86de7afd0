//! Crash reconciliation (DESIGN 8): what a restarted executor decides from its own last records,
//! what the keeper says (`Hello` → `State`), and the exits an earlier keeper wrote to its stream.
//!
//! A pure function: the keeper's answer and the stream's exits come in, decisions come out, and
//! the event loop carries them out (records, keeper requests, a kill). Its tests need no keeper
//! and no process.
//!
//! The cases, for each process's current run that is not yet terminal:
//! * the keeper (or its stream) holds the run's exit → record the exit;
//! * the keeper has the run alive → FORKED becomes RUNNING; RUNNING stays;
//! * the keeper that was asked to start the run is the one answering, and it does not know the run
//!   → the spawn request never reached it (the executor died between recording FORKED and
//!   sending it): send it again — spawn requests are idempotent by `(process, run)`;
//! * otherwise (a new keeper, the one that ran it gone) → LOST: the exit status is unknowable.
//!   The old run is killed first if its pid still names it, so two never run at once.
//!
//! Exits the keeper reports for runs already recorded terminal are acknowledged (the ack was
//! lost with the crash).

use std::collections::BTreeMap;

use hearth_checkpoints::record::ProcessState;

use crate::keeper::protocol::{Child, Exit};

use super::teardown::RunKey;

/// The executor's last record of one process's current run.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRun {
    pub process: String,
    pub run: u32,
    pub state: ProcessState,
    pub pid: Option<i32>,
    /// Start time of `pid`, to tell it from a recycled pid.
    pub start_ticks: Option<i64>,
    /// The keeper the run was handed to (recorded with FORKED).
    pub keeper_pid: Option<i32>,
}

/// What the keeper answered to `Hello`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeeperState {
    pub keeper_pid: i32,
    pub children: Vec<Child>,
    pub exits: Vec<Exit>,
}

/// One thing the event loop must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The exit is already recorded; acknowledge it again.
    Ack(RunKey),
    /// Record this exit (and RUNNING before it if the run is still FORKED).
    Exited(Exit),
    /// A FORKED run is alive: record RUNNING.
    Running(Child),
    /// The keeper never received this FORKED run's spawn request: send it (same run).
    Respawn(RunKey),
    /// No keeper knows this run: kill `kill` (its pid still names it) and record LOST.
    Lost { key: RunKey, kill: Option<i32> },
}

/// Decide. `recorded` holds the exits in the keeper's stream; `pid_is` tells whether a pid
/// still has the given start time.
pub fn reconcile(
    runs: &[RecordedRun],
    keeper: KeeperState,
    recorded: &BTreeMap<RunKey, Exit>,
    pid_is: impl Fn(i32, i64) -> bool,
) -> Vec<Decision> {
    let mut out = Vec::new();
    let current: BTreeMap<&str, &RecordedRun> =
        runs.iter().map(|r| (r.process.as_str(), r)).collect();
    let open = |process: &str, run: u32| {
        current
            .get(process)
            .is_some_and(|r| r.run == run && !r.state.is_terminal())
    };
    let mut done: Vec<RunKey> = Vec::new();
    for exit in keeper.exits {
        let key = (exit.child.process.clone(), exit.child.run);
        if open(&key.0, key.1) {
            done.push(key);
            out.push(Decision::Exited(exit));
        } else {
            out.push(Decision::Ack(key));
        }
    }
    let alive: BTreeMap<RunKey, Child> = keeper
        .children
        .into_iter()
        .map(|c| ((c.process.clone(), c.run), c))
        .collect();
    for r in runs {
        let key = (r.process.clone(), r.run);
        if r.state.is_terminal() || done.contains(&key) {
            continue;
        }
        if !alive.contains_key(&key)
            && let Some(exit) = recorded.get(&key)
        {
            out.push(Decision::Exited(exit.clone()));
            continue;
        }
        match (r.state, alive.get(&key)) {
            (ProcessState::Forked, Some(c)) => out.push(Decision::Running(c.clone())),
            (ProcessState::Forked, None) if r.keeper_pid == Some(keeper.keeper_pid) => {
                out.push(Decision::Respawn(key));
            }
            (ProcessState::Forked | ProcessState::Running, None) => {
                let kill = match (r.pid, r.start_ticks) {
                    (Some(pid), Some(ticks)) if pid_is(pid, ticks) => Some(pid),
                    _ => None,
                };
                out.push(Decision::Lost { key, kill });
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keeper::protocol::ExitStatus;

    const KEEPER: i32 = 4000;

    fn run(process: &str, run: u32, state: ProcessState) -> RecordedRun {
        RecordedRun {
            process: process.into(),
            run,
            state,
            pid: (state != ProcessState::Forked).then_some(5000),
            start_ticks: (state != ProcessState::Forked).then_some(77),
            keeper_pid: Some(KEEPER),
        }
    }

    fn child(process: &str, run: u32) -> Child {
        Child {
            process: process.into(),
            run,
            pid: 5000,
            start_ticks: Some(77),
            fork_time: 1.0,
        }
    }

    fn exit(process: &str, run: u32, code: i32) -> Exit {
        Exit {
            child: child(process, run),
            status: ExitStatus::Code(code),
            stop_time: 2.0,
        }
    }

    fn keeper(children: Vec<Child>, exits: Vec<Exit>) -> KeeperState {
        KeeperState {
            keeper_pid: KEEPER,
            children,
            exits,
        }
    }

    fn decide(runs: &[RecordedRun], k: KeeperState) -> Vec<Decision> {
        reconcile(runs, k, &BTreeMap::new(), |_, _| false)
    }

    #[test]
    fn an_exit_the_keeper_recorded_while_the_executor_was_down_is_recorded() {
        let runs = [run("a", 0, ProcessState::Running)];
        let got = decide(&runs, keeper(vec![], vec![exit("a", 0, 3)]));
        assert_eq!(got, [Decision::Exited(exit("a", 0, 3))]);
    }

    #[test]
    fn an_exit_of_a_forked_run_is_recorded_too() {
        let runs = [run("a", 0, ProcessState::Forked)];
        let got = decide(&runs, keeper(vec![], vec![exit("a", 0, 0)]));
        assert_eq!(got, [Decision::Exited(exit("a", 0, 0))]);
    }

    #[test]
    fn an_exit_already_recorded_is_acknowledged_again() {
        let runs = [run("a", 1, ProcessState::Waiting)];
        let got = decide(&runs, keeper(vec![], vec![exit("a", 0, 0)]));
        assert_eq!(got, [Decision::Ack(("a".into(), 0))]);
    }

    #[test]
    fn a_forked_run_alive_in_the_keeper_becomes_running() {
        let runs = [run("a", 0, ProcessState::Forked)];
        let got = decide(&runs, keeper(vec![child("a", 0)], vec![]));
        assert_eq!(got, [Decision::Running(child("a", 0))]);
    }

    #[test]
    fn a_running_run_alive_in_the_keeper_is_left_alone() {
        let runs = [run("a", 0, ProcessState::Running)];
        assert!(decide(&runs, keeper(vec![child("a", 0)], vec![])).is_empty());
    }

    #[test]
    fn a_run_the_keeper_does_not_know_is_lost() {
        let runs = [run("a", 0, ProcessState::Running)];
        let got = decide(&runs, keeper(vec![], vec![]));
        assert_eq!(
            got,
            [Decision::Lost {
                key: ("a".into(), 0),
                kill: None
            }]
        );
    }

    #[test]
    fn a_forked_run_the_living_keeper_never_received_is_spawned_again_not_lost() {
        // The executor died between recording FORKED and sending the spawn request.
        let runs = [run("a", 4, ProcessState::Forked)];
        let got = decide(&runs, keeper(vec![], vec![]));
        assert_eq!(got, [Decision::Respawn(("a".into(), 4))]);
    }

    #[test]
    fn when_the_keeper_is_gone_forked_and_running_runs_are_lost() {
        let runs = [
            run("a", 0, ProcessState::Forked),
            run("b", 0, ProcessState::Running),
        ];
        let new_keeper = KeeperState {
            keeper_pid: KEEPER + 1,
            children: vec![],
            exits: vec![],
        };
        let got = decide(&runs, new_keeper);
        assert_eq!(
            got,
            [
                Decision::Lost {
                    key: ("a".into(), 0),
                    kill: None
                },
                Decision::Lost {
                    key: ("b".into(), 0),
                    kill: None
                }
            ]
        );
    }

    #[test]
    fn when_the_keeper_is_gone_a_lost_run_still_alive_is_killed_first() {
        let runs = [run("b", 0, ProcessState::Running)];
        let new_keeper = KeeperState {
            keeper_pid: KEEPER + 1,
            children: vec![],
            exits: vec![],
        };
        let got = reconcile(&runs, new_keeper, &BTreeMap::new(), |pid, ticks| {
            pid == 5000 && ticks == 77
        });
        assert_eq!(
            got,
            [Decision::Lost {
                key: ("b".into(), 0),
                kill: Some(5000)
            }]
        );
    }

    #[test]
    fn when_the_keeper_is_gone_exits_in_its_stream_are_recorded() {
        let runs = [run("a", 0, ProcessState::Running)];
        let new_keeper = KeeperState {
            keeper_pid: KEEPER + 1,
            children: vec![],
            exits: vec![],
        };
        let stream = BTreeMap::from([(("a".to_owned(), 0), exit("a", 0, 9))]);
        let got = reconcile(&runs, new_keeper, &stream, |_, _| true);
        assert_eq!(got, [Decision::Exited(exit("a", 0, 9))]);
    }

    #[test]
    fn terminal_and_waiting_runs_need_nothing() {
        let runs = [
            run("a", 0, ProcessState::Success),
            run("b", 2, ProcessState::Waiting),
        ];
        assert!(decide(&runs, keeper(vec![], vec![])).is_empty());
    }
}
