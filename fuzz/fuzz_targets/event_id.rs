//! Event-id extraction (JSON pointer and header) from a verified event with an arbitrary body and id
//! header: never a panic; an id, when found, is 1 to `MAX_LEN` printable ASCII characters.
#![no_main]

use std::time::Duration;

use bytes::Bytes;
use hookgate::config::{EventIdSpec, SchemeKind, Secret};
use hookgate::verify::Verifier;
use hookgate::verify::event_id::{Locator, MAX_LEN};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (id_header, body) = match data.iter().position(|b| *b == 0xFE) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&[][..], data),
    };
    let verifier = Verifier::new(SchemeKind::Github, None, &[Secret::new("fuzz-secret-0123456789")], Duration::ZERO)
        .expect("verifier");
    let mut headers: HeaderMap = verifier
        .sign(body, "", 0)
        .into_iter()
        .filter_map(|(name, value)| Some((name, HeaderValue::from_str(&value).ok()?)))
        .collect();
    headers.remove("x-github-delivery");
    if let Ok(value) = HeaderValue::from_bytes(id_header) {
        headers.insert(HeaderName::from_static("x-github-delivery"), value);
    }
    let verified = verifier
        .verify(headers, Bytes::copy_from_slice(body), 0)
        .expect("signed with its own key");
    for spec in [
        None,
        Some(EventIdSpec::Json("/id".to_owned())),
        Some(EventIdSpec::Json("/data/object/id".to_owned())),
        Some(EventIdSpec::Json("/a~1b/~0c/0".to_owned())),
        Some(EventIdSpec::Form("trigger_id".to_owned())),
    ] {
        let locator = Locator::new(spec.as_ref(), SchemeKind::Github).expect("locator");
        if let Ok(id) = locator.extract(&verified) {
            let text = id.as_str();
            assert!(!text.is_empty() && text.len() <= MAX_LEN && text.bytes().all(|b| (0x20..0x7f).contains(&b)));
        }
    }
});
