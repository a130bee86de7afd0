//! Writing, reading back and checking the task's resource limits (v1 and v2 control files).

use std::path::Path;

use super::{
    CPU_MIN_QUOTA_US, CPU_PERIOD_US, CgroupError, Layout, Limits, MAX_PAGE_BYTES, TaskCgroup,
    V1_MEMORY_UNLIMITED, files,
};

impl Limits {
    pub(super) fn validate(&self) -> Result<(), CgroupError> {
        if self.memory_bytes == Some(0) {
            return Err(CgroupError::InvalidLimit {
                field: "memory_bytes",
                value: "0".to_owned(),
                reason: "must be positive",
            });
        }
        if let Some(cores) = self.cpu_cores
            && !(cores.is_finite() && cores > 0.0)
        {
            return Err(CgroupError::InvalidLimit {
                field: "cpu_cores",
                value: cores.to_string(),
                reason: "must be a positive number",
            });
        }
        if self.pids_max == Some(0) {
            return Err(CgroupError::InvalidLimit {
                field: "pids_max",
                value: "0".to_owned(),
                reason: "must be positive",
            });
        }
        if self.swap_bytes > 0 && self.memory_bytes.is_none() {
            return Err(CgroupError::InvalidLimit {
                field: "swap_bytes",
                value: self.swap_bytes.to_string(),
                reason: "needs a memory limit: swap is allowed on top of it",
            });
        }
        if let Some(high) = self.memory_high_bytes {
            if high == 0 {
                return Err(CgroupError::InvalidLimit {
                    field: "memory_high_bytes",
                    value: "0".to_owned(),
                    reason: "must be positive",
                });
            }
            if self.memory_bytes.is_some_and(|max| high > max) {
                return Err(CgroupError::InvalidLimit {
                    field: "memory_high_bytes",
                    value: high.to_string(),
                    reason: "must not exceed memory_bytes, the hard limit",
                });
            }
        }
        Ok(())
    }

    /// The CFS quota for `cores`, in microseconds per [`CPU_PERIOD_US`].
    pub(super) fn cpu_quota_us(cores: f64) -> u64 {
        // `as` saturates for huge values; the minimum keeps tiny quotas acceptable to the kernel.
        ((cores * CPU_PERIOD_US as f64).round() as u64).max(CPU_MIN_QUOTA_US)
    }
}

impl TaskCgroup {
    pub(super) fn check_controllers(&self, limits: &Limits) -> Result<(), CgroupError> {
        let Layout::V1 {
            memory, cpu, pids, ..
        } = &self.layout
        else {
            return Ok(()); // v2 controllers are checked against cgroup.controllers when enabled.
        };
        let needed = [
            ("memory", limits.memory_bytes.is_some(), memory),
            ("cpu", limits.cpu_cores.is_some(), cpu),
            ("pids", limits.pids_max.is_some(), pids),
        ];
        for (controller, wanted, dir) in needed {
            if wanted && dir.is_none() {
                return Err(CgroupError::MissingController {
                    path: self.name.clone(),
                    controller,
                });
            }
        }
        if let Some(high) = limits.memory_high_bytes {
            return Err(CgroupError::InvalidLimit {
                field: "memory_high_bytes",
                value: high.to_string(),
                reason: "a soft memory limit needs cgroup v2 (memory.high); this host is v1",
            });
        }
        Ok(())
    }

    pub(super) fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V1 {
                memory, cpu, pids, ..
            } => {
                if let (Some(bytes), Some(dir)) = (limits.memory_bytes, memory) {
                    let path = dir.join("memory.limit_in_bytes");
                    files::write(&path, &bytes.to_string())?;
                    verify_memory(&path, bytes)?;
                }
                if let (Some(cores), Some(dir)) = (limits.cpu_cores, cpu) {
                    let period = CPU_PERIOD_US.to_string();
                    let quota = Limits::cpu_quota_us(cores).to_string();
                    let period_file = dir.join("cpu.cfs_period_us");
                    let quota_file = dir.join("cpu.cfs_quota_us");
                    files::write(&period_file, &period)?;
                    files::write(&quota_file, &quota)?;
                    verify_exact(&period_file, &period)?;
                    verify_exact(&quota_file, &quota)?;
                }
                if let (Some(max), Some(dir)) = (limits.pids_max, pids) {
                    let path = dir.join("pids.max");
                    files::write(&path, &max.to_string())?;
                    verify_exact(&path, &max.to_string())?;
                }
            }
            Layout::V2 { dir, .. } => {
                if let Some(bytes) = limits.memory_bytes {
                    let path = dir.join("memory.max");
                    files::write(&path, &bytes.to_string())?;
                    verify_memory(&path, bytes)?;
                    // The RAM limit is the task's limit: without this v2 lets it swap beyond it
                    // (`memory.swap.max` defaults to `max`), so swap is 0 unless the task asks
                    // for some. Absent when the kernel does not account swap, and then there is
                    // nothing to limit.
                    let swap = dir.join("memory.swap.max");
                    if swap.exists() {
                        files::write(&swap, &limits.swap_bytes.to_string())?;
                        verify_memory(&swap, limits.swap_bytes)?;
                    }
                }
                if let Some(bytes) = limits.memory_high_bytes {
                    let path = dir.join("memory.high");
                    files::write(&path, &bytes.to_string())?;
                    verify_memory(&path, bytes)?;
                }
                if let Some(cores) = limits.cpu_cores {
                    let path = dir.join("cpu.max");
                    let value = format!("{} {CPU_PERIOD_US}", Limits::cpu_quota_us(cores));
                    files::write(&path, &value)?;
                    verify_exact(&path, &value)?;
                }
                if let Some(max) = limits.pids_max {
                    let path = dir.join("pids.max");
                    files::write(&path, &max.to_string())?;
                    verify_exact(&path, &max.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// The limits currently in force, read from the kernel (after a restart, this is how the
    /// executor learns them). A limit file that does not exist means no limit.
    pub fn read_limits(&self) -> Result<Limits, CgroupError> {
        let mut limits = Limits::default();
        match &self.layout {
            Layout::V1 {
                memory, cpu, pids, ..
            } => {
                if let Some(dir) = memory {
                    let path = dir.join("memory.limit_in_bytes");
                    if let Some(text) = files::read_opt(&path)? {
                        let bytes = files::parse_u64(&path, &text, "memory limit")?;
                        limits.memory_bytes = (bytes < V1_MEMORY_UNLIMITED).then_some(bytes);
                    }
                }
                if let Some(dir) = cpu {
                    let quota_file = dir.join("cpu.cfs_quota_us");
                    if let Some(text) = files::read_opt(&quota_file)? {
                        let quota = text.trim();
                        if quota != "-1" {
                            let quota = files::parse_u64(&quota_file, quota, "cfs quota")?;
                            let period =
                                files::read_u64(&dir.join("cpu.cfs_period_us"), "cfs period")?;
                            if period > 0 {
                                limits.cpu_cores = Some(quota as f64 / period as f64);
                            }
                        }
                    }
                }
                if let Some(dir) = pids {
                    let path = dir.join("pids.max");
                    if let Some(text) = files::read_opt(&path)? {
                        limits.pids_max = files::parse_max(&path, &text, "pids limit")?;
                    }
                }
            }
            Layout::V2 { dir, .. } => {
                let path = dir.join("memory.max");
                if let Some(text) = files::read_opt(&path)? {
                    limits.memory_bytes = files::parse_max(&path, &text, "memory limit")?;
                }
                let path = dir.join("memory.swap.max");
                if limits.memory_bytes.is_some()
                    && let Some(text) = files::read_opt(&path)?
                {
                    limits.swap_bytes =
                        files::parse_max(&path, &text, "swap limit")?.unwrap_or(u64::MAX);
                }
                let path = dir.join("memory.high");
                if let Some(text) = files::read_opt(&path)? {
                    limits.memory_high_bytes = files::parse_max(&path, &text, "soft memory limit")?;
                }
                let path = dir.join("cpu.max");
                if let Some(text) = files::read_opt(&path)? {
                    limits.cpu_cores = files::parse_cpu_max(&path, &text)?;
                }
                let path = dir.join("pids.max");
                if let Some(text) = files::read_opt(&path)? {
                    limits.pids_max = files::parse_max(&path, &text, "pids limit")?;
                }
            }
        }
        Ok(limits)
    }
}

pub(super) fn verify_exact(path: &Path, wrote: &str) -> Result<(), CgroupError> {
    let read = files::read(path)?;
    if read.trim() == wrote {
        Ok(())
    } else {
        Err(CgroupError::LimitNotApplied {
            path: path.to_path_buf(),
            wrote: wrote.to_owned(),
            read: read.trim().to_owned(),
        })
    }
}

/// A memory limit is taken when it reads back as written, rounded down to a page at most.
pub(super) fn verify_memory(path: &Path, bytes: u64) -> Result<(), CgroupError> {
    let read = files::read(path)?;
    let taken = read
        .trim()
        .parse::<u64>()
        .is_ok_and(|got| got <= bytes && bytes - got < MAX_PAGE_BYTES);
    if taken {
        Ok(())
    } else {
        Err(CgroupError::LimitNotApplied {
            path: path.to_path_buf(),
            wrote: bytes.to_string(),
            read: read.trim().to_owned(),
        })
    }
}
