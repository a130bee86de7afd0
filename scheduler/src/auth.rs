//! Security, Aurora's model with Hearth's hardening.
//!
//! * Users and roles from an INI file (Apache Shiro's format, as Aurora reads it):
//!   ```ini
//!   [users]
//!   alice = $argon2id$v=19$m=19456,t=2,p=1$...$..., admin
//!   bob = $argon2id$..., www-data-deployer
//!   [roles]
//!   admin = *
//!   www-data-deployer = thrift.AuroraSchedulerManager:createJob:www-data, thrift.AuroraSchedulerManager:killTasks:www-data
//!   ```
//!   Passwords are argon2id PHC strings (`hearth scheduler hash-password`); a plaintext password
//!   is refused at start unless `--allow-plaintext-passwords`.
//! * Permissions are Shiro wildcard permissions: `:`-separated parts, each a `,`-list or `*`; a
//!   shorter permission covers every longer one it prefixes (`thrift.AuroraSchedulerManager:
//!   createJob:www-data` covers `...:createJob:www-data:prod:hello`); `*` covers everything.
//!   Matching is case-insensitive, as in Shiro.
//! * Agents and executors authenticate with a bearer token, compared in constant time.
//!
//! Secrets (passwords, tokens, the `Authorization` header) are never logged or stored.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, PasswordHash};
use base64::Engine;
use subtle::ConstantTimeEq;

/// A secret a user authenticates with.
#[derive(Clone)]
enum Secret {
    Argon2(String),
    Plain(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Secret::Argon2(_) => "Argon2(..)",
            Secret::Plain(_) => "Plain(..)",
        })
    }
}

#[derive(Debug, Clone)]
struct User {
    secret: Secret,
    roles: Vec<String>,
}

/// One Shiro wildcard permission: parts of `,`-separated alternatives, lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    parts: Vec<Vec<String>>,
}

impl Permission {
    pub fn parse(text: &str) -> Permission {
        Permission {
            parts: text
                .trim()
                .split(':')
                .map(|p| {
                    p.split(',')
                        .map(|s| s.trim().to_ascii_lowercase())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .collect(),
        }
    }

    /// Whether holding `self` grants `wanted` (Shiro's `implies`).
    pub fn implies(&self, wanted: &Permission) -> bool {
        for (i, want) in wanted.parts.iter().enumerate() {
            let Some(have) = self.parts.get(i) else {
                // A shorter permission covers everything below it.
                return true;
            };
            if have.iter().any(|h| h == "*") {
                continue;
            }
            if !want.iter().all(|w| have.contains(w)) {
                return false;
            }
        }
        // Parts beyond the wanted ones must all be wildcards.
        self.parts
            .iter()
            .skip(wanted.parts.len())
            .all(|p| p.iter().any(|h| h == "*"))
    }
}

/// Why a security file is refused: every problem, with its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", problems.join("; "))]
pub struct SecurityFileError {
    pub problems: Vec<String>,
}

/// Users and roles. Its `Debug` shows user and role names, never a secret.
pub struct Security {
    users: HashMap<String, User>,
    roles: HashMap<String, Vec<Permission>>,
    /// Credentials verified before: user -> the exact header bytes (memory only), so argon2
    /// runs once per password and not on every request.
    verified: Mutex<HashMap<String, Vec<u8>>>,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<&String> = self.users.keys().collect();
        users.sort();
        let mut roles: Vec<&String> = self.roles.keys().collect();
        roles.sort();
        f.debug_struct("Security")
            .field("users", &users)
            .field("roles", &roles)
            .finish_non_exhaustive()
    }
}

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No or wrong credentials (401).
    Unauthenticated(String),
    /// Authenticated, but without the permission (403).
    Forbidden { user: String, permission: String },
}

/// Split a `[users]` value into the password and its roles. An argon2 PHC string contains
/// commas in its parameters, so it ends at the first comma after its last `$`.
fn split_user_value(value: &str) -> (String, Vec<String>) {
    let value = value.trim();
    let cut = if value.starts_with('$') {
        let last_dollar = value.rfind('$').unwrap_or(0);
        value[last_dollar..].find(',').map(|i| last_dollar + i)
    } else {
        value.find(',')
    };
    let (secret, rest) = match cut {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, ""),
    };
    let roles = rest
        .split(',')
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .collect();
    (secret.trim().to_owned(), roles)
}

impl Security {
    /// Parse the INI text. Every problem is reported at once, by line.
    pub fn parse(text: &str, allow_plaintext: bool) -> Result<Security, SecurityFileError> {
        let mut problems = Vec::new();
        let mut users = HashMap::new();
        let mut roles = HashMap::new();
        let mut section = String::new();
        for (n, line) in text.lines().enumerate() {
            let n = n + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(s) = line.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                section = s.trim().to_ascii_lowercase();
                if section != "users" && section != "roles" && section != "main" {
                    problems.push(format!(
                        "line {n}: unknown section [{s}]; use [users] and [roles]"
                    ));
                }
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                problems.push(format!("line {n}: expected NAME = VALUE"));
                continue;
            };
            let name = name.trim().to_owned();
            match section.as_str() {
                "users" => {
                    let (secret, user_roles) = split_user_value(value);
                    let secret = if secret.starts_with("$argon2") {
                        match PasswordHash::new(&secret) {
                            Ok(_) => Secret::Argon2(secret),
                            Err(e) => {
                                problems.push(format!(
                                    "line {n}: user {name}: the password hash is not a valid \
                                     PHC string ({e}); make one with hearth scheduler hash-password"
                                ));
                                continue;
                            }
                        }
                    } else if allow_plaintext {
                        Secret::Plain(secret)
                    } else {
                        problems.push(format!(
                            "line {n}: user {name}: the password is in plain text; store an \
                             argon2id hash (hearth scheduler hash-password) or start with \
                             --allow-plaintext-passwords"
                        ));
                        continue;
                    };
                    users.insert(
                        name,
                        User {
                            secret,
                            roles: user_roles,
                        },
                    );
                }
                "roles" => {
                    let perms = value
                        .split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(Permission::parse)
                        .collect::<Vec<_>>();
                    // A permission with `,`-alternatives inside a part cannot be told from a list
                    // of permissions; like Shiro, a role's value is a list of whole permissions.
                    roles.insert(name, perms);
                }
                _ => {}
            }
        }
        for (name, u) in &users {
            for r in &u.roles {
                if !roles.contains_key(r) {
                    problems.push(format!("user {name}: role {r} is not defined in [roles]"));
                }
            }
        }
        if !problems.is_empty() {
            problems.sort();
            return Err(SecurityFileError { problems });
        }
        Ok(Security {
            users,
            roles,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Who sent `authorization` (an HTTP Basic header value).
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<String, AuthFailure> {
        let Some(header) = authorization else {
            return Err(AuthFailure::Unauthenticated(
                "authentication required: send HTTP Basic credentials (--user/--password, \
                 HEARTH_USER/HEARTH_PASSWORD or ~/.netrc)"
                    .into(),
            ));
        };
        let bad = || AuthFailure::Unauthenticated("wrong user name or password".into());
        let text = std::str::from_utf8(header).map_err(|_| bad())?;
        let Some(b64) = text
            .strip_prefix("Basic ")
            .or_else(|| text.strip_prefix("basic "))
        else {
            return Err(bad());
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let Some((user, password)) = decoded.split_once(':') else {
            return Err(bad());
        };
        let Some(u) = self.users.get(user) else {
            // Spend the same time as for a real user, so names cannot be probed by timing.
            let _ = Argon2::default().verify_password(password.as_bytes(), DUMMY_HASH);
            return Err(bad());
        };
        {
            let cache = self
                .verified
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(known) = cache.get(user)
                && bool::from(known.as_slice().ct_eq(header))
            {
                return Ok(user.to_owned());
            }
        }
        let ok = match &u.secret {
            Secret::Argon2(hash) => Argon2::default()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok(),
            Secret::Plain(p) => bool::from(p.as_bytes().ct_eq(password.as_bytes())),
        };
        if !ok {
            return Err(bad());
        }
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(user.to_owned(), header.to_vec());
        Ok(user.to_owned())
    }

    /// Whether `user` holds a permission covering `wanted`.
    pub fn permits(&self, user: &str, wanted: &str) -> bool {
        let wanted = Permission::parse(wanted);
        self.users.get(user).is_some_and(|u| {
            u.roles.iter().any(|r| {
                self.roles
                    .get(r)
                    .is_some_and(|ps| ps.iter().any(|p| p.implies(&wanted)))
            })
        })
    }

    /// Authenticate, then check `permission` (None: any authenticated user).
    pub fn authorize(
        &self,
        authorization: Option<&[u8]>,
        permission: Option<&str>,
    ) -> Result<String, AuthFailure> {
        let user = self.authenticate(authorization)?;
        match permission {
            Some(p) if !self.permits(&user, p) => Err(AuthFailure::Forbidden {
                user,
                permission: p.to_owned(),
            }),
            _ => Ok(user),
        }
    }
}

/// A valid argon2id hash of a random password, verified against for unknown users.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                          Yl0mXVCm0b9Rl6fCBpb8NCbiLp5tUqz7dB4R3D8vq1M";

/// Whether `authorization` carries one of `tokens` as a bearer token (constant time per token;
/// every token is compared).
pub fn bearer_matches(authorization: Option<&[u8]>, tokens: &[String]) -> bool {
    let Some(header) = authorization else {
        return false;
    };
    let Some(token) = header
        .strip_prefix(b"Bearer ")
        .or_else(|| header.strip_prefix(b"bearer "))
    else {
        return false;
    };
    let mut found = subtle::Choice::from(0);
    for t in tokens {
        found |= t.as_bytes().ct_eq(token);
    }
    bool::from(found)
}

/// Hash `password` as an argon2id PHC string (random salt, the crate's default parameters).
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    Ok(Argon2::default()
        .hash_password(password.as_bytes())?
        .to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn basic(user: &str, pw: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
        .into_bytes()
    }

    #[test]
    fn shiro_wildcards_prefixes_and_lists() {
        let want = Permission::parse("thrift.AuroraSchedulerManager:createJob:www-data:prod:hello");
        for have in [
            "*",
            "thrift.AuroraSchedulerManager",
            "thrift.AuroraSchedulerManager:*",
            "thrift.AuroraSchedulerManager:createJob",
            "thrift.AuroraSchedulerManager:createJob:www-data",
            "thrift.AuroraSchedulerManager:createJob,killTasks:www-data:*:hello",
            "thrift.auroraschedulermanager:CREATEJOB:www-data:prod:hello",
            "thrift.AuroraSchedulerManager:createJob:www-data:prod:hello:*",
        ] {
            assert!(Permission::parse(have).implies(&want), "{have}");
        }
        for have in [
            "thrift.AuroraAdmin",
            "thrift.AuroraSchedulerManager:killTasks",
            "thrift.AuroraSchedulerManager:createJob:other",
            "thrift.AuroraSchedulerManager:createJob:www-data:devel",
            "thrift.AuroraSchedulerManager:createJob:www-data:prod:hello:x",
        ] {
            assert!(!Permission::parse(have).implies(&want), "{have}");
        }
    }

    #[test]
    fn argon2_users_authenticate_and_roles_grant() {
        let h = hash("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let ini = format!(
            "[users]\nalice = {h}, admin\nbob = {h}, deployer\n\n[roles]\nadmin = *\n\
             deployer = thrift.AuroraSchedulerManager:createJob:www-data\n"
        );
        let s = Security::parse(&ini, false).unwrap();
        assert_eq!(
            s.authenticate(Some(&basic("alice", "s3cret"))).unwrap(),
            "alice"
        );
        // Cached path gives the same answer, and a wrong password still fails after it.
        assert_eq!(
            s.authenticate(Some(&basic("alice", "s3cret"))).unwrap(),
            "alice"
        );
        assert!(matches!(
            s.authenticate(Some(&basic("alice", "wrong"))),
            Err(AuthFailure::Unauthenticated(_))
        ));
        assert!(matches!(
            s.authenticate(Some(&basic("mallory", "s3cret"))),
            Err(AuthFailure::Unauthenticated(_))
        ));
        assert!(matches!(
            s.authenticate(None),
            Err(AuthFailure::Unauthenticated(_))
        ));
        let p = "thrift.AuroraSchedulerManager:createJob:www-data:prod:hello";
        assert!(s.permits("alice", p));
        assert!(s.permits("bob", p));
        assert!(!s.permits("bob", "thrift.AuroraAdmin:drainHosts"));
        assert_eq!(
            s.authorize(
                Some(&basic("bob", "s3cret")),
                Some("thrift.AuroraAdmin:drainHosts")
            ),
            Err(AuthFailure::Forbidden {
                user: "bob".into(),
                permission: "thrift.AuroraAdmin:drainHosts".into()
            })
        );
    }

    #[test]
    fn plaintext_passwords_are_refused_unless_allowed() {
        let ini = "[users]\nalice = hunter2, admin\n[roles]\nadmin = *\n";
        let e = Security::parse(ini, false).unwrap_err();
        assert!(e.to_string().contains("line 2: user alice"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "never echo a secret");
        let s = Security::parse(ini, true).unwrap();
        assert_eq!(
            s.authenticate(Some(&basic("alice", "hunter2"))).unwrap(),
            "alice"
        );
    }

    #[test]
    fn every_problem_in_the_file_is_reported() {
        let ini = "[users]\nalice = $argon2id$broken, admin\nbob = x, ghost\nnonsense\n[weird]\n";
        let e = Security::parse(ini, true).unwrap_err();
        let text = e.to_string();
        for want in ["line 2", "role ghost", "line 4", "[weird]"] {
            assert!(text.contains(want), "{want} missing from {text}");
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let h = hash("s3cret").unwrap();
        let s = Security::parse(
            &format!("[users]\nalice = {h}, admin\n[roles]\nadmin = *\n"),
            false,
        )
        .unwrap();
        s.authenticate(Some(&basic("alice", "s3cret"))).unwrap();
        let text = format!("{s:?}");
        assert!(text.contains("alice"), "{text}");
        assert!(
            !text.contains("argon2") && !text.contains("Basic"),
            "{text}"
        );
    }

    #[test]
    fn bearer_tokens_match_exactly() {
        let tokens = vec!["abc".to_owned(), "def".to_owned()];
        assert!(bearer_matches(Some(b"Bearer def"), &tokens));
        assert!(!bearer_matches(Some(b"Bearer de"), &tokens));
        assert!(!bearer_matches(Some(b"Basic def"), &tokens));
        assert!(!bearer_matches(None, &tokens));
    }

    #[test]
    fn phc_strings_with_commas_split_from_roles() {
        let (s, r) = split_user_value(" $argon2id$v=19$m=1,t=2,p=1$salt$hash , a, b");
        assert_eq!(s, "$argon2id$v=19$m=1,t=2,p=1$salt$hash");
        assert_eq!(r, vec!["a", "b"]);
        let (s, r) = split_user_value("pw");
        assert_eq!((s.as_str(), r.len()), ("pw", 0));
    }
}
