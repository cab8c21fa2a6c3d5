//! The example run of the paper (its figure of states a to h, also the demo
//! in the authors' reference repository), step by step, plus fixed vectors
//! for the text and binary forms computed by hand from the paper's rules.

use std::cmp::Ordering;

use rederive_itc::{Error, Event, Id, Malformed, Stamp};

fn stamp(text: &str) -> Stamp {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Bytes from a string of `0`s and `1`s (spaces ignored), zero-padded.
fn from_bits(bits: &str) -> Vec<u8> {
    let bits: Vec<u8> = bits
        .bytes()
        .filter(|b| *b != b' ')
        .map(|b| b - b'0')
        .collect();
    bits.chunks(8)
        .map(|chunk| (0..8).fold(0, |byte, i| byte << 1 | chunk.get(i).copied().unwrap_or(0)))
        .collect()
}

fn text(s: &Stamp) -> String {
    s.to_string()
}

#[test]
fn the_papers_example_run_step_by_step() -> Result<(), Error> {
    // a: the seed.
    let seed = Stamp::seed();
    assert_eq!(text(&seed), "(1,0)");

    // b: fork.
    let (a, b) = seed.fork();
    assert_eq!(text(&a), "((1,0),0)");
    assert_eq!(text(&b), "((0,1),0)");

    // c: an event on each side.
    let a = a.event()?;
    let b = b.event()?;
    assert_eq!(text(&a), "((1,0),(0,1,0))");
    assert_eq!(text(&b), "((0,1),(0,0,1))");
    assert_eq!(a.partial_cmp(&b), None);

    // d: a forks c; b records another event.
    let (a, c) = a.fork();
    let b = b.event()?;
    assert_eq!(text(&a), "(((1,0),0),(0,1,0))");
    assert_eq!(text(&c), "(((0,1),0),(0,1,0))");
    assert_eq!(text(&b), "((0,1),(0,0,2))");

    // e: a records an event (nothing to fill, so the tree grows under a's
    // id); b and c join.
    let a = a.event()?;
    let b = b.join(&c)?;
    assert_eq!(text(&a), "(((1,0),0),(0,(1,1,0),0))");
    assert_eq!(text(&b), "(((0,1),1),(1,0,1))");

    // f: b forks c again.
    let (b, c) = b.fork();
    assert_eq!(text(&b), "(((0,1),0),(1,0,1))");
    assert_eq!(text(&c), "((0,1),(1,0,1))");

    // g: a and b join.
    let a = a.join(&b)?;
    assert_eq!(text(&a), "((1,0),(1,(0,1,0),1))");

    // h: a records an event, which fills its whole half.
    let a = a.event()?;
    assert_eq!(text(&a), "((1,0),2)");
    assert_eq!(a.partial_cmp(&c), Some(Ordering::Greater));

    // And when c retires into a, the seed's id is whole again.
    let all = a.join(&c)?;
    assert_eq!(text(&all), "(1,2)");
    assert_eq!(text(&all.event()?), "(1,3)");
    Ok(())
}

#[test]
fn fill_raises_what_the_id_owns_to_simplify_the_tree() -> Result<(), Error> {
    // The id owns the left half; the right half has seen 2 events, so the
    // left can be raised to 2 without inventing anything, and the tree
    // collapses to a single counter.
    let s = stamp("((1,0),(0,0,2))");
    assert_eq!(text(&s.event()?), "((1,0),2)");
    // Filling only goes up to the other half's minimum: here that is 0, so
    // nothing can be filled and the tree grows by one instead.
    let s = stamp("((1,0),(0,0,(0,0,3)))");
    assert_eq!(text(&s.event()?), "((1,0),(0,1,(0,0,3)))");
    let s = stamp("((0,1),(0,(0,3,0),0))");
    assert_eq!(text(&s.event()?), "((0,1),(0,(0,3,0),1))");
    // Only a partial fill is possible under a fragmented id.
    let s = stamp("((1,(0,1)),(0,(0,3,0),(1,0,2)))");
    assert_eq!(text(&s.event()?), "((1,(0,1)),(1,2,(0,0,2)))");
    Ok(())
}

#[test]
fn grow_prefers_a_deep_existing_node_to_expanding_a_leaf() -> Result<(), Error> {
    // Growing under the left half needs a leaf expanded into a node; the
    // right half already has a node four levels down.
    let s = stamp("(((1,0),(0,(0,(0,1)))),(0,0,(0,0,(0,0,(0,0,1)))))");
    assert_eq!(
        text(&s.event()?),
        "(((1,0),(0,(0,(0,1)))),(0,0,(0,0,(0,0,(0,0,2)))))"
    );
    // With no node to use, the shallowest expansion wins, ties going right.
    let s = stamp("(((1,0),(0,1)),0)");
    assert_eq!(text(&s.event()?), "(((1,0),(0,1)),(0,0,(0,0,1)))");
    let s = stamp("(((1,0),(0,(1,0))),0)");
    assert_eq!(text(&s.event()?), "(((1,0),(0,(1,0))),(0,(0,1,0),0))");
    Ok(())
}

#[test]
fn joins_of_overlapping_ids_are_refused() {
    let (a, b) = Stamp::seed().fork();
    assert_eq!(
        Stamp::seed().join(&Stamp::seed()),
        Err(Error::OverlappingIds)
    );
    assert_eq!(a.join(&a.clone()), Err(Error::OverlappingIds));
    assert_eq!(Stamp::seed().join(&b), Err(Error::OverlappingIds));
    let (b1, _) = b.fork();
    assert_eq!(b.join(&b1), Err(Error::OverlappingIds));
    // Knowledge-only joins always work, and so do disjoint ids.
    assert!(a.join(&a.peek()).is_ok());
    assert_eq!(a.join(&b).map(|s| text(&s)), Ok("(1,0)".to_string()));
}

#[test]
fn anonymous_stamps_cannot_record_events_until_given_an_id() -> Result<(), Error> {
    let (keep, give) = Stamp::seed().event()?.fork();
    let newcomer = Stamp::new(Id::zero(), Event::leaf(0));
    assert_eq!(newcomer.event(), Err(Error::AnonymousEvent));
    assert_eq!(keep.peek().event(), Err(Error::AnonymousEvent));
    let newcomer = newcomer.join(&give)?.event()?;
    assert_eq!(text(&newcomer), "((0,1),(1,0,1))");
    assert!(keep < newcomer);
    Ok(())
}

#[test]
fn counters_overflow_into_an_error() -> Result<(), Error> {
    let full = Stamp::new(Id::one(), Event::leaf(u64::MAX));
    assert_eq!(full.event(), Err(Error::CounterOverflow));
    // The bound is on the absolute value, not the node's own counter.
    let tree = Event::node(u64::MAX - 1, Event::leaf(0), Event::leaf(1))?;
    let right = Stamp::new("(0,1)".parse()?, tree.clone());
    assert_eq!(right.event(), Err(Error::CounterOverflow));
    // The left half can still be filled up to the maximum, once.
    let left = Stamp::new("(1,0)".parse()?, tree).event()?;
    assert_eq!(left.event_tree(), &Event::leaf(u64::MAX));
    assert_eq!(left.event(), Err(Error::CounterOverflow));
    assert_eq!(
        Event::node(u64::MAX, Event::leaf(0), Event::leaf(1)),
        Err(Error::CounterOverflow)
    );
    Ok(())
}

#[test]
fn stamps_order_by_what_they_have_seen() -> Result<(), Error> {
    let (a, b) = Stamp::seed().fork();
    // Same knowledge, different ids: causally equal, structurally not.
    assert_eq!(a.partial_cmp(&b), Some(Ordering::Equal));
    assert_ne!(a, b);
    let a1 = a.event()?;
    assert!(a < a1 && a1 > b && a.leq(&a1) && !a1.leq(&a));
    let b1 = b.event()?;
    assert!(a1.concurrent(&b1) && !a1.concurrent(&a));
    assert_eq!(a1.partial_cmp(&b1), None);
    assert_eq!((a1 <= b1, b1 <= a1), (false, false));
    Ok(())
}

#[test]
fn binary_vectors_match_the_reference_encoding() {
    // (id bits, event bits) worked out from the paper's rules, as written
    // by the Erlang reference's encode/1, then padded with zeros.
    let cases: [(&str, &[u8]); 7] = [
        // 001 | 1 0 00
        ("(1,0)", &[0x30]),
        // 10 001 | 0 01 (1 0 01)
        ("((1,0),(0,1,0))", &[0x89, 0x90]),
        // 10 001 | 1 0 10
        ("((1,0),2)", &[0x8d, 0x00]),
        // 001 | 1 1 0 001       (5 = 4 + 1)
        ("(1,5)", &[0x38, 0x80]),
        // 001 | 1 1 1 0 0000    (12 = 4 + 8 + 0)
        ("(1,12)", &[0x3c, 0x00]),
        // 01 001 | 0 11 0 0 (1 0 01) (1 0 01)
        ("((0,1),(1,0,1))", &[0x4b, 0x26, 0x40]),
        // 000 | 0 01 (1 0 01)
        ("(0,(0,1,0))", &[0x06, 0x40]),
    ];
    for (txt, bytes) in cases {
        let s = stamp(txt);
        assert_eq!(s.encode(), bytes, "encoding {txt}");
        assert_eq!(Stamp::decode(bytes).as_ref(), Ok(&s), "decoding {txt}");
    }
    // The largest counter: 1, then 62 ones (offsets 2^2..2^63), a 0 and
    // the remainder 3 in 64 bits.
    let max = Stamp::new(Id::one(), Event::leaf(u64::MAX));
    let bits: usize = 3 + 1 + 62 + 1 + 64;
    assert_eq!(max.encode().len(), bits.div_ceil(8));
    assert_eq!(Stamp::decode(&max.encode()), Ok(max));
}

#[test]
fn decoding_normalizes_and_rejects_bad_input_with_a_position() {
    // `11 001 001` is the id (1,1), i.e. 1; then the leaf 0.
    assert_eq!(Stamp::decode(&[0xc9, 0x80]), Ok(Stamp::seed()));
    let fail = |bytes: &[u8]| match Stamp::decode(bytes) {
        Err(Error::Decode { bit, problem }) => (bit, problem),
        other => panic!("{bytes:?} decoded to {other:?}"),
    };
    assert_eq!(fail(&[]), (0, Malformed::UnexpectedEnd));
    assert_eq!(fail(&[0x3f]), (8, Malformed::UnexpectedEnd));
    assert_eq!(fail(&[0x30, 0x00]), (7, Malformed::TrailingInput));
    assert_eq!(fail(&[0x31]), (7, Malformed::TrailingInput));
    // A node's counter must be a leaf encoding (the reference would accept
    // a whole tree there).
    assert_eq!(
        fail(&[0b0010_1110, 0]),
        (7, Malformed::Expected("a counter (a leaf encoding)"))
    );
    // 200 bytes of `01` pairs: ids nested 800 deep.
    let (bit, problem) = fail(&[0x55; 200]);
    assert_eq!(
        (bit, problem),
        (2 * rederive_itc::MAX_DEPTH, Malformed::TooDeep)
    );
    // The node (u64::MAX,0,1): the right leaf overflows along the path.
    let max_counter = format!("1{}0{:064b}", "1".repeat(62), 3);
    let bytes = from_bits(&format!("001 01100 {max_counter} 1001"));
    assert_eq!(fail(&bytes), (8 + 128, Malformed::CounterTooLarge));
    let bytes = from_bits(&format!("001 01100 {max_counter} 1000"));
    assert!(Stamp::decode(&bytes).is_ok());
    // A counter with more than 62 continuation bits exceeds u64::MAX.
    let mut huge = vec![0x3f];
    huge.extend([0xff; 16]);
    assert_eq!(fail(&huge), (3, Malformed::CounterTooLarge));
}

#[test]
fn text_errors_say_where() {
    let fail = |txt: &str| match txt.parse::<Stamp>() {
        Err(Error::Parse { position, problem }) => (position, problem),
        other => panic!("{txt:?} parsed to {other:?}"),
    };
    assert_eq!(fail(""), (0, Malformed::UnexpectedEnd));
    assert_eq!(fail("((1,0),(0,1,0)"), (14, Malformed::UnexpectedEnd));
    assert_eq!(fail("(1,0)x"), (5, Malformed::TrailingInput));
    assert_eq!(
        fail("(2,0)"),
        (1, Malformed::Expected("an id: `0`, `1` or `(`"))
    );
    assert_eq!(
        fail("(1, 0)"),
        (3, Malformed::Expected("an event tree: a counter or `(`"))
    );
    assert_eq!(fail("(1,01)"), (3, Malformed::LeadingZero));
    assert_eq!(
        fail("(1,18446744073709551616)"),
        (3, Malformed::CounterTooLarge)
    );
    // The leaf `1` under the node's counter u64::MAX overflows.
    assert_eq!(
        fail("(1,(18446744073709551615,1,0))"),
        (25, Malformed::CounterTooLarge)
    );
    assert!("(1,(18446744073709551615,0,0))".parse::<Stamp>().is_ok());
    assert_eq!(
        fail("(1,(1,2))"),
        (7, Malformed::Expected("`,` between event subtrees"))
    );
    let deep = "(".repeat(rederive_itc::MAX_DEPTH + 1);
    assert_eq!(
        fail(&format!("({deep}")),
        (1 + rederive_itc::MAX_DEPTH, Malformed::TooDeep)
    );
    // Non-normal input is accepted and normalized.
    assert_eq!(stamp("((1,1),(2,1,1))"), stamp("(1,3)"));
    assert_eq!(stamp("((0,0),(0,(1,0,0),(0,2,2)))"), stamp("(0,(1,0,1))"));
    assert_eq!("(1,(1,1))".parse::<Id>(), Ok(Id::one()));
}

#[test]
fn stamps_at_the_depth_limit_are_usable() -> Result<(), Error> {
    // The deepest input accepted: ids and event trees MAX_DEPTH deep. Every
    // operation recurses that deep; this runs on a test thread's stack in
    // a debug build.
    let depth = rederive_itc::MAX_DEPTH;
    let id = format!("{}1{}", "(0,".repeat(depth), ")".repeat(depth));
    let event = format!("{}1{}", "(0,0,".repeat(depth), ")".repeat(depth));
    let s: Stamp = format!("({id},{event})").parse()?;
    assert_eq!((s.id().depth(), s.event_tree().depth()), (depth, depth));
    let bytes = s.encode();
    assert_eq!(Stamp::decode(&bytes)?, s);
    let e = s.event()?;
    assert!(s < e);
    let (a, b) = e.fork();
    assert_eq!(a.join(&b)?, e);
    assert!(s.leq(&e.join(&Stamp::seed().peek())?));
    assert_eq!(e.to_string().parse::<Stamp>()?, e);
    Ok(())
}
