//! Feeds arbitrary bytes to the message decoder as a stream of requests, and every decoded
//! request to a session: nothing may panic, whatever the peer sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhost_user::codec::{decode, Header, HEADER_LEN};
use vhost_user::session::{Output, Session, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let mut session = Session::new(SessionConfig {
        max_queue_pairs: 2,
        ..SessionConfig::default()
    });
    let mut out = Output::default();
    let mut rest = data;
    while rest.len() >= HEADER_LEN {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&rest[..HEADER_LEN]);
        rest = &rest[HEADER_LEN..];
        let Ok(header) = Header::parse(&h) else {
            return;
        };
        let size = (header.size as usize).min(rest.len());
        let (payload, tail) = rest.split_at(size);
        rest = tail;
        if let Ok(msg) = decode(header, payload, Vec::new()) {
            out.clear();
            if !session.is_blocked() {
                session.handle(msg, &mut out);
            }
            for i in out.ready.clone() {
                let _ = session.take_queue(i);
            }
        }
    }
});
