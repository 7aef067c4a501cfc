//! Webhook/long-poll update bodies as the worker reads them: JSON into
//! teloxide's `Update`, then `parse_update`. Never a panic; a file gets a
//! safe name and a MIME type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use teledrop_telegram::{Inbound, Update, parse_update};

fuzz_target!(|body: &[u8]| {
    let Ok(update) = serde_json::from_slice::<Update>(body) else {
        return;
    };
    if let Inbound::File(f) = parse_update(&update) {
        assert!(!f.file_name.is_empty() && !f.file_name.contains(['/', '\\']));
        assert!(!f.mime_type.is_empty());
    }
});
