//! Pieces shared by every response: security headers and the small HTML
//! pages people see instead of a file.

use http::{HeaderMap, HeaderValue, header};

/// Headers every answer of the link server carries.
pub(crate) fn security_headers(headers: &mut HeaderMap) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The token is in the URL: never send it on as a referrer.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert("x-robots-tag", HeaderValue::from_static("noindex, nofollow"));
}

/// A minimal, self-contained page. `title` and `message` are constants of
/// this crate, never user data, so they need no escaping.
pub(crate) fn html_page(title: &'static str, message: &'static str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<title>{title}</title>\n\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:15vh auto;padding:0 1rem;\
         color:#222;line-height:1.5}}h1{{font-size:1.5rem}}</style>\n</head>\n<body>\n\
         <h1>{title}</h1>\n<p>{message}</p>\n</body>\n</html>\n"
    )
}
