//! Placement, a pure function: which host a task of a job goes to, and which ports it gets, or
//! why no host fits (shown as the PENDING task's reason).
//!
//! A host is vetoed when its agent is not alive, it is draining or drained, it lacks cpu, ram,
//! disk or free ports for the task, a job constraint is not satisfied (`value` lists, `!`
//! negations, `limit:N` — a host without the attribute is vetoed), or it is dedicated to other
//! jobs (a host with a `dedicated` attribute takes only tasks whose job carries that constraint
//! value). Among the hosts that fit, the one with the fewest tasks of the job wins (instances
//! spread across hosts), then the one with the most free memory, then by name.

use std::collections::{BTreeMap, HashMap};

use crate::model::{Constraint, DEDICATED, Host, JobSpec};
use crate::wire::HostMode;

/// Where a task goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub host: String,
    pub ports: BTreeMap<String, u16>,
}

/// Why one host cannot take the task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Veto {
    HostDown,
    Maintenance,
    Insufficient(&'static str),
    Constraint(String),
    Dedicated,
}

impl Veto {
    pub fn reason(&self) -> String {
        match self {
            Veto::HostDown => "Agent not alive".to_owned(),
            Veto::Maintenance => "Host in maintenance (draining or drained)".to_owned(),
            Veto::Insufficient(what) => format!("Insufficient resources: {what}"),
            Veto::Constraint(attr) => format!("Constraint not satisfied: {attr}"),
            Veto::Dedicated => "Host is dedicated to other jobs".to_owned(),
        }
    }
}

/// Reason when there is no live host at all.
pub const NO_LIVE_AGENT: &str = "No live agent";

const CPU_EPSILON: f64 = 1e-9;

/// Why `host` cannot take a task of `spec` (None: it can). `value_counts` gives, per limited
/// attribute, the job's active tasks per attribute value.
pub fn veto(
    spec: &JobSpec,
    constraints: &[(String, Constraint)],
    host: &Host,
    value_counts: &HashMap<String, HashMap<String, u32>>,
) -> Option<Veto> {
    if !host.alive {
        return Some(Veto::HostDown);
    }
    if matches!(host.mode, HostMode::Draining | HostMode::Drained) {
        return Some(Veto::Maintenance);
    }
    // Dedicated hosts take only jobs that ask for them.
    if let Some(d) = host.attributes.get(DEDICATED)
        && spec.constraints.get(DEDICATED) != Some(d)
    {
        return Some(Veto::Dedicated);
    }
    for (attr, c) in constraints {
        let value = host.attribute(attr);
        let ok = match (c, value) {
            (_, None) => false,
            (Constraint::Value { negated, values }, Some(v)) => {
                values.iter().any(|x| x == v) != *negated
            }
            (Constraint::Limit(n), Some(v)) => {
                let used = value_counts
                    .get(attr)
                    .and_then(|m| m.get(v))
                    .copied()
                    .unwrap_or(0);
                used < *n
            }
        };
        if !ok {
            return Some(Veto::Constraint(attr.clone()));
        }
    }
    let need = &spec.resources;
    if host.used.cpu + need.cpu > host.resources.cpu + CPU_EPSILON {
        return Some(Veto::Insufficient("cpu"));
    }
    if host.used.ram.saturating_add(need.ram) > host.resources.ram {
        return Some(Veto::Insufficient("ram"));
    }
    if host.used.disk.saturating_add(need.disk) > host.resources.disk {
        return Some(Veto::Insufficient("disk"));
    }
    if !has_free_ports(host, spec.port_names.len()) {
        return Some(Veto::Insufficient("ports"));
    }
    None
}

/// Whether the host's range has `n` ports no active task holds; O(1) unless the range is nearly
/// full (ports held outside the current range only make the quick count conservative).
pub fn has_free_ports(host: &Host, n: usize) -> bool {
    if n == 0 {
        return true;
    }
    let (first, last) = (host.ports.first, host.ports.last);
    if first == 0 || last < first {
        return false;
    }
    let size = usize::from(last - first) + 1;
    if size >= host.ports_used.len() + n {
        return true;
    }
    free_ports(host, n).is_some()
}

/// The lowest `n` ports of the host's range no active task holds.
pub fn free_ports(host: &Host, n: usize) -> Option<Vec<u16>> {
    if n == 0 {
        return Some(Vec::new());
    }
    let mut out = Vec::with_capacity(n);
    let (first, last) = (host.ports.first, host.ports.last);
    if first == 0 || last < first {
        return None;
    }
    for p in first..=last {
        if !host.ports_used.contains(&p) {
            out.push(p);
            if out.len() == n {
                return Some(out);
            }
        }
    }
    None
}

/// Per limited attribute, the job's active tasks per attribute value across `hosts`.
pub fn limit_counts<'a>(
    spec: &JobSpec,
    constraints: &[(String, Constraint)],
    hosts: impl Iterator<Item = &'a Host> + Clone,
) -> HashMap<String, HashMap<String, u32>> {
    let mut out: HashMap<String, HashMap<String, u32>> = HashMap::new();
    for (attr, c) in constraints {
        if !matches!(c, Constraint::Limit(_)) {
            continue;
        }
        let m = out.entry(attr.clone()).or_default();
        for h in hosts.clone() {
            if let (Some(n), Some(v)) = (h.job_counts.get(&spec.key), h.attribute(attr)) {
                *m.entry(v.to_owned()).or_default() += n;
            }
        }
    }
    out
}

/// Choose a host and ports for one task of `spec`, or say why none fits: the vetoes, most
/// frequent first, with how many hosts each applies to.
pub fn place<'a>(
    spec: &JobSpec,
    hosts: impl Iterator<Item = &'a Host> + Clone,
) -> Result<Placement, String> {
    let constraints = spec.parsed_constraints();
    let counts = limit_counts(spec, &constraints, hosts.clone());
    let mut best: Option<(&Host, (u32, std::cmp::Reverse<u64>))> = None;
    let mut vetoes: BTreeMap<Veto, u32> = BTreeMap::new();
    let mut any_alive = false;
    for h in hosts {
        any_alive |= h.alive;
        match veto(spec, &constraints, h, &counts) {
            Some(v) => *vetoes.entry(v).or_default() += 1,
            None => {
                let score = (
                    h.job_counts.get(&spec.key).copied().unwrap_or(0),
                    std::cmp::Reverse(h.resources.ram.saturating_sub(h.used.ram)),
                );
                if best.as_ref().is_none_or(|(_, s)| score < *s) {
                    best = Some((h, score));
                }
            }
        }
    }
    if let Some((h, _)) = best {
        let ports = free_ports(h, spec.port_names.len()).unwrap_or_default();
        return Ok(Placement {
            host: h.name.clone(),
            ports: spec.port_names.iter().cloned().zip(ports).collect(),
        });
    }
    if !any_alive {
        return Err(NO_LIVE_AGENT.to_owned());
    }
    vetoes.remove(&Veto::HostDown);
    let mut list: Vec<(Veto, u32)> = vetoes.into_iter().collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Err(list
        .iter()
        .map(|(v, n)| {
            format!(
                "{} ({} host{})",
                v.reason(),
                n,
                if *n == 1 { "" } else { "s" }
            )
        })
        .collect::<Vec<_>>()
        .join("; "))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::Task;
    use crate::wire::{JobKey, PortRange, ResourceVec, Tier};

    fn spec(constraints: &[(&str, &str)]) -> JobSpec {
        JobSpec {
            key: "c/www/prod/web".parse().unwrap(),
            instances: 3,
            service: true,
            max_task_failures: 1,
            production: false,
            tier: Tier::Preemptible,
            priority: 0,
            constraints: constraints
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            resources: ResourceVec {
                cpu: 1.0,
                ram: 1 << 30,
                disk: 1 << 30,
            },
            port_names: vec!["http".into()],
        }
    }

    fn host(name: &str, attrs: &[(&str, &str)]) -> Host {
        let mut h = Host::new(name);
        h.alive = true;
        h.resources = ResourceVec {
            cpu: 4.0,
            ram: 8 << 30,
            disk: 100 << 30,
        };
        h.ports = PortRange {
            first: 31000,
            last: 31010,
        };
        h.attributes = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        h
    }

    /// Put a task of `spec` on `h` as placement would.
    fn put(spec: &JobSpec, h: &mut Host, n: u32) {
        let p = place(spec, std::iter::once(&*h)).unwrap();
        let job: JobKey = spec.key.clone();
        let t = Task {
            id: format!("t{n}-{}", h.name),
            job: std::sync::Arc::new(job),
            config_id: 1,
            instance: n,
            state: crate::api::ScheduleStatus::Assigned,
            host: Some(h.name.clone()),
            ports: p.ports.into(),
            ancestor: None,
            failure_count: 0,
            flap_streak: 0,
            throttled_until: None,
            events: vec![],
            last_seq: None,
            assigned_epoch: 0,
            pending_reason: None,
            placement_retry: None,
            condition: None,
            kill: None,
        };
        h.attach(&t, &spec.resources);
    }

    #[test]
    fn picks_a_host_and_distinct_ports() {
        let s = spec(&[]);
        let mut h = host("h1", &[]);
        let p = place(&s, std::iter::once(&h)).unwrap();
        assert_eq!(p.host, "h1");
        assert_eq!(p.ports.get("http"), Some(&31000));
        put(&s, &mut h, 0);
        let p = place(&s, std::iter::once(&h)).unwrap();
        assert_eq!(p.ports.get("http"), Some(&31001));
    }

    #[test]
    fn each_resource_shortage_is_named() {
        let s = spec(&[]);
        for (what, mut h) in [
            ("cpu", host("h", &[])),
            ("ram", host("h", &[])),
            ("disk", host("h", &[])),
            ("ports", host("h", &[])),
        ] {
            match what {
                "cpu" => h.resources.cpu = 0.5,
                "ram" => h.resources.ram = 1,
                "disk" => h.resources.disk = 1,
                _ => h.ports = PortRange { first: 0, last: 0 },
            }
            let e = place(&s, std::iter::once(&h)).unwrap_err();
            assert_eq!(e, format!("Insufficient resources: {what} (1 host)"));
        }
    }

    #[test]
    fn used_resources_count_against_the_host() {
        let s = spec(&[]);
        let mut h = host("h", &[]);
        for n in 0..4 {
            put(&s, &mut h, n);
        }
        let e = place(&s, std::iter::once(&h)).unwrap_err();
        assert!(e.contains("Insufficient resources: cpu"), "{e}");
    }

    #[test]
    fn value_constraints_any_of_and_negation() {
        let s = spec(&[("rack", "r1,r2")]);
        assert!(place(&s, std::iter::once(&host("h", &[("rack", "r2")]))).is_ok());
        let e = place(&s, std::iter::once(&host("h", &[("rack", "r3")]))).unwrap_err();
        assert!(e.starts_with("Constraint not satisfied: rack"), "{e}");
        let e = place(&s, std::iter::once(&host("h", &[]))).unwrap_err();
        assert!(e.starts_with("Constraint not satisfied: rack"), "{e}");
        let s = spec(&[("rack", "!r1")]);
        assert!(place(&s, std::iter::once(&host("h", &[("rack", "r1")]))).is_err());
        assert!(place(&s, std::iter::once(&host("h", &[("rack", "r2")]))).is_ok());
    }

    #[test]
    fn limit_constraint_caps_tasks_per_value_and_vetoes_hosts_without_it() {
        let s = spec(&[("rack", "limit:1")]);
        let mut a = host("a", &[("rack", "r1")]);
        let b = host("b", &[("rack", "r1")]);
        let c = host("c", &[]);
        put(&s, &mut a, 0);
        let hosts = [a, b, c];
        let e = place(&s, hosts.iter()).unwrap_err();
        assert!(
            e.contains("Constraint not satisfied: rack (3 hosts)"),
            "{e}"
        );
        let d = host("d", &[("rack", "r2")]);
        let hosts = [hosts[0].clone(), hosts[1].clone(), d];
        assert_eq!(place(&s, hosts.iter()).unwrap().host, "d");
    }

    #[test]
    fn host_limit_uses_the_host_name() {
        let s = spec(&[("host", "limit:1")]);
        let mut a = host("a", &[]);
        put(&s, &mut a, 0);
        let b = host("b", &[]);
        assert_eq!(place(&s, [a, b].iter()).unwrap().host, "b");
    }

    #[test]
    fn dedicated_hosts_take_only_matching_jobs() {
        let ded = host("d", &[("dedicated", "www/web")]);
        let e = place(&spec(&[]), std::iter::once(&ded)).unwrap_err();
        assert!(e.starts_with("Host is dedicated"), "{e}");
        assert!(place(&spec(&[("dedicated", "www/web")]), std::iter::once(&ded)).is_ok());
        let other = host("o", &[]);
        let e = place(&spec(&[("dedicated", "www/web")]), std::iter::once(&other)).unwrap_err();
        assert!(e.starts_with("Constraint not satisfied: dedicated"), "{e}");
    }

    #[test]
    fn draining_drained_and_dead_hosts_are_vetoed() {
        let s = spec(&[]);
        let mut h = host("h", &[]);
        h.mode = HostMode::Draining;
        let mut g = host("g", &[]);
        g.mode = HostMode::Drained;
        let e = place(&s, [h, g].iter()).unwrap_err();
        assert!(e.starts_with("Host in maintenance"), "{e}");
        let mut dead = host("x", &[]);
        dead.alive = false;
        assert_eq!(
            place(&s, std::iter::once(&dead)).unwrap_err(),
            NO_LIVE_AGENT
        );
        assert_eq!(place(&s, std::iter::empty()).unwrap_err(), NO_LIVE_AGENT);
    }

    #[test]
    fn instances_spread_across_hosts() {
        let s = spec(&[]);
        let mut hosts = [host("a", &[]), host("b", &[])];
        let mut used = Vec::new();
        for n in 0..3 {
            let p = place(&s, hosts.iter()).unwrap();
            used.push(p.host.clone());
            let h = hosts.iter_mut().find(|h| h.name == p.host).unwrap();
            put(&s, h, n);
        }
        assert!(used.contains(&"a".to_owned()) && used.contains(&"b".to_owned()));
    }
}
