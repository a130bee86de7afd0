//! Apache Aurora's `.aurora` job configuration files, evaluated hermetically.
//!
//! A `.aurora` file is Python run against Aurora's Pystachio schema. Hearth evaluates it with
//! Starlark (the `starlark` crate): no file system access but `include()` of files beside the
//! config, no network, no environment but what `os.getenv` is given, a time limit and a memory
//! limit. The Python that Starlark lacks (`class X(Struct):`, `import os`, adjacent string
//! literals, `**`) is handled by source rewrites ([`rewrite`]); Pystachio's objects, bindings and
//! templates are implemented in [`pystachio`]; Aurora's schema and task helpers in [`schema`].
//!
//! The result is, per job of the file's `jobs` list, the Aurora job JSON that `hearth validate`,
//! `hearth run` and the scheduler take — or why that one job cannot be used.
//!
//! ```no_run
//! # fn main() -> Result<(), hearth_aurora::AuroraError> {
//! let evaluated = hearth_aurora::evaluate(
//!     std::path::Path::new("hello_world.aurora"),
//!     &hearth_aurora::EvalOptions::default(),
//! )?;
//! let json = evaluated.job_json("cluster1/www-data/prod/hello")?;
//! println!("{}", serde_json::to_string_pretty(json).unwrap_or_default());
//! # Ok(())
//! # }
//! ```

mod error;
mod format;
pub mod pystachio;
pub mod rewrite;
pub mod schema;
// The starlark crate's `ProvidesStaticType` derive expands to an `unsafe impl`; the module
// writes no `unsafe` itself.
#[allow(unsafe_code)]
mod values;

use std::cell::Cell;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use starlark::environment::{Globals, Module};
use starlark::eval::Evaluator;
use starlark::syntax::{AstModule, Dialect};

pub use error::{AuroraError, JobError, Location, Problem};
use pystachio::{Ctx, Env, EnvVal, Kind, Obj, Raw, Ref};
use rewrite::Chunk;
pub use values::EnvGetter;

/// The largest config file (or included file) read.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Starlark with top-level `if`/`for`, keyword-only arguments and f-strings, and no `load()`.
const DIALECT: Dialect = Dialect {
    enable_top_level_stmt: true,
    enable_load: false,
    enable_keyword_only_arguments: true,
    enable_f_strings: true,
    ..Dialect::Standard
};

/// How deeply includes may nest.
pub const MAX_INCLUDE_DEPTH: usize = 16;

/// How to evaluate a config.
#[derive(Clone)]
pub struct EvalOptions {
    /// `--bind NAME=VALUE`, applied to every job (`job.bind(NAME=VALUE)`), in order.
    pub binds: Vec<(String, String)>,
    /// Wall-clock limit for evaluating the file and resolving its templates.
    pub time_limit: Duration,
    /// Limit on the interpreter's heap, checked as evaluation goes.
    pub memory_limit: usize,
    /// What `os.getenv`, `os.environ` and `getpass.getuser()` see; nothing else reads the
    /// environment.
    pub env: EnvGetter,
    /// The user `getpass.getuser()` names when none of `LOGNAME`, `USER`, `LNAME`, `USERNAME` is
    /// set (Python looks the user up in the password database; the caller does that for us).
    pub user: Option<String>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            binds: Vec::new(),
            time_limit: Duration::from_secs(10),
            memory_limit: 512 * 1024 * 1024,
            env: Arc::new(|name: &str| std::env::var(name).ok()),
            user: None,
        }
    }
}

impl fmt::Debug for EvalOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvalOptions")
            .field("binds", &self.binds)
            .field("time_limit", &self.time_limit)
            .field("memory_limit", &self.memory_limit)
            .finish_non_exhaustive()
    }
}

/// Parse a `--bind NAME=VALUE` argument.
pub fn parse_bind(text: &str) -> Result<(String, String), AuroraError> {
    match text.split_once('=') {
        Some((name, value)) if Ref::parse(name).is_some() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err(AuroraError::BadBind {
            text: text.to_owned(),
        }),
    }
}

/// A job key, `cluster/role/environment/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobKey {
    pub cluster: String,
    pub role: String,
    pub environment: String,
    pub name: String,
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.cluster, self.role, self.environment, self.name
        )
    }
}

/// One job of the file's `jobs` list.
#[derive(Debug, Clone)]
pub struct Job {
    pub key: JobKey,
    /// The Aurora job JSON, or why this job cannot be used.
    pub json: Result<Json, JobError>,
}

/// A config file's jobs, in the order of its `jobs` list.
#[derive(Debug, Clone)]
pub struct Evaluated {
    pub path: PathBuf,
    pub jobs: Vec<Job>,
}

impl Evaluated {
    /// The keys the file defines.
    pub fn keys(&self) -> Vec<String> {
        self.jobs.iter().map(|j| j.key.to_string()).collect()
    }

    /// The job with this key; an unknown key is an error listing the keys the file defines.
    pub fn select_job(&self, key: &str) -> Result<&Job, AuroraError> {
        select_job(self, key)
    }

    /// The job JSON of the job with this key, or why it cannot be had.
    pub fn job_json(&self, key: &str) -> Result<&Json, AuroraError> {
        let job = self.select_job(key)?;
        job.json.as_ref().map_err(|e| AuroraError::Job {
            file: self.path.clone(),
            key: key.to_owned(),
            error: e.clone(),
        })
    }
}

/// The job with this key (`cluster/role/environment/name`); an unknown key is an error listing
/// the keys the file defines.
pub fn select_job<'a>(evaluated: &'a Evaluated, key: &str) -> Result<&'a Job, AuroraError> {
    if key.split('/').count() != 4 || key.split('/').any(str::is_empty) {
        return Err(AuroraError::BadKey {
            file: evaluated.path.clone(),
            key: key.to_owned(),
            known: evaluated.keys(),
        });
    }
    let matches: Vec<&Job> = evaluated
        .jobs
        .iter()
        .filter(|j| j.key.to_string() == key)
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(AuroraError::UnknownJob {
            file: evaluated.path.clone(),
            key: key.to_owned(),
            known: evaluated.keys(),
        }),
        many => Err(AuroraError::AmbiguousJob {
            file: evaluated.path.clone(),
            key: key.to_owned(),
            count: many.len(),
        }),
    }
}

/// Evaluate a `.aurora` file: its jobs, each as Aurora job JSON or the reason it cannot be used.
pub fn evaluate(path: &Path, opts: &EvalOptions) -> Result<Evaluated, AuroraError> {
    let canonical = path.canonicalize().map_err(|e| AuroraError::Read {
        path: path.to_owned(),
        source: e,
    })?;
    let base = canonical
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let deadline = Instant::now() + opts.time_limit;
    let globals = values::globals();
    let over_memory = Cell::new(false);
    let jobs = Module::with_temp_heap(|module| -> Result<Vec<Obj>, AuroraError> {
        let heap = module.heap();
        module.set(
            "_hearth_os",
            heap.alloc(values::PyModule::new("os", opts.env.clone())),
        );
        module.set(
            "_hearth_getpass",
            heap.alloc(values::PyModule::new("getpass", getpass_env(opts))),
        );
        let mut eval = Evaluator::new(&module);
        let _ = eval.set_max_heap_size(opts.memory_limit.max(1));
        // Starlark checks its own heap, but lists, dicts and strings keep their contents in
        // Rust's heap: the resident set's growth is checked too, every few thousand steps.
        let limit = opts.memory_limit as u64;
        let baseline = resident_bytes();
        let calls = Cell::new(0u32);
        let over_memory = &over_memory;
        eval.set_check_cancelled(Box::new(move || {
            calls.set(calls.get().wrapping_add(1));
            if calls.get().is_multiple_of(8)
                && let (Some(base), Some(now)) = (baseline, resident_bytes())
                && now.saturating_sub(base) > limit
            {
                over_memory.set(true);
                return true;
            }
            Instant::now() > deadline
        }));
        let mut run = Run {
            over_memory,
            base: &base,
            shown: path,
            globals: &globals,
            opts,
            deadline,
            stack: Vec::new(),
        };
        run.file(&mut eval, &canonical, path)?;
        let Some(jobs) = module.get("jobs") else {
            return Err(AuroraError::NoJobs {
                file: path.to_owned(),
            });
        };
        values::jobs_of(jobs).map_err(|message| AuroraError::BadJobs {
            file: path.to_owned(),
            message,
        })
    })?;
    let mut binds = Env::default();
    for (k, v) in &opts.binds {
        if let Some(r) = Ref::parse(k) {
            binds.entries.push((r, EnvVal::Text(v.clone())));
        }
    }
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let mut ctx = Ctx::new(Some(deadline));
        let j = finalize(&job, &binds, &mut ctx);
        if Instant::now() > deadline {
            return Err(AuroraError::TimeLimit {
                file: path.to_owned(),
                limit: opts.time_limit,
                at: Location::default(),
            });
        }
        out.push(j);
    }
    Ok(Evaluated {
        path: path.to_owned(),
        jobs: out,
    })
}

/// The environment `getpass` sees: the real one, with the caller's user name as a fallback.
fn getpass_env(opts: &EvalOptions) -> EnvGetter {
    let env = opts.env.clone();
    let user = opts.user.clone();
    Arc::new(move |name: &str| {
        env(name).or_else(|| if name == "USER" { user.clone() } else { None })
    })
}

/// The resident set size of this process (Linux), to bound what evaluation allocates.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

struct Run<'a> {
    over_memory: &'a Cell<bool>,
    base: &'a Path,
    shown: &'a Path,
    globals: &'a Globals,
    opts: &'a EvalOptions,
    deadline: Instant,
    stack: Vec<PathBuf>,
}

impl Run<'_> {
    /// Evaluate one file (the config or an included file) into the module.
    fn file(&mut self, eval: &mut Evaluator, real: &Path, shown: &Path) -> Result<(), AuroraError> {
        let meta = std::fs::metadata(real).map_err(|e| AuroraError::Read {
            path: shown.to_owned(),
            source: e,
        })?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(AuroraError::TooLarge {
                path: shown.to_owned(),
                size: meta.len(),
                limit: MAX_FILE_BYTES,
            });
        }
        let src = std::fs::read_to_string(real).map_err(|e| AuroraError::Read {
            path: shown.to_owned(),
            source: e,
        })?;
        let chunks = rewrite::rewrite(&src).map_err(|u| AuroraError::Unsupported {
            file: shown.to_owned(),
            line: u.line,
            col: u.col,
            what: u.what,
            instead: u.instead,
        })?;
        self.stack.push(real.to_owned());
        let name = shown.display().to_string();
        for chunk in chunks {
            match chunk {
                Chunk::Code(code) => {
                    let ast = AstModule::parse(&name, code, &DIALECT)
                        .map_err(|e| self.starlark_error(e, shown))?;
                    eval.eval_module(ast, self.globals)
                        .map_err(|e| self.starlark_error(e, shown))?;
                }
                Chunk::Include { path, line, col } => {
                    let err = |reason: String| AuroraError::Include {
                        file: shown.to_owned(),
                        line,
                        col,
                        target: path.clone(),
                        reason,
                    };
                    let dir = real.parent().unwrap_or(self.base);
                    let target = self.include_target(dir, &path).map_err(err)?;
                    if self.stack.len() >= MAX_INCLUDE_DEPTH || self.stack.contains(&target) {
                        return Err(err(format!(
                            "includes nest too deeply or include each other in a cycle \
                             ({} files deep); include each file once",
                            self.stack.len()
                        )));
                    }
                    let shown_inc = self
                        .shown
                        .parent()
                        .map_or_else(|| PathBuf::from(&path), |p| p.join(&path));
                    self.file(eval, &target, &shown_inc)?;
                }
            }
        }
        self.stack.pop();
        Ok(())
    }

    /// The file an `include()` names: a relative path that stays in the config's directory.
    fn include_target(&self, dir: &Path, target: &str) -> Result<PathBuf, String> {
        let rel = Path::new(target);
        let beside = "only files in the config's directory (or below it) can be included; \
                      name them relative to the config, like include('common.aurora')";
        if rel.is_absolute() {
            return Err(format!("an absolute path: {beside}"));
        }
        if rel.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(format!("a path through `..`: {beside}"));
        }
        let joined = dir.join(rel);
        let real = joined
            .canonicalize()
            .map_err(|e| format!("cannot read {}: {e}", joined.display()))?;
        if !real.starts_with(self.base) {
            return Err(format!("it leads outside the config's directory: {beside}"));
        }
        if !real.is_file() {
            return Err("not a file".into());
        }
        Ok(real)
    }

    fn starlark_error(&self, e: starlark::Error, shown: &Path) -> AuroraError {
        let at = e.span().map(|s| {
            let r = s.resolve_span();
            (
                PathBuf::from(s.filename()),
                r.begin.line + 1,
                r.begin.column + 1,
            )
        });
        let message = e.without_diagnostic().to_string();
        let lower = message.to_ascii_lowercase();
        if self.over_memory.get()
            || (lower.contains("heap memory limit") && lower.contains("exceeded"))
        {
            return AuroraError::MemoryLimit {
                file: self.shown.to_owned(),
                limit: self.opts.memory_limit,
                at: Location(at),
            };
        }
        if Instant::now() > self.deadline || message.contains("Evaluation cancelled") {
            return AuroraError::TimeLimit {
                file: self.shown.to_owned(),
                limit: self.opts.time_limit,
                at: Location(at),
            };
        }
        let (file, line, col) = at.unwrap_or_else(|| (shown.to_owned(), 1, 1));
        AuroraError::Eval {
            file,
            line,
            col,
            message: explain(&message),
        }
    }
}

/// Starlark's messages, with a hint where a Python habit is the likely cause.
fn explain(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message).trim().to_owned();
    if first.contains("Variable `") && first.contains("not found") {
        return format!(
            "{first} (Aurora's schema objects, Pystachio's types and os/getpass after `import` \
             are available; Python's other builtins and modules are not)"
        );
    }
    first
}

/// The executor binds these namespaces when the task starts.
const EXECUTOR_NAMESPACES: &[&str] = &["thermos", "mesos"];

fn text_of(o: Option<&Obj>) -> String {
    match o.map(|o| &*o.kind) {
        Some(Kind::Simple {
            raw: Raw::Str(s), ..
        }) => s.clone(),
        Some(Kind::Simple { raw, .. }) => format!("{raw:?}"),
        _ => "{MISSING}".into(),
    }
}

/// Bind, resolve and check one job.
fn finalize(job: &Obj, binds: &Env, ctx: &mut Ctx) -> Job {
    let mut job = job.clone();
    if !binds.entries.is_empty() {
        job = job.bind(Env {
            entries: binds.entries.clone(),
        });
    }
    // Aurora's client rewrites these deprecated names before anything else.
    let standard = Env {
        entries: [("mesos.role", "{{role}}"), ("mesos.cluster", "{{cluster}}")]
            .iter()
            .filter_map(|(k, v)| Some((Ref::parse(k)?, EnvVal::Text((*v).into()))))
            .collect(),
    };
    let job = job.bind(standard);
    let raw_key = |o: &Obj| JobKey {
        cluster: text_of(o.field("cluster")),
        role: text_of(o.field("role")),
        environment: text_of(o.field("environment")),
        name: text_of(o.field("name")),
    };
    let (resolved, unbound) = match values::interpolate_all(&job, ctx) {
        Ok(r) => r,
        Err((field, error)) => {
            return Job {
                key: raw_key(&job),
                json: Err(JobError::Invalid {
                    problems: vec![Problem {
                        field,
                        message: error.to_string(),
                    }],
                }),
            };
        }
    };
    let key = raw_key(&resolved);
    if let Some(c) = resolved.field("container") {
        return Job {
            key,
            json: Err(JobError::Container {
                kind: c.ty().name(),
            }),
        };
    }
    let mut problems = Vec::new();
    let mut missing = Vec::new();
    pystachio::missing_required(&resolved, "", &mut missing);
    for m in missing {
        let (field, message) = m.split_once(": ").unwrap_or(("", &m));
        problems.push(Problem {
            field: field.to_owned(),
            message: format!("{message}; set it in the config"),
        });
    }
    if let Some(task) = resolved.field("task") {
        for (field, what) in [
            ("processes", "a task needs processes=[Process(...), ...]"),
            (
                "resources",
                "an Aurora job's task needs resources=Resources(cpu=..., ram=..., disk=...)",
            ),
        ] {
            if task.field(field).is_none() {
                problems.push(Problem {
                    field: format!("task.{field}"),
                    message: format!("required: {what}"),
                });
            }
        }
    }
    for u in &unbound {
        if !EXECUTOR_NAMESPACES.contains(&u.var.head()) {
            problems.push(Problem {
                field: u.path.clone(),
                message: format!(
                    "template {{{{{}}}}} is not bound; bind it in the config with \
                     .bind({}=...) or on the command line with --bind {}=VALUE",
                    u.var,
                    u.var.head(),
                    u.var
                ),
            });
        }
    }
    if !problems.is_empty() {
        return Job {
            key,
            json: Err(JobError::Invalid { problems }),
        };
    }
    Job {
        key,
        json: Ok(pystachio::to_json(&resolved)),
    }
}
