//! Link tokens (the path of every download), object keys, byte sizes and
//! file names sent by Telegram users.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::str::FromStr;
use teledrop_core::file::sanitize_file_name;
use teledrop_core::{ByteSize, FileId, LinkToken, ObjectKey};

fuzz_target!(|s: &str| {
    if let Ok(t) = LinkToken::from_str(s) {
        assert_eq!(t.to_string(), s);
        assert_eq!(t.as_uuid().get_version_num(), 4);
    }
    if let Ok(id) = FileId::from_str(s) {
        assert_eq!(FileId::from_str(&id.to_string()).unwrap(), id);
    }
    if let Ok(k) = ObjectKey::from_str(s) {
        assert!(
            k.as_str()
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        );
    }
    let _ = ByteSize::from_str(s);
    let name = sanitize_file_name(s, "fallback");
    assert!(name.len() <= 200 || name == "fallback");
    assert!(!name.starts_with('.') && !name.contains(['/', '\\', '\0']));
    assert_eq!(sanitize_file_name(&name, "fallback"), name);
});
