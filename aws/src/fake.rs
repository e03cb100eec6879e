//! A fake AWS endpoint for tests: speaks just enough of the JSON 1.1 protocol (Athena,
//! Glue) to give the answers moto never gives (FAILED queries, failed crawls and job
//! runs). Every request's `X-Amz-Target` is recorded. Test support, std only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// A server on 127.0.0.1 answering each request with `answer(target)`.
pub struct FakeEndpoint {
    pub url: String,
    calls: Arc<Mutex<Vec<String>>>,
}

impl FakeEndpoint {
    pub fn start(answer: fn(&str) -> String) -> std::io::Result<FakeEndpoint> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let calls: Arc<Mutex<Vec<String>>> = Default::default();
        let log = calls.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Ok(clone) = stream.try_clone() else {
                    continue;
                };
                let mut reader = BufReader::new(clone);
                let (mut target, mut length, mut line) = (String::new(), 0usize, String::new());
                let _ = reader.read_line(&mut line);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    let lower = h.to_ascii_lowercase();
                    if lower.starts_with("x-amz-target:") {
                        target = h["x-amz-target:".len()..].trim().to_string();
                    }
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                if let Ok(mut l) = log.lock() {
                    l.push(target.clone());
                }
                let body = answer(&target);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Ok(FakeEndpoint { url, calls })
    }

    /// The `X-Amz-Target` of every request so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}
