//! Unit tests against fake cgroup trees in temporary directories.
//!
//! A fake tree is plain directories and files: writes land in regular files, so a test can read
//! back what the code wrote, and fixtures stand in for what the kernel would show (`cgroup.procs`,
//! `memory.events`, ...). The real kernel is exercised by `executor/tests/cgroup_real.rs`.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use super::limits::{verify_exact, verify_memory};
use super::*;

const V2_CONTROLLERS: &str = "cpuset cpu io memory hugetlb pids rdma misc\n";

fn v1_tree(tmp: &TempDir, with_unified: bool) -> Hierarchy {
    let mounts = V1Mounts::standard(tmp.path());
    let unified = with_unified.then(|| tmp.path().join("unified"));
    let h = Hierarchy::V1 { mounts, unified };
    for root in h.roots() {
        fs::create_dir_all(root).unwrap();
    }
    h
}

fn v2_tree(tmp: &TempDir) -> Hierarchy {
    let root = tmp.path().to_path_buf();
    fs::write(root.join("cgroup.controllers"), V2_CONTROLLERS).unwrap();
    fs::write(root.join("cgroup.subtree_control"), "").unwrap();
    Hierarchy::V2 { root }
}

fn read(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path).unwrap()
}

/// Stands in for the kernel listing `pids` as members, in every hierarchy of `cg`.
fn fake_members(cg: &TaskCgroup, pids: &[i32]) {
    let text: String = pids.iter().map(|p| format!("{p}\n")).collect();
    for file in cg.join_files() {
        fs::write(file, &text).unwrap();
    }
}

const LIMITS: Limits = Limits {
    memory_bytes: Some(64 << 20),
    cpu_cores: Some(0.5),
    pids_max: Some(128),
    swap_bytes: 0,
    memory_high_bytes: None,
};

#[test]
fn v1_create_makes_task_dir_in_every_controller_and_writes_limits() {
    let tmp = TempDir::new().unwrap();
    let h = v1_tree(&tmp, false);
    let cg = TaskCgroup::create(&h, "hearth", "task-1", &LIMITS).unwrap();
    let t = tmp.path();
    for c in ["memory", "cpu", "cpuacct", "pids", "freezer"] {
        assert!(t.join(c).join("hearth/task-1").is_dir(), "{c} dir missing");
    }
    assert_eq!(
        read(t.join("memory/hearth/task-1/memory.limit_in_bytes")),
        "67108864"
    );
    assert_eq!(
        read(t.join("cpu/hearth/task-1/cpu.cfs_period_us")),
        "100000"
    );
    assert_eq!(read(t.join("cpu/hearth/task-1/cpu.cfs_quota_us")), "50000");
    assert_eq!(read(t.join("pids/hearth/task-1/pids.max")), "128");
    assert_eq!(cg.name(), Path::new("hearth/task-1"));
    assert_eq!(cg.join_files().len(), 5);
}

#[test]
fn v1_without_limits_writes_no_limit_files() {
    let tmp = TempDir::new().unwrap();
    let h = v1_tree(&tmp, false);
    TaskCgroup::create(&h, "hearth", "t", &Limits::default()).unwrap();
    assert!(
        !tmp.path()
            .join("memory/hearth/t/memory.limit_in_bytes")
            .exists()
    );
    assert!(!tmp.path().join("cpu/hearth/t/cpu.cfs_quota_us").exists());
    assert!(!tmp.path().join("pids/hearth/t/pids.max").exists());
}

#[test]
fn hybrid_create_also_makes_unified_dir_and_joins_it() {
    let tmp = TempDir::new().unwrap();
    let h = v1_tree(&tmp, true);
    let cg = TaskCgroup::create(&h, "hearth", "t", &LIMITS).unwrap();
    let unified = tmp.path().join("unified/hearth/t");
    assert!(unified.is_dir());
    assert!(cg.join_files().contains(&unified.join("cgroup.procs")));
    assert_eq!(cg.join_files().len(), 6);
}

#[test]
fn co_mounted_cpu_and_cpuacct_dir_is_created_and_joined_once() {
    let tmp = TempDir::new().unwrap();
    let both = tmp.path().join("cpu,cpuacct");
    let mounts = V1Mounts {
        memory: Some(tmp.path().join("memory")),
        cpu: Some(both.clone()),
        cpuacct: Some(both.clone()),
        pids: None,
        freezer: Some(tmp.path().join("freezer")),
    };
    let h = Hierarchy::V1 {
        mounts,
        unified: None,
    };
    for root in h.roots() {
        fs::create_dir_all(root).unwrap();
    }
    let limits = Limits {
        pids_max: None,
        ..LIMITS
    };
    let cg = TaskCgroup::create(&h, "hearth", "t", &limits).unwrap();
    let joins = cg.join_files();
    assert_eq!(joins.len(), 3, "{joins:?}");
    assert_eq!(read(both.join("hearth/t/cpu.cfs_quota_us")), "50000");
}

#[test]
fn v1_limit_without_its_controller_is_refused_before_creating_anything() {
    let tmp = TempDir::new().unwrap();
    let mut mounts = V1Mounts::standard(tmp.path());
    mounts.pids = None;
    let h = Hierarchy::V1 {
        mounts,
        unified: None,
    };
    for root in h.roots() {
        fs::create_dir_all(root).unwrap();
    }
    let err = TaskCgroup::create(&h, "hearth", "t", &LIMITS).unwrap_err();
    assert!(matches!(
        err,
        CgroupError::MissingController {
            controller: "pids",
            ..
        }
    ));
    assert!(!tmp.path().join("memory/hearth/t").exists());
}

#[test]
fn existing_task_dir_is_refused_and_dirs_made_so_far_are_removed() {
    let tmp = TempDir::new().unwrap();
    let h = v1_tree(&tmp, false);
    let taken = tmp.path().join("freezer/hearth/t");
    fs::create_dir_all(&taken).unwrap();
    let err = TaskCgroup::create(&h, "hearth", "t", &LIMITS).unwrap_err();
    assert!(matches!(err, CgroupError::AlreadyExists { ref path } if *path == taken));
    for c in ["memory", "cpu", "cpuacct", "pids"] {
        assert!(
            !tmp.path().join(c).join("hearth/t").exists(),
            "{c} left behind"
        );
    }
    assert!(
        taken.is_dir(),
        "someone else's directory must be left alone"
    );
}

#[test]
fn v2_create_enables_controllers_in_root_and_parent_then_writes_limits() {
    let tmp = TempDir::new().unwrap();
    let h = v2_tree(&tmp);
    let cg = TaskCgroup::create(&h, "hearth", "t", &LIMITS).unwrap();
    let t = tmp.path();
    assert_eq!(
        read(t.join("cgroup.subtree_control")),
        "+memory +cpu +pids +io"
    );
    assert_eq!(
        read(t.join("hearth/cgroup.subtree_control")),
        "+memory +cpu +pids +io"
    );
    assert_eq!(read(t.join("hearth/t/memory.max")), "67108864");
    assert_eq!(read(t.join("hearth/t/cpu.max")), "50000 100000");
    assert_eq!(read(t.join("hearth/t/pids.max")), "128");
    assert_eq!(cg.join_files(), vec![t.join("hearth/t/cgroup.procs")]);
}

#[test]
fn v2_memory_limit_turns_swap_off_where_the_kernel_accounts_it() {
    let tmp = TempDir::new().unwrap();
    let h = v2_tree(&tmp);
    let cg = TaskCgroup::create(&h, "hearth", "t", &LIMITS).unwrap();
    let t = tmp.path();
    assert!(
        !t.join("hearth/t/memory.swap.max").exists(),
        "no swap accounting: nothing written"
    );
    fs::write(t.join("hearth/t/memory.swap.max"), "max\n").unwrap();
    cg.apply(&LIMITS).unwrap();
    assert_eq!(read(t.join("hearth/t/memory.swap.max")), "0");
    // Without a memory limit swap is left as it is.
    fs::write(t.join("hearth/t/memory.swap.max"), "max\n").unwrap();
    cg.apply(&Limits::default()).unwrap();
    assert_eq!(read(t.join("hearth/t/memory.swap.max")), "max\n");
}

#[test]
fn v2_swap_allowance_and_soft_limit_are_written_and_read_back() {
    let tmp = TempDir::new().unwrap();
    let h = v2_tree(&tmp);
    let cg = TaskCgroup::create(&h, "hearth", "t", &LIMITS).unwrap();
    let t = tmp.path().join("hearth/t");
    // The kernel's files, as a fresh cgroup has them.
    fs::write(t.join("memory.swap.max"), "max\n").unwrap();
    fs::write(t.join("memory.high"), "max\n").unwrap();
    let limits = Limits {
        swap_bytes: 16 << 20,
        memory_high_bytes: Some(48 << 20),
        ..LIMITS
    };
    cg.apply(&limits).unwrap();
    assert_eq!(read(t.join("memory.swap.max")), "16777216");
    assert_eq!(read(t.join("memory.high")), "50331648");
    assert_eq!(cg.read_limits().unwrap(), limits);
    // Without a soft limit, memory.high is left as it is.
    fs::write(t.join("memory.high"), "max\n").unwrap();
    cg.apply(&LIMITS).unwrap();
    assert_eq!(read(t.join("memory.high")), "max\n");
    assert_eq!(read(t.join("memory.swap.max")), "0");
}

#[test]
fn swap_without_a_memory_limit_and_a_soft_limit_above_it_are_refused() {
    let tmp = TempDir::new().unwrap();
    let h = v2_tree(&tmp);
    let bad = [
        (
            Limits {
                swap_bytes: 1,
                ..Limits::default()
            },
            "swap_bytes",
        ),
        (
            Limits {
                memory_high_bytes: Some((64 << 20) + 1),
                ..LIMITS
            },
            "memory_high_bytes",
        ),
        (
            Limits {
                memory_high_bytes: Some(0),
                ..LIMITS
            },
            "memory_high_bytes",
        ),
    ];
    for (limits, named) in bad {
        let err = TaskCgroup::create(&h, "hearth", "t", &limits).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidLimit { field, .. } if field == named),
            "{limits:?}: {err:?}"
        );
        assert!(!tmp.path().join("hearth/t").exists());
    }
    // A soft limit alone, or equal to the hard one, is fine.
    let alone = Limits {
        memory_high_bytes: Some(1 << 20),
        ..Limits::default()
    };
    TaskCgroup::create(&h, "hearth", "alone", &alone).unwrap();
    let equal = Limits {
        memory_high_bytes: LIMITS.memory_bytes,
        ..LIMITS
    };
    TaskCgroup::create(&h, "hearth", "equal", &equal).unwrap();
}

#[test]
fn v1_refuses_a_soft_memory_limit_before_creating_anything() {
    let tmp = TempDir::new().unwrap();
    let h = v1_tree(&tmp, true);
    let limits = Limits {
        memory_high_bytes: Some(32 << 20),
        ..LIMITS
    };
    let err = TaskCgroup::create(&h, "hearth", "t", &limits).unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::InvalidLimit {
                field: "memory_high_bytes",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!tmp.path().join("memory/hearth/t").exists());
    // A swap allowance changes nothing on v1 (it does not limit swap) and is accepted.
    let swap = Limits {
        swap_bytes: 1 << 20,
        ..LIMITS
    };
    TaskCgroup::create(&h, "hearth", "t", &swap).unwrap();
}

#[test]
fn v2_enables_only_missing_controllers() {
    let tmp = TempDir::new().unwrap();
    let h = v2_tree(&tmp);
    let t = tmp.path();
    fs::write(t.join("cgroup.subtree_control"), "cpu io memory pids\n").unwrap();
    fs::create_dir(t.join("hearth")).unwrap();
    fs::write(t.join("hearth/cgroup.subtree_control"), "memory\n").unwrap();
    TaskCgroup::create(&h, "hearth", "t", &LIMITS).unwrap();
    assert_eq!(
        read(t.join("cgroup.subtree_control")),
        "cpu io memory pids\n"
    );
    assert_eq!(
        read(t.join("hearth/cgroup.subtree_control")),
        "+cpu +pids +io"
    );
}

#[test]
fn v2_enables_memory_for_accounting_even_without_limits() {
    let tmp = TempDir::new().unwrap();
    let h = v2_tree(&tmp);
    TaskCgroup::create(&h, "a/b", "t", &Limits::default()).unwrap();
    for level in ["", "a", "a/b"] {
        let file = tmp.path().join(level).join("cgroup.subtree_control");
        assert_eq!(read(file), "+memory +io", "at {level:?}");
    }
}

#[test]
fn v2_limit_needing_an_unavailable_controller_fails_naming_cgroup_controllers() {
    let tmp = TempDir::new().unwrap();
    let h = v2_tree(&tmp);
    fs::write(tmp.path().join("cgroup.controllers"), "memory pids\n").unwrap();
    let err = TaskCgroup::create(&h, "hearth", "t", &LIMITS).unwrap_err();
    let expected = tmp.path().join("cgroup.controllers");
    assert!(
        matches!(err, CgroupError::MissingController { ref path, controller: "cpu" } if *path == expected),
        "{err:?}"
    );
    assert!(!tmp.path().join("hearth/t").exists());
}

#[test]
fn v2_controller_the_kernel_does_not_enable_is_an_error() {
    let tmp = TempDir::new().unwrap();
    let h = v2_tree(&tmp);
    let control = tmp.path().join("cgroup.subtree_control");
    fs::remove_file(&control).unwrap();
    // Writes vanish and reads are empty: like a kernel refusing silently.
    std::os::unix::fs::symlink("/dev/null", &control).unwrap();
    let err = TaskCgroup::create(&h, "hearth", "t", &LIMITS).unwrap_err();
    assert!(
        matches!(err, CgroupError::ControllerNotEnabled { ref path, controller: "memory", .. } if *path == control),
        "{err:?}"
    );
}

#[test]
fn memory_limit_rounded_down_to_a_page_counts_as_taken() {
    let tmp = TempDir::new().unwrap();
    let file = tmp.path().join("memory.limit_in_bytes");
    fs::write(&file, "99999744\n").unwrap();
    verify_memory(&file, 100_000_000).unwrap();
}

#[test]
fn memory_limit_reading_back_unlimited_is_not_taken() {
    let tmp = TempDir::new().unwrap();
    let file = tmp.path().join("memory.limit_in_bytes");
    fs::write(&file, "9223372036854771712\n").unwrap();
    let err = verify_memory(&file, 64 << 20).unwrap_err();
    assert!(matches!(err, CgroupError::LimitNotApplied { ref path, .. } if *path == file));
    fs::write(&file, "max\n").unwrap();
    assert!(verify_memory(&file, 64 << 20).is_err());
}

#[test]
fn limit_reading_back_different_names_file_and_both_values() {
    let tmp = TempDir::new().unwrap();
    let file = tmp.path().join("pids.max");
    fs::write(&file, "max\n").unwrap();
    let err = verify_exact(&file, "64").unwrap_err();
    let CgroupError::LimitNotApplied { path, wrote, read } = err else {
        panic!("unexpected error {err:?}");
    };
    assert_eq!((path, wrote.as_str(), read.as_str()), (file, "64", "max"));
}

#[test]
fn limits_read_back_as_created_on_v1_and_v2() {
    for v2 in [false, true] {
        let tmp = TempDir::new().unwrap();
        let h = if v2 {
            v2_tree(&tmp)
        } else {
            v1_tree(&tmp, true)
        };
        let cg = TaskCgroup::create(&h, "hearth", "t", &LIMITS).unwrap();
        assert_eq!(cg.read_limits().unwrap(), LIMITS, "v2 = {v2}");
    }
}

#[test]
fn unlimited_values_read_back_as_none() {
    let tmp = TempDir::new().unwrap();
    let h = v1_tree(&tmp, false);
    let cg = TaskCgroup::create(&h, "hearth", "t", &Limits::default()).unwrap();
    let t = tmp.path();
    fs::write(
        t.join("memory/hearth/t/memory.limit_in_bytes"),
        "9223372036854771712\n",
    )
    .unwrap();
    fs::write(t.join("cpu/hearth/t/cpu.cfs_quota_us"), "-1\n").unwrap();
    fs::write(t.join("pids/hearth/t/pids.max"), "max\n").unwrap();
    assert_eq!(cg.read_limits().unwrap(), Limits::default());
}

#[test]
fn unsafe_names_are_refused() {
    let tmp = TempDir::new().unwrap();
    let h = v1_tree(&tmp, false);
    let bad = [
        ("..", "t"),
        ("/abs", "t"),
        ("", "t"),
        ("hearth", "a/b"),
        ("hearth", ".."),
        ("a//b", "t"),
        ("hearth", ""),
    ];
    for (parent, task) in bad {
        let err = TaskCgroup::create(&h, parent, task, &Limits::default()).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidName { .. }),
            "{parent:?}/{task:?}: {err:?}"
        );
    }
}

#[test]
fn nonsense_limits_are_refused() {
    let tmp = TempDir::new().unwrap();
    let h = v1_tree(&tmp, false);
    let bad = [
        Limits {
            memory_bytes: Some(0),
            ..Limits::default()
        },
        Limits {
            cpu_cores: Some(f64::NAN),
            ..Limits::default()
        },
        Limits {
            cpu_cores: Some(-1.0),
            ..Limits::default()
        },
        Limits {
            pids_max: Some(0),
            ..Limits::default()
        },
    ];
    for limits in bad {
        let err = TaskCgroup::create(&h, "hearth", "t", &limits).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidLimit { .. }),
            "{limits:?}: {err:?}"
        );
    }
    assert!(!tmp.path().join("memory/hearth").exists());
}

#[test]
fn tiny_cpu_quota_is_raised_to_the_kernel_minimum() {
    assert_eq!(Limits::cpu_quota_us(0.0001), 1_000);
    assert_eq!(Limits::cpu_quota_us(2.0), 200_000);
}

#[test]
fn no_hierarchy_cannot_host_a_task_cgroup() {
    let err = TaskCgroup::create(&Hierarchy::None, "hearth", "t", &LIMITS).unwrap_err();
    assert!(matches!(err, CgroupError::NoHierarchy { .. }));
}

#[test]
fn open_existing_reattaches_and_reports_a_missing_hierarchy_dir() {
    let tmp = TempDir::new().unwrap();
    let h = v1_tree(&tmp, true);
    let created = TaskCgroup::create(&h, "hearth", "t", &LIMITS).unwrap();
    let opened = TaskCgroup::open_existing(&h, "hearth", "t").unwrap();
    assert_eq!(opened.dirs(), created.dirs());
    assert_eq!(opened.read_limits().unwrap(), LIMITS);

    let gone = tmp.path().join("unified/hearth/t");
    fs::remove_dir(&gone).unwrap();
    let err = TaskCgroup::open_existing(&h, "hearth", "t").unwrap_err();
    assert!(matches!(err, CgroupError::NotFound { ref path } if *path == gone));
}

#[test]
fn pids_are_the_union_of_every_hierarchy() {
    let tmp = TempDir::new().unwrap();
    let h = v1_tree(&tmp, false);
    let cg = TaskCgroup::create(&h, "hearth", "t", &Limits::default()).unwrap();
    fake_members(&cg, &[30, 10]);
    fs::write(
        tmp.path().join("freezer/hearth/t/cgroup.procs"),
        "10\n20\n30\n",
    )
    .unwrap();
    assert_eq!(cg.pids().unwrap(), vec![10, 20, 30]);
    assert!(!cg.is_empty().unwrap());
    fake_members(&cg, &[]);
    assert!(cg.is_empty().unwrap());
}

#[test]
fn hybrid_emptiness_comes_from_cgroup_events() {
    let tmp = TempDir::new().unwrap();
    let h = v1_tree(&tmp, true);
    let cg = TaskCgroup::create(&h, "hearth", "t", &Limits::default()).unwrap();
    let events = tmp.path().join("unified/hearth/t/cgroup.events");
    fs::write(&events, "populated 1\nfrozen 0\n").unwrap();
    assert!(!cg.is_empty().unwrap());
    fs::write(&events, "populated 0\nfrozen 0\n").unwrap();
    assert!(cg.is_empty().unwrap());
}

#[test]
fn oom_kills_read_from_oom_control_on_v1_and_memory_events_on_v2() {
    let tmp = TempDir::new().unwrap();
    let cg = TaskCgroup::create(&v1_tree(&tmp, true), "hearth", "t", &LIMITS).unwrap();
    fs::write(
        tmp.path().join("memory/hearth/t/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n",
    )
    .unwrap();
    assert_eq!(cg.oom_kills().unwrap(), 4);

    let tmp = TempDir::new().unwrap();
    let cg = TaskCgroup::create(&v2_tree(&tmp), "hearth", "t", &LIMITS).unwrap();
    fs::write(
        tmp.path().join("hearth/t/memory.events"),
        "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n",
    )
    .unwrap();
    assert_eq!(cg.oom_kills().unwrap(), 1);
}

#[test]
fn v1_stats_come_from_cpuacct_and_memory() {
    let tmp = TempDir::new().unwrap();
    let cg = TaskCgroup::create(&v1_tree(&tmp, false), "hearth", "t", &LIMITS).unwrap();
    let t = tmp.path();
    fs::write(t.join("cpuacct/hearth/t/cpuacct.usage"), "1500000000\n").unwrap();
    fs::write(t.join("memory/hearth/t/memory.usage_in_bytes"), "1048576\n").unwrap();
    fs::write(
        t.join("memory/hearth/t/memory.max_usage_in_bytes"),
        "2097152\n",
    )
    .unwrap();
    let expected = CgroupStats {
        cpu_usage_ns: 1_500_000_000,
        memory_bytes: 1 << 20,
        memory_max_bytes: Some(2 << 20),
    };
    assert_eq!(cg.stats().unwrap(), expected);
}

#[test]
fn v2_stats_convert_cpu_microseconds_and_tolerate_missing_peak() {
    let tmp = TempDir::new().unwrap();
    let cg = TaskCgroup::create(&v2_tree(&tmp), "hearth", "t", &LIMITS).unwrap();
    let dir = tmp.path().join("hearth/t");
    fs::write(
        dir.join("cpu.stat"),
        "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
    )
    .unwrap();
    fs::write(dir.join("memory.current"), "4096\n").unwrap();
    let stats = cg.stats().unwrap();
    assert_eq!(
        (
            stats.cpu_usage_ns,
            stats.memory_bytes,
            stats.memory_max_bytes
        ),
        (2_500_000, 4096, None)
    );
    fs::write(dir.join("memory.peak"), "8192\n").unwrap();
    assert_eq!(cg.stats().unwrap().memory_max_bytes, Some(8192));
}

#[test]
fn v1_stats_without_cpuacct_name_the_missing_controller() {
    let tmp = TempDir::new().unwrap();
    let mut mounts = V1Mounts::standard(tmp.path());
    mounts.cpuacct = None;
    let h = Hierarchy::V1 {
        mounts,
        unified: None,
    };
    for root in h.roots() {
        fs::create_dir_all(root).unwrap();
    }
    let cg = TaskCgroup::create(&h, "hearth", "t", &LIMITS).unwrap();
    let err = cg.stats().unwrap_err();
    assert!(matches!(
        err,
        CgroupError::MissingController {
            controller: "cpuacct",
            ..
        }
    ));
}

#[test]
fn kill_all_uses_cgroup_kill_when_the_kernel_has_it() {
    for v2 in [false, true] {
        let tmp = TempDir::new().unwrap();
        let h = if v2 {
            v2_tree(&tmp)
        } else {
            v1_tree(&tmp, true)
        };
        let cg = TaskCgroup::create(&h, "hearth", "t", &LIMITS).unwrap();
        let kill_file = if v2 {
            "hearth/t/cgroup.kill"
        } else {
            "unified/hearth/t/cgroup.kill"
        };
        let kill_file = tmp.path().join(kill_file);
        fs::write(&kill_file, "").unwrap();
        cg.kill_all().unwrap();
        assert_eq!(read(&kill_file), "1", "v2 = {v2}");
    }
}

#[test]
fn v1_kill_all_freezes_kills_every_member_and_thaws() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = TempDir::new()?;
    let cg = TaskCgroup::create(&v1_tree(&tmp, false), "hearth", "t", &LIMITS)?;
    let mut child = Command::new("sleep").arg("30").spawn()?;
    let pid = i32::try_from(child.id())?;
    fake_members(&cg, &[pid]);
    let result = cg.kill_all();
    let status = child.wait()?;
    result?;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(
        read(tmp.path().join("freezer/hearth/t/freezer.state")),
        "THAWED"
    );
    Ok(())
}

#[test]
fn v2_kill_all_without_cgroup_kill_freezes_kills_and_thaws()
-> Result<(), Box<dyn std::error::Error>> {
    let tmp = TempDir::new()?;
    let cg = TaskCgroup::create(&v2_tree(&tmp), "hearth", "t", &LIMITS)?;
    let dir = tmp.path().join("hearth/t");
    // A kernel before 5.14: no cgroup.kill; cgroup.events reports the freeze as complete.
    fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 1\n")?;
    let mut child = Command::new("sleep").arg("30").spawn()?;
    fake_members(&cg, &[i32::try_from(child.id())?]);
    let result = cg.kill_all();
    let status = child.wait()?;
    result?;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(read(dir.join("cgroup.freeze")), "0");
    assert!(!dir.join("cgroup.kill").exists());
    Ok(())
}

#[test]
fn signal_all_counts_live_members_and_skips_exited_ones() -> Result<(), Box<dyn std::error::Error>>
{
    let tmp = TempDir::new()?;
    let cg = TaskCgroup::create(&v1_tree(&tmp, false), "hearth", "t", &Limits::default())?;
    let mut live = Command::new("sleep").arg("30").spawn()?;
    let mut dead = Command::new("true").spawn()?;
    let dead_pid = i32::try_from(dead.id())?;
    dead.wait()?; // reaped: its pid no longer exists
    fake_members(&cg, &[i32::try_from(live.id())?, dead_pid]);
    let sent = cg.signal_all(Signal::SIGTERM);
    let status = live.wait()?;
    assert_eq!(sent?, 1);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    Ok(())
}

/// `rmdir` as on a cgroup filesystem: the control files go with the directory.
fn kernel_rmdir(dir: &Path) -> io::Result<()> {
    fs::remove_dir_all(dir)
}

#[test]
fn remove_deletes_the_dir_in_every_hierarchy_once_empty() {
    let tmp = TempDir::new().unwrap();
    let cg = TaskCgroup::create(&v1_tree(&tmp, true), "hearth", "t", &LIMITS).unwrap();
    fake_members(&cg, &[]);
    cg.remove_with(Duration::from_secs(1), kernel_rmdir)
        .unwrap();
    for dir in cg.dirs() {
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(
            dir.parent().is_some_and(Path::is_dir),
            "the shared parent must stay"
        );
    }
}

#[test]
fn remove_gives_up_on_members_that_stay_and_lists_them() {
    let tmp = TempDir::new().unwrap();
    let cg = TaskCgroup::create(&v2_tree(&tmp), "hearth", "t", &LIMITS).unwrap();
    fake_members(&cg, &[4242]);
    let err = cg
        .remove_with(Duration::from_millis(30), kernel_rmdir)
        .unwrap_err();
    let CgroupError::NotEmpty { pids, waited, .. } = err else {
        panic!("unexpected error {err:?}");
    };
    assert_eq!(pids, vec![4242]);
    assert!(waited >= Duration::from_millis(30));
    assert!(tmp.path().join("hearth/t").is_dir());
}

#[test]
fn remove_retries_while_the_kernel_reports_busy() {
    let tmp = TempDir::new().unwrap();
    let cg = TaskCgroup::create(&v2_tree(&tmp), "hearth", "t", &LIMITS).unwrap();
    fake_members(&cg, &[]);
    let mut busy_left = 3;
    let mut attempts = 0;
    cg.remove_with(Duration::from_secs(1), |dir| {
        attempts += 1;
        if busy_left > 0 {
            busy_left -= 1;
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        kernel_rmdir(dir)
    })
    .unwrap();
    assert_eq!(attempts, 4);
    assert!(!tmp.path().join("hearth/t").exists());
}

#[test]
fn remove_reports_the_directory_that_stays_busy() {
    let tmp = TempDir::new().unwrap();
    let cg = TaskCgroup::create(&v2_tree(&tmp), "hearth", "t", &LIMITS).unwrap();
    fake_members(&cg, &[]);
    let err = cg
        .remove_with(Duration::from_millis(20), |_| {
            Err(io::Error::from_raw_os_error(libc::EBUSY))
        })
        .unwrap_err();
    let expected: PathBuf = tmp.path().join("hearth/t");
    assert!(
        matches!(err, CgroupError::RemoveDir { ref path, .. } if *path == expected),
        "{err:?}"
    );
}

#[test]
fn remove_is_idempotent() {
    let tmp = TempDir::new().unwrap();
    let cg = TaskCgroup::create(&v1_tree(&tmp, false), "hearth", "t", &LIMITS).unwrap();
    fake_members(&cg, &[]);
    cg.remove_with(Duration::from_secs(1), kernel_rmdir)
        .unwrap();
    cg.remove_with(Duration::from_secs(1), kernel_rmdir)
        .unwrap();
}

// Delegation: where task cgroups go, and that nothing above the delegated cgroup is written.

mod delegated {
    use super::*;
    use crate::cgroup::delegation::{Choice, LEAF, Reason, choose, enter_leaf, own_cgroup};

    const UNIT: &str = "system.slice/hearth-agent.service";

    /// A fake v2 tree whose root hands every controller down, with the unit's cgroup below it
    /// (given `cpu io memory pids`, as systemd enables them for a delegated unit).
    fn delegated_tree(tmp: &TempDir) -> (Hierarchy, PathBuf) {
        let h = v2_tree(tmp);
        fs::write(
            tmp.path().join("cgroup.subtree_control"),
            "cpu io memory pids
",
        )
        .unwrap();
        let unit = tmp.path().join(UNIT);
        fs::create_dir_all(&unit).unwrap();
        fs::write(
            unit.join("cgroup.controllers"),
            "cpu io memory pids
",
        )
        .unwrap();
        fs::write(unit.join("cgroup.subtree_control"), "").unwrap();
        fs::write(unit.join("cgroup.procs"), "").unwrap();
        (h, unit)
    }

    /// The delegation marks of a fake tree: the directories listed carry `trusted.delegate=1`.
    fn marked(dirs: Vec<PathBuf>) -> impl Fn(&Path) -> Option<&'static str> {
        move |dir| dirs.iter().any(|d| d == dir).then_some("trusted.delegate")
    }

    fn choice(h: &Hierarchy, own: Option<&str>, marks: Vec<PathBuf>) -> Choice {
        choose(h, None, own, marked(marks))
    }

    #[test]
    fn own_cgroup_is_the_v2_line_of_proc_self_cgroup() {
        assert_eq!(
            own_cgroup("0::/system.slice/hearth-agent.service\n").as_deref(),
            Some(UNIT)
        );
        assert_eq!(own_cgroup("0::/\n").as_deref(), Some(""));
        // Hybrid: the v1 lines come first and are not ours to use.
        let hybrid = "12:memory:/user.slice\n1:name=systemd:/user.slice/s.scope\n0::/u/s.scope\n";
        assert_eq!(own_cgroup(hybrid).as_deref(), Some("u/s.scope"));
        assert_eq!(own_cgroup("4:memory:/x\n"), None);
    }

    #[test]
    fn a_marked_own_cgroup_is_the_delegated_top_and_tasks_go_under_its_hearth() {
        let tmp = TempDir::new().unwrap();
        let (h, unit) = delegated_tree(&tmp);
        let c = choice(&h, Some(UNIT), vec![unit]);
        assert_eq!(
            c.placement,
            Placement {
                parent: format!("{UNIT}/hearth"),
                top: UNIT.to_owned()
            }
        );
        assert!(c.placement.is_delegated());
        assert_eq!(
            c.reason,
            Reason::Delegated {
                own: UNIT.to_owned(),
                delegated: UNIT.to_owned(),
                mark: "trusted.delegate"
            }
        );
        let said = c.reason.to_string();
        assert!(
            said.contains("trusted.delegate") && said.contains(UNIT),
            "{said}"
        );
    }

    #[test]
    fn the_supervisor_leaf_of_a_marked_cgroup_finds_the_same_top() {
        let tmp = TempDir::new().unwrap();
        let (h, unit) = delegated_tree(&tmp);
        let leaf = format!("{UNIT}/{LEAF}");
        let from_leaf = choice(&h, Some(&leaf), vec![unit.clone()]);
        let from_unit = choice(&h, Some(UNIT), vec![unit]);
        assert_eq!(from_leaf.placement, from_unit.placement);
    }

    #[test]
    fn another_child_of_a_marked_cgroup_is_not_delegated_to_us() {
        // A user manager's cgroup is delegated to the manager; its services and scopes are not
        // delegated to the programs in them.
        let tmp = TempDir::new().unwrap();
        let (h, _) = delegated_tree(&tmp);
        let manager = "user.slice/user-1000.slice/user@1000.service";
        let own = format!("{manager}/app.slice/term.scope");
        let c = choice(&h, Some(&own), vec![tmp.path().join(manager)]);
        assert_eq!(c.placement, Placement::at_root("hearth"));
        assert_eq!(c.reason, Reason::NotDelegated { own: own.clone() });
        let direct = format!("{manager}/foo.service");
        let c = choice(&h, Some(&direct), vec![tmp.path().join(manager)]);
        assert_eq!(c.placement, Placement::at_root("hearth"));
    }

    #[test]
    fn an_unmarked_cgroup_the_root_or_no_v2_line_keep_hearth_at_the_mount_root() {
        let tmp = TempDir::new().unwrap();
        let (h, _) = delegated_tree(&tmp);
        let c = choice(&h, Some(UNIT), vec![]);
        assert_eq!(c.placement, Placement::at_root("hearth"));
        assert!(!c.placement.is_delegated());
        assert!(
            c.reason.to_string().contains("is not delegated"),
            "{}",
            c.reason
        );
        // The root is never delegated, marked or not.
        let c = choice(&h, Some(""), vec![tmp.path().to_path_buf()]);
        assert_eq!(
            (c.placement, c.reason),
            (Placement::at_root("hearth"), Reason::RootCgroup)
        );
        let c = choice(&h, None, vec![]);
        assert_eq!(c.reason, Reason::NoOwnCgroup);
        // A path that would climb out of the tree is not followed.
        let c = choice(&h, Some("a/../.."), vec![tmp.path().join("a/../..")]);
        assert_eq!(c.placement, Placement::at_root("hearth"));
    }

    #[test]
    fn an_explicit_parent_wins_over_delegation() {
        let tmp = TempDir::new().unwrap();
        let (h, unit) = delegated_tree(&tmp);
        let c = choose(&h, Some("custom/tasks"), Some(UNIT), marked(vec![unit]));
        assert_eq!(
            (c.placement, c.reason),
            (Placement::at_root("custom/tasks"), Reason::Explicit)
        );
    }

    #[test]
    fn v1_hosts_are_unaffected() {
        let tmp = TempDir::new().unwrap();
        let h = v1_tree(&tmp, true);
        let c = choice(&h, Some(UNIT), vec![tmp.path().join("unified").join(UNIT)]);
        assert_eq!(
            (c.placement, c.reason),
            (Placement::at_root("hearth"), Reason::NotV2)
        );
    }

    #[test]
    fn delegated_create_enables_controllers_only_from_the_top_down() {
        let tmp = TempDir::new().unwrap();
        let (h, unit) = delegated_tree(&tmp);
        let root_control = tmp.path().join("cgroup.subtree_control");
        let slice_control = tmp.path().join("system.slice/cgroup.subtree_control");
        fs::write(&root_control, "cpu io memory pids\n").unwrap();
        let cg = TaskCgroup::create_in(&h, &Placement::delegated(UNIT), "t", &LIMITS).unwrap();
        assert_eq!(read(&root_control), "cpu io memory pids\n", "root written");
        assert!(
            !slice_control.exists(),
            "the slice above the unit was written"
        );
        assert!(
            !tmp.path().join("hearth").exists(),
            "a cgroup outside the unit"
        );
        for dir in [unit.clone(), unit.join("hearth")] {
            assert_eq!(
                read(dir.join("cgroup.subtree_control")),
                "+memory +cpu +pids +io",
                "in {}",
                dir.display()
            );
        }
        assert_eq!(read(unit.join("hearth/t/memory.max")), "67108864");
        assert_eq!(read(unit.join("hearth/t/cpu.max")), "50000 100000");
        assert_eq!(cg.join_files(), vec![unit.join("hearth/t/cgroup.procs")]);
        assert_eq!(cg.name(), Path::new(UNIT).join("hearth/t"));
    }

    #[test]
    fn delegated_create_checks_what_the_delegated_cgroup_was_given() {
        let tmp = TempDir::new().unwrap();
        let (h, unit) = delegated_tree(&tmp);
        fs::write(unit.join("cgroup.controllers"), "memory pids\n").unwrap();
        let err = TaskCgroup::create_in(&h, &Placement::delegated(UNIT), "t", &LIMITS).unwrap_err();
        let expected = unit.join("cgroup.controllers");
        assert!(
            matches!(err, CgroupError::MissingController { ref path, controller: "cpu" } if *path == expected),
            "{err:?}"
        );
        assert!(!unit.join("hearth/t").exists());
    }

    #[test]
    fn a_parent_outside_its_top_is_refused() {
        let tmp = TempDir::new().unwrap();
        let (h, _) = delegated_tree(&tmp);
        let placement = Placement {
            parent: "elsewhere/hearth".to_owned(),
            top: UNIT.to_owned(),
        };
        let err = TaskCgroup::create_in(&h, &placement, "t", &LIMITS).unwrap_err();
        assert!(matches!(err, CgroupError::InvalidName { .. }), "{err:?}");
        assert!(!tmp.path().join("elsewhere").exists());
    }

    #[test]
    fn entering_the_leaf_moves_every_process_of_the_delegated_cgroup() {
        let tmp = TempDir::new().unwrap();
        let (_, unit) = delegated_tree(&tmp);
        let root = tmp.path();
        let placement = Placement::delegated(UNIT);
        // Empty: nothing to move, no leaf made.
        assert_eq!(enter_leaf(root, &placement).unwrap(), Vec::<i32>::new());
        assert!(!unit.join(LEAF).exists());
        // Not delegated: the mount root is never emptied.
        fs::write(root.join("cgroup.procs"), "1\n").unwrap();
        assert_eq!(
            enter_leaf(root, &Placement::at_root("hearth")).unwrap(),
            Vec::<i32>::new()
        );
        assert!(!root.join(LEAF).exists());
        // Members that never leave (a fake tree does not move them) are reported, not chased
        // forever; each was written to the leaf's cgroup.procs.
        fs::write(unit.join("cgroup.procs"), "12\n34\n").unwrap();
        let err = enter_leaf(root, &placement).unwrap_err();
        assert!(
            matches!(err, CgroupError::StillOccupied { ref pids, ref leaf, .. }
                if *pids == vec![12, 34] && *leaf == unit.join(LEAF)),
            "{err:?}"
        );
        assert_eq!(read(unit.join(LEAF).join("cgroup.procs")), "34");
    }

    #[test]
    fn a_delegated_top_must_be_writable_not_the_mount_root() {
        let tmp = TempDir::new().unwrap();
        let (h, unit) = delegated_tree(&tmp);
        check_usable_at(&h, UNIT).unwrap();
        let err = check_usable_at(&h, "system.slice/absent.service").unwrap_err();
        assert!(
            matches!(err, CgroupError::NotUsable { ref path, .. }
                if path.starts_with(tmp.path().join("system.slice/absent.service"))),
            "{err:?}"
        );
        fs::remove_file(unit.join("cgroup.subtree_control")).unwrap();
        assert!(matches!(
            check_usable_at(&h, UNIT),
            Err(CgroupError::NotUsable { .. })
        ));
    }
}
