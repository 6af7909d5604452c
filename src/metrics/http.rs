//! `vgpuctl metrics --listen ADDR`: `/metrics` over plain HTTP for hosts
//! without node_exporter. Deliberately small: one request at a time (a scrape
//! every few seconds needs no more), read-only, `GET`/`HEAD` only, a request
//! head of at most 8 KiB read within 5 s, and every connection closed after
//! its answer. Garbage gets a 4xx status line, never a panic.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to serve metrics on {0}, which is not a loopback address: pass --allow-remote to expose them to the network")]
    NotLoopback(SocketAddr),
}

/// What one request gets back: status line, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: String,
    /// HEAD: the headers of a GET, without its body.
    pub head_only: bool,
}

fn plain(status: &'static str, body: &str) -> Reply {
    Reply { status, content_type: "text/plain; charset=utf-8", body: format!("{body}\n"), head_only: false }
}

/// Answers one request head (everything up to the blank line).
pub fn answer(head: &[u8], metrics: &mut dyn FnMut() -> Result<String, String>) -> Reply {
    let text = String::from_utf8_lossy(head);
    let line = text.split("\r\n").next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return plain("400 Bad Request", "malformed request line");
    };
    if !version.starts_with("HTTP/1.") {
        return plain("400 Bad Request", "HTTP/1.x only");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return plain("405 Method Not Allowed", "read-only: GET or HEAD"),
    };
    // Prometheus may add query parameters; they change nothing here.
    let path = target.split('?').next().unwrap_or("");
    let mut r = match path {
        "/metrics" => match metrics() {
            Ok(body) => Reply { status: "200 OK", content_type: super::CONTENT_TYPE, body, head_only: false },
            Err(e) => plain("500 Internal Server Error", &e),
        },
        "/" => Reply {
            status: "200 OK",
            content_type: "text/html; charset=utf-8",
            body: "<html><head><title>vgpuctl</title></head><body><a href=\"/metrics\">/metrics</a></body></html>\n".into(),
            head_only: false,
        },
        _ => plain("404 Not Found", "not found: the metrics are at /metrics"),
    };
    r.head_only = head_only;
    r
}

/// Reads a request head: up to the blank line, at most `MAX_REQUEST_BYTES`,
/// within the I/O timeout. `Err(reply)` for one that is too large.
fn read_head(s: &mut TcpStream) -> std::io::Result<Result<Vec<u8>, Reply>> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(Ok(buf));
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Ok(Err(plain("431 Request Header Fields Too Large", "request head over 8 KiB")));
        }
        if Instant::now() >= deadline {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "request head not complete in time"));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            // The client closed early: answer what arrived, if it is a request line.
            return Ok(Ok(buf));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn handle(mut s: TcpStream, metrics: &mut dyn FnMut() -> Result<String, String>) -> std::io::Result<()> {
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let r = match read_head(&mut s)? {
        Ok(head) => answer(&head, metrics),
        Err(too_big) => too_big,
    };
    let mut out =
        format!("HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", r.status, r.content_type, r.body.len()).into_bytes();
    if !r.head_only {
        out.extend_from_slice(r.body.as_bytes());
    }
    s.write_all(&out)?;
    s.flush()?;
    // Close gently: a client still sending (an oversized request) would get
    // a reset instead of the answer if unread input were left behind.
    s.shutdown(std::net::Shutdown::Write)?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut drained = 0usize;
    let mut sink = [0u8; 4096];
    while drained < 16 * MAX_REQUEST_BYTES {
        match s.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    Ok(())
}

/// Checks the address: loopback unless the admin allows more.
pub fn check_addr(addr: SocketAddr, allow_remote: bool) -> Result<(), ServeError> {
    if addr.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(ServeError::NotLoopback(addr))
    }
}

/// Binds `addr`, then answers requests one at a time until `max_requests`
/// (forever without it). Each scrape reads the host anew.
pub fn serve(
    addr: SocketAddr,
    max_requests: Option<u64>,
    ready: &mut dyn FnMut(SocketAddr),
    metrics: &mut dyn FnMut() -> Result<String, String>,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    ready(local);
    for (i, conn) in listener.incoming().enumerate() {
        match conn {
            Ok(s) => {
                if let Err(e) = handle(s, metrics) {
                    tracing::debug!("metrics request: {e}");
                }
            }
            Err(e) => tracing::warn!("metrics listener: {e}"),
        }
        if max_requests.is_some_and(|m| i as u64 + 1 >= m) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok() -> Result<String, String> {
        Ok("m 1\n".into())
    }

    #[test]
    fn test_answers_metrics_root_and_refuses_the_rest() {
        assert_eq!(answer(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &mut ok).status, "200 OK");
        assert_eq!(answer(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", &mut ok).body, "m 1\n");
        let h = answer(b"HEAD /metrics HTTP/1.1\r\n\r\n", &mut ok);
        assert!(h.head_only && h.status == "200 OK");
        assert_eq!(answer(b"GET / HTTP/1.1\r\n\r\n", &mut ok).status, "200 OK");
        assert_eq!(answer(b"GET /etc/passwd HTTP/1.1\r\n\r\n", &mut ok).status, "404 Not Found");
        assert_eq!(answer(b"POST /metrics HTTP/1.1\r\n\r\n", &mut ok).status, "405 Method Not Allowed");
        assert_eq!(answer(b"GET /metrics SPDY/3\r\n\r\n", &mut ok).status, "400 Bad Request");
        assert_eq!(answer(b"\xff\xfe garbage", &mut ok).status, "400 Bad Request");
        assert_eq!(answer(b"", &mut ok).status, "400 Bad Request");
        let mut broken = || Err("cannot read /sys".to_string());
        assert_eq!(answer(b"GET /metrics HTTP/1.1\r\n\r\n", &mut broken).status, "500 Internal Server Error");
    }

    #[test]
    fn test_only_loopback_without_allow_remote() {
        assert!(check_addr("127.0.0.1:9000".parse().unwrap(), false).is_ok());
        assert!(check_addr("[::1]:9000".parse().unwrap(), false).is_ok());
        assert!(check_addr("0.0.0.0:9000".parse().unwrap(), false).is_err());
        assert!(check_addr("0.0.0.0:9000".parse().unwrap(), true).is_ok());
    }

    proptest! {
        #[test]
        fn prop_any_request_bytes_get_a_status_line(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let r = answer(&bytes, &mut ok);
            prop_assert!(["200 OK", "400 Bad Request", "404 Not Found", "405 Method Not Allowed"].contains(&r.status));
        }
    }
}
