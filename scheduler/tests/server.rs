//! The scheduler over HTTP, without a socket: jobs, agents' long-poll, status reports, kills,
//! drains, persistence across a restart, backups and the restore hold, auth, metrics, OpenAPI.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use hearth_scheduler::http::app;
use hearth_scheduler::server::{SchedulerConfig, Started, start};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

fn cfg(dir: &std::path::Path) -> SchedulerConfig {
    SchedulerConfig::new("127.0.0.1:0".parse().unwrap(), dir.join("data"))
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
    text: String,
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    body: Option<Value>,
    auth: Option<&str>,
) -> Resp {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
        text,
    }
}

fn job(instances: u32) -> Value {
    json!({
        "key": "west/www/prod/web",
        "config": {
            "cluster": "west", "role": "www", "environment": "prod", "name": "web",
            "instances": instances, "service": true,
            "task": {"name": "web",
                     "processes": [{"name": "p", "cmdline": "serve {{thermos.ports[http]}}"}],
                     "resources": {"cpu": 1.0, "ram": 1048576, "disk": 1048576}}
        }
    })
}

fn sync(host: &str, tasks: Value, acked: u64, wait_ms: u64) -> Value {
    json!({
        "host": host, "agent_id": format!("{host}-1"),
        "resources": {"cpu": 4.0, "ram": 1073741824u64, "disk": 1073741824u64},
        "ports": {"first": 31000, "last": 31999},
        "attributes": {"rack": "r1"},
        "tasks": tasks, "acked_epoch": acked, "wait_ms": wait_ms
    })
}

fn update(id: &str, seq: u64, state: &str) -> Value {
    json!({"task_id": id, "seq": seq, "state": state, "timestamp_ms": 1})
}

async fn stop(started: Started, router: Router) {
    drop(router);
    let Started {
        core, app, thread, ..
    } = started;
    drop(core);
    drop(app);
    tokio::task::spawn_blocking(move || thread.join().unwrap().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn create_place_launch_run_kill_drain_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let started = start(&cfg(dir.path())).unwrap();
    let router = app(started.app.clone());

    assert_eq!(call(&router, "GET", "/health", None, None).await.text, "OK");
    let r = call(
        &router,
        "POST",
        "/api/v1/agents/sync",
        Some(sync("h1", json!([]), 0, 0)),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = call(&router, "POST", "/api/v1/jobs", Some(job(2)), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["instances"], 2);
    let r = call(&router, "POST", "/api/v1/jobs", Some(job(2)), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["error"], "conflict");

    let orders = call(
        &router,
        "POST",
        "/api/v1/agents/sync",
        Some(sync("h1", json!([]), 0, 5000)),
        None,
    )
    .await
    .body;
    let launch = orders["launch"].as_array().unwrap();
    assert_eq!(launch.len(), 2);
    assert_eq!(launch[0]["config"]["task"]["name"], "web");
    let ids: Vec<String> = launch
        .iter()
        .map(|l| l["task_id"].as_str().unwrap().to_owned())
        .collect();
    let epoch = orders["epoch"].as_u64().unwrap();
    for id in &ids {
        let r = call(
            &router,
            "POST",
            "/api/v1/status",
            Some(update(id, 1, "STARTING")),
            None,
        )
        .await;
        assert_eq!(r.body["duplicate"], false, "{}", r.text);
        call(
            &router,
            "POST",
            "/api/v1/status",
            Some(update(id, 2, "RUNNING")),
            None,
        )
        .await;
    }
    let r = call(
        &router,
        "POST",
        "/api/v1/status",
        Some(update(&ids[0], 2, "RUNNING")),
        None,
    )
    .await;
    assert_eq!(r.body["duplicate"], true);
    let r = call(
        &router,
        "POST",
        "/api/v1/status",
        Some(update(&ids[0], 9, "RUNNING")),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["expected_seq"], 3);

    let tasks = call(
        &router,
        "GET",
        "/api/v1/jobs/west/www/prod/web/tasks",
        None,
        None,
    )
    .await
    .body;
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    assert!(
        tasks
            .iter()
            .all(|t| t["state"] == "RUNNING" && t["agent"] == "h1")
    );

    // An executor's live condition shows with its task until it is cleared.
    let tasks_url = "/api/v1/jobs/west/www/prod/web/tasks";
    let condition =
        |text: Option<&str>| json!({"task_id": ids[0], "condition": text, "since_ms": 5});
    let r = call(
        &router,
        "POST",
        "/api/v1/status/condition",
        Some(condition(Some("checkpoint writes failing: disk full"))),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let tasks = call(&router, "GET", tasks_url, None, None).await.body;
    let shown: Vec<&Value> = tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["executor_condition"])
        .collect();
    assert!(
        shown.contains(&&json!("checkpoint writes failing: disk full"))
            && shown.contains(&&Value::Null),
        "{tasks}"
    );
    let r = call(
        &router,
        "POST",
        "/api/v1/status/condition",
        Some(condition(None)),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let tasks = call(&router, "GET", tasks_url, None, None).await.body;
    assert!(
        tasks
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("executor_condition").is_none()),
        "{tasks}"
    );

    // A long-poll with nothing to do waits, and wakes when an order appears.
    let reported =
        json!([{"task_id": ids[0], "running": true}, {"task_id": ids[1], "running": true}]);
    let waiting = {
        let router = router.clone();
        let body = sync("h1", reported.clone(), epoch, 20_000);
        tokio::spawn(
            async move { call(&router, "POST", "/api/v1/agents/sync", Some(body), None).await },
        )
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while started
        .core
        .call(|s, _| s.long_polls(Some("h1")))
        .await
        .unwrap()
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sync never waited"
        );
        tokio::task::yield_now().await;
    }
    let r = call(
        &router,
        "POST",
        "/api/v1/jobs/west/www/prod/web/kill",
        Some(json!({"instances": [1]})),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let woke = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(woke.body["kill"], json!([ids[1]]));
    call(
        &router,
        "POST",
        "/api/v1/status",
        Some(update(&ids[1], 3, "KILLED")),
        None,
    )
    .await;

    let r = call(&router, "POST", "/api/v1/hosts/h1/drain", None, None).await;
    assert_eq!(r.body["mode"], "DRAINING", "{}", r.text);
    let hosts = call(&router, "GET", "/api/v1/hosts", None, None).await.body;
    assert_eq!(hosts[0]["host"], "h1");

    let audit = call(&router, "GET", "/api/v1/audit", None, None).await.body;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["drainHosts", "killTasks", "createJob", "registerAgent"]
    );
    assert_eq!(audit[0]["user"], "anonymous");
    assert_eq!(audit[3]["user"], "agent:h1");

    stop(started, router).await;

    // Everything acknowledged is back after a restart.
    let started = start(&cfg(dir.path())).unwrap();
    let router = app(started.app.clone());
    let tasks = call(
        &router,
        "GET",
        "/api/v1/jobs/west/www/prod/web/tasks",
        None,
        None,
    )
    .await
    .body;
    let by_id = |id: &str| {
        tasks
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["task_id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id(&ids[0])["state"], "DRAINING");
    assert_eq!(by_id(&ids[1])["state"], "KILLED");
    let r = call(
        &router,
        "POST",
        "/api/v1/status",
        Some(update(&ids[0], 3, "KILLED")),
        None,
    )
    .await;
    assert_eq!(
        r.body["duplicate"], false,
        "the seq state survived: {}",
        r.text
    );
    let r = call(
        &router,
        "POST",
        "/api/v1/status",
        Some(update(&ids[0], 3, "KILLED")),
        None,
    )
    .await;
    assert_eq!(r.body["duplicate"], true);
    let hosts = call(&router, "GET", "/api/v1/hosts", None, None).await.body;
    assert_eq!(hosts[0]["mode"], "DRAINED");
    let jobs = call(&router, "GET", "/api/v1/jobs?role=www", None, None)
        .await
        .body;
    assert_eq!(jobs[0]["key"], "west/www/prod/web");
    let detail = call(&router, "GET", "/api/v1/jobs/west/www/prod/web", None, None)
        .await
        .body;
    assert_eq!(detail["config"]["task"]["name"], "web");
    stop(started, router).await;
}

#[tokio::test]
async fn bad_requests_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let started = start(&cfg(dir.path())).unwrap();
    let router = app(started.app.clone());
    let mut bad = job(1);
    bad["config"]["instances"] = json!(0);
    let r = call(&router, "POST", "/api/v1/jobs", Some(bad), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["message"].as_str().unwrap().contains("instances"),
        "{}",
        r.text
    );
    let r = call(
        &router,
        "GET",
        "/api/v1/jobs/west/www/prod/nope",
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(
        &router,
        "GET",
        "/api/v1/jobs/west/www/production/x",
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(
        &router,
        "POST",
        "/api/v1/jobs",
        Some(json!({"nope": 1})),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    call(&router, "POST", "/api/v1/jobs", Some(job(2)), None).await;
    let kill = "/api/v1/jobs/west/www/prod/web/kill";
    let r = call(&router, "POST", kill, Some(json!({"instances": [7]})), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.text.contains("instance(s) 7") && r.text.contains("west/www/prod/web"),
        "{}",
        r.text
    );
    let r = call(&router, "POST", kill, Some(json!("x")), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(
        &router,
        "POST",
        "/api/v1/jobs/west/www/prod/web/restart",
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = call(&router, "POST", kill, Some(json!({})), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["tasks"].as_array().unwrap().len(), 2, "{}", r.text);
    stop(started, router).await;
}

fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

#[tokio::test]
async fn auth_401_403_tokens_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let h = hearth_scheduler::hash_password("pw").unwrap();
    let ini = dir.path().join("security.ini");
    std::fs::write(
        &ini,
        format!("[users]\nroot = {h}, admin\ndev = {h}, dev\n[roles]\nadmin = *\ndev = thrift.AuroraSchedulerManager:createJob:www:devel\n"),
    )
    .unwrap();
    let mut c = cfg(dir.path());
    c.security_ini = Some(ini);
    c.agent_tokens = vec!["tok".into()];
    let started = start(&c).unwrap();
    let router = app(started.app.clone());

    let r = call(&router, "POST", "/api/v1/jobs", Some(job(1)), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers[header::WWW_AUTHENTICATE],
        "Basic realm=\"hearth\""
    );
    let r = call(
        &router,
        "POST",
        "/api/v1/jobs",
        Some(job(1)),
        Some(&basic("root", "bad")),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Credentials are checked before the body: a wrong password is a 401 even with a body that
    // is not a job.
    let r = call(
        &router,
        "POST",
        "/api/v1/jobs",
        Some(json!({})),
        Some(&basic("root", "bad")),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = call(&router, "POST", "/api/v1/reconcile", Some(json!({})), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = call(
        &router,
        "POST",
        "/api/v1/jobs",
        Some(job(1)),
        Some(&basic("dev", "pw")),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.text
            .contains("thrift.AuroraSchedulerManager:createJob:www:prod:web"),
        "{}",
        r.text
    );
    let r = call(
        &router,
        "POST",
        "/api/v1/jobs",
        Some(job(1)),
        Some(&basic("root", "pw")),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Reads are open.
    let r = call(&router, "GET", "/api/v1/jobs", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    // Agents need the token.
    let r = call(
        &router,
        "POST",
        "/api/v1/agents/sync",
        Some(sync("h1", json!([]), 0, 0)),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = call(
        &router,
        "POST",
        "/api/v1/status",
        Some(update("x", 1, "RUNNING")),
        Some("Bearer nope"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = call(
        &router,
        "POST",
        "/api/v1/agents/sync",
        Some(sync("h1", json!([]), 0, 0)),
        Some("Bearer tok"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let audit = call(&router, "GET", "/api/v1/audit", None, None).await.body;
    let created = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "createJob")
        .unwrap();
    assert_eq!(created["user"], "root");
    stop(started, router).await;

    let mut c = cfg(dir.path());
    c.security_ini = Some(dir.path().join("security.ini"));
    c.auth_reads = true;
    let started = start(&c).unwrap();
    let router = app(started.app.clone());
    let r = call(&router, "GET", "/api/v1/jobs", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = call(
        &router,
        "GET",
        "/api/v1/jobs",
        None,
        Some(&basic("dev", "pw")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    stop(started, router).await;
}

#[tokio::test]
async fn plaintext_passwords_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("security.ini");
    std::fs::write(&ini, "[users]\nroot = secret, admin\n[roles]\nadmin = *\n").unwrap();
    let mut c = cfg(dir.path());
    c.security_ini = Some(ini);
    let e = start(&c).unwrap_err().to_string();
    assert!(e.contains("plain text") && !e.contains("secret,"), "{e}");
    c.allow_plaintext_passwords = true;
    assert!(start(&c).is_ok());
}

#[tokio::test]
async fn a_restored_backup_holds_kills_of_unknown_tasks_until_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let started = start(&cfg(dir.path())).unwrap();
    let router = app(started.app.clone());
    call(&router, "POST", "/api/v1/jobs", Some(job(1)), None).await;
    let r = call(&router, "POST", "/api/v1/backups", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let name = r.body["name"].as_str().unwrap().to_owned();
    let list = call(&router, "GET", "/api/v1/backups", None, None)
        .await
        .body;
    assert_eq!(list[0]["name"], name.as_str());
    stop(started, router).await;

    let backup = dir.path().join("data/backups").join(&name);
    let fresh = dir.path().join("fresh");
    hearth_scheduler::restore(&backup, &fresh).unwrap();
    let e = hearth_scheduler::restore(&backup, &fresh).unwrap_err();
    assert!(e.to_string().contains("empty data directory"), "{e}");

    let c = SchedulerConfig::new("127.0.0.1:0".parse().unwrap(), fresh.clone());
    let started = start(&c).unwrap();
    let router = app(started.app.clone());
    let jobs = call(&router, "GET", "/api/v1/jobs", None, None).await.body;
    assert_eq!(jobs.as_array().unwrap().len(), 1, "the job came back");
    let stray = json!([{"task_id": "www-prod-web-0-99-beef", "running": true}]);
    let orders = call(
        &router,
        "POST",
        "/api/v1/agents/sync",
        Some(sync("h1", stray.clone(), 0, 0)),
        None,
    )
    .await
    .body;
    assert_eq!(orders["kill"], json!([]), "held, not killed");
    let rec = call(&router, "GET", "/api/v1/reconcile", None, None)
        .await
        .body;
    assert_eq!(rec["hold"], true);
    assert_eq!(rec["held"][0]["task_id"], "www-prod-web-0-99-beef");
    let rec = call(
        &router,
        "POST",
        "/api/v1/reconcile",
        Some(json!({"confirm": true})),
        None,
    )
    .await
    .body;
    assert_eq!(rec["hold"], false);
    let orders = call(
        &router,
        "POST",
        "/api/v1/agents/sync",
        Some(sync("h1", stray, 0, 0)),
        None,
    )
    .await
    .body;
    assert_eq!(orders["kill"], json!(["www-prod-web-0-99-beef"]));
    stop(started, router).await;
}

#[tokio::test]
async fn metrics_and_openapi_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let started = start(&cfg(dir.path())).unwrap();
    let router = app(started.app.clone());
    call(&router, "POST", "/api/v1/jobs", Some(job(1)), None).await;
    let m = call(&router, "GET", "/metrics", None, None).await.text;
    assert!(
        m.contains("hearth_scheduler_tasks{state=\"PENDING\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("hearth_scheduler_storage_commit_seconds_count"),
        "{m}"
    );
    assert!(
        m.contains("hearth_scheduler_transitions_total{state=\"PENDING\"} 1"),
        "{m}"
    );
    let doc = call(&router, "GET", "/openapi.json", None, None).await.body;
    assert!(doc["paths"]["/api/v1/jobs"]["post"].is_object(), "{doc}");
    assert!(
        doc["paths"]["/api/v1/agents/sync"]["post"].is_object(),
        "{doc}"
    );
    assert!(
        doc["components"]["schemas"]["TaskStatus"].is_object(),
        "{doc}"
    );
    assert_eq!(
        call(&router, "GET", "/leaderhealth", None, None).await.text,
        "OK"
    );
    stop(started, router).await;
}

/// One raw HTTP/1.1 request over a socket; returns the status line and the body.
async fn raw(port: u16, method: &str, path: &str, body: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out.lines().next().unwrap_or_default().to_owned();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn serve_answers_on_its_socket_and_shutdown_ends_held_long_polls() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = cfg(dir.path());
    c.bind = format!("127.0.0.1:{port}").parse().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(hearth_scheduler::serve(c, async {
        let _ = stop_rx.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scheduler never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = raw(port, "GET", "/health", "").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "OK");
    let body = sync("h1", json!([]), 0, 20_000).to_string();
    let held = tokio::spawn(async move { raw(port, "POST", "/api/v1/agents/sync", &body).await });
    // Wait until the scheduler holds the sync.
    loop {
        let (_, m) = raw(port, "GET", "/metrics", "").await;
        if m.contains("hearth_scheduler_agent_long_polls 1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sync never waited: {m}"
        );
    }
    let began = tokio::time::Instant::now();
    stop_tx.send(()).unwrap();
    let (status, _) = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .unwrap()
        .unwrap();
    assert!(status.contains("200"), "{status}");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(began.elapsed() < Duration::from_secs(10));
}

/// Time passes in a served scheduler: a flapping task's replacement waits THROTTLED until its
/// `throttled_until`, then is placed; a silent agent's tasks go LOST.
#[tokio::test]
async fn served_timers_unthrottle_and_lose_silent_agents() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = cfg(dir.path());
    c.bind = format!("127.0.0.1:{port}").parse().unwrap();
    c.initial_flapping_delay = Duration::from_millis(600);
    c.agent_timeout = Duration::from_millis(1500);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(hearth_scheduler::serve(c, async {
        let _ = stop_rx.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let post = |path: &'static str, body: Value| async move {
        let (status, text) = raw(port, "POST", path, &body.to_string()).await;
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
        )
    };
    let tasks = || async move {
        let (_, text) = raw(port, "GET", "/api/v1/jobs/west/www/prod/web/tasks", "").await;
        serde_json::from_str::<Value>(&text).unwrap()
    };
    post("/api/v1/agents/sync", sync("h1", json!([]), 0, 0)).await;
    let (status, _) = post("/api/v1/jobs", job(1)).await;
    assert!(status.contains("201"), "{status}");
    let (_, orders) = post("/api/v1/agents/sync", sync("h1", json!([]), 0, 0)).await;
    let first = orders["launch"][0]["task_id"].as_str().unwrap().to_owned();
    post("/api/v1/status", update(&first, 1, "RUNNING")).await;
    post("/api/v1/status", update(&first, 2, "FAILED")).await;
    let t = tasks().await;
    let throttled = &t[0];
    assert_eq!(throttled["state"], "THROTTLED", "{t}");
    assert_eq!(throttled["ancestor_id"], first.as_str());
    let until = throttled["throttled_until"].as_i64().unwrap();
    // The agent keeps syncing; the replacement is placed on it once the delay is over.
    let placed = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never placed: {}",
            tasks().await
        );
        post("/api/v1/agents/sync", sync("h1", json!([]), 0, 0)).await;
        let t = tasks().await;
        if t[0]["state"] == "ASSIGNED" {
            break t[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let events = placed["events"].as_array().unwrap();
    let pending = events.iter().find(|e| e["state"] == "PENDING").unwrap();
    assert!(
        pending["timestamp_ms"].as_i64().unwrap() >= until,
        "{placed}"
    );
    // Now the agent falls silent: after the agent timeout the task is LOST.
    let id = placed["task_id"].as_str().unwrap().to_owned();
    let lost = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never lost: {}",
            tasks().await
        );
        let t = tasks().await;
        if let Some(x) = t
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["task_id"] == id.as_str())
            && x["state"] == "LOST"
        {
            break x.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        lost["reason"].as_str().unwrap().contains("Agent h1 lost"),
        "{lost}"
    );
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
