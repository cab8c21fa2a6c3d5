//! The paper's text notation: `Display` and `FromStr` for ids, event trees
//! and stamps.
//!
//! The grammar, with no spaces anywhere:
//!
//! ```text
//! id     = "0" | "1" | "(" id "," id ")"
//! event  = number | "(" number "," event "," event ")"
//! stamp  = "(" id "," event ")"
//! number = "0" | [1-9][0-9]*          (at most u64::MAX)
//! ```
//!
//! Parsed trees are normalized (`(1,1)` reads as `1`, `(2,1,1)` as `3`), so
//! printing what was parsed gives the canonical text. Nesting deeper than
//! [`MAX_DEPTH`] is rejected before it is built.

use std::fmt;
use std::str::FromStr;

use crate::event::normalized;
use crate::{Error, Event, Id, Malformed, Result, Stamp, MAX_DEPTH};

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.children() {
            None if self.is_zero() => f.write_str("0"),
            None => f.write_str("1"),
            Some((l, r)) => write!(f, "({l},{r})"),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.children() {
            None => write!(f, "{}", self.base()),
            Some((l, r)) => write!(f, "({},{l},{r})", self.base()),
        }
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({},{})", self.id(), self.event_tree())
    }
}

// Debug output is the paper's notation too: far easier to read in test
// failures than the nested structs.
impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Debug for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Id {
    type Err = Error;

    /// Parses `0`, `1` or `(l,r)`.
    fn from_str(text: &str) -> Result<Id> {
        Parser::new(text).whole(|p| p.id(0))
    }
}

impl FromStr for Event {
    type Err = Error;

    /// Parses `n` or `(n,l,r)`.
    fn from_str(text: &str) -> Result<Event> {
        Parser::new(text).whole(|p| p.event(0, 0))
    }
}

impl FromStr for Stamp {
    type Err = Error;

    /// Parses `(id,event)`, e.g. `((1,0),(0,1,0))`.
    fn from_str(text: &str) -> Result<Stamp> {
        Parser::new(text).whole(Parser::stamp)
    }
}

/// A recursive-descent parser over the bytes of the text; `depth` arguments
/// count the enclosing nodes of the tree being read.
struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Parser<'a> {
        Parser {
            text: text.as_bytes(),
            pos: 0,
        }
    }

    fn fail<T>(&self, position: usize, problem: Malformed) -> Result<T> {
        Err(Error::Parse { position, problem })
    }

    /// Runs `read` and insists that it consumed the whole text.
    fn whole<T>(mut self, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let value = read(&mut self)?;
        if self.pos < self.text.len() {
            return self.fail(self.pos, Malformed::TrailingInput);
        }
        Ok(value)
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn expect(&mut self, byte: u8, what: &'static str) -> Result<()> {
        match self.peek() {
            Some(b) if b == byte => {
                self.pos += 1;
                Ok(())
            }
            Some(_) => self.fail(self.pos, Malformed::Expected(what)),
            None => self.fail(self.pos, Malformed::UnexpectedEnd),
        }
    }

    /// Consumes the `(` of a node nested inside `depth` others.
    fn open(&mut self, depth: usize) -> Result<()> {
        if depth >= MAX_DEPTH {
            return self.fail(self.pos, Malformed::TooDeep);
        }
        self.expect(b'(', "`(`")
    }

    fn stamp(&mut self) -> Result<Stamp> {
        self.expect(b'(', "`(` opening a stamp")?;
        let id = self.id(0)?;
        self.expect(b',', "`,` after the id")?;
        let event = self.event(0, 0)?;
        self.expect(b')', "`)` closing the stamp")?;
        Ok(Stamp::new(id, event))
    }

    fn id(&mut self, depth: usize) -> Result<Id> {
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                Ok(Id::zero())
            }
            Some(b'1') => {
                self.pos += 1;
                Ok(Id::one())
            }
            Some(b'(') => {
                self.open(depth)?;
                let left = self.id(depth + 1)?;
                self.expect(b',', "`,` between the halves of an id")?;
                let right = self.id(depth + 1)?;
                self.expect(b')', "`)` closing an id")?;
                Ok(Id::node(left, right))
            }
            Some(_) => self.fail(self.pos, Malformed::Expected("an id: `0`, `1` or `(`")),
            None => self.fail(self.pos, Malformed::UnexpectedEnd),
        }
    }

    /// An event tree nested inside `depth` nodes whose counters add up to
    /// `above`; every sum along a path must fit in a `u64`.
    fn event(&mut self, depth: usize, above: u64) -> Result<Event> {
        let start = self.pos;
        if self.peek() != Some(b'(') {
            let n = self.number("an event tree: a counter or `(`")?;
            self.check_sum(start, above, n)?;
            return Ok(Event::leaf(n));
        }
        self.open(depth)?;
        let counter_start = self.pos;
        let n = self.number("the counter of an event node")?;
        let below = self.check_sum(counter_start, above, n)?;
        self.expect(b',', "`,` after an event counter")?;
        let left = self.event(depth + 1, below)?;
        self.expect(b',', "`,` between event subtrees")?;
        let right = self.event(depth + 1, below)?;
        self.expect(b')', "`)` closing an event tree")?;
        Ok(normalized(n, left, right))
    }

    /// `above + n`, or an error at `start` if it exceeds `u64::MAX`.
    fn check_sum(&self, start: usize, above: u64, n: u64) -> Result<u64> {
        above
            .checked_add(n)
            .map_or_else(|| self.fail(start, Malformed::CounterTooLarge), Ok)
    }

    fn number(&mut self, what: &'static str) -> Result<u64> {
        let start = self.pos;
        let digits = self.text[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        match digits {
            0 if self.peek().is_none() => return self.fail(start, Malformed::UnexpectedEnd),
            0 => return self.fail(start, Malformed::Expected(what)),
            1 => {}
            _ if self.text[start] == b'0' => return self.fail(start, Malformed::LeadingZero),
            _ => {}
        }
        self.pos += digits;
        let mut value: u64 = 0;
        for &digit in &self.text[start..self.pos] {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(digit - b'0')))
                .map_or_else(|| self.fail(start, Malformed::CounterTooLarge), Ok)?;
        }
        Ok(value)
    }
}
