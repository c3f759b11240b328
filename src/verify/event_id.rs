//! Step 7a, the event id: taken from a verified event only, so an unauthenticated request can never name
//! one. A missing id, a body that is not JSON where a pointer is needed, or an id that cannot travel in a
//! header is `400 bad_request`.

use std::fmt;

use http::{HeaderName, HeaderValue};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::Verified;
use crate::config::{EventIdSpec, SchemeKind};

/// Longest accepted event id, in bytes. Provider ids are far shorter; the bound keeps store keys and
/// forwarded headers small.
pub const MAX_LEN: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
/// Why no usable event id could be read.
pub enum EventIdError {
    #[error("no event id at {0}")]
    /// The header or JSON field that should hold it is absent.
    Missing(String),
    #[error("the body is not JSON, and the event id is read from {0}")]
    /// The body is not JSON, so the pointer cannot be read.
    BodyNotJson(String),
    #[error("the event id is empty, longer than {MAX_LEN} bytes, or not printable ASCII")]
    /// Empty, longer than [`MAX_LEN`] bytes, or not printable ASCII.
    Invalid,
}

impl EventIdError {
    /// The bounded label of this failure, as in `bad_request:missing_event_id`.
    pub fn reason(&self) -> &'static str {
        match self {
            EventIdError::Missing(_) => "missing_event_id",
            EventIdError::BodyNotJson(_) => "body_not_json",
            EventIdError::Invalid => "invalid_event_id",
        }
    }
}

/// A verified event and its id: what the dedup and forward stages take.
#[derive(Debug)]
pub struct Event {
    /// The verified request.
    pub verified: Verified,
    /// Its id.
    pub id: EventId,
}

/// A checked event id: 1 to [`MAX_LEN`] bytes of printable ASCII, so it is always a valid header value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

impl EventId {
    /// An event id, if `id` is 1 to [`MAX_LEN`] printable ASCII characters.
    pub fn new(id: String) -> Result<Self, EventIdError> {
        let printable = id.bytes().all(|b| (0x20..0x7f).contains(&b));
        if id.is_empty() || id.len() > MAX_LEN || !printable {
            return Err(EventIdError::Invalid);
        }
        Ok(EventId(id))
    }

    /// The hex SHA-256 of `body`: 64 printable characters, always a valid id.
    pub fn body_hash(body: &[u8]) -> Self {
        use sha2::Digest;
        EventId(hex::encode(sha2::Sha256::digest(body)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a header value (always valid: it is printable ASCII).
    pub fn header_value(&self) -> HeaderValue {
        // Printable ASCII is always a valid header value; the fallback is unreachable.
        HeaderValue::from_str(&self.0).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a source's event id is found, resolved from its `event_id` setting or its scheme's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locator {
    /// A header, with an optional alias tried when it is absent (`svix-id` for `webhook-id`).
    Header(HeaderName, Option<HeaderName>),
    /// A JSON pointer, kept as text for errors and split into unescaped segments.
    Json(String, Vec<String>),
    /// A field of a form-encoded body.
    Form(String),
    /// The hex SHA-256 of the body.
    BodyHash,
}

impl Locator {
    /// The configured spec, or the scheme's default; `None` only for `hmac` without `event_id`.
    pub fn new(spec: Option<&EventIdSpec>, scheme: SchemeKind) -> Option<Self> {
        let spec = match spec {
            Some(spec) => spec.clone(),
            None => match scheme {
                // Their ids have two names; either is read.
                SchemeKind::Shopify => {
                    return Some(Locator::Header(
                        super::shopify::WEBHOOK_ID,
                        Some(super::shopify::EVENTS_WEBHOOK_ID),
                    ));
                }
                SchemeKind::Standard => {
                    return Some(Locator::Header(super::standard::ID, Some(super::standard::SVIX_ID)));
                }
                _ => scheme.default_event_id()?,
            },
        };
        Some(match spec {
            EventIdSpec::Header(name) => Locator::Header(name, None),
            EventIdSpec::Json(pointer) => {
                let segments = pointer
                    .split('/')
                    .skip(1)
                    .map(|s| s.replace("~1", "/").replace("~0", "~"))
                    .collect();
                Locator::Json(pointer, segments)
            }
            EventIdSpec::Form(field) => Locator::Form(field),
            EventIdSpec::BodyHash => Locator::BodyHash,
        })
    }

    /// Reads the id of a verified event.
    pub fn extract(&self, event: &Verified) -> Result<EventId, EventIdError> {
        self.read(event.headers(), event.body())
    }

    /// The id a request would have, verified or not: for showing a quarantined request, never for dedup.
    pub fn peek(&self, headers: &http::HeaderMap, body: &[u8]) -> Option<String> {
        self.read(headers, body).ok().map(|id| id.0)
    }

    fn read(&self, headers: &http::HeaderMap, body: &[u8]) -> Result<EventId, EventIdError> {
        match self {
            Locator::Header(name, alias) => {
                let value = headers
                    .get(name)
                    .or_else(|| alias.as_ref().and_then(|a| headers.get(a)))
                    .ok_or_else(|| EventIdError::Missing(format!("header {name}")))?;
                let text = value.to_str().map_err(|_| EventIdError::Invalid)?;
                EventId::new(text.trim().to_owned())
            }
            Locator::Json(pointer, segments) => {
                let found =
                    find_in_json(body, segments).map_err(|()| EventIdError::BodyNotJson(format!("json:{pointer}")))?;
                EventId::new(found.ok_or_else(|| EventIdError::Missing(format!("json:{pointer}")))?)
            }
            Locator::Form(field) => {
                // The first occurrence of the field, percent-decoded; the body itself is forwarded as it came.
                let found = form_urlencoded::parse(body)
                    .find(|(name, _)| name == field)
                    .map(|(_, value)| value.into_owned());
                EventId::new(found.ok_or_else(|| EventIdError::Missing(format!("form:{field}")))?)
            }
            Locator::BodyHash => Ok(EventId::body_hash(body)),
        }
    }
}

/// Follows `path` through a JSON document without building it: values off the path are skipped. A string
/// or integer at the end of the path is the result. `Err` when the document is not valid JSON.
pub(crate) fn find_in_json(json: &[u8], path: &[String]) -> Result<Option<String>, ()> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let found = Follow(path).deserialize(&mut de).map_err(drop)?;
    de.end().map_err(drop)?;
    Ok(found)
}

struct Follow<'p>(&'p [String]);

impl<'de> DeserializeSeed<'de> for Follow<'_> {
    type Value = Option<String>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Follow<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| v.to_owned()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| v.to_string()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| v.to_string()))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(hit) = map.next_key_seed(KeyIs(self.0.first().map(String::as_str)))? {
            if hit && found.is_none() {
                found = map.next_value_seed(Follow(&self.0[1..]))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let wanted = self.0.first().and_then(|s| s.parse::<usize>().ok());
        let mut found = None;
        let mut index = 0;
        loop {
            let more = if Some(index) == wanted {
                seq.next_element_seed(Follow(&self.0[1..]))?.map(|v| found = v)
            } else {
                seq.next_element::<IgnoredAny>()?.map(drop)
            };
            if more.is_none() {
                return Ok(found);
            }
            index += 1;
        }
    }
}

/// Deserializes a map key to whether it equals the wanted segment, without allocating.
struct KeyIs<'p>(Option<&'p str>);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(self.0 == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn find(json: &str, pointer: &str) -> Result<Option<String>, ()> {
        let segments: Vec<String> = pointer.split('/').skip(1).map(str::to_owned).collect();
        find_in_json(json.as_bytes(), &segments)
    }

    #[test]
    fn follows_pointers_through_objects_and_arrays() {
        let doc = r#"{"a":[1,{"b":"x"}],"id":"evt_1","n":{"deep":{"id":42}},"s":"i\"d"}"#;
        assert_eq!(find(doc, "/id"), Ok(Some("evt_1".into())));
        assert_eq!(find(doc, "/n/deep/id"), Ok(Some("42".into())));
        assert_eq!(find(doc, "/a/1/b"), Ok(Some("x".into())));
        assert_eq!(find(doc, "/s"), Ok(Some("i\"d".into())));
        assert_eq!(find(doc, "/missing"), Ok(None));
        assert_eq!(find(doc, "/a"), Ok(None));
        assert_eq!(find(doc, "/a/7"), Ok(None));
    }

    #[test]
    fn invalid_json_is_an_error_even_after_the_id() {
        assert_eq!(find(r#"{"id":"x""#, "/id"), Err(()));
        assert_eq!(find(r#"{"id":"x"} trailing"#, "/id"), Err(()));
        assert_eq!(find("token=abc", "/id"), Err(()));
    }

    #[test]
    fn escaped_pointer_segments_match() {
        let locator = Locator::new(Some(&EventIdSpec::Json("/a~1b/c~0d".into())), SchemeKind::Hmac);
        let Some(Locator::Json(_, segments)) = locator else {
            panic!("json locator")
        };
        assert_eq!(segments, vec!["a/b".to_owned(), "c~d".to_owned()]);
    }

    #[test]
    fn ids_must_be_short_printable_ascii() {
        assert!(EventId::new("evt_1".into()).is_ok());
        assert_eq!(EventId::new(String::new()), Err(EventIdError::Invalid));
        assert_eq!(EventId::new("a\nb".into()), Err(EventIdError::Invalid));
        assert_eq!(EventId::new("é".into()), Err(EventIdError::Invalid));
        assert_eq!(EventId::new("x".repeat(MAX_LEN + 1)), Err(EventIdError::Invalid));
    }

    #[test]
    fn every_scheme_but_hmac_has_a_default() {
        for kind in SchemeKind::ALL {
            assert_eq!(Locator::new(None, kind).is_some(), kind != SchemeKind::Hmac, "{kind:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512), p in "(/[a-z0-9]{0,3}){0,4}") {
            let segments: Vec<String> = p.split('/').skip(1).map(str::to_owned).collect();
            let _ = find_in_json(&body, &segments);
        }

        #[test]
        fn agrees_with_serde_json_pointer(key in "[a-z]{1,4}", value in "[ -~]{0,20}", other in "[a-z]{1,4}") {
            let doc = serde_json::json!({ other.clone(): [1, {"x": null}], key.clone(): value.clone() }).to_string();
            let expected = serde_json::from_str::<serde_json::Value>(&doc).expect("json")
                .pointer(&format!("/{key}")).and_then(|v| v.as_str().map(str::to_owned));
            prop_assert_eq!(find(&doc, &format!("/{key}")), Ok(expected));
        }
    }
}
