//! Arbitrary bytes and text from outside: an error or a valid stamp, never
//! a panic. The same checks run under cargo-fuzz in `itc/fuzz/`.

mod common;

use common::*;
use proptest::prelude::*;
use rederive_itc::{Error, Stamp};

/// What must hold for any stamp that was accepted from outside.
fn check_accepted(s: &Stamp) -> Result<(), TestCaseError> {
    prop_assert!(stamp_is_normal(s), "accepted a non-normal stamp {s}");
    prop_assert_eq!(Stamp::decode(&s.encode()), Ok(s.clone()));
    prop_assert_eq!(s.to_string().parse::<Stamp>(), Ok(s.clone()));
    // Operations work on it (an anonymous stamp refuses events).
    match s.event() {
        Ok(e) => prop_assert!(s < &e),
        Err(err) => prop_assert!(
            s.is_anonymous() || err == Error::CounterOverflow,
            "{s}: {err}"
        ),
    }
    let (a, b) = s.fork();
    prop_assert_eq!(a.join(&b), Ok(s.clone()));
    Ok(())
}

fn check_rejected(err: &Error, len: usize) -> Result<(), TestCaseError> {
    match *err {
        Error::Decode { bit, .. } => prop_assert!(bit <= len * 8),
        Error::Parse { position, .. } => prop_assert!(position <= len),
        ref other => prop_assert!(false, "unexpected error kind {other}"),
    }
    Ok(())
}

/// Text made of the notation's own characters, so that some of it parses.
fn clock_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            6 => prop::sample::select(vec!['(', ')', ',', '0', '1']),
            1 => prop::sample::select(vec!['2', '9', ' ', 'x', 'é']),
        ],
        0..40,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_decode_to_an_error_or_a_valid_stamp(bytes in prop::collection::vec(any::<u8>(), 0..48)) {
        match Stamp::decode(&bytes) {
            Ok(s) => check_accepted(&s)?,
            Err(e) => check_rejected(&e, bytes.len())?,
        }
    }

    #[test]
    fn mutated_encodings_decode_to_an_error_or_a_valid_stamp(
        ops in ops(30),
        flips in prop::collection::vec(any::<prop::sample::Index>(), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        // Valid encodings with a few bits flipped and possibly truncated:
        // inputs close to valid ones reach far deeper into the decoder.
        let live = run(&ops).live;
        let mut bytes = live[live.len() - 1].encode();
        for flip in flips {
            let bit = flip.index(bytes.len() * 8);
            bytes[bit / 8] ^= 0x80 >> (bit % 8);
        }
        bytes.truncate(1 + cut.index(bytes.len()));
        match Stamp::decode(&bytes) {
            Ok(s) => check_accepted(&s)?,
            Err(e) => check_rejected(&e, bytes.len())?,
        }
    }

    #[test]
    fn random_text_parses_to_an_error_or_a_valid_stamp(text in clock_text()) {
        match text.parse::<Stamp>() {
            Ok(s) => check_accepted(&s)?,
            Err(e) => check_rejected(&e, text.len())?,
        }
    }
}

#[test]
fn huge_inputs_are_rejected_without_deep_recursion() {
    // A megabyte of `(` or of nested node tags must fail fast at the depth
    // limit rather than overflow the stack.
    let text = "(".repeat(1 << 20);
    assert!(matches!(
        text.parse::<Stamp>(),
        Err(Error::Parse {
            problem: rederive_itc::Malformed::TooDeep,
            ..
        })
    ));
    for byte in [0x55, 0xaa, 0xff, 0x20] {
        let result = Stamp::decode(&vec![byte; 1 << 20]);
        assert!(
            matches!(result, Err(Error::Decode { .. })),
            "{byte:#x}: {result:?}"
        );
    }
    // An id of `1` followed by a megabyte of event nodes `0 00` (8 of them
    // per 3 bytes).
    let mut bytes = vec![0b0010_0000];
    bytes.extend(std::iter::repeat_n(0u8, 1 << 20));
    assert!(matches!(
        Stamp::decode(&bytes),
        Err(Error::Decode {
            problem: rederive_itc::Malformed::TooDeep,
            ..
        })
    ));
}

#[cfg(feature = "serde")]
#[test]
fn serde_uses_the_text_form_in_json_and_validates() {
    let (a, _) = Stamp::seed().fork();
    let a = a.event().unwrap();
    let json = serde_json::to_string(&a).unwrap();
    assert_eq!(json, "\"((1,0),(0,1,0))\"");
    assert_eq!(serde_json::from_str::<Stamp>(&json).unwrap(), a);
    let err = serde_json::from_str::<Stamp>("\"((1,0),(0,1,0)\"").unwrap_err();
    assert!(err.to_string().contains("byte 14"), "{err}");
}
