//! `hookgate sign` and `hookgate verify`: sign a body as a provider would, and explain why a request does
//! or does not verify, the most common question about any webhook.

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use hookgate::config::{self, HmacAlgorithm, HmacConfig, KeyKind, SchemeKind, Secret, SignatureEncoding};
use hookgate::verify::layer::url_variants;
use hookgate::verify::{Keys, Target, Verifier, public_key};
use http::{HeaderMap, HeaderName, HeaderValue};

/// What both commands need to set up a scheme's keys.
#[derive(Args)]
pub struct SchemeArgs {
    /// The scheme, as in the config file (stripe, github, twilio, discord, …).
    #[arg(long)]
    scheme: SchemeKind,
    /// A secret, as the provider shows it (`whsec_…` for stripe and standard). Repeat to try several.
    #[arg(long)]
    secret: Vec<String>,
    /// hmac only: the signature header.
    #[arg(long, default_value = "x-signature")]
    signature_header: String,
    /// hmac only: sha256, sha1 or sha512.
    #[arg(long, default_value = "sha256")]
    algorithm: String,
    /// hmac only: hex or base64.
    #[arg(long, default_value = "hex")]
    encoding: String,
    /// hmac only: text before the signature.
    #[arg(long, default_value = "")]
    prefix: String,
    /// hmac only: the signed-content template.
    #[arg(long, default_value = "{body}")]
    signed_content: String,
    /// hmac only: the timestamp header, if the template uses `{timestamp}`.
    #[arg(long)]
    timestamp_header: Option<String>,
    /// token only: the header that carries the token.
    #[arg(long)]
    token_header: Option<String>,
    /// URL-signed schemes (twilio, square, hubspot): the public URL the provider was given, with query.
    #[arg(long)]
    url: Option<String>,
    /// The request method (hubspot signs it).
    #[arg(long, default_value = "POST")]
    method: http::Method,
}

impl SchemeArgs {
    fn hmac_config(&self) -> Result<Option<HmacConfig>, String> {
        if self.scheme != SchemeKind::Hmac {
            return Ok(None);
        }
        let header_name = |s: &str| HeaderName::try_from(s).map_err(|_| format!("`{s}` is not a header name"));
        Ok(Some(HmacConfig {
            header: header_name(&self.signature_header)?,
            algorithm: match self.algorithm.as_str() {
                "sha256" => HmacAlgorithm::Sha256,
                "sha1" => HmacAlgorithm::Sha1,
                "sha512" => HmacAlgorithm::Sha512,
                other => return Err(format!("unknown algorithm `{other}`; use sha256, sha1 or sha512")),
            },
            encoding: match self.encoding.as_str() {
                "hex" => SignatureEncoding::Hex,
                "base64" => SignatureEncoding::Base64,
                other => return Err(format!("unknown encoding `{other}`; use hex or base64")),
            },
            prefix: self.prefix.clone(),
            signed_content: config::Template::parse(&self.signed_content)
                .map_err(|e| format!("--signed-content: {e}"))?,
            timestamp_header: self.timestamp_header.as_deref().map(header_name).transpose()?,
        }))
    }

    fn token_header(&self) -> Result<Option<HeaderName>, String> {
        self.token_header
            .as_deref()
            .map(|s| HeaderName::try_from(s).map_err(|_| format!("`{s}` is not a header name")))
            .transpose()
    }

    /// The verifier of these keys; any length of secret is accepted, since this only checks a request.
    fn verifier(&self, public_keys: &[String]) -> Result<Verifier, String> {
        let secrets: Vec<Secret> = self.secret.iter().map(|s| Secret::new(s.clone())).collect();
        let public_keys: Vec<Secret> = public_keys.iter().map(|s| Secret::new(s.clone())).collect();
        let token_header = self.token_header()?;
        let keys = Keys {
            secrets: &secrets,
            public_keys: &public_keys,
            token_header: token_header.as_ref(),
            min_secret_bytes: Some(1),
        };
        let tolerance = self.scheme.default_tolerance();
        Verifier::with_keys(self.scheme, self.hmac_config()?.as_ref(), &keys, tolerance).map_err(|e| e.to_string())
    }
}

/// `hookgate sign`.
#[derive(Args)]
pub struct SignArgs {
    #[command(flatten)]
    scheme: SchemeArgs,
    /// Public-key schemes: the private key (an Ed25519 seed, hex or base64; for sendgrid a base64 PKCS#8
    /// DER P-256 key).
    #[arg(long)]
    private_key: Option<String>,
    /// Event id for schemes that carry it in a header (github, shopify, standard, twitch, …). Default:
    /// random.
    #[arg(long)]
    id: Option<String>,
    /// Unix timestamp in seconds for timestamped schemes. Default: now.
    #[arg(long, allow_hyphen_values = true)]
    timestamp: Option<i64>,
}

/// `hookgate verify`.
#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    scheme: SchemeArgs,
    /// Public-key schemes: a public key, as the provider shows it. Repeat to try several.
    #[arg(long)]
    public_key: Vec<String>,
    /// A request header, `Name: value`. Repeat for each.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Check timestamps as of this Unix second instead of now (a recorded request).
    #[arg(long, allow_hyphen_values = true)]
    at: Option<i64>,
}

fn read_body() -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .map_err(|e| format!("cannot read the body from stdin: {e}"))?;
    Ok(body)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `x-hub-signature-256` as `X-Hub-Signature-256`, the way senders write it.
fn canonical_case(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Reads a body on stdin and prints the headers a sender would send, one `Name: value` per line.
pub fn sign(args: SignArgs) -> Result<(), String> {
    let body = read_body()?;
    let scheme = args.scheme.scheme;
    let id = args
        .id
        .unwrap_or_else(|| format!("evt_{:024x}", rand::random::<u128>() >> 32));
    let timestamp = args.timestamp.unwrap_or_else(now);
    let url = args.scheme.url.clone().unwrap_or_default();
    if scheme.signs_url() && url.is_empty() {
        return Err(format!("scheme `{}` signs the URL: give --url", scheme.as_str()));
    }
    let secret = || {
        args.scheme
            .secret
            .first()
            .cloned()
            .ok_or_else(|| format!("scheme `{}` needs --secret", scheme.as_str()))
    };
    let headers: Vec<(HeaderName, String)> = match scheme {
        _ if scheme.keys() == KeyKind::PublicKey || args.private_key.is_some() => {
            let key = args.private_key.as_deref().ok_or_else(|| {
                format!(
                    "scheme `{}` signs with a private key: give --private-key",
                    scheme.as_str()
                )
            })?;
            public_key::sign(scheme, key, &body, &id, timestamp)?
        }
        SchemeKind::Gitlab => vec![(HeaderName::from_static("x-gitlab-token"), secret()?)],
        SchemeKind::Token => {
            let name = args
                .scheme
                .token_header()?
                .ok_or("scheme `token` needs --token-header")?;
            vec![(name, secret()?)]
        }
        SchemeKind::Basic => {
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(secret()?);
            vec![(http::header::AUTHORIZATION, format!("Basic {encoded}"))]
        }
        SchemeKind::Mailgun => {
            let verifier = args.scheme.verifier(&[])?;
            let mac = verifier
                .mac_hex(0, format!("{timestamp}{id}").as_bytes())
                .ok_or("scheme `mailgun` needs --secret")?;
            println!(
                "# Mailgun signs inside the body: put this object under \"signature\" in the JSON body\n# {}",
                serde_json::json!({ "timestamp": timestamp.to_string(), "token": id, "signature": mac })
            );
            Vec::new()
        }
        _ => {
            secret()?;
            args.scheme
                .verifier(&[])?
                .sign_request(&body, &id, timestamp, &args.scheme.method, &url)
        }
    };
    println!("Content-Type: application/json");
    for (name, value) in headers {
        println!("{}: {value}", canonical_case(name.as_str()));
    }
    Ok(())
}

/// The headers that may carry a timestamp, and how to read each.
const TIMESTAMP_HEADERS: [&str; 10] = [
    "x-slack-request-timestamp",
    "webhook-timestamp",
    "svix-timestamp",
    "x-zm-request-timestamp",
    "x-hubspot-request-timestamp",
    "twitch-eventsub-message-timestamp",
    "x-signature-timestamp",
    "telnyx-timestamp",
    "x-twilio-email-event-webhook-timestamp",
    "x-timestamp",
];

/// A timestamp in seconds: Unix seconds, milliseconds (13 digits or more) or RFC 3339.
fn seconds(value: &str) -> Option<i64> {
    if let Ok(n) = value.parse::<i64>() {
        return Some(if n.unsigned_abs() >= 100_000_000_000 {
            n / 1000
        } else {
            n
        });
    }
    let at = humantime::parse_rfc3339_weak(value).ok()?;
    i64::try_from(at.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()
}

/// Shows a header value without its whole signature: enough to compare by eye.
fn shorten(value: &str) -> String {
    if value.chars().count() > 24 {
        format!(
            "{}… ({} chars)",
            value.chars().take(16).collect::<String>(),
            value.len()
        )
    } else {
        value.to_owned()
    }
}

/// Reads a request (headers on the command line, body on stdin), verifies it, and explains the result:
/// the headers read, what is signed, the URLs and keys tried, the timestamp's skew. Exit 0 only when
/// the request verifies.
pub fn verify(args: VerifyArgs) -> Result<(), String> {
    let body = read_body()?;
    let scheme = args.scheme.scheme;
    let doc = scheme.doc();
    let mut headers = HeaderMap::new();
    for line in &args.headers {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("--header `{line}` is not `Name: value`"))?;
        let name = HeaderName::try_from(name.trim()).map_err(|_| format!("`{name}` is not a header name"))?;
        let value = HeaderValue::from_str(value.trim()).map_err(|_| format!("the value of {name} is not valid"))?;
        headers.append(name, value);
    }
    let verifier = args.scheme.verifier(&args.public_key)?;
    let at = args.at.unwrap_or_else(now);
    println!("scheme     {}", scheme.as_str());
    println!("reads      {}", doc.headers);
    println!("signs      {}", doc.signed);
    println!("key        {}", doc.key);
    for (name, value) in &headers {
        let text = value.to_str().unwrap_or("<not text>");
        println!("header     {}: {}", canonical_case(name.as_str()), shorten(text));
    }
    {
        use sha2::Digest;
        let digest = hex::encode(sha2::Sha256::digest(&body));
        let json = serde_json::from_slice::<serde_json::Value>(&body).is_ok();
        println!(
            "body       {} bytes, sha256 {}…, {}{}",
            body.len(),
            &digest[..16],
            if json { "JSON" } else { "not JSON" },
            if body.ends_with(b"\n") {
                ", ends with a newline"
            } else {
                ""
            }
        );
    }
    let target = scheme.signs_url().then(|| Target {
        method: args.scheme.method.clone(),
        urls: args.scheme.url.as_deref().map(url_variants).unwrap_or_default(),
    });
    if let Some(target) = &target {
        println!("method     {}", target.method);
        for url in &target.urls {
            println!("url tried  {url}");
        }
    }
    let keys = args.scheme.secret.len() + args.public_key.len();
    println!("keys       {keys} tried");
    let tolerance = scheme.default_tolerance().as_secs();
    for name in TIMESTAMP_HEADERS {
        if let Some(ts) = headers.get(name).and_then(|v| v.to_str().ok()).and_then(seconds) {
            let skew = at - ts;
            println!("timestamp  {name}: {skew} s before now (provider tolerance {tolerance} s)");
        }
    }
    match verifier.verify_request(target.as_ref(), headers, bytes::Bytes::from(body), at) {
        Ok(verified) => {
            println!("result     ok: key #{} matched", verified.key_index());
            Ok(())
        }
        Err(error) => {
            println!("result     bad_signature:{}: {error}", error.reason());
            let hint = match error.reason() {
                "mismatch" => {
                    "the body must be the exact bytes received (not re-serialized JSON, same trailing \
                     newline); the key must be the one this endpoint shows (for stripe and paddle the whole \
                     string, prefix included); URL-signed schemes need the URL exactly as given to the \
                     provider"
                }
                "stale_timestamp" | "future_timestamp" => {
                    "the clocks differ by more than the tolerance, or the request is a replay; check NTP, or \
                     pass --at with the second the request was signed"
                }
                "missing_header" | "malformed_header" | "bad_encoding" => {
                    "the header above is what this scheme reads; compare it with the request"
                }
                "no_url" => "give --url, the public URL the provider was given",
                _ => "",
            };
            if !hint.is_empty() {
                println!("hint       {hint}");
            }
            Err("the request does not verify".to_owned())
        }
    }
}
