//! A signal's `data`: JSON the visit relays without reading it.
//!
//! The visit only checks who may signal whom; what is said is the browsers' business. So
//! the payload is opaque here, and the layer that decodes and encodes frames chooses how it
//! is held: it may hand the payload over inside the very buffer the peer's frame will be
//! sent from, so a relayed message is copied once between the two sockets instead of twice
//! (bedside-protocol does; BENCHMARKS.md, "Instructions per message").

use std::ops::Range;

/// JSON text, held as a range of a buffer that may carry more around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    buf: String,
    json: Range<usize>,
}

impl Payload {
    /// `json` is the whole buffer. The caller vouches that it is valid JSON.
    pub fn new(json: String) -> Self {
        let json_range = 0..json.len();
        Self {
            buf: json,
            json: json_range,
        }
    }

    /// The JSON is `buf[json]`; the rest of `buf` is the caller's. `None` when the range is
    /// not a slice of `buf` on character boundaries.
    pub fn within(buf: String, json: Range<usize>) -> Option<Self> {
        buf.get(json.clone())?;
        Some(Self { buf, json })
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        // Checked by both constructors; never empty-handed on a bad range.
        self.buf.get(self.json.clone()).unwrap_or_default()
    }

    /// The buffer and where in it the JSON is.
    pub fn into_parts(self) -> (String, Range<usize>) {
        (self.buf, self.json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_is_the_range_given() {
        let p = Payload::within(r#"<<{"a":1}>>"#.to_owned(), 2..9).unwrap();
        assert_eq!(p.get(), r#"{"a":1}"#);
        assert_eq!(Payload::new("[1]".into()).get(), "[1]");
        let (buf, json) = p.into_parts();
        assert_eq!((buf.len(), json), (11, 2..9));
    }

    #[test]
    fn a_range_outside_the_buffer_or_inside_a_character_is_refused() {
        assert!(Payload::within("{}".into(), 0..3).is_none());
        assert!(Payload::within("\"é\"".into(), 0..2).is_none());
    }
}
