//! Arbitrary bytes from an agent through the pkt0 decoder, as vrouterd's agent thread reads
//! them: a message decodes and encodes back to the same bytes, or is refused with a skip that
//! moves the reader forward (never past the end it announced); nothing panics.
#![no_main]

use control_api::pkt0::{Message, Pkt0Error, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while at < data.len() {
        match Message::decode(&data[at..]) {
            Ok((m, n)) => {
                assert!(n >= HEADER_LEN && at + n <= data.len());
                let mut again = Vec::new();
                m.encode(&mut again);
                assert_eq!(&again[..], &data[at..at + n], "re-encoded differently");
                at += n;
            }
            Err(Pkt0Error::Short(_)) => break,
            Err(e) => {
                assert!(e.skip() >= HEADER_LEN, "{e}: skip {}", e.skip());
                at += e.skip();
            }
        }
    }
});
