//! Marks signature and credential headers sensitive at the door, so that a logged header map shows
//! `Sensitive` in their place. One pass over the request's headers, each looked up in a set: tower-http's
//! `SetSensitiveRequestHeaders` looks each listed name up in the request instead, and with the 30 names of
//! every scheme that cost about 10 000 instructions per request, 7 % of the whole in-process request path
//! (`bench/instructions.sh`), where a request carries 5 to 10 headers.

use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, Request};
use tower::{Layer, Service};

/// The names to mark.
type Names = Arc<HashSet<HeaderName, foldhash::fast::RandomState>>;

/// Builds [`MarkSensitive`].
#[derive(Debug, Clone)]
pub struct MarkSensitiveLayer {
    names: Names,
}

impl MarkSensitiveLayer {
    /// Marks every value of each of `names`.
    pub fn new(names: &[HeaderName]) -> Self {
        MarkSensitiveLayer {
            names: Arc::new(names.iter().cloned().collect()),
        }
    }
}

impl<S> Layer<S> for MarkSensitiveLayer {
    type Service = MarkSensitive<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MarkSensitive {
            inner,
            names: self.names.clone(),
        }
    }
}

/// Marks the listed headers' values sensitive, then calls the inner service.
#[derive(Debug, Clone)]
pub struct MarkSensitive<S> {
    inner: S,
    names: Names,
}

impl<S, B> Service<Request<B>> for MarkSensitive<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        for (name, value) in request.headers_mut().iter_mut() {
            if self.names.contains(name) {
                value.set_sensitive(true);
            }
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::HeaderValue;
    use tower::ServiceExt;

    use super::*;

    /// What the inner service saw: each header's name and whether its value was marked.
    async fn marks(names: &[HeaderName], headers: &[(&str, &str)]) -> Vec<(String, bool)> {
        let mut request = Request::new(());
        for (name, value) in headers {
            request.headers_mut().append(
                HeaderName::try_from(*name).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        let seen = MarkSensitiveLayer::new(names)
            .layer(tower::service_fn(|request: Request<()>| async move {
                Ok::<_, Infallible>(
                    request
                        .headers()
                        .iter()
                        .map(|(name, value)| (name.to_string(), value.is_sensitive()))
                        .collect::<Vec<_>>(),
                )
            }))
            .oneshot(request)
            .await;
        seen.unwrap_or_else(|never| match never {})
    }

    #[tokio::test]
    async fn every_value_of_a_listed_header_is_marked_and_nothing_else() {
        let names = [
            HeaderName::from_static("x-hub-signature-256"),
            http::header::AUTHORIZATION,
        ];
        let seen = marks(
            &names,
            &[
                ("X-Hub-Signature-256", "sha256=aa"),
                ("authorization", "Bearer one"),
                ("authorization", "Bearer two"),
                ("content-type", "application/json"),
                ("x-github-delivery", "d-1"),
            ],
        )
        .await;
        assert_eq!(
            seen,
            [
                ("x-hub-signature-256".to_owned(), true),
                ("authorization".to_owned(), true),
                ("authorization".to_owned(), true),
                ("content-type".to_owned(), false),
                ("x-github-delivery".to_owned(), false),
            ]
        );
    }

    #[tokio::test]
    async fn the_gateways_list_marks_each_schemes_signature_header() {
        let names = crate::verify::sensitive_headers(&[]);
        for name in crate::verify::SIGNATURE_HEADERS.iter() {
            let seen = marks(&names, &[(name.as_str(), "secret-looking"), ("accept", "*/*")]).await;
            assert_eq!(seen, [(name.to_string(), true), ("accept".to_owned(), false)], "{name}");
        }
    }
}
