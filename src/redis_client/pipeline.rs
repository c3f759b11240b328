//! One lean, pipelined connection per thread to a single Redis node over TCP or a Unix socket.
//!
//! A request's command is encoded (by the `redis` crate) straight into the thread's outgoing buffer,
//! next to the commands of the other requests on that core. One task per thread owns the socket: it lets
//! the ready requests run first (a `yield_now`), writes everything that is waiting in one write, reads the
//! answers in order into one buffer, frames each in place and hands it to its caller. A command costs a
//! copy into a buffer and a oneshot answer; there is no task spawned per batch and no second task and
//! channel between the batch and the socket, as there is with the crate's multiplexed connection.
//!
//! At most one batch is on the wire at a time: commands that arrive while it is out go in the next one.
//! Each command comes with its caller's deadline, and a batch is bounded by the earliest deadline among
//! its commands: one timer per batch, not one per command, and no caller waits past its own deadline,
//! however long it queued. A batch that gets no complete answer by then fails, and its connection is
//! closed (a late answer must never be taken for the next batch's); so does one whose connection breaks,
//! and then its callers are told the connection was dropped, so that a command safe to send twice is sent
//! once more, on a new connection, before the same deadline.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Buf, BytesMut};
use redis::{Cmd, ConnectionAddr, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::Failure;

/// Where and how to connect: a plain TCP or Unix socket address, with the login and database.
#[derive(Clone)]
pub(super) struct Endpoint {
    address: Address,
    username: Option<String>,
    password: Option<String>,
    db: i64,
}

#[derive(Clone)]
enum Address {
    Tcp(String, u16),
    Unix(PathBuf),
}

impl Endpoint {
    /// The endpoint of a client, when it is one this connection speaks to: not `rediss://`, which keeps the
    /// crate's own TLS connection.
    pub(super) fn of(client: &redis::Client) -> Option<Self> {
        let info = client.get_connection_info();
        let address = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Address::Tcp(host.clone(), *port),
            ConnectionAddr::Unix(path) => Address::Unix(path.clone()),
            _ => return None,
        };
        let settings = info.redis_settings();
        Some(Endpoint {
            address,
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
            db: settings.db(),
        })
    }

    async fn connect(&self) -> Result<Connection, String> {
        let io: Box<dyn Io> = match &self.address {
            Address::Tcp(host, port) => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
                // Each batch is one write that is waited on: never hold it back for more.
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                Box::new(stream)
            }
            Address::Unix(path) => Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| format!("connecting to {}: {e}", path.display()))?,
            ),
        };
        let mut connection = Connection {
            io,
            answers: BytesMut::with_capacity(4096),
        };
        let mut login = Vec::new();
        let mut commands = 0;
        if let Some(password) = &self.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(username) = &self.username {
                auth.arg(username);
            }
            auth.arg(password).write_packed_command(&mut login);
            commands += 1;
        }
        if self.db != 0 {
            redis::cmd("SELECT").arg(self.db).write_packed_command(&mut login);
            commands += 1;
        }
        if commands > 0 {
            for value in connection.exchange(&login, commands).await.map_err(|f| f.message)? {
                // A wrong password is Redis's error answer: say so, never with the password.
                value.extract_error().map_err(|e| format!("logging in to Redis: {e}"))?;
            }
        }
        Ok(connection)
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

struct Connection {
    io: Box<dyn Io>,
    /// Answers read and not yet handed out: the tail of a read may hold the start of the next answer.
    answers: BytesMut,
}

impl Connection {
    /// Writes `commands` (already encoded) at once and reads their `count` answers, in order.
    async fn exchange(&mut self, commands: &[u8], count: usize) -> Result<Vec<Value>, Failure> {
        let broken = |e: std::io::Error| Failure {
            message: format!("Redis connection: {e}"),
            dropped: true,
        };
        Pin::new(&mut self.io).write_all(commands).await.map_err(broken)?;
        let mut values = Vec::with_capacity(count);
        while values.len() < count {
            match decode(&self.answers).map_err(Failure::other)? {
                Some((value, length)) => {
                    self.answers.advance(length);
                    values.push(value);
                }
                None => {
                    self.answers.reserve(4096);
                    let read = self.io.read_buf(&mut self.answers).await.map_err(broken)?;
                    if read == 0 {
                        return Err(broken(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        }
        Ok(values)
    }
}

/// Arrays nested deeper than this are refused (the deepest answer hookgate asks for, XREADGROUP's, has 4).
const MAX_DEPTH: usize = 16;

/// The first complete answer at the start of `bytes` (RESP2: `+`, `-`, `:`, `$`, `*`) and its length, or
/// `None` while it is incomplete. Read here in one pass, without the crate's parser and the buffer it
/// allocates per answer; only an answer that holds an error (`-`, anywhere in it) goes to the crate's parser,
/// which alone can build its `ServerError`.
fn decode(bytes: &[u8]) -> Result<Option<(Value, usize)>, String> {
    let mut has_error = false;
    match read_value(bytes, 0, 0, &mut has_error)? {
        Some((_, end)) if has_error => redis::parse_redis_value(&bytes[..end])
            .map(|value| Some((value, end)))
            .map_err(|e| format!("unreadable Redis answer: {e}")),
        found => Ok(found),
    }
}

/// The value that starts at `at`, and where it ends.
fn read_value(bytes: &[u8], at: usize, depth: usize, has_error: &mut bool) -> Result<Option<(Value, usize)>, String> {
    if depth > MAX_DEPTH {
        return Err(format!("a Redis answer nested deeper than {MAX_DEPTH}"));
    }
    let Some(&kind) = bytes.get(at) else {
        return Ok(None);
    };
    let Some(line) = bytes[at + 1..].windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let text = &bytes[at + 1..at + 1 + line];
    let next = at + 1 + line + 2;
    let number = || -> Result<i64, String> {
        std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| "a Redis answer with a malformed number".to_owned())
    };
    let value = match kind {
        b'+' if text == b"OK" => Value::Okay,
        b'+' => Value::SimpleString(
            std::str::from_utf8(text)
                .map_err(|_| "a Redis status that is not UTF-8".to_owned())?
                .to_owned(),
        ),
        b'-' => {
            *has_error = true;
            Value::Nil
        }
        b':' => Value::Int(number()?),
        b'$' => {
            let Ok(size) = usize::try_from(number()?) else {
                return Ok(Some((Value::Nil, next)));
            };
            let end = next.saturating_add(size).saturating_add(2);
            if bytes.len() < end {
                return Ok(None);
            }
            if bytes[end - 2..end] != *b"\r\n" {
                return Err("a Redis bulk string that does not end with CR LF".to_owned());
            }
            return Ok(Some((Value::BulkString(bytes[next..end - 2].to_vec()), end)));
        }
        b'*' => {
            let Ok(count) = usize::try_from(number()?) else {
                return Ok(Some((Value::Nil, next)));
            };
            // The count is the peer's word: the buffer, not the count, bounds the allocation.
            let mut items = Vec::with_capacity(count.min(bytes.len() - next));
            let mut end = next;
            for _ in 0..count {
                let Some((item, after)) = read_value(bytes, end, depth + 1, has_error)? else {
                    return Ok(None);
                };
                items.push(item);
                end = after;
            }
            return Ok(Some((Value::Array(items), end)));
        }
        other => return Err(format!("an unexpected Redis answer type {:?}", char::from(other))),
    };
    Ok(Some((value, next)))
}

type Answer = oneshot::Sender<Result<Value, Failure>>;

/// The commands of one thread's requests that wait for the next write.
#[derive(Default)]
struct Waiting {
    commands: Vec<u8>,
    answers: Vec<Answer>,
    /// The earliest deadline among the waiting commands: it bounds their batch (with its connection and
    /// login, when one has to be made). Set whenever `answers` is not empty.
    due: Option<Instant>,
    /// Whether a task owns the socket now (it ends when this thread's runtime stops).
    driven: bool,
}

struct Shared {
    waiting: Mutex<Waiting>,
    wake: Notify,
    closed: AtomicBool,
}

impl Shared {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One thread's connection. Dropping it (with the client) closes the socket.
pub(super) struct Pipeline {
    shared: Arc<Shared>,
    endpoint: Arc<Endpoint>,
}

impl Pipeline {
    pub(super) fn new(endpoint: Arc<Endpoint>) -> Self {
        Pipeline {
            shared: Arc::new(Shared {
                waiting: Mutex::new(Waiting::default()),
                wake: Notify::new(),
                closed: AtomicBool::new(false),
            }),
            endpoint,
        }
    }

    /// Sends `cmd` in this thread's next batch, and returns its answer, or fails by `deadline`.
    pub(super) async fn query(&self, cmd: &Cmd, deadline: Instant) -> Result<Value, Failure> {
        let (answer, answered) = oneshot::channel();
        let (start, wake) = {
            let mut waiting = self.shared.waiting();
            cmd.write_packed_command(&mut waiting.commands);
            waiting.answers.push(answer);
            waiting.due = Some(waiting.due.map_or(deadline, |due| due.min(deadline)));
            let start = !waiting.driven;
            waiting.driven = true;
            (start, waiting.answers.len() == 1)
        };
        if start {
            tokio::spawn(drive(self.shared.clone(), self.endpoint.clone()));
        } else if wake {
            self.shared.wake.notify_one();
        }
        answered
            .await
            .map_err(|_| Failure::other("the Redis connection was closed (shutting down)".to_owned()))?
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

/// Marks the socket as no longer driven when its task ends, however it ends (its runtime stopping drops
/// it): the next command starts a new task, and the commands left waiting are told.
struct Driven(Arc<Shared>);

impl Drop for Driven {
    fn drop(&mut self) {
        let answers = {
            let mut waiting = self.0.waiting();
            waiting.driven = false;
            waiting.commands.clear();
            waiting.due = None;
            std::mem::take(&mut waiting.answers)
        };
        fail(
            answers,
            &Failure::other("the Redis connection was closed (shutting down)".to_owned()),
        );
    }
}

fn fail(answers: Vec<Answer>, failure: &Failure) {
    for answer in answers {
        let _ = answer.send(Err(failure.clone()));
    }
}

/// The task that owns one thread's socket: it connects when there is something to send, and again after
/// the connection broke or an answer timed out.
async fn drive(shared: Arc<Shared>, endpoint: Arc<Endpoint>) {
    let _driven = Driven(shared.clone());
    let mut connection: Option<Connection> = None;
    let mut commands = Vec::new();
    let mut answers = Vec::new();
    loop {
        // `notify_one` keeps a permit when no one waits, so a command added after this check still wakes it.
        while shared.waiting().answers.is_empty() {
            if shared.closed.load(Ordering::Acquire) {
                return;
            }
            shared.wake.notified().await;
        }
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        tokio::task::yield_now().await;
        let due = {
            let mut waiting = shared.waiting();
            std::mem::swap(&mut commands, &mut waiting.commands);
            std::mem::swap(&mut answers, &mut waiting.answers);
            // Set with the first of these answers, under the same lock (`now` would fail the batch at once).
            waiting.due.take().unwrap_or_else(Instant::now)
        };
        if due <= Instant::now() {
            // The batch before took its callers' whole time (Redis stalled): this one's first caller is out
            // of time already. Failing the batch unsent keeps the connection, which sending it only to
            // time out at once would close.
            commands.clear();
            fail(
                std::mem::take(&mut answers),
                &Failure::other(super::NO_ANSWER.to_owned()),
            );
            continue;
        }
        let sent = tokio::time::timeout_at(due, async {
            let open = match connection.as_mut() {
                Some(open) => open,
                None => connection.insert(endpoint.connect().await.map_err(Failure::other)?),
            };
            open.exchange(&commands, answers.len()).await
        })
        .await
        .unwrap_or_else(|_| Err(Failure::other(super::NO_ANSWER.to_owned())));
        commands.clear();
        match sent {
            Ok(values) => {
                for (value, answer) in values.into_iter().zip(answers.drain(..)) {
                    let _ = answer.send(value.extract_error().map_err(|e| Failure::other(e.to_string())));
                }
            }
            Err(failure) => {
                // Whatever it was, the socket may be out of step with the answers: start again.
                connection = None;
                fail(std::mem::take(&mut answers), &failure);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn length(bytes: &[u8]) -> Result<Option<usize>, String> {
        decode(bytes).map(|found| found.map(|(_, length)| length))
    }

    #[test]
    fn frames_complete_answers_and_waits_for_incomplete_ones() {
        assert_eq!(length(b"+OK\r\n"), Ok(Some(5)));
        assert_eq!(length(b"+OK\r\n:1\r\n"), Ok(Some(5)));
        assert_eq!(length(b"-ERR no\r\n"), Ok(Some(9)));
        assert_eq!(length(b"$-1\r\n"), Ok(Some(5)));
        assert_eq!(length(b"$3\r\nabc\r\n"), Ok(Some(9)));
        assert_eq!(length(b"$3\r\nab"), Ok(None));
        assert_eq!(length(b"$3\r\nabc\r"), Ok(None));
        assert_eq!(length(b"*2\r\n$1\r\na\r\n:5\r\n+next\r\n"), Ok(Some(15)));
        assert_eq!(length(b"*2\r\n$1\r\na\r\n"), Ok(None));
        assert_eq!(length(b"*-1\r\n"), Ok(Some(5)));
        assert_eq!(length(b"*0\r\n"), Ok(Some(4)));
        assert_eq!(length(b""), Ok(None));
        assert_eq!(length(b":12"), Ok(None));
        // A bulk string may hold CR LF itself: its length, not a search, finds its end.
        assert_eq!(length(b"$4\r\n\r\n\r\n\r\n"), Ok(Some(10)));
    }

    #[test]
    fn refuses_what_is_not_an_answer() {
        assert!(decode(b"?what\r\n").is_err());
        assert!(decode(b"$x\r\nabc\r\n").is_err());
        assert!(decode(b"*z\r\n").is_err());
        assert!(decode(b"$3\r\nabcXY").is_err());
        assert!(decode(&b"*1\r\n".repeat(MAX_DEPTH + 2)).is_err());
    }

    /// A random answer (statuses, integers, bulk strings with any bytes, nested arrays), as Redis writes it.
    fn answer() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            "[A-Za-z ]{0,12}".prop_map(|t| format!("+{t}\r\n").into_bytes()),
            any::<i64>().prop_map(|n| format!(":{n}\r\n").into_bytes()),
            Just(b"$-1\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| {
                let mut out = format!("${}\r\n", b.len()).into_bytes();
                out.extend_from_slice(&b);
                out.extend_from_slice(b"\r\n");
                out
            }),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(|items| {
                let mut out = format!("*{}\r\n", items.len()).into_bytes();
                for item in items {
                    out.extend_from_slice(&item);
                }
                out
            })
        })
    }

    proptest::proptest! {
        /// Any answer reads as the crate reads it, and every cut of it short of its end is "not yet".
        #[test]
        fn any_answer_reads_as_the_crate_reads_it_and_no_cut_of_it_is_complete(answer in answer()) {
            let (value, length) = decode(&answer).expect("valid").expect("complete");
            proptest::prop_assert_eq!(length, answer.len());
            proptest::prop_assert_eq!(value, redis::parse_redis_value(&answer).expect("the crate reads it"));
            for cut in 0..answer.len() {
                proptest::prop_assert!(decode(&answer[..cut]).expect("valid so far").is_none(), "cut at {}", cut);
            }
        }
    }

    /// Answers of every kind hookgate asks for, as Redis writes them: each reads as the crate's own parser
    /// reads it, and so does every answer that holds an error (which goes to that parser).
    #[test]
    fn every_answer_reads_as_the_crate_reads_it() {
        let answers: [&[u8]; 10] = [
            b"+OK\r\n",
            b"+QUEUED\r\n",
            b":-7\r\n",
            b"$-1\r\n",
            b"$0\r\n\r\n",
            b"$32\r\n0123456789abcdef0123456789abcdef\r\n",
            b"*3\r\n$5\r\nhello\r\n:-7\r\n$-1\r\n",
            b"*1\r\n*2\r\n$5\r\nqueue\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
            b"-NOSCRIPT No matching script.\r\n",
            b"*2\r\n+OK\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        ];
        for answer in answers {
            let (value, length) = decode(answer).expect("valid").expect("complete");
            assert_eq!(length, answer.len(), "{}", String::from_utf8_lossy(answer));
            let crate_reads = redis::parse_redis_value(answer).expect("the crate reads it");
            assert_eq!(value, crate_reads, "{}", String::from_utf8_lossy(answer));
        }
    }
}
