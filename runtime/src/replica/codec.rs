//! A small binary encoding for what replicas store and send: values, keys,
//! versions and batches of them. Every length and integer is a LEB128
//! varint (integers zigzag-encoded first); every value starts with a tag
//! byte. Decoding never panics: bad input is an error naming what was
//! expected where.

use crate::value::{Key, Value};

/// Writes the encoding into a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    /// The bytes written so far.
    pub bytes: Vec<u8>,
}

impl Writer {
    /// An unsigned varint.
    pub fn uint(&mut self, mut n: u64) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                self.bytes.push(byte);
                return;
            }
            self.bytes.push(byte | 0x80);
        }
    }

    /// A signed varint (zigzag).
    pub fn int(&mut self, n: i64) {
        self.uint(((n << 1) ^ (n >> 63)) as u64);
    }

    /// Bytes, after their length.
    pub fn bytes(&mut self, b: &[u8]) {
        self.uint(b.len() as u64);
        self.bytes.extend_from_slice(b);
    }

    /// Text, after its length.
    pub fn text(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    /// A value: its tag, then its contents.
    pub fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.bytes.push(0),
            Value::Integer(i) => {
                self.bytes.push(1);
                self.int(*i);
            }
            Value::Real(f) => {
                self.bytes.push(2);
                self.bytes.extend_from_slice(&f.to_le_bytes());
            }
            Value::Text(s) => {
                self.bytes.push(3);
                self.text(s);
            }
            Value::Blob(b) => {
                self.bytes.push(4);
                self.bytes(b);
            }
        }
    }

    /// A key (as the value it is).
    pub fn key(&mut self, k: &Key) {
        self.value(&k.to_value());
    }

    /// A row's values, after their count.
    pub fn values(&mut self, values: &[Value]) {
        self.uint(values.len() as u64);
        for v in values {
            self.value(v);
        }
    }
}

/// Reads the encoding from a byte slice.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    fn fail<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("expected {what} at byte {}", self.pos))
    }

    /// Whether every byte was read.
    pub fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), String> {
        if self.at_end() {
            Ok(())
        } else {
            self.fail("the end")
        }
    }

    fn byte(&mut self, what: &str) -> Result<u8, String> {
        match self.bytes.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => self.fail(what),
        }
    }

    /// An unsigned varint.
    pub fn uint(&mut self) -> Result<u64, String> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte("a number")?;
            if shift == 63 && b > 1 {
                return self.fail("a number below 2^64");
            }
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        self.fail("the end of a number")
    }

    /// A signed varint (zigzag).
    pub fn int(&mut self) -> Result<i64, String> {
        let n = self.uint()?;
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    /// A length, checked against what is left.
    #[allow(clippy::len_without_is_empty)] // reads a length; not a size
    pub fn len(&mut self) -> Result<usize, String> {
        let n = self.uint()?;
        if n > (self.bytes.len() - self.pos) as u64 {
            return self.fail("a length within the input");
        }
        Ok(n as usize)
    }

    /// Bytes, after their length.
    pub fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.len()?;
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Text, after its length.
    pub fn text(&mut self) -> Result<String, String> {
        let at = self.pos;
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("expected UTF-8 text at byte {at}"))
    }

    /// A value.
    pub fn value(&mut self) -> Result<Value, String> {
        Ok(match self.byte("a value")? {
            0 => Value::Null,
            1 => Value::Integer(self.int()?),
            2 => {
                if self.bytes.len() - self.pos < 8 {
                    return self.fail("a float");
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.bytes[self.pos..self.pos + 8]);
                self.pos += 8;
                Value::Real(f64::from_le_bytes(b))
            }
            3 => Value::Text(self.text()?),
            4 => Value::Blob(self.bytes()?.to_vec()),
            _ => {
                self.pos -= 1;
                return self.fail("a value tag (0 to 4)");
            }
        })
    }

    /// A key.
    pub fn key(&mut self) -> Result<Key, String> {
        let at = self.pos;
        let v = self.value()?;
        Key::from_value(&v).ok_or_else(|| format!("expected a key (integer or text) at byte {at}"))
    }

    /// A row's values.
    pub fn values(&mut self) -> Result<Vec<Value>, String> {
        let n = self.len()?;
        (0..n).map(|_| self.value()).collect()
    }
}

/// A row's values, encoded.
pub fn encode_values(values: &[Value]) -> Vec<u8> {
    let mut w = Writer::default();
    w.values(values);
    w.bytes
}

/// A row's values, decoded.
pub fn decode_values(bytes: &[u8]) -> Result<Vec<Value>, String> {
    let mut r = Reader::new(bytes);
    let out = r.values()?;
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Integer),
            any::<f64>()
                .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
                .prop_map(Value::Real),
            ".{0,12}".prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(Value::Blob),
        ]
    }

    proptest! {
        #[test]
        fn values_round_trip(values in proptest::collection::vec(value(), 0..8)) {
            prop_assert_eq!(decode_values(&encode_values(&values)).map_err(TestCaseError::fail)?, values);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_values(&bytes);
        }
    }

    #[test]
    fn truncated_input_is_an_error_naming_the_place() {
        let bytes = encode_values(&[Value::Text("hello".into())]);
        let err = decode_values(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(err.contains("byte"), "{err}");
        assert!(decode_values(&[1, 9]).unwrap_err().contains("a value tag"));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            decode_values(&long).unwrap_err(),
            "expected the end at byte 8"
        );
    }
}
