//! Evaluating the `.aurora` files of `testdata/aurora/`: each construct of Aurora's tutorial and
//! reference, checked field by field in the job JSON, and the hostile and unsupported configs.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_aurora::{AuroraError, EvalOptions, Evaluated, JobError, evaluate};
use serde_json::{Value, json};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/aurora")
        .join(name)
}

/// Options with a fixed environment: only `USER=tester` is set.
fn opts() -> EvalOptions {
    EvalOptions {
        env: Arc::new(|k: &str| (k == "USER").then(|| "tester".to_owned())),
        ..EvalOptions::default()
    }
}

fn eval(name: &str) -> Evaluated {
    evaluate(&data(name), &opts()).unwrap()
}

fn job(e: &Evaluated, key: &str) -> Value {
    e.job_json(key).unwrap().clone()
}

/// The job JSON is what `hearth validate` and `hearth run` accept.
fn assert_valid(j: &Value) {
    if let Err(e) = hearth_checkpoints::config::parse(&j.to_string()) {
        panic!("not a valid task config: {e}\n{j:#}");
    }
}

#[test]
fn profiles_as_struct_classes_and_instances_fill_typed_fields() {
    let e = eval("profiles.aurora");
    assert_eq!(
        e.keys(),
        vec![
            "local/tester/prod/app",
            "local/tester/devel/app",
            "local/tester/prod/rebound"
        ]
    );
    let j = job(&e, "local/tester/prod/app");
    assert_valid(&j);
    // instances='{{profile.instances}}' is an Integer once bound.
    assert_eq!(j["instances"], json!(3));
    assert_eq!(j["environment"], json!("prod"));
    assert_eq!(j["contact"], json!("tester@example.com"));
    assert_eq!(j["role"], json!("tester"));
    // Resources from a bound Resources instance, gpu='{{profile.gpu}}'.
    assert_eq!(
        j["task"]["resources"],
        json!({"cpu": 0.25, "ram": 67108864, "disk": 134217728, "gpu": 0})
    );
    let main = &j["task"]["processes"][0];
    assert_eq!(main["name"], json!("main"));
    // A triple-quoted command line with both quotes inside; a Default that refers to a sibling
    // attribute ('data/{{environment}}'); {{name}} from the process itself; Boolean as text.
    assert_eq!(
        main["cmdline"],
        json!(
            "echo \"version=live\" > version.txt\necho 'dataset=data/prod' >> version.txt\n\
             echo \"it's main at 0.25 cores, verbose=False\" >> version.txt"
        )
    );
    // Adjacent string literals, a process-level bind, and {{role}} from the job.
    assert_eq!(
        j["task"]["processes"][1]["cmdline"],
        json!("echo hello world from tester")
    );
    // SequentialTask orders its processes.
    assert_eq!(
        j["task"]["constraints"],
        json!([{"order": ["main", "greet"]}])
    );
    assert_eq!(j["task"]["name"], json!("app"));
}

#[test]
fn each_job_gets_its_own_profile_and_later_binds_win() {
    let e = eval("profiles.aurora");
    let devel = job(&e, "local/tester/devel/app");
    assert_eq!(devel["instances"], json!(1));
    assert!(
        devel["task"]["processes"][0]["cmdline"]
            .as_str()
            .unwrap()
            .contains("dataset=data/test")
    );
    assert!(
        devel["task"]["processes"][0]["cmdline"]
            .as_str()
            .unwrap()
            .contains("verbose=True")
    );
    let rebound = job(&e, "local/tester/prod/rebound");
    assert_eq!(rebound["environment"], json!("prod"));
    assert_eq!(rebound["instances"], json!(3));
}

#[test]
fn os_getenv_sees_only_the_given_environment() {
    let o = EvalOptions {
        env: Arc::new(|k: &str| match k {
            "HEARTH_TEST_ROLE" => Some("svc".to_owned()),
            "USER" => Some("tester".to_owned()),
            _ => None,
        }),
        ..EvalOptions::default()
    };
    let e = evaluate(&data("profiles.aurora"), &o).unwrap();
    assert_eq!(e.keys()[0], "local/svc/prod/app");
}

#[test]
fn concat_chains_order_takes_resource_maxima_and_sums_finalization_waits() {
    let e = eval("combine.aurora");
    let j = job(&e, "local/www-data/prod/concat");
    assert_valid(&j);
    let t = &j["task"];
    assert_eq!(t["name"], json!("setup"));
    let names: Vec<&str> = t["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["download", "unpack", "configure", "start"]);
    assert_eq!(
        t["resources"],
        json!({"cpu": 1.0, "ram": 134217728, "disk": 268435456, "gpu": 1})
    );
    assert_eq!(t["finalization_wait"], json!(30));
    let constraints = t["constraints"].as_array().unwrap();
    for c in [
        json!({"order": ["download", "unpack"]}),
        json!({"order": ["configure", "start"]}),
        json!({"order": ["download", "configure"]}),
        json!({"order": ["download", "start"]}),
        json!({"order": ["unpack", "configure"]}),
        json!({"order": ["unpack", "start"]}),
    ] {
        assert!(constraints.contains(&c), "{c} missing from {constraints:?}");
    }
    assert_eq!(constraints.len(), 6);
}

#[test]
fn combine_sums_resources_keeps_each_order_and_takes_the_longest_finalization_wait() {
    let e = eval("combine.aurora");
    let j = job(&e, "local/www-data/prod/combine");
    assert_valid(&j);
    let t = &j["task"];
    assert_eq!(t["name"], json!("combined"));
    assert_eq!(
        t["resources"],
        json!({"cpu": 1.25, "ram": 100663296, "disk": 301989888, "gpu": 0})
    );
    assert_eq!(t["finalization_wait"], json!(30));
    assert_eq!(
        t["constraints"],
        json!([{"order": ["download", "unpack"]}, {"order": ["side"]}])
    );
    assert_eq!(t["processes"].as_array().unwrap().len(), 3);
}

#[test]
fn simple_task_has_default_resources_and_names_the_job() {
    let e = eval("combine.aurora");
    let j = job(&e, "local/www-data/prod/simple");
    assert_eq!(j["name"], json!("simple"));
    assert_eq!(
        j["task"]["resources"],
        json!({"cpu": 1.0, "ram": 1073741824, "disk": 1073741824, "gpu": 0})
    );
    assert_eq!(j["task"]["processes"][0]["cmdline"], json!("echo simple"));
}

#[test]
fn health_checks_lifecycle_and_update_strategies_come_out_as_aurora_writes_them() {
    let e = eval("services.aurora");
    let j = job(&e, "west/www-data/prod/http_checked");
    assert_valid(&j);
    assert_eq!(j["service"], json!(true));
    assert_eq!(
        j["health_check_config"],
        json!({
            "health_checker": {"http": {"endpoint": "/healthz", "expected_response": "ok",
                                        "expected_response_code": 200}},
            "initial_interval_secs": 30.0, "interval_secs": 5.0, "timeout_secs": 2.0,
            "max_consecutive_failures": 3, "min_consecutive_successes": 2
        })
    );
    assert_eq!(
        j["lifecycle"],
        json!({"http": {"port": "health", "graceful_shutdown_endpoint": "/quitquitquit",
                        "shutdown_endpoint": "/abortabortabort",
                        "graceful_shutdown_wait_secs": 10, "shutdown_wait_secs": 3}})
    );
    assert_eq!(
        j["update_config"]["update_strategy"],
        json!({"batch_size": 2})
    );
    assert_eq!(j["update_config"]["batch_size"], json!(2));
    assert_eq!(j["update_config"]["watch_secs"], json!(30));
    assert_eq!(
        j["announce"],
        json!({"primary_port": "http", "portmap": {"metrics": "9102"}})
    );
    assert_eq!(j["constraints"], json!({"host": "limit:1", "rack": "!r1"}));
    assert_eq!(
        j["partition_policy"],
        json!({"reschedule": false, "delay_secs": 60})
    );
    assert_eq!(j["sla_policy"], json!({"count": 2, "duration_secs": 1800}));
    assert_eq!(j["metadata"], json!([{"key": "team", "value": "web"}]));
    assert_eq!(j["tier"], json!("preferred"));
    assert_eq!(j["priority"], json!(10));
    assert_eq!(j["max_task_failures"], json!(3));
    assert_eq!(j["production"], json!(true));
    // Executor templates stay for the executor.
    assert_eq!(
        j["task"]["processes"][0]["cmdline"],
        json!("echo serving on {{thermos.ports[http]}} instance {{mesos.instance}}")
    );

    let shell = job(&e, "west/www-data/prod/shell_checked");
    assert_valid(&shell);
    assert_eq!(
        shell["health_check_config"]["health_checker"],
        json!({"shell": {"shell_command": "test -f ready"}})
    );
    assert_eq!(shell["lifecycle"], json!({}));
    assert_eq!(
        shell["update_config"]["update_strategy"],
        json!({"batch_size": 3, "autopause_after_batch": true})
    );
    assert_eq!(
        shell["sla_policy"],
        json!({"percentage": 95.0, "duration_secs": 600})
    );

    let variable = job(&e, "west/www-data/prod/variable");
    assert_eq!(
        variable["update_config"]["update_strategy"],
        json!({"batch_sizes": [1, 2, 5], "autopause_after_batch": false})
    );
    assert_eq!(
        variable["update_config"]["rollback_on_failure"],
        json!(false)
    );
    assert_eq!(
        variable["sla_policy"],
        json!({"coordinator_url": "http://coordinator:8080", "status_key": "drain"})
    );
    // Defaults of a plain Service.
    assert_eq!(
        variable["health_check_config"],
        json!({
            "health_checker": {"http": {"endpoint": "/health", "expected_response": "ok",
                                        "expected_response_code": 0}},
            "initial_interval_secs": 15.0, "interval_secs": 10.0, "timeout_secs": 1.0,
            "max_consecutive_failures": 0, "min_consecutive_successes": 1
        })
    );
}

#[test]
fn cron_jobs_keep_their_schedule_and_policy() {
    let e = eval("services.aurora");
    let j = job(&e, "west/www-data/prod/nightly");
    assert_eq!(j["cron_schedule"], json!("0 2 * * *"));
    assert_eq!(j["cron_collision_policy"], json!("CANCEL_NEW"));
    assert_eq!(j["service"], json!(false));
    // The task name defaults to its first process's name, the job's to its task's.
    assert_eq!(j["task"]["name"], json!("server"));
}

#[test]
fn a_container_job_fails_alone_and_the_others_still_work() {
    let e = eval("services.aurora");
    for key in [
        "west/www-data/prod/docker",
        "west/www-data/prod/mesos_image",
    ] {
        let err = e.job_json(key).unwrap_err();
        let AuroraError::Job { error, .. } = &err else {
            panic!("{err}")
        };
        assert!(matches!(error, JobError::Container { .. }), "{err}");
        assert!(err.to_string().contains("container"), "{err}");
    }
    assert!(e.job_json("west/www-data/prod/http_checked").is_ok());
}

#[test]
fn include_reads_a_file_beside_the_config_and_bind_fills_templates() {
    let mut o = opts();
    o.binds
        .push(hearth_aurora::parse_bind("greeting=hi there").unwrap());
    let e = evaluate(&data("include_main.aurora"), &o).unwrap();
    let j = job(&e, "local/www-data/test/included");
    assert_valid(&j);
    assert_eq!(
        j["task"]["processes"][0]["cmdline"],
        json!("echo hi there > hello.out")
    );
    assert_eq!(
        j["task"]["resources"],
        json!({"cpu": 0.1, "ram": 16777216, "disk": 16777216, "gpu": 0})
    );
}

#[test]
fn an_unbound_template_is_an_error_naming_the_variable_and_the_field() {
    let e = eval("include_main.aurora");
    let err = e
        .job_json("local/www-data/test/included")
        .unwrap_err()
        .to_string();
    assert!(err.contains("{{greeting}}"), "{err}");
    assert!(err.contains("task.processes[0].cmdline"), "{err}");
    assert!(err.contains("--bind greeting=VALUE"), "{err}");
    // thermos.* is left for the executor; only {{version}} is reported.
    let e = eval("unbound.aurora");
    let err = e
        .job_json("local/www-data/test/unbound")
        .unwrap_err()
        .to_string();
    assert!(err.contains("{{version}}"), "{err}");
    assert!(!err.contains("thermos"), "{err}");
}

#[test]
fn an_unknown_key_lists_the_keys_the_file_defines() {
    let e = eval("combine.aurora");
    let err = e
        .job_json("local/www-data/prod/nope")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no job local/www-data/prod/nope"), "{err}");
    for k in [
        "local/www-data/prod/concat",
        "local/www-data/prod/combine",
        "local/www-data/prod/simple",
    ] {
        assert!(err.contains(k), "{err}");
    }
    let err = e.job_json("concat").unwrap_err().to_string();
    assert!(err.contains("CLUSTER/ROLE/ENVIRONMENT/NAME"), "{err}");
}

#[test]
fn an_endless_loop_is_stopped_at_the_time_limit() {
    let o = EvalOptions {
        time_limit: Duration::from_millis(500),
        ..opts()
    };
    let (err, took) = eval_err("hostile/loop.aurora", &o);
    assert!(matches!(err, AuroraError::TimeLimit { .. }), "{err}");
    assert!(err.to_string().contains("time limit"), "{err}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn a_huge_list_is_stopped_at_the_memory_limit() {
    let o = EvalOptions {
        memory_limit: 16 * 1024 * 1024,
        time_limit: Duration::from_secs(30),
        ..opts()
    };
    let (err, took) = eval_err("hostile/big_list.aurora", &o);
    assert!(matches!(err, AuroraError::MemoryLimit { .. }), "{err}");
    assert!(err.to_string().contains("memory limit of 16 MiB"), "{err}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn a_huge_repetition_is_refused_before_it_is_allocated() {
    let (err, took) = eval_err("hostile/repeat.aurora", &opts());
    assert!(
        matches!(
            err,
            AuroraError::Eval {
                line: 1,
                col: 7,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("would make 100000000 items"),
        "{err}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn include_outside_the_config_directory_is_refused() {
    for (file, what) in [
        ("hostile/include_passwd.aurora", "an absolute path"),
        ("hostile/include_parent.aurora", "`..`"),
    ] {
        let (err, _) = eval_err(file, &opts());
        assert!(
            matches!(
                err,
                AuroraError::Include {
                    line: 1,
                    col: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(what), "{err}");
        assert!(err.to_string().contains("config's directory"), "{err}");
    }
}

#[test]
fn templates_that_lead_back_to_themselves_are_errors() {
    for file in [
        "hostile/template_cycle.aurora",
        "hostile/struct_cycle.aurora",
    ] {
        let t = Instant::now();
        let e = eval(file);
        let err = e
            .job_json("local/www-data/test/cycle")
            .unwrap_err()
            .to_string();
        assert!(err.contains("leads back to itself"), "{file}: {err}");
        assert!(err.contains("task.processes[0].cmdline"), "{file}: {err}");
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}

#[test]
fn unsupported_python_fails_with_file_line_column_and_what_to_write() {
    for (file, line, col, needle) in [
        ("unsupported/import_sys.aurora", 2, 8, "only `import os`"),
        (
            "unsupported/class_method.aurora",
            3,
            3,
            "function outside it",
        ),
        (
            "unsupported/open.aurora",
            1,
            10,
            "include('that_file.aurora')",
        ),
    ] {
        let (err, _) = eval_err(file, &opts());
        let text = err.to_string();
        assert!(
            text.contains(&format!("{file}:{line}:{col}: ")),
            "{file}: {text}"
        );
        assert!(text.contains(needle), "{file}: {text}");
    }
}

fn eval_err(name: &str, o: &EvalOptions) -> (AuroraError, Duration) {
    let t = Instant::now();
    let err = evaluate(&data(name), o).unwrap_err();
    (err, t.elapsed())
}
