//! `--auth FILE`: who may use the UI and API, as a viewer (read) or an operator (also
//! trigger, rerun, cancel).
//!
//! ```yaml
//! tokens:                      # Authorization: Bearer TOKEN (scripts, curl)
//!   - { name: grafana, role: viewer, token: "a long random string" }
//! users:                       # HTTP basic auth (browsers prompt for it)
//!   - { name: alice, role: operator, password: "..." }
//! ```
//!
//! The file holds secrets: it must not be readable by others (mode 0600 or 0640).

use std::path::Path;

use axum::http::{HeaderMap, Method};
use base64::Engine as _;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: Role,
    token: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    role: Role,
    password: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
    #[serde(default)]
    users: Vec<UserEntry>,
}

/// Loaded `--auth` file.
#[derive(Clone)]
pub struct Auth {
    file: AuthFile,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("Auth")
            .field("tokens", &self.file.tokens.len())
            .field("users", &self.file.users.len())
            .finish()
    }
}

/// Who made a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// A bearer token, which a browser never attaches by itself (no CSRF risk).
    pub bearer: bool,
}

/// Why a request is refused: the status and the message.
pub struct Refusal {
    pub status: u16,
    pub message: String,
    /// Ask the browser for a user and password.
    pub challenge: bool,
}

/// Tokens and passwords shorter than this are refused: they can be guessed.
const MIN_SECRET: usize = 12;

impl Auth {
    pub fn load(path: &Path) -> Result<Auth, String> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--auth {shown}: cannot read it ({e})"))?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o004 != 0 {
                    return Err(format!(
                        "--auth {shown}: the file holds passwords and tokens but anyone on this machine can read it; `chmod 600 {shown}`"
                    ));
                }
            }
        }
        Self::parse(&text).map_err(|e| format!("--auth {shown}{e}"))
    }

    /// Parses the file's text; an error starts with `:LINE:COL: ` where known.
    pub fn parse(text: &str) -> Result<Auth, String> {
        let node = orchestrator_engine::yaml::parse(text)
            .map_err(|e| format!(":{}:{}: {}", e.pos.line, e.pos.col, e.message))?
            .ok_or_else(|| ": is empty; list `tokens:` and/or `users:`".to_string())?;
        let file: AuthFile = node.parse().map_err(|e| {
            let at = e.pos.map(|p| format!(":{}:{}", p.line, p.col)).unwrap_or_default();
            format!("{at}: {e}; expected `tokens:` [{{name, role, token}}] and `users:` [{{name, role, password}}], role `viewer` or `operator`")
        })?;
        if file.tokens.is_empty() && file.users.is_empty() {
            return Err(": lists no `tokens:` or `users:`; nobody could sign in".into());
        }
        for t in &file.tokens {
            if t.token.len() < MIN_SECRET {
                return Err(format!(
                    ": token `{}` is shorter than {MIN_SECRET} characters; use a long random one (e.g. `openssl rand -hex 16`)",
                    t.name
                ));
            }
        }
        for u in &file.users {
            if u.password.len() < MIN_SECRET {
                return Err(format!(
                    ": the password of user `{}` is shorter than {MIN_SECRET} characters",
                    u.name
                ));
            }
            if u.name.contains(':') {
                return Err(format!(": user name `{}` contains `:`", u.name));
            }
        }
        Ok(Auth { file })
    }

    fn caller(&self, headers: &HeaderMap) -> Option<Caller> {
        let value = headers.get("authorization")?.to_str().ok()?;
        if let Some(token) = value.strip_prefix("Bearer ") {
            return self
                .file
                .tokens
                .iter()
                .find(|t| same(t.token.as_bytes(), token.trim().as_bytes()))
                .map(|t| Caller {
                    name: t.name.clone(),
                    role: t.role,
                    bearer: true,
                });
        }
        let encoded = value.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (name, password) = decoded.split_once(':')?;
        self.file
            .users
            .iter()
            .find(|u| u.name == name && same(u.password.as_bytes(), password.as_bytes()))
            .map(|u| Caller {
                name: u.name.clone(),
                role: u.role,
                bearer: false,
            })
    }
}

/// Compares without stopping at the first difference (no timing hint).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decides a request: who it is, and whether it may do what it asks.
pub fn authorize(
    auth: Option<&Auth>,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Caller, Refusal> {
    let caller = match auth {
        // Loopback without --auth: whoever can reach 127.0.0.1 is this machine's user.
        None => Caller {
            name: "local".into(),
            role: Role::Operator,
            bearer: false,
        },
        Some(a) => a.caller(headers).ok_or_else(|| Refusal {
            status: 401,
            message: "sign in: send `Authorization: Bearer TOKEN` or a user and password from the --auth file".into(),
            challenge: true,
        })?,
    };
    if method == Method::GET || method == Method::HEAD {
        return Ok(caller);
    }
    if caller.role != Role::Operator {
        return Err(Refusal {
            status: 403,
            message: format!(
                "`{}` is a viewer; only an operator may trigger, rerun or cancel runs",
                caller.name
            ),
            challenge: false,
        });
    }
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
    {
        return Err(csrf());
    }
    if !caller.bearer
        && headers
            .get("x-orchestrator-csrf")
            .and_then(|v| v.to_str().ok())
            != Some("1")
    {
        return Err(csrf());
    }
    Ok(caller)
}

fn csrf() -> Refusal {
    Refusal {
        status: 403,
        message: "refused: a POST from a page must send `X-Orchestrator-CSRF: 1` (the UI does); scripts use a bearer token".into(),
        challenge: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const FILE: &str = "tokens:\n  - { name: grafana, role: viewer, token: viewer-token-123456 }\n  - { name: ops, role: operator, token: operator-token-123456 }\nusers:\n  - { name: alice, role: operator, password: correct-horse-battery }\n";

    #[test]
    fn viewers_read_and_only_operators_post() {
        let auth = Auth::parse(FILE).unwrap();
        let viewer = headers(&[("authorization", "Bearer viewer-token-123456")]);
        assert_eq!(
            authorize(Some(&auth), &Method::GET, &viewer)
                .ok()
                .map(|c| c.role),
            Some(Role::Viewer)
        );
        let refused = authorize(Some(&auth), &Method::POST, &viewer)
            .err()
            .unwrap();
        assert_eq!(refused.status, 403);
        assert!(refused.message.contains("`grafana` is a viewer"));
        let op = headers(&[("authorization", "Bearer operator-token-123456")]);
        assert!(authorize(Some(&auth), &Method::POST, &op).is_ok());
        let nobody = headers(&[("authorization", "Bearer wrong-token-1234567")]);
        assert_eq!(
            authorize(Some(&auth), &Method::GET, &nobody)
                .err()
                .unwrap()
                .status,
            401
        );
    }

    #[test]
    fn basic_auth_posts_need_the_csrf_header() {
        let auth = Auth::parse(FILE).unwrap();
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:correct-horse-battery")
        );
        let plain = headers(&[("authorization", &basic)]);
        assert!(authorize(Some(&auth), &Method::GET, &plain).is_ok());
        assert_eq!(
            authorize(Some(&auth), &Method::POST, &plain)
                .err()
                .unwrap()
                .status,
            403
        );
        let with = headers(&[("authorization", &basic), ("x-orchestrator-csrf", "1")]);
        assert!(authorize(Some(&auth), &Method::POST, &with).is_ok());
        let cross = headers(&[
            ("authorization", &basic),
            ("x-orchestrator-csrf", "1"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(authorize(Some(&auth), &Method::POST, &cross).is_err());
        let wrong = headers(&[(
            "authorization",
            &format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("alice:guess")
            ),
        )]);
        assert!(authorize(Some(&auth), &Method::GET, &wrong).is_err());
    }

    #[test]
    fn bad_files_say_what_to_fix() {
        let e = Auth::parse("tokens:\n  - { name: x, role: admin, token: abcdefghijklmnop }\n")
            .err()
            .unwrap();
        assert!(e.contains("admin"), "{e}");
        let e = Auth::parse("tokens:\n  - { name: x, role: viewer, token: short }\n")
            .err()
            .unwrap();
        assert!(e.contains("shorter than 12"), "{e}");
        let e = Auth::parse("users: []\n").err().unwrap();
        assert!(e.contains("nobody could sign in"), "{e}");
        // The Debug form never shows a secret.
        let auth = Auth::parse(FILE).unwrap();
        assert!(!format!("{auth:?}").contains("token-123456"));
    }
}
