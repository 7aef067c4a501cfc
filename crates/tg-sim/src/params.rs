//! Bot API request parameters.
//!
//! The Bot API accepts parameters in the query string and in a body that
//! is `application/json`, `application/x-www-form-urlencoded` or
//! `multipart/form-data`. All of them end up in one map of name →
//! [`serde_json::Value`]: JSON bodies keep their types, every other source
//! gives strings, and the typed getters accept both (a number may arrive as
//! `5` or `"5"`, an object as an object or as a JSON string), as the real
//! server does.

use std::collections::HashMap;

use serde_json::Value;

/// Parsed parameters of one Bot API call.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, Value>);

/// The body could not be parsed.
#[derive(Debug)]
pub struct ParamsError(pub String);

impl Params {
    /// Parses the query string and the body according to its content type.
    pub fn parse(query: Option<&str>, content_type: Option<&str>, body: &[u8]) -> Result<Self, ParamsError> {
        let mut map = HashMap::new();
        if let Some(q) = query {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_str(q).map_err(|e| ParamsError(format!("bad query string: {e}")))?;
            for (k, v) in pairs {
                map.insert(k, Value::String(v));
            }
        }
        let ct = content_type.unwrap_or("").to_ascii_lowercase();
        if body.is_empty() {
            // Nothing to parse whatever the content type says.
        } else if ct.starts_with("application/json") {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(obj)) => map.extend(obj),
                Ok(_) => return Err(ParamsError("JSON body is not an object".into())),
                Err(e) => return Err(ParamsError(format!("can't parse JSON object: {e}"))),
            }
        } else if ct.starts_with("multipart/form-data") {
            let boundary = boundary_of(content_type.unwrap_or(""))
                .ok_or_else(|| ParamsError("multipart body without boundary".into()))?;
            for (name, value) in parse_multipart(body, &boundary)? {
                map.insert(name, Value::String(value));
            }
        } else {
            // Telegram treats an untyped body as a form, like curl -d does.
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_bytes(body).map_err(|e| ParamsError(format!("bad form body: {e}")))?;
            for (k, v) in pairs {
                map.insert(k, Value::String(v));
            }
        }
        Ok(Params(map))
    }

    /// Present and not JSON `null`.
    pub fn has(&self, name: &str) -> bool {
        self.0.get(name).is_some_and(|v| !v.is_null())
    }

    /// A parameter as a string: strings as they are, other JSON compactly.
    pub fn str(&self, name: &str) -> Option<String> {
        match self.0.get(name)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    /// An integer; `Err` when present but not an integer.
    pub fn i64(&self, name: &str) -> Result<Option<i64>, ()> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(()),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| ()),
            Some(_) => Err(()),
        }
    }

    /// A boolean: `true`/`false`, `1`/`0`, as JSON or as strings.
    pub fn bool(&self, name: &str) -> bool {
        match self.0.get(name) {
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) => n.as_i64().is_some_and(|n| n != 0),
            Some(Value::String(s)) => matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "1"),
            _ => false,
        }
    }

    /// A JSON object or array, given as JSON or as a JSON string.
    /// `Err` when a string is not valid JSON.
    pub fn json(&self, name: &str) -> Result<Option<Value>, ()> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => serde_json::from_str(s).map(Some).map_err(|_| ()),
            Some(v) => Ok(Some(v.clone())),
        }
    }
}

fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|part| {
        let (k, v) = part.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("boundary") {
            Some(v.trim().trim_matches('"').to_owned())
        } else {
            None
        }
    })
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > haystack.len() || needle.is_empty() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// A small multipart/form-data reader: enough for the text fields clients
/// send (files are read as lossy text; no method here takes an upload).
fn parse_multipart(body: &[u8], boundary: &str) -> Result<Vec<(String, String)>, ParamsError> {
    let delim = format!("--{boundary}");
    let mut fields = Vec::new();
    let mut pos = find(body, delim.as_bytes(), 0).ok_or_else(|| ParamsError("multipart: no boundary".into()))?;
    loop {
        pos += delim.len();
        if body[pos..].starts_with(b"--") {
            break;
        }
        // Skip the CRLF after the delimiter.
        let headers_start = find(body, b"\r\n", pos).ok_or_else(|| ParamsError("multipart: truncated".into()))? + 2;
        let headers_end =
            find(body, b"\r\n\r\n", headers_start).ok_or_else(|| ParamsError("multipart: truncated headers".into()))?;
        let headers = String::from_utf8_lossy(&body[headers_start..headers_end]);
        let content_start = headers_end + 4;
        let next = find(body, format!("\r\n{delim}").as_bytes(), content_start)
            .ok_or_else(|| ParamsError("multipart: missing closing boundary".into()))?;
        let name = headers.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            if !k.trim().eq_ignore_ascii_case("content-disposition") {
                return None;
            }
            v.split(';').find_map(|p| {
                let (pk, pv) = p.split_once('=')?;
                (pk.trim() == "name").then(|| pv.trim().trim_matches('"').to_owned())
            })
        });
        if let Some(name) = name {
            fields.push((name, String::from_utf8_lossy(&body[content_start..next]).into_owned()));
        }
        pos = next + 2;
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_text_fields() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"url\"\r\n\r\nhttp://x/y\r\n--XyZ\r\nContent-Disposition: form-data; name=\"max_connections\"\r\nContent-Type: text/plain\r\n\r\n5\r\n--XyZ--\r\n";
        let p = Params::parse(None, Some("multipart/form-data; boundary=XyZ"), body).unwrap();
        assert_eq!(p.str("url").as_deref(), Some("http://x/y"));
        assert_eq!(p.i64("max_connections"), Ok(Some(5)));
    }

    #[test]
    fn json_and_query_mix() {
        let p = Params::parse(
            Some("offset=3"),
            Some("application/json"),
            br#"{"chat_id":"12","b":true,"m":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(p.i64("offset"), Ok(Some(3)));
        assert_eq!(p.i64("chat_id"), Ok(Some(12)));
        assert!(p.bool("b"));
        assert_eq!(p.json("m").unwrap().unwrap()["a"], 1);
    }
}
