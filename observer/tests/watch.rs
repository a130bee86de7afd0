//! Discovery through file watching: tasks that appear, grow and finish after the observer has
//! started show up without a rescan (the rescan interval is an hour here).
// A test, off the server's runtime: plain file calls are fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{Fixture, TaskSpec, TestResult};
use hearth_checkpoints::record::{Record, TaskState, TaskStatus};
use hearth_checkpoints::root::TaskPlace;
use hearth_observer::store::{Observer, Which};
use hearth_testkit::wait_until_async;

const LIMIT: Duration = Duration::from_secs(10);

fn ids(obs: &Observer, which: Which) -> Vec<String> {
    obs.page(which, 0, 100)
        .0
        .iter()
        .map(|c| c.task_id.clone())
        .collect()
}

#[tokio::test]
async fn new_growing_and_finishing_tasks_are_seen_through_inotify() -> TestResult {
    let fx = Fixture::new()?;
    fx.write_task(&TaskSpec::simple("old", false, 1))?;
    let mut settings = common::test_settings(fx.dir.path());
    settings.watch = true;
    let obs = Observer::open(&[fx.root.path().to_owned()], settings)?;
    let _bg = hearth_observer::watch::spawn(obs.clone())?;

    let mut w = fx.write_task(&TaskSpec::simple("new", true, 2))?;
    wait_until_async("the new task to be listed as active", LIMIT, || {
        std::future::ready(ids(&obs, Which::Active) == ["new"])
    })
    .await?;

    w.append(&Record::Task(TaskStatus {
        state: TaskState::Killed,
        timestamp_ms: 3,
        runner_pid: None,
        runner_uid: None,
        reason: None,
        outcome: None,
        cause: None,
    }))?;
    w.commit()?;
    wait_until_async("the appended status to be replayed", LIMIT, || {
        std::future::ready(
            obs.task("new")
                .is_some_and(|c| c.summary().state == TaskState::Killed),
        )
    })
    .await?;

    // The executor copies the config to finished, then removes it from active.
    std::fs::rename(
        fx.root.task_config_path("new", TaskPlace::Active),
        fx.root.task_config_path("new", TaskPlace::Finished),
    )?;
    wait_until_async("the task to move to the finished list", LIMIT, || {
        std::future::ready(
            ids(&obs, Which::Active).is_empty() && ids(&obs, Which::Finished).len() == 2,
        )
    })
    .await?;
    Ok(())
}
