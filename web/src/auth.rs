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
    /// Only the state dir's API token (`{state-dir}/api.token`), as an operator: the local
    /// API listener's auth.
    pub fn token_only(name: &str, token: &str) -> Auth {
        Auth {
            file: AuthFile::default(),
        }
        .with_token(name, token, Role::Operator)
    }

    /// This auth, and also `token` (e.g. the state dir's API token, so the CLI can use
    /// the UI's listener too).
    pub fn with_token(mut self, name: &str, token: &str, role: Role) -> Auth {
        self.file.tokens.push(TokenEntry {
            name: name.to_string(),
            role,
            token: token.to_string(),
        });
        self
    }

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
            if t.name.trim().is_empty() {
                return Err(
                    ": a token has an empty `name`; name each token (it is shown in logs)".into(),
                );
            }
            // Spaces and control characters are no secret: count what a guesser must find.
            if t.token.chars().filter(|c| c.is_ascii_graphic()).count() < MIN_SECRET
                || t.token.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(format!(
                    ": token `{}` is shorter than {MIN_SECRET} characters or holds spaces; use a long random one (e.g. `openssl rand -hex 16`)",
                    t.name
                ));
            }
        }
        for u in &file.users {
            if u.name.trim().is_empty() {
                return Err(
                    ": a user has an empty `name`; give each user the name they sign in with"
                        .into(),
                );
            }
            if u.password.trim().chars().count() < MIN_SECRET {
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
        // The scheme is case-insensitive (RFC 7235).
        let (scheme, rest) = value.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            let token = rest;
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
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let encoded = rest;
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
    path: &str,
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
    // The SQL box's POST only reads (the query is refused unless it is a SELECT), as the
    // catalog page's GET does: a viewer may use both.
    let reads = path == "/api/query";
    if caller.role != Role::Operator && !reads {
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

/// Without `--auth` the UI trusts whoever reaches loopback, so it must know the request
/// really came to loopback: a DNS-rebinding page (evil.example resolving to 127.0.0.1) is
/// same-origin to itself and sends its own name as `Host`. Only the names of this
/// listener are served; any port (a local proxy may forward).
pub fn check_host(
    auth: Option<&Auth>,
    listen: std::net::SocketAddr,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    if auth.is_some() {
        // Every request is authenticated: a rebinding page has no credentials, and a
        // deployment behind a proxy has names of its own.
        return Ok(());
    }
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    let ip = listen.ip().to_string();
    let ok = name.eq_ignore_ascii_case("localhost")
        || name == "127.0.0.1"
        || name == "::1"
        || name == ip;
    if ok {
        return Ok(());
    }
    Err(Refusal {
        status: 421,
        message: format!(
            "refused: Host `{}` is not this listener ({listen}); without --auth the UI answers only to localhost, 127.0.0.1 and [::1]. Open it at http://{listen}/, or serve it with --auth to use another name",
            host.escape_default()
        ),
        challenge: false,
    })
}

/// Requests that run a query or hold a stream open are refused unless they come from the
/// UI's own pages: an `<img>` or `<script>` tag on any other site (cross-site or
/// same-site, e.g. another port of localhost) would otherwise make the browser send them.
pub fn check_fetch_site(
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    if site == "same-origin" || site == "none" {
        return Ok(());
    }
    let runs_query = (path == "/catalog"
        && query.is_some_and(|q| q.split('&').any(|kv| kv.starts_with("sql="))))
        || path == "/catalog/sql.csv"
        || path == "/api/query";
    let streams = path.starts_with("/events/");
    if runs_query || streams || path.starts_with("/api/") {
        return Err(Refusal {
            status: 403,
            message: format!(
                "refused: a {site} request to {path}; queries, live streams and the API answer only the UI's own pages (or a script with a bearer token)"
            ),
            challenge: false,
        });
    }
    Ok(())
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
            authorize(Some(&auth), &Method::GET, "/api/trigger", &viewer)
                .ok()
                .map(|c| c.role),
            Some(Role::Viewer)
        );
        let refused = authorize(Some(&auth), &Method::POST, "/api/trigger", &viewer)
            .err()
            .unwrap();
        assert_eq!(refused.status, 403);
        assert!(refused.message.contains("`grafana` is a viewer"));
        let op = headers(&[("authorization", "Bearer operator-token-123456")]);
        assert!(authorize(Some(&auth), &Method::POST, "/api/trigger", &op).is_ok());
        let nobody = headers(&[("authorization", "Bearer wrong-token-1234567")]);
        assert_eq!(
            authorize(Some(&auth), &Method::GET, "/api/trigger", &nobody)
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
        assert!(authorize(Some(&auth), &Method::GET, "/api/trigger", &plain).is_ok());
        assert_eq!(
            authorize(Some(&auth), &Method::POST, "/api/trigger", &plain)
                .err()
                .unwrap()
                .status,
            403
        );
        let with = headers(&[("authorization", &basic), ("x-orchestrator-csrf", "1")]);
        assert!(authorize(Some(&auth), &Method::POST, "/api/trigger", &with).is_ok());
        let cross = headers(&[
            ("authorization", &basic),
            ("x-orchestrator-csrf", "1"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(authorize(Some(&auth), &Method::POST, "/api/trigger", &cross).is_err());
        let wrong = headers(&[(
            "authorization",
            &format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("alice:guess")
            ),
        )]);
        assert!(authorize(Some(&auth), &Method::GET, "/api/trigger", &wrong).is_err());
    }

    #[test]
    fn without_auth_only_this_listeners_names_are_served() {
        let listen: std::net::SocketAddr = "127.0.0.1:18090".parse().unwrap();
        for ok in [
            "127.0.0.1:18090",
            "localhost:18090",
            "LOCALHOST",
            "[::1]:18090",
            "127.0.0.1",
        ] {
            assert!(
                check_host(None, listen, &headers(&[("host", ok)])).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "evil.example:18090",
            "evil.example",
            "127.0.0.1.evil.example",
            "",
            "[::2]:1",
        ] {
            let r = check_host(None, listen, &headers(&[("host", bad)])).err();
            assert_eq!(r.map(|r| r.status), Some(421), "{bad}");
        }
        assert_eq!(
            check_host(None, listen, &HeaderMap::new())
                .err()
                .map(|r| r.status),
            Some(421)
        );
        // With --auth every request carries credentials: names are the deployment's.
        let auth = Auth::parse(FILE).unwrap();
        assert!(check_host(Some(&auth), listen, &headers(&[("host", "ui.corp")])).is_ok());
    }

    #[test]
    fn other_sites_cannot_run_queries_or_open_streams() {
        for site in ["cross-site", "same-site"] {
            let h = headers(&[("sec-fetch-site", site)]);
            assert!(check_fetch_site("/catalog", Some("sql=SELECT%201"), &h).is_err());
            assert!(check_fetch_site("/catalog/sql.csv", Some("sql=x"), &h).is_err());
            assert!(check_fetch_site("/events/runs", None, &h).is_err());
            assert!(check_fetch_site("/api/runs", None, &h).is_err());
            // A link from elsewhere to a page that runs nothing still opens.
            assert!(check_fetch_site("/runs", None, &h).is_ok());
            assert!(check_fetch_site("/catalog", None, &h).is_ok());
        }
        let own = headers(&[("sec-fetch-site", "same-origin")]);
        assert!(check_fetch_site("/catalog", Some("sql=SELECT%201"), &own).is_ok());
        assert!(check_fetch_site("/events/runs", None, &HeaderMap::new()).is_ok());
    }

    #[test]
    fn schemes_are_case_insensitive_and_viewers_may_query() {
        let auth = Auth::parse(FILE).unwrap();
        let lower = headers(&[("authorization", "bearer viewer-token-123456")]);
        assert!(authorize(Some(&auth), &Method::GET, "/runs", &lower).is_ok());
        assert!(authorize(Some(&auth), &Method::POST, "/api/query", &lower).is_ok());
        assert!(authorize(Some(&auth), &Method::POST, "/api/trigger", &lower).is_err());
    }

    #[test]
    fn blank_secrets_and_names_are_refused() {
        let e = Auth::parse("tokens:\n  - { name: x, role: viewer, token: \"            \" }\n")
            .err()
            .unwrap();
        assert!(e.contains("shorter than 12"), "{e}");
        let e = Auth::parse("tokens:\n  - { name: \"\", role: viewer, token: abcdefghijklmnop }\n")
            .err()
            .unwrap();
        assert!(e.contains("empty `name`"), "{e}");
        let e =
            Auth::parse("users:\n  - { name: \"\", role: viewer, password: abcdefghijklmnop }\n")
                .err()
                .unwrap();
        assert!(e.contains("empty `name`"), "{e}");
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
