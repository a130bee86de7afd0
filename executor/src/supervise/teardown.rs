//! Teardown escalation (DESIGN 6) as a state machine: CLEANING one stage at a time, then the
//! FINALIZING deadline.
//!
//! The machine never reads the clock and never does I/O itself: the time comes in, what is left
//! of the task comes in as [`Left`], and it acts through the small seams below — the keeper link
//! ([`KeeperLink`]), the task's cgroup ([`CgroupOps`]) — while the one asynchronous act, a
//! lifecycle POST, is handed to the event loop ([`Teardown::pending_post`]), which sends it
//! through a [`LifecyclePoster`] and feeds the answer back ([`Teardown::on_post`]). Its tests run
//! on paused time with recording fakes and no processes.
//!
//! The escalation: `POST graceful_shutdown_endpoint` and wait up to `graceful_shutdown_wait`;
//! `POST shutdown_endpoint` and wait up to `shutdown_wait` (a wait is skipped when its POST could
//! not connect); SIGTERM the whole task and wait up to `finalization_wait`; SIGKILL. Each stage
//! ends the moment nothing is left. A plan that ended on its own skips the POSTs.

use std::collections::BTreeSet;
use std::time::Duration;

use hearth_checkpoints::config::LifecycleConfig;
use hearth_checkpoints::record::{ProcessState, StepKind};
use nix::sys::signal::Signal;
use tokio::time::Instant;

use crate::health::PostOutcome;
use crate::keeper::protocol::Request;

/// A run of a process: its name and run number.
pub type RunKey = (String, u32);

/// How long a lifecycle POST may take to answer (the wait after it is separate).
pub const LIFECYCLE_POST_TIMEOUT: Duration = Duration::from_secs(2);

/// A run younger than this when SIGTERM is sent is also signalled directly, and again after
/// [`TERM_AGAIN_AFTER`]: it may not be in the cgroup yet (it joins just before exec), and its
/// shell may still be starting (bash can swallow a SIGTERM then).
pub const YOUNG_RUN: Duration = Duration::from_secs(1);
pub const TERM_AGAIN_AFTER: Duration = Duration::from_millis(250);

/// The keeper link as teardown sees it: requests are queued, and sent once the turn's records
/// are durable.
pub trait KeeperLink {
    fn request(&mut self, req: Request);
}

impl KeeperLink for Vec<Request> {
    fn request(&mut self, req: Request) {
        self.push(req);
    }
}

/// The task's cgroup as teardown (and the event loop) sees it.
pub trait CgroupOps {
    /// Every process in the cgroup.
    fn pids(&self) -> Result<Vec<i32>, crate::cgroup::CgroupError>;
    /// A polite signal to every member.
    fn signal_all(&self, signal: Signal);
    /// SIGKILL every member, forking ones included.
    fn kill_all(&self);
}

impl CgroupOps for crate::cgroup::TaskCgroup {
    fn pids(&self) -> Result<Vec<i32>, crate::cgroup::CgroupError> {
        crate::cgroup::TaskCgroup::pids(self)
    }
    fn signal_all(&self, signal: Signal) {
        if let Err(e) = crate::cgroup::TaskCgroup::signal_all(self, signal) {
            tracing::warn!(error = %crate::error_chain(&e), %signal, "cannot signal the task cgroup");
        }
    }
    /// On tokio's blocking pool: without `cgroup.kill`, killing freezes the cgroup and polls
    /// (up to a second) for the freeze. The exits come back through the keeper.
    fn kill_all(&self) {
        let cg = self.clone();
        let kill = move || {
            if let Err(e) = crate::cgroup::TaskCgroup::kill_all(&cg) {
                tracing::warn!(error = %crate::error_chain(&e), "cannot kill the task cgroup");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(kill)),
            Err(_) => kill(),
        }
    }
}

/// Sends a lifecycle POST (`/quitquitquit`, `/abortabortabort`).
pub trait LifecyclePoster {
    fn post(
        &self,
        port: u16,
        endpoint: &str,
        timeout: Duration,
    ) -> impl Future<Output = PostOutcome>;
}

/// The real poster: HTTP to `127.0.0.1:<port>`.
#[derive(Debug, Default, Clone, Copy)]
pub struct HttpPoster;

impl LifecyclePoster for HttpPoster {
    async fn post(&self, port: u16, endpoint: &str, timeout: Duration) -> PostOutcome {
        crate::health::post_lifecycle(port, endpoint, timeout).await
    }
}

/// A step taken, for the event loop to record and print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepTaken {
    pub step: StepKind,
    pub detail: Option<String>,
}

/// Which lifecycle request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostKind {
    /// `graceful_shutdown_endpoint`, then `graceful_shutdown_wait`.
    Quit,
    /// `shutdown_endpoint`, then `shutdown_wait`.
    Abort,
}

/// A lifecycle request the event loop must send before going on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecyclePost {
    pub kind: PostKind,
    pub port: u16,
    pub endpoint: String,
    pub wait: Duration,
}

/// The task's lifecycle endpoints, when it has a lifecycle config and its port.
#[derive(Debug, Clone, PartialEq)]
pub struct Lifecycle {
    pub port: u16,
    pub config: LifecycleConfig,
}

impl Lifecycle {
    fn post(&self, kind: PostKind) -> LifecyclePost {
        let (endpoint, wait) = match kind {
            PostKind::Quit => (
                &self.config.graceful_shutdown_endpoint,
                self.config.graceful_shutdown_wait,
            ),
            PostKind::Abort => (&self.config.shutdown_endpoint, self.config.shutdown_wait),
        };
        LifecyclePost {
            kind,
            port: self.port,
            endpoint: endpoint.clone(),
            wait,
        }
    }
}

/// What is left of the task, as the event loop sees it this turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    /// Regular (non-final) runs FORKED or RUNNING.
    pub regular: usize,
    /// Every run FORKED or RUNNING, final ones included.
    pub all: usize,
    /// The cgroup holds no process the executor does not track as running. Looked at only when
    /// `regular` is 0 (false otherwise), the one case where it decides anything.
    pub cgroup_empty: bool,
}

impl Left {
    fn regular_gone(&self) -> bool {
        self.regular == 0 && self.cgroup_empty
    }
}

/// The executor's view of one live run, for signalling.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    pub process: String,
    pub run: u32,
    pub state: ProcessState,
    /// When this executor saw the run start (unknown for runs adopted after a restart).
    pub started_at: Option<Instant>,
    pub is_final: bool,
}

/// What teardown acts on during one call.
#[derive(Debug)]
pub struct Acts<'a, K: KeeperLink, C: CgroupOps> {
    pub keeper: &'a mut K,
    /// `None` without cgroups: the keeper then signals everything it is the parent of.
    pub cgroup: Option<&'a C>,
    /// The task's runs (live ones are signalled).
    pub runs: &'a [RunView],
    /// Runs the executor signalled: their signal deaths are KILLED, not failures.
    pub signalled: &'a mut BTreeSet<RunKey>,
    /// Steps taken, for the loop to record.
    pub steps: &'a mut Vec<StepTaken>,
}

impl<K: KeeperLink, C: CgroupOps> Acts<'_, K, C> {
    /// Signal every process of the task once: the whole cgroup (or, without one, everything the
    /// keeper is the parent of), plus, through the keeper, runs whose spawn may not have happened
    /// yet or happened moments ago. Returns those young runs.
    fn signal_task(&mut self, sig: Signal, include_finals: bool, now: Instant) -> Vec<RunKey> {
        let mut young = Vec::new();
        for r in self.runs {
            if (r.is_final && !include_finals) || !is_live(r.state) {
                continue;
            }
            self.signalled.insert((r.process.clone(), r.run));
            let is_young = r.state == ProcessState::Forked
                || r.started_at
                    .is_some_and(|t| now.saturating_duration_since(t) < YOUNG_RUN);
            if is_young {
                self.keeper.request(Request::Signal {
                    process: r.process.clone(),
                    run: r.run,
                    signal: sig as i32,
                });
                young.push((r.process.clone(), r.run));
            }
        }
        match self.cgroup {
            Some(cg) if sig == Signal::SIGKILL => cg.kill_all(),
            Some(cg) => cg.signal_all(sig),
            None => self
                .keeper
                .request(Request::SignalAll { signal: sig as i32 }),
        }
        young
    }

    fn step(&mut self, step: StepKind, detail: Option<String>) {
        self.steps.push(StepTaken { step, detail });
    }

    /// SIGKILL every process of the task.
    fn kill_hard(&mut self, why: &str, now: Instant) {
        self.step(StepKind::Sigkill, Some(why.to_owned()));
        self.signal_task(Signal::SIGKILL, true, now);
    }
}

fn is_live(state: ProcessState) -> bool {
    matches!(state, ProcessState::Forked | ProcessState::Running)
}

/// The CLEANING stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// A lifecycle POST is due: the event loop sends it and calls [`Teardown::on_post`].
    Posting(LifecyclePost),
    /// Waiting after a lifecycle POST, until `until`.
    AfterPost { kind: PostKind, until: Instant },
    /// SIGTERM sent; waiting up to the end of the `finalization_wait` budget. `again`: young
    /// runs to SIGTERM once more, at that time.
    Term {
        until: Instant,
        again: Option<(Instant, Vec<RunKey>)>,
    },
    /// SIGKILL sent; waiting for the exits.
    Killed,
}

/// What a call to [`Teardown::poll`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Stay in CLEANING.
    Cleaning,
    /// Every regular process is gone: enter FINALIZING with this deadline.
    Finalize { deadline: Instant },
}

/// CLEANING: the escalation over the regular processes.
#[derive(Debug, Clone, PartialEq)]
pub struct Teardown {
    stage: Stage,
    lifecycle: Option<Lifecycle>,
    finalization_wait: Duration,
    /// End of the `finalization_wait` budget, once SIGTERM was sent.
    budget_end: Option<Instant>,
}

impl Teardown {
    /// Start tearing the regular processes down. `graceful`: a kill, an unhealthy task or a disk
    /// overrun, where the lifecycle endpoints are asked first; a plan that ended on its own goes
    /// straight to SIGTERM for whatever is left (ephemeral processes).
    pub fn begin<K: KeeperLink, C: CgroupOps>(
        graceful: bool,
        lifecycle: Option<Lifecycle>,
        finalization_wait: Duration,
        left: Left,
        now: Instant,
        acts: &mut Acts<'_, K, C>,
    ) -> Teardown {
        let mut t = Teardown {
            stage: Stage::Killed,
            lifecycle,
            finalization_wait,
            budget_end: None,
        };
        match &t.lifecycle {
            Some(lc) if graceful && !left.regular_gone() => {
                t.stage = Stage::Posting(lc.post(PostKind::Quit));
            }
            _ => t.enter_term(left, now, acts),
        }
        t
    }

    /// A recovered task found in CLEANING resumes at SIGTERM: it is safe to repeat, and the
    /// lifecycle POSTs had their turn. The budget restarts: an executor that was down cannot have
    /// spent it.
    pub fn resume<K: KeeperLink, C: CgroupOps>(
        finalization_wait: Duration,
        left: Left,
        now: Instant,
        acts: &mut Acts<'_, K, C>,
    ) -> Teardown {
        let mut t = Teardown {
            stage: Stage::Killed,
            lifecycle: None,
            finalization_wait,
            budget_end: None,
        };
        t.enter_term(left, now, acts);
        t
    }

    pub fn stage(&self) -> &Stage {
        &self.stage
    }

    /// The lifecycle POST the event loop must send now, if any.
    pub fn pending_post(&self) -> Option<&LifecyclePost> {
        match &self.stage {
            Stage::Posting(post) => Some(post),
            _ => None,
        }
    }

    /// The POST of [`Teardown::pending_post`] was answered (or not): record it, and wait — unless
    /// it could not connect, when there is nothing to wait for.
    pub fn on_post<K: KeeperLink, C: CgroupOps>(
        &mut self,
        outcome: &PostOutcome,
        now: Instant,
        acts: &mut Acts<'_, K, C>,
    ) {
        let Stage::Posting(post) = &self.stage else {
            return;
        };
        acts.step(
            StepKind::Post {
                endpoint: post.endpoint.trim_start_matches('/').to_owned(),
            },
            Some(format!("{outcome:?}")),
        );
        let until = if outcome.connected() {
            now + post.wait
        } else {
            now
        };
        self.stage = Stage::AfterPost {
            kind: post.kind,
            until,
        };
    }

    /// Decide this turn's escalation.
    pub fn poll<K: KeeperLink, C: CgroupOps>(
        &mut self,
        left: Left,
        now: Instant,
        acts: &mut Acts<'_, K, C>,
    ) -> Next {
        if let Stage::Term { again, .. } = &mut self.stage
            && again.as_ref().is_some_and(|(at, _)| now >= *at)
            && let Some((_, runs)) = again.take()
        {
            for (process, run) in runs {
                let live = acts
                    .runs
                    .iter()
                    .any(|r| r.process == process && r.run == run && is_live(r.state));
                if live {
                    acts.keeper.request(Request::Signal {
                        process,
                        run,
                        signal: libc::SIGTERM,
                    });
                }
            }
        }
        if left.regular_gone() {
            if self.stage != Stage::Killed || left.all == 0 {
                let deadline = self
                    .budget_end
                    .unwrap_or_else(|| now + self.finalization_wait);
                return Next::Finalize { deadline };
            }
            return Next::Cleaning;
        }
        match &self.stage {
            Stage::Posting(_) | Stage::Killed => {}
            Stage::AfterPost { kind, until } if now >= *until => match (kind, &self.lifecycle) {
                (PostKind::Quit, Some(lc)) => {
                    self.stage = Stage::Posting(lc.post(PostKind::Abort));
                }
                _ => self.enter_term(left, now, acts),
            },
            Stage::AfterPost { .. } => {}
            Stage::Term { until, .. } if now >= *until => {
                acts.kill_hard("finalization_wait expired while cleaning", now);
                self.stage = Stage::Killed;
            }
            Stage::Term { .. } => {}
        }
        Next::Cleaning
    }

    /// When the machine next wants a turn without any event.
    pub fn next_wakeup(&self) -> Option<Instant> {
        match &self.stage {
            Stage::Posting(_) | Stage::Killed => None,
            Stage::AfterPost { until, .. } => Some(*until),
            Stage::Term { until, again } => {
                Some(again.as_ref().map_or(*until, |(at, _)| (*at).min(*until)))
            }
        }
    }

    /// SIGTERM every regular process (the whole cgroup) and wait up to `finalization_wait`.
    fn enter_term<K: KeeperLink, C: CgroupOps>(
        &mut self,
        left: Left,
        now: Instant,
        acts: &mut Acts<'_, K, C>,
    ) {
        let until = now + self.finalization_wait;
        self.budget_end = Some(until);
        let mut again = None;
        if !left.regular_gone() {
            acts.step(StepKind::Sigterm, None);
            let young = acts.signal_task(Signal::SIGTERM, false, now);
            if !young.is_empty() {
                again = Some((now + TERM_AGAIN_AFTER, young));
            }
        }
        self.stage = Stage::Term { until, again };
    }
}

/// FINALIZING: final processes run until they are done or the budget's deadline passes, when
/// whatever is left is killed (once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finalizing {
    pub deadline: Instant,
    killed: bool,
}

impl Finalizing {
    pub fn new(deadline: Instant) -> Finalizing {
        Finalizing {
            deadline,
            killed: false,
        }
    }

    /// Whether the deadline has passed.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// Decide this turn: past the deadline, SIGKILL what still runs. Returns whether final
    /// processes may still be launched.
    pub fn poll<K: KeeperLink, C: CgroupOps>(
        &mut self,
        running: usize,
        now: Instant,
        acts: &mut Acts<'_, K, C>,
    ) -> bool {
        if !self.expired(now) {
            return true;
        }
        if running > 0 && !self.killed {
            self.killed = true;
            acts.kill_hard("finalization_wait expired while finalizing", now);
        }
        false
    }

    pub fn next_wakeup(&self) -> Option<Instant> {
        (!self.killed).then_some(self.deadline)
    }
}

#[cfg(test)]
mod tests;
