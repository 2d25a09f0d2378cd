//! Codecs turn event documents into stored bytes and back.
//!
//! Events are first turned into a `serde_json::Value` document (see
//! [`DomainEvent::to_document`](crate::DomainEvent::to_document)); upcasters work on that
//! document; the codec chooses the bytes. JSON is the default because every consumer, in
//! any language, can read it.

use serde_json::Value;

/// A codec's failure to encode or decode a document.
#[derive(Debug, thiserror::Error)]
#[error("{content_type} codec: {message}")]
pub struct CodecError {
    /// The codec's content type.
    pub content_type: String,
    /// What went wrong, with the byte or field position when the codec knows it.
    pub message: String,
}

/// Encodes event documents to bytes and back.
pub trait Codec: Send + Sync + 'static {
    /// The content type written beside every payload (`application/json`).
    fn content_type(&self) -> &'static str;

    /// Encodes a document.
    fn encode(&self, document: &Value) -> Result<Vec<u8>, CodecError>;

    /// Decodes bytes this codec wrote.
    fn decode(&self, bytes: &[u8]) -> Result<Value, CodecError>;
}

/// JSON (UTF-8), the default codec.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl JsonCodec {
    /// The content type of JSON payloads.
    pub const CONTENT_TYPE: &'static str = "application/json";
}

impl Codec for JsonCodec {
    fn content_type(&self) -> &'static str {
        Self::CONTENT_TYPE
    }

    fn encode(&self, document: &Value) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(document).map_err(|e| CodecError {
            content_type: Self::CONTENT_TYPE.to_owned(),
            message: e.to_string(),
        })
    }

    fn decode(&self, bytes: &[u8]) -> Result<Value, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError {
            content_type: Self::CONTENT_TYPE.to_owned(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_and_reports_position_of_corruption() {
        let doc = serde_json::json!({"amount": 100, "currency": "EUR"});
        let bytes = JsonCodec.encode(&doc).expect("encodes");
        assert_eq!(JsonCodec.decode(&bytes).expect("decodes"), doc);
        let err = JsonCodec
            .decode(b"{\"amount\": 1")
            .expect_err("truncated json");
        assert!(err.message.contains("line 1"), "{err}");
    }
}
