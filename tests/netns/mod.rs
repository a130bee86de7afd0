//! A small cluster for end-to-end tests of the scheduler, its agents and the client: the real
//! `hearth` binary as scheduler (on the host) and agents, each agent a separate "host" in a
//! network namespace of its own.
//!
//! Network: one bridge in the root namespace holding the scheduler's address, and per agent a
//! namespace joined to the bridge by a veth pair, with its own address. Each cluster takes a
//! /28 of 198.18.0.0/15 (the benchmarking range, never routed) whose index is also in every
//! interface and namespace name, so tests run in parallel (nextest runs each in its own
//! process). Cutting an agent's link is `ip link set <its veth> down` on the root side.
//!
//! Agents enter their namespace with `nsenter --net=/run/netns/NS`, not `ip netns exec`: the
//! latter also remounts `/sys` in a new mount namespace, which hides the cgroup hierarchies
//! from the executors the agent starts.
//!
//! Teardown (`Drop`): the scheduler and agents are SIGKILLed, then everything their roots hold
//! (executors, keepers, task processes; see `common::Env`), then the links and namespaces are
//! deleted. Waits are conditions with deadlines; on a timeout the panic shows the last answer
//! and the tail of every log.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, Env, hearth};

/// Run `ip ARGS`; the error is its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

/// True when this host can run the cluster tests (root, cgroups, `ip`, `nsenter`); otherwise
/// prints why the calling test skips, or panics under `HEARTH_REQUIRE_CGROUPS=1`.
pub fn have_netns(test: &str) -> bool {
    if !common::have_cgroups(test) {
        return false;
    }
    let tool = |name: &str, arg: &str| {
        Command::new(name)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let ok = tool("ip", "-V") && tool("nsenter", "--version");
    assert!(
        ok || !common::cgroups_required(),
        "{test}: HEARTH_REQUIRE_CGROUPS=1 but `ip` (iproute2) or `nsenter` (util-linux) is missing"
    );
    if !ok {
        eprintln!("{test}: skipped: needs `ip` and `nsenter`");
    }
    ok
}

/// The bridge, and one namespace per agent host.
pub struct Net {
    pub idx: u32,
    bridge: String,
    pub gateway: Ipv4Addr,
    pub hosts: Vec<NetHost>,
}

pub struct NetHost {
    pub ns: String,
    pub veth: String,
    pub addr: Ipv4Addr,
}

const BLOCKS: u32 = 8192; // /28s in 198.18.0.0/15

impl Net {
    pub fn new(hosts: usize) -> Net {
        assert!(hosts <= 12, "a /28 holds at most 12 agent hosts");
        let start = std::process::id() % BLOCKS;
        let mut chosen = None;
        for attempt in 0..512 {
            let idx = (start + attempt * 37) % BLOCKS;
            let bridge = format!("hbr{idx}");
            match ip(&["link", "add", &bridge, "type", "bridge"]) {
                Ok(()) => {
                    chosen = Some((idx, bridge));
                    break;
                }
                Err(e) if e.contains("exists") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        let (idx, bridge) = chosen.expect("no free bridge index");
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + idx * 16;
        let gateway = Ipv4Addr::from(base + 1);
        let mut net = Net {
            idx,
            bridge: bridge.clone(),
            gateway,
            hosts: Vec::new(),
        };
        must(&["addr", "add", &format!("{gateway}/28"), "dev", &bridge]);
        must(&["link", "set", &bridge, "up"]);
        for i in 0..hosts {
            let letter = char::from(b'a' + u8::try_from(i).unwrap());
            let ns = format!("hearth-{idx}-{letter}");
            let veth = format!("hve{idx}{letter}");
            let addr = Ipv4Addr::from(base + 2 + u32::try_from(i).unwrap());
            if ip(&["netns", "add", &ns]).is_err() {
                // A namespace left by a killed run of an earlier test.
                let _ = ip(&["netns", "del", &ns]);
                must(&["netns", "add", &ns]);
            }
            net.hosts.push(NetHost {
                ns: ns.clone(),
                veth: veth.clone(),
                addr,
            });
            must(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            must(&["link", "set", &veth, "master", &bridge]);
            must(&["link", "set", &veth, "up"]);
            must(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/28"),
                "dev",
                "eth0",
            ]);
            must(&["-n", &ns, "link", "set", "eth0", "up"]);
            must(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    /// A command that runs `program` inside host `i`'s network namespace.
    pub fn command(&self, i: usize, program: &Path) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.hosts[i].ns))
            .arg("--")
            .arg(program);
        c
    }

    /// Cut host `i` off the network (its tasks keep running).
    pub fn cut(&self, i: usize) {
        must(&["link", "set", &self.hosts[i].veth, "down"]);
    }

    /// Give host `i` its link back.
    pub fn heal(&self, i: usize) {
        must(&["link", "set", &self.hosts[i].veth, "up"]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = ip(&["link", "del", &h.veth]);
            let _ = ip(&["netns", "del", &h.ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// A free TCP port on loopback (for clusters without a network of their own).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One agent host: its root (an `Env`, whose drop kills whatever the root holds) and process.
pub struct AgentHost {
    pub name: String,
    pub env: Env,
    child: Option<Child>,
    /// Index into `Net::hosts`, or `None` on the host's own network.
    host: Option<usize>,
    pub attributes: Vec<String>,
    /// More `hearth agent` arguments (e.g. `--token-file F`).
    pub extra_args: Vec<String>,
}

impl AgentHost {
    pub fn root(&self) -> PathBuf {
        self.env.root()
    }

    pub fn log(&self) -> PathBuf {
        self.env.dir.path().join("agent.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A scheduler and its agents.
pub struct Cluster {
    pub test: String,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub bind: SocketAddr,
    pub data: PathBuf,
    pub backup_dir: PathBuf,
    /// The scheduler's flags besides --bind and --data (name → value; a value "" is a switch).
    pub flags: BTreeMap<String, String>,
    scheduler: Option<Child>,
    pub agents: Vec<AgentHost>,
    pub net: Option<Net>,
}

/// Flags that keep the tests quick; each test overrides what it needs.
fn default_flags() -> BTreeMap<String, String> {
    [
        ("agent-timeout", "10s"),
        ("transient-timeout", "60s"),
        ("flapping-threshold", "2s"),
        ("initial-flapping-delay", "1s"),
        ("max-flapping-delay", "4s"),
        ("kill-retry-initial", "1s"),
        ("kill-retry-max", "5s"),
        ("placement-retry-initial", "200ms"),
        ("placement-retry-max", "1s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

impl Cluster {
    /// A cluster whose `agents` hosts each live in a network namespace of their own.
    pub fn with_netns(test: &str, agents: usize) -> Cluster {
        let net = Net::new(agents);
        let bind = SocketAddr::from((net.gateway, 8081));
        let mut c = Cluster::new(test, bind);
        c.net = Some(net);
        c
    }

    /// A cluster on loopback (no agents in namespaces).
    pub fn on_loopback(test: &str) -> Cluster {
        Cluster::new(test, SocketAddr::from(([127, 0, 0, 1], free_port())))
    }

    fn new(test: &str, bind: SocketAddr) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("hearth-cluster-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let backup_dir = dir.path().join("backups");
        Cluster {
            test: test.to_owned(),
            url: format!("http://{bind}"),
            bind,
            data,
            backup_dir,
            flags: default_flags(),
            scheduler: None,
            agents: Vec::new(),
            net: None,
            dir,
        }
    }

    pub fn flag(&mut self, name: &str, value: &str) -> &mut Cluster {
        self.flags.insert(name.to_owned(), value.to_owned());
        self
    }

    pub fn scheduler_log(&self) -> PathBuf {
        self.dir.path().join("scheduler.log")
    }

    /// Start the scheduler (on `self.data`) and wait until it answers `/health`.
    pub fn start_scheduler(&mut self) {
        assert!(self.scheduler.is_none(), "the scheduler already runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.scheduler_log())
            .unwrap();
        let mut cmd = hearth();
        cmd.arg("scheduler")
            .arg("--bind")
            .arg(self.bind.to_string())
            .arg("--data")
            .arg(&self.data)
            .arg("--backup-dir")
            .arg(&self.backup_dir);
        for (k, v) in &self.flags {
            cmd.arg(format!("--{k}"));
            if !v.is_empty() {
                cmd.arg(v);
            }
        }
        let child = cmd
            .env("HEARTH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.scheduler = Some(child);
        let deadline = Instant::now() + secs(30);
        loop {
            if http_get(self.bind, "/health").is_some_and(|(code, _)| code == 200) {
                return;
            }
            let exited = self
                .scheduler
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.fail(&format!("the scheduler exited ({status})"));
            }
            if Instant::now() > deadline {
                self.fail("the scheduler does not answer /health after 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9` the scheduler and reap it.
    pub fn kill_scheduler(&mut self) {
        if let Some(mut c) = self.scheduler.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Add an agent host (not started). In a netns cluster it gets the next namespace.
    pub fn add_agent(&mut self, name: &str, attributes: &[&str]) -> usize {
        let i = self.agents.len();
        let host = match &self.net {
            Some(net) => {
                assert!(
                    i < net.hosts.len(),
                    "the cluster has {} hosts",
                    net.hosts.len()
                );
                Some(i)
            }
            None => None,
        };
        self.agents.push(AgentHost {
            name: name.to_owned(),
            env: Env::new(),
            child: None,
            host,
            attributes: attributes.iter().map(|a| (*a).to_owned()).collect(),
            extra_args: Vec::new(),
        });
        i
    }

    /// Start agent `i` and wait until the scheduler lists its host as alive.
    pub fn start_agent(&mut self, i: usize) {
        self.spawn_agent(i);
        let name = self.agents[i].name.clone();
        self.wait_host_alive(&name);
    }

    /// Start agent `i` (without waiting for anything).
    pub fn spawn_agent(&mut self, i: usize) {
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_hearth"));
        let a = &self.agents[i];
        assert!(a.child.is_none(), "agent {} already runs", a.name);
        let mut cmd = match (a.host, &self.net) {
            (Some(h), Some(net)) => net.command(h, &exe),
            _ => Command::new(&exe),
        };
        std::fs::create_dir_all(a.root()).unwrap();
        cmd.arg("agent")
            .arg("--scheduler")
            .arg(&self.url)
            .arg("--root")
            .arg(a.root())
            .arg("--name")
            .arg(&a.name)
            .arg("--resources")
            .arg("cpu=4,ram=4GiB,disk=20GiB")
            .arg("--ports")
            .arg("31000-31999");
        for attr in &a.attributes {
            cmd.arg("--attribute").arg(attr);
        }
        cmd.args(&a.extra_args);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(a.log())
            .unwrap();
        let child = cmd
            .env("HEARTH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agents[i].child = Some(child);
    }

    /// Wait until the scheduler lists `host` as alive.
    pub fn wait_host_alive(&self, host: &str) {
        self.wait_for(&format!("host {host} to be alive"), secs(30), || {
            self.hosts()
                .into_iter()
                .find(|h| h["host"] == host && h["alive"] == true)
        });
    }

    /// `kill -9` agent `i` and reap it (its tasks keep running).
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut c) = self.agents[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `hearth ARGS` against this scheduler, with no credentials from the environment.
    pub fn hearth(&self, args: &[&str]) -> Output {
        self.hearth_cmd(args).output().unwrap()
    }

    pub fn hearth_cmd(&self, args: &[&str]) -> Command {
        let mut c = hearth();
        c.args(args)
            .env("HEARTH_SCHEDULER", &self.url)
            .env_remove("HEARTH_USER")
            .env_remove("HEARTH_PASSWORD")
            .env("HOME", self.dir.path())
            .env_remove("NETRC")
            .stdin(Stdio::null());
        c
    }

    /// `hearth ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.hearth(args);
        assert!(
            out.status.success(),
            "{}: hearth {} failed:\n{}",
            self.test,
            args.join(" "),
            common::show(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Write a job config in the test's directory; returns its path.
    pub fn job_file(&self, name: &str, job: &Value) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(job).unwrap()).unwrap();
        path
    }

    /// Create a job; returns its key (`e2e/root/test/<name>`).
    pub fn create(&self, job: &Value) -> String {
        let name = job["name"].as_str().unwrap();
        let key = format!("e2e/root/test/{name}");
        let path = self.job_file(name, job);
        self.ok(&["job", "create", &key, path.to_str().unwrap()]);
        key
    }

    /// `job status KEY --json`, or `None` while the scheduler does not answer.
    pub fn try_tasks(&self, key: &str) -> Option<Vec<Value>> {
        let out = self.hearth(&["job", "status", key, "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn tasks(&self, key: &str) -> Vec<Value> {
        match self.try_tasks(key) {
            Some(t) => t,
            None => panic!(
                "{}: job status {key} failed:\n{}",
                self.test,
                common::show(&self.hearth(&["job", "status", key, "--json"]))
            ),
        }
    }

    /// `host status --json` (empty while the scheduler does not answer).
    pub fn hosts(&self) -> Vec<Value> {
        let out = self.hearth(&["host", "status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// Wait until `cond` holds for the job's tasks; returns them.
    pub fn wait_tasks(
        &self,
        key: &str,
        what: &str,
        limit: Duration,
        mut cond: impl FnMut(&[Value]) -> bool,
    ) -> Vec<Value> {
        let mut last = Vec::new();
        let found = self.wait_for_or(what, limit, || {
            let tasks = self.try_tasks(key)?;
            if cond(&tasks) {
                return Some(tasks);
            }
            last = tasks;
            None
        });
        match found {
            Some(t) => t,
            None => self.fail(&format!(
                "timed out after {limit:?} waiting for {what}; the last status of {key}:\n{}",
                serde_json::to_string_pretty(&last).unwrap()
            )),
        }
    }

    /// Poll `f` (backing off from 50 ms to 300 ms) until it returns `Some`; panic after `limit`
    /// with the logs.
    pub fn wait_for<T>(&self, what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
        match self.wait_for_or(what, limit, f) {
            Some(v) => v,
            None => self.fail(&format!("timed out after {limit:?} waiting for {what}")),
        }
    }

    fn wait_for_or<T>(
        &self,
        _what: &str,
        limit: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + limit;
        let mut pause = Duration::from_millis(50);
        loop {
            if let Some(v) = f() {
                return Some(v);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(300));
        }
    }

    /// Panic with `msg` and the tail of every log.
    pub fn fail(&self, msg: &str) -> ! {
        let mut logs = format!("--- scheduler log:\n{}", tail(&self.scheduler_log(), 60));
        for a in &self.agents {
            logs.push_str(&format!(
                "\n--- agent {} log:\n{}",
                a.name,
                tail(&a.log(), 40)
            ));
        }
        panic!("{}: {msg}\n{logs}", self.test);
    }

    /// The agent whose host is `name`.
    pub fn agent(&self, name: &str) -> &AgentHost {
        self.agents.iter().find(|a| a.name == name).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_scheduler();
        for i in 0..self.agents.len() {
            self.kill_agent(i);
        }
        // Each agent's Env kills what its root holds; then the tasks' cgroups and the network go.
        let ids: Vec<String> = self
            .agents
            .iter()
            .flat_map(|a| task_ids(&a.root()))
            .collect();
        self.agents.clear();
        remove_cgroups(&ids);
        self.net.take();
    }
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A plain HTTP/1.1 GET; the status code and body, or `None` when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_request(addr, "GET", path, &[], "")
}

/// A plain HTTP/1.1 request (`Connection: close`); the status code and the whole response
/// (headers and body).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, secs(2)).ok()?;
    s.set_read_timeout(Some(secs(10))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, resp))
}

/// The ids of the tasks a checkpoint root holds.
pub fn task_ids(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("checkpoints"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Remove the (emptied) cgroups of these tasks, so test runs do not pile them up. Teardown
/// only: a cgroup whose last process is still exiting is retried for up to a second.
pub fn remove_cgroups(task_ids: &[String]) {
    for c in [
        "pids", "memory", "cpu", "cpuacct", "freezer", "blkio", "unified", "",
    ] {
        for id in task_ids {
            let dir = Path::new("/sys/fs/cgroup").join(c).join("hearth").join(id);
            for _ in 0..50 {
                if !dir.exists() || std::fs::remove_dir(&dir).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

// ---- Reading tasks (the `job status --json` objects) ----

pub fn state(t: &Value) -> &str {
    t["state"].as_str().unwrap_or("?")
}

pub fn task_id(t: &Value) -> &str {
    t["task_id"].as_str().unwrap_or("?")
}

pub fn host_of(t: &Value) -> &str {
    t["agent"].as_str().unwrap_or("")
}

pub fn instance(t: &Value) -> u64 {
    t["instance"].as_u64().unwrap()
}

pub fn is_terminal(t: &Value) -> bool {
    matches!(state(t), "FINISHED" | "FAILED" | "KILLED" | "LOST")
}

/// The active (not terminal) tasks.
pub fn active(tasks: &[Value]) -> Vec<&Value> {
    tasks.iter().filter(|t| !is_terminal(t)).collect()
}

/// Whether exactly `n` instances each have one task in `want` state, and no other is active.
pub fn all_in(tasks: &[Value], n: usize, want: &str) -> bool {
    let act = active(tasks);
    act.len() == n && act.iter().all(|t| state(t) == want)
}

/// When the task entered `state` (its first such event), in ms.
pub fn event_ms(t: &Value, state: &str) -> Option<i64> {
    t["events"]
        .as_array()?
        .iter()
        .find(|e| e["state"] == state)?
        .get("timestamp_ms")?
        .as_i64()
}

/// A service job of `instances` running `cmdline`, as root, small resources.
pub fn service(name: &str, instances: u32, cmdline: &str) -> Value {
    serde_json::json!({
        "cluster": "e2e",
        "role": "root",
        "environment": "test",
        "name": name,
        "service": true,
        "instances": instances,
        "task": {
            "name": name,
            "processes": [{"name": "main", "cmdline": cmdline}],
            "resources": {"cpu": 0.1, "ram": 64u64 << 20, "disk": 64u64 << 20},
            "finalization_wait": 5
        }
    })
}

// ---- What is left of a task on its host ----

/// The pid of the task's executor, from its lock file under `root`.
pub fn executor_pid(root: &Path, task_id: &str) -> Option<i32> {
    std::fs::read_to_string(root.join("checkpoints").join(task_id).join("executor.lock"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The processes left in the task's cgroups (every hierarchy).
pub fn cgroup_pids(task_id: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    // v1 controllers and the hybrid tree, then pure v2 (the mount itself).
    for c in ["pids", "memory", "cpu", "cpuacct", "freezer", "unified", ""] {
        let dir = Path::new("/sys/fs/cgroup")
            .join(c)
            .join("hearth")
            .join(task_id);
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    pids.sort_unstable();
    pids.dedup();
    pids.retain(|p| common::alive(*p));
    pids
}

/// Whether anything of the task still runs on its host: its executor or a process in its
/// cgroups.
pub fn task_alive(root: &Path, task_id: &str) -> bool {
    executor_pid(root, task_id).is_some_and(common::alive) || !cgroup_pids(task_id).is_empty()
}
