//! The Python that Starlark lacks, handled by small source rewrites that keep every line where it
//! was (so errors point at the line the user wrote):
//!
//! | Python | becomes |
//! |---|---|
//! | `class Profile(Struct):` + `attr = Default(...)` / `Required(...)` / `Type` lines | `Profile = _hearth_struct("Profile", attr = ..., ...)` |
//! | `import os`, `import getpass` (also `import os, getpass`) | `os = _hearth_os`, `getpass = _hearth_getpass` |
//! | `'abc' 'def'` (adjacent string literals) | `('abc' + 'def')` |
//! | `a ** b` | `_hearth_pow(a, b)` |
//! | `'%03d' % x` (a literal format) | `_hearth_format('%03d', x)`: widths, flags, precision |
//! | `assert cond, msg` | `_hearth_assert(cond, msg)` |
//! | `[x] * n`, `'x' * n` (a literal repeated) | `_hearth_mul([x], n)`: refuses results over 10,000,000 items before allocating |
//! | `include('file.aurora')` as a top-level statement | the file is evaluated at that point, into the same globals |
//!
//! Anything else Python has and Starlark does not (other imports, `try`, `while`, classes with
//! methods or another base) is reported here with its line and column and what to write instead.

use crate::error::Unsupported;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum K {
    Name,
    Number,
    Str,
    Op,
    /// The end of a logical line (a newline outside brackets).
    Newline,
    Comment,
}

#[derive(Debug, Clone)]
struct Tok {
    kind: K,
    start: usize,
    end: usize,
    line: usize,
    col: usize,
}

/// A part of a rewritten file: code to evaluate, or a file to include at that point.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    /// Source text; lines before the chunk are blank so that line numbers stay true.
    Code(String),
    Include {
        path: String,
        line: usize,
        col: usize,
    },
}

const KEYWORDS: &[&str] = &[
    "and", "as", "assert", "break", "class", "continue", "def", "del", "elif", "else", "except",
    "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal", "not",
    "or", "pass", "raise", "return", "try", "while", "with", "yield", "async", "await",
];

fn lex(src: &str) -> Result<Vec<Tok>, Unsupported> {
    let b = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let mut line_start = 0;
    let mut depth: i32 = 0;
    while i < b.len() {
        let c = b[i];
        let col = i - line_start + 1;
        match c {
            b'\n' => {
                if depth <= 0 {
                    toks.push(Tok {
                        kind: K::Newline,
                        start: i,
                        end: i + 1,
                        line,
                        col,
                    });
                }
                i += 1;
                line += 1;
                line_start = i;
            }
            b' ' | b'\t' | b'\r' | b'\x0c' => i += 1,
            b'\\' if b.get(i + 1) == Some(&b'\n') => {
                i += 2;
                line += 1;
                line_start = i;
            }
            b'#' => {
                let end = src[i..].find('\n').map_or(b.len(), |n| i + n);
                toks.push(Tok {
                    kind: K::Comment,
                    start: i,
                    end,
                    line,
                    col,
                });
                i = end;
            }
            _ => {
                // String literal, possibly with a prefix.
                let mut j = i;
                while j < b.len() && j - i < 2 && b"rRbBuUfF".contains(&b[j]) {
                    j += 1;
                }
                if j < b.len()
                    && (b[j] == b'\'' || b[j] == b'"')
                    && (j == i || is_prefix(&src[i..j]))
                {
                    let q = b[j];
                    let triple = b.get(j + 1) == Some(&q) && b.get(j + 2) == Some(&q);
                    let mut k = if triple { j + 3 } else { j + 1 };
                    let (sline, scol) = (line, col);
                    loop {
                        if k >= b.len() {
                            return Err(Unsupported {
                                line: sline,
                                col: scol,
                                what: "a string literal that is never closed".into(),
                                instead: "close the string with the same quotes it starts with"
                                    .into(),
                            });
                        }
                        if b[k] == b'\\' {
                            if b.get(k + 1) == Some(&b'\n') {
                                line += 1;
                                line_start = k + 2;
                            }
                            k += 2;
                            continue;
                        }
                        if b[k] == b'\n' {
                            if !triple {
                                return Err(Unsupported {
                                    line: sline,
                                    col: scol,
                                    what: "a string literal that runs past the end of its line"
                                        .into(),
                                    instead: "close it on the same line, or use triple quotes \
                                              for text over several lines"
                                        .into(),
                                });
                            }
                            line += 1;
                            line_start = k + 1;
                        }
                        if b[k] == q
                            && (!triple || (b.get(k + 1) == Some(&q) && b.get(k + 2) == Some(&q)))
                        {
                            k += if triple { 3 } else { 1 };
                            break;
                        }
                        k += 1;
                    }
                    toks.push(Tok {
                        kind: K::Str,
                        start: i,
                        end: k,
                        line: sline,
                        col: scol,
                    });
                    i = k;
                    continue;
                }
                let ch = src[i..].chars().next().unwrap_or(' ');
                if ch.is_alphabetic() || ch == '_' {
                    let mut k = i;
                    for (off, cc) in src[i..].char_indices() {
                        if cc.is_alphanumeric() || cc == '_' {
                            k = i + off + cc.len_utf8();
                        } else {
                            break;
                        }
                    }
                    toks.push(Tok {
                        kind: K::Name,
                        start: i,
                        end: k,
                        line,
                        col,
                    });
                    i = k;
                } else if ch.is_ascii_digit()
                    || (ch == '.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
                {
                    let mut k = i + 1;
                    while k < b.len()
                        && (b[k].is_ascii_alphanumeric()
                            || b[k] == b'_'
                            || b[k] == b'.'
                            || ((b[k] == b'+' || b[k] == b'-')
                                && matches!(b[k - 1], b'e' | b'E')
                                && !src[i..k].starts_with("0x")))
                    {
                        k += 1;
                    }
                    toks.push(Tok {
                        kind: K::Number,
                        start: i,
                        end: k,
                        line,
                        col,
                    });
                    i = k;
                } else {
                    let two = src.get(i..i + 2).unwrap_or("");
                    let len = if [
                        "**", "//", "==", "!=", "<=", ">=", "->", "+=", "-=", "*=", "/=", "%=",
                        "&=", "|=", "^=", "<<", ">>",
                    ]
                    .contains(&two)
                    {
                        2
                    } else {
                        ch.len_utf8()
                    };
                    match c {
                        b'(' | b'[' | b'{' => depth += 1,
                        b')' | b']' | b'}' => depth -= 1,
                        _ => {}
                    }
                    toks.push(Tok {
                        kind: K::Op,
                        start: i,
                        end: i + len,
                        line,
                        col,
                    });
                    i += len;
                }
            }
        }
    }
    toks.push(Tok {
        kind: K::Newline,
        start: b.len(),
        end: b.len(),
        line,
        col: b.len() - line_start + 1,
    });
    Ok(toks)
}

fn is_prefix(p: &str) -> bool {
    matches!(
        p.to_ascii_lowercase().as_str(),
        "r" | "b" | "u" | "f" | "br" | "rb" | "fr" | "rf"
    )
}

/// An edit of the source: replace `start..end` with `text`; `order` sorts edits at one offset.
#[derive(Debug)]
struct Edit {
    start: usize,
    end: usize,
    text: String,
    order: u8,
}

struct Src<'a> {
    src: &'a str,
    toks: Vec<Tok>,
    edits: Vec<Edit>,
}

impl Src<'_> {
    fn text(&self, t: &Tok) -> &str {
        &self.src[t.start..t.end]
    }

    fn is_op(&self, i: usize, op: &str) -> bool {
        self.toks
            .get(i)
            .is_some_and(|t| t.kind == K::Op && self.text(t) == op)
    }

    fn is_name(&self, i: usize, name: &str) -> bool {
        self.toks
            .get(i)
            .is_some_and(|t| t.kind == K::Name && self.text(t) == name)
    }

    fn err(&self, i: usize, what: impl Into<String>, instead: impl Into<String>) -> Unsupported {
        let t = &self.toks[i.min(self.toks.len() - 1)];
        Unsupported {
            line: t.line,
            col: t.col,
            what: what.into(),
            instead: instead.into(),
        }
    }

    /// Replace the text of tokens `a..=b` (keeping newlines, so lines do not move).
    fn blank(&mut self, a: usize, b: usize) {
        let (s, e) = (self.toks[a].start, self.toks[b].end);
        let text: String = self.src[s..e].chars().filter(|c| *c == '\n').collect();
        self.edits.push(Edit {
            start: s,
            end: e,
            text,
            order: 1,
        });
    }

    fn insert(&mut self, at: usize, text: &str, order: u8) {
        self.edits.push(Edit {
            start: at,
            end: at,
            text: text.to_owned(),
            order,
        });
    }

    fn replace(&mut self, i: usize, text: &str) {
        let t = &self.toks[i];
        self.edits.push(Edit {
            start: t.start,
            end: t.end,
            text: text.to_owned(),
            order: 1,
        });
    }

    /// Index of the bracket matching the opener at `i`.
    fn close_of(&self, i: usize) -> Option<usize> {
        let mut d = 0i32;
        for (j, t) in self.toks.iter().enumerate().skip(i) {
            if t.kind != K::Op {
                continue;
            }
            match self.text(t) {
                "(" | "[" | "{" => d += 1,
                ")" | "]" | "}" => {
                    d -= 1;
                    if d == 0 {
                        return Some(j);
                    }
                }
                _ => {}
            }
        }
        None
    }

    fn open_of(&self, i: usize) -> Option<usize> {
        let mut d = 0i32;
        for j in (0..=i).rev() {
            let t = &self.toks[j];
            if t.kind != K::Op {
                continue;
            }
            match self.text(t) {
                ")" | "]" | "}" => d += 1,
                "(" | "[" | "{" => {
                    d -= 1;
                    if d == 0 {
                        return Some(j);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Whether the token at `i` can end an operand.
    fn ends_operand(&self, i: usize) -> bool {
        let t = &self.toks[i];
        match t.kind {
            K::Name => !KEYWORDS.contains(&self.text(t)),
            K::Number | K::Str => true,
            K::Op => matches!(self.text(t), ")" | "]" | "}"),
            _ => false,
        }
    }

    /// The index of the previous token that is not a comment.
    fn prev(&self, i: usize) -> Option<usize> {
        (0..i).rev().find(|&j| self.toks[j].kind != K::Comment)
    }

    fn next(&self, i: usize) -> usize {
        (i + 1..self.toks.len())
            .find(|&j| self.toks[j].kind != K::Comment)
            .unwrap_or(self.toks.len() - 1)
    }
}

/// Logical lines: (first token, last token before the Newline) at bracket depth 0.
fn logical_lines(s: &Src) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, t) in s.toks.iter().enumerate() {
        match t.kind {
            K::Newline => {
                if let Some(a) = start.take() {
                    let mut b = i - 1;
                    while s.toks[b].kind == K::Comment && b > a {
                        b -= 1;
                    }
                    out.push((a, b));
                }
            }
            K::Comment => {}
            _ => {
                if start.is_none() {
                    start = Some(i);
                }
            }
        }
    }
    out
}

/// Rewrite a config's source; `include` statements split it into chunks.
pub fn rewrite(src: &str) -> Result<Vec<Chunk>, Unsupported> {
    let toks = lex(src)?;
    let mut s = Src {
        src,
        toks,
        edits: Vec::new(),
    };
    let lines = logical_lines(&s);
    let mut includes: Vec<(usize, usize, String, usize, usize)> = Vec::new();
    let mut li = 0;
    while li < lines.len() {
        let (a, b) = lines[li];
        let first = s.text(&s.toks[a]).to_owned();
        let kind = s.toks[a].kind;
        if kind == K::Name {
            match first.as_str() {
                "import" => rewrite_import(&mut s, a, b)?,
                "from" => {
                    return Err(s.err(
                        a,
                        "`from ... import ...` is not supported",
                        "write `import os` or `import getpass` and use os.getenv(...), \
                         os.environ, getpass.getuser()",
                    ));
                }
                "class" => {
                    li = rewrite_class(&mut s, &lines, li)?;
                    continue;
                }
                "try" | "except" | "finally" => {
                    return Err(s.err(
                        a,
                        "try/except is not supported",
                        "check the condition with `if` instead, or call fail(\"message\") to \
                         stop with an error",
                    ));
                }
                "while" => {
                    return Err(s.err(
                        a,
                        "while loops are not supported",
                        "use `for i in range(n):` with a bound",
                    ));
                }
                "with" | "global" | "nonlocal" | "del" | "yield" | "async" | "await" => {
                    return Err(s.err(
                        a,
                        format!("`{first}` is not supported"),
                        "write plain assignments, functions and for loops",
                    ));
                }
                "assert" => {
                    // `assert cond, msg` → `_hearth_assert(cond, msg)`
                    s.replace(a, "_hearth_assert(");
                    let end = s.toks[b].end;
                    s.insert(end, ")", 0);
                }
                "raise" => {
                    return Err(s.err(
                        a,
                        "raise is not supported",
                        "call fail(\"message\") to stop with an error",
                    ));
                }
                "include"
                    if s.toks[a].col == 1
                        && b == a + 3
                        && s.is_op(a + 1, "(")
                        && s.toks[a + 2].kind == K::Str
                        && s.is_op(a + 3, ")") =>
                {
                    let lit = s.text(&s.toks[a + 2]).to_owned();
                    let Some(path) = string_value(&lit) else {
                        return Err(s.err(
                            a + 2,
                            "an include() path that is not a plain string",
                            "write include('file.aurora') with a plain quoted path",
                        ));
                    };
                    includes.push((s.toks[a].start, s.toks[b].end, path, s.toks[a].line, 1));
                    s.blank(a, b);
                }
                _ => {}
            }
        }
        li += 1;
    }
    adjacent_strings(&mut s);
    power(&mut s)?;
    percent(&mut s)?;
    repeat(&mut s);
    let text = apply(src, &mut s.edits);
    if includes.is_empty() {
        return Ok(vec![Chunk::Code(text)]);
    }
    // Split at the include statements (which are blank now; offsets moved by the edits, so
    // split on lines, which did not move).
    let mut chunks = Vec::new();
    let lines_of: Vec<&str> = text.split_inclusive('\n').collect();
    let mut from_line = 0; // 0-based index of the first line of the next code chunk
    for (_, _, path, line, col) in includes {
        let upto = line - 1;
        chunks.push(Chunk::Code(code_chunk(&lines_of, from_line, upto)));
        chunks.push(Chunk::Include { path, line, col });
        from_line = upto + 1;
    }
    chunks.push(Chunk::Code(code_chunk(
        &lines_of,
        from_line,
        lines_of.len(),
    )));
    Ok(chunks)
}

/// Lines `from..upto` of the text, with the lines before them blank.
fn code_chunk(lines: &[&str], from: usize, upto: usize) -> String {
    let mut out = "\n".repeat(from.min(lines.len()));
    for l in lines.iter().take(upto.min(lines.len())).skip(from) {
        out.push_str(l);
    }
    out
}

fn apply(src: &str, edits: &mut [Edit]) -> String {
    edits.sort_by_key(|e| (e.start, e.order));
    let mut out = String::with_capacity(src.len() + 64);
    let mut pos = 0;
    for e in edits.iter() {
        if e.start < pos {
            continue;
        }
        out.push_str(&src[pos..e.start]);
        out.push_str(&e.text);
        pos = e.end;
    }
    out.push_str(&src[pos..]);
    out
}

/// The value of a simple string literal (no escapes beyond `\\`, `\'`, `\"`).
fn string_value(lit: &str) -> Option<String> {
    let l = lit.trim_start_matches(['r', 'R', 'u', 'U']);
    let q = l.chars().next()?;
    let inner = l.strip_prefix(q)?.strip_suffix(q)?;
    if inner.contains('\n') {
        return None;
    }
    Some(
        inner
            .replace("\\\\", "\\")
            .replace(&format!("\\{q}"), &q.to_string()),
    )
}

fn rewrite_import(s: &mut Src, a: usize, b: usize) -> Result<(), Unsupported> {
    let mut names = Vec::new();
    let mut i = a + 1;
    while i <= b {
        let t = &s.toks[i];
        if t.kind != K::Name {
            return Err(s.err(i, "this import form is not supported", "write `import os`"));
        }
        let module = s.text(t).to_owned();
        let mut alias = module.clone();
        if s.is_name(i + 1, "as") && i + 2 <= b {
            alias = s.text(&s.toks[i + 2]).to_owned();
            i += 2;
        }
        if s.is_op(i + 1, ".") {
            return Err(s.err(
                i,
                format!("importing {module}.* is not supported"),
                "only `import os` and `import getpass` are available",
            ));
        }
        match module.as_str() {
            "os" | "getpass" => names.push(format!("{alias} = _hearth_{module}")),
            other => {
                return Err(s.err(
                    i,
                    format!(
                        "`import {other}` is not supported: a config is evaluated without \
                             Python's modules"
                    ),
                    "only `import os` (os.getenv, os.environ) and `import getpass` \
                     (getpass.getuser()) are available; Aurora's schema objects need no import",
                ));
            }
        }
        i += 1;
        if i <= b {
            if !s.is_op(i, ",") {
                return Err(s.err(i, "this import form is not supported", "write `import os`"));
            }
            i += 1;
        }
    }
    let (start, end) = (s.toks[a].start, s.toks[b].end);
    let newlines: String = s.src[start..end].chars().filter(|c| *c == '\n').collect();
    s.edits.push(Edit {
        start,
        end,
        text: format!("{}{newlines}", names.join("; ")),
        order: 1,
    });
    Ok(())
}

/// `class Name(Struct):` and its attribute lines; returns the index of the next logical line.
fn rewrite_class(s: &mut Src, lines: &[(usize, usize)], li: usize) -> Result<usize, Unsupported> {
    let (a, b) = lines[li];
    let indent = s.toks[a].col;
    let ok_header = b == a + 5
        && s.toks[a + 1].kind == K::Name
        && s.is_op(a + 2, "(")
        && s.is_op(a + 4, ")")
        && s.is_op(a + 5, ":");
    if !ok_header {
        return Err(s.err(
            a,
            "this class form is not supported",
            "only `class Name(Struct):` followed by indented `attr = Default(...)`, \
             `attr = Required(...)` or `attr = Type` lines is supported",
        ));
    }
    let name = s.text(&s.toks[a + 1]).to_owned();
    let base = s.text(&s.toks[a + 3]).to_owned();
    if base != "Struct" {
        return Err(s.err(
            a + 3,
            format!("class {name}({base}) is not supported: only Struct can be a base class"),
            format!(
                "write class {name}(Struct): and repeat the attributes you need, or make a \
                 {base} instance and copy it with {base}(...)(attr=value)"
            ),
        ));
    }
    s.edits.push(Edit {
        start: s.toks[a].start,
        end: s.toks[a + 5].end,
        text: format!("{name} = _hearth_struct(\"{name}\""),
        order: 1,
    });
    let mut j = li + 1;
    let mut last_end = s.toks[a + 5].end;
    while j < lines.len() {
        let (ba, bb) = lines[j];
        if s.toks[ba].col <= indent {
            break;
        }
        let first = s.toks[ba].clone();
        let text = s.text(&first).to_owned();
        if first.kind == K::Str && ba == bb {
            s.blank(ba, bb); // a docstring
        } else if first.kind == K::Name && text == "pass" && ba == bb {
            s.blank(ba, bb);
        } else if first.kind == K::Name && text == "def" {
            return Err(s.err(
                ba,
                format!("class {name} has a method: classes with methods are not supported"),
                "keep only `attr = Default(...)`/`Required(...)` lines in the class and write \
                 the method as a function outside it, taking the object as an argument",
            ));
        } else if first.kind == K::Name
            && s.is_op(ba + 1, "=")
            && !KEYWORDS.contains(&text.as_str())
        {
            s.insert(first.start, ", ", 2);
            last_end = s.toks[bb].end;
        } else {
            return Err(s.err(
                ba,
                format!("class {name}(Struct) may only hold attribute lines"),
                "write each attribute as `name = Default(Type, value)`, `name = Required(Type)` \
                 or `name = Type`",
            ));
        }
        j += 1;
    }
    s.insert(last_end, ")", 0);
    Ok(j)
}

/// `'a' 'b'` → `('a' + 'b')`.
fn adjacent_strings(s: &mut Src) {
    let n = s.toks.len();
    let mut i = 0;
    while i < n {
        if s.toks[i].kind != K::Str {
            i += 1;
            continue;
        }
        let mut run = vec![i];
        let mut j = s.next(i);
        while j < n && s.toks[j].kind == K::Str {
            run.push(j);
            j = s.next(j);
        }
        if run.len() > 1 {
            let first = s.toks[run[0]].start;
            s.insert(first, "(", 3);
            for &k in &run[..run.len() - 1] {
                let e = s.toks[k].end;
                s.insert(e, " +", 0);
            }
            let last = s.toks[run[run.len() - 1]].end;
            s.insert(last, ")", 0);
        }
        i = run[run.len() - 1] + 1;
    }
}

/// `a ** b` → `_hearth_pow(a, b)`.
fn power(s: &mut Src) -> Result<(), Unsupported> {
    for i in 0..s.toks.len() {
        if !s.is_op(i, "**") {
            continue;
        }
        let Some(p) = s.prev(i) else { continue };
        if !s.ends_operand(p) {
            continue; // `f(**kwargs)`, `def f(**kw)`
        }
        let start = operand_start(s, p);
        let end = operand_end(s, s.next(i))
            .ok_or_else(|| s.err(i, "a `**` without a right operand", "write `a ** b`"))?;
        let (st, en) = (s.toks[start].start, s.toks[end].end);
        s.insert(st, "_hearth_pow(", 4);
        s.replace(i, ",");
        s.insert(en, ")", 0);
    }
    Ok(())
}

/// `'fmt' % args` → `_hearth_format('fmt', args)`, for Python's printf-style formatting
/// (widths, precision and flags, which Starlark's `%` lacks). Only a string literal on the left
/// is rewritten; `x % y` on numbers is left alone.
fn percent(s: &mut Src) -> Result<(), Unsupported> {
    for i in 0..s.toks.len() {
        if !s.is_op(i, "%") {
            continue;
        }
        let Some(p) = s.prev(i) else { continue };
        if s.toks[p].kind != K::Str {
            continue;
        }
        // The whole run of adjacent literals is the format.
        let mut start = p;
        while let Some(q) = s.prev(start) {
            if s.toks[q].kind == K::Str {
                start = q;
            } else {
                break;
            }
        }
        let end = operand_end(s, s.next(i))
            .ok_or_else(|| s.err(i, "a `%` without a right operand", "write 'fmt' % value"))?;
        let (st, en) = (s.toks[start].start, s.toks[end].end);
        s.insert(st, "_hearth_format(", 2);
        s.replace(i, ",");
        s.insert(en, ")", 0);
    }
    Ok(())
}

/// `[x] * n`, `'x' * n` (a list, tuple or string literal on either side) →
/// `_hearth_mul(..., n)`, which refuses a repetition too large to hold before allocating it.
fn repeat(s: &mut Src) {
    for i in 0..s.toks.len() {
        if !s.is_op(i, "*") {
            continue;
        }
        let Some(p) = s.prev(i) else { continue };
        if !s.ends_operand(p) {
            continue; // `f(*args)`, `def f(*a)`, `lambda *a`
        }
        let n = s.next(i);
        let literal_left = s.toks[p].kind == K::Str
            || (s.is_op(p, "]")
                && s.open_of(p)
                    .is_some_and(|o| s.prev(o).is_none_or(|q| !s.ends_operand(q))));
        let literal_right = s.toks.get(n).is_some_and(|t| t.kind == K::Str) || s.is_op(n, "[");
        if !literal_left && !literal_right {
            continue;
        }
        let start = operand_start(s, p);
        // Leave term chains (`a * b * c`, `x / y * z`) alone: their nesting is not ours to redo.
        if s.prev(start)
            .is_some_and(|q| ["*", "/", "//", "%"].iter().any(|op| s.is_op(q, op)))
        {
            continue;
        }
        let Some(end) = operand_end(s, n) else {
            continue;
        };
        if ["*", "/", "//", "%"]
            .iter()
            .any(|op| s.is_op(s.next(end), op))
        {
            continue;
        }
        let (st, en) = (s.toks[start].start, s.toks[end].end);
        s.insert(st, "_hearth_mul(", 1);
        s.replace(i, ",");
        s.insert(en, ")", 0);
    }
}

fn operand_start(s: &Src, mut i: usize) -> usize {
    loop {
        let t = &s.toks[i];
        let is_closer = t.kind == K::Op && matches!(s.text(t), ")" | "]" | "}");
        if is_closer {
            let Some(o) = s.open_of(i) else { return i };
            let opener = s.text(&s.toks[o]);
            if (opener == "(" || opener == "[")
                && o > 0
                && let Some(p) = s.prev(o)
                && s.ends_operand(p)
                && s.toks[p].kind != K::Number
            {
                i = p;
                continue;
            }
            return o;
        }
        if let Some(p) = s.prev(i)
            && s.is_op(p, ".")
            && let Some(pp) = s.prev(p)
            && s.ends_operand(pp)
        {
            i = pp;
            continue;
        }
        return i;
    }
}

fn operand_end(s: &Src, mut i: usize) -> Option<usize> {
    while s.is_op(i, "-") || s.is_op(i, "+") || s.is_op(i, "~") {
        i = s.next(i);
    }
    let t = s.toks.get(i)?;
    let mut end = match t.kind {
        K::Name | K::Number | K::Str => i,
        K::Op if matches!(s.text(t), "(" | "[" | "{") => s.close_of(i)?,
        _ => return None,
    };
    loop {
        let n = s.next(end);
        if s.is_op(n, "(") || s.is_op(n, "[") {
            end = s.close_of(n)?;
        } else if s.is_op(n, ".") && s.toks.get(s.next(n)).is_some_and(|t| t.kind == K::Name) {
            end = s.next(n);
        } else if s.is_op(n, "**") {
            end = operand_end(s, s.next(n))?;
        } else {
            return Some(end);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn code(src: &str) -> String {
        match rewrite(src).unwrap().as_slice() {
            [Chunk::Code(c)] => c.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn class_blocks_become_struct_calls_on_the_same_lines() {
        let src = "class Profile(Struct):\n  \"\"\"doc\"\"\"\n  a = Default(String, 'x')  # c\n  b = Required(\n    Integer)\n  c = String\nx = 1\n";
        let out = code(src);
        assert_eq!(
            out,
            "Profile = _hearth_struct(\"Profile\"\n  \n  , a = Default(String, 'x')  # c\n  , b = Required(\n    Integer)\n  , c = String)\nx = 1\n"
        );
        assert_eq!(out.lines().count(), src.lines().count());
    }

    #[test]
    fn imports_of_os_and_getpass_bind_the_provided_modules() {
        assert_eq!(
            code("import os, getpass\n"),
            "os = _hearth_os; getpass = _hearth_getpass\n"
        );
    }

    #[test]
    fn other_imports_fail_with_line_and_column() {
        let e = rewrite("x = 1\nimport sys\n").unwrap_err();
        assert_eq!((e.line, e.col), (2, 8));
        assert!(e.what.contains("import sys"), "{e:?}");
    }

    #[test]
    fn classes_with_methods_are_refused() {
        let e =
            rewrite("class P(Struct):\n  a = String\n  def f(self):\n    return 1\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.what.contains("method"), "{e:?}");
    }

    #[test]
    fn adjacent_strings_are_joined() {
        assert_eq!(code("x = ('a '\n     'b')\n"), "x = (('a ' +\n     'b'))\n");
    }

    #[test]
    fn power_becomes_a_call() {
        assert_eq!(code("x = 10**9\n"), "x = _hearth_pow(10,9)\n");
        assert_eq!(
            code("y = -a.b ** f(2)[0] ** 2 * 3\n"),
            "y = -_hearth_pow(a.b , _hearth_pow(f(2)[0] , 2)) * 3\n"
        );
        assert_eq!(code("f(**kw)\n"), "f(**kw)\n");
    }

    #[test]
    fn percent_formatting_of_literals_becomes_a_call() {
        assert_eq!(
            code("n = 'm%03d' % i + 'x'\n"),
            "n = _hearth_format('m%03d' , i) + 'x'\n"
        );
        assert_eq!(code("r = a % b\n"), "r = a % b\n");
    }

    #[test]
    fn repetition_of_a_literal_becomes_a_checked_call() {
        assert_eq!(
            code("x = [0] * 10**8\n"),
            "x = _hearth_mul([0] , _hearth_pow(10,8))\n"
        );
        assert_eq!(code("y = n * 'ab'\n"), "y = _hearth_mul(n , 'ab')\n");
        assert_eq!(
            code("z = a * b\nf(*args)\nw = l[0] * 2\n"),
            "z = a * b\nf(*args)\nw = l[0] * 2\n"
        );
    }

    #[test]
    fn assert_becomes_a_call() {
        assert_eq!(
            code("assert x == 1, 'no'  # c\n"),
            "_hearth_assert( x == 1, 'no')  # c\n"
        );
    }

    #[test]
    fn include_splits_the_file_keeping_line_numbers() {
        let chunks = rewrite("a = 1\ninclude('b.aurora')\nc = a\n").unwrap();
        assert_eq!(
            chunks,
            vec![
                Chunk::Code("a = 1\n".into()),
                Chunk::Include {
                    path: "b.aurora".into(),
                    line: 2,
                    col: 1
                },
                Chunk::Code("\n\nc = a\n".into()),
            ]
        );
    }

    #[test]
    fn triple_quoted_strings_with_quotes_inside_are_left_alone() {
        let src = "p = Process(cmdline = '''\n  echo \"it's\" 'ok'\n''')\n";
        assert_eq!(code(src), src);
    }
}
