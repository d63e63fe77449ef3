//! JSON (what people type, and HTTP clients and scripts read) ⇄ MessagePack
//! (what travels): the payload convention of docs/protocol.md, used by the
//! CLI and the gateway alike.
//!
//! The mapping is 1:1 for JSON's types. MessagePack-only types have a JSON
//! spelling: binary → `{"$binary": "<hex>"}`, extension → `{"$ext": [type, "<hex>"]}`.
//! An empty payload reads as `null`.

use bytes::Bytes;
use rmpv::Value as Pack;
use serde_json::{Map, Number, Value as Json};

/// Nesting deeper than this in a reply is refused rather than recursed into.
const MAX_DEPTH: usize = 256;

/// Why bytes could not be read as a payload.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("the payload is not valid JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("the payload is not MessagePack: {0}")]
    NotMsgpack(String),
    #[error("the payload has {0} bytes after its MessagePack value")]
    Trailing(usize),
}

/// Parses JSON text (absent or empty = `null`) into a MessagePack payload.
pub fn payload_from_json(text: Option<&[u8]>) -> Result<Bytes, JsonError> {
    let json: Json = match text {
        None => Json::Null,
        Some(text) if text.iter().all(u8::is_ascii_whitespace) => Json::Null,
        Some(text) => serde_json::from_slice(text)?,
    };
    Ok(to_msgpack(&json))
}

pub fn to_msgpack(json: &Json) -> Bytes {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &json_to_pack(json));
    Bytes::from(out)
}

fn json_to_pack(json: &Json) -> Pack {
    match json {
        Json::Null => Pack::Nil,
        Json::Bool(b) => Pack::Boolean(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Pack::from(i)
            } else if let Some(u) = n.as_u64() {
                Pack::from(u)
            } else {
                Pack::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Pack::from(s.as_str()),
        Json::Array(items) => Pack::Array(items.iter().map(json_to_pack).collect()),
        Json::Object(map) => {
            Pack::Map(map.iter().map(|(k, v)| (Pack::from(k.as_str()), json_to_pack(v))).collect())
        }
    }
}

/// Turns a MessagePack payload into JSON; refuses bytes that are not one
/// whole MessagePack value.
pub fn from_msgpack(payload: &[u8]) -> Result<Json, JsonError> {
    if payload.is_empty() {
        return Ok(Json::Null);
    }
    let mut rest = payload;
    let value = rmpv::decode::read_value_with_max_depth(&mut rest, MAX_DEPTH)
        .map_err(|err| JsonError::NotMsgpack(err.to_string()))?;
    if !rest.is_empty() {
        return Err(JsonError::Trailing(rest.len()));
    }
    Ok(pack_to_json(&value))
}

/// For display: the payload as JSON if it is MessagePack, else spelled as
/// `{"$text": "..."}` (UTF-8) or `{"$binary": "<hex>"}`, so a watcher never
/// fails on what someone else sent.
pub fn display_payload(payload: &[u8]) -> Json {
    match from_msgpack(payload) {
        Ok(json) => json,
        Err(_) => match std::str::from_utf8(payload) {
            Ok(text) => Json::Object(Map::from_iter([("$text".to_owned(), Json::String(text.to_owned()))])),
            Err(_) => Json::Object(Map::from_iter([("$binary".to_owned(), Json::String(hex(payload)))])),
        },
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn pack_to_json(value: &Pack) -> Json {
    match value {
        Pack::Nil => Json::Null,
        Pack::Boolean(b) => Json::Bool(*b),
        Pack::Integer(i) => {
            i.as_i64().map(Json::from).or_else(|| i.as_u64().map(Json::from)).unwrap_or(Json::Null)
        }
        Pack::F32(f) => Number::from_f64(f64::from(*f)).map_or(Json::Null, Json::Number),
        Pack::F64(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Pack::String(s) => Json::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Pack::Binary(b) => Json::Object(Map::from_iter([("$binary".to_owned(), Json::String(hex(b)))])),
        Pack::Array(items) => Json::Array(items.iter().map(pack_to_json).collect()),
        Pack::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Pack::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                        other => pack_to_json(other).to_string(),
                    };
                    (key, pack_to_json(v))
                })
                .collect(),
        ),
        Pack::Ext(kind, data) => Json::Object(Map::from_iter([(
            "$ext".to_owned(),
            Json::Array(vec![Json::from(*kind), Json::String(hex(data))]),
        )])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_msgpack() {
        for text in [r#"{"hi":1}"#, "null", "[1,-2,3.5,\"x\",true,{\"a\":[]}]", "18446744073709551615"] {
            let json: Json = serde_json::from_str(text).unwrap();
            assert_eq!(from_msgpack(&to_msgpack(&json)).unwrap(), json, "{text}");
        }
    }

    #[test]
    fn non_msgpack_is_refused_and_binary_has_a_spelling() {
        assert!(from_msgpack(&[0xa5, b'a']).is_err(), "a truncated string");
        assert!(from_msgpack(&[0x01, 0x02]).is_err());
        assert_eq!(from_msgpack(&[0xc4, 2, 0xab, 0xcd]).unwrap(), serde_json::json!({"$binary": "abcd"}));
        assert_eq!(from_msgpack(&[]).unwrap(), Json::Null);
        assert!(payload_from_json(Some(b"{bad")).is_err());
        assert_eq!(from_msgpack(&payload_from_json(Some(b"  ")).unwrap()).unwrap(), Json::Null);
        assert_eq!(display_payload(b"plain text"), serde_json::json!({"$text": "plain text"}));
        assert_eq!(display_payload(&[0xa5, 0xff]), serde_json::json!({"$binary": "a5ff"}));
    }
}
