//! Aurora's and Thermos's schema objects, with the fields and defaults of Aurora's own schema
//! (`apache.thermos.config.schema_base` and `apache.aurora.config.schema.base`), and the task
//! helpers (`order`, `Tasks.concat`, `Tasks.combine`, `SequentialTask`, `SimpleTask`).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::pystachio::{
    ChoiceTy, Ctx, EnumTy, FieldSig, Kind, Obj, Raw, StructTy, Ty, interpolate, interpolate_in,
    to_json,
};

/// Every schema type by name, and the named constants (`DefaultHealthChecker`, ...).
#[derive(Debug)]
pub struct Schema {
    pub types: Vec<(&'static str, Ty)>,
    pub constants: Vec<(&'static str, Obj)>,
    by_name: HashMap<&'static str, Ty>,
}

impl Schema {
    pub fn get(&self, name: &str) -> Option<&Ty> {
        self.by_name.get(name)
    }

    pub fn st(&self, name: &str) -> Arc<StructTy> {
        match self.by_name.get(name) {
            Some(Ty::Struct(s)) => s.clone(),
            // The names passed here are the literals below.
            _ => Arc::new(StructTy {
                name: name.to_owned(),
                fields: Vec::new(),
            }),
        }
    }
}

/// The schema, built once per process.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(build)
}

pub fn s(v: &str) -> Obj {
    Obj::simple(Ty::String, Raw::Str(v.into()))
}
pub fn int(v: i64) -> Obj {
    Obj::simple(Ty::Integer, Raw::Int(v))
}
pub fn float(v: f64) -> Obj {
    Obj::simple(Ty::Float, Raw::Float(v))
}
pub fn boolean(v: bool) -> Obj {
    Obj::simple(Ty::Boolean, Raw::Bool(v))
}

fn req(name: &str, ty: Ty) -> FieldSig {
    FieldSig {
        name: name.into(),
        ty,
        required: true,
        default: None,
    }
}
fn opt(name: &str, ty: Ty) -> FieldSig {
    FieldSig {
        name: name.into(),
        ty,
        required: false,
        default: None,
    }
}
fn def(name: &str, ty: Ty, default: Obj) -> FieldSig {
    FieldSig {
        name: name.into(),
        ty,
        required: false,
        default: Some(default),
    }
}

fn list(t: Ty) -> Ty {
    Ty::List(Arc::new(t))
}
fn map(k: Ty, v: Ty) -> Ty {
    Ty::Map(Arc::new(k), Arc::new(v))
}
fn empty_list(t: Ty) -> Obj {
    Obj::new(Kind::List {
        elem: t,
        items: Vec::new(),
    })
}

/// A struct instance with defaults applied and `set` attributes on top.
pub fn instance(ty: &Arc<StructTy>, set: Vec<(&str, Obj)>) -> Obj {
    let mut fields: Vec<Option<Obj>> = ty.fields.iter().map(|f| f.default.clone()).collect();
    for (k, v) in set {
        if let Some(i) = ty.index(k) {
            fields[i] = Some(v);
        }
    }
    Obj::new(Kind::Struct {
        ty: ty.clone(),
        fields,
    })
}

fn add(types: &mut Vec<(&'static str, Ty)>, name: &'static str, t: &Arc<StructTy>) {
    types.push((name, Ty::Struct(t.clone())));
}

fn st(name: &str, fields: Vec<FieldSig>) -> Arc<StructTy> {
    Arc::new(StructTy {
        name: name.into(),
        fields,
    })
}

fn enum_ty(name: &str, values: &[&str]) -> Ty {
    Ty::Enum(Arc::new(EnumTy {
        name: name.into(),
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    }))
}

fn choice(alts: Vec<Ty>) -> Ty {
    let name = format!(
        "Choice_{}",
        alts.iter().map(Ty::name).collect::<Vec<_>>().join("_")
    );
    Ty::Choice(Arc::new(ChoiceTy {
        name,
        alternatives: alts,
    }))
}

const MB: i64 = 1024 * 1024;

fn build() -> Schema {
    use Ty::{Boolean, Float, Integer, String as Str};
    let mut types: Vec<(&'static str, Ty)> = Vec::new();
    let mut constants: Vec<(&'static str, Obj)> = Vec::new();

    // Thermos.
    let resources = st(
        "Resources",
        vec![
            req("cpu", Float),
            req("ram", Integer),
            req("disk", Integer),
            def("gpu", Integer, int(0)),
        ],
    );
    add(&mut types, "Resources", &resources);
    let constraint = st("Constraint", vec![opt("order", list(Str))]);
    add(&mut types, "Constraint", &constraint);
    let rotate = st(
        "RotatePolicy",
        vec![
            def("log_size", Integer, int(100 * MB)),
            def("backups", Integer, int(5)),
        ],
    );
    add(&mut types, "RotatePolicy", &rotate);
    let destination = enum_ty("LoggerDestination", &["file", "console", "both", "none"]);
    let mode = enum_ty("LoggerMode", &["standard", "rotate"]);
    let logger = st(
        "Logger",
        vec![
            def(
                "destination",
                destination.clone(),
                Obj::simple(destination.clone(), Raw::Str("file".into())),
            ),
            def(
                "mode",
                mode.clone(),
                Obj::simple(mode.clone(), Raw::Str("standard".into())),
            ),
            opt("rotate", Ty::Struct(rotate.clone())),
        ],
    );
    add(&mut types, "Logger", &logger);
    let process = st(
        "Process",
        vec![
            req("cmdline", Str),
            req("name", Str),
            opt("resources", Ty::Struct(resources.clone())),
            def("max_failures", Integer, int(1)),
            def("daemon", Boolean, boolean(false)),
            def("ephemeral", Boolean, boolean(false)),
            def("min_duration", Integer, int(5)),
            def("final", Boolean, boolean(false)),
            opt("logger", Ty::Struct(logger.clone())),
        ],
    );
    add(&mut types, "Process", &process);
    let constraint_ty = Ty::Struct(constraint.clone());
    let task = st(
        "Task",
        vec![
            def("name", Str, s("{{processes[0].name}}")),
            opt("processes", list(Ty::Struct(process.clone()))),
            def(
                "constraints",
                list(constraint_ty.clone()),
                empty_list(constraint_ty.clone()),
            ),
            opt("resources", Ty::Struct(resources.clone())),
            def("max_failures", Integer, int(1)),
            def("max_concurrency", Integer, int(0)),
            def("finalization_wait", Integer, int(30)),
            opt("user", Str),
        ],
    );
    add(&mut types, "Task", &task);

    // Aurora.
    let queue = st(
        "QueueUpdateStrategy",
        vec![def("batch_size", Integer, int(1))],
    );
    add(&mut types, "QueueUpdateStrategy", &queue);
    let batch = st(
        "BatchUpdateStrategy",
        vec![
            def("batch_size", Integer, int(1)),
            def("autopause_after_batch", Boolean, boolean(false)),
        ],
    );
    add(&mut types, "BatchUpdateStrategy", &batch);
    let variable = st(
        "VariableBatchUpdateStrategy",
        vec![
            req("batch_sizes", list(Integer)),
            def("autopause_after_batch", Boolean, boolean(false)),
        ],
    );
    add(&mut types, "VariableBatchUpdateStrategy", &variable);
    let update = st(
        "UpdateConfig",
        vec![
            def("batch_size", Integer, int(1)),
            def("watch_secs", Integer, int(45)),
            def("max_per_shard_failures", Integer, int(0)),
            def("max_total_failures", Integer, int(0)),
            def("rollback_on_failure", Boolean, boolean(true)),
            def("wait_for_batch_completion", Boolean, boolean(false)),
            opt("pulse_interval_secs", Integer),
            def("sla_aware", Boolean, boolean(false)),
            opt(
                "update_strategy",
                choice(vec![
                    Ty::Struct(queue.clone()),
                    Ty::Struct(batch.clone()),
                    Ty::Struct(variable.clone()),
                ]),
            ),
        ],
    );
    add(&mut types, "UpdateConfig", &update);
    let http_checker = st(
        "HttpHealthChecker",
        vec![
            def("endpoint", Str, s("/health")),
            def("expected_response", Str, s("ok")),
            def("expected_response_code", Integer, int(0)),
        ],
    );
    add(&mut types, "HttpHealthChecker", &http_checker);
    let shell_checker = st("ShellHealthChecker", vec![req("shell_command", Str)]);
    add(&mut types, "ShellHealthChecker", &shell_checker);
    let checker = st(
        "HealthCheckerConfig",
        vec![
            opt("http", Ty::Struct(http_checker.clone())),
            opt("shell", Ty::Struct(shell_checker.clone())),
        ],
    );
    add(&mut types, "HealthCheckerConfig", &checker);
    let default_checker = instance(&checker, vec![("http", instance(&http_checker, vec![]))]);
    constants.push(("DefaultHealthChecker", default_checker.clone()));
    let health = st(
        "HealthCheckConfig",
        vec![
            def(
                "health_checker",
                Ty::Struct(checker.clone()),
                default_checker,
            ),
            def("initial_interval_secs", Float, float(15.0)),
            def("interval_secs", Float, float(10.0)),
            def("max_consecutive_failures", Integer, int(0)),
            def("min_consecutive_successes", Integer, int(1)),
            def("timeout_secs", Float, float(1.0)),
        ],
    );
    add(&mut types, "HealthCheckConfig", &health);
    let http_lifecycle = st(
        "HttpLifecycleConfig",
        vec![
            def("port", Str, s("health")),
            def("graceful_shutdown_endpoint", Str, s("/quitquitquit")),
            def("shutdown_endpoint", Str, s("/abortabortabort")),
            def("graceful_shutdown_wait_secs", Integer, int(5)),
            def("shutdown_wait_secs", Integer, int(5)),
        ],
    );
    add(&mut types, "HttpLifecycleConfig", &http_lifecycle);
    let lifecycle = st(
        "LifecycleConfig",
        vec![opt("http", Ty::Struct(http_lifecycle.clone()))],
    );
    add(&mut types, "LifecycleConfig", &lifecycle);
    let default_lifecycle = instance(
        &lifecycle,
        vec![("http", instance(&http_lifecycle, vec![]))],
    );
    constants.push(("DisableLifecycle", instance(&lifecycle, vec![])));
    constants.push(("DefaultLifecycleConfig", default_lifecycle.clone()));
    let string_map = map(Str, Str);
    let announcer = st(
        "Announcer",
        vec![
            def("primary_port", Str, s("http")),
            def(
                "portmap",
                string_map.clone(),
                Obj::new(Kind::Map {
                    key: Str,
                    value: Str,
                    items: vec![(s("aurora"), s("{{primary_port}}"))],
                }),
            ),
            opt("zk_path", Str),
        ],
    );
    add(&mut types, "Announcer", &announcer);
    let parameter = st("Parameter", vec![req("name", Str), req("value", Str)]);
    add(&mut types, "Parameter", &parameter);
    let param_ty = Ty::Struct(parameter.clone());
    let docker = st(
        "Docker",
        vec![
            req("image", Str),
            def("parameters", list(param_ty.clone()), empty_list(param_ty)),
        ],
    );
    add(&mut types, "Docker", &docker);
    let appc = st("AppcImage", vec![req("name", Str), req("image_id", Str)]);
    add(&mut types, "AppcImage", &appc);
    let docker_image = st("DockerImage", vec![req("name", Str), req("tag", Str)]);
    add(&mut types, "DockerImage", &docker_image);
    let mode_ty = enum_ty("Mode", &["RO", "RW"]);
    types.push(("Mode", mode_ty.clone()));
    types.push(("LoggerDestination", destination));
    types.push(("LoggerMode", mode));
    let volume = st(
        "Volume",
        vec![
            req("container_path", Str),
            req("host_path", Str),
            req("mode", mode_ty),
        ],
    );
    types.push(("Volume", Ty::Struct(volume.clone())));
    let volume_ty = Ty::Struct(volume);
    let mesos = st(
        "Mesos",
        vec![
            opt(
                "image",
                choice(vec![
                    Ty::Struct(appc.clone()),
                    Ty::Struct(docker_image.clone()),
                ]),
            ),
            def("volumes", list(volume_ty.clone()), empty_list(volume_ty)),
        ],
    );
    types.push(("Mesos", Ty::Struct(mesos.clone())));
    let container = st("Container", vec![opt("docker", Ty::Struct(docker.clone()))]);
    types.push(("Container", Ty::Struct(container.clone())));
    let partition = st(
        "PartitionPolicy",
        vec![
            def("reschedule", Boolean, boolean(true)),
            def("delay_secs", Integer, int(0)),
        ],
    );
    types.push(("PartitionPolicy", Ty::Struct(partition.clone())));
    let metadata = st("Metadata", vec![req("key", Str), req("value", Str)]);
    types.push(("Metadata", Ty::Struct(metadata.clone())));
    let executor = st(
        "ExecutorConfig",
        vec![
            def("name", Str, s("AuroraExecutor")),
            def("data", Str, s("")),
        ],
    );
    types.push(("ExecutorConfig", Ty::Struct(executor.clone())));
    let percentage = st(
        "PercentageSlaPolicy",
        vec![req("percentage", Float), req("duration_secs", Integer)],
    );
    types.push(("PercentageSlaPolicy", Ty::Struct(percentage.clone())));
    let count = st(
        "CountSlaPolicy",
        vec![req("count", Integer), req("duration_secs", Integer)],
    );
    types.push(("CountSlaPolicy", Ty::Struct(count.clone())));
    let coordinator = st(
        "CoordinatorSlaPolicy",
        vec![
            req("coordinator_url", Str),
            def("status_key", Str, s("drain")),
        ],
    );
    types.push(("CoordinatorSlaPolicy", Ty::Struct(coordinator.clone())));
    let metadata_ty = Ty::Struct(metadata);
    let job = st(
        "Job",
        vec![
            def("name", Str, s("{{task.name}}")),
            req("role", Str),
            opt("contact", Str),
            req("cluster", Str),
            // Aurora's schema marks it Required; its reference documents `devel` as the default.
            def("environment", Str, s("devel")),
            def("instances", Integer, int(1)),
            req("task", Ty::Struct(task.clone())),
            opt("announce", Ty::Struct(announcer.clone())),
            opt("tier", Str),
            opt("cron_schedule", Str),
            def("cron_collision_policy", Str, s("KILL_EXISTING")),
            def(
                "update_config",
                Ty::Struct(update.clone()),
                instance(&update, vec![]),
            ),
            opt("constraints", string_map.clone()),
            def(
                "metadata",
                list(metadata_ty.clone()),
                empty_list(metadata_ty),
            ),
            def("service", Boolean, boolean(false)),
            def("max_task_failures", Integer, int(1)),
            def("production", Boolean, boolean(false)),
            def("priority", Integer, int(0)),
            def(
                "health_check_config",
                Ty::Struct(health.clone()),
                instance(&health, vec![]),
            ),
            def(
                "lifecycle",
                Ty::Struct(lifecycle.clone()),
                default_lifecycle,
            ),
            opt("task_links", string_map),
            def(
                "executor_config",
                Ty::Struct(executor.clone()),
                instance(&executor, vec![]),
            ),
            def("enable_hooks", Boolean, boolean(false)),
            opt("partition_policy", Ty::Struct(partition)),
            opt(
                "sla_policy",
                choice(vec![
                    Ty::Struct(coordinator),
                    Ty::Struct(count),
                    Ty::Struct(percentage),
                ]),
            ),
            opt(
                "container",
                choice(vec![
                    Ty::Struct(container),
                    Ty::Struct(docker),
                    Ty::Struct(mesos),
                ]),
            ),
        ],
    );
    types.push(("Job", Ty::Struct(job.clone())));
    types.push(("MesosJob", Ty::Struct(job.clone())));
    constants.push(("Service", instance(&job, vec![("service", boolean(true))])));
    let by_name = types.iter().map(|(n, t)| (*n, t.clone())).collect();
    Schema {
        types,
        constants,
        by_name,
    }
}

/// Why a task helper could not build its task.
pub type HelperResult = Result<Obj, String>;

fn interp_field(obj: &Obj, name: &str) -> Result<Option<Obj>, String> {
    let Some(v) = obj.field(name) else {
        return Ok(None);
    };
    let mut ctx = Ctx::new(None);
    let mut sink = Vec::new();
    interpolate_in(v, &obj.scope_chain(), name, &mut ctx, &mut sink)
        .map(Some)
        .map_err(|e| format!("{name}: {e}"))
}

fn items(list: Option<Obj>) -> Vec<Obj> {
    match list.as_ref().map(|l| &*l.kind) {
        Some(Kind::List { items, .. }) => items.clone(),
        _ => Vec::new(),
    }
}

/// A process's name, resolved in the process's own scopes (`process.name()`).
pub fn process_name(p: &Obj) -> Result<Obj, String> {
    interp_field(p, "name")?.ok_or_else(|| "order(): a process without a name".to_owned())
}

/// `order(a, b, c)`: `[Constraint(order=[a.name(), b.name(), c.name()])]`.
pub fn order(names: Vec<Obj>) -> Obj {
    let sch = schema();
    let constraint = sch.st("Constraint");
    let c = instance(
        &constraint,
        vec![(
            "order",
            Obj::new(Kind::List {
                elem: Ty::String,
                items: names,
            }),
        )],
    );
    Obj::new(Kind::List {
        elem: Ty::Struct(constraint),
        items: vec![c],
    })
}

fn same(a: &Obj, b: &Obj) -> bool {
    let mut ctx = Ctx::new(None);
    match (interpolate(a, &mut ctx), interpolate(b, &mut ctx)) {
        (Ok((x, _)), Ok((y, _))) => to_json(&x) == to_json(&y),
        _ => false,
    }
}

fn dedup(list: Vec<Obj>) -> Vec<Obj> {
    let mut out: Vec<Obj> = Vec::new();
    for o in list {
        if !out.iter().any(|x| same(x, &o)) {
            out.push(o);
        }
    }
    out
}

fn number(o: Option<Obj>, what: &str) -> Result<f64, String> {
    match o.as_ref().map(|o| &*o.kind) {
        None => Ok(0.0),
        Some(Kind::Simple {
            raw: Raw::Int(i), ..
        }) => Ok(*i as f64),
        Some(Kind::Simple {
            raw: Raw::Float(f), ..
        }) => Ok(*f),
        Some(Kind::Simple {
            raw: Raw::Str(s), ..
        }) => Err(format!(
            "{what} is {s:?}, not a number; Tasks.concat and Tasks.combine add up resources, so \
             bind its templates before combining"
        )),
        Some(_) => Err(format!("{what} is not a number")),
    }
}

/// How subtasks' resources and finalization waits are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// `Tasks.concat`: resources max, finalization_wait summed, order chained.
    Concat,
    /// `Tasks.combine`: resources summed, finalization_wait max, processes in parallel.
    Combine,
}

/// `Tasks.concat(*tasks, **kw)` and `Tasks.combine(*tasks, **kw)`.
pub fn merge_tasks(tasks: &[Obj], how: Merge) -> HelperResult {
    let sch = schema();
    let task_ty = sch.st("Task");
    let Some(first) = tasks.first() else {
        return Ok(instance(&task_ty, vec![]));
    };
    let mut processes = Vec::new();
    let mut constraints = Vec::new();
    let mut per_task = Vec::new();
    let (mut cpu, mut ram, mut disk, mut gpu, mut wait) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (i, t) in tasks.iter().enumerate() {
        let ps = items(interp_field(t, "processes")?);
        processes.extend(ps.iter().cloned());
        per_task.push(ps);
        constraints.extend(items(interp_field(t, "constraints")?));
        let r = interp_field(t, "resources")?;
        let dim = |name: &str| -> Result<f64, String> {
            number(
                r.as_ref().and_then(|r| r.field(name).cloned()),
                &format!("task {i}'s resources.{name}"),
            )
        };
        let (c, m, d, g) = (dim("cpu")?, dim("ram")?, dim("disk")?, dim("gpu")?);
        let w = number(
            interp_field(t, "finalization_wait")?,
            &format!("task {i}'s finalization_wait"),
        )?;
        match how {
            Merge::Concat => {
                cpu = cpu.max(c);
                ram = ram.max(m);
                disk = disk.max(d);
                gpu = gpu.max(g);
                wait += w;
            }
            Merge::Combine => {
                cpu += c;
                ram += m;
                disk += d;
                gpu += g;
                wait = wait.max(w);
            }
        }
    }
    let mut constraints = dedup(constraints);
    if how == Merge::Concat {
        for pair in per_task.windows(2) {
            for p1 in &pair[0] {
                for p2 in &pair[1] {
                    if !same(p1, p2) {
                        let c = order(vec![process_name(p1)?, process_name(p2)?]);
                        constraints.extend(items(Some(c)));
                    }
                }
            }
        }
    }
    let constraint_ty = Ty::Struct(sch.st("Constraint"));
    let resources = instance(
        &sch.st("Resources"),
        vec![
            ("cpu", float(cpu)),
            ("ram", int(ram as i64)),
            ("disk", int(disk as i64)),
            ("gpu", int(gpu as i64)),
        ],
    );
    let Some(pi) = task_ty.index("processes") else {
        return Err("Task has no processes".into());
    };
    let idx = |n: &str| task_ty.index(n).unwrap_or(pi);
    Ok(first.with_fields(vec![
        (
            pi,
            Some(Obj::new(Kind::List {
                elem: Ty::Struct(sch.st("Process")),
                items: dedup(processes),
            })),
        ),
        (
            idx("constraints"),
            Some(Obj::new(Kind::List {
                elem: constraint_ty,
                items: constraints,
            })),
        ),
        (idx("resources"), Some(resources)),
        (idx("finalization_wait"), Some(int(wait as i64))),
    ]))
}

/// `SequentialTask(...)`: a Task whose processes run in the order given.
pub fn sequential(task: &Obj) -> HelperResult {
    let existing = items(interp_field(task, "constraints")?);
    if !existing.is_empty() {
        return Err(
            "cannot turn a Task with existing constraints into a SequentialTask; use Task(...) \
             with constraints=order(...) instead"
                .into(),
        );
    }
    let Some(procs) = interp_field(task, "processes")? else {
        return Ok(task.clone());
    };
    let names = items(Some(procs))
        .iter()
        .map(process_name)
        .collect::<Result<Vec<_>, _>>()?;
    let ty = schema().st("Task");
    match ty.index("constraints") {
        Some(i) => Ok(task.with_fields(vec![(i, Some(order(names)))])),
        None => Ok(task.clone()),
    }
}

/// `SimpleTask(name, command)`: one process and 1 core, 1 GiB of RAM and of disk.
pub fn simple_task(name: &str, command: &str) -> Obj {
    let sch = schema();
    let process = instance(
        &sch.st("Process"),
        vec![("name", s(name)), ("cmdline", s(command))],
    );
    instance(
        &sch.st("Task"),
        vec![
            ("name", s(name)),
            (
                "processes",
                Obj::new(Kind::List {
                    elem: Ty::Struct(sch.st("Process")),
                    items: vec![process],
                }),
            ),
            (
                "resources",
                instance(
                    &sch.st("Resources"),
                    vec![
                        ("cpu", float(1.0)),
                        ("ram", int(1024 * MB)),
                        ("disk", int(1024 * MB)),
                    ],
                ),
            ),
        ],
    )
}
