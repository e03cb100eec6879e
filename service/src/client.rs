//! The client of the local API that the process owning a state dir serves (see
//! [`crate::serve`]), so that commands work from other processes while it runs. Request
//! and answer types are the server's own (`orchestrator_web::api`); a failure's kind
//! comes from the answer's HTTP status.

use std::path::Path;

use crate::Error;

/// The owner's discovery file, `{state-dir}/api.json`.
pub(crate) const INFO: &str = "api.json";
/// The API token, `{state-dir}/api.token`.
pub(crate) const TOKEN: &str = "api.token";

/// A client of the API served for a state dir.
pub struct Client {
    url: String,
    token: String,
    http: reqwest::Client,
    /// The owner is a daemon (it starts runs for others), not a foreground run.
    pub daemon: bool,
}

impl Client {
    /// The API of the live process that owns `dir`, if it serves one.
    pub fn discover(dir: &Path) -> Option<Client> {
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(INFO)).ok()?).ok()?;
        let pid = info.get("pid")?.as_u64()?;
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return None; // left by a process that is gone
        }
        let token = std::fs::read_to_string(dir.join(TOKEN)).ok()?;
        Some(Client {
            url: info.get("url")?.as_str()?.to_string(),
            token: token.trim().to_string(),
            http: reqwest::Client::new(),
            daemon: info
                .get("daemon")
                .and_then(|d| d.as_bool())
                .unwrap_or(false),
        })
    }

    /// Whether something listens at the API's address (an owner that is stopping has
    /// closed it before it releases the state dir).
    pub fn answers(&self) -> bool {
        use std::net::ToSocketAddrs as _;
        let host = self
            .url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        host.to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|addr| {
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(500))
                    .is_ok()
            })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<String, Error> {
        let resp = req.bearer_auth(&self.token).send().await.map_err(|e| {
            Error::failed(format!(
                "error: the state dir's owner did not answer ({e}); try again, or stop it"
            ))
        })?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| Error::failed(format!("error: reading the API's answer: {e}")))?;
        if status.is_success() {
            return Ok(body);
        }
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or(body);
        let kind = Error::kind_of_status(status.as_u16());
        Err(Error::new(kind, format!("error: {msg}")))
    }

    /// The command's output, as it prints it: its text, or its `--json`.
    fn format(json: bool) -> Vec<(&'static str, String)> {
        let f = if json { "command-json" } else { "text" };
        vec![("format", f.to_string())]
    }

    pub async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        json: bool,
    ) -> Result<String, Error> {
        let mut q: Vec<(&str, String)> = query.to_vec();
        q.extend(Client::format(json));
        self.send(self.http.get(format!("{}{path}", self.url)).query(&q))
            .await
    }

    /// POSTs `body` as JSON; returns the answer, read as `A`.
    pub async fn post<B: serde::Serialize, A: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<A, Error> {
        let text = self.post_text(path, body, &[]).await?;
        serde_json::from_str(&text).map_err(|e| {
            Error::failed(format!(
                "error: the API's answer to {path} is not what this version reads ({e}); is the daemon the same version?"
            ))
        })
    }

    async fn post_text<B: serde::Serialize>(
        &self,
        path: &str,
        body: &B,
        query: &[(&str, String)],
    ) -> Result<String, Error> {
        let body = serde_json::to_string(body)
            .map_err(|e| Error::internal(format!("a request as JSON: {e}")))?;
        self.send(
            self.http
                .post(format!("{}{path}", self.url))
                .query(query)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub async fn query(&self, sql: &str, json: bool) -> Result<String, Error> {
        let body = orchestrator_web::api::QueryRequest {
            sql: sql.to_string(),
        };
        self.post_text("/api/query", &body, &Client::format(json))
            .await
    }
}
