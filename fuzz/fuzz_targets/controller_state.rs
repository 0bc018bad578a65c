//! The controller's durable state decoder (what a restarted controller
//! reads back) on arbitrary bytes. Nothing may panic; what decodes encodes
//! back to a state that decodes to itself, and a damaged copy of a valid
//! state is refused, never read as another state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_replication::controller::ControllerState;

fuzz_target!(|data: &[u8]| {
    if let Ok(st) = ControllerState::decode(data) {
        let enc = st.encode();
        let again = ControllerState::decode(&enc).expect("a re-encoded state decodes");
        assert_eq!(again, st);
        // One flipped bit anywhere before the checksum line is caught.
        if let Some(body) = enc.len().checked_sub(1) {
            let i = data.len() % body.max(1);
            let mut bad = enc.clone();
            bad[i] ^= 1 << (data.len() % 8);
            if let Ok(other) = ControllerState::decode(&bad) {
                assert_eq!(other, st, "a damaged state decoded as another state");
            }
        }
    }
});
