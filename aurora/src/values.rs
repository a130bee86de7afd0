//! The Starlark face of the Pystachio objects: values for objects, types, attribute signatures
//! and methods, the builtins a `.aurora` file sees, and conversions both ways.
//!
//! Every value type here derives `ProvidesStaticType`, whose expansion is an `unsafe impl` written
//! by the `starlark` crate's derive macro; that is why this module allows `unsafe_code`. No
//! `unsafe` is written by hand here.

use std::fmt;
use std::sync::Arc;

use allocative::Allocative;
use starlark::any::ProvidesStaticType;
use starlark::environment::{Globals, GlobalsBuilder, LibraryExtension};
use starlark::eval::{Arguments, Evaluator};
use starlark::starlark_module;
use starlark::starlark_simple_value;
use starlark::values::dict::{AllocDict, DictRef};
use starlark::values::float::StarlarkFloat;
use starlark::values::list::{AllocList, ListRef};
use starlark::values::none::NoneType;
use starlark::values::tuple::{TupleRef, UnpackTuple};
use starlark::values::{
    Heap, NoSerialize, StarlarkValue, UnpackValue, Value, ValueLike, starlark_value,
};

use crate::pystachio::{
    Chain, ChoiceTy, Ctx, EnumTy, Env, EnvVal, FieldSig, Kind, Obj, Raw, Ref, StructTy, Ty,
    coerce_text, interpolate, interpolate_in, repr, to_json,
};
use crate::schema::{self, Merge};

/// The most items one repetition (`[x] * n`, `'x' * n`) may produce.
const MAX_REPEAT: i64 = 10_000_000;

/// An error raised by a builtin, shown with the call's file, line and column.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn fail<T>(msg: impl Into<String>) -> starlark::Result<T> {
    Err(starlark::Error::new_other(Invalid(msg.into())))
}

/// A Pystachio object.
#[derive(Debug, ProvidesStaticType, NoSerialize, Allocative)]
pub struct PyObj(#[allocative(skip)] pub Obj);
starlark_simple_value!(PyObj);

/// A Pystachio type (`Process`, `String`, `List(Process)`, a `class X(Struct)`): call it to
/// make an object.
#[derive(Debug, ProvidesStaticType, NoSerialize, Allocative)]
pub struct PyType(#[allocative(skip)] pub Ty);
starlark_simple_value!(PyType);

/// `Required(T)` or `Default(T, value)`: an attribute of a `class X(Struct)`.
#[derive(Debug, ProvidesStaticType, NoSerialize, Allocative)]
pub struct PySig {
    #[allocative(skip)]
    ty: Ty,
    required: bool,
    #[allocative(skip)]
    default: Option<Obj>,
}
starlark_simple_value!(PySig);

/// Pystachio's `Empty`: an attribute left unset.
#[derive(Debug, ProvidesStaticType, NoSerialize, Allocative)]
pub struct PyEmpty;
starlark_simple_value!(PyEmpty);

#[derive(Debug, Clone)]
enum Method {
    Bind,
    Get,
    Copy,
    Check,
    JsonDumps,
    Field(usize),
    Has(usize),
}

/// A method of an object, e.g. `job.bind`, `process.name`.
#[derive(Debug, ProvidesStaticType, NoSerialize, Allocative)]
pub struct PyMethod {
    #[allocative(skip)]
    obj: Obj,
    #[allocative(skip)]
    method: Method,
}
starlark_simple_value!(PyMethod);

/// How a config reads the environment: only through this function.
pub type EnvGetter = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The `os` and `getpass` modules a config imports, and `os.environ`.
#[derive(ProvidesStaticType, NoSerialize, Allocative)]
pub struct PyModule {
    name: &'static str,
    #[allocative(skip)]
    env: EnvGetter,
}
starlark_simple_value!(PyModule);

impl fmt::Debug for PyModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<module {}>", self.name)
    }
}

impl PyModule {
    pub fn new(name: &'static str, env: EnvGetter) -> PyModule {
        PyModule { name, env }
    }
}

/// A function of [`PyModule`]: `os.getenv`, `getpass.getuser`, `os.environ.get`.
#[derive(ProvidesStaticType, NoSerialize, Allocative)]
pub struct PyModuleFn {
    name: &'static str,
    #[allocative(skip)]
    env: EnvGetter,
}
starlark_simple_value!(PyModuleFn);

impl fmt::Debug for PyModuleFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<function {}>", self.name)
    }
}

impl fmt::Display for PyModuleFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<function {}>", self.name)
    }
}

impl fmt::Display for PyModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<module '{}'>", self.name)
    }
}

impl fmt::Display for PyObj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0.kind {
            Kind::Simple { .. } => {
                let mut sink = Vec::new();
                match interpolate_in(&self.0, &None, "", &mut Ctx::new(None), &mut sink) {
                    Ok(o) => match &*o.kind {
                        Kind::Simple { raw, .. } => write!(f, "{}", raw_text(raw)),
                        _ => write!(f, "{}", repr(&o)),
                    },
                    Err(_) => write!(f, "{}", repr(&self.0)),
                }
            }
            _ => write!(f, "{}", repr(&self.0)),
        }
    }
}

fn raw_text(raw: &Raw) -> String {
    match raw {
        Raw::Str(s) => s.clone(),
        Raw::Int(i) => i.to_string(),
        Raw::Float(x) => crate::pystachio::py_float(*x),
        Raw::Bool(true) => "True".into(),
        Raw::Bool(false) => "False".into(),
    }
}

impl fmt::Display for PyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.name())
    }
}

impl fmt::Display for PySig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.required {
            write!(f, "Required({})", self.ty.name())
        } else {
            write!(f, "Default({})", self.ty.name())
        }
    }
}

impl fmt::Display for PyEmpty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Empty")
    }
}

impl fmt::Display for PyMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<method of {}>", self.obj.ty().name())
    }
}

/// The object in its own scopes, resolved as far as it goes (Pystachio's `interpolate()`).
fn resolved(obj: &Obj) -> starlark::Result<Obj> {
    let mut sink = Vec::new();
    interpolate_in(obj, &None, "", &mut Ctx::new(None), &mut sink).or_else(|e| fail(e.to_string()))
}

#[starlark_value(type = "PystachioObject")]
impl<'v> StarlarkValue<'v> for PyObj {
    fn invoke(
        &self,
        _me: Value<'v>,
        args: &Arguments<'v, '_>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> starlark::Result<Value<'v>> {
        let Kind::Struct { ty, .. } = &*self.0.kind else {
            return fail(format!(
                "{} is not callable; only struct objects (Process, Task, Job, ...) can be \
                 called to copy them with new attributes",
                self.0.ty().name()
            ));
        };
        let updates = struct_updates(ty, args, eval.heap())?;
        Ok(eval.heap().alloc(PyObj(self.0.with_fields(updates))))
    }

    fn get_attr(&self, attribute: &str, heap: Heap<'v>) -> Option<Value<'v>> {
        let method = match attribute {
            "bind" => Method::Bind,
            "get" => Method::Get,
            "copy" => Method::Copy,
            "check" => Method::Check,
            "json_dumps" => Method::JsonDumps,
            _ => match &*self.0.kind {
                Kind::Struct { ty, .. } => {
                    if let Some(i) = ty.index(attribute) {
                        Method::Field(i)
                    } else {
                        let i = ty.index(attribute.strip_prefix("has_")?)?;
                        Method::Has(i)
                    }
                }
                _ => return None,
            },
        };
        Some(heap.alloc(PyMethod {
            obj: self.0.clone(),
            method,
        }))
    }

    fn dir_attr(&self) -> Vec<String> {
        let mut v: Vec<String> = ["bind", "get", "copy", "check", "json_dumps"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        if let Kind::Struct { ty, .. } = &*self.0.kind {
            for f in &ty.fields {
                v.push(f.name.clone());
                v.push(format!("has_{}", f.name));
            }
        }
        v
    }

    fn length(&self) -> starlark::Result<i32> {
        match &*self.0.kind {
            Kind::List { items, .. } => Ok(i32::try_from(items.len()).unwrap_or(i32::MAX)),
            Kind::Map { items, .. } => Ok(i32::try_from(items.len()).unwrap_or(i32::MAX)),
            _ => fail(format!("{} has no length", self.0.ty().name())),
        }
    }

    fn iterate_collect(&self, heap: Heap<'v>) -> starlark::Result<Vec<Value<'v>>> {
        let r = resolved(&self.0)?;
        match &*r.kind {
            Kind::List { items, .. } => {
                Ok(items.iter().map(|o| heap.alloc(PyObj(o.clone()))).collect())
            }
            Kind::Map { items, .. } => Ok(items
                .iter()
                .map(|(k, _)| heap.alloc(PyObj(k.clone())))
                .collect()),
            _ => fail(format!("{} is not iterable", self.0.ty().name())),
        }
    }

    fn at(&self, index: Value<'v>, heap: Heap<'v>) -> starlark::Result<Value<'v>> {
        let r = resolved(&self.0)?;
        match &*r.kind {
            Kind::List { items, .. } => {
                let Some(i) = index.unpack_i32() else {
                    return fail("list indices must be integers");
                };
                let n = items.len() as i64;
                let i = if i < 0 {
                    n + i64::from(i)
                } else {
                    i64::from(i)
                };
                match usize::try_from(i).ok().and_then(|i| items.get(i)) {
                    Some(o) => Ok(heap.alloc(PyObj(o.clone()))),
                    None => fail(format!("index {i} out of range for a list of {n}")),
                }
            }
            Kind::Map { items, .. } => {
                let key = index
                    .unpack_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| index.to_str());
                for (k, v) in items {
                    if let Kind::Simple { raw, .. } = &*k.kind
                        && raw_text(raw) == key
                    {
                        return Ok(heap.alloc(PyObj(v.clone())));
                    }
                }
                fail(format!("key {key:?} not found"))
            }
            _ => fail(format!("{} cannot be indexed", self.0.ty().name())),
        }
    }

    fn equals(&self, other: Value<'v>) -> starlark::Result<bool> {
        let Some(o) = other.downcast_ref::<PyObj>() else {
            return Ok(false);
        };
        if !self.0.ty().same(&o.0.ty()) {
            return Ok(false);
        }
        Ok(to_json(&resolved(&self.0)?) == to_json(&resolved(&o.0)?))
    }
}

#[starlark_value(type = "PystachioMethod")]
impl<'v> StarlarkValue<'v> for PyMethod {
    fn invoke(
        &self,
        _me: Value<'v>,
        args: &Arguments<'v, '_>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> starlark::Result<Value<'v>> {
        let heap = eval.heap();
        match &self.method {
            Method::Bind => {
                let mut env = Env::default();
                for p in args.positions(heap)? {
                    add_bindings(&mut env, p)?;
                }
                for (k, v) in args.names_map()?.iter() {
                    add_binding(&mut env, k.as_str(), *v)?;
                }
                Ok(heap.alloc(PyObj(self.obj.bind(env))))
            }
            Method::Get => {
                args.no_named_args()?;
                Ok(obj_to_value(&resolved(&self.obj)?, heap))
            }
            Method::Copy => Ok(heap.alloc(PyObj(self.obj.clone()))),
            Method::Check => {
                let mut missing = Vec::new();
                crate::pystachio::missing_required(&self.obj, "", &mut missing);
                Ok(heap.alloc(missing.is_empty()))
            }
            Method::JsonDumps => {
                let r = resolved(&self.obj)?;
                Ok(heap.alloc(to_json(&r).to_string()))
            }
            Method::Has(i) => Ok(heap.alloc(match &*self.obj.kind {
                Kind::Struct { fields, .. } => fields.get(*i).is_some_and(Option::is_some),
                _ => false,
            })),
            Method::Field(i) => {
                args.no_named_args()?;
                let Kind::Struct { ty, fields } = &*self.obj.kind else {
                    return Ok(Value::new_none());
                };
                let Some(Some(v)) = fields.get(*i) else {
                    return Ok(heap.alloc(PyEmpty));
                };
                let chain: Chain = self.obj.scope_chain();
                let mut sink = Vec::new();
                let name = ty.fields.get(*i).map(|f| f.name.as_str()).unwrap_or("");
                let r = interpolate_in(v, &chain, name, &mut Ctx::new(None), &mut sink)
                    .or_else(|e| fail(format!("{}.{name}: {e}", ty.name)))?;
                Ok(heap.alloc(PyObj(r)))
            }
        }
    }
}

#[starlark_value(type = "PystachioType")]
impl<'v> StarlarkValue<'v> for PyType {
    fn invoke(
        &self,
        _me: Value<'v>,
        args: &Arguments<'v, '_>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> starlark::Result<Value<'v>> {
        let heap = eval.heap();
        match &self.0 {
            Ty::Struct(st) => {
                let base = crate::schema::instance(st, vec![]);
                let updates = struct_updates(st, args, heap)?;
                Ok(heap.alloc(PyObj(base.with_fields(updates))))
            }
            ty => {
                args.no_named_args()?;
                let [v] = args.positional::<1>(heap)?;
                Ok(heap.alloc(PyObj(to_obj(v, ty, &ty.name())?)))
            }
        }
    }
}

#[starlark_value(type = "PystachioAttribute")]
impl<'v> StarlarkValue<'v> for PySig {}

#[starlark_value(type = "PystachioEmpty")]
impl<'v> StarlarkValue<'v> for PyEmpty {}

#[starlark_value(type = "module")]
impl<'v> StarlarkValue<'v> for PyModule {
    fn get_attr(&self, attribute: &str, heap: Heap<'v>) -> Option<Value<'v>> {
        let name = match (self.name, attribute) {
            ("os", "getenv") => "os.getenv",
            ("os", "environ") => {
                return Some(heap.alloc(PyModule {
                    name: "os.environ",
                    env: self.env.clone(),
                }));
            }
            ("os.environ", "get") => "os.environ.get",
            ("getpass", "getuser") => "getpass.getuser",
            _ => return None,
        };
        Some(heap.alloc(PyModuleFn {
            name,
            env: self.env.clone(),
        }))
    }

    fn at(&self, index: Value<'v>, heap: Heap<'v>) -> starlark::Result<Value<'v>> {
        let Some(key) = index.unpack_str() else {
            return fail("os.environ keys are strings");
        };
        match (self.env)(key) {
            Some(v) if self.name == "os.environ" => Ok(heap.alloc(v)),
            _ => fail(format!("KeyError: {key:?} is not set in the environment")),
        }
    }

    fn is_in(&self, other: Value<'v>) -> starlark::Result<bool> {
        Ok(other.unpack_str().is_some_and(|k| (self.env)(k).is_some()))
    }
}

#[starlark_value(type = "builtin_function_or_method")]
impl<'v> StarlarkValue<'v> for PyModuleFn {
    fn invoke(
        &self,
        _me: Value<'v>,
        args: &Arguments<'v, '_>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> starlark::Result<Value<'v>> {
        let heap = eval.heap();
        args.no_named_args()?;
        let pos: Vec<Value<'v>> = args.positions(heap)?.collect();
        match self.name {
            "os.getenv" | "os.environ.get" => {
                let Some(key) = pos.first().and_then(|v| v.unpack_str()) else {
                    return fail(format!(
                        "{}(name, default=None) takes a string name",
                        self.name
                    ));
                };
                Ok(match (self.env)(key) {
                    Some(v) => heap.alloc(v),
                    None => pos.get(1).copied().unwrap_or_else(Value::new_none),
                })
            }
            _ => {
                for var in ["LOGNAME", "USER", "LNAME", "USERNAME"] {
                    if let Some(v) = (self.env)(var) {
                        return Ok(heap.alloc(v));
                    }
                }
                fail("getpass.getuser(): none of LOGNAME, USER, LNAME, USERNAME is set")
            }
        }
    }
}

/// The right side of `'fmt' % args`: a tuple, a dict for `%(name)s`, or one value.
struct FormatArgs<'v> {
    items: Vec<Value<'v>>,
    dict: Option<Value<'v>>,
    next: usize,
}

impl<'v> FormatArgs<'v> {
    fn new(v: Value<'v>) -> FormatArgs<'v> {
        match TupleRef::from_value(v) {
            Some(t) => FormatArgs {
                items: t.content().to_vec(),
                dict: None,
                next: 0,
            },
            None => FormatArgs {
                items: vec![v],
                dict: DictRef::from_value(v).map(|_| v),
                next: 0,
            },
        }
    }
}

fn format_arg(v: Value) -> crate::format::Arg {
    use crate::format::Arg;
    if let Some(b) = v.unpack_bool() {
        Arg::Bool(b)
    } else if let Some(i) = as_i64(v) {
        Arg::Int(i)
    } else if let Some(f) = StarlarkFloat::unpack_value_opt(v) {
        Arg::Float(f.0)
    } else {
        Arg::Other {
            str: v.to_str(),
            repr: v.to_repr(),
        }
    }
}

impl crate::format::Args for FormatArgs<'_> {
    fn next(&mut self) -> Option<crate::format::Arg> {
        let v = self.items.get(self.next)?;
        self.next += 1;
        Some(format_arg(*v))
    }

    fn key(&mut self, name: &str) -> Option<crate::format::Arg> {
        let d = DictRef::from_value(self.dict?)?;
        // A mapping is used by name, never positionally.
        self.next = self.items.len();
        d.get_str(name).map(format_arg)
    }

    fn left(&self) -> usize {
        if self.dict.is_some() {
            0
        } else {
            self.items.len().saturating_sub(self.next)
        }
    }
}

/// Add `.bind()` arguments: a dict (possibly nested) or an object bound as a whole scope.
fn add_bindings(env: &mut Env, v: Value) -> starlark::Result<()> {
    if let Some(d) = DictRef::from_value(v) {
        for (k, val) in d.iter() {
            let Some(k) = k.unpack_str() else {
                return fail("bind(): keys must be strings");
            };
            add_binding(env, k, val)?;
        }
        Ok(())
    } else {
        fail(format!(
            "bind() takes name=value arguments or a dict, not {}",
            v.get_type()
        ))
    }
}

fn add_binding(env: &mut Env, key: &str, v: Value) -> starlark::Result<()> {
    let Some(r) = Ref::parse(key) else {
        return fail(format!(
            "bind(): {key:?} is not a valid template variable name"
        ));
    };
    if let Some(d) = DictRef::from_value(v) {
        for (k, val) in d.iter() {
            let Some(k) = k.unpack_str() else {
                return fail("bind(): keys must be strings");
            };
            add_binding(env, &format!("{r}.{k}"), val)?;
        }
        return Ok(());
    }
    let val = if let Some(o) = v.downcast_ref::<PyObj>() {
        EnvVal::Obj(o.0.clone())
    } else if let Some(s) = v.unpack_str() {
        EnvVal::Text(s.to_owned())
    } else if let Some(b) = v.unpack_bool() {
        EnvVal::Text(if b { "True" } else { "False" }.into())
    } else if let Some(i) = as_i64(v) {
        EnvVal::Text(i.to_string())
    } else if let Some(f) = StarlarkFloat::unpack_value_opt(v) {
        EnvVal::Text(crate::pystachio::py_float(f.0))
    } else if let Some(l) = list_items(v) {
        // A plain list binds like List(String): `{{names[0]}}`.
        let items = l
            .into_iter()
            .map(|x| to_obj(x, &Ty::String, key))
            .collect::<starlark::Result<Vec<_>>>()?;
        EnvVal::Obj(Obj::new(Kind::List {
            elem: Ty::String,
            items,
        }))
    } else {
        return fail(format!(
            "bind(): {key} must be a string, a number, a dict or a Pystachio object, not {}",
            v.get_type()
        ));
    };
    env.entries.push((r, val));
    Ok(())
}

fn as_i64(v: Value) -> Option<i64> {
    i64::unpack_value(v).ok().flatten()
}

fn list_items(v: Value) -> Option<Vec<Value>> {
    if let Some(l) = ListRef::from_value(v) {
        Some(l.content().to_vec())
    } else {
        TupleRef::from_value(v).map(|t| t.content().to_vec())
    }
}

/// The attribute updates of a struct call: positional dicts, then keyword arguments.
fn struct_updates<'v>(
    st: &Arc<StructTy>,
    args: &Arguments<'v, '_>,
    heap: Heap<'v>,
) -> starlark::Result<Vec<(usize, Option<Obj>)>> {
    let mut out = Vec::new();
    let mut set = |name: &str, v: Value<'v>| -> starlark::Result<()> {
        let Some(i) = st.index(name) else {
            let known: Vec<&str> = st.fields.iter().map(|f| f.name.as_str()).collect();
            return fail(format!(
                "{} has no attribute {name:?}; its attributes are: {}",
                st.name,
                known.join(", ")
            ));
        };
        if v.downcast_ref::<PyEmpty>().is_some() || v.is_none() {
            out.push((i, None));
            return Ok(());
        }
        let sig = &st.fields[i];
        let what = format!("{}.{}", st.name, sig.name);
        out.push((i, Some(to_obj(v, &sig.ty, &what)?)));
        Ok(())
    };
    for p in args.positions(heap)? {
        let Some(d) = DictRef::from_value(p) else {
            return fail(format!(
                "{}(...) takes attributes as name=value (or a dict), not a positional {}",
                st.name,
                p.get_type()
            ));
        };
        for (k, v) in d.iter() {
            let Some(k) = k.unpack_str() else {
                return fail(format!("{}: attribute names must be strings", st.name));
            };
            set(k, v)?;
        }
    }
    for (k, v) in args.names_map()?.iter() {
        set(k.as_str(), *v)?;
    }
    Ok(out)
}

/// Convert a Starlark value to a Pystachio object of type `ty` (Pystachio's coercion).
pub fn to_obj(v: Value, ty: &Ty, what: &str) -> starlark::Result<Obj> {
    let wrong = |v: Value| -> starlark::Result<Obj> {
        fail(format!(
            "{what} must be {}, not {} ({})",
            describe(ty),
            v.get_type(),
            short_repr(v)
        ))
    };
    if let Some(o) = v.downcast_ref::<PyObj>() {
        if o.0.ty().same(ty) {
            return Ok(o.0.clone());
        }
        if let (Kind::Simple { raw, .. }, true) = (&*o.0.kind, is_simple(ty)) {
            return simple(ty, raw.clone(), what).map(|mut x| {
                x.binds = o.0.binds.clone();
                x
            });
        }
    }
    match ty {
        Ty::String | Ty::Integer | Ty::Float | Ty::Boolean | Ty::Enum(_) => {
            let raw = if let Some(s) = v.unpack_str() {
                Raw::Str(s.to_owned())
            } else if let Some(b) = v.unpack_bool() {
                Raw::Bool(b)
            } else if let Some(i) = as_i64(v) {
                Raw::Int(i)
            } else if let Some(f) = StarlarkFloat::unpack_value_opt(v) {
                Raw::Float(f.0)
            } else {
                return wrong(v);
            };
            simple(ty, raw, what)
        }
        Ty::Struct(st) => {
            let Some(d) = DictRef::from_value(v) else {
                return wrong(v);
            };
            let mut fields: Vec<Option<Obj>> =
                st.fields.iter().map(|f| f.default.clone()).collect();
            for (k, val) in d.iter() {
                let Some(k) = k.unpack_str() else {
                    return wrong(v);
                };
                let Some(i) = st.index(k) else {
                    return fail(format!("{what}: {} has no attribute {k:?}", st.name));
                };
                fields[i] = Some(to_obj(val, &st.fields[i].ty, &format!("{what}.{k}"))?);
            }
            Ok(Obj::new(Kind::Struct {
                ty: st.clone(),
                fields,
            }))
        }
        Ty::List(elem) => {
            if let Some(o) = v.downcast_ref::<PyObj>()
                && let Kind::List { items, .. } = &*o.0.kind
            {
                let items = items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| obj_as(x, elem, &format!("{what}[{i}]")))
                    .collect::<starlark::Result<Vec<_>>>()?;
                return Ok(Obj::new(Kind::List {
                    elem: (**elem).clone(),
                    items,
                }));
            }
            let Some(list) = list_items(v) else {
                return wrong(v);
            };
            let items = list
                .into_iter()
                .enumerate()
                .map(|(i, x)| to_obj(x, elem, &format!("{what}[{i}]")))
                .collect::<starlark::Result<Vec<_>>>()?;
            Ok(Obj::new(Kind::List {
                elem: (**elem).clone(),
                items,
            }))
        }
        Ty::Map(kt, vt) => {
            let Some(d) = DictRef::from_value(v) else {
                return wrong(v);
            };
            let mut items = Vec::new();
            for (k, val) in d.iter() {
                let key = to_obj(k, kt, &format!("{what} key"))?;
                let value = to_obj(val, vt, &format!("{what}[{}]", k.to_str()))?;
                items.push((key, value));
            }
            Ok(Obj::new(Kind::Map {
                key: (**kt).clone(),
                value: (**vt).clone(),
                items,
            }))
        }
        Ty::Choice(c) => {
            for alt in &c.alternatives {
                if let Ok(o) = to_obj(v, alt, what) {
                    let mut missing = Vec::new();
                    crate::pystachio::missing_required(&o, "", &mut missing);
                    if missing.is_empty() {
                        return Ok(o);
                    }
                }
            }
            fail(format!(
                "{what} must be one of {}, not {}",
                c.alternatives
                    .iter()
                    .map(Ty::name)
                    .collect::<Vec<_>>()
                    .join(", "),
                short_repr(v)
            ))
        }
    }
}

/// An existing object used where `ty` is expected (list elements of another list type).
fn obj_as(o: &Obj, ty: &Ty, what: &str) -> starlark::Result<Obj> {
    if o.ty().same(ty) {
        return Ok(o.clone());
    }
    match (&*o.kind, is_simple(ty)) {
        (Kind::Simple { raw, .. }, true) => simple(ty, raw.clone(), what),
        _ => fail(format!(
            "{what} must be {}, not {}",
            describe(ty),
            o.ty().name()
        )),
    }
}

fn is_simple(ty: &Ty) -> bool {
    matches!(
        ty,
        Ty::String | Ty::Integer | Ty::Float | Ty::Boolean | Ty::Enum(_)
    )
}

/// A simple value; typed values written as text are checked now unless they hold a template.
fn simple(ty: &Ty, raw: Raw, what: &str) -> starlark::Result<Obj> {
    match (&raw, ty) {
        (Raw::Str(s), _) if s.contains("{{") => {}
        (Raw::Str(s), Ty::String) => {
            let _ = s;
        }
        (Raw::Str(s), _) => {
            if let Err(e) = coerce_text(ty, s) {
                return fail(format!("{what}: {e}"));
            }
        }
        (_, Ty::Enum(_)) => return fail(format!("{what} must be one of {}", describe(ty))),
        (Raw::Bool(_), Ty::String) => {
            return fail(format!("{what} must be a string, not a boolean"));
        }
        _ => {}
    }
    Ok(Obj::simple(ty.clone(), raw))
}

fn describe(ty: &Ty) -> String {
    match ty {
        Ty::String => "a string".into(),
        Ty::Integer => "an integer".into(),
        Ty::Float => "a number".into(),
        Ty::Boolean => "True or False".into(),
        Ty::Enum(e) => format!("one of {}", e.values.join(", ")),
        Ty::List(t) => format!("a list of {}", t.name()),
        Ty::Map(k, v) => format!("a dict of {} to {}", k.name(), v.name()),
        Ty::Struct(s) => format!("a {} (or a dict of its attributes)", s.name),
        Ty::Choice(c) => format!(
            "one of {}",
            c.alternatives
                .iter()
                .map(Ty::name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn short_repr(v: Value) -> String {
    let mut s = v.to_repr();
    if s.len() > 60 {
        let mut cut = 57;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// A resolved object as plain Starlark data (Pystachio's `.get()`).
fn obj_to_value<'v>(o: &Obj, heap: Heap<'v>) -> Value<'v> {
    match &*o.kind {
        Kind::Simple { raw, .. } => match raw {
            Raw::Str(s) => heap.alloc(s.as_str()),
            Raw::Int(i) => heap.alloc(*i),
            Raw::Float(f) => heap.alloc(*f),
            Raw::Bool(b) => heap.alloc(*b),
        },
        Kind::List { items, .. } => {
            heap.alloc(AllocList(items.iter().map(|x| obj_to_value(x, heap))))
        }
        Kind::Map { items, .. } => heap.alloc(AllocDict(
            items
                .iter()
                .map(|(k, v)| (obj_to_value(k, heap), obj_to_value(v, heap))),
        )),
        Kind::Struct { ty, fields } => heap.alloc(AllocDict(
            ty.fields.iter().zip(fields).filter_map(|(s, f)| {
                f.as_ref()
                    .map(|f| (heap.alloc(s.name.as_str()), obj_to_value(f, heap)))
            }),
        )),
    }
}

/// A type argument: `String`, `Process`, `List(Integer)`.
fn type_arg(v: Value, what: &str) -> starlark::Result<Ty> {
    match v.downcast_ref::<PyType>() {
        Some(t) => Ok(t.0.clone()),
        None => fail(format!(
            "{what} takes a type (String, Integer, Float, Boolean, a Struct, List(...), \
             Map(...)), not {}",
            short_repr(v)
        )),
    }
}

fn obj_arg<'v>(v: Value<'v>, what: &str) -> starlark::Result<Obj> {
    match v.downcast_ref::<PyObj>() {
        Some(o) => Ok(o.0.clone()),
        None => fail(format!("{what} takes a Task, not {}", short_repr(v))),
    }
}

fn tasks_with_overrides<'v>(
    tasks: UnpackTuple<Value<'v>>,
    kwargs: DictRef<'v>,
    how: Merge,
    heap: Heap<'v>,
) -> starlark::Result<Value<'v>> {
    let label = match how {
        Merge::Concat => "Tasks.concat",
        Merge::Combine => "Tasks.combine",
    };
    let tasks = tasks
        .items
        .into_iter()
        .map(|t| obj_arg(t, label))
        .collect::<starlark::Result<Vec<_>>>()?;
    let merged = schema::merge_tasks(&tasks, how).or_else(|e| fail(format!("{label}: {e}")))?;
    apply_kwargs(merged, kwargs, heap)
}

fn apply_kwargs<'v>(obj: Obj, kwargs: DictRef<'v>, heap: Heap<'v>) -> starlark::Result<Value<'v>> {
    let Kind::Struct { ty, .. } = &*obj.kind else {
        return Ok(heap.alloc(PyObj(obj)));
    };
    let mut updates = Vec::new();
    for (k, v) in kwargs.iter() {
        let Some(name) = k.unpack_str() else {
            continue;
        };
        let Some(i) = ty.index(name) else {
            return fail(format!("{} has no attribute {name:?}", ty.name));
        };
        updates.push((i, Some(to_obj(v, &ty.fields[i].ty, name)?)));
    }
    Ok(heap.alloc(PyObj(obj.with_fields(updates))))
}

#[starlark_module]
fn tasks_namespace(b: &mut GlobalsBuilder) {
    fn concat<'v>(
        #[starlark(args)] tasks: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] kwargs: DictRef<'v>,
        heap: Heap<'v>,
    ) -> starlark::Result<Value<'v>> {
        tasks_with_overrides(tasks, kwargs, Merge::Concat, heap)
    }

    fn combine<'v>(
        #[starlark(args)] tasks: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] kwargs: DictRef<'v>,
        heap: Heap<'v>,
    ) -> starlark::Result<Value<'v>> {
        tasks_with_overrides(tasks, kwargs, Merge::Combine, heap)
    }

    fn simple<'v>(name: &str, command: &str, heap: Heap<'v>) -> starlark::Result<Value<'v>> {
        Ok(heap.alloc(PyObj(schema::simple_task(name, command))))
    }

    fn sequential<'v>(task: Value<'v>, heap: Heap<'v>) -> starlark::Result<Value<'v>> {
        let t = obj_arg(task, "Tasks.sequential")?;
        let r = schema::sequential(&t).or_else(|e| fail(format!("Tasks.sequential: {e}")))?;
        Ok(heap.alloc(PyObj(r)))
    }
}

#[starlark_module]
fn builtins(b: &mut GlobalsBuilder) {
    #[allow(non_snake_case)]
    fn List<'v>(t: Value<'v>) -> starlark::Result<PyType> {
        Ok(PyType(Ty::List(Arc::new(type_arg(t, "List()")?))))
    }

    #[allow(non_snake_case)]
    fn Map<'v>(k: Value<'v>, v: Value<'v>) -> starlark::Result<PyType> {
        Ok(PyType(Ty::Map(
            Arc::new(type_arg(k, "Map()")?),
            Arc::new(type_arg(v, "Map()")?),
        )))
    }

    #[allow(non_snake_case)]
    fn Enum<'v>(#[starlark(args)] args: UnpackTuple<Value<'v>>) -> starlark::Result<PyType> {
        // Enum('a', 'b') or Enum('Name', ('a', 'b')).
        let items = args.items;
        let (name, values) = match items.as_slice() {
            [n, vs] if n.unpack_str().is_some() && list_items(*vs).is_some() => (
                n.unpack_str().map(str::to_owned),
                list_items(*vs).unwrap_or_default(),
            ),
            _ => (None, items.clone()),
        };
        let values = values
            .into_iter()
            .map(|v| match v.unpack_str() {
                Some(s) => Ok(s.to_owned()),
                None => fail("Enum() values must be strings"),
            })
            .collect::<starlark::Result<Vec<_>>>()?;
        let name = name.unwrap_or_else(|| format!("Enum_{}", values.join("_")));
        Ok(PyType(Ty::Enum(Arc::new(EnumTy { name, values }))))
    }

    #[allow(non_snake_case)]
    fn Choice<'v>(#[starlark(args)] args: UnpackTuple<Value<'v>>) -> starlark::Result<PyType> {
        let items = args.items;
        let (name, alts) = match items.as_slice() {
            [n, alts] if n.unpack_str().is_some() => {
                (n.unpack_str().map(str::to_owned), list_items(*alts))
            }
            [alts] => (None, list_items(*alts)),
            _ => (None, None),
        };
        let Some(alts) = alts else {
            return fail("Choice() takes a list of types: Choice([A, B])");
        };
        let alternatives = alts
            .into_iter()
            .map(|a| type_arg(a, "Choice()"))
            .collect::<starlark::Result<Vec<_>>>()?;
        let name = name.unwrap_or_else(|| {
            format!(
                "Choice_{}",
                alternatives
                    .iter()
                    .map(Ty::name)
                    .collect::<Vec<_>>()
                    .join("_")
            )
        });
        Ok(PyType(Ty::Choice(Arc::new(ChoiceTy {
            name,
            alternatives,
        }))))
    }

    #[allow(non_snake_case)]
    fn Required<'v>(t: Value<'v>) -> starlark::Result<PySig> {
        Ok(PySig {
            ty: type_arg(t, "Required()")?,
            required: true,
            default: None,
        })
    }

    #[allow(non_snake_case)]
    fn Default<'v>(t: Value<'v>, default: Value<'v>) -> starlark::Result<PySig> {
        let ty = type_arg(t, "Default()")?;
        let default = to_obj(default, &ty, "Default()")?;
        Ok(PySig {
            ty,
            required: false,
            default: Some(default),
        })
    }

    /// The target of the `class Name(Struct):` rewrite.
    fn _hearth_struct<'v>(
        name: &str,
        #[starlark(kwargs)] attrs: DictRef<'v>,
    ) -> starlark::Result<PyType> {
        let mut fields = Vec::new();
        for (k, v) in attrs.iter() {
            let Some(attr) = k.unpack_str() else {
                continue;
            };
            let sig = if let Some(s) = v.downcast_ref::<PySig>() {
                FieldSig {
                    name: attr.to_owned(),
                    ty: s.ty.clone(),
                    required: s.required,
                    default: s.default.clone(),
                }
            } else if let Some(t) = v.downcast_ref::<PyType>() {
                FieldSig {
                    name: attr.to_owned(),
                    ty: t.0.clone(),
                    required: false,
                    default: None,
                }
            } else {
                return fail(format!(
                    "class {name}(Struct): attribute {attr} must be a type, Required(type) or \
                     Default(type, value), not {}",
                    short_repr(v)
                ));
            };
            fields.push(sig);
        }
        Ok(PyType(Ty::Struct(Arc::new(StructTy {
            name: name.to_owned(),
            fields,
        }))))
    }

    fn order<'v>(
        #[starlark(args)] procs: UnpackTuple<Value<'v>>,
        heap: Heap<'v>,
    ) -> starlark::Result<Value<'v>> {
        let mut names = Vec::new();
        for p in procs.items {
            if let Some(s) = p.unpack_str() {
                names.push(crate::schema::s(s));
            } else if let Some(o) = p.downcast_ref::<PyObj>() {
                names.push(schema::process_name(&o.0).or_else(fail)?);
            } else {
                return fail(format!(
                    "order() takes processes or process names, not {}",
                    short_repr(p)
                ));
            }
        }
        let list = schema::order(names);
        let Kind::List { items, .. } = &*list.kind else {
            return Ok(Value::new_none());
        };
        Ok(heap.alloc(AllocList(
            items.iter().map(|c| heap.alloc(PyObj(c.clone()))),
        )))
    }

    #[allow(non_snake_case)]
    fn SequentialTask<'v>(
        #[starlark(args)] args: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] kwargs: DictRef<'v>,
        heap: Heap<'v>,
    ) -> starlark::Result<Value<'v>> {
        let sch = schema::schema();
        let task_ty = sch.st("Task");
        let mut base = schema::instance(&task_ty, vec![]);
        let mut updates = Vec::new();
        for d in args.items {
            let Some(d) = DictRef::from_value(d) else {
                return fail("SequentialTask() takes Task attributes as name=value");
            };
            for (k, v) in d.iter() {
                let Some(name) = k.unpack_str() else { continue };
                let Some(i) = task_ty.index(name) else {
                    return fail(format!("Task has no attribute {name:?}"));
                };
                updates.push((i, Some(to_obj(v, &task_ty.fields[i].ty, name)?)));
            }
        }
        base = base.with_fields(updates);
        let v = apply_kwargs(base, kwargs, heap)?;
        let Some(t) = v.downcast_ref::<PyObj>() else {
            return Ok(v);
        };
        let r = schema::sequential(&t.0).or_else(|e| fail(format!("SequentialTask: {e}")))?;
        Ok(heap.alloc(PyObj(r)))
    }

    #[allow(non_snake_case)]
    fn SimpleTask<'v>(name: &str, command: &str, heap: Heap<'v>) -> starlark::Result<Value<'v>> {
        Ok(heap.alloc(PyObj(schema::simple_task(name, command))))
    }

    fn concat_tasks<'v>(
        #[starlark(args)] tasks: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] kwargs: DictRef<'v>,
        heap: Heap<'v>,
    ) -> starlark::Result<Value<'v>> {
        tasks_with_overrides(tasks, kwargs, Merge::Concat, heap)
    }

    fn combine_tasks<'v>(
        #[starlark(args)] tasks: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] kwargs: DictRef<'v>,
        heap: Heap<'v>,
    ) -> starlark::Result<Value<'v>> {
        tasks_with_overrides(tasks, kwargs, Merge::Combine, heap)
    }

    /// `a ** b`, the target of the power-operator rewrite.
    fn _hearth_pow<'v>(a: Value<'v>, b: Value<'v>, heap: Heap<'v>) -> starlark::Result<Value<'v>> {
        if let (Some(x), Some(y)) = (as_i64(a), as_i64(b))
            && y >= 0
        {
            return match u32::try_from(y).ok().and_then(|y| x.checked_pow(y)) {
                Some(r) => Ok(heap.alloc(r)),
                None => fail(format!(
                    "{x} ** {y} is too large (more than 64 bits); configs do not need numbers \
                     this big"
                )),
            };
        }
        let num = |v: Value| {
            as_i64(v)
                .map(|i| i as f64)
                .or_else(|| StarlarkFloat::unpack_value_opt(v).map(|f| f.0))
        };
        match (num(a), num(b)) {
            (Some(x), Some(y)) => Ok(heap.alloc(x.powf(y))),
            _ => fail(format!(
                "unsupported operand types for **: {} and {}",
                a.get_type(),
                b.get_type()
            )),
        }
    }

    /// `'fmt' % args` with a literal format, the target of the formatting rewrite.
    fn _hearth_format<'v>(fmt: &str, args: Value<'v>) -> starlark::Result<String> {
        let mut a = FormatArgs::new(args);
        crate::format::format(fmt, &mut a).or_else(fail)
    }

    /// `assert cond, msg`, the target of the assert rewrite.
    fn _hearth_assert<'v>(
        cond: Value<'v>,
        #[starlark(default = NoneType)] msg: Value<'v>,
    ) -> starlark::Result<NoneType> {
        if cond.to_bool() {
            Ok(NoneType)
        } else if msg.is_none() {
            fail("assertion failed")
        } else {
            fail(format!("assertion failed: {}", msg.to_str()))
        }
    }

    /// `literal * n`, the target of the repetition rewrite: refuses a result too large to hold.
    fn _hearth_mul<'v>(a: Value<'v>, b: Value<'v>, heap: Heap<'v>) -> starlark::Result<Value<'v>> {
        for (seq, n) in [(a, b), (b, a)] {
            let is_seq = seq.unpack_str().is_some()
                || ListRef::from_value(seq).is_some()
                || TupleRef::from_value(seq).is_some();
            if let (true, Some(n)) = (is_seq, as_i64(n)) {
                let len = i64::from(seq.length()?);
                if len.saturating_mul(n) > MAX_REPEAT {
                    return fail(format!(
                        "repeating a {} of {len} by {n} would make {} items; a config may make at most {MAX_REPEAT} at once",
                        seq.get_type(),
                        len.saturating_mul(n)
                    ));
                }
            }
        }
        a.mul(b, heap)
    }

    /// `include()` is only understood as a top-level statement; anything else ends here.
    fn include(#[starlark(args)] _args: UnpackTuple<Value>) -> starlark::Result<NoneType> {
        fail(
            "include() must be a statement of its own at the top level with a string literal, \
             like include('common.aurora'); it cannot be called inside a function or an \
             expression",
        )
    }

    fn open(#[starlark(args)] _args: UnpackTuple<Value>) -> starlark::Result<NoneType> {
        fail(
            "open() is not supported: a config cannot read files. Put shared definitions in a \
             file beside the config and include('that_file.aurora')",
        )
    }
}

/// The globals every config sees: Starlark's builtins plus Aurora's schema and helpers.
pub fn globals() -> Globals {
    let mut b = GlobalsBuilder::extended_by(&[
        LibraryExtension::Map,
        LibraryExtension::Filter,
        LibraryExtension::Print,
        LibraryExtension::Json,
    ]);
    builtins(&mut b);
    b.namespace("Tasks", tasks_namespace);
    for (name, t) in [
        ("String", Ty::String),
        ("Integer", Ty::Integer),
        ("Float", Ty::Float),
        ("Boolean", Ty::Boolean),
    ] {
        b.set(name, PyType(t));
    }
    let sch = schema::schema();
    for (name, t) in &sch.types {
        b.set(name, PyType(t.clone()));
    }
    for (name, o) in &sch.constants {
        b.set(name, PyObj(o.clone()));
    }
    b.set("Empty", PyEmpty);
    const KB: i64 = 1024;
    for (name, v) in [
        ("B", 1),
        ("BYTES", 1),
        ("KB", KB),
        ("MB", KB * KB),
        ("GB", KB * KB * KB),
        ("TB", KB * KB * KB * KB),
    ] {
        b.set(name, v);
    }
    b.build()
}

/// The jobs a module's `jobs` list holds.
pub fn jobs_of(v: Value) -> Result<Vec<Obj>, String> {
    let Some(items) = list_items(v) else {
        return Err(format!(
            "`jobs` must be a list of Job objects, not {}",
            v.get_type()
        ));
    };
    let job_ty = schema::schema().st("Job");
    items
        .into_iter()
        .enumerate()
        .map(|(i, j)| match j.downcast_ref::<PyObj>() {
            Some(o) if matches!(&*o.0.kind, Kind::Struct { ty, .. } if Arc::ptr_eq(ty, &job_ty)) => {
                Ok(o.0.clone())
            }
            _ => Err(format!(
                "jobs[{i}] must be a Job (or Service), not {}",
                short_repr(j)
            )),
        })
        .collect()
}

/// Resolve a whole object (for callers outside this module).
pub fn interpolate_all(
    obj: &Obj,
    ctx: &mut Ctx,
) -> Result<(Obj, Vec<crate::pystachio::Unbound>), (String, crate::pystachio::TemplateError)> {
    interpolate(obj, ctx)
}
