use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_orchestrator");

/// A temporary directory with its own state dir; workflows written here run here.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn from(o: Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// The run id from the first line, `run ID started: ...`.
    pub fn run_id(&self) -> String {
        // The first line, or the line after a note on the logical date chosen.
        let id = self
            .stdout
            .lines()
            .take(2)
            .find_map(|l| l.strip_prefix("run "))
            .and_then(|r| r.split_whitespace().next());
        match id {
            Some(id) => id.to_string(),
            None => panic!(
                "no run id on the first line:\n{}\n{}",
                self.stdout, self.stderr
            ),
        }
    }
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::write(&p, content).expect("write file");
        p
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    /// How many lines a marker file has (how often a task appended to it).
    pub fn count(&self, rel: &str) -> usize {
        self.read(rel).lines().count()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.dir.path())
            .env("ORCHESTRATOR_STATE_DIR", self.state_dir())
            // No test reaches AWS: without a local AWS_ENDPOINT_URL every AWS call fails.
            .env("ORCHESTRATOR_REQUIRE_ENDPOINT", "1")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("ORCHESTRATOR_LOG")
            // Every daemon's web UI on a port of its own (api.json says which).
            .env("ORCHESTRATOR_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        Out::from(self.command(args).output().expect("run orchestrator"))
    }

    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut c = self.command(args);
        c.envs(env.iter().copied());
        Out::from(c.output().expect("run orchestrator"))
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn orchestrator")
    }

    pub fn show(&self, run_id: &str) -> Value {
        let out = self.run(&["show", run_id, "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {out:?}"))
    }

    /// Waits until `rel` exists: the event a task signals by creating it.
    pub fn wait_for_file(&self, rel: &str) {
        wait_until(&format!("file {rel} to appear"), || self.path(rel).exists());
    }
}

/// Polls `cond` until it holds; fails the test after 30 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn task<'a>(show: &'a Value, id: &str) -> &'a Value {
    show["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["id"] == id))
        .unwrap_or_else(|| panic!("no task {id} in {show:#}"))
}

pub fn status<'a>(show: &'a Value, id: &str) -> &'a str {
    task(show, id)["status"].as_str().unwrap_or_default()
}

/// Whether a process is alive (a zombie counts as dead).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {}", path.display()))
}

/// Kills a leftover process at the end of a test.
pub fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// A stand-in for the Alpha Vantage API: a real HTTP server on 127.0.0.1 whose answer to
/// each request comes from a handler `(symbol, nth request for that symbol) -> (status, body)`.
pub struct FakeApi {
    pub url: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<Request>>>,
    handler: std::sync::Arc<std::sync::Mutex<Handler>>,
}

type Handler = Box<dyn FnMut(&str, usize) -> (u16, String) + Send>;

#[derive(Debug, Clone)]
pub struct Request {
    pub at: Instant,
    pub symbol: String,
    /// The query string, e.g. `function=TIME_SERIES_DAILY&symbol=NVDA&...`.
    pub query: String,
}

impl FakeApi {
    pub fn start(handler: impl FnMut(&str, usize) -> (u16, String) + Send + 'static) -> FakeApi {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!("http://{}/query", listener.local_addr().unwrap());
        let log: std::sync::Arc<std::sync::Mutex<Vec<Request>>> = Default::default();
        let handler: std::sync::Arc<std::sync::Mutex<Handler>> =
            std::sync::Arc::new(std::sync::Mutex::new(Box::new(handler)));
        let (log2, handler2) = (log.clone(), handler.clone());
        std::thread::spawn(move || {
            // Ends with the test process.
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let at = Instant::now();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut header = String::new();
                    match reader.read_line(&mut header) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if header == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let target = line.split_whitespace().nth(1).unwrap_or_default();
                let query = target
                    .split_once('?')
                    .map(|(_, q)| q)
                    .unwrap_or_default()
                    .to_string();
                let symbol = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("symbol="))
                    .unwrap_or_default()
                    .to_string();
                let nth = {
                    let mut log = log2.lock().unwrap();
                    let nth = log.iter().filter(|r| r.symbol == symbol).count() + 1;
                    log.push(Request {
                        at,
                        symbol: symbol.clone(),
                        query,
                    });
                    nth
                };
                let (status, body) = (handler2.lock().unwrap())(&symbol, nth);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FakeApi { url, log, handler }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    pub fn symbols_requested(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.symbol).collect()
    }

    pub fn set_handler(&self, handler: impl FnMut(&str, usize) -> (u16, String) + Send + 'static) {
        *self.handler.lock().unwrap() = Box::new(handler);
    }
}

/// A webhook receiver: a real HTTP server on 127.0.0.1 that records each request's
/// headers (lower-cased names) and body, and answers with `status(nth request)`.
pub struct Hook {
    pub url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<Posted>>>,
}

#[derive(Debug, Clone)]
pub struct Posted {
    /// The request's path (`/hook...`).
    pub path: String,
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: String,
}

impl Posted {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

impl Hook {
    pub fn start(status: impl Fn(usize) -> u16 + Send + 'static) -> Hook {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got: std::sync::Arc<std::sync::Mutex<Vec<Posted>>> = Default::default();
        let got2 = got.clone();
        std::thread::spawn(move || {
            // Ends with the test process.
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut headers = std::collections::BTreeMap::new();
                loop {
                    let mut header = String::new();
                    match reader.read_line(&mut header) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if header == "\r\n" => break,
                        Ok(_) => {
                            if let Some((k, v)) = header.split_once(':') {
                                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                            }
                        }
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let nth = {
                    let mut list = got2.lock().unwrap();
                    list.push(Posted {
                        path: line
                            .split_whitespace()
                            .nth(1)
                            .unwrap_or_default()
                            .to_string(),
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    list.len()
                };
                let code = status(nth);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            }
        });
        Hook { url, got }
    }

    /// Everything posted so far, in order.
    pub fn posted(&self) -> Vec<Posted> {
        self.got.lock().unwrap().clone()
    }
}

/// An SMTP server on 127.0.0.1 that accepts every message and keeps it: enough of
/// RFC 5321 (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) for a real client.
pub struct Smtp {
    pub url: String,
    mails: std::sync::Arc<std::sync::Mutex<Vec<Mail>>>,
}

#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body, as sent (dot-stuffing undone).
    pub data: String,
}

impl Mail {
    /// The value of header `name` (unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut out: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(v) = out.as_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
                continue;
            }
            if out.is_some() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case(name) {
                    out = Some(v.trim().to_string());
                }
            }
        }
        out
    }
}

impl Smtp {
    pub fn start() -> Smtp {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!("smtp://{}", listener.local_addr().unwrap());
        let mails: std::sync::Arc<std::sync::Mutex<Vec<Mail>>> = Default::default();
        let sink = mails.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut out) = stream else { continue };
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(out.try_clone().unwrap());
                    let _ = out.write_all(b"220 localhost test SMTP\r\n");
                    let (mut from, mut to) = (String::new(), Vec::new());
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let cmd = line.trim_end().to_string();
                        let upper = cmd.to_ascii_uppercase();
                        let reply: &[u8] = if upper.starts_with("EHLO") {
                            b"250-localhost\r\n250 8BITMIME\r\n"
                        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
                            b"250 OK\r\n"
                        } else if upper.starts_with("MAIL FROM:") {
                            from = cmd[10..].trim().trim_matches(['<', '>']).to_string();
                            b"250 OK\r\n"
                        } else if upper.starts_with("RCPT TO:") {
                            to.push(cmd[8..].trim().trim_matches(['<', '>']).to_string());
                            b"250 OK\r\n"
                        } else if upper.starts_with("RSET") {
                            from.clear();
                            to.clear();
                            b"250 OK\r\n"
                        } else if upper.starts_with("DATA") {
                            let _ = out.write_all(b"354 go on\r\n");
                            let mut data = String::new();
                            loop {
                                line.clear();
                                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                    return;
                                }
                                if line == ".\r\n" {
                                    break;
                                }
                                data.push_str(line.strip_prefix('.').unwrap_or(&line));
                            }
                            sink.lock().unwrap().push(Mail {
                                from: std::mem::take(&mut from),
                                to: std::mem::take(&mut to),
                                data,
                            });
                            b"250 OK queued\r\n"
                        } else if upper.starts_with("QUIT") {
                            let _ = out.write_all(b"221 bye\r\n");
                            return;
                        } else {
                            b"502 not implemented\r\n"
                        };
                        let _ = out.write_all(reply);
                    }
                });
            }
        });
        Smtp { url, mails }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

/// The bundled sample response of `symbol`.
pub fn sample_response(symbol: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data/sample/alpha_vantage")
        .join(format!("{symbol}.json"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file below `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}

/// A moto server (AWS mocks) on 127.0.0.1 for one test: `scripts/test` installs moto and
/// sets `ORCHESTRATOR_MOTO_SERVER`. Without it the test fails saying so.
pub struct Moto {
    child: Child,
    pub url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    pub fn start() -> Moto {
        let server = std::env::var("ORCHESTRATOR_MOTO_SERVER").unwrap_or_else(|_| {
            panic!("ORCHESTRATOR_MOTO_SERVER is not set: run the tests with scripts/test, which installs moto[server] and sets it")
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {server}: {e}"));
        let url = format!("http://127.0.0.1:{port}");
        wait_until("moto to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Moto { child, url }
    }

    /// The environment that points the binary at this server and never at AWS.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        assert!(self.url.starts_with("http://127.0.0.1:"));
        vec![
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_PROFILE", String::new()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// One raw HTTP request to moto; returns the body. Panics on a non-2xx answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.url.trim_start_matches("http://")).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.url.trim_start_matches("http://"),
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        write!(s, "{head}\r\n{body}").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 2") || answer.starts_with("HTTP/1.0 2"),
            "{method} {path}: {answer}"
        );
        answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }

    /// POSTs JSON to moto's own API (`/moto-api/...`).
    pub fn moto_api(&self, path: &str, body: serde_json::Value) {
        self.request(
            "POST",
            path,
            &body.to_string(),
            &[("Content-Type", "application/json")],
        );
    }

    /// Calls an AWS JSON-protocol action of `service` (`glue`, `athena`), e.g.
    /// `AWSGlue.CreateDatabase`.
    pub fn call(&self, service: &str, target: &str, body: serde_json::Value) -> serde_json::Value {
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=x"
        );
        let answer = self.request(
            "POST",
            "/",
            &body.to_string(),
            &[
                ("Content-Type", "application/x-amz-json-1.1"),
                ("X-Amz-Target", target),
                ("Authorization", &auth),
            ],
        );
        serde_json::from_str(&answer).unwrap_or(serde_json::Value::Null)
    }
}

impl Moto {
    /// Creates an S3 bucket.
    pub fn bucket(&self, name: &str) {
        self.request(
            "PUT",
            &format!("/{name}"),
            "",
            &[(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=x",
            )],
        );
    }

    /// Keys under `prefix` in `bucket`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token = String::new();
        loop {
            let mut path = format!("/{bucket}?list-type=2&prefix={prefix}");
            if !token.is_empty() {
                path.push_str(&format!("&continuation-token={token}"));
            }
            let xml = self.request(
                "GET",
                &path,
                "",
                &[(
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=x",
                )],
            );
            for part in xml.split("<Key>").skip(1) {
                keys.push(part.split("</Key>").next().unwrap_or_default().to_string());
            }
            match xml.split("<NextContinuationToken>").nth(1) {
                Some(rest) => {
                    token = rest
                        .split('<')
                        .next()
                        .unwrap_or_default()
                        .replace('=', "%3D")
                        .replace('/', "%2F")
                        .replace('+', "%2B")
                }
                None => return keys,
            }
        }
    }

    /// Every SQL statement Athena received, oldest first.
    pub fn athena_statements(&self) -> Vec<String> {
        let list = self.call(
            "athena",
            "AmazonAthena.ListQueryExecutions",
            serde_json::json!({}),
        );
        let mut out: Vec<(f64, String)> = list["QueryExecutionIds"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|id| {
                let q = self.call(
                    "athena",
                    "AmazonAthena.GetQueryExecution",
                    serde_json::json!({ "QueryExecutionId": id }),
                );
                (
                    q["QueryExecution"]["Status"]["SubmissionDateTime"]
                        .as_f64()
                        .unwrap_or(0.0),
                    q["QueryExecution"]["Query"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.into_iter().map(|(_, q)| q).collect()
    }
}
