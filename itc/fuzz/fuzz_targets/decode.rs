//! `Stamp::decode` on arbitrary bytes: an error or a valid stamp that
//! survives a round trip and the clock operations, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rederive_itc::Stamp;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(stamp) = Stamp::decode(bytes) {
        assert_eq!(Stamp::decode(&stamp.encode()).as_ref(), Ok(&stamp));
        assert_eq!(stamp.to_string().parse::<Stamp>().as_ref(), Ok(&stamp));
        let (a, b) = stamp.fork();
        assert_eq!(a.join(&b).as_ref(), Ok(&stamp));
        if let Ok(next) = stamp.event() {
            assert!(stamp < next);
        }
    }
});
