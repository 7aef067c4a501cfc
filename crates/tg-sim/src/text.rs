//! Message text: entities of incoming texts and `parse_mode` of outgoing.
//!
//! Incoming (user → bot): Telegram marks every `/command` (optionally
//! `@botname`) that starts a word with a `bot_command` entity; offsets and
//! lengths count UTF-16 code units, which is easy to get wrong, so the
//! simulator computes them for the tests.
//!
//! Outgoing (bot → user): with `parse_mode` the server strips the markup
//! and stores plain text; length limits apply to that plain text. Markup
//! errors answer `Bad Request: can't parse entities: …` like Telegram —
//! MarkdownV2's reserved characters in particular are a classic bug, so
//! they are checked. The parsers are small approximations of Telegram's.

use serde_json::{Value, json};

fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// `bot_command` entities for `text`.
pub fn command_entities(text: &str) -> Vec<Value> {
    let mut entities = Vec::new();
    let mut prev: Option<char> = None;
    let mut iter = text.char_indices().peekable();
    while let Some((start, c)) = iter.next() {
        let word_start = prev.is_none_or(char::is_whitespace);
        prev = Some(c);
        if c != '/' || !word_start {
            continue;
        }
        let mut end = start + 1;
        let mut name_len = 0;
        let mut seen_at = false;
        while let Some(&(i, ch)) = iter.peek() {
            let ok = ch.is_ascii_alphanumeric() || ch == '_' || (ch == '@' && !seen_at && name_len > 0);
            if !ok {
                break;
            }
            if ch == '@' {
                seen_at = true;
            } else if !seen_at {
                name_len += 1;
            }
            end = i + ch.len_utf8();
            prev = Some(ch);
            iter.next();
        }
        if (1..=32).contains(&name_len) {
            entities.push(json!({
                "type": "bot_command",
                "offset": utf16_len(&text[..start]),
                "length": utf16_len(&text[start..end]),
            }));
        }
    }
    entities
}

/// Length of a message text as Telegram counts it (UTF-16 code units).
pub fn telegram_len(text: &str) -> usize {
    utf16_len(text)
}

/// Strips the markup of `parse_mode` from `text`.
/// `Err` carries the full error description.
pub fn parse(text: &str, parse_mode: Option<&str>) -> Result<String, String> {
    let res = match parse_mode.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => return Ok(text.to_owned()),
        Some("html") => html(text),
        Some("markdownv2") => markdown(text, true),
        Some("markdown") => markdown(text, false),
        Some(_) => return Err("Bad Request: unsupported parse_mode".to_owned()),
    };
    res.map_err(|e| format!("Bad Request: can't parse entities: {e}"))
}

fn markdown(text: &str, v2: bool) -> Result<String, String> {
    const RESERVED: &str = "_*[]()~`>#+-=|{}.!";
    let bytes: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = String::with_capacity(text.len());
    // Open entities: (marker, byte offset where it started).
    let mut open: Vec<(&'static str, usize)> = Vec::new();
    let mut i = 0;
    let at = |i: usize| bytes.get(i).map(|&(_, c)| c);
    let starts = |i: usize, s: &str| text[bytes.get(i).map_or(text.len(), |b| b.0)..].starts_with(s);
    let mut line_start = true;
    while i < bytes.len() {
        let (off, c) = bytes[i];
        let was_line_start = line_start;
        line_start = c == '\n';
        if c == '\\' && (v2 || at(i + 1).is_some_and(|n| "_*`[".contains(n))) {
            match at(i + 1) {
                Some(n) if (n as u32) < 127 => {
                    out.push(n);
                    i += 2;
                    continue;
                }
                _ if v2 => {
                    return Err("Character '\\' is reserved and must be escaped with the preceding '\\'".to_owned());
                }
                _ => {}
            }
        }
        // Code and pre: content is literal up to the closing backticks.
        if c == '`' {
            let fence = if starts(i, "```") { "```" } else { "`" };
            let body_start = i + fence.chars().count();
            let mut j = body_start;
            let mut found = None;
            while j < bytes.len() {
                if v2 && bytes[j].1 == '\\' {
                    j += 2;
                    continue;
                }
                if starts(j, fence) {
                    found = Some(j);
                    break;
                }
                j += 1;
            }
            let Some(end) = found else {
                return Err(format!("Can't find end of the entity starting at byte offset {off}"));
            };
            let mut k = body_start;
            if fence == "```" {
                // Optional language name on the first line.
                while k < end && bytes[k].1 != '\n' && !bytes[k].1.is_whitespace() {
                    k += 1;
                }
                if k < end && bytes[k].1 == '\n' {
                    k += 1;
                } else {
                    k = body_start;
                }
            }
            while k < end {
                if v2 && bytes[k].1 == '\\' && k + 1 < end {
                    k += 1;
                }
                out.push(bytes[k].1);
                k += 1;
            }
            i = end + fence.chars().count();
            continue;
        }
        if c == '[' {
            // Inline link: [text](url); the text may hold other entities.
            open.push(("]", off));
            i += 1;
            continue;
        }
        if c == ']' && open.last().is_some_and(|o| o.0 == "]") {
            open.pop();
            if at(i + 1) == Some('(') {
                let mut j = i + 2;
                while j < bytes.len() && bytes[j].1 != ')' {
                    j += if v2 && bytes[j].1 == '\\' { 2 } else { 1 };
                }
                if j >= bytes.len() {
                    return Err(format!("Can't find end of a URL at byte offset {}", bytes[i + 1].0));
                }
                i = j + 1;
            } else {
                i += 1;
            }
            continue;
        }
        let marker: Option<&'static str> = match c {
            '*' => Some("*"),
            '_' if v2 && starts(i, "__") => Some("__"),
            '_' => Some("_"),
            '~' if v2 => Some("~"),
            '|' if v2 && starts(i, "||") => Some("||"),
            _ => None,
        };
        if let Some(m) = marker {
            if open.last().is_some_and(|o| o.0 == m) {
                open.pop();
            } else if !v2 && !open.is_empty() {
                // Legacy Markdown does not nest.
                return Err(format!(
                    "Can't find end of the entity starting at byte offset {}",
                    open[0].1
                ));
            } else {
                open.push((m, off));
            }
            i += m.len();
            continue;
        }
        if v2 && c == '>' && was_line_start {
            i += 1;
            continue;
        }
        if v2 && RESERVED.contains(c) {
            return Err(format!(
                "Character '{c}' is reserved and must be escaped with the preceding '\\'"
            ));
        }
        out.push(c);
        i += 1;
    }
    if let Some((_, off)) = open.first() {
        return Err(format!("Can't find end of the entity starting at byte offset {off}"));
    }
    Ok(out)
}

fn html(text: &str) -> Result<String, String> {
    const TAGS: &[&str] = &[
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
    ];
    let mut out = String::with_capacity(text.len());
    let mut stack: Vec<String> = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(pos) = rest.find(['<', '&']) {
        out.push_str(&rest[..pos]);
        let at = offset + pos;
        let tail = &rest[pos..];
        let consumed;
        if tail.starts_with('&') {
            let end = tail[..tail.len().min(12)].find(';');
            let decoded = end.and_then(|e| {
                let name = &tail[1..e];
                let ch = match name {
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "amp" => Some('&'),
                    "quot" => Some('"'),
                    n if n.starts_with("#x") => u32::from_str_radix(&n[2..], 16).ok().and_then(char::from_u32),
                    n if n.starts_with('#') => n[1..].parse().ok().and_then(char::from_u32),
                    _ => None,
                };
                ch.map(|c| (c, e + 1))
            });
            match decoded {
                Some((c, len)) => {
                    out.push(c);
                    consumed = len;
                }
                None => {
                    // Unknown entities stay as written, like Telegram does.
                    out.push('&');
                    consumed = 1;
                }
            }
        } else {
            let Some(end) = tail.find('>') else {
                return Err(format!("Unclosed start tag at byte offset {at}"));
            };
            let inner = &tail[1..end];
            let closing = inner.starts_with('/');
            let name = inner
                .trim_start_matches('/')
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            if !TAGS.contains(&name.as_str()) {
                let kind = if closing { "end" } else { "start" };
                return Err(format!("Unsupported {kind} tag \"{name}\" at byte offset {at}"));
            }
            if closing {
                if stack.pop().as_deref() != Some(name.as_str()) {
                    return Err(format!("Unmatched end tag at byte offset {at}, expected \"</{name}>\""));
                }
            } else {
                stack.push(name);
            }
            consumed = end + 1;
        }
        rest = &tail[consumed..];
        offset = at + consumed;
    }
    out.push_str(rest);
    if let Some(tag) = stack.last() {
        return Err(format!("Can't find end tag corresponding to start tag \"{tag}\""));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_count_utf16() {
        let e = command_entities("/start@teledrop_bot x");
        assert_eq!(e, vec![json!({"type":"bot_command","offset":0,"length":19})]);
        let e = command_entities("😀 /help me");
        assert_eq!(e, vec![json!({"type":"bot_command","offset":3,"length":5})]);
        assert!(command_entities("a/b").is_empty());
        assert!(command_entities("/").is_empty());
    }

    #[test]
    fn markdown_v2() {
        assert_eq!(
            parse(r"*bold* and \. done\!", Some("MarkdownV2")).unwrap(),
            "bold and . done!"
        );
        assert!(
            parse("file.txt", Some("MarkdownV2"))
                .unwrap_err()
                .contains("Character '.' is reserved")
        );
        assert_eq!(
            parse("[link](http://x/y) `a.b`", Some("MarkdownV2")).unwrap(),
            "link a.b"
        );
        assert!(parse("*open", Some("MarkdownV2")).is_err());
        assert_eq!(parse("file.txt *b*", Some("Markdown")).unwrap(), "file.txt b");
    }

    #[test]
    fn html_mode() {
        assert_eq!(
            parse("<b>a</b> &lt;3 &amp; <a href=\"x\">l</a>", Some("HTML")).unwrap(),
            "a <3 & l"
        );
        assert!(parse("<x>a</x>", Some("HTML")).is_err());
        assert!(parse("<b>a", Some("HTML")).is_err());
    }
}
