//! Every teardown path on paused time, with a recording fake task: its processes, its cgroup and
//! its lifecycle server are one [`World`]; no process is started.

use std::cell::RefCell;

use super::*;

/// How the task's lifecycle server answers a POST.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Server {
    /// Answers 200 and keeps running.
    Answers,
    /// Nothing listens: connection refused.
    Refused,
    /// Answers, and the task's processes exit at once.
    Exits,
}

#[derive(Debug)]
struct FakeProc {
    name: &'static str,
    alive: bool,
    honours_term: bool,
    is_final: bool,
}

/// The fake task: records every signal and POST, and lets processes die as they would.
#[derive(Debug)]
struct World {
    procs: RefCell<Vec<FakeProc>>,
    server: Server,
    log: RefCell<Vec<String>>,
    start: Instant,
}

impl World {
    fn new(server: Server, procs: Vec<FakeProc>) -> World {
        World {
            procs: RefCell::new(procs),
            server,
            log: RefCell::new(Vec::new()),
            start: Instant::now(),
        }
    }

    fn note(&self, what: String) {
        let at = Instant::now().duration_since(self.start).as_millis();
        self.log.borrow_mut().push(format!("{at}ms {what}"));
    }

    fn left(&self) -> Left {
        let procs = self.procs.borrow();
        let live = |f: &dyn Fn(&FakeProc) -> bool| procs.iter().filter(|p| p.alive && f(p)).count();
        Left {
            regular: live(&|p| !p.is_final),
            all: live(&|_| true),
            cgroup_empty: true,
        }
    }

    fn runs(&self) -> Vec<RunView> {
        self.procs
            .borrow()
            .iter()
            .map(|p| RunView {
                process: p.name.to_owned(),
                run: 0,
                state: if p.alive {
                    ProcessState::Running
                } else {
                    ProcessState::Killed
                },
                // Old enough not to be signalled directly.
                started_at: Some(self.start - Duration::from_secs(60)),
                is_final: p.is_final,
            })
            .collect()
    }
}

impl CgroupOps for World {
    fn pids(&self) -> Result<Vec<i32>, crate::cgroup::CgroupError> {
        Ok(Vec::new())
    }
    fn signal_all(&self, signal: Signal) {
        self.note(format!("cgroup {signal}"));
        if signal == Signal::SIGTERM {
            for p in self.procs.borrow_mut().iter_mut() {
                if p.honours_term {
                    p.alive = false;
                }
            }
        }
    }
    fn kill_all(&self) {
        self.note("cgroup SIGKILL".into());
        for p in self.procs.borrow_mut().iter_mut() {
            p.alive = false;
        }
    }
}

impl LifecyclePoster for World {
    async fn post(&self, port: u16, endpoint: &str, _timeout: Duration) -> PostOutcome {
        self.note(format!("POST :{port}{endpoint}"));
        match self.server {
            Server::Refused => PostOutcome::Refused {
                detail: "connection refused".into(),
            },
            Server::Answers => PostOutcome::Connected { status: Some(200) },
            Server::Exits => {
                for p in self.procs.borrow_mut().iter_mut() {
                    p.alive = false;
                }
                PostOutcome::Connected { status: Some(200) }
            }
        }
    }
}

fn lifecycle() -> Lifecycle {
    Lifecycle {
        port: 8080,
        config: LifecycleConfig {
            port: "health".into(),
            graceful_shutdown_endpoint: "/quitquitquit".into(),
            shutdown_endpoint: "/abortabortabort".into(),
            graceful_shutdown_wait: Duration::from_secs(5),
            shutdown_wait: Duration::from_secs(5),
        },
    }
}

const WAIT: Duration = Duration::from_secs(30);

fn server(honours_term: bool) -> FakeProc {
    FakeProc {
        name: "server",
        alive: true,
        honours_term,
        is_final: false,
    }
}

/// What a teardown did: the world's log, the steps recorded, the keeper requests, and when
/// FINALIZING began (ms after the start).
#[derive(Debug)]
struct Run {
    log: Vec<String>,
    steps: Vec<String>,
    keeper: Vec<Request>,
    finalized_at_ms: u128,
    deadline_ms: u128,
}

/// Drive CLEANING to its end the way the event loop does, sleeping (on paused time) until each
/// wake-up.
async fn teardown(world: &World, graceful: bool, lc: Option<Lifecycle>) -> Run {
    let mut keeper: Vec<Request> = Vec::new();
    let mut signalled = BTreeSet::new();
    let mut steps = Vec::new();
    let runs = world.runs();
    let mut acts = Acts {
        keeper: &mut keeper,
        cgroup: Some(world),
        runs: &runs,
        signalled: &mut signalled,
        steps: &mut steps,
    };
    let mut t = Teardown::begin(graceful, lc, WAIT, world.left(), Instant::now(), &mut acts);
    let deadline = loop {
        let runs = world.runs();
        let mut acts = Acts {
            keeper: &mut keeper,
            cgroup: Some(world),
            runs: &runs,
            signalled: &mut signalled,
            steps: &mut steps,
        };
        if let Some(post) = t.pending_post().cloned() {
            let outcome = world
                .post(post.port, &post.endpoint, LIFECYCLE_POST_TIMEOUT)
                .await;
            t.on_post(&outcome, Instant::now(), &mut acts);
        }
        let (stage, left) = (std::mem::discriminant(t.stage()), world.left());
        match t.poll(left, Instant::now(), &mut acts) {
            Next::Finalize { deadline } => break deadline,
            // As the event loop: a new stage, or an exit, is another turn at once.
            Next::Cleaning
                if t.pending_post().is_some()
                    || std::mem::discriminant(t.stage()) != stage
                    || world.left() != left => {}
            Next::Cleaning => match t.next_wakeup() {
                Some(at) => tokio::time::sleep_until(at).await,
                None => panic!("stuck in {:?}", t.stage()),
            },
        }
    };
    let ms = |t: Instant| t.duration_since(world.start).as_millis();
    Run {
        log: world.log.borrow().clone(),
        steps: steps.iter().map(|s| s.step.name().to_owned()).collect(),
        keeper,
        finalized_at_ms: ms(Instant::now()),
        deadline_ms: ms(deadline),
    }
}

#[tokio::test(start_paused = true)]
async fn graceful_post_answered_waits_then_escalates_to_abort_and_sigterm() {
    let world = World::new(Server::Answers, vec![server(true)]);
    let run = teardown(&world, true, Some(lifecycle())).await;
    assert_eq!(
        run.log,
        [
            "0ms POST :8080/quitquitquit",
            "5000ms POST :8080/abortabortabort",
            "10000ms cgroup SIGTERM",
        ]
    );
    assert_eq!(run.steps, ["quitquitquit", "abortabortabort", "sigterm"]);
    assert_eq!(run.finalized_at_ms, 10_000);
    // The budget starts with SIGTERM.
    assert_eq!(run.deadline_ms, 40_000);
}

#[tokio::test(start_paused = true)]
async fn graceful_post_refused_skips_both_waits() {
    let world = World::new(Server::Refused, vec![server(true)]);
    let run = teardown(&world, true, Some(lifecycle())).await;
    assert_eq!(
        run.log,
        [
            "0ms POST :8080/quitquitquit",
            "0ms POST :8080/abortabortabort",
            "0ms cgroup SIGTERM",
        ]
    );
    assert_eq!(run.finalized_at_ms, 0);
}

#[tokio::test(start_paused = true)]
async fn server_exiting_on_quit_ends_cleaning_at_once() {
    let world = World::new(Server::Exits, vec![server(false)]);
    let run = teardown(&world, true, Some(lifecycle())).await;
    assert_eq!(run.log, ["0ms POST :8080/quitquitquit"]);
    assert_eq!(run.steps, ["quitquitquit"]);
    assert_eq!(run.finalized_at_ms, 0);
    // No SIGTERM was sent, so the budget starts when FINALIZING does.
    assert_eq!(run.deadline_ms, WAIT.as_millis());
}

#[tokio::test(start_paused = true)]
async fn sigterm_honoured_ends_cleaning_without_sigkill() {
    let world = World::new(Server::Refused, vec![server(true)]);
    let run = teardown(&world, true, None).await;
    assert_eq!(run.log, ["0ms cgroup SIGTERM"]);
    assert_eq!(run.steps, ["sigterm"]);
    // An old run is signalled through the cgroup only, not through the keeper.
    assert!(run.keeper.is_empty(), "{:?}", run.keeper);
    assert_eq!(run.finalized_at_ms, 0);
    assert_eq!(run.deadline_ms, WAIT.as_millis());
}

#[tokio::test(start_paused = true)]
async fn sigterm_ignored_is_followed_by_sigkill_when_the_budget_ends() {
    let world = World::new(Server::Refused, vec![server(false)]);
    let run = teardown(&world, true, None).await;
    assert_eq!(run.log, ["0ms cgroup SIGTERM", "30000ms cgroup SIGKILL"]);
    assert_eq!(run.steps, ["sigterm", "sigkill"]);
    assert_eq!(run.finalized_at_ms, 30_000);
    // FINALIZING gets what is left of the budget: nothing.
    assert_eq!(run.deadline_ms, 30_000);
}

#[tokio::test(start_paused = true)]
async fn a_plan_that_ended_by_itself_skips_the_lifecycle_posts() {
    let world = World::new(Server::Answers, vec![server(true)]);
    let run = teardown(&world, false, Some(lifecycle())).await;
    assert_eq!(run.log, ["0ms cgroup SIGTERM"]);
}

#[tokio::test(start_paused = true)]
async fn nothing_left_means_no_post_and_no_signal() {
    let mut p = server(true);
    p.alive = false;
    let world = World::new(Server::Answers, vec![p]);
    let run = teardown(&world, true, Some(lifecycle())).await;
    assert!(run.log.is_empty(), "{:?}", run.log);
    assert!(run.steps.is_empty());
}

#[tokio::test(start_paused = true)]
async fn final_processes_are_not_signalled_by_sigterm() {
    let world = World::new(
        Server::Refused,
        vec![
            server(true),
            FakeProc {
                name: "final",
                alive: false,
                honours_term: false,
                is_final: true,
            },
        ],
    );
    let runs = world.runs();
    let mut keeper = Vec::new();
    let mut signalled = BTreeSet::new();
    let mut steps = Vec::new();
    let mut acts = Acts {
        keeper: &mut keeper,
        cgroup: Some(&world),
        runs: &runs,
        signalled: &mut signalled,
        steps: &mut steps,
    };
    let _ = Teardown::begin(true, None, WAIT, world.left(), Instant::now(), &mut acts);
    assert_eq!(signalled, BTreeSet::from([("server".to_owned(), 0)]));
}

#[tokio::test(start_paused = true)]
async fn young_runs_are_signalled_through_the_keeper_twice() {
    let world = World::new(Server::Refused, vec![server(false)]);
    let now = Instant::now();
    let runs = vec![
        RunView {
            process: "forked".into(),
            run: 2,
            state: ProcessState::Forked,
            started_at: None,
            is_final: false,
        },
        RunView {
            process: "fresh".into(),
            run: 0,
            state: ProcessState::Running,
            started_at: Some(now),
            is_final: false,
        },
    ];
    let mut keeper = Vec::new();
    let mut signalled = BTreeSet::new();
    let mut steps = Vec::new();
    let left = Left {
        regular: 2,
        all: 2,
        cgroup_empty: true,
    };
    let mut acts = Acts {
        keeper: &mut keeper,
        cgroup: Some(&world),
        runs: &runs,
        signalled: &mut signalled,
        steps: &mut steps,
    };
    let mut t = Teardown::begin(false, None, WAIT, left, now, &mut acts);
    assert_eq!(t.next_wakeup(), Some(now + TERM_AGAIN_AFTER));
    tokio::time::sleep(TERM_AGAIN_AFTER).await;
    let next = t.poll(left, Instant::now(), &mut acts);
    assert_eq!(next, Next::Cleaning);
    let sig = |process: &str, run| Request::Signal {
        process: process.into(),
        run,
        signal: libc::SIGTERM,
    };
    assert_eq!(
        keeper,
        [
            sig("forked", 2),
            sig("fresh", 0),
            sig("forked", 2),
            sig("fresh", 0)
        ]
    );
    assert_eq!(t.next_wakeup(), Some(now + WAIT));
}

#[tokio::test(start_paused = true)]
async fn without_a_cgroup_the_keeper_signals_everything() {
    let runs = Vec::new();
    let mut keeper = Vec::new();
    let mut signalled = BTreeSet::new();
    let mut steps = Vec::new();
    let mut acts: Acts<'_, Vec<Request>, World> = Acts {
        keeper: &mut keeper,
        cgroup: None,
        runs: &runs,
        signalled: &mut signalled,
        steps: &mut steps,
    };
    let strays = Left {
        regular: 1,
        all: 1,
        cgroup_empty: true,
    };
    let _ = Teardown::begin(true, None, WAIT, strays, Instant::now(), &mut acts);
    assert_eq!(
        keeper,
        [Request::SignalAll {
            signal: libc::SIGTERM
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn a_recovered_teardown_resumes_at_sigterm_with_a_fresh_budget() {
    let world = World::new(Server::Answers, vec![server(false)]);
    let runs = world.runs();
    let mut keeper = Vec::new();
    let mut signalled = BTreeSet::new();
    let mut steps = Vec::new();
    let mut acts = Acts {
        keeper: &mut keeper,
        cgroup: Some(&world),
        runs: &runs,
        signalled: &mut signalled,
        steps: &mut steps,
    };
    let now = Instant::now();
    let t = Teardown::resume(WAIT, world.left(), now, &mut acts);
    assert_eq!(world.log.borrow().as_slice(), ["0ms cgroup SIGTERM"]);
    assert_eq!(t.next_wakeup(), Some(now + WAIT));
}

/// FINALIZING with a final process that needs `runs_for`; the budget has `WAIT` left.
async fn finalize(runs_for: Duration) -> (Vec<String>, Vec<String>, u128) {
    let world = World::new(Server::Refused, Vec::new());
    let start = Instant::now();
    let exits_at = start + runs_for;
    let mut f = Finalizing::new(start + WAIT);
    let mut keeper = Vec::new();
    let mut signalled = BTreeSet::new();
    let mut steps = Vec::new();
    let runs = Vec::new();
    loop {
        let now = Instant::now();
        let mut running = usize::from(now < exits_at);
        if world.log.borrow().iter().any(|l| l.ends_with("SIGKILL")) {
            running = 0;
        }
        let mut acts = Acts {
            keeper: &mut keeper,
            cgroup: Some(&world),
            runs: &runs,
            signalled: &mut signalled,
            steps: &mut steps,
        };
        let may_launch = f.poll(running, now, &mut acts);
        assert_eq!(may_launch, now < start + WAIT);
        if world.log.borrow().iter().any(|l| l.ends_with("SIGKILL")) {
            running = 0;
        }
        if running == 0 {
            break;
        }
        let wake = [f.next_wakeup(), (now < exits_at).then_some(exits_at)]
            .into_iter()
            .flatten()
            .min();
        match wake {
            Some(t) => tokio::time::sleep_until(t).await,
            None => tokio::task::yield_now().await,
        }
    }
    let steps = steps.iter().map(|s| s.step.name().to_owned()).collect();
    let log = world.log.borrow().clone();
    (log, steps, Instant::now().duration_since(start).as_millis())
}

#[tokio::test(start_paused = true)]
async fn final_processes_within_the_budget_run_to_their_end() {
    let (log, steps, ended_ms) = finalize(Duration::from_secs(10)).await;
    assert!(log.is_empty(), "{log:?}");
    assert!(steps.is_empty());
    assert_eq!(ended_ms, 10_000);
}

#[tokio::test(start_paused = true)]
async fn final_processes_beyond_the_budget_are_killed_once_at_the_deadline() {
    let (log, steps, ended_ms) = finalize(Duration::from_secs(300)).await;
    assert_eq!(log, ["30000ms cgroup SIGKILL"]);
    assert_eq!(steps, ["sigkill"]);
    assert_eq!(ended_ms, 30_000);
}
