//! Where task cgroups go: under `hearth` at the mount root, or inside a cgroup systemd delegated
//! to us.
//!
//! On a cgroup v2 host run by systemd, systemd is the single writer of the tree; a program may only
//! write inside a cgroup delegated to it (a unit with `Delegate=yes`). Hearth therefore picks the
//! parent of its task cgroups by one rule, [`choose`]:
//!
//! 1. An explicit parent (`--cgroup-parent`) wins, as it always did: `<mount root>/<parent>`.
//! 2. On cgroup v1 (and the hybrid layout) nothing changes: `hearth` under each mount root.
//! 3. On v2, our own cgroup is the `0::` line of `/proc/self/cgroup`. It is *delegated* when it is
//!    not the root and carries systemd's delegation mark, the extended attribute
//!    `trusted.delegate` (set by the system manager since systemd 251) or `user.delegate` (set by
//!    user managers), with a true value. It also counts when our own cgroup is the leaf
//!    `supervisor` ([`LEAF`]) directly below a marked cgroup: where an earlier Hearth process
//!    moved itself, or where systemd puts the unit's processes with `DelegateSubgroup=supervisor`.
//!    Ownership alone is not taken as a sign: root owns every cgroup, and a user owns every cgroup
//!    of their user manager, delegated or not.
//! 4. When delegated, the marked cgroup `D` is the *top*: task cgroups go under `D/hearth`, and
//!    Hearth writes nothing outside `D` — controllers are enabled in `D/cgroup.subtree_control`
//!    and `D/hearth/cgroup.subtree_control` only (those `D` was given, see its
//!    `cgroup.controllers`). Since a cgroup that hands controllers to its children may hold no
//!    process itself (v2's no-internal-process rule), [`enter_leaf`] first moves every process of
//!    `D` (ourselves, and the shell or agent we were started from) into `D/supervisor`, which
//!    stays inside the delegation.
//! 5. Otherwise (the root, or a cgroup without the mark): `hearth` under the mount root, as before.
//!
//! The choice is made once per task and recorded with the task's launch (`launch.json`): a
//! restarted executor or `hearth kill` adopting the task — wherever it runs — uses the recorded
//! [`Placement`], so it finds the task's cgroup where it was created.

use std::fmt;
use std::io;
use std::path::{Component, Path};

use nix::errno::Errno;

use super::{CgroupError, Hierarchy, check_usable_at, files};

/// The parent of task cgroups when no other applies (below the mount root, or below the
/// delegated cgroup).
pub const DEFAULT_PARENT: &str = "hearth";
/// The leaf cgroup, directly below the delegated one, that Hearth's own processes live in.
pub const LEAF: &str = "supervisor";
/// The extended attributes systemd marks a delegated cgroup with.
pub const MARKS: [&str; 2] = ["trusted.delegate", "user.delegate"];
const PROC_SELF_CGROUP: &str = "/proc/self/cgroup";
/// How many times [`enter_leaf`] sweeps the delegated cgroup for processes (a process forking
/// while we move it leaves its child behind for the next sweep).
const LEAF_SWEEPS: usize = 16;

/// Where a task's cgroup is created, and the part of the tree Hearth may write to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Placement {
    /// The parent of task cgroups, relative to every mount root (`hearth`, or
    /// `system.slice/hearth-agent.service/hearth`).
    pub parent: String,
    /// On v2, the highest cgroup whose `cgroup.subtree_control` Hearth may write, relative to the
    /// mount root: empty for the root itself, else the delegated cgroup. `parent` is below it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub top: String,
}

impl Placement {
    /// `parent` below the mount roots, controllers enabled from the root down (no delegation).
    pub fn at_root(parent: &str) -> Placement {
        Placement {
            parent: parent.to_owned(),
            top: String::new(),
        }
    }

    /// Task cgroups under `<delegated>/hearth`, nothing written above `delegated`.
    pub fn delegated(delegated: &str) -> Placement {
        Placement {
            parent: format!("{delegated}/{DEFAULT_PARENT}"),
            top: delegated.to_owned(),
        }
    }

    /// Whether this placement is inside a delegated cgroup.
    pub fn is_delegated(&self) -> bool {
        !self.top.is_empty()
    }
}

/// Why [`choose`] picked its placement; its `Display` is what the info log line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// `--cgroup-parent` was given.
    Explicit,
    /// The task's launch record says where its cgroup is.
    Recorded,
    /// Not a pure cgroup v2 host.
    NotV2,
    /// `/proc/self/cgroup` has no `0::` line.
    NoOwnCgroup,
    /// Our own cgroup is the root of the tree.
    RootCgroup,
    /// Our own cgroup (`own`, relative to the mount root) carries no delegation mark.
    NotDelegated { own: String },
    /// `delegated` carries `mark`; we run in `own` (itself, or its `supervisor` leaf).
    Delegated {
        own: String,
        delegated: String,
        mark: &'static str,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Explicit => write!(f, "--cgroup-parent was given"),
            Reason::Recorded => write!(f, "the task's launch record names it"),
            Reason::NotV2 => write!(
                f,
                "the host is not pure cgroup v2: delegation does not apply"
            ),
            Reason::NoOwnCgroup => write!(f, "{PROC_SELF_CGROUP} has no cgroup v2 (0::) line"),
            Reason::RootCgroup => write!(f, "this process runs in the root cgroup"),
            Reason::NotDelegated { own } => write!(
                f,
                "this process's cgroup /{own} is not delegated (no true {} or {} attribute)",
                MARKS[0], MARKS[1]
            ),
            Reason::Delegated {
                own,
                delegated,
                mark,
            } => write!(
                f,
                "this process runs in /{own}, inside /{delegated}, which is delegated ({mark}); \
                 nothing is written outside it"
            ),
        }
    }
}

/// A placement and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub placement: Placement,
    pub reason: Reason,
}

/// This process's v2 cgroup from the text of `/proc/<pid>/cgroup`: the path of the `0::` line
/// without its leading `/` (empty for the root), or `None` when there is no such line.
pub fn own_cgroup(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| path.trim().trim_start_matches('/').to_owned())
}

/// The placement rule (see the module documentation), over given inputs so that tests can feed
/// it fixtures: the hierarchy, the explicit parent if any, our own v2 cgroup (from
/// [`own_cgroup`]), and `mark`, which says which delegation attribute a cgroup directory carries
/// with a true value, if any.
pub fn choose(
    h: &Hierarchy,
    explicit: Option<&str>,
    own: Option<&str>,
    mark: impl Fn(&Path) -> Option<&'static str>,
) -> Choice {
    let default = |reason| Choice {
        placement: Placement::at_root(DEFAULT_PARENT),
        reason,
    };
    if let Some(parent) = explicit {
        return Choice {
            placement: Placement::at_root(parent),
            reason: Reason::Explicit,
        };
    }
    let Hierarchy::V2 { root } = h else {
        return default(Reason::NotV2);
    };
    let Some(own) = own else {
        return default(Reason::NoOwnCgroup);
    };
    if own.is_empty() {
        return default(Reason::RootCgroup);
    }
    // A path we could not join safely (`..`, a deleted cgroup's " (deleted)" suffix is still a
    // plain name and simply carries no mark) is not a delegated one.
    if !Path::new(own)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return default(Reason::NotDelegated {
            own: own.to_owned(),
        });
    }
    let delegated = |name: &str, m: &'static str| Choice {
        placement: Placement::delegated(name),
        reason: Reason::Delegated {
            own: own.to_owned(),
            delegated: name.to_owned(),
            mark: m,
        },
    };
    if let Some(m) = mark(&root.join(own)) {
        return delegated(own, m);
    }
    if let Some((parent, leaf)) = own.rsplit_once('/')
        && leaf == LEAF
        && let Some(m) = mark(&root.join(parent))
    {
        return delegated(parent, m);
    }
    default(Reason::NotDelegated {
        own: own.to_owned(),
    })
}

/// The delegation attribute `dir` carries with a true value (`1`, `yes`, `true`, `on`, as
/// systemd parses booleans), if any.
pub fn delegate_mark(dir: &Path) -> Option<&'static str> {
    MARKS.into_iter().find(|name| {
        let mut value = [0u8; 16];
        rustix::fs::getxattr(dir, *name, &mut value[..]).is_ok_and(|len| {
            let text = String::from_utf8_lossy(value.get(..len).unwrap_or_default());
            matches!(
                text.trim().to_ascii_lowercase().as_str(),
                "1" | "yes" | "y" | "true" | "t" | "on"
            )
        })
    })
}

/// [`choose`] for this process on this host: reads `/proc/self/cgroup` and the real attributes.
pub fn choose_host(h: &Hierarchy, explicit: Option<&str>) -> Result<Choice, CgroupError> {
    let own = match (explicit, h) {
        (None, Hierarchy::V2 { .. }) => {
            let text = files::read(Path::new(PROC_SELF_CGROUP))?;
            own_cgroup(&text)
        }
        _ => None,
    };
    Ok(choose(h, explicit, own.as_deref(), delegate_mark))
}

/// Moves every process of the delegated cgroup (`placement.top`) into its leaf
/// `<top>/supervisor`, creating the leaf, so that controllers can be enabled in the delegated
/// cgroup for its children. Our own process is among them when we run in the delegated cgroup
/// itself. Returns the pids moved (none when the cgroup was already empty, or the placement is not
/// delegated). Nothing outside the delegated cgroup is touched.
pub fn enter_leaf(root: &Path, placement: &Placement) -> Result<Vec<i32>, CgroupError> {
    if !placement.is_delegated() {
        return Ok(Vec::new());
    }
    let top = root.join(&placement.top);
    let leaf = top.join(LEAF);
    let procs = files::procs_file(&top);
    let mut moved = Vec::new();
    for _ in 0..LEAF_SWEEPS {
        let text = files::read(&procs)?;
        let pids = files::parse_procs(&procs, &text)?;
        if pids.is_empty() {
            return Ok(moved);
        }
        match std::fs::create_dir(&leaf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(CgroupError::CreateDir { path: leaf, source }),
        }
        let leaf_procs = files::procs_file(&leaf);
        for pid in pids {
            match std::fs::write(&leaf_procs, pid.to_string()) {
                Ok(()) => moved.push(pid),
                // Exited since we listed it.
                Err(e) if e.raw_os_error() == Some(Errno::ESRCH as i32) => {}
                Err(source) => {
                    return Err(CgroupError::Write {
                        path: leaf_procs,
                        value: pid.to_string(),
                        source,
                    });
                }
            }
        }
    }
    let text = files::read(&procs)?;
    let pids = files::parse_procs(&procs, &text)?;
    if pids.is_empty() {
        return Ok(moved);
    }
    Err(CgroupError::StillOccupied {
        path: top,
        leaf,
        pids,
    })
}

/// Everything `hearth run` and `hearth agent` do to pick where task cgroups go on this host:
/// [`choose_host`], check that the chosen cgroups are ours to write ([`check_usable_at`]: a
/// [`CgroupError::NotUsable`] or [`CgroupError::NoHierarchy`] means "run without cgroups"), then,
/// when delegated, [`enter_leaf`]. Logs the choice and its reason at info, and the processes moved.
pub fn settle_host(h: &Hierarchy, explicit: Option<&str>) -> Result<Choice, CgroupError> {
    let choice = choose_host(h, explicit)?;
    check_usable_at(h, &choice.placement.top)?;
    log_choice(h, &choice.placement, &choice.reason);
    if let Hierarchy::V2 { root } = h {
        let moved = enter_leaf(root, &choice.placement)?;
        if !moved.is_empty() {
            let top = &choice.placement.top;
            tracing::info!(
                "moved the processes {moved:?} of /{top} into its leaf /{top}/{LEAF}, so that it \
                 can hand controllers to the task cgroups"
            );
        }
    }
    Ok(choice)
}

/// The info line that says where task cgroups go and why.
pub fn log_choice(h: &Hierarchy, placement: &Placement, reason: &Reason) {
    let parents: Vec<String> = h
        .roots()
        .iter()
        .map(|r| r.join(&placement.parent).display().to_string())
        .collect();
    tracing::info!("task cgroups go under {}: {reason}", parents.join(", "));
}
