//! Python's printf-style `%` formatting (`'%03d' % 7`, `'%(name)s' % d`, `'%.2f' % x`), which
//! Starlark's `%` supports only without flags, widths or precision.

/// One value to format, already taken out of the interpreter.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Anything else: its `str()` and `repr()`.
    Other {
        str: String,
        repr: String,
    },
}

/// Where the values come from: a tuple, a dict (`%(name)s`), or a single value.
pub trait Args {
    fn next(&mut self) -> Option<Arg>;
    fn key(&mut self, name: &str) -> Option<Arg>;
    fn left(&self) -> usize;
}

fn as_int(a: &Arg, conv: char) -> Result<i64, String> {
    match a {
        Arg::Int(i) => Ok(*i),
        Arg::Bool(b) => Ok(i64::from(*b)),
        Arg::Float(f) if f.is_finite() => Ok(f.trunc() as i64),
        _ => Err(format!(
            "%{conv} format: a number is required, not {}",
            describe(a)
        )),
    }
}

fn as_float(a: &Arg, conv: char) -> Result<f64, String> {
    match a {
        Arg::Int(i) => Ok(*i as f64),
        Arg::Bool(b) => Ok(f64::from(u8::from(*b))),
        Arg::Float(f) => Ok(*f),
        _ => Err(format!(
            "%{conv} format: a number is required, not {}",
            describe(a)
        )),
    }
}

fn describe(a: &Arg) -> String {
    match a {
        Arg::Other { repr, .. } => repr.clone(),
        _ => "a number".into(),
    }
}

fn str_of(a: &Arg) -> String {
    match a {
        Arg::Int(i) => i.to_string(),
        Arg::Float(f) => crate::pystachio::py_float(*f),
        Arg::Bool(true) => "True".into(),
        Arg::Bool(false) => "False".into(),
        Arg::Other { str, .. } => str.clone(),
    }
}

fn repr_of(a: &Arg) -> String {
    match a {
        Arg::Other { repr, .. } => repr.clone(),
        other => str_of(other),
    }
}

/// `x` in exponent notation the way C and Python write it: `1.500000e+03`.
fn exp_form(x: f64, prec: usize, upper: bool) -> String {
    let s = format!("{x:.prec$e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    let out = format!("{mant}e{sign}{:02}", exp.abs());
    if upper { out.to_uppercase() } else { out }
}

fn general(x: f64, prec: usize, alt: bool, upper: bool) -> String {
    let p = prec.max(1);
    if x == 0.0 {
        return if alt {
            format!("{:.*}", p - 1, 0.0)
        } else {
            "0".into()
        };
    }
    let exp = x.abs().log10().floor() as i32;
    let strip = |s: String| {
        if alt || !s.contains('.') {
            s
        } else {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
    };
    if exp < -4 || exp >= p as i32 {
        let e = exp_form(x, p - 1, upper);
        let (m, rest) = e
            .split_once(if upper { 'E' } else { 'e' })
            .unwrap_or((&e, ""));
        format!(
            "{}{}{rest}",
            strip(m.to_owned()),
            if upper { 'E' } else { 'e' }
        )
    } else {
        let decimals = usize::try_from(p as i32 - 1 - exp).unwrap_or(0);
        strip(format!("{x:.decimals$}"))
    }
}

/// Format like Python's `fmt % args`.
pub fn format(fmt: &str, args: &mut dyn Args) -> Result<String, String> {
    let mut out = String::with_capacity(fmt.len() + 16);
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut key = None;
        if chars.peek() == Some(&'(') {
            chars.next();
            let mut k = String::new();
            let mut depth = 1;
            for c in chars.by_ref() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                k.push(c);
            }
            key = Some(k);
        }
        let (mut left, mut zero, mut plus, mut space, mut alt) =
            (false, false, false, false, false);
        while let Some(&f) = chars.peek() {
            match f {
                '-' => left = true,
                '0' => zero = true,
                '+' => plus = true,
                ' ' => space = true,
                '#' => alt = true,
                _ => break,
            }
            chars.next();
        }
        let number = |chars: &mut std::iter::Peekable<std::str::Chars>,
                      args: &mut dyn Args|
         -> Result<Option<usize>, String> {
            if chars.peek() == Some(&'*') {
                chars.next();
                let a = args
                    .next()
                    .ok_or("not enough arguments for format string")?;
                return Ok(Some(usize::try_from(as_int(&a, '*')?).unwrap_or(0)));
            }
            let mut n = String::new();
            while let Some(&d) = chars.peek() {
                if d.is_ascii_digit() {
                    n.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            Ok(if n.is_empty() { None } else { n.parse().ok() })
        };
        let width = number(&mut chars, args)?.unwrap_or(0);
        let mut prec = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            prec = Some(number(&mut chars, args)?.unwrap_or(0));
        }
        while matches!(chars.peek(), Some('h' | 'l' | 'L')) {
            chars.next();
        }
        let Some(conv) = chars.next() else {
            return Err(
                "incomplete format: a `%` ends the string (write %% for a percent sign)".into(),
            );
        };
        if conv == '%' {
            out.push('%');
            continue;
        }
        let arg = match &key {
            Some(k) => args
                .key(k)
                .ok_or_else(|| format!("format key {k:?} not found"))?,
            None => args
                .next()
                .ok_or("not enough arguments for format string")?,
        };
        let (body, numeric, negative) = match conv {
            'd' | 'i' | 'u' => {
                let v = as_int(&arg, conv)?;
                (v.unsigned_abs().to_string(), true, v < 0)
            }
            'x' | 'X' | 'o' => {
                let v = as_int(&arg, conv)?;
                let m = v.unsigned_abs();
                let b = match conv {
                    'x' => format!("{}{m:x}", if alt { "0x" } else { "" }),
                    'X' => format!("{}{m:X}", if alt { "0X" } else { "" }),
                    _ => format!("{}{m:o}", if alt { "0o" } else { "" }),
                };
                (b, true, v < 0)
            }
            'f' | 'F' => {
                let v = as_float(&arg, conv)?;
                (format!("{:.*}", prec.unwrap_or(6), v.abs()), true, v < 0.0)
            }
            'e' | 'E' => {
                let v = as_float(&arg, conv)?;
                (
                    exp_form(v.abs(), prec.unwrap_or(6), conv == 'E'),
                    true,
                    v < 0.0,
                )
            }
            'g' | 'G' => {
                let v = as_float(&arg, conv)?;
                (
                    general(v.abs(), prec.unwrap_or(6), alt, conv == 'G'),
                    true,
                    v < 0.0,
                )
            }
            's' | 'r' | 'a' => {
                let mut s = if conv == 's' {
                    str_of(&arg)
                } else {
                    repr_of(&arg)
                };
                if let Some(p) = prec {
                    s = s.chars().take(p).collect();
                }
                (s, false, false)
            }
            'c' => {
                let s = match &arg {
                    Arg::Int(i) => u32::try_from(*i)
                        .ok()
                        .and_then(char::from_u32)
                        .map(String::from)
                        .ok_or("%c arg not in range")?,
                    Arg::Other { str, .. } if str.chars().count() == 1 => str.clone(),
                    _ => return Err("%c requires an int or a single character".into()),
                };
                (s, false, false)
            }
            other => {
                return Err(format!(
                    "unsupported format character {other:?} (use %s, %d, %i, %f, %e, %g, %x, \
                     %o, %c or %r)"
                ));
            }
        };
        let sign = if !numeric {
            ""
        } else if negative {
            "-"
        } else if plus {
            "+"
        } else if space {
            " "
        } else {
            ""
        };
        let len = sign.chars().count() + body.chars().count();
        let pad = width.saturating_sub(len);
        if left {
            out.push_str(sign);
            out.push_str(&body);
            out.extend(std::iter::repeat_n(' ', pad));
        } else if zero && numeric {
            out.push_str(sign);
            out.extend(std::iter::repeat_n('0', pad));
            out.push_str(&body);
        } else {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(sign);
            out.push_str(&body);
        }
    }
    if args.left() > 0 {
        return Err("not all arguments converted during string formatting".into());
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    struct Tuple(Vec<Arg>);
    impl Args for Tuple {
        fn next(&mut self) -> Option<Arg> {
            if self.0.is_empty() {
                None
            } else {
                Some(self.0.remove(0))
            }
        }
        fn key(&mut self, _: &str) -> Option<Arg> {
            None
        }
        fn left(&self) -> usize {
            self.0.len()
        }
    }

    fn f(fmt: &str, args: Vec<Arg>) -> String {
        format(fmt, &mut Tuple(args)).unwrap()
    }

    #[test]
    fn formats_like_python() {
        let s = |v: &str| Arg::Other {
            str: v.into(),
            repr: format!("'{v}'"),
        };
        assert_eq!(f("mapper%03d", vec![Arg::Int(7)]), "mapper007");
        assert_eq!(f("%5s|%-5s|", vec![s("ab"), s("cd")]), "   ab|cd   |");
        assert_eq!(
            f(
                "%.2f %+d %x %#o",
                vec![Arg::Float(1.23456), Arg::Int(5), Arg::Int(255), Arg::Int(8)]
            ),
            "1.23 +5 ff 0o10"
        );
        assert_eq!(
            f(
                "%e %g %g",
                vec![Arg::Float(1500.0), Arg::Float(0.0001), Arg::Float(1e20)]
            ),
            "1.500000e+03 0.0001 1e+20"
        );
        assert_eq!(f("%d%% %r", vec![Arg::Int(50), s("x")]), "50% 'x'");
        assert_eq!(f("%s", vec![Arg::Bool(true)]), "True");
        assert!(format("%d %d", &mut Tuple(vec![Arg::Int(1)])).is_err());
        assert!(format("%d", &mut Tuple(vec![Arg::Int(1), Arg::Int(2)])).is_err());
    }
}
