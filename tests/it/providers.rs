//! Every scheme, black-box through the server, against vectors that hookgate's own signing code did not
//! make: the providers' SDK test suites where they publish one (each named with its file), else a
//! signature computed with `openssl` from the provider's documented algorithm (the command is beside it).
//! Each gateway runs on a fixed clock, the second the vector was signed (plus a little), so that nothing
//! depends on today's date. Every accepted vector is also sent with one body byte changed, and refused.

use hookgate::config::{self, Config};
use hookgate::verify::layer::Clock;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::common::{FakeDownstream, Sender, TestGateway};

/// One request and what the gateway must answer to it.
struct Vector {
    /// Where the vector comes from.
    origin: &'static str,
    /// The source's config lines (scheme, keys, event id, public URL, …).
    source: &'static str,
    /// The gateway's clock, in Unix seconds.
    at: i64,
    /// Path and query of the request; the path is the source's.
    target: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    expect: Expect,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Forwarded, the body byte for byte; a changed body byte is refused (when the scheme signs the body).
    Forwarded { body_signed: bool },
    /// Refused with `401 bad_signature`.
    Refused,
    /// Answered by the gateway itself with exactly this body.
    Handshake(&'static str),
}

use Expect::{Forwarded, Handshake, Refused};

const SIGNED: Expect = Forwarded { body_signed: true };

fn config(v: &Vector, downstream: &str) -> Config {
    let text = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        admin_listen = "127.0.0.1:0"
        [client_ip]
        trusted_proxies = ["127.0.0.1/32"]
        [[source]]
        name = "p"
        path = "{}"
        {}
        forward = {{ kind = "http", url = "{downstream}/in", timeout = "2s" }}
        "#,
        v.target.split('?').next().unwrap_or(v.target),
        v.source
    );
    config::parse(&text, std::path::Path::new("providers.toml")).unwrap_or_else(|e| panic!("{}: config: {e}", v.origin))
}

fn headers(v: &Vector) -> HeaderMap {
    v.headers
        .iter()
        .map(|(k, val)| (HeaderName::from_static(k), HeaderValue::from_str(val).expect("value")))
        .collect()
}

async fn run(vectors: &[Vector]) {
    let sender = Sender::default();
    for v in vectors {
        let downstream = FakeDownstream::start().await;
        let gateway = TestGateway::start_at(config(v, &downstream.url("")), Clock::Fixed(v.at)).await;
        let url = gateway.url(v.target);
        let reply = sender.post(&url, headers(v), v.body.to_owned()).await;
        let what = format!("{} ({})", v.origin, v.source.trim());
        match v.expect {
            Forwarded { body_signed } => {
                assert_eq!(
                    (reply.status.as_u16(), reply.outcome()),
                    (200, "forwarded"),
                    "{what}: {:?}",
                    reply.body
                );
                let received = downstream.received();
                assert_eq!(received.len(), 1, "{what}");
                assert_eq!(received[0].body.as_ref(), v.body.as_bytes(), "{what}: byte for byte");
                if body_signed {
                    let mut changed = v.body.as_bytes().to_vec();
                    let last = changed.len() - 2;
                    changed[last] ^= 0x01;
                    let reply = sender.post(&url, headers(v), changed).await;
                    assert_eq!(
                        (reply.status.as_u16(), reply.outcome()),
                        (401, "bad_signature"),
                        "{what}: one body byte changed"
                    );
                }
            }
            Refused => {
                assert_eq!(
                    (reply.status.as_u16(), reply.outcome()),
                    (401, "bad_signature"),
                    "{what}"
                );
                assert!(downstream.received().is_empty(), "{what}");
            }
            Handshake(answer) => {
                assert_eq!((reply.status.as_u16(), reply.outcome()), (200, "handshake"), "{what}");
                assert_eq!(reply.body.as_ref(), answer.as_bytes(), "{what}");
                assert!(downstream.received().is_empty(), "{what}: a handshake is not forwarded");
            }
        }
        gateway.stop().await;
    }
}

/// PaddleHQ/paddle-python-sdk, `tests/Unit/Notification/test_Verifier.py`
/// (`test_validate_paddle_signature_header_integrity`): three secrets, the third matches; an `h1` that is
/// not hex is skipped. Its body, `hello-world`, is not JSON, so the id is the body's hash.
const PADDLE: &str = "PaddleHQ/paddle-python-sdk tests/Unit/Notification/test_Verifier.py";
const PADDLE_HEADER: &[(&str, &str)] = &[(
    "paddle-signature",
    "ts=1696195954;h1=dummy;h1=d96299976a6eb066f484d7fde011ac56fc32b38fc9940bc419d6e537fdc6ef02",
)];

#[tokio::test]
async fn paddle_sdk_vectors() {
    run(&[
        Vector {
            origin: PADDLE,
            source: r#"scheme = "paddle"
            secrets = ["pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_TjIG2BXbm83HPXqNfziwe506sBEdqL/4",
                       "pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_vB/yIOnTOCWIvpBadM5jzBZPHc7OmdSo",
                       "pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_WvRO0eL4Bj9rgYYIBZY6wZhG4EHy9jzh"]
            event_id = "body:sha256""#,
            at: 1_696_195_954 + 4,
            target: "/p",
            headers: PADDLE_HEADER,
            body: "hello-world",
            expect: SIGNED,
        },
        // The two secrets the SDK's test marks "should fail", alone.
        Vector {
            origin: PADDLE,
            source: r#"scheme = "paddle"
            secrets = ["pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_TjIG2BXbm83HPXqNfziwe506sBEdqL/4",
                       "pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_vB/yIOnTOCWIvpBadM5jzBZPHc7OmdSo"]
            event_id = "body:sha256""#,
            at: 1_696_195_954,
            target: "/p",
            headers: PADDLE_HEADER,
            body: "hello-world",
            expect: Refused,
        },
        // Paddle's own tolerance is 5 seconds.
        Vector {
            origin: PADDLE,
            source: r#"scheme = "paddle"
            secrets = ["pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_WvRO0eL4Bj9rgYYIBZY6wZhG4EHy9jzh"]
            event_id = "body:sha256""#,
            at: 1_696_195_954 + 6,
            target: "/p",
            headers: PADDLE_HEADER,
            body: "hello-world",
            expect: Refused,
        },
    ])
    .await;
}

/// twilio/twilio-python, `tests/unit/test_request_validator.py`: auth token `12345` (shorter than the
/// default floor, hence `min_secret_bytes`), the URL `https://mycompany.com/myapp.php?foo=1&bar=2`.
const TWILIO: &str = "twilio/twilio-python tests/unit/test_request_validator.py";
const TWILIO_FORM: &str =
    "CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212";
const TWILIO_SOURCE: &str = r#"scheme = "twilio"
            secrets = ["12345"]
            min_secret_bytes = 5
            public_url = "https://mycompany.com/myapp.php""#;
const TWILIO_PROXIED: &str = r#"scheme = "twilio"
            secrets = ["12345"]
            min_secret_bytes = 5"#;

#[tokio::test]
async fn twilio_sdk_vectors() {
    run(&[
        // test_validation: the form parameters, sorted.
        Vector {
            origin: TWILIO,
            source: TWILIO_SOURCE,
            at: 1_700_000_000,
            target: "/p?foo=1&bar=2",
            headers: &[
                ("x-twilio-signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
                ("i-twilio-idempotency-token", "a1"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            body: TWILIO_FORM,
            expect: SIGNED,
        },
        // test_compute_signature_duplicate_query_dict: a repeated name's values, sorted.
        Vector {
            origin: TWILIO,
            source: TWILIO_SOURCE,
            at: 1_700_000_000,
            target: "/p?foo=1&bar=2",
            headers: &[
                ("x-twilio-signature", "IK+Dwps556ElfBT0I3Rgjkr1wJU="),
                ("i-twilio-idempotency-token", "a2"),
            ],
            body: "Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234",
            expect: SIGNED,
        },
        // test_validation_of_body_succeeds: a JSON body, its SHA-256 in the URL.
        Vector {
            origin: TWILIO,
            source: TWILIO_SOURCE,
            at: 1_700_000_000,
            target: "/p?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620",
            headers: &[
                ("x-twilio-signature", "a9nBmqA0ju/hNViExpshrM61xv4="),
                ("i-twilio-idempotency-token", "a3"),
                ("content-type", "application/json"),
            ],
            body: r#"{"property": "value", "boolean": true}"#,
            expect: SIGNED,
        },
        // test_validation_removes_port_on_https: signed without the port, received with it. No
        // public_url: scheme and host come from the trusted proxy's headers.
        Vector {
            origin: TWILIO,
            source: TWILIO_PROXIED,
            at: 1_700_000_000,
            target: "/myapp.php?foo=1&bar=2",
            headers: &[
                ("x-twilio-signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
                ("i-twilio-idempotency-token", "a4"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "mycompany.com:1234"),
            ],
            body: TWILIO_FORM,
            expect: SIGNED,
        },
        // test_validation_adds_port_on_https: signed with `:443`, received without.
        Vector {
            origin: TWILIO,
            source: TWILIO_SOURCE,
            at: 1_700_000_000,
            target: "/p?foo=1&bar=2",
            headers: &[
                ("x-twilio-signature", "kvajT1Ptam85bY51eRf/AJRuM3w="),
                ("i-twilio-idempotency-token", "a5"),
            ],
            body: TWILIO_FORM,
            expect: SIGNED,
        },
        // The same request for another URL (another query) is refused.
        Vector {
            origin: TWILIO,
            source: TWILIO_SOURCE,
            at: 1_700_000_000,
            target: "/p?foo=1&bar=3",
            headers: &[
                ("x-twilio-signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
                ("i-twilio-idempotency-token", "a6"),
            ],
            body: TWILIO_FORM,
            expect: Refused,
        },
    ])
    .await;
}

/// square/square-nodejs-sdk, `tests/integration/webhooks.test.ts`.
const SQUARE: &str = "square/square-nodejs-sdk tests/integration/webhooks.test.ts";
const SQUARE_BODY: &str = r#"{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification","event_id":"ac3ac95b-f97d-458c-a6e6-18981597e05f","created_at":"2022-07-13T20:30:59.037339943Z","data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}"#;
const SQUARE_HEADERS: &[(&str, &str)] = &[(
    "x-square-hmacsha256-signature",
    "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4=",
)];

#[tokio::test]
async fn square_sdk_vectors() {
    run(&[
        Vector {
            origin: SQUARE,
            source: r#"scheme = "square"
            secrets = ["Ibxx_5AKakO-3qeNVR61Dw"]
            public_url = "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9""#,
            at: 1_700_000_000,
            target: "/p",
            headers: SQUARE_HEADERS,
            body: SQUARE_BODY,
            expect: SIGNED,
        },
        // "fails on notification url mismatch".
        Vector {
            origin: SQUARE,
            source: r#"scheme = "square"
            secrets = ["Ibxx_5AKakO-3qeNVR61Dw"]
            public_url = "https://webhook.site/79a4f3a-dcfa-49ee-bac5-9d0edad886b9""#,
            at: 1_700_000_000,
            target: "/p",
            headers: SQUARE_HEADERS,
            body: SQUARE_BODY,
            expect: Refused,
        },
        // "fails on invalid signature key".
        Vector {
            origin: SQUARE,
            source: r#"scheme = "square"
            secrets = ["MCmhFRxGX82xMwg5FsaoQA"]
            public_url = "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9""#,
            at: 1_700_000_000,
            target: "/p",
            headers: SQUARE_HEADERS,
            body: SQUARE_BODY,
            expect: Refused,
        },
    ])
    .await;
}

/// HubSpot/hubspot-api-python, `tests/spec/utils/test_signature.py` (`test_get_signature__v3`): the
/// timestamp `15000000` is in milliseconds, 15 000 s after the epoch.
const HUBSPOT: &str = "HubSpot/hubspot-api-python tests/spec/utils/test_signature.py";
const HUBSPOT_SOURCE: &str = r#"scheme = "hubspot"
            secrets = ["yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"]
            public_url = "https://www.example.com/webhook_uri"
            event_id = "body:sha256""#;

#[tokio::test]
async fn hubspot_sdk_vectors() {
    let headers: &[(&str, &str)] = &[
        ("x-hubspot-signature-v3", "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="),
        ("x-hubspot-request-timestamp", "15000000"),
    ];
    run(&[
        Vector {
            origin: HUBSPOT,
            source: HUBSPOT_SOURCE,
            at: 15_000 + 60,
            target: "/p",
            headers,
            body: "{'example_field':'example_value'}",
            expect: SIGNED,
        },
        // Older than HubSpot's five minutes.
        Vector {
            origin: HUBSPOT,
            source: HUBSPOT_SOURCE,
            at: 15_000 + 301,
            target: "/p",
            headers,
            body: "{'example_field':'example_value'}",
            expect: Refused,
        },
    ])
    .await;
}

/// sendgrid/sendgrid-python, `test/unit/test_eventwebhook.py`: the payload is `json.dumps` of one event
/// with sorted keys and no spaces, then `\r\n`.
const SENDGRID: &str = "sendgrid/sendgrid-python test/unit/test_eventwebhook.py";
const SENDGRID_BODY: &str = "[{\"email\":\"hello@world.com\",\"event\":\"dropped\",\"reason\":\"Bounced Address\",\"sg_event_id\":\"ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA\",\"sg_message_id\":\"LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0\",\"smtp-id\":\"<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>\",\"timestamp\":1600112492}]\r\n";
const SENDGRID_KEY: &str = r#"scheme = "sendgrid"
            public_keys = ["MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="]"#;

#[tokio::test]
async fn sendgrid_sdk_vectors() {
    run(&[
        Vector {
            origin: SENDGRID,
            source: SENDGRID_KEY,
            at: 1_600_112_502 + 10,
            target: "/p",
            headers: &[
                (
                    "x-twilio-email-event-webhook-signature",
                    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM=",
                ),
                ("x-twilio-email-event-webhook-timestamp", "1600112502"),
            ],
            body: SENDGRID_BODY,
            expect: SIGNED,
        },
        // test_verify_bad_key.
        Vector {
            origin: SENDGRID,
            source: r#"scheme = "sendgrid"
            public_keys = ["MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA=="]"#,
            at: 1_600_112_502,
            target: "/p",
            headers: &[
                (
                    "x-twilio-email-event-webhook-signature",
                    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM=",
                ),
                ("x-twilio-email-event-webhook-timestamp", "1600112502"),
            ],
            body: SENDGRID_BODY,
            expect: Refused,
        },
        // test_verify_bad_signature.
        Vector {
            origin: SENDGRID,
            source: SENDGRID_KEY,
            at: 1_600_112_502,
            target: "/p",
            headers: &[
                (
                    "x-twilio-email-event-webhook-signature",
                    "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH3j/0=",
                ),
                ("x-twilio-email-event-webhook-timestamp", "1600112502"),
            ],
            body: SENDGRID_BODY,
            expect: Refused,
        },
    ])
    .await;
}

/// razorpay/razorpay-node `test/utils/razorpay-utils.spec.js` and muxinc/mux-node-sdk
/// `tests/api-resources/webhooks.test.ts`: short secrets of the providers' own tests.
#[tokio::test]
async fn razorpay_and_mux_sdk_vectors() {
    const RAZORPAY: &str = "razorpay/razorpay-node test/utils/razorpay-utils.spec.js";
    const MUX: &str = "muxinc/mux-node-sdk tests/api-resources/webhooks.test.ts";
    run(&[
        Vector {
            origin: RAZORPAY,
            source: r#"scheme = "razorpay"
            secrets = ["123456"]
            min_secret_bytes = 6"#,
            at: 1_700_000_000,
            target: "/p",
            headers: &[
                (
                    "x-razorpay-signature",
                    "2fe04e22977002e6c7cb553adab8b460cb9e2a4970d5953cb27a8472752e3bbc",
                ),
                ("x-razorpay-event-id", "evt_1"),
            ],
            body: r#"{"a":1,"b":2,"c":{"d":3}}"#,
            expect: SIGNED,
        },
        Vector {
            origin: RAZORPAY,
            source: r#"scheme = "razorpay"
            secrets = ["123456"]
            min_secret_bytes = 6"#,
            at: 1_700_000_000,
            target: "/p",
            headers: &[("x-razorpay-signature", "sdfafds"), ("x-razorpay-event-id", "evt_1")],
            body: r#"{"a":1,"b":2,"c":{"d":3}}"#,
            expect: Refused,
        },
        // "should pass for multiple signatures": one `v1` is not hex.
        Vector {
            origin: MUX,
            source: r#"scheme = "mux"
            secrets = ["SuperSecret123"]
            min_secret_bytes = 14
            event_id = "body:sha256""#,
            at: 1_565_125_718,
            target: "/p",
            headers: &[(
                "mux-signature",
                "t=1565125718,v1=invalid-sig,v1=854ece4c22acef7c66b57d4e504153bc512595e8e9c772ece2a68150548c19a7",
            )],
            body: r#"{"test":"body"}"#,
            expect: SIGNED,
        },
        // "should throw for timestamp outside threshold": six minutes later.
        Vector {
            origin: MUX,
            source: r#"scheme = "mux"
            secrets = ["SuperSecret123"]
            min_secret_bytes = 14
            event_id = "body:sha256""#,
            at: 1_565_125_718 + 360,
            target: "/p",
            headers: &[(
                "mux-signature",
                "t=1565125718,v1=854ece4c22acef7c66b57d4e504153bc512595e8e9c772ece2a68150548c19a7",
            )],
            body: r#"{"test":"body"}"#,
            expect: Refused,
        },
        // "should throw for different signature version".
        Vector {
            origin: MUX,
            source: r#"scheme = "mux"
            secrets = ["SuperSecret123"]
            min_secret_bytes = 14
            event_id = "body:sha256""#,
            at: 1_565_125_718,
            target: "/p",
            headers: &[(
                "mux-signature",
                "t=1565125718,v2=854ece4c22acef7c66b57d4e504153bc512595e8e9c772ece2a68150548c19a7",
            )],
            body: r#"{"test":"body"}"#,
            expect: Refused,
        },
    ])
    .await;
}

/// The Standard Webhooks reference libraries' test vector (standard-webhooks/standard-webhooks,
/// `libraries/*` tests), with the `webhook-*` headers and with Svix's `svix-*` names.
#[tokio::test]
async fn standard_webhooks_reference_vector() {
    const ORIGIN: &str = "standard-webhooks/standard-webhooks reference libraries";
    const SOURCE: &str = r#"scheme = "standard"
            secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]"#;
    run(&[
        Vector {
            origin: ORIGIN,
            source: SOURCE,
            at: 1_614_265_330,
            target: "/p",
            headers: &[
                ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
                ("webhook-timestamp", "1614265330"),
                ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            ],
            body: r#"{"test": 2432232314}"#,
            expect: SIGNED,
        },
        Vector {
            origin: ORIGIN,
            source: SOURCE,
            at: 1_614_265_330,
            target: "/p",
            headers: &[
                ("svix-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
                ("svix-timestamp", "1614265330"),
                ("svix-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            ],
            body: r#"{"test": 2432232314}"#,
            expect: SIGNED,
        },
        // The id is signed: another id is refused.
        Vector {
            origin: ORIGIN,
            source: SOURCE,
            at: 1_614_265_330,
            target: "/p",
            headers: &[
                ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJel"),
                ("webhook-timestamp", "1614265330"),
                ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            ],
            body: r#"{"test": 2432232314}"#,
            expect: Refused,
        },
    ])
    .await;
}

/// GitHub's documented example ("Validating webhook deliveries", docs.github.com): the secret "It's a
/// Secret to Everybody" over "Hello, World!"; and HTTP basic authentication's example of RFC 7617
/// (`Aladdin:open sesame`), for `basic`.
#[tokio::test]
async fn documented_github_and_basic_vectors() {
    run(&[
        Vector {
            origin: "docs.github.com, validating webhook deliveries",
            source: r#"scheme = "github"
            secrets = ["It's a Secret to Everybody"]"#,
            at: 1_700_000_000,
            target: "/p",
            headers: &[
                (
                    "x-hub-signature-256",
                    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
                ),
                ("x-github-delivery", "d-1"),
            ],
            body: "Hello, World!",
            expect: SIGNED,
        },
        Vector {
            origin: "RFC 7617 section 2",
            source: r#"scheme = "basic"
            secrets = ["Aladdin:open sesame"]"#,
            at: 1_700_000_000,
            target: "/p",
            headers: &[("authorization", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")],
            body: r#"{"RecordType":"Delivery"}"#,
            expect: Forwarded { body_signed: false },
        },
        Vector {
            origin: "RFC 7617 section 2, another password",
            source: r#"scheme = "basic"
            secrets = ["Aladdin:open sesamf"]"#,
            at: 1_700_000_000,
            target: "/p",
            headers: &[("authorization", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")],
            body: r#"{"RecordType":"Delivery"}"#,
            expect: Refused,
        },
    ])
    .await;
}

// For the schemes below no provider publishes a vector, and their SDKs' tests sign with keys made at run
// time. Each signature here was computed with openssl from the provider's documented algorithm (the
// command is beside it), never with hookgate's code. Ed25519 keys: the secret key of RFC 8032's TEST 1
// (9d61b19d…7f60, public key d75a9801…511a), signed with
//   (printf 302e020100300506032b657004220420; printf $SEED) | xxd -r -p > k.der
//   openssl pkey -inform DER -in k.der -out k.pem
//   printf '%s' "$MESSAGE" > m; openssl pkeyutl -sign -rawin -inkey k.pem -in m

const ZOOM_BODY: &str =
    r#"{"event":"meeting.started","event_ts":1700000000123,"payload":{"object":{"id":"85746065432"}}}"#;
const ZOOM_HANDSHAKE: &str =
    r#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;

#[tokio::test]
async fn zoom_twitch_and_linear_openssl_vectors() {
    run(&[
        // printf 'v0:1700000000:%s' "$ZOOM_BODY" | openssl dgst -sha256 -hmac zoom-secret-token-0001 -hex
        Vector {
            origin: "zoom (openssl)",
            source: r#"scheme = "zoom"
            secrets = ["zoom-secret-token-0001"]"#,
            at: 1_700_000_030,
            target: "/p",
            headers: &[
                ("x-zm-request-timestamp", "1700000000"),
                ("x-zm-signature", "v0=9fa007a6e49449adf96089cb3a1e1c260bddd0ee7615a5ced2c4b0dcf1339e73"),
            ],
            body: ZOOM_BODY,
            expect: SIGNED,
        },
        // Zoom's URL validation: encryptedToken is
        // printf qgg8vlvZRS6UYooatFL8Aw | openssl dgst -sha256 -hmac zoom-secret-token-0001 -hex
        Vector {
            origin: "zoom endpoint.url_validation (openssl)",
            source: r#"scheme = "zoom"
            secrets = ["zoom-other-token-00002", "zoom-secret-token-0001"]"#,
            at: 1_700_000_030,
            target: "/p",
            headers: &[
                ("x-zm-request-timestamp", "1700000000"),
                ("x-zm-signature", "v0=ebfbe228930454128e931fa04f27e8726a430a420115b86ed5a08ae57facf6b2"),
            ],
            body: ZOOM_HANDSHAKE,
            expect: Handshake(
                r#"{"encryptedToken":"4d38b48547a16d68b514aa94630c49d70633d2801f1818a04cca41f9576176a7","plainToken":"qgg8vlvZRS6UYooatFL8Aw"}"#,
            ),
        },
        // printf '%s%s%s' "$ID" 2023-11-14T22:13:20.123456789Z "$BODY" | openssl dgst -sha256 -hmac twitch-secret-0000001 -hex
        Vector {
            origin: "twitch (openssl)",
            source: r#"scheme = "twitch"
            secrets = ["twitch-secret-0000001"]"#,
            at: 1_700_000_000 + 500,
            target: "/p",
            headers: &[
                ("twitch-eventsub-message-id", "befa7b53-d79d-478f-86b9-120f112b044e"),
                ("twitch-eventsub-message-timestamp", "2023-11-14T22:13:20.123456789Z"),
                ("twitch-eventsub-message-type", "notification"),
                (
                    "twitch-eventsub-message-signature",
                    "sha256=ee41b3247e4c4aaeef19a6600ca1b7b0d923d66ef13be809927379fac31a44ae",
                ),
            ],
            body: r#"{"subscription":{"type":"channel.follow"},"event":{"user_id":"1337"}}"#,
            expect: SIGNED,
        },
        // Twitch's ten minutes.
        Vector {
            origin: "twitch (openssl), 11 minutes later",
            source: r#"scheme = "twitch"
            secrets = ["twitch-secret-0000001"]"#,
            at: 1_700_000_000 + 660,
            target: "/p",
            headers: &[
                ("twitch-eventsub-message-id", "befa7b53-d79d-478f-86b9-120f112b044e"),
                ("twitch-eventsub-message-timestamp", "2023-11-14T22:13:20.123456789Z"),
                (
                    "twitch-eventsub-message-signature",
                    "sha256=ee41b3247e4c4aaeef19a6600ca1b7b0d923d66ef13be809927379fac31a44ae",
                ),
            ],
            body: r#"{"subscription":{"type":"channel.follow"},"event":{"user_id":"1337"}}"#,
            expect: Refused,
        },
        Vector {
            origin: "twitch webhook_callback_verification (openssl)",
            source: r#"scheme = "twitch"
            secrets = ["twitch-secret-0000001"]"#,
            at: 1_700_000_000,
            target: "/p",
            headers: &[
                ("twitch-eventsub-message-id", "e76c6bd4-55c9-4987-8304-da1588d8988b"),
                ("twitch-eventsub-message-timestamp", "2023-11-14T22:13:20.123456789Z"),
                ("twitch-eventsub-message-type", "webhook_callback_verification"),
                (
                    "twitch-eventsub-message-signature",
                    "sha256=5d69fb9753e006a0de311622a86f7f0f873e36a653e18e817c01bbc9c75bda8d",
                ),
            ],
            body: r#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"type":"channel.follow"}}"#,
            expect: Handshake("pogchamp-kappa-360noscope-vohiyo"),
        },
        // printf '%s' "$BODY" | openssl dgst -sha256 -hmac linear-signing-secret-01 -hex
        Vector {
            origin: "linear (openssl)",
            source: r#"scheme = "linear"
            secrets = ["linear-signing-secret-01"]"#,
            at: 1_700_000_030,
            target: "/p",
            headers: &[
                ("linear-signature", "706081f620671428c2fa091cc076c2b5e3bc45ae78edcac88163bbe9dd0a2282"),
                ("linear-delivery", "234d1a4e-b617-4388-90fe-adc3633d6b72"),
            ],
            body: r#"{"action":"create","type":"Issue","data":{"id":"2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9"},"webhookTimestamp":1700000000000}"#,
            expect: SIGNED,
        },
        // Linear's 60 seconds, from the body's own webhookTimestamp.
        Vector {
            origin: "linear (openssl), 61 s later",
            source: r#"scheme = "linear"
            secrets = ["linear-signing-secret-01"]"#,
            at: 1_700_000_061,
            target: "/p",
            headers: &[
                ("linear-signature", "706081f620671428c2fa091cc076c2b5e3bc45ae78edcac88163bbe9dd0a2282"),
                ("linear-delivery", "234d1a4e-b617-4388-90fe-adc3633d6b72"),
            ],
            body: r#"{"action":"create","type":"Issue","data":{"id":"2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9"},"webhookTimestamp":1700000000000}"#,
            expect: Refused,
        },
    ])
    .await;
}

#[tokio::test]
async fn hmac_presets_mailgun_and_tokens_openssl_vectors() {
    run(&[
        // printf '%s%s' 1700000000 "$TOKEN" | openssl dgst -sha256 -hmac mailgun-signing-key-0001 -hex
        Vector {
            origin: "mailgun (openssl)",
            source: r#"scheme = "mailgun"
            secrets = ["mailgun-signing-key-0001"]"#,
            at: 1_700_000_010,
            target: "/p",
            headers: &[],
            body: r#"{"signature":{"timestamp":"1700000000","token":"a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0","signature":"174a375a4d843151f905a8ee87991f284ebb063230e2319ae78f1a7043b197b5"},"event-data":{"event":"delivered"}}"#,
            expect: Forwarded { body_signed: false },
        },
        // printf '%s' "$BODY" | openssl dgst -sha1 -hmac intercom-client-secret-1 -hex
        Vector {
            origin: "intercom (openssl)",
            source: r#"scheme = "intercom"
            secrets = ["intercom-client-secret-1"]"#,
            at: 1_700_000_000,
            target: "/p",
            headers: &[("x-hub-signature", "sha1=144eec1b09eadd5f60b069a59e2444814e70dd00")],
            body: r#"{"type":"notification_event","id":"notif_ccd8a4d2-3a2e-4c3b-9b1d-0a7c1d6e7f80","topic":"ping"}"#,
            expect: SIGNED,
        },
        // printf '%s' "$BODY" | openssl dgst -sha256 -hmac typeform-secret-00001 -binary | base64
        Vector {
            origin: "typeform (openssl)",
            source: r#"scheme = "typeform"
            secrets = ["typeform-secret-00001"]"#,
            at: 1_700_000_000,
            target: "/p",
            headers: &[("typeform-signature", "sha256=5WorF3AlfrfXZrlK/FTApR8Ww43MKl0uZEiStP0Sxzo=")],
            body: r#"{"event_id":"01H8XYZABCDEF","event_type":"form_response"}"#,
            expect: SIGNED,
        },
        Vector {
            origin: "woocommerce (openssl)",
            source: r#"scheme = "woocommerce"
            secrets = ["woocommerce-secret-001"]"#,
            at: 1_700_000_000,
            target: "/p",
            headers: &[
                ("x-wc-webhook-signature", "F/m/7OPdojNiNmdWR7LGIoT8RwhcmF9tT2QTxWiHau8="),
                ("x-wc-webhook-delivery-id", "99"),
            ],
            body: r#"{"id":4711,"status":"processing"}"#,
            expect: SIGNED,
        },
        Vector {
            origin: "vercel (openssl)",
            source: r#"scheme = "vercel"
            secrets = ["vercel-secret-000000001"]"#,
            at: 1_700_000_000,
            target: "/p",
            headers: &[("x-vercel-signature", "f105ffa9682e81f23bd1a6f0080d2ea87abb564c")],
            body: r#"{"id":"evt_vercel_1","type":"deployment.created"}"#,
            expect: SIGNED,
        },
        // printf '1700000000.%s' "$BODY" | openssl dgst -sha256 -hmac calendly-signing-key-01 -hex
        Vector {
            origin: "calendly (openssl)",
            source: r#"scheme = "calendly"
            secrets = ["calendly-signing-key-01"]"#,
            at: 1_700_000_100,
            target: "/p",
            headers: &[(
                "calendly-webhook-signature",
                "t=1700000000,v1=1e4b1d2471c2f5c3b7aec1c087deeb03693793f6b0c59667673f41f47cd78db5",
            )],
            body: r#"{"event":"invitee.created","payload":{"uri":"https://api.calendly.com/scheduled_events/GBGBDCAADAEDCRZ2/invitees/AAAA"}}"#,
            expect: SIGNED,
        },
        Vector {
            origin: "gitlab token",
            source: r#"scheme = "gitlab"
            secrets = ["gitlab-secret-token-1"]"#,
            at: 1_700_000_000,
            target: "/p",
            headers: &[
                ("x-gitlab-token", "gitlab-secret-token-1"),
                ("x-gitlab-event-uuid", "a1b2c3"),
            ],
            body: r#"{"object_kind":"push"}"#,
            expect: Forwarded { body_signed: false },
        },
        Vector {
            origin: "gitlab token, a different one",
            source: r#"scheme = "gitlab"
            secrets = ["gitlab-secret-token-1"]"#,
            at: 1_700_000_000,
            target: "/p",
            headers: &[
                ("x-gitlab-token", "gitlab-secret-token-2"),
                ("x-gitlab-event-uuid", "a1b2c3"),
            ],
            body: r#"{"object_kind":"push"}"#,
            expect: Refused,
        },
        Vector {
            origin: "token in a configured header",
            source: r#"scheme = "token"
            token_header = "x-webhook-token"
            secrets = ["shared-token-0000000001"]"#,
            at: 1_700_000_000,
            target: "/p",
            headers: &[("x-webhook-token", "shared-token-0000000001")],
            body: r#"{"n":1}"#,
            expect: Forwarded { body_signed: false },
        },
    ])
    .await;
}

const DISCORD_PING: &str =
    r#"{"id":"787053080478613555","token":"ThisIsATokenFromDiscordThatIsVeryLong","type":1,"version":1}"#;

#[tokio::test]
async fn ed25519_openssl_vectors() {
    run(&[
        // MESSAGE = 1700000000{"type":2,"id":"1234567890","data":{"name":"hello"}}
        Vector {
            origin: "discord (openssl, RFC 8032 TEST 1 key)",
            source: r#"scheme = "discord"
            public_keys = ["d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"]"#,
            at: 1_700_000_005,
            target: "/p",
            headers: &[
                ("x-signature-timestamp", "1700000000"),
                (
                    "x-signature-ed25519",
                    "60a8ef7316c1e4b333a79b58fc4e184d17d5416c02aa6f729661233c3f2b826d8ba3e67b82db528aeadca3953c590c79f689757a40d83b04f4d74170d2a80d09",
                ),
            ],
            body: r#"{"type":2,"id":"1234567890","data":{"name":"hello"}}"#,
            expect: SIGNED,
        },
        // MESSAGE = 1700000000 and the PING body of discord/discord-interactions-js
        // src/__tests__/utils/SharedTestUtils.ts: answered with a PONG.
        Vector {
            origin: "discord PING (openssl, RFC 8032 TEST 1 key)",
            source: r#"scheme = "discord"
            public_keys = ["d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"]"#,
            at: 1_700_000_005,
            target: "/p",
            headers: &[
                ("x-signature-timestamp", "1700000000"),
                (
                    "x-signature-ed25519",
                    "f0bd878adcef1f6d475c9644421905bd02b5de38e0d3ecfc6f58a711962c69ccc8dd7c9db312f9bdf08b1e1b8182e27a844da728c5e0dbb5507bf9931c1ed80b",
                ),
            ],
            body: DISCORD_PING,
            expect: Handshake(r#"{"type":1}"#),
        },
        // The PING's signature on another timestamp.
        Vector {
            origin: "discord PING, timestamp changed",
            source: r#"scheme = "discord"
            public_keys = ["d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"]"#,
            at: 1_700_000_005,
            target: "/p",
            headers: &[
                ("x-signature-timestamp", "1700000001"),
                (
                    "x-signature-ed25519",
                    "f0bd878adcef1f6d475c9644421905bd02b5de38e0d3ecfc6f58a711962c69ccc8dd7c9db312f9bdf08b1e1b8182e27a844da728c5e0dbb5507bf9931c1ed80b",
                ),
            ],
            body: DISCORD_PING,
            expect: Refused,
        },
        // MESSAGE = 1700000000|{"data":…}
        Vector {
            origin: "telnyx (openssl, RFC 8032 TEST 1 key)",
            source: r#"scheme = "telnyx"
            public_keys = ["11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="]"#,
            at: 1_700_000_005,
            target: "/p",
            headers: &[
                ("telnyx-timestamp", "1700000000"),
                (
                    "telnyx-signature-ed25519",
                    "S/AojeGAb9vx27+q4xpLEc9y2dBtGNINwfyDBW8isjMy/sW8/C3VQeDMXWgYxjw8Sz9cj7pY+htRZrtcUYvbBA==",
                ),
            ],
            body: r#"{"data":{"id":"0ccc7b54-4df3-4bca-a65a-3da1ecc777f0","event_type":"call.initiated"}}"#,
            expect: SIGNED,
        },
        // MESSAGE = msg_2KWPBgLlAfxdpx2AI54pPJ85f4W.1700000000.{"type":"invoice.paid","id":"inv_1"}
        Vector {
            origin: "standard v1a (openssl, RFC 8032 TEST 1 key)",
            source: r#"scheme = "standard"
            public_keys = ["whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="]"#,
            at: 1_700_000_005,
            target: "/p",
            headers: &[
                ("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
                ("webhook-timestamp", "1700000000"),
                (
                    "webhook-signature",
                    "v1a,3tcOpDX3Z5FNeP6WA4pQZ13FEO+s+7TofqdzVnprOLATHfSHg98Mp4syjzQ8sEMUDe0HBMyaq6SSZJOLB8D1AA==",
                ),
            ],
            body: r#"{"type":"invoice.paid","id":"inv_1"}"#,
            expect: SIGNED,
        },
    ])
    .await;
}
