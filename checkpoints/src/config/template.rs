//! Templates in cmdlines and shell health commands, and their binding.
//!
//! The executor binds exactly five names (whitespace inside the braces is tolerated):
//!
//! | template                     | bound to                                            |
//! |------------------------------|-----------------------------------------------------|
//! | `{{thermos.ports[NAME]}}`    | the port named NAME (following `announce.portmap`)  |
//! | `{{thermos.task_id}}`        | the task id                                         |
//! | `{{thermos.user}}`           | the user the processes run as                       |
//! | `{{mesos.instance}}`         | the instance number                                 |
//! | `{{mesos.hostname}}`         | the agent's hostname                                |
//!
//! Anything else between `{{` and `}}`, or a `{{` that is never closed, cannot be bound and is an
//! error: binding never leaves literal `{{...}}` text behind.
//!
//! Port aliases: `announce.portmap` maps an alias to another port name or to a fixed port number.
//! To bind `{{thermos.ports[a]}}` we walk the chain `a -> b -> ...`; the first name on it that
//! was given a port wins, else the fixed number the chain ends in. [`required_ports`] reports the
//! name the chain ends in, which is the port the executor must provide.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::{ConfigErrors, ConfigProblem, HealthChecker, TaskConfig};

/// A name a template refers to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TemplateRef {
    /// `thermos.ports[NAME]`
    Port(String),
    /// `thermos.task_id`
    TaskId,
    /// `thermos.user`
    User,
    /// `mesos.instance`
    Instance,
    /// `mesos.hostname`
    Hostname,
}

impl fmt::Display for TemplateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateRef::Port(name) => write!(f, "{{{{thermos.ports[{name}]}}}}"),
            TemplateRef::TaskId => f.write_str("{{thermos.task_id}}"),
            TemplateRef::User => f.write_str("{{thermos.user}}"),
            TemplateRef::Instance => f.write_str("{{mesos.instance}}"),
            TemplateRef::Hostname => f.write_str("{{mesos.hostname}}"),
        }
    }
}

/// A piece of a parsed template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Ref(TemplateRef),
}

/// Why a template cannot be bound, found while parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed '{{{{' at byte {offset}")]
    Unclosed { offset: usize },
    #[error(
        "cannot bind {raw}: unknown name {name:?} (known: thermos.ports[NAME], thermos.task_id, \
         thermos.user, mesos.instance, mesos.hostname)"
    )]
    UnknownName { raw: String, name: String },
    #[error("cannot bind {raw}: invalid port name {name:?} (letters, digits, '_', '-', '.')")]
    BadPortName { raw: String, name: String },
}

/// A template string split into text and references, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub pieces: Vec<Piece<'a>>,
    pub errors: Vec<TemplateError>,
}

impl Parsed<'_> {
    /// The references, in order of appearance.
    pub fn refs(&self) -> impl Iterator<Item = &TemplateRef> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Ref(r) => Some(r),
            Piece::Text(_) => None,
        })
    }
}

/// Whether `name` may name a port: letters, digits, `_`, `-` and `.`, not starting with `-` or
/// `.`.
pub fn is_valid_port_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Shorten the raw text of a template for a message.
fn shown(raw: &str) -> String {
    const MAX: usize = 60;
    if raw.chars().count() <= MAX {
        raw.to_owned()
    } else {
        let cut: String = raw.chars().take(MAX).collect();
        format!("{cut}...")
    }
}

/// Split `text` into literal text and template references.
pub fn parse(text: &str) -> Parsed<'_> {
    let mut pieces = Vec::new();
    let mut errors = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        let after_open = &rest[open + 2..];
        let Some(close) = after_open.find("}}") else {
            errors.push(TemplateError::Unclosed {
                offset: offset + open,
            });
            rest = "";
            break;
        };
        let inner = &after_open[..close];
        let raw = &rest[open..open + 2 + close + 2];
        if inner.contains("{{") {
            // `{{ a {{b}}`: the first `{{` is never closed.
            errors.push(TemplateError::Unclosed {
                offset: offset + open,
            });
        } else {
            match classify(inner.trim()) {
                Ok(r) => pieces.push(Piece::Ref(r)),
                Err(Bad::Name) => errors.push(TemplateError::UnknownName {
                    raw: shown(raw),
                    name: inner.trim().to_owned(),
                }),
                Err(Bad::Port(name)) => errors.push(TemplateError::BadPortName {
                    raw: shown(raw),
                    name,
                }),
            }
        }
        let consumed = open + 2 + close + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Parsed { pieces, errors }
}

enum Bad {
    Name,
    Port(String),
}

fn classify(name: &str) -> Result<TemplateRef, Bad> {
    match name {
        "thermos.task_id" => return Ok(TemplateRef::TaskId),
        "thermos.user" => return Ok(TemplateRef::User),
        "mesos.instance" => return Ok(TemplateRef::Instance),
        "mesos.hostname" => return Ok(TemplateRef::Hostname),
        _ => {}
    }
    let Some(port) = name
        .strip_prefix("thermos.ports[")
        .and_then(|s| s.strip_suffix(']'))
    else {
        return Err(Bad::Name);
    };
    let port = port.trim();
    if is_valid_port_name(port) {
        Ok(TemplateRef::Port(port.to_owned()))
    } else {
        Err(Bad::Port(port.to_owned()))
    }
}

/// Where a chain of `announce.portmap` aliases leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortChain {
    /// The names visited, starting with the one asked for.
    pub names: Vec<String>,
    /// The fixed port the chain ends in, if it ends in a number.
    pub fixed: Option<u16>,
}

impl PortChain {
    /// The last name on the chain: the port the executor must provide when nothing is fixed.
    pub fn last(&self) -> &str {
        self.names.last().map_or("", String::as_str)
    }
}

/// A portmap value that is a fixed port number rather than a name.
pub fn fixed_port(target: &str) -> Option<u16> {
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    target.parse::<u16>().ok().filter(|p| *p != 0)
}

/// Follow `portmap` aliases from `name`. On a cycle, returns the cycle's names (the first name
/// repeated at the end).
pub fn follow_portmap(
    portmap: &BTreeMap<String, String>,
    name: &str,
) -> Result<PortChain, Vec<String>> {
    let mut names = vec![name.to_owned()];
    let mut current = name;
    while let Some(target) = portmap.get(current) {
        if let Some(port) = fixed_port(target) {
            return Ok(PortChain {
                names,
                fixed: Some(port),
            });
        }
        if let Some(start) = names.iter().position(|n| n == target) {
            let mut cycle = names.split_off(start);
            cycle.push(target.clone());
            return Err(cycle);
        }
        names.push(target.clone());
        current = target;
    }
    Ok(PortChain { names, fixed: None })
}

/// The texts of a task that hold templates, each with its field path.
fn template_fields(task: &TaskConfig) -> Vec<(String, &str)> {
    let prefix = task.job.kind.task_prefix();
    let mut out: Vec<(String, &str)> = task
        .processes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                format!("{prefix}processes[{i}].cmdline"),
                p.cmdline.as_str(),
            )
        })
        .collect();
    if let Some(hc) = &task.job.health_check
        && let HealthChecker::Shell { shell_command } = &hc.checker
    {
        out.push((SHELL_COMMAND_PATH.to_owned(), shell_command.as_str()));
    }
    out
}

/// Field path of the shell health check command.
pub const SHELL_COMMAND_PATH: &str = "health_check_config.health_checker.shell.shell_command";

/// Port names a task needs the executor to provide: those its templates name (after following
/// `announce.portmap` aliases, and leaving out ports the portmap fixes to a number), plus the
/// lifecycle port and `health` when the lifecycle endpoints or an HTTP health check are on.
pub fn required_ports(task: &TaskConfig) -> BTreeSet<String> {
    let mut wanted: Vec<String> = Vec::new();
    for (_, text) in template_fields(task) {
        for r in parse(text).refs() {
            if let TemplateRef::Port(name) = r {
                wanted.push(name.clone());
            }
        }
    }
    if let Some(lc) = &task.job.lifecycle {
        wanted.push(lc.port.clone());
    }
    if let Some(hc) = &task.job.health_check
        && matches!(hc.checker, HealthChecker::Http { .. })
    {
        wanted.push(HEALTH_PORT.to_owned());
    }
    let mut out = BTreeSet::new();
    for name in wanted {
        match follow_portmap(&task.job.portmap, &name) {
            Ok(chain) if chain.fixed.is_some() => {}
            Ok(chain) => {
                out.insert(chain.last().to_owned());
            }
            // Validation reports cycles; ask for the name itself.
            Err(_) => {
                out.insert(name);
            }
        }
    }
    out
}

/// The port HTTP health checks and (by default) the lifecycle endpoints use.
pub const HEALTH_PORT: &str = "health";

/// Values for the templates, known once the executor has chosen them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bindings {
    pub task_id: String,
    pub user: String,
    /// The instance number, when the agent gave one (or the config holds one).
    pub instance: Option<u32>,
    pub hostname: String,
    /// Port name -> port number.
    pub ports: BTreeMap<String, u16>,
}

/// Bind every template of `text`, or say why each unbindable one cannot be bound.
pub fn bind_text(
    text: &str,
    portmap: &BTreeMap<String, String>,
    b: &Bindings,
) -> Result<String, Vec<String>> {
    let parsed = parse(text);
    let mut errors: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
    let mut out = String::with_capacity(text.len());
    for piece in &parsed.pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Ref(r) => match value_of(r, portmap, b) {
                Ok(v) => out.push_str(&v),
                Err(why) => errors.push(format!("cannot bind {r}: {why}")),
            },
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn non_empty(value: &str, what: &str) -> Result<String, String> {
    if value.is_empty() {
        Err(format!("no {what} given"))
    } else {
        Ok(value.to_owned())
    }
}

fn value_of(
    r: &TemplateRef,
    portmap: &BTreeMap<String, String>,
    b: &Bindings,
) -> Result<String, String> {
    match r {
        TemplateRef::TaskId => non_empty(&b.task_id, "task id"),
        TemplateRef::User => non_empty(&b.user, "user"),
        TemplateRef::Hostname => non_empty(&b.hostname, "hostname"),
        TemplateRef::Instance => b
            .instance
            .map(|i| i.to_string())
            .ok_or_else(|| "no instance number given".to_owned()),
        TemplateRef::Port(name) => {
            let chain = follow_portmap(portmap, name)
                .map_err(|cycle| format!("announce.portmap alias cycle: {}", cycle.join(" -> ")))?;
            if let Some(port) = chain.names.iter().find_map(|n| b.ports.get(n)) {
                return Ok(port.to_string());
            }
            if let Some(port) = chain.fixed {
                return Ok(port.to_string());
            }
            if chain.names.len() > 1 {
                Err(format!(
                    "no port given for {name:?} (followed announce.portmap: {})",
                    chain.names.join(" -> ")
                ))
            } else {
                Err(format!("no port {name:?} given"))
            }
        }
    }
}

/// The task with every cmdline (and the shell health command) bound. Reports every template
/// that could not be bound, with its field path; never leaves `{{...}}` text behind.
pub fn bind(task: &TaskConfig, b: &Bindings) -> Result<TaskConfig, ConfigErrors> {
    let prefix = task.job.kind.task_prefix();
    let mut problems = Vec::new();
    let mut bound = task.clone();
    let mut record = |path: String, errors: Vec<String>| {
        for message in errors {
            problems.push(ConfigProblem {
                path: path.clone(),
                message,
            });
        }
    };
    for (i, p) in bound.processes.iter_mut().enumerate() {
        match bind_text(&p.cmdline, &task.job.portmap, b) {
            Ok(text) => p.cmdline = text,
            Err(errors) => record(format!("{prefix}processes[{i}].cmdline"), errors),
        }
    }
    if let Some(hc) = &mut bound.job.health_check
        && let HealthChecker::Shell { shell_command } = &mut hc.checker
    {
        match bind_text(shell_command, &task.job.portmap, b) {
            Ok(text) => *shell_command = text,
            Err(errors) => record(SHELL_COMMAND_PATH.to_owned(), errors),
        }
    }
    if problems.is_empty() {
        Ok(bound)
    } else {
        Err(ConfigErrors { problems })
    }
}

/// Template problems of one field, found without any bindings (validation time).
pub(super) fn check_text(path: &str, text: &str) -> Vec<ConfigProblem> {
    parse(text)
        .errors
        .into_iter()
        .map(|e| ConfigProblem {
            path: path.to_owned(),
            message: e.to_string(),
        })
        .collect()
}

/// Every port name the templates of a task refer to, as written (before aliases).
pub(super) fn referenced_ports(task: &TaskConfig) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, text) in template_fields(task) {
        for r in parse(text).refs() {
            if let TemplateRef::Port(name) = r {
                out.insert(name.clone());
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::parse as parse_config;

    fn bindings() -> Bindings {
        Bindings {
            task_id: "t-1".into(),
            user: "alice".into(),
            instance: Some(3),
            hostname: "host7".into(),
            ports: BTreeMap::from([("http".to_owned(), 8080), ("health".to_owned(), 9090)]),
        }
    }

    fn no_portmap() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn binds_every_known_name() {
        let out = bind_text(
            "{{thermos.task_id}} {{thermos.user}} {{mesos.instance}} {{mesos.hostname}} \
             {{thermos.ports[http]}}",
            &no_portmap(),
            &bindings(),
        )
        .unwrap();
        assert_eq!(out, "t-1 alice 3 host7 8080");
    }

    #[test]
    fn tolerates_whitespace_inside_braces() {
        let out = bind_text(
            "a{{ thermos.task_id }}b{{thermos.ports[ http ]}}c",
            &no_portmap(),
            &bindings(),
        )
        .unwrap();
        assert_eq!(out, "at-1b8080c");
    }

    #[test]
    fn text_without_templates_is_unchanged() {
        let text = "echo '{ not a template }' } }} {";
        assert_eq!(bind_text(text, &no_portmap(), &bindings()).unwrap(), text);
    }

    #[test]
    fn unknown_names_are_reported_not_left_as_text() {
        let errors =
            bind_text("{{thermos.foo}} and {{bar}}", &no_portmap(), &bindings()).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].starts_with("cannot bind {{thermos.foo}}: unknown name \"thermos.foo\""));
        assert!(errors[1].starts_with("cannot bind {{bar}}: unknown name \"bar\""));
    }

    #[test]
    fn unclosed_braces_are_reported_with_their_offset() {
        let errors = bind_text("echo {{thermos.task_id", &no_portmap(), &bindings()).unwrap_err();
        assert_eq!(errors, vec!["unclosed '{{' at byte 5".to_owned()]);
        let errors = bind_text("ok {{ a {{mesos.hostname}}", &no_portmap(), &bindings());
        assert_eq!(
            errors.unwrap_err(),
            vec!["unclosed '{{' at byte 3".to_owned()]
        );
    }

    #[test]
    fn invalid_port_names_are_reported() {
        let parsed = parse("{{thermos.ports[a b]}} {{thermos.ports[]}}");
        assert_eq!(parsed.errors.len(), 2);
        assert_eq!(
            parsed.errors[0].to_string(),
            "cannot bind {{thermos.ports[a b]}}: invalid port name \"a b\" (letters, digits, '_', \
             '-', '.')"
        );
    }

    #[test]
    fn missing_values_are_reported_per_template() {
        let b = Bindings {
            instance: None,
            ports: BTreeMap::new(),
            ..bindings()
        };
        let errors = bind_text(
            "{{mesos.instance}} {{thermos.ports[http]}}",
            &no_portmap(),
            &b,
        )
        .unwrap_err();
        assert_eq!(
            errors,
            vec![
                "cannot bind {{mesos.instance}}: no instance number given".to_owned(),
                "cannot bind {{thermos.ports[http]}}: no port \"http\" given".to_owned(),
            ]
        );
    }

    #[test]
    fn ports_follow_portmap_aliases() {
        let portmap = BTreeMap::from([
            ("aurora".to_owned(), "web".to_owned()),
            ("web".to_owned(), "http".to_owned()),
            ("admin".to_owned(), "8500".to_owned()),
        ]);
        let out = bind_text(
            "{{thermos.ports[aurora]}} {{thermos.ports[admin]}}",
            &portmap,
            &bindings(),
        )
        .unwrap();
        assert_eq!(out, "8080 8500");
    }

    #[test]
    fn a_port_given_for_the_alias_itself_wins() {
        let portmap = BTreeMap::from([("aurora".to_owned(), "http".to_owned())]);
        let mut b = bindings();
        b.ports.insert("aurora".into(), 1234);
        assert_eq!(
            bind_text("{{thermos.ports[aurora]}}", &portmap, &b).unwrap(),
            "1234"
        );
    }

    #[test]
    fn portmap_cycles_are_detected() {
        let portmap = BTreeMap::from([
            ("a".to_owned(), "b".to_owned()),
            ("b".to_owned(), "a".to_owned()),
        ]);
        assert_eq!(
            follow_portmap(&portmap, "a").unwrap_err(),
            vec!["a".to_owned(), "b".to_owned(), "a".to_owned()]
        );
    }

    #[test]
    fn required_ports_resolve_aliases_and_skip_fixed_ones() {
        let task = parse_config(
            r#"{"task": {"name": "t", "processes": [
                {"name": "a", "cmdline": "serve {{thermos.ports[aurora]}} {{thermos.ports[admin]}}"},
                {"name": "b", "cmdline": "x {{thermos.ports[extra]}} {{thermos.task_id}}"}]},
               "announce": {"portmap": {"aurora": "http", "admin": 8500}}}"#,
        )
        .unwrap();
        let want: BTreeSet<String> = ["extra", "http"].iter().map(|s| s.to_string()).collect();
        assert_eq!(required_ports(&task), want);
    }

    #[test]
    fn required_ports_include_health_when_lifecycle_is_on() {
        let task = parse_config(
            r#"{"task": {"name": "t", "processes": [
                {"name": "a", "cmdline": "serve --admin={{thermos.ports[health]}}"}]}}"#,
        )
        .unwrap();
        assert!(task.job.lifecycle.is_some());
        assert!(required_ports(&task).contains("health"));
    }

    #[test]
    fn required_ports_include_shell_health_command_ports() {
        let task = parse_config(
            r#"{"task": {"name": "t", "processes": [{"name": "a", "cmdline": "true"}]},
                "health_check_config": {"health_checker":
                    {"shell": {"shell_command": "curl localhost:{{thermos.ports[probe]}}"}}}}"#,
        )
        .unwrap();
        let want: BTreeSet<String> = ["probe".to_owned()].into();
        assert_eq!(required_ports(&task), want);
    }

    #[test]
    fn bind_fills_cmdlines_and_shell_command() {
        let task = parse_config(
            r#"{"task": {"name": "t", "processes": [
                {"name": "a", "cmdline": "echo {{mesos.instance}}"}]},
                "health_check_config": {"health_checker":
                    {"shell": {"shell_command": "test -e /tmp/{{thermos.task_id}}"}}}}"#,
        )
        .unwrap();
        let bound = bind(&task, &bindings()).unwrap();
        assert_eq!(bound.processes[0].cmdline, "echo 3");
        let Some(hc) = &bound.job.health_check else {
            panic!("health check kept")
        };
        assert_eq!(
            hc.checker,
            HealthChecker::Shell {
                shell_command: "test -e /tmp/t-1".into()
            }
        );
    }

    #[test]
    fn bind_reports_every_unbound_template_with_its_path() {
        let task = parse_config(
            r#"{"processes": [
                {"name": "a", "cmdline": "echo {{mesos.instance}}"},
                {"name": "b", "cmdline": "echo {{thermos.ports[nope]}} {{thermos.task_id}}"}]}"#,
        )
        .unwrap();
        let b = Bindings {
            instance: None,
            ..bindings()
        };
        let errors = bind(&task, &b).unwrap_err();
        assert_eq!(errors.problems.len(), 2);
        assert!(errors.has(
            "processes[0].cmdline",
            "cannot bind {{mesos.instance}}: no instance number given"
        ));
        assert!(errors.has(
            "processes[1].cmdline",
            "cannot bind {{thermos.ports[nope]}}: no port \"nope\" given"
        ));
    }
}
