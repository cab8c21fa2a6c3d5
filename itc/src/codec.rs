//! The paper's compact binary encoding of stamps, bit for bit as the
//! authors' Erlang reference (`itc.erl`, `encode/1`) writes it, most
//! significant bit first, with the last byte padded with zero bits.
//!
//! ```text
//! id:     0 -> 00 0      1 -> 00 1
//!         (0,i) -> 01 i      (i,0) -> 10 i      (l,r) -> 11 l r
//! event:  n -> 1 number(n, 2)                  (a leaf, or any counter)
//!         (0,0,r) -> 0 00 r   (0,l,0) -> 0 01 l   (0,l,r) -> 0 10 l r
//!         (n,0,r) -> 0 11 0 0 n r   (n,l,0) -> 0 11 0 1 n l
//!         (n,l,r) -> 0 11 1 n l r                (`0` here: the leaf 0)
//! number(n, B) -> 0 n in B bits                  if n < 2^B
//!                 1 number(n - 2^B, B + 1)       otherwise
//! stamp:  id event, then zero bits up to a whole byte
//! ```
//!
//! Decoding accepts exactly this language: nesting is limited to
//! [`MAX_DEPTH`] before anything deeper is built, counters (and sums of
//! counters along a path) must fit in a `u64`, and only the zero padding of
//! the last byte may follow the stamp. Decoded trees are normalized, so a
//! valid but non-canonical encoding (say of the id `(1,1)`) decodes to the
//! canonical stamp. Memory use is proportional to the input's length.

use crate::event::normalized;
use crate::{Error, Event, Id, Malformed, Result, Stamp, MAX_DEPTH};

impl Stamp {
    /// The paper's binary encoding of this stamp (see the [module
    /// docs](crate::codec)); the seed encodes to the single byte `0x30`.
    ///
    /// Trees deeper than [`MAX_DEPTH`] encode but do not decode; stamps
    /// built by this crate's operations reach that depth only after hundreds
    /// of nested forks with no joins.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = BitWriter::default();
        write_id(&mut out, self.id());
        write_event(&mut out, self.event_tree());
        out.bytes
    }

    /// Reads a stamp written by [`encode`](Stamp::encode) (or by another
    /// implementation of the paper's encoding, padded to whole bytes).
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] with the bit offset and the problem, for input
    /// that ends early, nests deeper than [`MAX_DEPTH`], holds a counter
    /// beyond `u64::MAX`, or continues past the padding of the last byte.
    /// Arbitrary bytes never cause a panic.
    pub fn decode(bytes: &[u8]) -> Result<Stamp> {
        let mut input = BitReader { bytes, pos: 0 };
        let id = input.id(0)?;
        let event = input.event(0, 0)?;
        input.finish()?;
        Ok(Stamp::new(id, event))
    }
}

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte, `0` meaning it is full (or absent).
    used: u32,
}

impl BitWriter {
    /// Appends the low `width` bits of `value`, most significant first.
    fn push(&mut self, value: u64, width: u32) {
        for shift in (0..width).rev() {
            if self.used == 0 {
                self.bytes.push(0);
            }
            let bit = ((value >> shift) & 1) as u8;
            if let Some(last) = self.bytes.last_mut() {
                *last |= bit << (7 - self.used);
            }
            self.used = (self.used + 1) % 8;
        }
    }
}

fn write_id(out: &mut BitWriter, id: &Id) {
    match id.children() {
        None => out.push(u64::from(id.is_one()), 3),
        Some((l, r)) if l.is_zero() => {
            out.push(0b01, 2);
            write_id(out, r);
        }
        Some((l, r)) if r.is_zero() => {
            out.push(0b10, 2);
            write_id(out, l);
        }
        Some((l, r)) => {
            out.push(0b11, 2);
            write_id(out, l);
            write_id(out, r);
        }
    }
}

fn is_zero_leaf(e: &Event) -> bool {
    e.is_leaf() && e.base() == 0
}

fn write_event(out: &mut BitWriter, e: &Event) {
    let Some((l, r)) = e.children() else {
        return write_counter(out, e.base());
    };
    match (e.base(), is_zero_leaf(l), is_zero_leaf(r)) {
        (0, true, _) => {
            out.push(0b000, 3);
            write_event(out, r);
        }
        (0, _, true) => {
            out.push(0b001, 3);
            write_event(out, l);
        }
        (0, _, _) => {
            out.push(0b010, 3);
            write_event(out, l);
            write_event(out, r);
        }
        (n, true, _) => {
            out.push(0b01100, 5);
            write_counter(out, n);
            write_event(out, r);
        }
        (n, _, true) => {
            out.push(0b01101, 5);
            write_counter(out, n);
            write_event(out, l);
        }
        (n, _, _) => {
            out.push(0b0111, 4);
            write_counter(out, n);
            write_event(out, l);
            write_event(out, r);
        }
    }
}

/// A counter: the leaf tag `1`, then `number(n, 2)` from the module docs.
fn write_counter(out: &mut BitWriter, n: u64) {
    out.push(1, 1);
    let mut rest = n;
    let mut width = 2;
    // `rest >= 2^width`; once `width` reaches 64 every u64 fits.
    while width < 64 && rest >> width != 0 {
        out.push(1, 1);
        rest -= 1 << width;
        width += 1;
    }
    out.push(0, 1);
    out.push(rest, width);
}

struct BitReader<'a> {
    bytes: &'a [u8],
    /// Bits consumed so far.
    pos: usize,
}

impl BitReader<'_> {
    fn fail<T>(&self, bit: usize, problem: Malformed) -> Result<T> {
        Err(Error::Decode { bit, problem })
    }

    fn bit(&mut self) -> Result<bool> {
        let Some(byte) = self.bytes.get(self.pos / 8) else {
            return self.fail(self.pos, Malformed::UnexpectedEnd);
        };
        let bit = (byte >> (7 - self.pos % 8)) & 1 == 1;
        self.pos += 1;
        Ok(bit)
    }

    /// The next `width` (at most 64) bits as a number, most significant
    /// first.
    fn bits(&mut self, width: u32) -> Result<u64> {
        let mut value = 0u64;
        for _ in 0..width {
            value = value << 1 | u64::from(self.bit()?);
        }
        Ok(value)
    }

    /// Checks that a node starting at `start` is not nested too deep.
    fn enter(&self, start: usize, depth: usize) -> Result<()> {
        if depth >= MAX_DEPTH {
            return self.fail(start, Malformed::TooDeep);
        }
        Ok(())
    }

    fn id(&mut self, depth: usize) -> Result<Id> {
        let start = self.pos;
        let tag = self.bits(2)?;
        if tag == 0 {
            return Ok(if self.bit()? { Id::one() } else { Id::zero() });
        }
        self.enter(start, depth)?;
        Ok(match tag {
            0b01 => Id::node(Id::zero(), self.id(depth + 1)?),
            0b10 => Id::node(self.id(depth + 1)?, Id::zero()),
            _ => {
                let left = self.id(depth + 1)?;
                Id::node(left, self.id(depth + 1)?)
            }
        })
    }

    /// An event tree nested inside `depth` nodes whose counters add up to
    /// `above`; every sum along a path must fit in a `u64`.
    fn event(&mut self, depth: usize, above: u64) -> Result<Event> {
        let start = self.pos;
        if self.bit()? {
            let n = self.number(start)?;
            self.check_sum(start, above, n)?;
            return Ok(Event::leaf(n));
        }
        self.enter(start, depth)?;
        let zero = Event::leaf;
        let (n, left, right) = match self.bits(2)? {
            0b00 => (0, zero(0), self.event(depth + 1, above)?),
            0b01 => (0, self.event(depth + 1, above)?, zero(0)),
            0b10 => {
                let left = self.event(depth + 1, above)?;
                (0, left, self.event(depth + 1, above)?)
            }
            _ => {
                // `1`: both children follow; `01`: only the left; `00`:
                // only the right. The node's counter comes first.
                let both = self.bit()?;
                let left_only = !both && self.bit()?;
                let counter_start = self.pos;
                let n = self.counter()?;
                let below = self.check_sum(counter_start, above, n)?;
                if both {
                    let left = self.event(depth + 1, below)?;
                    (n, left, self.event(depth + 1, below)?)
                } else if left_only {
                    (n, self.event(depth + 1, below)?, zero(0))
                } else {
                    (n, zero(0), self.event(depth + 1, below)?)
                }
            }
        };
        Ok(normalized(n, left, right))
    }

    /// `above + n`, or an error at `start` if it exceeds `u64::MAX`.
    fn check_sum(&self, start: usize, above: u64, n: u64) -> Result<u64> {
        above
            .checked_add(n)
            .map_or_else(|| self.fail(start, Malformed::CounterTooLarge), Ok)
    }

    /// The counter of an event node: a leaf encoding, tag bit included.
    fn counter(&mut self) -> Result<u64> {
        let start = self.pos;
        if !self.bit()? {
            return self.fail(start, Malformed::Expected("a counter (a leaf encoding)"));
        }
        self.number(start)
    }

    /// `number(n, 2)` from the module docs; `start` is where its leaf began.
    fn number(&mut self, start: usize) -> Result<u64> {
        let mut offset: u128 = 0;
        let mut width = 2;
        while self.bit()? {
            offset += 1 << width;
            width += 1;
            if offset > u128::from(u64::MAX) {
                return self.fail(start, Malformed::CounterTooLarge);
            }
        }
        // Here `2^width - 4 <= u64::MAX`, so `width <= 64`.
        let value = offset + u128::from(self.bits(width)?);
        u64::try_from(value).or_else(|_| self.fail(start, Malformed::CounterTooLarge))
    }

    /// Accepts the end of input: at most the zero padding of the last byte.
    fn finish(&self) -> Result<()> {
        let total = self.bytes.len() * 8;
        if total - self.pos >= 8 {
            return self.fail(self.pos, Malformed::TrailingInput);
        }
        match (self.pos..total).find(|&bit| (self.bytes[bit / 8] >> (7 - bit % 8)) & 1 == 1) {
            Some(bit) => self.fail(bit, Malformed::TrailingInput),
            None => Ok(()),
        }
    }
}
