//! serde support (feature `serde`): a stamp is its text form in
//! human-readable formats (JSON, TOML, ...) and its binary encoding in
//! compact ones (bincode, CBOR, ...). Deserializing validates exactly as
//! [`FromStr`] and [`Stamp::decode`] do.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, Serializer};

use crate::Stamp;

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_bytes(&self.encode())
        }
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Stamp, D::Error> {
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(StampVisitor)
        } else {
            deserializer.deserialize_bytes(StampVisitor)
        }
    }
}

struct StampVisitor;

impl<'de> Visitor<'de> for StampVisitor {
    type Value = Stamp;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an interval tree clock stamp, as text or encoded bytes")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Stamp, E> {
        Stamp::from_str(text).map_err(E::custom)
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Stamp, E> {
        Stamp::decode(bytes).map_err(E::custom)
    }

    /// Formats without a native byte type hand bytes over as a sequence.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Stamp, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        self.visit_bytes(&bytes)
    }
}
