//! Fuzz target: `ResumeKey::verify` on raw tokens and on arbitrary header/claims signed
//! with the server's resume key or a foreign one. Checks and input layout:
//! `bedside_fuzz::tokens`.

#![no_main]

use bedside_fuzz::tokens::{Keys, check_resume};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static KEYS: LazyLock<Keys> = LazyLock::new(Keys::new);

fuzz_target!(|data: &[u8]| check_resume(&KEYS, data));
