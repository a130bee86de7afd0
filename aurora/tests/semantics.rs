//! Pystachio semantics as a config sees them: types, struct copies, bindings, scoping, methods.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use hearth_aurora::{AuroraError, EvalOptions, evaluate};
use serde_json::{Value, json};

/// Evaluate `src` (with a one-process job appended unless it defines `jobs`) and return the
/// only job's JSON.
fn job_of(src: &str) -> Result<Value, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.aurora");
    std::fs::write(&path, src).unwrap();
    let opts = EvalOptions {
        env: Arc::new(|_: &str| None),
        user: Some("tester".into()),
        ..EvalOptions::default()
    };
    let e = evaluate(&path, &opts).map_err(|e| e.to_string())?;
    let job = e.jobs.first().ok_or("no jobs")?;
    job.json.clone().map_err(|e| e.to_string())
}

fn with_job(prelude: &str, job_args: &str) -> Result<Value, String> {
    job_of(&format!(
        "{prelude}\njobs = [Job(cluster = 'c', role = 'r', environment = 'test', \
         task = Task(name = 't', processes = [p], resources = Resources(cpu = 1, ram = 1, \
         disk = 1)){job_args})]\n"
    ))
}

fn cmdline(j: &Value) -> &str {
    j["task"]["processes"][0]["cmdline"].as_str().unwrap()
}

#[test]
fn struct_instances_are_factories_and_calls_copy_them() {
    let j = with_job(
        "Daemon = Process(daemon = True, max_failures = 0)\n\
         p = Daemon(name = 'a', cmdline = 'x')\n\
         q = p(name = 'b')\n\
         assert q.name().get() == 'b' and p.name().get() == 'a'",
        "",
    )
    .unwrap();
    assert_eq!(j["task"]["processes"][0]["daemon"], json!(true));
    assert_eq!(j["task"]["processes"][0]["max_failures"], json!(0));
    assert_eq!(j["task"]["processes"][0]["name"], json!("a"));
}

#[test]
fn attributes_are_templates_inside_their_struct() {
    let j = with_job(
        "p = Process(name = 'installer', cmdline = 'echo {{name}} is running')",
        "",
    )
    .unwrap();
    assert_eq!(cmdline(&j), "echo installer is running");
}

#[test]
fn closer_bindings_take_precedence() {
    let j = job_of(
        "p = Process(name = '{{context}}_process', cmdline = 'true')\n\
         t = Task(resources = Resources(cpu = 1, ram = 1, disk = 1)).bind(context = 'global')\n\
         jobs = [Job(cluster = 'c', role = 'r', environment = 'test', name = 'j',\n\
                     task = t(processes = [p, p.bind(context = 'local')]))]\n",
    )
    .unwrap();
    assert_eq!(j["task"]["processes"][0]["name"], json!("global_process"));
    assert_eq!(j["task"]["processes"][1]["name"], json!("local_process"));
}

#[test]
fn lists_maps_and_structs_can_be_bound_and_indexed() {
    let j = with_job(
        "fib = List(Integer)([1, 1, 2, 3, 5, 8, 13])\n\
         names = Map(String, String)({'Kent': 'Clark'})\n\
         p = Process(name = 'p', cmdline = '{{fib[4]}} {{first[Kent]}} {{q.cmdline}} {{d.x.y}}')\
         .bind(fib = fib, first = names, q = Process(cmdline = 'echo hello'), d = {'x': {'y': 'z'}})",
        "",
    )
    .unwrap();
    assert_eq!(cmdline(&j), "5 Clark echo hello z");
}

#[test]
fn literal_braces_survive_with_an_ampersand() {
    let j = with_job(
        "p = Process(name = 'p', cmdline = 'echo {{&not_a_template}}')",
        "",
    )
    .unwrap();
    assert_eq!(cmdline(&j), "echo {{not_a_template}}");
}

#[test]
fn typed_fields_take_templates_and_convert_when_bound() {
    let j = with_job(
        "p = Process(name = 'p', cmdline = 'x', max_failures = '{{n}}', daemon = '{{d}}')",
        ".bind(n = 3, d = True)",
    )
    .unwrap();
    assert_eq!(j["task"]["processes"][0]["max_failures"], json!(3));
    assert_eq!(j["task"]["processes"][0]["daemon"], json!(true));
    let err = with_job(
        "p = Process(name = 'p', cmdline = 'x', max_failures = '{{n}}')",
        ".bind(n = 'many')",
    )
    .unwrap_err();
    assert!(err.contains("task.processes[0].max_failures"), "{err}");
    assert!(err.contains("not a valid Integer"), "{err}");
}

#[test]
fn wrong_types_and_unknown_attributes_are_reported_where_they_are_written() {
    let err = with_job("p = Process(name = 'p', cmdline = 'x', nme = 1)", "").unwrap_err();
    assert!(
        err.contains(":1:5: Process has no attribute \"nme\""),
        "{err}"
    );
    assert!(err.contains("cmdline, name"), "{err}");
    let err = with_job("p = Process(name = 'p', cmdline = ['x'])", "").unwrap_err();
    assert!(
        err.contains("Process.cmdline must be a string, not list"),
        "{err}"
    );
    let err = with_job(
        "p = Process(name = 'p', cmdline = 'x', logger = Logger(destination = LoggerDestination('disk')))",
        "",
    )
    .unwrap_err();
    assert!(err.contains("one of file, console, both, none"), "{err}");
}

#[test]
fn missing_required_attributes_are_listed_with_their_paths() {
    let err = job_of(
        "jobs = [Job(cluster = 'c', environment = 'test', name = 'j', \
         task = Task(processes = [Process(name = 'p')]))]\n",
    )
    .unwrap_err();
    assert!(err.contains("role: Job[role] is required"), "{err}");
    assert!(
        err.contains("task.processes[0].cmdline: Process[cmdline] is required"),
        "{err}"
    );
    assert!(err.contains("task.resources"), "{err}");
}

#[test]
fn empty_unsets_an_attribute_and_has_reports_it() {
    let j = with_job(
        "p = Process(name = 'p', cmdline = 'x', logger = Logger(mode = LoggerMode('rotate'), \
         rotate = RotatePolicy(log_size = 5 * MB)))\n\
         assert p.has_logger()\n\
         p = p(logger = Empty)\n\
         assert not p.has_logger()",
        "",
    )
    .unwrap();
    assert!(j["task"]["processes"][0].get("logger").is_none());
}

#[test]
fn loggers_enums_and_rotation_policies_come_out_in_full() {
    let j = with_job(
        "p = Process(name = 'p', cmdline = 'x', logger = Logger(destination = LoggerDestination('both'), \
         mode = LoggerMode('rotate'), rotate = RotatePolicy(log_size = 5 * MB, backups = 2)))",
        "",
    )
    .unwrap();
    assert_eq!(
        j["task"]["processes"][0]["logger"],
        json!({"destination": "both", "mode": "rotate", "rotate": {"log_size": 5242880, "backups": 2}})
    );
}

#[test]
fn user_types_enums_choices_and_maps_work_in_profiles() {
    let j = with_job(
        concat!(
            "Color = Enum('red', 'green')\n",
            "class Profile(Struct):\n",
            "  color = Default(Color, 'red')\n",
            "  port = Choice([Integer, String])\n",
            "  tags = Default(Map(String, Integer), {'a': 1})\n",
            "  names = List(String)\n",
            "P = Profile(port = 8080, names = ['x', 'y'])\n",
            "p = Process(name = 'p', cmdline = '{{profile.color}} {{profile.port}} {{profile.tags[a]}} {{profile.names[1]}}')",
        ),
        ".bind(profile = P)",
    )
    .unwrap();
    assert_eq!(cmdline(&j), "red 8080 1 y");
}

#[test]
fn get_returns_plain_values_and_order_accepts_names_or_processes() {
    let j = job_of(
        "a = Process(name = 'a', cmdline = 'x')\n\
         b = Process(name = 'b', cmdline = 'y')\n\
         t = Task(name = 't', processes = [a, b], constraints = order(a, 'b') + order('b', a),\n\
                  resources = Resources(cpu = 1, ram = 1, disk = 1))\n\
         assert t.resources().get() == {'cpu': 1.0, 'ram': 1, 'disk': 1, 'gpu': 0}\n\
         assert [p.name().get() for p in t.processes()] == ['a', 'b']\n\
         assert len(t.processes()) == 2\n\
         assert t.processes()[1].cmdline().get() == 'y'\n\
         jobs = [Job(cluster = 'c', role = 'r', environment = 'test', task = t)]\n",
    )
    .unwrap();
    assert_eq!(
        j["task"]["constraints"],
        json!([{"order": ["a", "b"]}, {"order": ["b", "a"]}])
    );
    assert_eq!(j["name"], json!("t"));
}

#[test]
fn sequential_task_refuses_existing_constraints() {
    let err = job_of(
        "a = Process(name = 'a', cmdline = 'x')\n\
         t = SequentialTask(processes = [a], constraints = order(a))\njobs = []\n",
    )
    .unwrap_err();
    assert!(err.contains("existing constraints"), "{err}");
}

#[test]
fn power_top_level_loops_functions_and_string_formatting_work() {
    let j = job_of(
        "def mapper(i):\n  return Process(name = 'm%03d' % i, cmdline = 'echo {}'.format(2 ** i))\n\
         procs = [mapper(i) for i in range(3)]\n\
         for p in procs:\n  pass\n\
         t = Task(name = 't', processes = procs + [Process(name = 'r', cmdline = 'cat')],\n\
                  constraints = [Constraint(order = [m.name(), 'r']) for m in procs],\n\
                  resources = Resources(cpu = 1, ram = 2 ** 10 * KB, disk = 1 * GB), max_concurrency = 2)\n\
         jobs = [Job(cluster = 'c', role = 'r', environment = 'test', task = t)]\n",
    )
    .unwrap();
    assert_eq!(j["task"]["processes"][2]["cmdline"], json!("echo 4"));
    assert_eq!(j["task"]["processes"][1]["name"], json!("m001"));
    assert_eq!(j["task"]["resources"]["ram"], json!(1048576));
    assert_eq!(j["task"]["constraints"][2], json!({"order": ["m002", "r"]}));
}

#[test]
fn deprecated_mesos_role_and_cluster_templates_are_rewritten() {
    let j = with_job(
        "p = Process(name = 'p', cmdline = '{{mesos.role}}@{{mesos.cluster}} {{mesos.instance}}')",
        "",
    )
    .unwrap();
    assert_eq!(cmdline(&j), "r@c {{mesos.instance}}");
}

#[test]
fn a_missing_jobs_list_is_a_clear_error() {
    let err = job_of("x = 1\n").unwrap_err();
    assert!(err.contains("defines no `jobs` list"), "{err}");
    let err = job_of("jobs = [1]\n").unwrap_err();
    assert!(err.contains("jobs[0] must be a Job"), "{err}");
}

#[test]
fn syntax_errors_point_at_the_line() {
    let err = job_of("x = 1\ny = (\n").unwrap_err();
    assert!(err.contains("t.aurora:"), "{err}");
    let err = job_of("a = 1\ntry:\n  b = 2\nexcept:\n  pass\n").unwrap_err();
    assert!(
        err.contains("t.aurora:2:1: try/except is not supported"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_there_names_the_path() {
    let err = evaluate(
        std::path::Path::new("/nonexistent/x.aurora"),
        &EvalOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, AuroraError::Read { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/x.aurora"), "{err}");
}
