//! The public-key schemes: the provider signs with its private key, and the source holds the public key,
//! which need not be kept secret. `discord` (Ed25519 over `{X-Signature-Timestamp}{body}`, hex key),
//! `telnyx` (Ed25519 over `{telnyx-timestamp}|{body}`, base64 key), Standard Webhooks' `v1a` (Ed25519,
//! `whpk_` key, see `standard.rs`) and `sendgrid` (ECDSA P-256 with SHA-256 over `{timestamp}{body}`,
//! base64 DER key). Every key is tried (rotation); the tolerance applies to each timestamp.

use http::HeaderName;

use super::{Check, VerifyError, decode_base64, decode_hex};
use crate::config::SchemeKind;

/// Discord's hex Ed25519 signature.
pub const DISCORD_SIGNATURE: HeaderName = HeaderName::from_static("x-signature-ed25519");
/// Discord's signed Unix timestamp.
pub const DISCORD_TIMESTAMP: HeaderName = HeaderName::from_static("x-signature-timestamp");
/// Telnyx's base64 Ed25519 signature.
pub const TELNYX_SIGNATURE: HeaderName = HeaderName::from_static("telnyx-signature-ed25519");
/// Telnyx's signed Unix timestamp.
pub const TELNYX_TIMESTAMP: HeaderName = HeaderName::from_static("telnyx-timestamp");
/// SendGrid's base64 DER ECDSA signature.
pub const SENDGRID_SIGNATURE: HeaderName = HeaderName::from_static("x-twilio-email-event-webhook-signature");
/// SendGrid's signed Unix timestamp.
pub const SENDGRID_TIMESTAMP: HeaderName = HeaderName::from_static("x-twilio-email-event-webhook-timestamp");

/// A provider's verification key.
#[derive(Clone, Debug)]
pub(crate) enum PublicKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
}

fn ed25519(bytes: &[u8]) -> Result<PublicKey, &'static str> {
    let array: [u8; 32] = bytes.try_into().map_err(|_| "an Ed25519 public key is 32 bytes")?;
    ed25519_dalek::VerifyingKey::from_bytes(&array)
        .map(PublicKey::Ed25519)
        .map_err(|_| "not a valid Ed25519 public key")
}

impl PublicKey {
    /// Reads a key in the form `kind`'s provider shows it.
    pub(crate) fn parse(kind: SchemeKind, text: &str) -> Result<Self, &'static str> {
        use base64::Engine;
        let base64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s.trim());
        match kind {
            SchemeKind::Discord => ed25519(&hex::decode(text.trim()).map_err(|_| "a Discord public key is hex")?),
            SchemeKind::Telnyx => ed25519(&base64(text).map_err(|_| "a Telnyx public key is base64")?),
            SchemeKind::Standard => {
                let encoded = text
                    .trim()
                    .strip_prefix("whpk_")
                    .ok_or("a Standard Webhooks public key starts with `whpk_`")?;
                ed25519(&base64(encoded).map_err(|_| "a `whpk_` key is base64 after the prefix")?)
            }
            SchemeKind::Sendgrid => {
                use p256::pkcs8::DecodePublicKey;
                let der = base64(text).map_err(|_| "a SendGrid verification key is base64")?;
                p256::ecdsa::VerifyingKey::from_public_key_der(&der)
                    .map(PublicKey::P256)
                    .map_err(|_| "not a P-256 public key in DER (SubjectPublicKeyInfo)")
            }
            _ => Err("this scheme takes secrets, not public keys"),
        }
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKey::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify_strict(message, &sig).is_ok()),
            PublicKey::P256(key) => {
                use p256::ecdsa::signature::Verifier;
                p256::ecdsa::Signature::from_der(signature).is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
        }
    }
}

impl Check<'_> {
    /// Succeeds when any public key verifies any candidate over the concatenated `parts`.
    pub(crate) fn verifies(&self, parts: &[&[u8]], candidates: &[Vec<u8>]) -> Result<(), VerifyError> {
        let message = parts.concat();
        let found = self
            .public_keys
            .iter()
            .position(|key| candidates.iter().any(|sig| key.verifies(&message, sig)));
        self.matched_at(found, parts)
    }
}

/// Ed25519 over `{timestamp}{separator}{body}`.
fn timestamped(
    check: &Check<'_>,
    timestamp_header: &HeaderName,
    separator: &[u8],
    signature: Vec<u8>,
) -> Result<(), VerifyError> {
    let timestamp = check.header(timestamp_header)?;
    check.timestamp(timestamp_header, timestamp)?;
    check.verifies(&[timestamp.as_bytes(), separator, check.body], &[signature])
}

pub(crate) fn verify_discord(check: &Check<'_>) -> Result<(), VerifyError> {
    let signature = decode_hex(&DISCORD_SIGNATURE, check.header(&DISCORD_SIGNATURE)?)?;
    timestamped(check, &DISCORD_TIMESTAMP, b"", signature)
}

pub(crate) fn verify_telnyx(check: &Check<'_>) -> Result<(), VerifyError> {
    let signature = decode_base64(&TELNYX_SIGNATURE, check.header(&TELNYX_SIGNATURE)?)?;
    timestamped(check, &TELNYX_TIMESTAMP, b"|", signature)
}

pub(crate) fn verify_sendgrid(check: &Check<'_>) -> Result<(), VerifyError> {
    let signature = decode_base64(&SENDGRID_SIGNATURE, check.header(&SENDGRID_SIGNATURE)?)?;
    timestamped(check, &SENDGRID_TIMESTAMP, b"", signature)
}

/// The headers a public-key sender would send for `body`, signed with `private_key` (an Ed25519 seed, hex
/// or base64, for `discord`, `telnyx` and `standard`; a base64 PKCS#8 DER P-256 key for `sendgrid`).
pub fn sign(
    kind: SchemeKind,
    private_key: &str,
    body: &[u8],
    id: &str,
    timestamp: i64,
) -> Result<Vec<(HeaderName, String)>, String> {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let ts = timestamp.to_string();
    let ed25519_key = || -> Result<ed25519_dalek::SigningKey, String> {
        let text = private_key.trim();
        let bytes = hex::decode(text)
            .or_else(|_| engine.decode(text.strip_prefix("whsk_").unwrap_or(text)))
            .map_err(|_| "the private key is neither hex nor base64".to_owned())?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "an Ed25519 private key (seed) is 32 bytes".to_owned())?;
        Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
    };
    let ed25519_sign = |message: &[u8]| -> Result<Vec<u8>, String> {
        use ed25519_dalek::Signer;
        Ok(ed25519_key()?.sign(message).to_bytes().to_vec())
    };
    match kind {
        SchemeKind::Discord => {
            let sig = ed25519_sign(&[ts.as_bytes(), body].concat())?;
            Ok(vec![(DISCORD_TIMESTAMP, ts), (DISCORD_SIGNATURE, hex::encode(sig))])
        }
        SchemeKind::Telnyx => {
            let sig = ed25519_sign(&[ts.as_bytes(), b"|", body].concat())?;
            Ok(vec![(TELNYX_TIMESTAMP, ts), (TELNYX_SIGNATURE, engine.encode(sig))])
        }
        SchemeKind::Standard => {
            let sig = ed25519_sign(&[id.as_bytes(), b".", ts.as_bytes(), b".", body].concat())?;
            Ok(vec![
                (super::standard::ID, id.to_owned()),
                (super::standard::TIMESTAMP, ts),
                (super::standard::SIGNATURE, format!("v1a,{}", engine.encode(sig))),
            ])
        }
        SchemeKind::Sendgrid => {
            use p256::ecdsa::signature::Signer;
            use p256::pkcs8::DecodePrivateKey;
            let der = engine
                .decode(private_key.trim())
                .map_err(|_| "the private key is not base64".to_owned())?;
            let key = p256::ecdsa::SigningKey::from_pkcs8_der(&der)
                .map_err(|_| "not a P-256 private key in PKCS#8 DER".to_owned())?;
            let sig: p256::ecdsa::Signature = key.sign(&[ts.as_bytes(), body].concat());
            Ok(vec![
                (SENDGRID_TIMESTAMP, ts),
                (SENDGRID_SIGNATURE, engine.encode(sig.to_der().as_bytes())),
            ])
        }
        _ => Err(format!("scheme `{}` is not a public-key scheme", kind.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `hookgate sign --private-key` prints verifies with the matching public key (the vectors that
    /// prove the verifiers right are in `tests/it/providers.rs`, made by openssl and the providers' SDKs).
    #[test]
    fn signing_with_a_private_key_round_trips() {
        use crate::config::Secret;
        use crate::verify::{Keys, Verifier};
        let seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
        let p256 = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg4/V7xxXFn3xTDLWUeBwmEzYkhLLSp3jy1YoKbDlbIEShRANCAASucdfoeMp6VlV6wZhNNujWfqoyKndh80WRSnzjElRrwXIa4hVbTfb46JM4MCJ8yLij3YaKBUWKDsjpUhQ1wOr0";
        let p256_public = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAErnHX6HjKelZVesGYTTbo1n6qMip3YfNFkUp84xJUa8FyGuIVW032+OiTODAifMi4o92GigVFig7I6VIUNcDq9A==";
        for (kind, private, public) in [
            (
                SchemeKind::Discord,
                seed,
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            ),
            (SchemeKind::Telnyx, seed, "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="),
            (
                SchemeKind::Standard,
                seed,
                "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
            ),
            (SchemeKind::Sendgrid, p256, p256_public),
        ] {
            let headers: http::HeaderMap = sign(kind, private, b"{}", "msg_1", 1_700_000_000)
                .expect("sign")
                .into_iter()
                .map(|(k, v)| (k, http::HeaderValue::from_str(&v).expect("value")))
                .collect();
            let public_keys = [Secret::new(public)];
            let keys = Keys {
                public_keys: &public_keys,
                ..Keys::default()
            };
            let v = Verifier::with_keys(kind, None, &keys, std::time::Duration::from_secs(300)).expect("verifier");
            v.verify(headers.clone(), bytes::Bytes::from_static(b"{}"), 1_700_000_000)
                .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            let tampered = v.verify(headers, bytes::Bytes::from_static(b"[]"), 1_700_000_000);
            assert_eq!(tampered.expect_err("tampered").reason(), "mismatch", "{kind:?}");
        }
    }

    #[test]
    fn keys_in_the_wrong_form_are_refused_with_the_reason() {
        let rfc8032 = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
        assert!(PublicKey::parse(SchemeKind::Discord, rfc8032).is_ok());
        assert_eq!(
            PublicKey::parse(SchemeKind::Discord, "zz").err(),
            Some("a Discord public key is hex")
        );
        assert_eq!(
            PublicKey::parse(SchemeKind::Discord, &rfc8032[2..]).err(),
            Some("an Ed25519 public key is 32 bytes")
        );
        assert!(PublicKey::parse(SchemeKind::Standard, "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=").is_err());
        assert!(PublicKey::parse(SchemeKind::Sendgrid, "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE").is_err());
        assert!(PublicKey::parse(SchemeKind::Github, rfc8032).is_err());
    }
}
