//! Property tests of update parsing, as the worker does it with a body the
//! webhook or long polling received: JSON into `Update`, then
//! `parse_update`. Arbitrary bytes and updates with random fields never
//! panic; a file always comes out with a safe name and a MIME type.
//!
//! A bounded run (see `config`) is part of `cargo test`; set
//! `PROPTEST_CASES` for a longer one. The coverage-guided targets of the
//! same parser are in `fuzz/` (`scripts/fuzz.sh`).

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use teledrop_telegram::{Command, Inbound, Update, parse_update};

/// `cases` unless `PROPTEST_CASES` asks for another number.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An integer field as Telegram might send it, or not.
fn int() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0i64..1_000_000).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any_json(),
    ]
}

fn text() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => ".{0,30}".prop_map(Value::from),
        1 => "/[a-zA-Z_]{0,8}(@[a-z_]{0,8})?( .{0,8})?".prop_map(Value::from),
        1 => any_json(),
    ]
}

/// A file's metadata with the usual fields, each sometimes odd or missing.
fn file_meta() -> impl Strategy<Value = Value> {
    (
        text(),
        text(),
        int(),
        prop_oneof![Just(None), text().prop_map(Some)],
        prop_oneof![Just(None), text().prop_map(Some)],
        int(),
        int(),
        int(),
    )
        .prop_map(|(id, unique, size, name, mime, w, h, d)| {
            let mut m = json!({
                "file_id": id, "file_unique_id": unique, "file_size": size,
                "width": w, "height": h, "duration": d, "length": w,
            });
            if let Some(name) = name {
                m["file_name"] = name;
            }
            if let Some(mime) = mime {
                m["mime_type"] = mime;
            }
            m
        })
}

/// A message update near what Telegram sends: the usual envelope with one
/// or two kinds of content and random extra fields.
fn update_json() -> impl Strategy<Value = Value> {
    let kind = prop::sample::select(vec![
        "document",
        "video",
        "audio",
        "voice",
        "video_note",
        "animation",
        "photo",
        "text",
        "sticker",
        "caption",
        "edited_message",
    ]);
    (
        int(),
        int(),
        int(),
        prop::bool::weighted(0.9),
        any::<bool>(),
        prop::collection::vec((kind, file_meta(), text()), 0..3),
        prop::collection::btree_map("[a-z_]{1,12}", any_json(), 0..3),
        prop::sample::select(vec!["message", "edited_message", "channel_post", "callback_query"]),
    )
        .prop_map(|(update_id, chat, user, has_from, is_bot, contents, extra, field)| {
            let mut message = json!({
                "message_id": user, "date": 1_700_000_000,
                "chat": {"id": chat, "type": "private", "first_name": "A"},
            });
            if has_from {
                message["from"] = json!({"id": user, "is_bot": is_bot, "first_name": "A"});
            }
            for (kind, meta, text) in contents {
                message[kind] = match kind {
                    "photo" => json!([meta.clone(), meta]),
                    "text" | "caption" => text,
                    _ => meta,
                };
            }
            for (k, v) in extra {
                message[k] = v;
            }
            json!({"update_id": update_id, field: message})
        })
}

fn check(update: &Update) -> Result<(), TestCaseError> {
    match parse_update(update) {
        Inbound::File(f) => {
            prop_assert!(!f.file_name.is_empty());
            prop_assert!(!f.file_name.contains(['/', '\\', '\0']), "{:?}", f.file_name);
            prop_assert!(!f.file_name.starts_with('.'), "{:?}", f.file_name);
            prop_assert!(f.file_name.len() <= 200);
            prop_assert!(!f.mime_type.is_empty());
        }
        Inbound::Command {
            command: Command::Other(name),
            ..
        } => prop_assert_eq!(name.to_ascii_lowercase(), name),
        _ => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(update) = serde_json::from_slice::<Update>(&body) {
            check(&update)?;
        }
    }

    #[test]
    fn arbitrary_json_never_panics(value in any_json()) {
        if let Ok(update) = serde_json::from_value::<Update>(value) {
            check(&update)?;
        }
    }

    #[test]
    fn near_valid_updates_never_panic(value in update_json()) {
        let body = serde_json::to_vec(&value).unwrap();
        if let Ok(update) = serde_json::from_slice::<Update>(&body) {
            check(&update)?;
        }
    }
}
