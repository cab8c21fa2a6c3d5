//! `FromStr` for stamps on arbitrary text: an error or a valid stamp that
//! survives a round trip, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rederive_itc::Stamp;

fuzz_target!(|text: &str| {
    if let Ok(stamp) = text.parse::<Stamp>() {
        assert_eq!(stamp.to_string().parse::<Stamp>().as_ref(), Ok(&stamp));
        assert_eq!(Stamp::decode(&stamp.encode()).as_ref(), Ok(&stamp));
        if let Ok(next) = stamp.event() {
            assert!(stamp < next);
        }
    }
});
