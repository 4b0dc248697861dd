//! A small HTTP/1.1 client for the node API, over TCP or the node's Unix socket (hyper).

use anyhow::{bail, Context as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Where a node's API is.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// `host:port` of the HTTP API.
    Tcp(String),
    /// Path of the append socket.
    Unix(PathBuf),
}

/// The client: an endpoint, an optional bearer token, a timeout.
#[derive(Clone, Debug)]
pub struct Client {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// Sent as `Authorization: Bearer` when set.
    pub token: Option<String>,
    /// Whole-request timeout.
    pub timeout: Duration,
}

impl Client {
    /// A client for `endpoint` with a 30 s timeout.
    pub fn new(endpoint: Endpoint) -> Client {
        Client { endpoint, token: None, timeout: Duration::from_secs(30) }
    }

    /// GET `path`; the parsed JSON on 2xx, else an error with the server's message.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call("GET", path, None).await
    }

    /// POST JSON to `path`.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call("POST", path, Some(serde_json::to_vec(body)?)).await
    }

    /// GET `path` as text (for `/metrics`).
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let (status, bytes) = self.raw("GET", path, None).await?;
        if !status.is_success() {
            bail!("{status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// GET `path`, refusing an answer larger than `max` bytes (for answers from a node that is
    /// not trusted, such as the one being audited).
    pub async fn get_limited(&self, path: &str, max: usize) -> anyhow::Result<Value> {
        let (status, bytes) =
            tokio::time::timeout(self.timeout, self.raw_inner("GET", path, None, max))
                .await
                .context("request timed out")??;
        Self::answer(status, bytes)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> anyhow::Result<Value> {
        let (status, bytes) = self.raw(method, path, body).await?;
        Self::answer(status, bytes)
    }

    fn answer(status: hyper::StatusCode, bytes: Bytes) -> anyhow::Result<Value> {
        let v: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if !status.is_success() {
            let msg = v
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            bail!("{} ({})", msg, status.as_u16());
        }
        Ok(v)
    }

    /// One request; returns status and body bytes.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
        tokio::time::timeout(self.timeout, self.raw_inner(method, path, body, usize::MAX))
            .await
            .context("request timed out")?
    }

    async fn raw_inner(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        max: usize,
    ) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
        let mut req = Request::builder().method(method).uri(path).header("host", "ringlog");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let resp = match &self.endpoint {
            Endpoint::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr)
                    .await
                    .with_context(|| format!("connecting to node API at {addr} (is the node running? start it with `ringlog node run`)"))?;
                send(TokioIo::new(s), req).await?
            }
            Endpoint::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p).await.with_context(|| {
                    format!("connecting to node socket {} (is the node running?)", p.display())
                })?;
                send(TokioIo::new(s), req).await?
            }
        };
        let status = resp.status();
        let bytes = http_body_util::Limited::new(resp.into_body(), max)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
            .to_bytes();
        Ok((status, bytes))
    }
}

async fn send<T>(
    io: T,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}
