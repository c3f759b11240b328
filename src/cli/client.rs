//! The load generator's side of the wire: one keep-alive connection per worker, which the worker drives
//! itself with the library's lean HTTP/1.1 client ([`hookgate::forward::wire`]): one write per request,
//! the answer parsed in place, no task and no channel per connection. So the client costs little next to
//! the proxies a benchmark measures, which run on the cores beside it.

use std::time::Duration;

use hookgate::forward::wire::{self, Target};

/// The longest a request may wait for its whole answer.
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);

/// What came back: the status, and `x-hookgate-outcome` when the answer had one.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) outcome: Option<String>,
}

/// One keep-alive connection, opened on first use and again after it breaks.
#[derive(Default)]
pub(crate) struct Connection {
    open: Option<wire::Connection>,
}

impl Connection {
    /// Sends `request` (encoded for `target`) and reads its answer to the end.
    pub(crate) async fn send(&mut self, target: &Target, request: &[u8]) -> Result<Answer, String> {
        let idle = self.open.take().filter(|c| !c.closed_by_peer());
        let mut outcome = None;
        // The deadline covers opening a new connection too, as it covers the answer.
        let exchange = async {
            let connection = match idle {
                Some(connection) => connection,
                None => wire::Connection::open(target.address()).await?,
            };
            connection
                .exchange(request, |name, value| {
                    if name.eq_ignore_ascii_case("x-hookgate-outcome") {
                        outcome = Some(String::from_utf8_lossy(value).into_owned());
                    }
                })
                .await
        };
        let answer = tokio::time::timeout(ANSWER_DEADLINE, exchange)
            .await
            .map_err(|_| format!("no answer within {ANSWER_DEADLINE:?}"))?
            .map_err(|e| e.to_string())?;
        self.open = answer.connection;
        Ok(Answer {
            status: answer.status.as_u16(),
            outcome,
        })
    }
}
