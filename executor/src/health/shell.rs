//! Shell health checks: `/bin/bash -c <shell_command>` in the sandbox, with the task's
//! environment, as the role user; healthy iff it exits 0 within the timeout.
//!
//! The command runs in a process group of its own. At the timeout — or when the check is
//! abandoned, e.g. the monitor is stopped mid-check — the whole group is killed with `SIGKILL`,
//! so nothing it started outlives the check (unless it left the group on purpose).
//!
//! It runs as the task's user with the same supplementary groups, gid and uid as the task's
//! processes (see [`crate::spawn::switch_credentials`]). Its output is discarded.

use std::path::PathBuf;
use std::pin::{Pin, pin};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::time::Sleep;

/// One shell health check.
#[derive(Debug, Clone)]
pub struct ShellChecker {
    command: String,
    sandbox: PathBuf,
    env: Vec<(String, String)>,
    creds: Option<(u32, u32, Vec<u32>)>,
    timeout: Duration,
}

impl ShellChecker {
    /// `env` holds `NAME=value` entries; `creds` is `(uid, gid, supplementary groups)` to run
    /// the command as.
    pub fn new(
        command: &str,
        sandbox: PathBuf,
        env: &[String],
        creds: Option<(u32, u32, Vec<u32>)>,
        timeout: Duration,
    ) -> Self {
        let env = env
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        ShellChecker {
            command: command.to_owned(),
            sandbox,
            env,
            creds,
            timeout,
        }
    }

    /// Run the check: `Ok(())` when healthy, else the reason.
    pub async fn check(&self) -> Result<(), String> {
        let deadline = pin!(tokio::time::sleep(self.timeout));
        self.check_until(deadline).await
    }

    /// [`check`](Self::check), bounded by `deadline`: a timer the caller set the check's
    /// timeout after its start.
    pub async fn check_until(&self, deadline: Pin<&mut Sleep>) -> Result<(), String> {
        let mut cmd = Command::new("/bin/bash");
        cmd.arg("-c")
            .arg(&self.command)
            .current_dir(&self.sandbox)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        if let Some((uid, gid, groups)) = &self.creds {
            crate::spawn::switch_credentials(&mut cmd, *uid, *gid, groups.clone());
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("Shell health check could not start: {e}"))?;
        let group = GroupKiller(
            child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
        );
        let waited = tokio::select! {
            biased;
            status = child.wait() => Ok(status),
            () = deadline => Err(()),
        };
        match waited {
            Ok(Ok(status)) if status.success() => {
                // Kill whatever the command left running in its group.
                drop(group);
                Ok(())
            }
            Ok(Ok(status)) => {
                drop(group);
                Err(
                    match (
                        status.code(),
                        std::os::unix::process::ExitStatusExt::signal(&status),
                    ) {
                        (Some(code), _) => format!(
                            "Shell health check {:?} exited with status {code}",
                            self.command
                        ),
                        (None, Some(sig)) => format!(
                            "Shell health check {:?} was killed by signal {sig}",
                            self.command
                        ),
                        (None, None) => format!("Shell health check {:?} failed", self.command),
                    },
                )
            }
            Ok(Err(e)) => Err(format!("Shell health check could not be waited for: {e}")),
            Err(_) => {
                drop(group);
                // Reap it (it is dead or dying: its whole group got SIGKILL).
                let _ = child.wait().await;
                Err(format!(
                    "Shell health check {:?} timed out after {}s",
                    self.command,
                    self.timeout.as_secs_f64()
                ))
            }
        }
    }
}

/// Sends `SIGKILL` to a process group when dropped.
struct GroupKiller(Option<Pid>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            // ESRCH (the group is gone) is the normal case after a clean exit.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}
