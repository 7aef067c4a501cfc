//! Bot API methods about messages and the bot itself: getMe,
//! sendMessage, editMessageText, editMessageReplyMarkup, deleteMessage,
//! sendChatAction, answerCallbackQuery and the command list methods.
//!
//! What the bot does lands in the chat's [`crate::ChatLog`]; the JSON of
//! each bot message is kept too so edits answer with the full object.

use serde_json::{Value, json};

use crate::inject::now_secs;
use crate::params::Params;
use crate::reply::{ApiError, ApiResult, ok};
use crate::state::{Chat, Inner, State};
use crate::text;
use crate::types::{BotMessage, CallbackAnswer};

const MAX_TEXT: usize = 4096;

pub fn get_me(inner: &Inner) -> ApiResult {
    let mut me = inner.bot_user();
    me["can_join_groups"] = json!(true);
    me["can_read_all_group_messages"] = json!(false);
    me["supports_inline_queries"] = json!(false);
    me["can_connect_to_business"] = json!(false);
    me["has_main_web_app"] = json!(false);
    ok(me)
}

/// The `chat_id` parameter as a number.
fn chat_id(p: &Params) -> Result<i64, ApiError> {
    match p.i64("chat_id") {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(ApiError::bad("chat_id is empty")),
        // "@channelname": there are no channels here.
        Err(()) => Err(ApiError::chat_not_found()),
    }
}

/// The chat a call targets: must exist, and must not have blocked the bot.
fn target_chat<'a>(st: &'a mut State, p: &Params) -> Result<&'a mut Chat, ApiError> {
    let id = chat_id(p)?;
    if !st.chats.contains_key(&id) {
        return Err(ApiError::chat_not_found());
    }
    if st.faults.blocked_chats.contains(&id) {
        return Err(ApiError::blocked());
    }
    Ok(st.chats.get_mut(&id).expect("checked above"))
}

fn message_id(p: &Params) -> Result<i64, ApiError> {
    match p.i64("message_id") {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(ApiError::bad("message identifier is not specified")),
        Err(()) => Err(ApiError::bad("message identifier is not specified")),
    }
}

fn reply_markup(p: &Params) -> Result<Option<Value>, ApiError> {
    match p.json("reply_markup") {
        Ok(Some(v)) if v.is_object() => Ok(Some(v)),
        Ok(None) => Ok(None),
        _ => Err(ApiError::bad("can't parse reply keyboard markup JSON object")),
    }
}

/// Text after `parse_mode`, checked for emptiness; `too_long` is the
/// error for over-long texts (it differs between send and edit).
fn message_text(p: &Params, too_long: &str) -> Result<String, ApiError> {
    let raw = p.str("text").unwrap_or_default();
    let plain = text::parse(&raw, p.str("parse_mode").as_deref()).map_err(|d| ApiError::new(400, d))?;
    if plain.trim().is_empty() {
        return Err(ApiError::bad("message text is empty"));
    }
    if text::telegram_len(&plain) > MAX_TEXT {
        return Err(ApiError::bad(too_long));
    }
    Ok(plain)
}

/// The message object Telegram returns for a bot message.
fn message_json(inner: &Inner, chat: &Chat, m: &BotMessage, date: i64, edit_date: Option<i64>) -> Value {
    let mut v = json!({
        "message_id": m.message_id,
        "from": inner.bot_user(),
        "chat": chat.chat,
        "date": date,
        "text": m.text,
    });
    if let Some(e) = edit_date {
        v["edit_date"] = json!(e);
    }
    // Only inline keyboards come back in `Message.reply_markup`.
    if let Some(markup) = m.reply_markup.as_ref().filter(|r| r.get("inline_keyboard").is_some()) {
        v["reply_markup"] = markup.clone();
    }
    if let Some(r) = m.reply_to_message_id {
        if let Some(orig) = chat.user_messages.get(&r) {
            v["reply_to_message"] = orig.clone();
        } else if let Some(orig) = chat.log.messages.iter().find(|x| x.message_id == r) {
            v["reply_to_message"] =
                json!({"message_id": r, "from": inner.bot_user(), "chat": chat.chat, "date": date, "text": orig.text});
        }
    }
    v
}

fn message_exists(chat: &Chat, id: i64) -> bool {
    chat.user_messages.contains_key(&id) || chat.log.messages.iter().any(|m| m.message_id == id && !m.deleted)
}

pub fn send_message(inner: &Inner, p: &Params) -> ApiResult {
    let result = {
        let mut st = inner.lock();
        let chat = target_chat(&mut st, p)?;
        let text = message_text(p, "message is too long")?;
        let markup = reply_markup(p)?;
        let (reply_to, allow_without) = match p.json("reply_parameters") {
            Ok(Some(rp)) => (
                rp.get("message_id").and_then(Value::as_i64),
                rp.get("allow_sending_without_reply")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            ),
            Ok(None) => (
                p.i64("reply_to_message_id").ok().flatten(),
                p.bool("allow_sending_without_reply"),
            ),
            Err(()) => return Err(ApiError::bad("can't parse reply parameters JSON object")),
        };
        let reply_to = match reply_to {
            Some(r) if message_exists(chat, r) => Some(r),
            Some(_) if allow_without => None,
            Some(_) => return Err(ApiError::bad("message to be replied not found")),
            None => None,
        };
        let message_id = chat.alloc_message_id();
        let m = BotMessage {
            message_id,
            text: text.clone(),
            reply_markup: markup,
            history: vec![text],
            deleted: false,
            reply_to_message_id: reply_to,
        };
        let json = message_json(inner, chat, &m, now_secs(), None);
        chat.log.messages.push(m);
        chat.touch();
        json
    };
    inner.notify_chats();
    ok(result)
}

/// Finds the bot's message for an edit, with Telegram's errors.
fn editable(chat: &mut Chat, id: i64) -> Result<&mut BotMessage, ApiError> {
    if chat.user_messages.contains_key(&id) {
        return Err(ApiError::bad("message can't be edited"));
    }
    chat.log
        .messages
        .iter_mut()
        .find(|m| m.message_id == id && !m.deleted)
        .ok_or_else(|| ApiError::bad("message to edit not found"))
}

fn not_modified() -> ApiError {
    ApiError::bad(
        "message is not modified: specified new message content and reply markup are exactly the same as a \
         current content and reply markup of the message",
    )
}

fn inline_only(p: &Params) -> Result<(), ApiError> {
    if !p.has("chat_id") && p.has("inline_message_id") {
        // Inline messages do not exist in this simulator.
        return Err(ApiError::bad("MESSAGE_ID_INVALID"));
    }
    Ok(())
}

pub fn edit_message_text(inner: &Inner, p: &Params) -> ApiResult {
    inline_only(p)?;
    let result = {
        let mut st = inner.lock();
        let chat = target_chat(&mut st, p)?;
        let id = message_id(p)?;
        let text = message_text(p, "MESSAGE_TOO_LONG")?;
        // Like Telegram, an edit without reply_markup removes the keyboard.
        let markup = reply_markup(p)?;
        let m = editable(chat, id)?;
        if m.text == text && m.reply_markup == markup {
            return Err(not_modified());
        }
        if m.text != text {
            m.history.push(text.clone());
        }
        m.text = text;
        m.reply_markup = markup;
        let m = m.clone();
        chat.touch();
        message_json(inner, chat, &m, now_secs(), Some(now_secs()))
    };
    inner.notify_chats();
    ok(result)
}

pub fn edit_message_reply_markup(inner: &Inner, p: &Params) -> ApiResult {
    inline_only(p)?;
    let result = {
        let mut st = inner.lock();
        let chat = target_chat(&mut st, p)?;
        let id = message_id(p)?;
        let markup = reply_markup(p)?;
        let m = editable(chat, id)?;
        if m.reply_markup == markup {
            return Err(not_modified());
        }
        m.reply_markup = markup;
        let m = m.clone();
        chat.touch();
        message_json(inner, chat, &m, now_secs(), Some(now_secs()))
    };
    inner.notify_chats();
    ok(result)
}

pub fn delete_message(inner: &Inner, p: &Params) -> ApiResult {
    {
        let mut st = inner.lock();
        let chat = target_chat(&mut st, p)?;
        let id = message_id(p)?;
        if chat.user_messages.remove(&id).is_none() {
            let m = chat
                .log
                .messages
                .iter_mut()
                .find(|m| m.message_id == id && !m.deleted)
                .ok_or_else(|| ApiError::bad("message to delete not found"))?;
            m.deleted = true;
            chat.touch();
        }
    }
    inner.notify_chats();
    ok(json!(true))
}

pub fn send_chat_action(inner: &Inner, p: &Params) -> ApiResult {
    const ACTIONS: &[&str] = &[
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    ];
    {
        let mut st = inner.lock();
        let chat = target_chat(&mut st, p)?;
        let action = p.str("action").unwrap_or_default();
        if !ACTIONS.contains(&action.as_str()) {
            return Err(ApiError::bad("wrong parameter action in request"));
        }
        chat.log.chat_actions.push(action);
        chat.touch();
    }
    inner.notify_chats();
    ok(json!(true))
}

pub fn answer_callback_query(inner: &Inner, p: &Params) -> ApiResult {
    {
        let mut st = inner.lock();
        let id = p.str("callback_query_id").unwrap_or_default();
        let Some(chat_id) = st.callbacks.remove(&id) else {
            return Err(ApiError::bad(
                "query is too old and response timeout expired or query id is invalid",
            ));
        };
        if let Some(chat) = st.chats.get_mut(&chat_id) {
            chat.log.callback_answers.push(CallbackAnswer {
                callback_query_id: id,
                text: p.str("text"),
                show_alert: p.bool("show_alert"),
            });
            chat.touch();
        }
    }
    inner.notify_chats();
    ok(json!(true))
}

/// Key of a command list: scope type (+ chat/user) and language.
fn commands_key(p: &Params) -> String {
    let scope = p
        .json("scope")
        .ok()
        .flatten()
        .map(|s| s.to_string())
        .unwrap_or_else(|| "default".into());
    let scope = if scope == r#"{"type":"default"}"# {
        "default".to_owned()
    } else {
        scope
    };
    format!("{scope}|{}", p.str("language_code").unwrap_or_default())
}

pub fn set_my_commands(inner: &Inner, p: &Params) -> ApiResult {
    let commands = match p.json("commands") {
        Ok(Some(Value::Array(a))) => a,
        Ok(None) => return Err(ApiError::bad("parameter \"commands\" is required")),
        _ => return Err(ApiError::bad("can't parse commands JSON object")),
    };
    for c in &commands {
        let name = c.get("command").and_then(Value::as_str).unwrap_or("");
        let valid = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(ApiError::bad("BOT_COMMAND_INVALID"));
        }
        let desc = c.get("description").and_then(Value::as_str).unwrap_or("");
        if !(1..=256).contains(&desc.chars().count()) {
            return Err(ApiError::bad("command description is empty"));
        }
    }
    inner.lock().commands.insert(commands_key(p), Value::Array(commands));
    ok(json!(true))
}

pub fn get_my_commands(inner: &Inner, p: &Params) -> ApiResult {
    let list = inner.lock().commands.get(&commands_key(p)).cloned();
    ok(list.unwrap_or_else(|| json!([])))
}

pub fn delete_my_commands(inner: &Inner, p: &Params) -> ApiResult {
    inner.lock().commands.remove(&commands_key(p));
    ok(json!(true))
}
