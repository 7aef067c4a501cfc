//! The Bot API methods, driven by teloxide (the real client) where it can
//! and by raw HTTP where the wire format itself is under test.

mod common;

use std::time::Duration;

use common::{DEADLINE, bot, eventually, http, method_url, sim};
use serde_json::{Value, json};
use teloxide::payloads::{EditMessageTextSetters, GetUpdatesSetters, SendMessageSetters, SetWebhookSetters};
use teloxide::prelude::*;
use teloxide::types::{
    BotCommand, CallbackQueryId, ChatAction, InlineKeyboardButton, InlineKeyboardMarkup, MessageId, ParseMode,
    ReplyParameters, UpdateKind,
};
use teloxide::{ApiError, RequestError};
use tg_sim::{Faults, FileSpec, Force429};

const USER: i64 = 4242;

#[tokio::test]
async fn get_me_describes_the_bot() {
    let sim = sim().await;
    let me = bot(&sim).get_me().await.expect("getMe");
    assert_eq!(me.id.0 as i64, sim.config().bot_id());
    assert!(me.is_bot);
    assert_eq!(me.username(), "teledrop_test_bot");
    sim.shutdown().await;
}

#[tokio::test]
async fn get_updates_confirms_with_offset() {
    let sim = sim().await;
    let bot = bot(&sim);
    let ctl = sim.control();
    let a = ctl.send_text(USER, "/start").await.unwrap();
    let b = ctl.send_text(USER, "hello").await.unwrap();
    let c = ctl.send_text(USER + 1, "other chat").await.unwrap();
    assert!(a.update_id < b.update_id && b.update_id < c.update_id);

    let updates = bot.get_updates().await.expect("getUpdates");
    let ids: Vec<i64> = updates.iter().map(|u| i64::from(u.id.0)).collect();
    assert_eq!(ids, vec![a.update_id, b.update_id, c.update_id]);
    let UpdateKind::Message(first) = &updates[0].kind else {
        panic!("not a message: {:?}", updates[0])
    };
    assert_eq!(first.text(), Some("/start"));
    assert_eq!(first.chat.id.0, USER);
    assert_eq!(first.id.0 as i64, a.message_id);
    let entity = &first.entities().expect("command entity")[0];
    assert_eq!((entity.offset, entity.length), (0, 6));

    // Without an offset nothing is confirmed; limit applies.
    let again = bot.get_updates().limit(2).await.unwrap();
    assert_eq!(again.len(), 2);
    // Offset = last + 1 confirms all.
    let rest = bot.get_updates().offset((c.update_id + 1) as i32).await.unwrap();
    assert!(rest.is_empty());
    assert_eq!(ctl.status().await.unwrap().pending_updates, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn long_poll_wakes_on_new_update() {
    let sim = sim().await;
    let bot = bot(&sim);
    let ctl = sim.control();
    let poll = tokio::spawn({
        let bot = bot.clone();
        async move { bot.get_updates().timeout(15).await }
    });
    eventually("getUpdates is waiting", || async {
        (ctl.status().await.unwrap().waiting_get_updates == 1).then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    let sent = ctl.send_text(USER, "wake up").await.unwrap();
    let updates = tokio::time::timeout(DEADLINE, poll)
        .await
        .expect("poll returned")
        .unwrap()
        .unwrap();
    assert_eq!(updates.len(), 1);
    assert_eq!(i64::from(updates[0].id.0), sent.update_id);
    // Far below the 15 s poll timeout: it woke on the update.
    assert!(started.elapsed() < Duration::from_secs(10));
    sim.shutdown().await;
}

#[tokio::test]
async fn newer_get_updates_terminates_older() {
    let sim = sim().await;
    let bot = bot(&sim);
    let ctl = sim.control();
    let first = tokio::spawn({
        let bot = bot.clone();
        async move { bot.get_updates().timeout(15).await }
    });
    eventually("first poll waiting", || async {
        (ctl.status().await.unwrap().waiting_get_updates == 1).then_some(())
    })
    .await;
    let second = bot.get_updates().timeout(0).await.unwrap();
    assert!(second.is_empty());
    let err = first.await.unwrap().expect_err("superseded");
    assert!(
        matches!(err, RequestError::Api(ApiError::TerminatedByOtherGetUpdates)),
        "{err:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn webhook_settings_round_trip_and_block_get_updates() {
    let sim = sim().await;
    let bot = bot(&sim);
    // teloxide sends setWebhook as multipart/form-data.
    let url: url::Url = "http://127.0.0.1:9/hook".parse().unwrap();
    bot.set_webhook(url.clone())
        .secret_token("s3cr3t_-X".to_owned())
        .max_connections(7)
        .await
        .expect("setWebhook");
    let info = bot.get_webhook_info().await.expect("getWebhookInfo");
    assert_eq!(info.url.as_ref(), Some(&url));
    assert_eq!(info.max_connections, Some(7));
    assert!(!info.has_custom_certificate);

    let err = bot.get_updates().await.expect_err("409 while a webhook is set");
    match err {
        RequestError::Api(ApiError::Unknown(text)) => assert_eq!(
            text,
            "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
        ),
        other => panic!("unexpected {other:?}"),
    }

    let bad = bot
        .set_webhook(url)
        .secret_token("has space".to_owned())
        .await
        .expect_err("bad secret");
    assert!(
        matches!(&bad, RequestError::Api(ApiError::Unknown(t)) if t == "Bad Request: secret token contains unallowed characters"),
        "{bad:?}"
    );

    bot.delete_webhook().await.expect("deleteWebhook");
    let info = bot.get_webhook_info().await.unwrap();
    assert_eq!(info.url, None);
    bot.get_updates().await.expect("getUpdates works again");
    sim.shutdown().await;
}

#[tokio::test]
async fn send_and_edit_messages() {
    let sim = sim().await;
    let bot = bot(&sim);
    let ctl = sim.control();
    let hello = ctl.send_text(USER, "hi").await.unwrap();
    let keyboard = InlineKeyboardMarkup::new([[InlineKeyboardButton::callback("Delete", "del:1")]]);
    let sent = bot
        .send_message(ChatId(USER), "Working on it")
        .reply_parameters(ReplyParameters::new(MessageId(hello.message_id as i32)))
        .reply_markup(keyboard.clone())
        .await
        .expect("sendMessage");
    assert_eq!(sent.text(), Some("Working on it"));
    assert_eq!(sent.reply_markup(), Some(&keyboard));
    assert!(sent.from.as_ref().is_some_and(|u| u.is_bot));
    assert_eq!(
        sent.id.0 as i64,
        hello.message_id + 1,
        "message ids are shared per chat"
    );

    let edited = bot
        .edit_message_text(ChatId(USER), sent.id, "Done: *link*")
        .parse_mode(ParseMode::MarkdownV2)
        .await
        .expect("editMessageText");
    assert_eq!(edited.text(), Some("Done: link"));

    let same = bot
        .edit_message_text(ChatId(USER), sent.id, "Done: link")
        .await
        .expect_err("not modified");
    assert!(
        matches!(same, RequestError::Api(ApiError::MessageNotModified)),
        "{same:?}"
    );
    let missing = bot
        .edit_message_text(ChatId(USER), MessageId(9999), "x")
        .await
        .expect_err("missing");
    assert!(
        matches!(missing, RequestError::Api(ApiError::MessageToEditNotFound)),
        "{missing:?}"
    );

    bot.edit_message_reply_markup(ChatId(USER), sent.id)
        .reply_markup(keyboard.clone())
        .await
        .expect("markup");
    let again = bot
        .edit_message_reply_markup(ChatId(USER), sent.id)
        .reply_markup(keyboard)
        .await
        .expect_err("markup not modified");
    assert!(
        matches!(again, RequestError::Api(ApiError::MessageNotModified)),
        "{again:?}"
    );

    let log = ctl.messages(USER).await.unwrap();
    let m = &log.messages[0];
    assert_eq!(m.history, vec!["Working on it", "Done: link"]);
    assert_eq!(m.text, "Done: link");
    assert_eq!(m.reply_to_message_id, Some(hello.message_id));
    assert!(m.reply_markup.is_some());

    bot.delete_message(ChatId(USER), sent.id).await.expect("deleteMessage");
    let gone = bot
        .delete_message(ChatId(USER), sent.id)
        .await
        .expect_err("already deleted");
    assert!(
        matches!(gone, RequestError::Api(ApiError::MessageToDeleteNotFound)),
        "{gone:?}"
    );
    let log = ctl.messages(USER).await.unwrap();
    assert!(log.messages[0].deleted);
    assert!(log.last().is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn send_message_errors_match_telegram() {
    let sim = sim().await;
    let bot = bot(&sim);
    sim.control().send_text(USER, "hi").await.unwrap();

    let e = bot.send_message(ChatId(777), "x").await.unwrap_err();
    assert!(matches!(e, RequestError::Api(ApiError::ChatNotFound)), "{e:?}");
    let e = bot.send_message(ChatId(USER), "  ").await.unwrap_err();
    assert!(matches!(e, RequestError::Api(ApiError::MessageTextIsEmpty)), "{e:?}");
    let e = bot.send_message(ChatId(USER), "x".repeat(4097)).await.unwrap_err();
    assert!(matches!(e, RequestError::Api(ApiError::MessageIsTooLong)), "{e:?}");
    bot.send_message(ChatId(USER), "é".repeat(4096))
        .await
        .expect("4096 characters fit");
    let e = bot
        .send_message(ChatId(USER), "file.txt")
        .parse_mode(ParseMode::MarkdownV2)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RequestError::Api(ApiError::CantParseEntities(t)) if t.contains("Character '.' is reserved")),
        "{e:?}"
    );
    let e = bot
        .send_message(ChatId(USER), "x")
        .reply_parameters(ReplyParameters::new(MessageId(5000)))
        .await
        .unwrap_err();
    assert!(
        matches!(e, RequestError::Api(ApiError::MessageToReplyNotFound)),
        "{e:?}"
    );

    sim.control()
        .set_faults(Faults {
            blocked_chats: vec![USER],
            ..Faults::default()
        })
        .await
        .unwrap();
    let e = bot.send_message(ChatId(USER), "x").await.unwrap_err();
    assert!(matches!(e, RequestError::Api(ApiError::BotBlocked)), "{e:?}");

    // Missing parameters, over the wire.
    let body: Value = http()
        .post(method_url(&sim, "sendMessage"))
        .form(&[("text", "x")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 400, "description": "Bad Request: chat_id is empty"})
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn chat_actions_callbacks_and_commands() {
    let sim = sim().await;
    let bot = bot(&sim);
    let ctl = sim.control();
    ctl.send_text(USER, "hi").await.unwrap();
    bot.send_chat_action(ChatId(USER), ChatAction::UploadDocument)
        .await
        .expect("sendChatAction");

    let keyboard = InlineKeyboardMarkup::new([[InlineKeyboardButton::callback("OK", "ok")]]);
    let m = bot
        .send_message(ChatId(USER), "Press")
        .reply_markup(keyboard)
        .await
        .unwrap();
    let pressed = ctl.send_callback(USER, m.id.0 as i64, "ok").await.unwrap();
    let updates = bot.get_updates().await.unwrap();
    let UpdateKind::CallbackQuery(q) = &updates.last().unwrap().kind else {
        panic!("{:?}", updates.last())
    };
    assert_eq!(q.data.as_deref(), Some("ok"));
    assert_eq!(q.id.0, pressed.callback_query_id.clone().unwrap());
    bot.answer_callback_query(q.id.clone())
        .text("Deleted")
        .await
        .expect("answerCallbackQuery");
    let e = bot
        .answer_callback_query(CallbackQueryId("nope".into()))
        .await
        .unwrap_err();
    assert!(matches!(e, RequestError::Api(ApiError::InvalidQueryId)), "{e:?}");

    let log = ctl
        .wait_for(USER, DEADLINE, |l| {
            !l.callback_answers.is_empty() && !l.chat_actions.is_empty()
        })
        .await
        .unwrap();
    assert_eq!(log.chat_actions, vec!["upload_document"]);
    assert_eq!(log.callback_answers[0].text.as_deref(), Some("Deleted"));

    let commands = vec![BotCommand::new("start", "Start"), BotCommand::new("help", "Help")];
    bot.set_my_commands(commands.clone()).await.expect("setMyCommands");
    assert_eq!(bot.get_my_commands().await.unwrap(), commands);
    let e = bot
        .set_my_commands([BotCommand::new("Bad Command", "x")])
        .await
        .unwrap_err();
    assert!(matches!(e, RequestError::Api(ApiError::Unknown(_))), "{e:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn wait_for_sees_changes_and_reports_the_last_log_on_deadline() {
    let sim = sim().await;
    let bot = bot(&sim);
    let ctl = sim.control();
    ctl.send_text(USER, "hi").await.unwrap();
    let waiter = tokio::spawn({
        let ctl = ctl.clone();
        async move {
            ctl.wait_for(USER, DEADLINE, |l| l.last().is_some_and(|m| m.text == "second"))
                .await
        }
    });
    bot.send_message(ChatId(USER), "first").await.unwrap();
    bot.send_message(ChatId(USER), "second").await.unwrap();
    let log = waiter.await.unwrap().unwrap();
    assert_eq!(log.messages.len(), 2);

    let err = ctl
        .wait_for(USER, Duration::from_millis(100), |l| l.messages.len() > 5)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("second"), "{text}");
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_token_and_unknown_method() {
    let sim = sim().await;
    let wrong = teloxide::Bot::new("123456789:wrong").set_api_url(sim.base_url());
    let e = wrong.get_me().await.unwrap_err();
    assert!(matches!(e, RequestError::Api(ApiError::InvalidToken)), "{e:?}");

    let resp = http().get(method_url(&sim, "noSuchMethod")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 404, "description": "Not Found"})
    );

    let resp = http()
        .get(format!("{}bot123:nope/getMe", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn method_names_are_case_insensitive_and_all_encodings_parse() {
    let sim = sim().await;
    sim.control().send_text(USER, "hi").await.unwrap();
    let client = http();
    let body: Value = client
        .get(method_url(&sim, "GETME"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["ok"], true);
    assert_eq!(body["result"]["is_bot"], true);

    let q: Value = client
        .get(format!(
            "{}?chat_id={USER}&text=via%20query",
            method_url(&sim, "sendmessage")
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(q["result"]["text"], "via query");
    let f: Value = client
        .post(method_url(&sim, "sendMessage"))
        .form(&[("chat_id", USER.to_string()), ("text", "via form".into())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(f["result"]["text"], "via form");
    let j: Value = client
        .post(method_url(&sim, "sendMessage"))
        .json(&json!({"chat_id": USER, "text": "via json"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(j["result"]["text"], "via json");
    assert_eq!(
        j["result"]["chat"],
        json!({"id": USER, "type": "private", "first_name": "User4242", "username": "user4242"})
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_429_and_5xx() {
    let sim = sim().await;
    let bot = bot(&sim);
    let ctl = sim.control();
    ctl.set_faults(Faults {
        force_429: Some(Force429 {
            method: Some("getMe".into()),
            retry_after: 7,
            count: 2,
        }),
        ..Faults::default()
    })
    .await
    .unwrap();
    let e = bot.get_me().await.unwrap_err();
    assert!(matches!(e, RequestError::RetryAfter(s) if s.seconds() == 7), "{e:?}");
    let resp = http().get(method_url(&sim, "getMe")).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 7",
               "parameters": {"retry_after": 7}})
    );
    bot.get_me().await.expect("count used up");
    assert_eq!(ctl.faults().await.unwrap().force_429.unwrap().count, 0);

    // teloxide sleeps 10 s after any 5xx, so this one is checked raw.
    ctl.set_faults(Faults {
        error_rate_5xx: 1.0,
        ..Faults::default()
    })
    .await
    .unwrap();
    let resp = http().get(method_url(&sim, "getMe")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 502, "description": "Bad Gateway"})
    );

    ctl.set_faults(Faults {
        latency: [("getme".to_owned(), Duration::from_millis(300))].into_iter().collect(),
        ..Faults::default()
    })
    .await
    .unwrap();
    let started = std::time::Instant::now();
    bot.get_me().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    sim.shutdown().await;
}

#[tokio::test]
async fn teloxide_parses_every_generated_update() {
    let sim = sim().await;
    let bot = bot(&sim);
    let ctl = sim.control();
    let specs = vec![
        FileSpec::document(USER, 1000, 1)
            .named("report.pdf")
            .with_caption("/save this"),
        FileSpec::video(USER, 2_000_000, 2),
        FileSpec::audio(USER, 300_000, 3),
        FileSpec::voice(USER, 20_000, 4),
        FileSpec::animation(USER, 50_000, 5),
        FileSpec::video_note(USER, 80_000, 6),
        FileSpec::photo(USER, 200_000, 7),
        FileSpec::sticker(USER, 30_000, 8),
        FileSpec::document(USER, 10, 9).forwarded(),
    ];
    let mut sent = Vec::new();
    for s in specs {
        sent.push(ctl.send_file(s).await.unwrap());
    }
    let album = ctl
        .send_album(
            USER,
            vec![FileSpec::photo(USER, 5000, 10), FileSpec::video(USER, 6000, 11)],
        )
        .await
        .unwrap();
    let raw_id = ctl
        .send_raw_update(json!({"some_future_update": {"x": 1}}))
        .await
        .unwrap();

    // teloxide keeps only `animation`; Telegram also sends the file as `document`.
    let raw: Value = http()
        .get(method_url(&sim, "getUpdates"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let anim = &raw["result"][4]["message"];
    assert_eq!(anim["document"]["file_unique_id"], anim["animation"]["file_unique_id"]);
    assert_eq!(anim["document"]["file_id"], anim["animation"]["file_id"]);

    let updates = bot.get_updates().await.unwrap();
    assert_eq!(updates.len(), 12);
    let msgs: Vec<&teloxide::types::Message> = updates
        .iter()
        .filter_map(|u| match &u.kind {
            UpdateKind::Message(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(msgs.len(), 11, "every injected message parses: {updates:#?}");
    let doc = msgs[0].document().unwrap();
    assert_eq!(doc.file_name.as_deref(), Some("report.pdf"));
    assert_eq!(doc.mime_type.as_ref().map(|m| m.essence_str()), Some("application/pdf"));
    assert_eq!(doc.file.id.0, sent[0].file_id);
    assert_eq!(doc.file.unique_id.0, sent[0].file_unique_id);
    assert_eq!(doc.file.size, 1000);
    assert_eq!(msgs[0].caption(), Some("/save this"));
    assert!(msgs[1].video().is_some());
    assert!(msgs[2].audio().is_some());
    assert!(msgs[3].voice().is_some());
    assert!(msgs[4].animation().is_some());
    assert!(msgs[5].video_note().is_some());
    let photo = msgs[6].photo().unwrap();
    assert_eq!(photo.len(), 4);
    assert_eq!(photo.last().unwrap().file.id.0, sent[6].file_id);
    assert_eq!(photo.last().unwrap().file.size, 200_000);
    assert!(msgs[7].sticker().is_some());
    assert!(msgs[8].forward_origin().is_some());
    assert_eq!(msgs[9].media_group_id(), msgs[10].media_group_id());
    assert!(msgs[9].media_group_id().is_some());
    assert_eq!(msgs[10].video().unwrap().file.id.0, album[1].file_id);
    assert_eq!(i64::from(updates[11].id.0), raw_id);
    assert!(matches!(updates[11].kind, UpdateKind::Error(_)));
    sim.shutdown().await;
}
