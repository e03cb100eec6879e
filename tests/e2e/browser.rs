//! A headless Chromium driven over WebDriver (chromedriver), for the web UI's tests: a
//! small blocking client of the W3C protocol's JSON over HTTP, enough to load pages, find
//! elements, click, accept confirmations, run a script and take screenshots.
//!
//! `scripts/test` installs `chromium` and `chromium-driver` from the distribution when
//! they are missing; `ORCHESTRATOR_CHROMEDRIVER` names another driver. A missing driver
//! fails the test (it never skips).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::wait_until;

pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
}

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub(crate) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("address").port()
}

/// One HTTP/1.1 exchange with the driver; the answer's JSON.
pub(crate) fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let mut conn = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // Read by Content-Length (or to the last chunk): the driver may keep the
    // connection open after answering.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let body = loop {
        let n = conn.read(&mut buf).map_err(|e| e.to_string())?;
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let head = head.to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            match length {
                Some(len) if rest.len() >= len => break rest[..len].to_string(),
                None if head.contains("transfer-encoding: chunked")
                    && rest.contains("\r\n0\r\n") =>
                {
                    break dechunk(rest)
                }
                _ => {}
            }
        }
        if n == 0 {
            // Closed: what came is the answer (if it came).
            match text.split_once("\r\n\r\n") {
                Some((_, rest)) => break rest.to_string(),
                None => return Err(format!("the driver closed the connection: {text}")),
            }
        }
    };
    serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

impl Browser {
    pub fn start() -> Browser {
        let driver_bin =
            std::env::var("ORCHESTRATOR_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {driver_bin} ({e}): scripts/test installs chromium and chromium-driver")
            });
        let addr = format!("127.0.0.1:{port}");
        wait_until("chromedriver to answer", || {
            http(&addr, "GET", "/status", None).is_ok_and(|v| v["value"]["ready"] == true)
        });
        let mut options = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,1000"],
        });
        for bin in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
            if std::path::Path::new(bin).exists() {
                options["binary"] = json!(bin);
                break;
            }
        }
        let answer = http(
            &addr,
            "POST",
            "/session",
            Some(&json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}})),
        )
        .expect("a WebDriver session");
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_string();
        Browser {
            driver,
            addr,
            session,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let v = http(
            &self.addr,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        )?;
        if let Some(e) = v["value"]["error"].as_str() {
            return Err(format!("{e}: {}", v["value"]["message"]));
        }
        Ok(v["value"].clone())
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })))
            .unwrap_or_else(|e| panic!("load {url}: {e}"));
    }

    /// A page load that takes longer than this fails `goto` (WebDriver's default: 300 s).
    pub fn page_load_timeout(&self, timeout: std::time::Duration) {
        self.call(
            "POST",
            "/timeouts",
            Some(json!({"pageLoad": timeout.as_millis() as u64})),
        )
        .unwrap_or_else(|e| panic!("set the page load timeout: {e}"));
    }

    pub fn find_all(&self, css: &str) -> Vec<String> {
        self.call(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .map(|v| {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e[ELEMENT].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
    }

    /// The first element matching `css`; fails the test if there is none.
    pub fn find(&self, css: &str) -> String {
        self.find_all(css).into_iter().next().unwrap_or_else(|| {
            let text = self.execute("return document.body ? document.body.innerText : '';");
            let text: String = text
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(3000)
                .collect();
            panic!(
                "no element `{css}` on {}; the page says:\n{text}",
                self.url()
            )
        })
    }

    pub fn text(&self, element: &str) -> String {
        self.call("GET", &format!("/element/{element}/text"), None)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    }

    pub fn attr(&self, element: &str, name: &str) -> Option<String> {
        self.call("GET", &format!("/element/{element}/attribute/{name}"), None)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
    }

    pub fn click(&self, element: &str) {
        self.call(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .unwrap_or_else(|e| panic!("click: {e}"));
    }

    /// Waits for a `confirm()` dialog, returns its text and accepts it.
    pub fn accept_confirm(&self) -> String {
        let mut text = String::new();
        wait_until("a confirmation dialog", || {
            match self.call("GET", "/alert/text", None) {
                Ok(v) => {
                    text = v.as_str().unwrap_or_default().to_string();
                    true
                }
                Err(_) => false,
            }
        });
        self.call("POST", "/alert/accept", Some(json!({})))
            .unwrap_or_else(|e| panic!("accept the dialog: {e}"));
        text
    }

    pub fn execute(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .unwrap_or_else(|e| panic!("script: {e}"))
    }

    pub fn url(&self) -> String {
        self.call("GET", "/url", None)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    }

    pub fn source(&self) -> String {
        self.call("GET", "/source", None)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    }

    /// Saves a PNG of the page as a test artifact: `{target}/ui-screenshots/NAME.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let data = self
            .call("GET", "/screenshot", None)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .expect("a screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 PNG");
        let dir = PathBuf::from(env!("CARGO_BIN_EXE_orchestrator"))
            .parent()
            .and_then(|d| d.parent())
            .map(|t| t.join("ui-screenshots"))
            .expect("the target directory");
        std::fs::create_dir_all(&dir).expect("screenshots directory");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            &self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
