//! HTTP/1.1 from the client's side, kept lean: a request is encoded whole for one write, and its answer is
//! read into one buffer and framed there (`httparse`), the body dropped as it arrives. No task drives a
//! connection: whoever holds a [`Connection`] drives it, so a request costs no hop between tasks. The
//! pool keeps them for the `http` handler and the queue's workers; the load generator drives its own.
//!
//! An exchange takes its connection by value and hands it back only when the answer ended cleanly and
//! leaves it fit for another request: a connection cut short by an error or a timeout (which drops the
//! exchange) can never carry a second request.

use std::io::{self, Write};

use bytes::{Buf, BytesMut};
use http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest answer head (and chunk-size line, and trailer section) read; more is an error.
const MAX_HEAD: usize = 64 * 1024;
/// Headers an answer may have, as many as hyper allows.
const MAX_HEADERS: usize = 100;
/// Room made in the buffer before each read.
const READ_SIZE: usize = 8 * 1024;

/// Where requests go, worked out once from an absolute `http://` URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`, to connect to, and the pool's key.
    address: String,
    /// The `Host` header: the URL's authority.
    authority: String,
    /// What goes on the request line: the path and query.
    path: String,
}

impl Target {
    /// The target of an absolute `http://` URL.
    pub fn new(uri: &Uri) -> Result<Self, String> {
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => return Err(format!("{other}:// is not supported, only http://")),
            None => return Err("give an absolute http:// URL".to_owned()),
        }
        let authority = uri.authority().ok_or("the URL has no host")?;
        Ok(Target {
            address: format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80)),
            authority: authority.as_str().to_owned(),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        })
    }

    /// `host:port`, as connected to.
    pub fn address(&self) -> &str {
        &self.address
    }
}

/// A request written into one buffer: the request line, `Host`, `Content-Length`, the headers, the body.
/// Names and values come typed, so nothing can end a line early.
pub struct RequestWriter {
    buffer: Vec<u8>,
}

impl RequestWriter {
    /// A `method` request to `target` whose body will be `body_length` bytes. `Content-Length` is always
    /// sent, except for a GET or HEAD without a body.
    pub fn new(method: &Method, target: &Target, body_length: usize) -> Self {
        let mut buffer = Vec::with_capacity(512 + body_length);
        buffer.extend_from_slice(method.as_str().as_bytes());
        buffer.push(b' ');
        buffer.extend_from_slice(target.path.as_bytes());
        buffer.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        buffer.extend_from_slice(target.authority.as_bytes());
        buffer.extend_from_slice(b"\r\n");
        if body_length > 0 || !(method == Method::GET || method == Method::HEAD) {
            // Writing into a Vec cannot fail.
            let _ = write!(buffer, "content-length: {body_length}\r\n");
        }
        RequestWriter { buffer }
    }

    /// Adds one header line.
    pub fn header(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.line(name, &[value.as_bytes()]);
    }

    /// Adds one header line whose value is `parts` end to end, when together they make a valid header
    /// value (as [`HeaderValue::from_bytes`] would accept it); `false`, with nothing written, when they do
    /// not. For values the gateway builds per request, without a `HeaderValue` of their own.
    pub fn header_from_parts(&mut self, name: &HeaderName, parts: &[&[u8]]) -> bool {
        let valid = |b: &u8| (*b >= 0x20 && *b != 0x7f) || *b == b'\t';
        if !parts.iter().all(|part| part.iter().all(valid)) {
            return false;
        }
        self.line(name, parts);
        true
    }

    /// Writes `name: ` and `parts` end to end as one line; the callers have checked the value.
    fn line(&mut self, name: &HeaderName, parts: &[&[u8]]) {
        self.buffer.extend_from_slice(name.as_str().as_bytes());
        self.buffer.extend_from_slice(b": ");
        for part in parts {
            self.buffer.extend_from_slice(part);
        }
        self.buffer.extend_from_slice(b"\r\n");
    }

    /// The whole request, with `body`, which must be as long as announced.
    pub fn finish(mut self, body: &[u8]) -> Vec<u8> {
        self.buffer.extend_from_slice(b"\r\n");
        self.buffer.extend_from_slice(body);
        self.buffer
    }
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The connection could not be opened.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// `host:port`.
        address: String,
        /// Why.
        source: io::Error,
    },
    /// Writing failed before any byte of the request left: the peer cannot have seen it.
    #[error("the connection failed before the request was sent: {0}")]
    Unsent(io::Error),
    /// Writing failed midway.
    #[error("the connection failed while the request was sent: {0}")]
    Write(io::Error),
    /// Reading the answer failed.
    #[error("cannot read the answer: {0}")]
    Read(io::Error),
    /// The peer closed the connection before the answer was complete.
    #[error("the connection closed before the answer was complete")]
    Closed,
    /// The answer is not HTTP/1.x as this client reads it.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// An exchange's result.
#[derive(Debug)]
pub struct Answer {
    /// The final status (interim 1xx answers are skipped).
    pub status: StatusCode,
    /// The connection, when the answer left it fit for another request.
    pub connection: Option<Connection>,
}

/// One open HTTP/1.1 connection, between requests.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    buffer: BytesMut,
}

impl Connection {
    /// Opens a connection to `address` (`host:port`), with Nagle's algorithm off.
    pub async fn open(address: &str) -> Result<Self, WireError> {
        let stream = TcpStream::connect(address).await.map_err(|source| WireError::Connect {
            address: address.to_owned(),
            source,
        })?;
        let _ = stream.set_nodelay(true);
        Ok(Connection {
            stream,
            buffer: BytesMut::new(),
        })
    }

    /// Whether the peer closed this idle connection (or wrote to it unasked) since its last answer.
    pub fn closed_by_peer(&self) -> bool {
        let mut probe = [0u8; 1];
        !matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends `request` (from [`RequestWriter`]) and reads its answer to the end. Each header of the final
    /// answer is passed to `on_header`.
    pub async fn exchange(
        mut self,
        request: &[u8],
        mut on_header: impl FnMut(&str, &[u8]),
    ) -> Result<Answer, WireError> {
        self.buffer.clear();
        self.write(request).await?;
        let head = loop {
            let head = loop {
                if let Some(head) = parse_head(&self.buffer, &mut on_header)? {
                    break head;
                }
                if self.buffer.len() >= MAX_HEAD {
                    return Err(WireError::Malformed(format!("a head larger than {MAX_HEAD} bytes")));
                }
                self.read_more().await?;
            };
            self.buffer.advance(head.length);
            if head.status != StatusCode::SWITCHING_PROTOCOLS && head.status.is_informational() {
                continue;
            }
            break head;
        };
        let reusable = match head.framing {
            Framing::Length(length) => {
                self.skip(length).await?;
                true
            }
            Framing::Chunked => {
                self.skip_chunks().await?;
                true
            }
            Framing::UntilClose => {
                while self.read_some().await? {
                    self.buffer.clear();
                }
                false
            }
        };
        // Nothing was asked for after this answer, so nothing may follow it.
        let reusable = reusable && head.keep_alive && self.buffer.is_empty();
        Ok(Answer {
            status: head.status,
            connection: reusable.then_some(self),
        })
    }

    /// Writes all of `request`, telling a failure before its first byte apart from one after.
    async fn write(&mut self, request: &[u8]) -> Result<(), WireError> {
        let mut written = 0;
        while written < request.len() {
            let result = match self.stream.write(&request[written..]).await {
                Ok(0) => Err(io::Error::from(io::ErrorKind::WriteZero)),
                other => other,
            };
            match result {
                Ok(n) => written += n,
                Err(e) if written == 0 => return Err(WireError::Unsent(e)),
                Err(e) => return Err(WireError::Write(e)),
            }
        }
        Ok(())
    }

    /// Reads more of the answer; `false` when the peer closed the connection.
    async fn read_some(&mut self) -> Result<bool, WireError> {
        self.buffer.reserve(READ_SIZE);
        match self.stream.read_buf(&mut self.buffer).await {
            Ok(n) => Ok(n > 0),
            Err(e) => Err(WireError::Read(e)),
        }
    }

    /// Reads more of an answer that is not complete yet.
    async fn read_more(&mut self) -> Result<(), WireError> {
        if self.read_some().await? {
            Ok(())
        } else {
            Err(WireError::Closed)
        }
    }

    /// Drops the next `length` bytes of the answer, reading them as needed.
    async fn skip(&mut self, mut length: u64) -> Result<(), WireError> {
        loop {
            let here = usize::try_from(length).map_or(self.buffer.len(), |l| l.min(self.buffer.len()));
            self.buffer.advance(here);
            length -= here as u64;
            if length == 0 {
                return Ok(());
            }
            self.read_more().await?;
        }
    }

    /// Drops a chunked body, its trailers and its final blank line.
    async fn skip_chunks(&mut self) -> Result<(), WireError> {
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buffer) {
                    Ok(httparse::Status::Complete((line, size))) => {
                        self.buffer.advance(line);
                        break size;
                    }
                    Ok(httparse::Status::Partial) if self.buffer.len() < MAX_HEAD => self.read_more().await?,
                    Ok(httparse::Status::Partial) | Err(_) => {
                        return Err(WireError::Malformed("a chunk size line".to_owned()));
                    }
                }
            };
            if size == 0 {
                return self.skip_trailers().await;
            }
            self.skip(size).await?;
            while self.buffer.len() < 2 {
                self.read_more().await?;
            }
            if self.buffer[..2] != *b"\r\n" {
                return Err(WireError::Malformed("a chunk does not end with CRLF".to_owned()));
            }
            self.buffer.advance(2);
        }
    }

    /// Drops the trailer lines after the last chunk, up to and including the blank line.
    async fn skip_trailers(&mut self) -> Result<(), WireError> {
        let mut read = 0;
        loop {
            match self.buffer.windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    self.buffer.advance(2);
                    return Ok(());
                }
                Some(line) => {
                    read += line + 2;
                    self.buffer.advance(line + 2);
                }
                None if read + self.buffer.len() < MAX_HEAD => self.read_more().await?,
                None => return Err(WireError::Malformed(format!("trailers larger than {MAX_HEAD} bytes"))),
            }
            if read >= MAX_HEAD {
                return Err(WireError::Malformed(format!("trailers larger than {MAX_HEAD} bytes")));
            }
        }
    }
}

/// A parsed answer head.
#[derive(Debug)]
struct Head {
    status: StatusCode,
    /// Its length in bytes, up to and including the blank line.
    length: usize,
    framing: Framing,
    keep_alive: bool,
}

/// How the end of an answer's body is found (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    /// No length and not chunked: the body runs to the end of the connection.
    UntilClose,
}

/// The head at the start of `buffer`, or `None` while it is incomplete. The headers of a final answer
/// (not of an interim 1xx) go to `on_header`.
fn parse_head(buffer: &[u8], on_header: &mut impl FnMut(&str, &[u8])) -> Result<Option<Head>, WireError> {
    let malformed = |what: String| WireError::Malformed(what);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let length = match response.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(malformed(e.to_string())),
    };
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| malformed("no status".to_owned()))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(malformed("101 Switching Protocols, which was not asked for".to_owned()));
    }
    let http11 = response.version == Some(1);
    let mut head = Head {
        status,
        length,
        framing: Framing::UntilClose,
        keep_alive: http11,
    };
    if status.is_informational() {
        return Ok(Some(head));
    }
    let mut content_length = None;
    let mut chunked = false;
    let mut encoded = false;
    for header in response.headers.iter() {
        on_header(header.name, header.value);
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| malformed(format!("content-length {:?}", String::from_utf8_lossy(header.value))))?;
            if content_length.is_some_and(|known| known != value) {
                return Err(malformed("two different content-lengths".to_owned()));
            }
            content_length = Some(value);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding frames the body: chunked last is chunks; anything else runs to the close.
            encoded = true;
            chunked = tokens(header.value)
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in tokens(header.value) {
                if token.eq_ignore_ascii_case("close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && !http11 {
                    head.keep_alive = true;
                }
            }
        }
    }
    head.framing = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if encoded {
        Framing::UntilClose
    } else {
        content_length.map_or(Framing::UntilClose, Framing::Length)
    };
    Ok(Some(head))
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(value)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes(), &mut |_, _| {}).unwrap().unwrap()
    }

    fn target(url: &str) -> Target {
        Target::new(&url.parse().unwrap()).unwrap()
    }

    /// A peer that reads one request, answers each of `answers` in turn (one write each), and records
    /// what it read; the connection is closed after the last answer.
    async fn peer(answers: Vec<&'static [u8]>) -> (Target, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook?x=1", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = vec![0u8; 4096];
            let n = socket.read(&mut seen).await.unwrap();
            seen.truncate(n);
            for answer in answers {
                socket.write_all(answer).await.unwrap();
                tokio::task::yield_now().await;
            }
            seen
        });
        (target(&url), task)
    }

    async fn exchange(answers: Vec<&'static [u8]>) -> (Result<Answer, WireError>, Vec<u8>) {
        let (target, task) = peer(answers).await;
        let connection = Connection::open(target.address()).await.unwrap();
        let mut request = RequestWriter::new(&Method::POST, &target, 2);
        request.header(&HeaderName::from_static("x-a"), &HeaderValue::from_static("1"));
        let result = connection.exchange(&request.finish(b"{}"), |_, _| {}).await;
        (result, task.await.unwrap())
    }

    #[test]
    fn a_request_is_one_buffer_with_its_host_length_and_headers() {
        let target = target("http://127.0.0.1:8080/webhooks/a?x=1");
        let mut request = RequestWriter::new(&Method::POST, &target, 2);
        request.header(
            &HeaderName::from_static("x-hub-signature-256"),
            &HeaderValue::from_static("sha256=00"),
        );
        assert_eq!(
            request.finish(b"{}"),
            b"POST /webhooks/a?x=1 HTTP/1.1\r\nhost: 127.0.0.1:8080\r\ncontent-length: 2\r\n\
              x-hub-signature-256: sha256=00\r\n\r\n{}"
        );
        let get = RequestWriter::new(&Method::GET, &target, 0).finish(b"");
        assert_eq!(get, b"GET /webhooks/a?x=1 HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\r\n");
        assert!(
            Target::new(&"https://127.0.0.1/".parse().unwrap())
                .unwrap_err()
                .contains("only http://")
        );
        assert!(Target::new(&"/relative".parse().unwrap()).is_err());
        assert_eq!(target.address(), "127.0.0.1:8080");
        assert_eq!(
            Target::new(&"http://[::1]/".parse().unwrap()).unwrap().address(),
            "[::1]:80"
        );
    }

    #[test]
    fn heads_frame_their_bodies_as_rfc_9112_says() {
        assert_eq!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n").framing,
            Framing::Length(5)
        );
        let chunked = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
        assert_eq!(chunked.framing, Framing::Chunked);
        assert_eq!(
            head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n").framing,
            Framing::UntilClose
        );
        assert_eq!(head("HTTP/1.1 200 OK\r\n\r\n").framing, Framing::UntilClose);
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n").framing,
            Framing::Length(0)
        );
        assert!(head("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(!head("HTTP/1.1 200 OK\r\nconnection: keep-alive, close\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(!head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(head("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n").keep_alive);
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes(), &mut |_, _| {}).is_err(), "{bad:?}");
        }
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-le", &mut |_, _| {})
                .unwrap()
                .is_none()
        );
        let mut seen = Vec::new();
        head_with(
            "HTTP/1.1 200 OK\r\nx-hookgate-outcome: forwarded\r\ncontent-length: 0\r\n\r\n",
            &mut seen,
        );
        assert!(seen.contains(&("x-hookgate-outcome".to_owned(), b"forwarded".to_vec())));
    }

    fn head_with(text: &str, seen: &mut Vec<(String, Vec<u8>)>) {
        parse_head(text.as_bytes(), &mut |name, value| {
            seen.push((name.to_owned(), value.to_vec()))
        })
        .unwrap()
        .unwrap();
    }

    proptest::proptest! {
        /// Whatever a downstream sends, reading its head gives an answer, an error or "not yet": never a
        /// panic. A valid head followed by anything parses to the same head.
        #[test]
        fn any_bytes_read_as_a_head_give_an_answer_or_an_error(bytes: Vec<u8>) {
            let _ = parse_head(&bytes, &mut |_, _| {});
            let mut text = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n".to_vec();
            let length = text.len();
            text.extend_from_slice(&bytes);
            let head = parse_head(&text, &mut |_, _| {}).unwrap().unwrap();
            proptest::prop_assert_eq!((head.length, head.framing), (length, Framing::Length(3)));
        }
    }

    #[tokio::test]
    async fn an_answer_with_a_length_leaves_the_connection_for_the_next_request() {
        let (result, seen) = exchange(vec![b"HTTP/1.1 200 OK\r\ncontent-len", b"gth: 5\r\n\r\nhel", b"lo"]).await;
        let answer = result.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.connection.is_some());
        let seen = String::from_utf8(seen).unwrap();
        assert!(
            seen.starts_with("POST /hook?x=1 HTTP/1.1\r\nhost: 127.0.0.1:"),
            "{seen}"
        );
        assert!(seen.ends_with("content-length: 2\r\nx-a: 1\r\n\r\n{}"), "{seen}");
    }

    #[tokio::test]
    async fn interim_answers_and_chunks_with_trailers_are_read_to_their_end() {
        let (result, _) = exchange(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n",
            b"HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhel",
            b"lo\r\n3\r\nabc\r\n0\r\nx-t: 1\r\n",
            b"\r\n",
        ])
        .await;
        let answer = result.unwrap();
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        assert!(answer.connection.is_some());
    }

    #[tokio::test]
    async fn an_answer_running_to_the_close_is_complete_but_ends_the_connection() {
        let (result, _) = exchange(vec![b"HTTP/1.1 200 OK\r\n\r\nbody until the end"]).await;
        let answer = result.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.connection.is_none());
    }

    #[tokio::test]
    async fn answers_cut_short_or_malformed_are_errors() {
        let cases: Vec<Vec<&'static [u8]>> = vec![
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"],
            vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello"],
            vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"],
            vec![b"HTTP/1.1 200 OK\r\ncontent-le"],
            vec![b"nonsense\r\n\r\n"],
            vec![],
        ];
        for answers in cases {
            let shown = format!("{answers:?}");
            assert!(exchange(answers).await.0.is_err(), "{shown}");
        }
    }

    #[tokio::test]
    async fn bytes_after_the_answer_end_the_connection() {
        let (result, _) = exchange(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200 OK\r\n"]).await;
        let answer = result.unwrap();
        assert!(answer.connection.is_none());
    }

    #[tokio::test]
    async fn an_idle_connection_the_peer_closed_is_seen_as_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let connection = Connection::open(&address).await.unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        assert!(!connection.closed_by_peer());
        drop(socket);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !connection.closed_by_peer() {
            assert!(tokio::time::Instant::now() < deadline, "the close was never seen");
            tokio::task::yield_now().await;
        }
    }
}
