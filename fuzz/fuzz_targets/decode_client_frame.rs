//! Fuzz target: `ClientMsg::decode` on arbitrary frame bytes, and the signal round trip
//! through `protocol::encode`. Checks: see `bedside_fuzz::frames`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bedside_fuzz::frames::check_bytes(data));
