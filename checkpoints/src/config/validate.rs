//! Phase 2: wire types to the validated model, with every default filled in and every problem
//! reported at once with its field path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::{Number, Value};

use super::template::{self, HEALTH_PORT, SHELL_COMMAND_PATH};
use super::wire::{
    Field, Loose, WireAnnounce, WireConfig, WireHealthCheck, WireJob, WireLifecycle, WireLogger,
    WireProcess, WireTask, describe,
};
use super::{
    ConfigErrors, ConfigKind, ConfigProblem, HealthCheckConfig, HealthChecker, JobInfo,
    LifecycleConfig, LogDestination, LogMode, LoggerConfig, ProcessConfig, Resources, TaskConfig,
};

/// Whether `name` may name a process: Thermos's `^[^./][^/]*$`, and no control characters (the
/// name becomes a directory under `.logs`).
pub fn is_valid_process_name(name: &str) -> bool {
    name_problem(name).is_none()
}

fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("must not be empty")
    } else if name.starts_with('.') {
        Some("must not start with '.'")
    } else if name.contains('/') {
        Some("must not contain '/'")
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else {
        None
    }
}

/// Problems found so far.
#[derive(Debug, Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn wrong_type(&mut self, path: &str, expected: &str, found: &Value) {
        self.push(
            path,
            format!("expected {expected}, found {}", describe(found)),
        );
    }

    /// The value if it has the right type; reports it otherwise.
    fn get<'a, T>(&mut self, path: &str, expected: &str, field: &'a Field<T>) -> Option<&'a T> {
        match field {
            None => None,
            Some(Loose::Good(t)) => Some(t),
            Some(Loose::Bad(v)) => {
                self.wrong_type(path, expected, v);
                None
            }
        }
    }

    fn string(&mut self, path: &str, field: &Field<String>) -> Option<String> {
        self.get(path, "a string", field).cloned()
    }

    fn flag(&mut self, path: &str, field: &Field<bool>, default: bool) -> bool {
        self.get(path, "true or false", field)
            .copied()
            .unwrap_or(default)
    }

    /// A whole, non-negative number no larger than `max`.
    fn whole(&mut self, path: &str, field: &Field<Number>, default: u64, max: u64) -> u64 {
        let Some(n) = self.get(path, "a number", field) else {
            return default;
        };
        match whole_number(n, max) {
            Ok(v) => v,
            Err(message) => {
                self.push(path, message);
                default
            }
        }
    }

    fn count(&mut self, path: &str, field: &Field<Number>, default: u32) -> u32 {
        let v = self.whole(path, field, u64::from(default), u64::from(u32::MAX));
        u32::try_from(v).unwrap_or(default)
    }

    /// A non-negative number (fractions allowed).
    fn float(&mut self, path: &str, field: &Field<Number>, default: f64) -> f64 {
        let Some(n) = self.get(path, "a number", field) else {
            return default;
        };
        match n.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 => f,
            Some(f) if f < 0.0 => {
                self.push(path, format!("must not be negative (got {n})"));
                default
            }
            _ => {
                self.push(path, format!("is not a usable number (got {n})"));
                default
            }
        }
    }

    /// Non-negative seconds (fractions allowed).
    fn seconds(&mut self, path: &str, field: &Field<Number>, default: f64) -> Duration {
        let secs = self.float(path, field, default);
        match Duration::try_from_secs_f64(secs) {
            Ok(d) => d,
            Err(_) => {
                self.push(
                    path,
                    format!("is too large a number of seconds (got {secs})"),
                );
                Duration::from_secs_f64(default)
            }
        }
    }

    /// Seconds that must be more than zero.
    fn positive_seconds(&mut self, path: &str, field: &Field<Number>, default: f64) -> Duration {
        let before = self.0.len();
        let d = self.seconds(path, field, default);
        if d.is_zero() && self.0.len() == before {
            self.push(path, "must be greater than zero");
            return Duration::from_secs_f64(default);
        }
        d
    }

    /// An HTTP path: must start with '/'.
    fn endpoint(&mut self, path: &str, field: &Field<String>, default: &str) -> String {
        match self.string(path, field) {
            Some(s) if s.starts_with('/') => s,
            Some(s) => {
                self.push(path, format!("must start with '/' (got {s:?})"));
                default.to_owned()
            }
            None => default.to_owned(),
        }
    }
}

fn whole_number(n: &Number, max: u64) -> Result<u64, String> {
    if let Some(v) = n.as_u64() {
        return if v <= max {
            Ok(v)
        } else {
            Err(format!("must be at most {max} (got {n})"))
        };
    }
    if n.as_i64().is_some() {
        return Err(format!("must not be negative (got {n})"));
    }
    let Some(f) = n.as_f64() else {
        return Err(format!("is not a usable number (got {n})"));
    };
    if f < 0.0 {
        Err(format!("must not be negative (got {n})"))
    } else if f.fract() != 0.0 || !f.is_finite() {
        Err(format!("must be a whole number (got {n})"))
    } else if f > max as f64 {
        Err(format!("must be at most {max} (got {n})"))
    } else {
        // A whole, non-negative float within range converts exactly.
        Ok(f as u64)
    }
}

/// Validate a config read from the wire into the model.
pub(super) fn validate(config: &WireConfig) -> Result<TaskConfig, ConfigErrors> {
    let mut p = Problems::default();
    let task = match config {
        WireConfig::Task(task) => validate_task(&mut p, task, ConfigKind::ThermosTask, None),
        WireConfig::Job(job) => validate_job(&mut p, job),
    };
    if p.0.is_empty() {
        Ok(task)
    } else {
        Err(ConfigErrors { problems: p.0 })
    }
}

fn validate_job(p: &mut Problems, job: &WireJob) -> TaskConfig {
    let kind = if job.instance.is_some() {
        ConfigKind::TaskInstance
    } else {
        ConfigKind::AuroraJob
    };
    let empty = WireTask::default();
    let wire_task = match &job.task {
        Some(Loose::Good(t)) => t,
        Some(Loose::Bad(v)) => {
            p.wrong_type("task", "an object", v);
            &empty
        }
        None => &empty,
    };
    let mut task = validate_task(p, wire_task, kind, Some(job));
    let instance = p.whole("instance", &job.instance, 0, u64::from(u32::MAX));
    task.job.instance = job
        .instance
        .is_some()
        .then(|| u32::try_from(instance).unwrap_or(0));
    task.job.role = p.string("role", &job.role);
    task.job.environment = p.string("environment", &job.environment);
    task.job.name = p.string("name", &job.name);
    task.job.cluster = p.string("cluster", &job.cluster);
    task
}

/// Validate a task; `job` holds the job-level fields when the task came inside a job.
fn validate_task(
    p: &mut Problems,
    t: &WireTask,
    kind: ConfigKind,
    job: Option<&WireJob>,
) -> TaskConfig {
    let prefix = kind.task_prefix();
    let at = |field: &str| format!("{prefix}{field}");

    let mut processes = Vec::new();
    match &t.processes {
        None => p.push(at("processes"), "is required"),
        Some(Loose::Bad(v)) => p.wrong_type(&at("processes"), "a list", v),
        Some(Loose::Good(list)) if list.is_empty() => {
            p.push(at("processes"), "must list at least one process");
        }
        Some(Loose::Good(list)) => {
            for (i, lp) in list.iter().enumerate() {
                let path = at(&format!("processes[{i}]"));
                match lp {
                    Loose::Good(wp) => processes.push(validate_process(p, &path, wp)),
                    Loose::Bad(v) => {
                        p.wrong_type(&path, "an object", v);
                        // Keep indexes aligned with the file for later messages.
                        processes.push(placeholder_process());
                    }
                }
            }
        }
    }

    // Names: first occurrence wins; later ones are duplicates.
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, proc) in processes.iter().enumerate() {
        if proc.name.is_empty() {
            continue;
        }
        if let Some(first) = index.get(proc.name.as_str()) {
            p.push(
                at(&format!("processes[{i}].name")),
                format!(
                    "duplicate process name {:?} (first at {})",
                    proc.name,
                    at(&format!("processes[{first}]"))
                ),
            );
        } else {
            index.insert(proc.name.as_str(), i);
        }
    }

    let constraints = validate_constraints(p, t, prefix, &processes, &index);

    let name = match p.string(&at("name"), &t.name) {
        Some(n) if n.is_empty() => {
            p.push(at("name"), "must not be empty");
            n
        }
        Some(n) => n,
        // Thermos's default: the first process's name.
        None => processes
            .first()
            .map(|p| p.name.clone())
            .unwrap_or_default(),
    };

    let resources = match p.get(&at("resources"), "an object", &t.resources) {
        None => Resources::default(),
        Some(r) => {
            let resources = Resources {
                cpu: p.float(&at("resources.cpu"), &r.cpu, 0.0),
                ram: p.whole(&at("resources.ram"), &r.ram, 0, u64::MAX),
                disk: p.whole(&at("resources.disk"), &r.disk, 0, u64::MAX),
                gpu: p.whole(&at("resources.gpu"), &r.gpu, 0, u64::MAX),
                swap: p.whole(&at("resources.swap"), &r.swap, 0, u64::MAX),
                ram_high: p.whole(&at("resources.ram_high"), &r.ram_high, 0, u64::MAX),
            };
            if resources.swap > 0 && resources.ram == 0 {
                p.push(
                    at("resources.swap"),
                    "needs resources.ram: swap is allowed on top of the RAM limit",
                );
            }
            if resources.ram > 0 && resources.ram_high > resources.ram {
                p.push(
                    at("resources.ram_high"),
                    format!(
                        "must not exceed resources.ram ({}), the hard limit (got {})",
                        resources.ram, resources.ram_high
                    ),
                );
            }
            resources
        }
    };

    let mut task = TaskConfig {
        name,
        processes,
        constraints,
        resources,
        max_failures: p.count(&at("max_failures"), &t.max_failures, 1),
        max_concurrency: p.count(&at("max_concurrency"), &t.max_concurrency, 0),
        finalization_wait: p.seconds(&at("finalization_wait"), &t.finalization_wait, 30.0),
        job: JobInfo {
            kind,
            ..JobInfo::default()
        },
    };

    match job {
        Some(job) => validate_job_services(p, job, &mut task),
        // A bare task has no lifecycle settings; it gets the default ones when it names the
        // health port.
        None => {
            if named_ports(&task).contains(HEALTH_PORT) {
                task.job.lifecycle = Some(default_lifecycle());
            }
        }
    }
    task
}

fn placeholder_process() -> ProcessConfig {
    ProcessConfig {
        name: String::new(),
        cmdline: String::new(),
        max_failures: 1,
        daemon: false,
        ephemeral: false,
        min_duration: Duration::from_secs(5),
        is_final: false,
        logger: LoggerConfig::default(),
    }
}

fn validate_process(p: &mut Problems, path: &str, w: &WireProcess) -> ProcessConfig {
    let at = |field: &str| format!("{path}.{field}");
    let name = match p.string(&at("name"), &w.name) {
        None if w.name.is_none() => {
            p.push(at("name"), "is required");
            String::new()
        }
        None => String::new(),
        Some(name) => {
            // An invalid name is reported here and kept, so that order lists naming it do not
            // add "unknown process" noise.
            if let Some(why) = name_problem(&name) {
                p.push(at("name"), why);
            }
            name
        }
    };
    let cmdline = match p.string(&at("cmdline"), &w.cmdline) {
        None if w.cmdline.is_none() => {
            p.push(at("cmdline"), "is required");
            String::new()
        }
        None => String::new(),
        Some(c) if c.trim().is_empty() => {
            p.push(at("cmdline"), "must not be empty");
            c
        }
        Some(c) => {
            p.0.extend(template::check_text(&at("cmdline"), &c));
            c
        }
    };
    let logger = match p.get(&at("logger"), "an object", &w.logger) {
        None => LoggerConfig::default(),
        Some(l) => validate_logger(p, &at("logger"), l),
    };
    ProcessConfig {
        name,
        cmdline,
        max_failures: p.count(&at("max_failures"), &w.max_failures, 1),
        daemon: p.flag(&at("daemon"), &w.daemon, false),
        ephemeral: p.flag(&at("ephemeral"), &w.ephemeral, false),
        min_duration: p.seconds(&at("min_duration"), &w.min_duration, 5.0),
        is_final: p.flag(&at("final"), &w.is_final, false),
        logger,
    }
}

fn validate_logger(p: &mut Problems, path: &str, l: &WireLogger) -> LoggerConfig {
    let at = |field: &str| format!("{path}.{field}");
    let default = LoggerConfig::default();
    let destination = match p.string(&at("destination"), &l.destination).as_deref() {
        None => default.destination,
        Some("file") => LogDestination::File,
        Some("console") => LogDestination::Console,
        Some("both") => LogDestination::Both,
        Some("none") => LogDestination::None,
        Some(other) => {
            p.push(
                at("destination"),
                format!("must be one of file, console, both, none (got {other:?})"),
            );
            default.destination
        }
    };
    let mode = match p.string(&at("mode"), &l.mode).as_deref() {
        None => default.mode,
        Some("standard") => LogMode::Standard,
        Some("rotate") => LogMode::Rotate,
        Some(other) => {
            p.push(
                at("mode"),
                format!("must be one of standard, rotate (got {other:?})"),
            );
            default.mode
        }
    };
    let (log_size, backups) = match p.get(&at("rotate"), "an object", &l.rotate) {
        None => (default.log_size, default.backups),
        Some(r) => {
            let size_path = at("rotate.log_size");
            let before = p.0.len();
            let mut log_size = p.whole(&size_path, &r.log_size, default.log_size, u64::MAX);
            if log_size == 0 && p.0.len() == before {
                p.push(size_path, "must be greater than zero");
                log_size = default.log_size;
            }
            let backups = p.count(&at("rotate.backups"), &r.backups, default.backups);
            (log_size, backups)
        }
    };
    LoggerConfig {
        destination,
        mode,
        log_size,
        backups,
    }
}

fn validate_constraints(
    p: &mut Problems,
    t: &WireTask,
    prefix: &str,
    processes: &[ProcessConfig],
    index: &HashMap<&str, usize>,
) -> Vec<Vec<String>> {
    let at = |field: &str| format!("{prefix}{field}");
    let Some(list) = p.get(&at("constraints"), "a list", &t.constraints) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // Edges between known processes, as (from, to), from every order list.
    let mut edges: BTreeSet<(usize, usize)> = BTreeSet::new();
    for (j, lc) in list.iter().enumerate() {
        let cpath = at(&format!("constraints[{j}]"));
        let wc = match lc {
            Loose::Good(wc) => wc,
            Loose::Bad(v) => {
                p.wrong_type(&cpath, "an object", v);
                continue;
            }
        };
        let opath = format!("{cpath}.order");
        let order = match &wc.order {
            None => {
                p.push(&opath, "is required");
                continue;
            }
            Some(Loose::Bad(v)) => {
                p.wrong_type(&opath, "a list of process names", v);
                continue;
            }
            Some(Loose::Good(order)) => order,
        };
        let mut names = Vec::with_capacity(order.len());
        // Position in the list and process index, for names that are known.
        let mut known: Vec<(usize, usize)> = Vec::new();
        for (k, ln) in order.iter().enumerate() {
            let npath = format!("{opath}[{k}]");
            match ln {
                Loose::Bad(v) => p.wrong_type(&npath, "a process name", v),
                Loose::Good(name) => {
                    match index.get(name.as_str()) {
                        Some(&i) => known.push((k, i)),
                        None => p.push(&npath, format!("unknown process {name:?}")),
                    }
                    names.push(name.clone());
                }
            }
        }
        // Mixing final and non-final processes.
        let first_final = known.iter().find(|(_, i)| processes[*i].is_final);
        let first_regular = known.iter().find(|(_, i)| !processes[*i].is_final);
        if let (Some((_, f)), Some((_, r))) = (first_final, first_regular) {
            p.push(
                &opath,
                format!(
                    "mixes final and non-final processes ({:?} is final, {:?} is not)",
                    processes[*f].name, processes[*r].name
                ),
            );
        }
        // Each consecutive pair of names adds an edge.
        for pair in order.windows(2) {
            let (Loose::Good(a), Loose::Good(b)) = (&pair[0], &pair[1]) else {
                continue;
            };
            let (Some(&ia), Some(&ib)) = (index.get(a.as_str()), index.get(b.as_str())) else {
                continue;
            };
            edges.insert((ia, ib));
        }
        // Checks on each edge, reported at the dependent's position in this list.
        for w in known.windows(2) {
            let ((ka, ia), (kb, ib)) = (w[0], w[1]);
            if kb != ka + 1 {
                continue; // an unusable entry sits between them
            }
            let (a, b) = (&processes[ia], &processes[ib]);
            let npath = format!("{opath}[{kb}]");
            if a.daemon && ia != ib {
                p.push(
                    &npath,
                    format!(
                        "{:?} depends on daemon process {:?}, which never finishes",
                        b.name, a.name
                    ),
                );
            }
            if a.ephemeral && !b.ephemeral {
                p.push(
                    &npath,
                    format!(
                        "non-ephemeral process {:?} depends on ephemeral process {:?}",
                        b.name, a.name
                    ),
                );
            }
        }
        out.push(names);
    }
    for cycle in find_cycles(processes.len(), &edges) {
        let names: Vec<&str> = cycle.iter().map(|&i| processes[i].name.as_str()).collect();
        p.push(
            at("constraints"),
            format!("order cycle: {}", names.join(" -> ")),
        );
    }
    out
}

/// One cycle per strongly connected component that has one (including self-loops), as process
/// indexes with the first repeated at the end. Deterministic: components and cycles start at
/// their lowest index and take the shortest way round.
fn find_cycles(n: usize, edges: &BTreeSet<(usize, usize)>) -> Vec<Vec<usize>> {
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in edges {
        succ[a].push(b);
    }
    let comp = components(&succ);
    let mut seen_comp = BTreeSet::new();
    let mut cycles = Vec::new();
    for start in 0..n {
        let c = comp[start];
        if seen_comp.contains(&c) {
            continue;
        }
        let size = comp.iter().filter(|&&x| x == c).count();
        if size == 1 && !succ[start].contains(&start) {
            continue;
        }
        seen_comp.insert(c);
        // Breadth-first from `start` back to itself, inside the component.
        let mut parent: Vec<Option<usize>> = vec![None; n];
        let mut queue = std::collections::VecDeque::from([start]);
        let mut found = None;
        'bfs: while let Some(u) = queue.pop_front() {
            for &v in &succ[u] {
                if comp[v] != c {
                    continue;
                }
                if v == start {
                    found = Some(u);
                    break 'bfs;
                }
                if parent[v].is_none() {
                    parent[v] = Some(u);
                    queue.push_back(v);
                }
            }
        }
        if let Some(last) = found {
            let mut path = vec![last];
            let mut u = last;
            while u != start {
                match parent[u] {
                    Some(prev) => {
                        path.push(prev);
                        u = prev;
                    }
                    None => break,
                }
            }
            path.reverse();
            path.push(start);
            cycles.push(path);
        }
    }
    cycles
}

/// Strongly connected components (Kosaraju, iterative): a component id per node.
fn components(succ: &[Vec<usize>]) -> Vec<usize> {
    let n = succ.len();
    let mut pred: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (a, bs) in succ.iter().enumerate() {
        for &b in bs {
            pred[b].push(a);
        }
    }
    // Post-order of a depth-first walk over successors.
    let mut visited = vec![false; n];
    let mut order = Vec::with_capacity(n);
    for root in 0..n {
        if visited[root] {
            continue;
        }
        visited[root] = true;
        let mut stack = vec![(root, 0usize)];
        while let Some((u, next)) = stack.pop() {
            if let Some(&v) = succ[u].get(next) {
                stack.push((u, next + 1));
                if !visited[v] {
                    visited[v] = true;
                    stack.push((v, 0));
                }
            } else {
                order.push(u);
            }
        }
    }
    // Walk predecessors in reverse post-order.
    let mut comp = vec![usize::MAX; n];
    let mut id = 0;
    for &root in order.iter().rev() {
        if comp[root] != usize::MAX {
            continue;
        }
        comp[root] = id;
        let mut stack = vec![root];
        while let Some(u) = stack.pop() {
            for &v in &pred[u] {
                if comp[v] == usize::MAX {
                    comp[v] = id;
                    stack.push(v);
                }
            }
        }
        id += 1;
    }
    comp
}

/// `health_check_config`, `lifecycle` and `announce`: job-level services.
fn validate_job_services(p: &mut Problems, job: &WireJob, task: &mut TaskConfig) {
    let portmap = match p.get("announce", "an object", &job.announce) {
        Some(a) => validate_portmap(p, a),
        None => BTreeMap::new(),
    };
    task.job.portmap = portmap;

    let health_check = match &job.health_check_config {
        None => Some(default_health_check()),
        Some(Loose::Bad(v)) => {
            p.wrong_type("health_check_config", "an object", v);
            None
        }
        Some(Loose::Good(hc)) => validate_health_check(p, hc),
    };
    let lifecycle = match &job.lifecycle {
        None => Some(default_lifecycle()),
        Some(Loose::Bad(v)) => {
            p.wrong_type("lifecycle", "an object", v);
            None
        }
        Some(Loose::Good(lc)) => validate_lifecycle(p, lc),
    };

    // Templates in the shell health command.
    if let Some(HealthCheckConfig {
        checker: HealthChecker::Shell { shell_command },
        ..
    }) = &health_check
    {
        p.0.extend(template::check_text(SHELL_COMMAND_PATH, shell_command));
    }
    task.job.health_check = health_check;

    // HTTP health checks and lifecycle endpoints need their port; without it they are off
    // (Aurora's behaviour: its client writes both into every job).
    let named = named_ports(task);
    if let Some(HealthCheckConfig {
        checker: HealthChecker::Http { .. },
        ..
    }) = &task.job.health_check
        && !named.contains(HEALTH_PORT)
    {
        task.job.health_check = None;
    }
    task.job.lifecycle = lifecycle.filter(|lc| named.contains(&lc.port));
}

/// Every port name a task names: in templates (and every name their alias chains pass through),
/// and as portmap keys or targets.
fn named_ports(task: &TaskConfig) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for name in template::referenced_ports(task) {
        match template::follow_portmap(&task.job.portmap, &name) {
            Ok(chain) => named.extend(chain.names),
            Err(_) => {
                named.insert(name);
            }
        }
    }
    for (alias, target) in &task.job.portmap {
        named.insert(alias.clone());
        if template::fixed_port(target).is_none() {
            named.insert(target.clone());
        }
    }
    named
}

fn validate_portmap(p: &mut Problems, a: &WireAnnounce) -> BTreeMap<String, String> {
    let primary = p
        .string("announce.primary_port", &a.primary_port)
        .unwrap_or_else(|| "http".to_owned());
    let Some(map) = p.get("announce.portmap", "an object", &a.portmap) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (alias, target) in map {
        let path = format!("announce.portmap.{alias}");
        if !template::is_valid_port_name(alias) {
            p.push(
                &path,
                format!("invalid port name {alias:?} (letters, digits, '_', '-', '.')"),
            );
            continue;
        }
        let target = match target {
            Value::Number(n) => match whole_number(n, u64::from(u16::MAX)) {
                Ok(port) if port > 0 => port.to_string(),
                Ok(_) => {
                    p.push(&path, "port number must be from 1 to 65535 (got 0)");
                    continue;
                }
                Err(message) => {
                    p.push(&path, format!("port number {message}"));
                    continue;
                }
            },
            Value::String(s) => {
                let s = s.trim();
                // Aurora's default portmap, if it arrives uninterpolated.
                let s = if s.replace(' ', "") == "{{primary_port}}" {
                    primary.as_str()
                } else {
                    s
                };
                if template::fixed_port(s).is_some() || template::is_valid_port_name(s) {
                    s.to_owned()
                } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                    p.push(
                        &path,
                        format!("port number must be from 1 to 65535 (got {s})"),
                    );
                    continue;
                } else {
                    p.push(
                        &path,
                        format!("invalid port name {s:?} (letters, digits, '_', '-', '.')"),
                    );
                    continue;
                }
            }
            other => {
                p.wrong_type(&path, "a port name or number", other);
                continue;
            }
        };
        out.insert(alias.clone(), target);
    }
    // Alias cycles, each reported once (starting from its smallest name).
    let mut reported: BTreeSet<Vec<String>> = BTreeSet::new();
    for alias in out.keys() {
        if let Err(mut cycle) = template::follow_portmap(&out, alias) {
            cycle.pop();
            let Some(min) = cycle
                .iter()
                .enumerate()
                .min_by_key(|(_, n)| *n)
                .map(|(i, _)| i)
            else {
                continue;
            };
            cycle.rotate_left(min);
            if reported.insert(cycle.clone()) {
                let first = cycle[0].clone();
                cycle.push(first);
                p.push(
                    "announce.portmap",
                    format!("alias cycle: {}", cycle.join(" -> ")),
                );
            }
        }
    }
    out
}

fn default_health_check() -> HealthCheckConfig {
    HealthCheckConfig {
        checker: HealthChecker::Http {
            endpoint: "/health".into(),
            expected_response: "ok".into(),
            expected_response_code: 0,
        },
        initial_interval: Duration::from_secs(15),
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(1),
        max_consecutive_failures: 0,
        min_consecutive_successes: 1,
    }
}

fn status_code(p: &mut Problems, path: &str, field: &Field<Number>) -> u16 {
    let before = p.0.len();
    let code = p.whole(path, field, 0, u64::from(u16::MAX));
    if p.0.len() == before && code != 0 && !(100..=599).contains(&code) {
        p.push(
            path,
            format!("must be 0 (any) or an HTTP status from 100 to 599 (got {code})"),
        );
        return 0;
    }
    u16::try_from(code).unwrap_or(0)
}

fn validate_health_check(p: &mut Problems, hc: &WireHealthCheck) -> Option<HealthCheckConfig> {
    const PATH: &str = "health_check_config";
    let at = |field: &str| format!("{PATH}.{field}");
    let d = default_health_check();
    let checker = match &hc.health_checker {
        // The pre-`health_checker` schema kept the HTTP settings at the top level.
        None => Some(HealthChecker::Http {
            endpoint: p.endpoint(&at("endpoint"), &hc.endpoint, "/health"),
            expected_response: p
                .string(&at("expected_response"), &hc.expected_response)
                .unwrap_or_else(|| "ok".into()),
            expected_response_code: status_code(
                p,
                &at("expected_response_code"),
                &hc.expected_response_code,
            ),
        }),
        Some(Loose::Bad(v)) => {
            p.wrong_type(&at("health_checker"), "an object", v);
            None
        }
        Some(Loose::Good(c)) => {
            let shell = p.get(&at("health_checker.shell"), "an object", &c.shell);
            let http = p.get(&at("health_checker.http"), "an object", &c.http);
            match (shell, http) {
                // Shell wins when both are given.
                (Some(s), _) => match p.string(SHELL_COMMAND_PATH, &s.shell_command) {
                    Some(cmd) if !cmd.trim().is_empty() => {
                        Some(HealthChecker::Shell { shell_command: cmd })
                    }
                    Some(_) => {
                        p.push(SHELL_COMMAND_PATH, "must not be empty");
                        None
                    }
                    None => {
                        if s.shell_command.is_none() {
                            p.push(SHELL_COMMAND_PATH, "is required");
                        }
                        None
                    }
                },
                (None, Some(h)) => {
                    let hp = |f: &str| at(&format!("health_checker.http.{f}"));
                    Some(HealthChecker::Http {
                        endpoint: p.endpoint(&hp("endpoint"), &h.endpoint, "/health"),
                        expected_response: p
                            .string(&hp("expected_response"), &h.expected_response)
                            .unwrap_or_else(|| "ok".into()),
                        expected_response_code: status_code(
                            p,
                            &hp("expected_response_code"),
                            &h.expected_response_code,
                        ),
                    })
                }
                (None, None) => {
                    if c.shell.is_none() && c.http.is_none() {
                        p.push(at("health_checker"), "must configure http or shell");
                    }
                    None
                }
            }
        }
    };
    let initial_interval = p.seconds(
        &at("initial_interval_secs"),
        &hc.initial_interval_secs,
        15.0,
    );
    let interval = p.positive_seconds(&at("interval_secs"), &hc.interval_secs, 10.0);
    let timeout = p.positive_seconds(&at("timeout_secs"), &hc.timeout_secs, 1.0);
    let max_consecutive_failures = p.count(
        &at("max_consecutive_failures"),
        &hc.max_consecutive_failures,
        d.max_consecutive_failures,
    );
    let before = p.0.len();
    let mut min_consecutive_successes = p.count(
        &at("min_consecutive_successes"),
        &hc.min_consecutive_successes,
        d.min_consecutive_successes,
    );
    if min_consecutive_successes == 0 && p.0.len() == before {
        p.push(at("min_consecutive_successes"), "must be at least 1");
        min_consecutive_successes = 1;
    }
    checker.map(|checker| HealthCheckConfig {
        checker,
        initial_interval,
        interval,
        timeout,
        max_consecutive_failures,
        min_consecutive_successes,
    })
}

fn default_lifecycle() -> LifecycleConfig {
    LifecycleConfig {
        port: HEALTH_PORT.into(),
        graceful_shutdown_endpoint: "/quitquitquit".into(),
        shutdown_endpoint: "/abortabortabort".into(),
        graceful_shutdown_wait: Duration::from_secs(5),
        shutdown_wait: Duration::from_secs(5),
    }
}

fn validate_lifecycle(p: &mut Problems, lc: &WireLifecycle) -> Option<LifecycleConfig> {
    // `lifecycle: {}` is Aurora's DisableLifecycle.
    let h = p.get("lifecycle.http", "an object", &lc.http)?;
    let at = |field: &str| format!("lifecycle.http.{field}");
    let d = default_lifecycle();
    let port = match p.string(&at("port"), &h.port) {
        None => d.port,
        Some(port) if template::is_valid_port_name(&port) => port,
        Some(port) => {
            p.push(
                at("port"),
                format!("invalid port name {port:?} (letters, digits, '_', '-', '.')"),
            );
            d.port
        }
    };
    Some(LifecycleConfig {
        port,
        graceful_shutdown_endpoint: p.endpoint(
            &at("graceful_shutdown_endpoint"),
            &h.graceful_shutdown_endpoint,
            "/quitquitquit",
        ),
        shutdown_endpoint: p.endpoint(
            &at("shutdown_endpoint"),
            &h.shutdown_endpoint,
            "/abortabortabort",
        ),
        graceful_shutdown_wait: p.seconds(
            &at("graceful_shutdown_wait_secs"),
            &h.graceful_shutdown_wait_secs,
            5.0,
        ),
        shutdown_wait: p.seconds(&at("shutdown_wait_secs"), &h.shutdown_wait_secs, 5.0),
    })
}
