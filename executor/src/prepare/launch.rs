//! What `hearth run` was given, kept next to the checkpoint (`config.json`, `launch.json`) so
//! that `hearth kill` can adopt a task whose executor is gone.

use std::io;
use std::path::{Path, PathBuf};

use super::{PrepareError, io_err, replace_file};
use crate::cgroup::Placement;

/// The options of `hearth run`. Kept (without `config`, which is copied) in
/// `checkpoints/<task_id>/launch.json` so that `hearth kill` can adopt a task whose executor is gone.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RunOptions {
    pub config: PathBuf,
    pub root: Option<PathBuf>,
    pub sandbox: Option<PathBuf>,
    pub task_id: Option<String>,
    pub ports: Vec<(String, u16)>,
    pub instance: Option<u32>,
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub no_setuid: bool,
    pub json: bool,
    pub force: bool,
    /// Parent cgroup name under each mount root, given explicitly (`--cgroup-parent`). Without
    /// it the parent is chosen by [`crate::cgroup::delegation`]: `hearth`, or inside the
    /// delegated cgroup we run in.
    pub cgroup_parent: Option<String>,
    /// Do not use cgroups even where they are available.
    pub no_cgroups: bool,
    /// Base URL of the scheduler to report status updates to.
    pub scheduler: Option<String>,
    /// Start tearing the task down at once (`hearth kill` adopting an orphaned task).
    #[serde(skip)]
    pub kill_on_start: bool,
}

/// Where a task's launch is recorded, for `hearth kill` to adopt it if its executor dies.
pub fn launch_files(ckpt_dir: &Path) -> (PathBuf, PathBuf) {
    (ckpt_dir.join("config.json"), ckpt_dir.join("launch.json"))
}

/// `launch.json`: the options of `hearth run`, and the scheduler token file it was given (a
/// path, never the token).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LaunchRecord {
    #[serde(flatten)]
    pub opts: RunOptions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_token_file: Option<PathBuf>,
    /// Where the task's cgroup was placed: a restarted executor or `hearth kill` adopting the
    /// task uses this, wherever it runs, rather than choosing again. Absent without cgroups and
    /// in records written before delegation was supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<Placement>,
}

/// Read a task's `launch.json`; `None` when it is missing or unreadable.
///
/// Decoded through a [`serde_json::Value`]: the record flattens [`RunOptions`], and a flattened
/// struct read straight from text loses its numbers when serde_json's `arbitrary_precision`
/// feature is on (the `.aurora` evaluator's Starlark turns it on for the whole build).
pub fn read_launch(path: &Path) -> Option<LaunchRecord> {
    let value: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    serde_json::from_value(value).ok()
}

/// Keep a copy of the config as given and the options of this launch next to the checkpoint.
/// Their directory is not fsynced here: the runner stream, created next in it, does that.
pub(super) fn record_launch(
    opts: &RunOptions,
    token_file: Option<&Path>,
    cgroup: Option<&Placement>,
    ckpt_dir: &Path,
    task_id: &str,
) -> Result<(), PrepareError> {
    let (config_copy, launch) = launch_files(ckpt_dir);
    let raw = std::fs::read(&opts.config).map_err(io_err("read", &opts.config))?;
    replace_file(&config_copy, &raw).map_err(io_err("write", &config_copy))?;
    let mut o = RunOptions {
        config: config_copy.clone(),
        task_id: Some(task_id.to_owned()),
        ..Default::default()
    };
    o.root = opts.root.clone();
    o.sandbox = opts.sandbox.clone();
    o.ports = opts.ports.clone();
    o.instance = opts.instance;
    o.hostname = opts.hostname.clone();
    o.user = opts.user.clone();
    o.no_setuid = opts.no_setuid;
    o.cgroup_parent = opts.cgroup_parent.clone();
    o.no_cgroups = opts.no_cgroups;
    o.scheduler = opts.scheduler.clone();
    let record = LaunchRecord {
        opts: o,
        scheduler_token_file: token_file.map(Path::to_path_buf),
        cgroup: cgroup.cloned(),
    };
    let json = serde_json::to_vec_pretty(&record).map_err(|e| PrepareError::Io {
        what: "serialize",
        path: launch.clone(),
        source: io::Error::other(e),
    })?;
    replace_file(&launch, &json)
        .map(|_| ())
        .map_err(io_err("write", &launch))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_launch_record_keeps_the_token_file_path_and_older_records_still_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("launch.json");
        let record = LaunchRecord {
            opts: RunOptions {
                scheduler: Some("http://s:1".into()),
                ports: vec![("http".into(), 31000)],
                ..RunOptions::default()
            },
            scheduler_token_file: Some("/r/agent/token".into()),
            cgroup: Some(Placement::delegated("system.slice/a.service")),
        };
        std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(r#""scheduler_token_file":"/r/agent/token""#),
            "{text}"
        );
        let back = read_launch(&path).unwrap();
        assert_eq!(back.scheduler_token_file, record.scheduler_token_file);
        assert_eq!(back.opts.scheduler.as_deref(), Some("http://s:1"));
        assert_eq!(back.opts.ports, vec![("http".to_owned(), 31000)]);
        assert_eq!(back.cgroup, record.cgroup);

        // A record written before the token existed: the options as they were, no token file.
        let old = serde_json::to_vec(&RunOptions {
            hostname: Some("h".into()),
            ..RunOptions::default()
        })
        .unwrap();
        std::fs::write(&path, old).unwrap();
        let back = read_launch(&path).unwrap();
        assert_eq!(back.scheduler_token_file, None);
        assert_eq!(back.cgroup, None);
        assert_eq!(back.opts.hostname.as_deref(), Some("h"));
        assert!(read_launch(&dir.path().join("missing")).is_none());
    }
}
