//! What a launch sends the keeper: the spawn request of one run, built from the task config
//! (command line, environment, credentials, log targets).

use hearth_checkpoints::config::{LogDestination, LogMode};

use crate::keeper::protocol::{Credentials, LogTarget, SpawnSpec};
use crate::prepare::Prepared;

/// The spawn request of run `run` of process `name`, or `None` if the task has no such process.
pub fn spawn_spec(p: &Prepared, name: &str, run: u32) -> Option<SpawnSpec> {
    let cfg = p.task.processes.iter().find(|c| c.name == name)?;
    let log_dir = p.sandbox.join(".logs").join(name).join(run.to_string());
    let target = |stream: &str| -> LogTarget {
        let path = log_dir.join(stream).display().to_string();
        match (cfg.logger.destination, cfg.logger.mode) {
            (LogDestination::None, _) => LogTarget::Discard,
            (LogDestination::Console, _) => LogTarget::Inherit,
            (LogDestination::File, LogMode::Standard) => LogTarget::File { path },
            (destination, mode) => LogTarget::Rotate {
                path,
                max_bytes: if mode == LogMode::Rotate {
                    cfg.logger.log_size
                } else {
                    u64::MAX
                },
                backups: if mode == LogMode::Rotate {
                    cfg.logger.backups
                } else {
                    0
                },
                console: destination == LogDestination::Both,
            },
        }
    };
    Some(SpawnSpec {
        process: name.to_owned(),
        run,
        argv: vec!["/bin/bash".into(), "-c".into(), cfg.cmdline.clone()],
        env: environment(p, name, run),
        cwd: p.sandbox.display().to_string(),
        credentials: p.user.switch.then(|| Credentials {
            uid: p.user.uid,
            gid: p.user.gid,
            groups: p.user.groups.clone(),
        }),
        stdout: target("stdout"),
        stderr: target("stderr"),
    })
}

/// The environment of every process (DESIGN 4), and of shell health checks.
pub fn environment(p: &Prepared, name: &str, run: u32) -> Vec<String> {
    let sandbox = p.sandbox.display().to_string();
    let path = std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mut env = vec![
        format!("HOME={sandbox}"),
        format!("USER={}", p.user.name),
        format!("LOGNAME={}", p.user.name),
        format!("PATH={path}"),
        format!("HEARTH_TASK_ID={}", p.task_id),
        format!("HEARTH_PROCESS={name}"),
        format!("HEARTH_RUN={run}"),
        format!("HEARTH_SANDBOX={sandbox}"),
    ];
    for (k, v) in &p.header.ports {
        env.push(format!(
            "HEARTH_PORT_{}={v}",
            k.to_ascii_uppercase()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        ));
    }
    let profile = p.sandbox.join(".thermos_profile");
    if profile.exists() {
        env.push(format!("BASH_ENV={}", profile.display()));
    }
    env
}
