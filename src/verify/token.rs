//! Shared-token schemes: the sender sends the secret itself. `gitlab` reads `X-Gitlab-Token`, `token`
//! the configured `token_header`, and `basic` HTTP basic authentication (`Authorization: Basic`, each
//! secret being `user:password`; Postmark and others). Every comparison is between SHA-256 digests, in
//! constant time, so neither the secret's length nor its prefix leaks. Nothing is signed: the replay guard
//! keys on the body.

use http::HeaderName;
use sha2::Digest;

use super::{Check, VerifyError, decode_base64};

/// GitLab's secret token.
pub const GITLAB_TOKEN: HeaderName = HeaderName::from_static("x-gitlab-token");

/// What a token is compared by.
pub(crate) fn digest(secret: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(secret).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `presented` is `secret`, compared by their digests in constant time (the admin token, the CSRF
/// token).
pub(crate) fn same_secret(presented: &[u8], secret: &[u8]) -> bool {
    constant_time_eq(&digest(presented), &digest(secret))
}

/// Succeeds when `presented` is one of the secrets.
fn accept(check: &Check<'_>, presented: &[u8]) -> Result<(), VerifyError> {
    let presented = digest(presented);
    // Every secret is compared, matched or not, so that the time does not say which one matched.
    let found = check.tokens.iter().enumerate().fold(None, |found, (i, token)| {
        if constant_time_eq(token, &presented) {
            found.or(Some(i))
        } else {
            found
        }
    });
    check.matched_at(found, &[check.body])
}

pub(crate) fn verify(check: &Check<'_>, header: &HeaderName) -> Result<(), VerifyError> {
    let value = check.header(header)?;
    accept(check, value.as_bytes())
}

pub(crate) fn verify_basic(check: &Check<'_>) -> Result<(), VerifyError> {
    let name = http::header::AUTHORIZATION;
    let value = check.header(&name)?;
    let (kind, encoded) = value
        .split_once(' ')
        .ok_or_else(|| VerifyError::MalformedHeader(name.clone()))?;
    if !kind.eq_ignore_ascii_case("basic") {
        return Err(VerifyError::MalformedHeader(name));
    }
    let credentials = decode_base64(&name, encoded.trim())?;
    accept(check, &credentials)
}
