//! Pystachio's object model and template semantics, in plain Rust (no interpreter types).
//!
//! An [`Obj`] is an immutable Pystachio value: a simple value (`String`, `Integer`, `Float`,
//! `Boolean`, an `Enum`), a `Struct`, a `List` or a `Map`, plus the bindings `.bind()` attached
//! to it. Templates (`{{name}}`, `{{profile.dataset}}`, `{{processes[0].name}}`,
//! `{{thermos.ports[http]}}`) are resolved the way Pystachio resolves them:
//!
//! - a value is resolved in a chain of scopes, nearest first: a struct's own attributes, then its
//!   own bindings (the latest `.bind()` first), then the scopes of the struct that contains it,
//!   and so on up to the job. Bindings flow downward only;
//! - a found value is itself resolved in the scopes it was found in (a bound `Profile` resolves
//!   `{{environment}}` among its own attributes), and the text it yields is scanned again, up to
//!   100 times (Pystachio's limit), so `{{metavar{{number}}}}` works;
//! - typed fields (`Integer`, `Float`, `Boolean`, `Enum`) may hold a template; they are
//!   converted once the template is fully resolved;
//! - what cannot be resolved stays as `{{name}}` text and is reported by [`interpolate`].
//!
//! Resolution is bounded: a chain of templates that leads back to itself fails with
//! [`TemplateError::Cycle`] or [`TemplateError::TooDeep`], never a hang or a stack overflow.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map as JsonMap, Number, Value as Json};

/// Pystachio's limit on substitution rounds for one string.
pub const MAX_ITERATIONS: usize = 100;
/// How deeply found values may themselves need resolving before we call it a loop.
pub const MAX_DEPTH: usize = 64;

/// A Pystachio type.
#[derive(Debug, Clone)]
pub enum Ty {
    String,
    Integer,
    Float,
    Boolean,
    Enum(Arc<EnumTy>),
    List(Arc<Ty>),
    Map(Arc<Ty>, Arc<Ty>),
    Struct(Arc<StructTy>),
    Choice(Arc<ChoiceTy>),
}

#[derive(Debug)]
pub struct EnumTy {
    pub name: String,
    pub values: Vec<String>,
}

#[derive(Debug)]
pub struct ChoiceTy {
    pub name: String,
    pub alternatives: Vec<Ty>,
}

#[derive(Debug)]
pub struct StructTy {
    pub name: String,
    pub fields: Vec<FieldSig>,
}

/// One attribute of a struct: `Required(T)`, `Default(T, v)` or a bare `T`.
#[derive(Debug, Clone)]
pub struct FieldSig {
    pub name: String,
    pub ty: Ty,
    pub required: bool,
    pub default: Option<Obj>,
}

impl StructTy {
    pub fn index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

impl Ty {
    /// The name Pystachio gives the type (`String`, `ProcessList`, `StringStringMap`, ...).
    pub fn name(&self) -> String {
        match self {
            Ty::String => "String".into(),
            Ty::Integer => "Integer".into(),
            Ty::Float => "Float".into(),
            Ty::Boolean => "Boolean".into(),
            Ty::Enum(e) => e.name.clone(),
            Ty::List(t) => format!("{}List", t.name()),
            Ty::Map(k, v) => format!("{}{}Map", k.name(), v.name()),
            Ty::Struct(s) => s.name.clone(),
            Ty::Choice(c) => c.name.clone(),
        }
    }

    /// Whether two types are the same type.
    pub fn same(&self, other: &Ty) -> bool {
        match (self, other) {
            (Ty::String, Ty::String)
            | (Ty::Integer, Ty::Integer)
            | (Ty::Float, Ty::Float)
            | (Ty::Boolean, Ty::Boolean) => true,
            (Ty::Enum(a), Ty::Enum(b)) => a.name == b.name && a.values == b.values,
            (Ty::List(a), Ty::List(b)) => a.same(b),
            (Ty::Map(ak, av), Ty::Map(bk, bv)) => ak.same(bk) && av.same(bv),
            (Ty::Struct(a), Ty::Struct(b)) => Arc::ptr_eq(a, b),
            (Ty::Choice(a), Ty::Choice(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// A simple value as written: templates may hide in a string even for typed fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// The shape of an object.
#[derive(Debug)]
pub enum Kind {
    Simple {
        ty: Ty,
        raw: Raw,
    },
    Struct {
        ty: Arc<StructTy>,
        fields: Vec<Option<Obj>>,
    },
    List {
        elem: Ty,
        items: Vec<Obj>,
    },
    Map {
        key: Ty,
        value: Ty,
        items: Vec<(Obj, Obj)>,
    },
}

/// An immutable Pystachio object with its bindings (nearest first).
#[derive(Debug, Clone)]
pub struct Obj {
    pub kind: Arc<Kind>,
    pub binds: Arc<Vec<Arc<Env>>>,
}

/// A component of a template address: `.name` or `[index]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Comp {
    Deref(String),
    Index(String),
}

/// A parsed template address, e.g. `thermos.ports[http]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ref(pub Vec<Comp>);

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            match c {
                Comp::Deref(n) if i == 0 => write!(f, "{n}")?,
                Comp::Deref(n) => write!(f, ".{n}")?,
                Comp::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

impl Ref {
    /// Parse an address the way Pystachio does: a name, then `.name` and `[index]` parts.
    pub fn parse(address: &str) -> Option<Ref> {
        let a = address.trim();
        let mut comps = Vec::new();
        let bytes = a.as_bytes();
        let mut i = 0;
        let ident = |s: &str| {
            let mut cs = s.chars();
            matches!(cs.next(), Some(c) if c.is_alphabetic() || c == '_')
                && s.chars().all(|c| c.is_alphanumeric() || c == '_')
        };
        // The first component needs no leading dot.
        if !a.starts_with('.') && !a.starts_with('[') {
            let end = a.find(['.', '[']).unwrap_or(a.len());
            let name = &a[..end];
            if !ident(name) {
                return None;
            }
            comps.push(Comp::Deref(name.to_owned()));
            i = end;
        }
        while i < bytes.len() {
            match bytes[i] {
                b'.' => {
                    let rest = &a[i + 1..];
                    let end = rest.find(['.', '[']).unwrap_or(rest.len());
                    let name = &rest[..end];
                    if !ident(name) {
                        return None;
                    }
                    comps.push(Comp::Deref(name.to_owned()));
                    i += 1 + end;
                }
                b'[' => {
                    let rest = &a[i + 1..];
                    let end = rest.find(']')?;
                    let idx = &rest[..end];
                    if idx.is_empty()
                        || !idx
                            .chars()
                            .all(|c| c.is_alphanumeric() || "_-./".contains(c))
                    {
                        return None;
                    }
                    comps.push(Comp::Index(idx.to_owned()));
                    i += end + 2;
                }
                _ => return None,
            }
        }
        if comps.is_empty() {
            None
        } else {
            Some(Ref(comps))
        }
    }

    /// The first name, e.g. `thermos` for `thermos.ports[http]`.
    pub fn head(&self) -> &str {
        match self.0.first() {
            Some(Comp::Deref(n)) | Some(Comp::Index(n)) => n,
            None => "",
        }
    }
}

/// A set of bindings from `.bind(...)`, flattened to addresses.
#[derive(Debug, Default)]
pub struct Env {
    pub entries: Vec<(Ref, EnvVal)>,
}

/// A bound value: text (numbers are bound as their text, as in Pystachio) or an object.
#[derive(Debug, Clone)]
pub enum EnvVal {
    Text(String),
    Obj(Obj),
}

/// The scopes a value is resolved in, nearest first.
pub type Chain = Option<Arc<Node>>;

#[derive(Debug)]
pub struct Node {
    frame: Frame,
    next: Chain,
}

#[derive(Debug)]
enum Frame {
    /// A struct's own attributes (and `self.`).
    Fields(Obj),
    Bindings(Arc<Env>),
}

fn push(chain: &Chain, frame: Frame) -> Chain {
    Some(Arc::new(Node {
        frame,
        next: chain.clone(),
    }))
}

/// The chain for an object's children: its bindings on top of its parent's scopes, and for a
/// struct its own attributes on top of those.
fn child_chain(obj: &Obj, parent: &Chain) -> Chain {
    let mut c = parent.clone();
    for env in obj.binds.iter().rev() {
        c = push(&c, Frame::Bindings(env.clone()));
    }
    if matches!(*obj.kind, Kind::Struct { .. }) {
        c = push(&c, Frame::Fields(obj.clone()));
    }
    c
}

/// Why a template could not be resolved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "template {{{{{var}}}}} keeps expanding: after {MAX_ITERATIONS} substitutions it still \
         leads back to itself (last text: {text:?}); make sure no variable's value refers back to \
         itself"
    )]
    Cycle { var: String, text: String },
    #[error(
        "template {{{{{var}}}}} leads back to itself through other templates (more than \
         {MAX_DEPTH} levels deep); make sure no variable's value refers back to itself"
    )]
    TooDeep { var: String },
    #[error("{what}")]
    Coerce { what: String },
    #[error(
        "{{{{{text}}}}} is not a valid template variable; write {{{{&{text}}}}} to keep it as literal text"
    )]
    BadRef { text: String },
    #[error("evaluation took longer than the time limit")]
    Timeout,
}

/// Resolution state: recursion depth and the deadline.
#[derive(Debug)]
pub struct Ctx {
    depth: usize,
    steps: u64,
    deadline: Option<Instant>,
    /// The variable being resolved at the outermost level, for messages.
    var: Vec<String>,
}

impl Ctx {
    pub fn new(deadline: Option<Instant>) -> Ctx {
        Ctx {
            depth: 0,
            steps: 0,
            deadline,
            var: Vec::new(),
        }
    }

    fn tick(&mut self) -> Result<(), TemplateError> {
        self.steps += 1;
        if self.steps.is_multiple_of(256)
            && let Some(d) = self.deadline
            && Instant::now() > d
        {
            return Err(TemplateError::Timeout);
        }
        Ok(())
    }
}

/// A piece of a string split on `{{...}}`.
enum Part<'a> {
    Text(&'a str),
    Ref(Ref),
    /// `{{&name}}`: kept literally as `{{name}}`.
    Alias(&'a str),
}

/// Split like Pystachio's mustache regex `{{(&)?([^{}]+?)&?}}`.
fn split(s: &str) -> Result<Vec<Part<'_>>, TemplateError> {
    let mut parts = Vec::new();
    let mut last = 0;
    let mut i = 0;
    let b = s.as_bytes();
    while i + 1 < b.len() {
        if b[i] == b'{' && b[i + 1] == b'{' {
            // find the closing braces with no brace in between
            let start = i + 2;
            let mut j = start;
            while j < b.len() && b[j] != b'{' && b[j] != b'}' {
                j += 1;
            }
            if j > start && j + 1 < b.len() && b[j] == b'}' && b[j + 1] == b'}' {
                if last < i {
                    parts.push(Part::Text(&s[last..i]));
                }
                let inner = &s[start..j];
                if let Some(alias) = inner.strip_prefix('&') {
                    parts.push(Part::Alias(alias.strip_suffix('&').unwrap_or(alias)));
                } else {
                    let r = Ref::parse(inner).ok_or_else(|| TemplateError::BadRef {
                        text: inner.to_owned(),
                    })?;
                    parts.push(Part::Ref(r));
                }
                i = j + 2;
                last = i;
                continue;
            }
        }
        i += 1;
    }
    if last < s.len() {
        parts.push(Part::Text(&s[last..]));
    }
    Ok(parts)
}

/// What a lookup found: text, or an object and the scopes to resolve it in.
enum Found {
    Text(String),
    Obj(Obj, Chain),
}

fn find(chain: &Chain, r: &Ref) -> Option<Found> {
    let mut node = chain.as_ref();
    while let Some(n) = node {
        match &n.frame {
            Frame::Fields(obj) => {
                let comps: &[Comp] = match r.0.first() {
                    Some(Comp::Deref(s)) if s == "self" && r.0.len() > 1 => &r.0[1..],
                    _ => &r.0,
                };
                // Pystachio's self scope is an Environment of the raw attribute values: a found
                // attribute resolves in its own bindings only, and leftover text is scanned again
                // in the scopes of the value being resolved.
                if let Some(f) =
                    struct_field(obj, comps).and_then(|(v, rest)| descend(v, &None, rest))
                {
                    return Some(f);
                }
            }
            Frame::Bindings(env) => {
                if let Some(f) = find_in_env(env, r) {
                    return Some(f);
                }
            }
        }
        node = n.next.as_ref();
    }
    None
}

/// The attribute `comps[0]` names in a struct, and the rest of the address.
fn struct_field<'a, 'c>(obj: &'a Obj, comps: &'c [Comp]) -> Option<(&'a Obj, &'c [Comp])> {
    let Kind::Struct { ty, fields } = &*obj.kind else {
        return None;
    };
    let Some(Comp::Deref(name)) = comps.first() else {
        return None;
    };
    let value = fields.get(ty.index(name)?)?.as_ref()?;
    Some((value, &comps[1..]))
}

/// Continue a lookup inside `obj` (found in scope `chain`).
fn descend(obj: &Obj, chain: &Chain, rest: &[Comp]) -> Option<Found> {
    if rest.is_empty() {
        return Some(Found::Obj(obj.clone(), chain.clone()));
    }
    let inner = child_chain(obj, chain);
    match &*obj.kind {
        Kind::Struct { .. } => {
            let (v, r) = struct_field(obj, rest)?;
            descend(v, &inner, r)
        }
        Kind::List { items, .. } => {
            let Comp::Index(i) = &rest[0] else {
                return None;
            };
            let item = items.get(i.parse::<usize>().ok()?)?;
            descend(item, &inner, &rest[1..])
        }
        Kind::Map { items, .. } => {
            let Comp::Index(k) = &rest[0] else {
                return None;
            };
            let (_, v) = items
                .iter()
                .find(|(key, _)| raw_text(key).as_deref() == Some(k))?;
            descend(v, &inner, &rest[1..])
        }
        Kind::Simple { .. } => None,
    }
}

fn find_in_env(env: &Env, r: &Ref) -> Option<Found> {
    for (k, v) in &env.entries {
        if k == r {
            return Some(match v {
                EnvVal::Text(t) => Found::Text(t.clone()),
                EnvVal::Obj(o) => Found::Obj(o.clone(), None),
            });
        }
    }
    // Longest prefixes first, as Pystachio does.
    let mut prefixes: Vec<&(Ref, EnvVal)> = env
        .entries
        .iter()
        .filter(|(k, _)| k.0.len() < r.0.len() && r.0.starts_with(&k.0))
        .collect();
    prefixes.sort_by_key(|(k, _)| std::cmp::Reverse(k.0.len()));
    for (k, v) in prefixes {
        if let EnvVal::Obj(o) = v
            && let Some(f) = descend(o, &None, &r.0[k.0.len()..])
        {
            return Some(f);
        }
    }
    None
}

/// The text of a simple value as written, without resolving it.
fn raw_text(obj: &Obj) -> Option<String> {
    match &*obj.kind {
        Kind::Simple { raw, .. } => Some(raw_to_text(raw)),
        _ => None,
    }
}

fn raw_to_text(raw: &Raw) -> String {
    match raw {
        Raw::Str(s) => s.clone(),
        Raw::Int(i) => i.to_string(),
        Raw::Float(f) => py_float(*f),
        Raw::Bool(true) => "True".into(),
        Raw::Bool(false) => "False".into(),
    }
}

/// Python's `str(float)`.
pub fn py_float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{f}")
    }
}

/// Resolve the templates of one string in `chain`: the text, and the variables left unbound.
pub fn resolve_str(
    s: &str,
    chain: &Chain,
    ctx: &mut Ctx,
) -> Result<(String, Vec<Ref>), TemplateError> {
    if !s.contains("{{") {
        return Ok((s.to_owned(), Vec::new()));
    }
    let mut cache: HashMap<Ref, Option<String>> = HashMap::new();
    let mut text = s.to_owned();
    let mut done = false;
    for _ in 0..MAX_ITERATIONS {
        ctx.tick()?;
        let parts = split(&text)?;
        let mut out = String::with_capacity(text.len());
        let mut any_found = false;
        for p in parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Alias(a) => {
                    out.push_str("{{&");
                    out.push_str(a);
                    out.push_str("}}");
                }
                Part::Ref(r) => {
                    let value = match cache.get(&r) {
                        Some(v) => v.clone(),
                        None => {
                            let v = lookup_text(chain, &r, ctx)?;
                            cache.insert(r.clone(), v.clone());
                            v
                        }
                    };
                    match value {
                        Some(v) => {
                            any_found = true;
                            out.push_str(&v);
                        }
                        None => {
                            out.push_str("{{");
                            out.push_str(&r.to_string());
                            out.push_str("}}");
                        }
                    }
                }
            }
        }
        text = out;
        if !any_found {
            done = true;
            break;
        }
    }
    if !done {
        let var = ctx
            .var
            .first()
            .cloned()
            .unwrap_or_else(|| first_var(s).unwrap_or_default());
        return Err(TemplateError::Cycle { var, text });
    }
    // Final pass: aliases become literal templates; collect what is unbound.
    let mut out = String::with_capacity(text.len());
    let mut unbound = Vec::new();
    for p in split(&text)? {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Alias(a) => {
                out.push_str("{{");
                out.push_str(a);
                out.push_str("}}");
            }
            Part::Ref(r) => {
                out.push_str("{{");
                out.push_str(&r.to_string());
                out.push_str("}}");
                if !unbound.contains(&r) {
                    unbound.push(r);
                }
            }
        }
    }
    Ok((out, unbound))
}

fn first_var(s: &str) -> Option<String> {
    split(s).ok()?.into_iter().find_map(|p| match p {
        Part::Ref(r) => Some(r.to_string()),
        _ => None,
    })
}

fn lookup_text(chain: &Chain, r: &Ref, ctx: &mut Ctx) -> Result<Option<String>, TemplateError> {
    match find(chain, r) {
        None => Ok(None),
        Some(Found::Text(t)) => Ok(Some(t)),
        Some(Found::Obj(o, c)) => {
            if ctx.depth >= MAX_DEPTH {
                return Err(TemplateError::TooDeep {
                    var: ctx.var.first().cloned().unwrap_or_else(|| r.to_string()),
                });
            }
            ctx.depth += 1;
            ctx.var.push(r.to_string());
            let res = render_text(&o, &c, ctx);
            ctx.var.pop();
            ctx.depth -= 1;
            res.map(Some)
        }
    }
}

/// The text an object yields inside a template (Python's `str()` of it).
fn render_text(obj: &Obj, parent: &Chain, ctx: &mut Ctx) -> Result<String, TemplateError> {
    let mut sink = Vec::new();
    let resolved = interpolate_in(obj, parent, "", ctx, &mut sink)?;
    Ok(match &*resolved.kind {
        Kind::Simple { raw, .. } => raw_to_text(raw),
        _ => to_json(&resolved).to_string(),
    })
}

/// An unbound template variable and the field it is in.
#[derive(Debug, Clone, PartialEq)]
pub struct Unbound {
    pub var: Ref,
    pub path: String,
}

/// Resolve every template in `obj` (bindings applied, scopes as Pystachio's): a new object with
/// no bindings left, and the variables that stayed unbound with their field paths.
pub fn interpolate(
    obj: &Obj,
    ctx: &mut Ctx,
) -> Result<(Obj, Vec<Unbound>), (String, TemplateError)> {
    let mut unbound = Vec::new();
    let mut path_of_error = String::new();
    match interpolate_tracked(obj, &None, "", ctx, &mut unbound, &mut path_of_error) {
        Ok(o) => Ok((o, unbound)),
        Err(e) => Err((path_of_error, e)),
    }
}

/// Resolve an object in the scopes of its parent chain (used for `struct.field()` access).
pub fn interpolate_in(
    obj: &Obj,
    parent: &Chain,
    path: &str,
    ctx: &mut Ctx,
    unbound: &mut Vec<Unbound>,
) -> Result<Obj, TemplateError> {
    let mut p = String::new();
    interpolate_tracked(obj, parent, path, ctx, unbound, &mut p)
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn interpolate_tracked(
    obj: &Obj,
    parent: &Chain,
    path: &str,
    ctx: &mut Ctx,
    unbound: &mut Vec<Unbound>,
    err_path: &mut String,
) -> Result<Obj, TemplateError> {
    let fail = |e: TemplateError, err_path: &mut String| {
        if err_path.is_empty() {
            *err_path = path.to_owned();
        }
        e
    };
    let kind = match &*obj.kind {
        Kind::Simple { ty, raw } => {
            let chain = child_chain(obj, parent);
            let raw = match raw {
                Raw::Str(s) => {
                    let (text, left) =
                        resolve_str(s, &chain, ctx).map_err(|e| fail(e, err_path))?;
                    if left.is_empty() {
                        coerce_text(ty, &text).map_err(|e| fail(e, err_path))?
                    } else {
                        for var in left {
                            unbound.push(Unbound {
                                var,
                                path: path.to_owned(),
                            });
                        }
                        Raw::Str(text)
                    }
                }
                other => coerce_raw(ty, other).map_err(|e| fail(e, err_path))?,
            };
            Kind::Simple {
                ty: ty.clone(),
                raw,
            }
        }
        Kind::Struct { ty, fields } => {
            let chain = child_chain(obj, parent);
            let mut out = Vec::with_capacity(fields.len());
            for (sig, f) in ty.fields.iter().zip(fields) {
                out.push(match f {
                    None => None,
                    Some(v) => Some(interpolate_tracked(
                        v,
                        &chain,
                        &join(path, &sig.name),
                        ctx,
                        unbound,
                        err_path,
                    )?),
                });
            }
            Kind::Struct {
                ty: ty.clone(),
                fields: out,
            }
        }
        Kind::List { elem, items } => {
            let chain = child_chain(obj, parent);
            let mut out = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                out.push(interpolate_tracked(
                    v,
                    &chain,
                    &format!("{path}[{i}]"),
                    ctx,
                    unbound,
                    err_path,
                )?);
            }
            Kind::List {
                elem: elem.clone(),
                items: out,
            }
        }
        Kind::Map { key, value, items } => {
            let chain = child_chain(obj, parent);
            let mut out = Vec::with_capacity(items.len());
            for (k, v) in items {
                let kp = format!("{path}[{}]", raw_text(k).unwrap_or_default());
                let ki = interpolate_tracked(k, &chain, &kp, ctx, unbound, err_path)?;
                let vi = interpolate_tracked(v, &chain, &kp, ctx, unbound, err_path)?;
                out.push((ki, vi));
            }
            Kind::Map {
                key: key.clone(),
                value: value.clone(),
                items: out,
            }
        }
    };
    Ok(Obj::new(kind))
}

impl Obj {
    pub fn new(kind: Kind) -> Obj {
        Obj {
            kind: Arc::new(kind),
            binds: Arc::new(Vec::new()),
        }
    }

    pub fn simple(ty: Ty, raw: Raw) -> Obj {
        Obj::new(Kind::Simple { ty, raw })
    }

    /// A copy with more bindings, searched before the existing ones.
    pub fn bind(&self, env: Env) -> Obj {
        let mut binds = Vec::with_capacity(self.binds.len() + 1);
        binds.push(Arc::new(env));
        binds.extend(self.binds.iter().cloned());
        Obj {
            kind: self.kind.clone(),
            binds: Arc::new(binds),
        }
    }

    /// The type of this object.
    pub fn ty(&self) -> Ty {
        match &*self.kind {
            Kind::Simple { ty, .. } => ty.clone(),
            Kind::Struct { ty, .. } => Ty::Struct(ty.clone()),
            Kind::List { elem, .. } => Ty::List(Arc::new(elem.clone())),
            Kind::Map { key, value, .. } => Ty::Map(Arc::new(key.clone()), Arc::new(value.clone())),
        }
    }

    /// For a struct: the value of an attribute as set (not resolved).
    pub fn field(&self, name: &str) -> Option<&Obj> {
        match &*self.kind {
            Kind::Struct { ty, fields } => fields.get(ty.index(name)?)?.as_ref(),
            _ => None,
        }
    }

    /// For a struct: the chain its attributes are resolved in.
    pub fn scope_chain(&self) -> Chain {
        child_chain(self, &None)
    }

    /// A struct copy with attributes replaced (`Process(...)(name='x')`); bindings are kept.
    pub fn with_fields(&self, updates: Vec<(usize, Option<Obj>)>) -> Obj {
        match &*self.kind {
            Kind::Struct { ty, fields } => {
                let mut fields = fields.clone();
                for (i, v) in updates {
                    if let Some(slot) = fields.get_mut(i) {
                        *slot = v;
                    }
                }
                Obj {
                    kind: Arc::new(Kind::Struct {
                        ty: ty.clone(),
                        fields,
                    }),
                    binds: self.binds.clone(),
                }
            }
            _ => self.clone(),
        }
    }
}

fn coerce_err(ty: &Ty, got: &str) -> TemplateError {
    TemplateError::Coerce {
        what: format!("{got:?} is not a valid {}", ty.name()),
    }
}

/// Convert fully resolved text to the field's type.
pub fn coerce_text(ty: &Ty, text: &str) -> Result<Raw, TemplateError> {
    match ty {
        Ty::String => Ok(Raw::Str(text.to_owned())),
        Ty::Integer => text
            .trim()
            .replace('_', "")
            .parse::<i64>()
            .map(Raw::Int)
            .map_err(|_| coerce_err(ty, text)),
        Ty::Float => text
            .trim()
            .parse::<f64>()
            .map(Raw::Float)
            .map_err(|_| coerce_err(ty, text)),
        Ty::Boolean => match text.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(Raw::Bool(true)),
            "false" | "0" => Ok(Raw::Bool(false)),
            _ => Err(coerce_err(ty, text)),
        },
        Ty::Enum(e) => {
            if e.values.iter().any(|v| v == text) {
                Ok(Raw::Str(text.to_owned()))
            } else {
                Err(TemplateError::Coerce {
                    what: format!("{text:?} is not one of {}", e.values.join(", ")),
                })
            }
        }
        _ => Err(coerce_err(ty, text)),
    }
}

/// Convert a non-text value to the field's type (Python's `int(2.5)`, `float(1)`, `str(3)`).
pub fn coerce_raw(ty: &Ty, raw: &Raw) -> Result<Raw, TemplateError> {
    match (ty, raw) {
        (Ty::String, r) => Ok(Raw::Str(raw_to_text(r))),
        (Ty::Integer, Raw::Int(i)) => Ok(Raw::Int(*i)),
        (Ty::Integer, Raw::Float(f)) if f.is_finite() => Ok(Raw::Int(f.trunc() as i64)),
        (Ty::Integer, Raw::Bool(b)) => Ok(Raw::Int(i64::from(*b))),
        (Ty::Float, Raw::Int(i)) => Ok(Raw::Float(*i as f64)),
        (Ty::Float, Raw::Float(f)) => Ok(Raw::Float(*f)),
        (Ty::Float, Raw::Bool(b)) => Ok(Raw::Float(if *b { 1.0 } else { 0.0 })),
        (Ty::Boolean, Raw::Bool(b)) => Ok(Raw::Bool(*b)),
        (Ty::Boolean, Raw::Int(i)) => Ok(Raw::Bool(*i != 0)),
        (Ty::Boolean, Raw::Float(f)) => Ok(Raw::Bool(*f != 0.0)),
        (_, Raw::Str(s)) => coerce_text(ty, s),
        (ty, r) => Err(coerce_err(ty, &raw_to_text(r))),
    }
}

/// The JSON of a resolved object (Pystachio's `json_dumps`): unset attributes are left out.
pub fn to_json(obj: &Obj) -> Json {
    match &*obj.kind {
        Kind::Simple { raw, .. } => match raw {
            Raw::Str(s) => Json::String(s.clone()),
            Raw::Int(i) => Json::Number((*i).into()),
            Raw::Float(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
            Raw::Bool(b) => Json::Bool(*b),
        },
        Kind::Struct { ty, fields } => {
            let mut m = JsonMap::new();
            for (sig, f) in ty.fields.iter().zip(fields) {
                if let Some(v) = f {
                    m.insert(sig.name.clone(), to_json(v));
                }
            }
            Json::Object(m)
        }
        Kind::List { items, .. } => Json::Array(items.iter().map(to_json).collect()),
        Kind::Map { items, .. } => {
            let mut m = JsonMap::new();
            for (k, v) in items {
                let key = match to_json(k) {
                    Json::String(s) => s,
                    other => other.to_string(),
                };
                m.insert(key, to_json(v));
            }
            Json::Object(m)
        }
    }
}

/// Every `Required` attribute left unset, as `path: Struct[field] is required`.
pub fn missing_required(obj: &Obj, path: &str, out: &mut Vec<String>) {
    match &*obj.kind {
        Kind::Struct { ty, fields } => {
            for (sig, f) in ty.fields.iter().zip(fields) {
                let p = join(path, &sig.name);
                match f {
                    None if sig.required => {
                        out.push(format!("{p}: {}[{}] is required", ty.name, sig.name))
                    }
                    None => {}
                    Some(v) => missing_required(v, &p, out),
                }
            }
        }
        Kind::List { items, .. } => {
            for (i, v) in items.iter().enumerate() {
                missing_required(v, &format!("{path}[{i}]"), out);
            }
        }
        Kind::Map { items, .. } => {
            for (k, v) in items {
                missing_required(
                    v,
                    &format!("{path}[{}]", raw_text(k).unwrap_or_default()),
                    out,
                );
            }
        }
        Kind::Simple { .. } => {}
    }
}

/// Python-like repr, for messages and `print()`.
pub fn repr(obj: &Obj) -> String {
    match &*obj.kind {
        Kind::Simple { ty, raw } => format!("{}({})", ty.name(), raw_to_text(raw)),
        Kind::Struct { ty, fields } => {
            let parts: Vec<String> = ty
                .fields
                .iter()
                .zip(fields)
                .filter_map(|(s, f)| f.as_ref().map(|v| format!("{}={}", s.name, short(v))))
                .collect();
            format!("{}({})", ty.name, parts.join(", "))
        }
        Kind::List { elem, items } => format!(
            "{}List({})",
            elem.name(),
            items.iter().map(short).collect::<Vec<_>>().join(", ")
        ),
        Kind::Map { key, value, items } => format!(
            "{}{}Map({})",
            key.name(),
            value.name(),
            items
                .iter()
                .map(|(k, v)| format!("{} => {}", short(k), short(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn short(obj: &Obj) -> String {
    match &*obj.kind {
        Kind::Simple { raw, .. } => raw_to_text(raw),
        _ => repr(obj),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn s(v: &str) -> Obj {
        Obj::simple(Ty::String, Raw::Str(v.into()))
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env {
            entries: pairs
                .iter()
                .map(|(k, v)| (Ref::parse(k).unwrap(), EnvVal::Text((*v).into())))
                .collect(),
        }
    }

    fn resolved(o: &Obj) -> (Json, Vec<String>) {
        let (i, u) = interpolate(o, &mut Ctx::new(None)).unwrap();
        (to_json(&i), u.iter().map(|u| u.var.to_string()).collect())
    }

    #[test]
    fn parses_addresses_like_pystachio() {
        let r = Ref::parse("thermos.ports[http]").unwrap();
        assert_eq!(r.0.len(), 3);
        assert_eq!(r.to_string(), "thermos.ports[http]");
        assert_eq!(
            Ref::parse(" mesos.instance ").unwrap().to_string(),
            "mesos.instance"
        );
        assert!(Ref::parse("1abc").is_none());
        assert!(Ref::parse("a b").is_none());
        assert_eq!(Ref::parse("processes[0].name").unwrap().0.len(), 3);
    }

    #[test]
    fn resolves_nested_templates_iteratively() {
        let o =
            s("{{metavar{{number}}}}").bind(env(&[("metavar1", "first"), ("metavar2", "second")]));
        assert_eq!(
            resolved(&o.bind(env(&[("number", "1")]))).0,
            Json::from("first")
        );
        assert_eq!(
            resolved(&o.bind(env(&[("number", "2")]))).0,
            Json::from("second")
        );
    }

    #[test]
    fn later_bindings_win_over_earlier_ones() {
        let o = s("{{x}}").bind(env(&[("x", "a")])).bind(env(&[("x", "b")]));
        assert_eq!(resolved(&o).0, Json::from("b"));
    }

    #[test]
    fn leaves_unbound_variables_as_text_and_reports_them() {
        let (j, u) = resolved(&s("port {{thermos.ports[http]}} {{x}}"));
        assert_eq!(j, Json::from("port {{thermos.ports[http]}} {{x}}"));
        assert_eq!(u, vec!["thermos.ports[http]", "x"]);
    }

    #[test]
    fn typed_values_convert_once_resolved() {
        let o = Obj::simple(Ty::Float, Raw::Str("{{x}}.5".into())).bind(env(&[("x", "1")]));
        assert_eq!(resolved(&o).0, serde_json::json!(1.5));
        let bad = Obj::simple(Ty::Integer, Raw::Str("{{x}}".into())).bind(env(&[("x", "abc")]));
        assert!(interpolate(&bad, &mut Ctx::new(None)).is_err());
    }

    #[test]
    fn aliases_stay_literal() {
        assert_eq!(resolved(&s("{{&x}}")).0, Json::from("{{x}}"));
    }

    #[test]
    fn a_cycle_through_bindings_is_an_error() {
        let o = s("{{a}}").bind(env(&[("a", "{{b}}"), ("b", "{{a}}")]));
        let e = interpolate(&o, &mut Ctx::new(None)).unwrap_err().1;
        assert!(matches!(e, TemplateError::Cycle { .. }), "{e}");
    }
}
