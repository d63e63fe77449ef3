//! Arbitrary bytes into the frame decoder: it must never panic, never ask
//! for more than the maximum, and every frame it accepts must re-encode to
//! bytes that decode to the same frame.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchboard_proto::{decode, Frame};

const MAX: u32 = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decode(&mut buf, MAX) {
        let mut again = BytesMut::new();
        frame.encode(&mut again);
        let round: Frame = decode(&mut again, u32::MAX).expect("re-encoded frame decodes").expect("whole");
        assert_eq!(round, frame);
    }
});
