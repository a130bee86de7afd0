//! Which cgroup hierarchy this host has, read from the mount table.

use std::fs;
use std::path::{Path, PathBuf};

use nix::unistd::{AccessFlags, access};

use super::CgroupError;

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Where each cgroup v1 controller we use is mounted. `cpu` and `cpuacct` may be the same
/// directory (co-mounted as `cpu,cpuacct` on most distributions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V1Mounts {
    pub memory: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    pub freezer: Option<PathBuf>,
}

impl V1Mounts {
    /// The layout of a typical v1 host under `root` (`<root>/memory`, `<root>/cpu`, ...), with
    /// `cpu` and `cpuacct` mounted separately. Handy for tests and fixtures.
    pub fn standard(root: &Path) -> Self {
        Self {
            memory: Some(root.join("memory")),
            cpu: Some(root.join("cpu")),
            cpuacct: Some(root.join("cpuacct")),
            pids: Some(root.join("pids")),
            freezer: Some(root.join("freezer")),
        }
    }

    fn is_empty(&self) -> bool {
        self.memory.is_none()
            && self.cpu.is_none()
            && self.cpuacct.is_none()
            && self.pids.is_none()
            && self.freezer.is_none()
    }
}

/// The cgroup hierarchy of a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// Legacy v1 controllers, each at its own mount, possibly with a controller-less v2 mount
    /// beside them (systemd's "hybrid" mode, usually `/sys/fs/cgroup/unified`) that we use for
    /// tracking, `cgroup.kill` and `cgroup.events`.
    V1 {
        mounts: V1Mounts,
        unified: Option<PathBuf>,
    },
    /// The unified v2 hierarchy with its controllers.
    V2 { root: PathBuf },
    /// No cgroups at all.
    None,
}

impl Hierarchy {
    /// Every mount root the hierarchy uses, without duplicates.
    pub fn roots(&self) -> Vec<&Path> {
        let mut roots: Vec<&Path> = Vec::new();
        match self {
            Hierarchy::V1 { mounts, unified } => {
                let all = [
                    &mounts.memory,
                    &mounts.cpu,
                    &mounts.cpuacct,
                    &mounts.pids,
                    &mounts.freezer,
                    unified,
                ];
                for p in all.into_iter().flatten() {
                    if !roots.contains(&p.as_path()) {
                        roots.push(p);
                    }
                }
            }
            Hierarchy::V2 { root } => roots.push(root),
            Hierarchy::None => {}
        }
        roots
    }
}

/// Works out the hierarchy from the text of a `mountinfo` file.
///
/// A v1 mount of any controller we use (memory, cpu, cpuacct, pids, freezer) means a v1 host; a
/// cgroup2 mount next to it is then the hybrid `unified` tree. A cgroup2 mount alone means v2.
/// The first mount of each kind wins. Lines that do not parse are ignored: the mount table is
/// written by the kernel, and a line we do not understand is not a cgroup we could use.
pub fn detect(mountinfo: &str) -> Hierarchy {
    let mut mounts = V1Mounts::default();
    let mut unified: Option<PathBuf> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        let (Some(fstype), Some(_source), Some(super_opts)) =
            (right.next(), right.next(), right.next())
        else {
            continue;
        };
        let mount_point = PathBuf::from(unescape(mount_point));
        match fstype {
            "cgroup2" => {
                unified.get_or_insert(mount_point);
            }
            "cgroup" => {
                for opt in super_opts.split(',') {
                    let slot = match opt {
                        "memory" => &mut mounts.memory,
                        "cpu" => &mut mounts.cpu,
                        "cpuacct" => &mut mounts.cpuacct,
                        "pids" => &mut mounts.pids,
                        "freezer" => &mut mounts.freezer,
                        _ => continue,
                    };
                    slot.get_or_insert_with(|| mount_point.clone());
                }
            }
            _ => {}
        }
    }
    match (mounts.is_empty(), unified) {
        (false, unified) => Hierarchy::V1 { mounts, unified },
        (true, Some(root)) => Hierarchy::V2 { root },
        (true, None) => Hierarchy::None,
    }
}

/// Mount points in mountinfo escape space, tab, newline and backslash as `\ooo` octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The hierarchy of the host we run on, from `/proc/self/mountinfo`.
pub fn detect_host() -> Result<Hierarchy, CgroupError> {
    let text = fs::read_to_string(MOUNTINFO).map_err(|source| CgroupError::Read {
        path: PathBuf::from(MOUNTINFO),
        source,
    })?;
    Ok(detect(&text))
}

/// Whether this process can run tasks under cgroups here: a hierarchy is mounted, it has what
/// [`super::TaskCgroup`] needs, and every mount root is writable by us. On `Err` the executor falls
/// back to process groups and says why.
pub fn available() -> Result<Hierarchy, CgroupError> {
    let h = detect_host()?;
    check_usable(&h)?;
    Ok(h)
}

/// The checks of [`available`] on a given hierarchy.
///
/// v1 needs the memory controller (OOM detection, memory limit) and a way to kill every member
/// (the freezer, or the hybrid `unified` tree's `cgroup.kill`).
pub fn check_usable(h: &Hierarchy) -> Result<(), CgroupError> {
    check_usable_at(h, "")
}

/// [`check_usable`] for task cgroups that go below `top` (relative to the mount root; see
/// [`super::Placement::top`]): on v2 it is `top` that must be writable, not the mount root (a
/// delegated cgroup may be ours while the root is not). On v1 `top` is always the root.
pub fn check_usable_at(h: &Hierarchy, top: &str) -> Result<(), CgroupError> {
    let not_usable = |path: &Path, reason: &str| CgroupError::NotUsable {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
        source: None,
    };
    match h {
        Hierarchy::None => {
            return Err(CgroupError::NoHierarchy {
                path: PathBuf::from(MOUNTINFO),
            });
        }
        Hierarchy::V1 { mounts, unified } => {
            let any = h
                .roots()
                .first()
                .map(|p| p.to_path_buf())
                .unwrap_or_default();
            if mounts.memory.is_none() {
                return Err(not_usable(&any, "the v1 memory controller is not mounted"));
            }
            if mounts.freezer.is_none() && unified.is_none() {
                return Err(not_usable(
                    &any,
                    "neither the v1 freezer nor a cgroup2 mount is available to kill a whole task",
                ));
            }
        }
        Hierarchy::V2 { .. } => {}
    }
    if let Hierarchy::V2 { root } = h
        && !top.is_empty()
    {
        return check_writable(&root.join(top));
    }
    for root in h.roots() {
        access(root, AccessFlags::W_OK).map_err(|source| CgroupError::NotUsable {
            path: root.to_path_buf(),
            reason: "the mount root is not writable by this process".to_owned(),
            source: Some(source),
        })?;
    }
    Ok(())
}

/// Checks that this process may create cgroups in `dir`, move processes into them and enable
/// controllers for them: the directory, its `cgroup.procs` and its `cgroup.subtree_control` are
/// writable by us.
fn check_writable(dir: &Path) -> Result<(), CgroupError> {
    for path in [
        dir.to_path_buf(),
        dir.join("cgroup.procs"),
        dir.join("cgroup.subtree_control"),
    ] {
        access(&path, AccessFlags::W_OK).map_err(|source| CgroupError::NotUsable {
            path,
            reason: "the delegated cgroup is not writable by this process".to_owned(),
            source: Some(source),
        })?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// This machine's table: v1 controllers, cpu and cpuacct apart, a controller-less cgroup2.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A systemd legacy host: cpu and cpuacct co-mounted, no cgroup2.
    const LEGACY: &str = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
29 25 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
30 25 0:27 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,pids
31 25 0:28 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,freezer
";

    /// A modern host: only cgroup2, with optional fields before the separator.
    const PURE_V2: &str = "\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw
35 22 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn hybrid_host_is_v1_with_unified_tracking_tree() {
        let h = detect(HYBRID);
        let expected = Hierarchy::V1 {
            mounts: V1Mounts::standard(Path::new("/sys/fs/cgroup")),
            unified: Some(PathBuf::from("/sys/fs/cgroup/unified")),
        };
        assert_eq!(h, expected);
    }

    #[test]
    fn co_mounted_cpu_and_cpuacct_share_one_root() {
        let h = detect(LEGACY);
        let Hierarchy::V1 { mounts, unified } = &h else {
            panic!("expected v1, got {h:?}");
        };
        assert_eq!(unified, &None);
        let both = Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(mounts.cpu, both);
        assert_eq!(mounts.cpuacct, both);
        assert_eq!(
            h.roots().len(),
            4,
            "co-mounted roots are listed once: {:?}",
            h.roots()
        );
    }

    #[test]
    fn cgroup2_alone_is_v2() {
        assert_eq!(
            detect(PURE_V2),
            Hierarchy::V2 {
                root: PathBuf::from("/sys/fs/cgroup")
            }
        );
    }

    #[test]
    fn no_cgroup_mounts_is_none() {
        assert_eq!(
            detect("22 1 259:1 / / rw - ext4 /dev/root rw\n"),
            Hierarchy::None
        );
        assert_eq!(detect(""), Hierarchy::None);
    }

    #[test]
    fn only_name_systemd_v1_mount_beside_cgroup2_is_v2() {
        let text = "\
40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            detect(text),
            Hierarchy::V2 {
                root: PathBuf::from("/sys/fs/cgroup/unified")
            }
        );
    }

    #[test]
    fn escaped_mount_points_are_decoded() {
        let text = "41 31 0:38 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            detect(text),
            Hierarchy::V2 {
                root: PathBuf::from("/mnt/cg two")
            }
        );
    }

    #[test]
    fn truncated_lines_are_ignored() {
        let text = "41 31 0:38 / /x rw - cgroup2\n35 22 0:30 / /y rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            detect(text),
            Hierarchy::V2 {
                root: PathBuf::from("/y")
            }
        );
    }

    #[test]
    fn v1_without_memory_controller_is_not_usable() {
        let dir = tempfile::tempdir().unwrap();
        let mut mounts = V1Mounts::standard(dir.path());
        mounts.memory = None;
        let h = Hierarchy::V1 {
            mounts,
            unified: None,
        };
        assert!(matches!(
            check_usable(&h),
            Err(CgroupError::NotUsable { .. })
        ));
    }

    #[test]
    fn v1_without_freezer_or_unified_is_not_usable() {
        let dir = tempfile::tempdir().unwrap();
        let mut mounts = V1Mounts::standard(dir.path());
        mounts.freezer = None;
        let h = Hierarchy::V1 {
            mounts: mounts.clone(),
            unified: None,
        };
        assert!(matches!(
            check_usable(&h),
            Err(CgroupError::NotUsable { .. })
        ));
        for root in h.roots() {
            fs::create_dir_all(root).unwrap();
        }
        let unified = dir.path().join("unified");
        fs::create_dir_all(&unified).unwrap();
        let with_unified = Hierarchy::V1 {
            mounts,
            unified: Some(unified),
        };
        check_usable(&with_unified).unwrap();
    }

    #[test]
    fn missing_mount_root_is_not_usable_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("absent");
        let err = check_usable(&Hierarchy::V2 { root: root.clone() }).unwrap_err();
        assert!(matches!(err, CgroupError::NotUsable { ref path, .. } if *path == root));
    }

    #[test]
    fn no_hierarchy_is_not_usable() {
        assert!(matches!(
            check_usable(&Hierarchy::None),
            Err(CgroupError::NoHierarchy { .. })
        ));
    }
}
