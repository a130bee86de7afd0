//! The job client (`hearth job|host|scheduler backup ...`) against a stub scheduler: what it
//! sends (paths, bodies, credentials) and what it prints (tables, JSON, errors that say what to
//! do). The stub answers canned `wire` JSON, so these run anywhere, without root.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Output;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// One request the stub received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    body: String,
}

type Route = Box<dyn Fn(&Seen) -> (u16, String) + Send + Sync>;

/// A stub scheduler on a loopback port: `route` answers each request.
struct Stub {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    home: tempfile::TempDir,
}

impl Stub {
    fn start(route: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let route: Route = Box::new(route);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_owned();
                let path = parts.next().unwrap_or_default().to_owned();
                let mut len = 0;
                let mut authorization = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap_or((&h, ""));
                    match k.to_ascii_lowercase().as_str() {
                        "content-length" => len = v.trim().parse().unwrap_or(0),
                        "authorization" => authorization = Some(v.trim().to_owned()),
                        _ => {}
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let seen = Seen {
                    method,
                    path,
                    authorization,
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                let (code, answer) = route(&seen);
                log.lock().unwrap().push(seen);
                let extra = if code == 401 {
                    "WWW-Authenticate: Basic realm=\"hearth\"\r\n"
                } else {
                    ""
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\n{extra}\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        Stub {
            url,
            seen,
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn hearth(&self, args: &[&str]) -> Output {
        common::hearth()
            .args(args)
            .env("HEARTH_SCHEDULER", &self.url)
            .env_remove("HEARTH_USER")
            .env_remove("HEARTH_PASSWORD")
            .env_remove("NETRC")
            .env("HOME", self.home.path())
            .output()
            .unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn task(instance: u32, state: &str, extra: Value) -> Value {
    let mut t = json!({
        "job": "west/root/test/web",
        "instance": instance,
        "task_id": format!("root-test-web-{instance}-1700000000000-abcd"),
        "state": state,
        "agent": "host-a",
        "reason": null,
        "throttled_until": null,
        "ancestor_id": null,
        "failure_count": 0,
        "ports": {},
        "events": [{"timestamp_ms": now_ms() - 5000, "state": state}],
    });
    for (k, v) in extra.as_object().unwrap() {
        t[k] = v.clone();
    }
    t
}

#[test]
fn job_status_shows_when_throttled_tasks_become_pending_and_why_pending_ones_wait() {
    let until = now_ms() + 42_000;
    let tasks = json!([
        task(0, "RUNNING", json!({})),
        task(
            1,
            "THROTTLED",
            json!({"throttled_until": until, "agent": null})
        ),
        task(
            2,
            "PENDING",
            json!({"reason": "Insufficient resources: ram", "agent": null})
        ),
    ]);
    let body = tasks.to_string();
    let stub = Stub::start(move |_| (200, body.clone()));
    let out = stub.hearth(&["job", "status", "west/root/test/web"]);
    assert!(out.status.success(), "{}", common::show(&out));
    let text = stdout(&out);
    assert!(text.starts_with("INSTANCE"), "{text}");
    assert!(
        text.contains("PENDING at ") && text.contains("(in 4"),
        "{text}"
    );
    assert!(
        text.contains("cannot be placed: Insufficient resources: ram"),
        "{text}"
    );
    assert_eq!(stub.seen()[0].path, "/api/v1/jobs/west/root/test/web/tasks");

    let out = stub.hearth(&["job", "status", "west/root/test/web", "--json"]);
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 3);
    for t in &list {
        for f in [
            "instance",
            "task_id",
            "state",
            "agent",
            "reason",
            "throttled_until",
        ] {
            assert!(t.get(f).is_some(), "{f} missing in {t}");
        }
    }
    assert_eq!(list[1]["throttled_until"], until);
}

#[test]
fn job_create_sends_the_config_with_the_key_it_lacks_and_basic_credentials() {
    let stub = Stub::start(|seen| {
        let req: Value = serde_json::from_str(&seen.body).unwrap_or_default();
        let summary = json!({
            "key": req["key"], "instances": 2, "service": true, "tier": "preemptible",
            "priority": 0, "task_counts": {"PENDING": 2}, "created_ms": 1,
        });
        (201, summary.to_string())
    });
    let out = stub.hearth(&[
        "job",
        "create",
        "devcluster/root/devel/hello",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/jobs/hello_service.json"
        ),
        "--user",
        "Aladdin",
        "--password",
        "open sesame",
    ]);
    assert!(out.status.success(), "{}", common::show(&out));
    assert!(stdout(&out).contains("created job devcluster/root/devel/hello: 2 instances"));
    let seen = &stub.seen()[0];
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/api/v1/jobs")
    );
    assert_eq!(
        seen.authorization.as_deref(),
        Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
    );
    let req: Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(req["key"], "devcluster/root/devel/hello");
    assert_eq!(req["config"]["instances"], 2);
    assert_eq!(req["config"]["task"]["name"], "hello");

    // A key that contradicts the config is refused before anything is sent.
    let out = stub.hearth(&[
        "job",
        "create",
        "devcluster/www/devel/hello",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/jobs/hello_service.json"
        ),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", common::show(&out));
    assert!(stderr(&out).contains("role"), "{}", stderr(&out));
    assert_eq!(stub.seen().len(), 1);
}

#[test]
fn credentials_come_from_netrc_for_the_scheduler_host() {
    let stub = Stub::start(|_| (200, "[]".to_owned()));
    std::fs::write(
        stub.home.path().join(".netrc"),
        "machine elsewhere login x password y\nmachine 127.0.0.1 login bob password s3cret\n",
    )
    .unwrap();
    let out = stub.hearth(&["job", "list", "--json"]);
    assert!(out.status.success(), "{}", common::show(&out));
    assert_eq!(
        stub.seen()[0].authorization.as_deref(),
        Some("Basic Ym9iOnMzY3JldA==")
    );
}

#[test]
fn errors_say_what_went_wrong_with_which_job_and_what_to_do() {
    let stub = Stub::start(|seen| match seen.path.as_str() {
        p if p.ends_with("/kill") => (
            403,
            json!({"error": "forbidden", "message":
                "missing permission thrift.AuroraSchedulerManager:killTasks:root:test:web"})
            .to_string(),
        ),
        p if p.ends_with("/restart") => (
            401,
            json!({"error": "unauthenticated", "message": "authentication required"}).to_string(),
        ),
        _ => (
            404,
            json!({"error": "not_found", "message": "no job west/root/test/web"}).to_string(),
        ),
    });
    let out = stub.hearth(&["job", "kill", "west/root/test/web", "--instances", "0-2,5"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("job kill west/root/test/web")
            && err.contains("403")
            && err.contains("killTasks"),
        "{err}"
    );
    let kill = stub.seen().pop().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&kill.body).unwrap(),
        json!({"instances": [0, 1, 2, 5]})
    );
    let err = stderr(&stub.hearth(&["job", "restart", "west/root/test/web"]));
    assert!(
        err.contains("401") && err.contains("HEARTH_USER") && err.contains("~/.netrc"),
        "{err}"
    );
    let err = stderr(&stub.hearth(&["job", "status", "west/root/test/web"]));
    assert!(
        err.contains("job status west/root/test/web") && err.contains("404"),
        "{err}"
    );
    // Nothing listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = common::hearth()
        .args([
            "host",
            "status",
            "--scheduler",
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("no scheduler at") && err.contains("hearth scheduler"),
        "{err}"
    );
    let out = stub.hearth(&["job", "status", "west/root/prod"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cluster/role/environment/name"));
}

#[test]
fn job_kill_waits_until_every_instance_has_ended() {
    let polls = Arc::new(Mutex::new(0));
    let count = Arc::clone(&polls);
    let stub = Stub::start(move |seen| {
        if seen.path.ends_with("/kill") {
            let resp = json!({
                "job": "west/root/test/web",
                "tasks": ["root-test-web-0-1700000000000-abcd"],
                "message": "killing 1 task of west/root/test/web",
            });
            return (200, resp.to_string());
        }
        let mut n = count.lock().unwrap();
        *n += 1;
        let state = if *n < 3 { "KILLING" } else { "KILLED" };
        (200, json!([task(0, state, json!({}))]).to_string())
    });
    let out = stub.hearth(&["job", "kill", "west/root/test/web"]);
    assert!(out.status.success(), "{}", common::show(&out));
    assert!(
        stdout(&out).contains("instance 0 KILLED"),
        "{}",
        stdout(&out)
    );
    assert!(*polls.lock().unwrap() >= 3);
}

#[test]
fn host_status_lists_modes_and_use() {
    let hosts = json!([{
        "host": "host-a", "mode": "DRAINING", "alive": true, "last_seen_ms": now_ms(),
        "attributes": {"rack": "r1"}, "resources": {"cpu": 4.0, "ram": 8u64 << 30, "disk": 100u64 << 30},
        "used": {"cpu": 0.5, "ram": 1u64 << 30, "disk": 0}, "ports": {"first": 31000, "last": 32000},
        "tasks": 2,
    }]);
    let body = hosts.to_string();
    let stub = Stub::start(move |_| (200, body.clone()));
    let out = stub.hearth(&["host", "status"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", common::show(&out));
    for want in [
        "host-a",
        "DRAINING",
        "0.50/4.00",
        "1 GiB/8 GiB",
        "rack=r1",
        "31000-32000",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
}
