//! The load generator's side of the wire: one keep-alive HTTP/1.1 connection that its worker drives
//! itself. A request goes out in one write; the answer is read into one buffer and parsed there
//! (`httparse`). No task per connection and no channel between the worker and the socket, so that the
//! client costs little next to the proxies a benchmark measures, which run on the cores beside it.

use std::time::Duration;

use http::Uri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest a request may wait for its whole answer.
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);
/// The largest response head and body read; more is an error, not a buffer that grows without end.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;
const MAX_HEADERS: usize = 64;

/// Where requests go: the address to connect to and what the request line and `Host` say.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    address: String,
    host: String,
    path: String,
}

impl Target {
    /// The target of an `http://` URL.
    pub(crate) fn new(url: &str) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("{e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => return Err(format!("{other}:// is not supported, only http://")),
            None => return Err("give an absolute http:// URL".to_owned()),
        }
        let authority = uri.authority().ok_or("the URL has no host")?;
        Ok(Target {
            address: format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80)),
            host: authority.as_str().to_owned(),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        })
    }

    /// A POST of `body` with `headers`, encoded whole, ready for one write.
    pub(crate) fn post(&self, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut request = Vec::with_capacity(256 + body.len());
        request.extend_from_slice(b"POST ");
        request.extend_from_slice(self.path.as_bytes());
        request.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        request.extend_from_slice(self.host.as_bytes());
        request.extend_from_slice(b"\r\ncontent-length: ");
        request.extend_from_slice(body.len().to_string().as_bytes());
        for (name, value) in headers {
            request.extend_from_slice(b"\r\n");
            request.extend_from_slice(name.as_bytes());
            request.extend_from_slice(b": ");
            request.extend_from_slice(value.as_bytes());
        }
        request.extend_from_slice(b"\r\n\r\n");
        request.extend_from_slice(body);
        request
    }
}

/// What came back: the status, and `x-hookgate-outcome` when the answer had one.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) outcome: Option<String>,
}

/// One keep-alive connection, opened on first use and again after it breaks.
#[derive(Default)]
pub(crate) struct Connection {
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
}

impl Connection {
    /// Sends `request` (from [`Target::post`]) and reads its answer to the end.
    pub(crate) async fn send(&mut self, target: &Target, request: &[u8]) -> Result<Answer, String> {
        let result = tokio::time::timeout(ANSWER_DEADLINE, self.exchange(target, request))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {ANSWER_DEADLINE:?}")));
        if !result.as_ref().is_ok_and(|(_, keep)| *keep) {
            self.stream = None;
        }
        result.map(|(answer, _)| answer)
    }

    /// The answer, and whether the connection may carry another request.
    async fn exchange(&mut self, target: &Target, request: &[u8]) -> Result<(Answer, bool), String> {
        if self.stream.as_ref().is_some_and(closed_by_peer) {
            self.stream = None;
        }
        let stream = match &mut self.stream {
            Some(stream) => stream,
            slot => {
                let stream = TcpStream::connect(&target.address)
                    .await
                    .map_err(|e| format!("cannot connect to {}: {e}", target.address))?;
                let _ = stream.set_nodelay(true);
                slot.insert(stream)
            }
        };
        self.buffer.clear();
        stream.write_all(request).await.map_err(|e| format!("write: {e}"))?;
        loop {
            let head = loop {
                if let Some(head) = parse_head(&self.buffer)? {
                    break head;
                }
                read_more(stream, &mut self.buffer, MAX_HEAD).await?;
            };
            // An interim answer (100 Continue and the like) is followed by the real one.
            if (100..200).contains(&head.status) {
                self.buffer.drain(..head.length);
                continue;
            }
            let end = loop {
                match body_end(&self.buffer, &head)? {
                    Some(end) => break end,
                    None => read_more(stream, &mut self.buffer, head.length + MAX_BODY).await?,
                }
            };
            // Nothing was asked for after this answer, so nothing may follow it.
            let keep = head.keep_alive && end == self.buffer.len();
            return Ok((
                Answer {
                    status: head.status,
                    outcome: head.outcome,
                },
                keep,
            ));
        }
    }
}

/// An idle keep-alive connection the server has closed (or written to unasked) since its last answer.
fn closed_by_peer(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    !matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>, limit: usize) -> Result<(), String> {
    if buffer.len() >= limit {
        return Err(format!("the answer is larger than {limit} bytes"));
    }
    buffer.reserve(16 * 1024);
    match stream.read_buf(buffer).await {
        Ok(0) => Err("the connection closed before the answer was complete".to_owned()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// A parsed response head.
#[derive(Debug)]
struct Head {
    status: u16,
    /// Its length in bytes, up to and including the blank line.
    length: usize,
    framing: Framing,
    keep_alive: bool,
    outcome: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    /// No length and not chunked: the body runs to the end of the connection.
    UntilClose,
}

/// The head at the start of `buffer`, or `None` while it is incomplete.
fn parse_head(buffer: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let length = match response.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed answer: {e}")),
    };
    let status = response.code.ok_or("malformed answer: no status")?;
    let mut head = Head {
        status,
        length,
        framing: Framing::UntilClose,
        keep_alive: response.version == Some(1),
        outcome: None,
    };
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).map_err(|_| format!("{} is not text", header.name))?;
        if header.name.eq_ignore_ascii_case("content-length") && head.framing != Framing::Chunked {
            let length = value.trim().parse().map_err(|_| format!("content-length {value:?}"))?;
            head.framing = Framing::Length(length);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.to_ascii_lowercase().trim_end().ends_with("chunked") {
                return Err(format!("transfer-encoding {value:?} is not supported"));
            }
            head.framing = Framing::Chunked;
        } else if header.name.eq_ignore_ascii_case("connection") {
            head.keep_alive = !value.eq_ignore_ascii_case("close");
        } else if header.name.eq_ignore_ascii_case("x-hookgate-outcome") {
            head.outcome = Some(value.to_owned());
        }
    }
    // Statuses that never have a body.
    if status == 204 || status == 304 {
        head.framing = Framing::Length(0);
    }
    if head.framing == Framing::UntilClose {
        head.keep_alive = false;
    }
    Ok(Some(head))
}

/// Where the answer's body ends in `buffer`, or `None` while it is incomplete.
fn body_end(buffer: &[u8], head: &Head) -> Result<Option<usize>, String> {
    match head.framing {
        Framing::Length(length) => {
            let end = head.length.checked_add(length).ok_or("content-length too large")?;
            if length > MAX_BODY {
                return Err(format!("the answer is larger than {MAX_BODY} bytes"));
            }
            Ok((buffer.len() >= end).then_some(end))
        }
        Framing::Chunked => chunked_end(buffer, head.length),
        // Read until the peer closes: `read_more` reports that as an error, so this answer has no
        // end that could be counted as complete. Such answers do not come from the proxies measured.
        Framing::UntilClose => Err("an answer without a length or chunks is not supported".to_owned()),
    }
}

/// The end of a chunked body that starts at `at`, trailers included.
fn chunked_end(buffer: &[u8], mut at: usize) -> Result<Option<usize>, String> {
    loop {
        let Some(rest) = buffer.get(at..) else { return Ok(None) };
        let (skip, size) = match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err("malformed chunk size".to_owned()),
        };
        at += skip;
        if size == 0 {
            // Trailers, if any, then the blank line.
            loop {
                let Some(rest) = buffer.get(at..) else { return Ok(None) };
                let Some(line) = rest.windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                at += line + 2;
                if line == 0 {
                    return Ok(Some(at));
                }
            }
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= MAX_BODY)
            .ok_or("a chunk is too large")?;
        at += size + 2;
        if buffer.len() < at {
            return Ok(None);
        }
        if buffer.get(at - 2..at) != Some(b"\r\n") {
            return Err("a chunk does not end with CRLF".to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn a_request_is_one_buffer_with_its_length_and_headers() {
        let target = Target::new("http://127.0.0.1:8080/webhooks/a?x=1").unwrap();
        let request = target.post(&[("x-hub-signature-256", "sha256=00")], b"{}");
        assert_eq!(
            request,
            b"POST /webhooks/a?x=1 HTTP/1.1\r\nhost: 127.0.0.1:8080\r\ncontent-length: 2\r\n\
              x-hub-signature-256: sha256=00\r\n\r\n{}"
        );
        assert!(Target::new("https://127.0.0.1/").unwrap_err().contains("only http://"));
        assert!(Target::new("/relative").is_err());
    }

    #[test]
    fn an_answer_with_a_length_ends_after_it() {
        let text = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-hookgate-outcome: forwarded\r\n\r\nhello";
        let h = head(text);
        assert_eq!(
            (h.status, h.outcome.as_deref(), h.keep_alive),
            (200, Some("forwarded"), true)
        );
        assert_eq!(body_end(text.as_bytes(), &h), Ok(Some(text.len())));
        assert_eq!(body_end(&text.as_bytes()[..text.len() - 1], &h), Ok(None));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le").unwrap().is_none());
    }

    #[test]
    fn a_chunked_answer_ends_after_its_last_chunk_and_trailers() {
        let text = "HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n";
        let h = head(text);
        assert_eq!(h.framing, Framing::Chunked);
        assert_eq!(body_end(text.as_bytes(), &h), Ok(Some(text.len())));
        for cut in h.length..text.len() {
            assert_eq!(body_end(&text.as_bytes()[..cut], &h), Ok(None), "cut at {cut}");
        }
        let bad = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n";
        assert!(body_end(bad.as_bytes(), &head(bad)).is_err());
    }

    #[test]
    fn close_and_unframed_answers_end_the_connection() {
        assert!(!head("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(!head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
        let unframed = head("HTTP/1.1 200 OK\r\n\r\n");
        assert!(!unframed.keep_alive);
        assert!(body_end(b"HTTP/1.1 200 OK\r\n\r\n", &unframed).is_err());
        assert_eq!(head("HTTP/1.1 204 No Content\r\n\r\n").framing, Framing::Length(0));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }
}
