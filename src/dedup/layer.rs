//! The dedup stage of a source's stack: claims the event id, lets the inner stage deliver under the
//! claim, then commits it (delivered) or releases it (failed, so that the sender's retry is processed).
//! An id already done answers `200 duplicate` without delivery; one in flight elsewhere is `409
//! in_flight`; an unreachable store is `503` under `on_store_error = "reject"`, or delivery without dedup
//! under `"accept"`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use super::{Claim, ClaimResult, DedupStore};
use crate::config::OnStoreError;
use crate::verify::event_id::{Event, EventId};

/// How long a sender is asked to wait when the dedup store is down.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// An answer of this stage that is not a failure: the event was delivered before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duplicate;

/// The refusals of this stage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DedupError {
    /// Another request holds the id now.
    #[error("the event is being processed by another request; retry in {retry_after:?}")]
    InFlight {
        /// When to come back.
        retry_after: Duration,
    },
    /// The store cannot be reached and `on_store_error = "reject"`.
    #[error("the dedup store is unavailable")]
    StoreUnavailable {
        /// When to come back.
        retry_after: Duration,
    },
}

/// Builds [`DedupService`] for one source.
#[derive(Debug, Clone)]
pub struct DedupLayer {
    store: Arc<DedupStore>,
    source: Arc<str>,
}

impl DedupLayer {
    /// Claims the ids of `source`'s events in `store`.
    pub fn new(store: Arc<DedupStore>, source: Arc<str>) -> Self {
        DedupLayer { store, source }
    }
}

impl<S> Layer<S> for DedupLayer {
    type Service = DedupService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DedupService {
            inner,
            store: self.store.clone(),
            source: self.source.clone(),
        }
    }
}

/// Claim, deliver, then commit or release.
#[derive(Debug, Clone)]
pub struct DedupService<S> {
    inner: S,
    store: Arc<DedupStore>,
    source: Arc<str>,
}

impl<S> Service<Event> for DedupService<S>
where
    S: Service<Event> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: From<Duplicate> + Send,
    S::Error: From<DedupError> + Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, event: Event) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let store = self.store.clone();
        let source = self.source.clone();
        Box::pin(async move {
            // Only a verified event reaches the store: an unauthenticated request can neither claim nor
            // probe an id.
            let claims = match admit(&store, &source, &event).await? {
                Admission::Duplicate => return Ok(Duplicate.into()),
                Admission::Deliver(claims) => claims,
            };
            // Once claimed, the delivery and its commit or release run to the end, bounded by the handler's
            // timeout, even when the sender hangs up (then in a task of their own): the application may already
            // be doing the work, and the sender's retry must then find the id in flight or done, never
            // released.
            let delivery = store.clone().run_delivery(Box::pin(async move {
                let result = inner.call(event).await;
                // Both keys together: their commands go out in one pipeline.
                let [id_claim, guard_claim] = claims;
                futures_util::join!(
                    settle_some(&store, &source, id_claim, result.is_ok()),
                    settle_some(&store, &source, guard_claim, result.is_ok()),
                );
                result
            }));
            match delivery.await {
                Some(result) => result,
                // Cut at shutdown: the claims were dropped, and so released.
                None => Err(DedupError::StoreUnavailable {
                    retry_after: STORE_RETRY_AFTER,
                }
                .into()),
            }
        })
    }
}

/// What the claim decided.
enum Admission {
    /// Deliver, under the id's claim and the replay guard's (each absent when the store is down and
    /// `on_store_error = "accept"`, or when the guard is off).
    Deliver([Option<Claim>; 2]),
    /// Delivered before: answer `200 duplicate` and forward nothing.
    Duplicate,
}

/// One key's claim: ours (or `None`, delivering without dedup), or delivered before.
enum Step {
    Claimed(Option<Claim>),
    Duplicate,
}

async fn admit(store: &Arc<DedupStore>, source: &Arc<str>, event: &Event) -> Result<Admission, DedupError> {
    let Some(key) = event.verified.replay_key() else {
        return match claim(store, source, &event.id, &ID_LABELS).await? {
            Step::Claimed(claim) => Ok(Admission::Deliver([claim, None])),
            Step::Duplicate => Ok(Admission::Duplicate),
        };
    };
    // The replay guard: the same signed material under another id is the same event. Both keys are
    // claimed at once (one pipeline, one round trip); the event goes on only when both are ours, and a
    // key claimed for an event that does not go on is released.
    let guard_id = EventId::new(guard_id(key)).map_err(|_| DedupError::StoreUnavailable {
        retry_after: STORE_RETRY_AFTER,
    })?;
    let (by_id, by_guard) = futures_util::join!(
        claim(store, source, &event.id, &ID_LABELS),
        claim(store, source, &guard_id, &GUARD_LABELS)
    );
    match (by_id, by_guard) {
        (Ok(Step::Claimed(id_claim)), Ok(Step::Claimed(guard_claim))) => {
            Ok(Admission::Deliver([id_claim, guard_claim]))
        }
        (by_id, by_guard) => {
            // Not both ours: give back what is, then answer as the id says first, then the guard.
            let mut answer = Ok(Admission::Duplicate);
            for found in [by_id, by_guard].into_iter().rev() {
                match found {
                    Ok(Step::Claimed(claim)) => settle_some(store, source, claim, false).await,
                    Ok(Step::Duplicate) => answer = Ok(Admission::Duplicate),
                    Err(error) => answer = Err(error),
                }
            }
            answer
        }
    }
}

/// The replay guard's id of a signed material's digest: `replay:` and 64 hex digits (written in one pass:
/// `hex::encode` builds its string a char at a time, a measurable part of a request).
fn guard_id(digest: &[u8; 32]) -> String {
    const PREFIX: &[u8] = b"replay:";
    let mut text = [0u8; PREFIX.len() + 64];
    text[..PREFIX.len()].copy_from_slice(PREFIX);
    // Cannot fail: the slice is exactly twice the digest's length.
    let _ = hex::encode_to_slice(digest, &mut text[PREFIX.len()..]);
    // ASCII throughout, so never the empty fallback; `from_utf8` checks it a word at a time, where
    // `from_utf8_lossy` went a char at a time.
    std::str::from_utf8(&text).map(str::to_owned).unwrap_or_default()
}

/// [`settle`] for a claim that may be absent (delivering without dedup, or the guard off).
async fn settle_some(store: &DedupStore, source: &str, claim: Option<Claim>, delivered: bool) {
    if let Some(claim) = claim {
        settle(store, source, claim, delivered).await;
    }
}

/// The `result` labels of one key's claims in `hookgate_dedup_total`: the event id's, or the replay
/// guard's, counted apart (`replay_duplicate` is a replay stopped).
struct Labels {
    claimed: &'static str,
    duplicate: &'static str,
    in_flight: &'static str,
    store_error_accepted: &'static str,
    store_error_rejected: &'static str,
}

const ID_LABELS: Labels = Labels {
    claimed: "claimed",
    duplicate: "duplicate",
    in_flight: "in_flight",
    store_error_accepted: "store_error_accepted",
    store_error_rejected: "store_error_rejected",
};

const GUARD_LABELS: Labels = Labels {
    claimed: "replay_claimed",
    duplicate: "replay_duplicate",
    in_flight: "replay_in_flight",
    store_error_accepted: "replay_store_error_accepted",
    store_error_rejected: "replay_store_error_rejected",
};

/// Claims one key, counting the result under `labels`.
async fn claim(store: &Arc<DedupStore>, source: &Arc<str>, id: &EventId, labels: &Labels) -> Result<Step, DedupError> {
    match store.claim(source, id).await {
        Ok(ClaimResult::Claimed(claim)) => {
            crate::metrics::dedup(source, labels.claimed);
            Ok(Step::Claimed(Some(claim)))
        }
        Ok(ClaimResult::Duplicate) => {
            crate::metrics::dedup(source, labels.duplicate);
            Ok(Step::Duplicate)
        }
        Ok(ClaimResult::InFlight { retry_after }) => {
            crate::metrics::dedup(source, labels.in_flight);
            Err(DedupError::InFlight { retry_after })
        }
        Err(error) => {
            let accept = store.on_error() == OnStoreError::Accept;
            let (outcome, action) = if accept {
                (labels.store_error_accepted, "forwarding without dedup")
            } else {
                (labels.store_error_rejected, "answering 503")
            };
            crate::metrics::dedup(source, outcome);
            if store.should_warn() {
                tracing::warn!(%source, store = store.kind(), %error, "dedup store unavailable; {action}");
            }
            if accept {
                Ok(Step::Claimed(None))
            } else {
                Err(DedupError::StoreUnavailable {
                    retry_after: STORE_RETRY_AFTER,
                })
            }
        }
    }
}

/// Commits after a delivery, releases after a failure. A store failure here is logged and counted, and
/// never changes what the sender is told.
async fn settle(store: &DedupStore, source: &str, claim: Claim, delivered: bool) {
    let (op, result) = if delivered {
        ("commit", claim.commit().await)
    } else {
        ("release", claim.release().await)
    };
    match result {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            source,
            op,
            "the claim's lease ran out before it was settled; raise dedup.lease"
        ),
        Err(error) => {
            if store.should_warn() {
                tracing::warn!(source, op, %error, "dedup store failed after delivery; the lease will free the id");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tower::ServiceExt;

    use super::*;
    use crate::config::DedupConfig;
    use crate::error::{Accepted, Rejection};
    use crate::forward::ForwardError;
    use crate::verify::test_support::github_event as event;

    /// The dedup layer over a stub handler that counts its calls and fails while `fail` is set.
    fn service(
        store: Arc<DedupStore>,
        calls: Arc<AtomicUsize>,
        fail: bool,
    ) -> impl Service<Event, Response = Accepted, Error = Rejection> {
        DedupLayer::new(store, Arc::from("src")).layer(tower::service_fn(move |_: Event| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if fail {
                    Err(Rejection::Forward(ForwardError::Connect("down".into())))
                } else {
                    Ok(Accepted::Forwarded)
                }
            }
        }))
    }

    #[test]
    fn the_guard_id_is_the_prefix_and_the_digest_in_lowercase_hex() {
        let mut digest = [0u8; 32];
        digest[0] = 0xab;
        digest[31] = 0x0f;
        let id = guard_id(&digest);
        assert_eq!(id.len(), 7 + 64);
        assert!(id.starts_with("replay:ab00"), "{id}");
        assert!(id.ends_with("000f"), "{id}");
    }

    #[tokio::test]
    async fn duplicate_after_commit_is_not_forwarded() {
        let store = DedupStore::new(&DedupConfig::default(), None).expect("memory store");
        let calls = Arc::new(AtomicUsize::new(0));
        let first = service(store.clone(), calls.clone(), false).oneshot(event("e1")).await;
        assert!(matches!(first, Ok(Accepted::Forwarded)));
        let again = service(store, calls.clone(), false).oneshot(event("e1")).await;
        assert!(matches!(again, Ok(Accepted::Duplicate)), "{again:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn claim_released_when_downstream_fails_so_the_retry_is_delivered() {
        let store = DedupStore::new(&DedupConfig::default(), None).expect("memory store");
        let calls = Arc::new(AtomicUsize::new(0));
        let failed = service(store.clone(), calls.clone(), true).oneshot(event("e2")).await;
        assert!(matches!(failed, Err(Rejection::Forward(_))));
        let retry = service(store, calls.clone(), false).oneshot(event("e2")).await;
        assert!(matches!(retry, Ok(Accepted::Forwarded)), "{retry:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
