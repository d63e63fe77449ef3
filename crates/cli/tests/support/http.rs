//! Plain HTTP/1.1 requests over loopback TCP, written by hand as curl
//! sends them, for the gateway tests: nothing between the test and the
//! gateway's parser.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct Http {
    pub addr: String,
}

/// An answer: status, headers (lower-cased names) and body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::String(self.body.clone()))
    }
}

impl Http {
    pub fn on_port(port: u16) -> Self {
        Self { addr: format!("127.0.0.1:{port}") }
    }

    /// One request; `headers` are extra lines (`Name: value`).
    pub fn request(&self, method: &str, path: &str, headers: &[&str], body: &str) -> Answer {
        let mut stream = TcpStream::connect(&self.addr).expect("connect to the gateway");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        if !headers.iter().any(|h| h.to_ascii_lowercase().starts_with("host:")) {
            request.push_str(&format!("Host: {}\r\n", self.addr));
        }
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).expect("send");
        let answer = read_answer(&mut stream);
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer.as_str(), ""));
        let mut lines = head.lines();
        let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok());
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Answer { status: status.unwrap_or(0), headers, body: body.to_owned() }
    }

    /// One request; (status, body).
    pub fn send(&self, method: &str, path: &str, headers: &[&str], body: &str) -> (u16, String) {
        let answer = self.request(method, path, headers, body);
        (answer.status, answer.body)
    }

    /// A POST with an optional bearer token; (status, body as JSON).
    pub fn call(&self, path: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
        self.post(path, token, body)
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
        self.with_token("POST", path, token, body)
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        self.with_token("GET", path, token, "")
    }

    fn with_token(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let auth = token.map(|t| format!("Authorization: Bearer {t}"));
        let headers: Vec<&str> = auth.iter().map(String::as_str).collect();
        let answer = self.request(method, path, &headers, body);
        (answer.status, answer.json())
    }
}

/// Reads an answer: to its `Content-Length` when it has one (a server may
/// keep the connection open despite `Connection: close`), else to the end.
fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).expect("read the answer");
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if n == 0 {
            return text.into_owned();
        }
        let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
        let length = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
        });
        if length.is_some_and(|length| body.len() >= length) {
            return text.into_owned();
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port()
}
