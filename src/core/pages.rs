//! The browser pages: the security headers every page carries, the dashboard's HTML shell, and,
//! behind the `pages` feature, the static files themselves for runtimes without static assets.
//!
//! On Workers the board, scripts, styles and API docs are Workers static assets (`public/`, see
//! `[assets]` in wrangler.toml) with their headers in `public/_headers`; the wasm carries none of
//! them. Spin has no static assets of its own, so its adapter enables `pages` and calls [`serve`],
//! which answers the same paths with the same bytes (embedded at compile time) and the same
//! headers. A unit test keeps `public/_headers` and the constants here in agreement.

use http::{HeaderMap, HeaderValue, StatusCode, header};

/// Policy of the board and the dashboard: nothing but this origin, no inline script or style.
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Policy of the API docs: Swagger UI sets `style` attributes, so inline *styles* are allowed
/// there; scripts still come only from this origin.
pub const DOCS_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

/// `Referrer-Policy` of every page: questions never leak through a referrer.
pub const REFERRER_POLICY: &str = "no-referrer";

/// The dashboard's page: a shell whose script reads `GET /dashboard` as JSON and draws it.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Adds the security headers of a page with content security policy `csp`.
pub fn add_security_headers(headers: &mut HeaderMap, csp: &'static str) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static(REFERRER_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// `GET /dashboard` for a browser: the HTML page (its numbers are fetched by `/dashboard.js`).
#[must_use]
pub fn dashboard_page() -> http::Response<Vec<u8>> {
    page(DASHBOARD_HTML.as_bytes(), "text/html; charset=utf-8", PAGE_CSP, "no-store")
}

/// Whether a request's `Accept` header prefers HTML to JSON (a browser navigating to the page).
/// `*/*` alone, no header, or JSON at least as welcome as HTML all mean JSON.
#[must_use]
pub fn prefers_html(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let mut html = 0;
    let mut json = 0;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let quality = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .map_or(Some(1000), quality_thousandths)
            .unwrap_or(0);
        match media.as_str() {
            "text/html" | "application/xhtml+xml" => html = html.max(quality),
            "application/json" | "application/problem+json" => json = json.max(quality),
            _ => {}
        }
    }
    html > json
}

/// An RFC 9110 quality value (`0`, `0.8`, `1.000`) in thousandths, without pulling float
/// parsing into the wasm; `None` when malformed.
fn quality_thousandths(q: &str) -> Option<u16> {
    let (whole, fraction) = q.trim().split_once('.').unwrap_or((q.trim(), ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn page(
    body: &[u8],
    content_type: &'static str,
    csp: &'static str,
    cache: &'static str,
) -> http::Response<Vec<u8>> {
    let mut response = http::Response::new(body.to_vec());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    add_security_headers(headers, csp);
    response
}

#[cfg(feature = "pages")]
mod embedded {
    /// One static file: its URL path, content type, policy and bytes.
    pub(super) struct File {
        pub path: &'static str,
        pub content_type: &'static str,
        pub csp: &'static str,
        pub body: &'static [u8],
    }

    macro_rules! files {
        ($($path:literal => $file:literal, $type:literal, $csp:expr;)+) => {
            pub(super) const FILES: &[File] = &[
                $(File { path: $path, content_type: $type, csp: $csp, body: include_bytes!(concat!("../../public/", $file)) },)+
            ];
        };
    }

    use super::{DOCS_CSP, PAGE_CSP};

    // The same paths Workers static assets answer (`/` is index.html, `/api/docs` is docs.html).
    files! {
        "/" => "index.html", "text/html; charset=utf-8", PAGE_CSP;
        "/board.css" => "board.css", "text/css; charset=utf-8", PAGE_CSP;
        "/board.js" => "board.js", "text/javascript; charset=utf-8", PAGE_CSP;
        "/dashboard.css" => "dashboard.css", "text/css; charset=utf-8", PAGE_CSP;
        "/dashboard.js" => "dashboard.js", "text/javascript; charset=utf-8", PAGE_CSP;
        "/favicon.svg" => "favicon.svg", "image/svg+xml", PAGE_CSP;
        "/api/openapi.json" => "api/openapi.json", "application/json", PAGE_CSP;
        "/api/docs" => "api/docs.html", "text/html; charset=utf-8", DOCS_CSP;
        "/api/docs.js" => "api/docs.js", "text/javascript; charset=utf-8", PAGE_CSP;
        "/vendor/swagger-ui/swagger-ui-bundle.js" => "vendor/swagger-ui/swagger-ui-bundle.js", "text/javascript; charset=utf-8", PAGE_CSP;
        "/vendor/swagger-ui/swagger-ui.css" => "vendor/swagger-ui/swagger-ui.css", "text/css; charset=utf-8", PAGE_CSP;
    }
}

/// The static file a `GET` or `HEAD` request asks for (the board, its script and style, the docs
/// and their vendored Swagger UI, the `OpenAPI` document) as a 200 response with its content type
/// and security headers (no body for `HEAD`), or `None` for other methods and paths, which go on to
/// the API, as Workers static assets do.
#[cfg(feature = "pages")]
#[must_use]
pub fn serve<B>(request: &http::Request<B>) -> Option<http::Response<Vec<u8>>> {
    let head = request.method() == http::Method::HEAD;
    if request.method() != http::Method::GET && !head {
        return None;
    }
    let path = request.uri().path();
    let file = embedded::FILES.iter().find(|f| f.path == path)?;
    let mut page = page(file.body, file.content_type, file.csp, "public, max-age=0, must-revalidate");
    if head {
        page.body_mut().clear();
    }
    Some(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_html_and_clients_get_json() {
        let chromium = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8";
        assert!(prefers_html(Some(chromium)));
        assert!(prefers_html(Some("text/html")));
        assert!(!prefers_html(None));
        assert!(!prefers_html(Some("*/*")));
        assert!(!prefers_html(Some("application/json")));
        assert!(!prefers_html(Some("application/json, text/html")));
        assert!(!prefers_html(Some("text/html;q=0.5, application/json")));
        assert!(!prefers_html(Some("text/html;q=0")));
        assert!(prefers_html(Some("application/json;q=0.5, text/html;q=0.51")));
        assert!(!prefers_html(Some("text/html;q=2")), "a malformed quality counts as 0");
    }

    #[test]
    fn quality_values_parse_in_thousandths() {
        assert_eq!(quality_thousandths("1"), Some(1000));
        assert_eq!(quality_thousandths("1.000"), Some(1000));
        assert_eq!(quality_thousandths("0.8"), Some(800));
        assert_eq!(quality_thousandths("0.05"), Some(50));
        assert_eq!(quality_thousandths("0"), Some(0));
        assert_eq!(quality_thousandths("1.5"), None);
        assert_eq!(quality_thousandths("0.1234"), None);
        assert_eq!(quality_thousandths("x"), None);
    }

    #[test]
    fn dashboard_page_has_security_headers_and_no_inline_script() {
        let page = dashboard_page();
        let headers = page.headers();
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], PAGE_CSP);
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::REFERRER_POLICY], REFERRER_POLICY);
        let html = String::from_utf8(page.into_body()).expect("the page is UTF-8");
        for tag in html.split("<script").skip(1) {
            assert!(tag.trim_start().starts_with("src="), "inline script in the dashboard page: {tag}");
        }
        assert!(!html.contains("style="), "inline style in the dashboard page");
    }

    /// The Workers side (`public/_headers`) must send what the embedded side sends.
    #[test]
    fn public_headers_file_matches_the_constants() {
        let rules = parse_headers_file(include_str!("../../public/_headers"));
        let all = &rules["/*"];
        assert!(all.contains(&("Content-Security-Policy".into(), PAGE_CSP.into())));
        assert!(all.contains(&("X-Content-Type-Options".into(), "nosniff".into())));
        assert!(all.contains(&("Referrer-Policy".into(), REFERRER_POLICY.into())));
        assert!(all.contains(&("X-Frame-Options".into(), "DENY".into())));
        let docs = &rules["/api/docs"];
        assert!(docs.contains(&("!".into(), "Content-Security-Policy".into())));
        assert!(docs.contains(&("Content-Security-Policy".into(), DOCS_CSP.into())));
    }

    fn parse_headers_file(text: &str) -> std::collections::HashMap<String, Vec<(String, String)>> {
        let mut rules = std::collections::HashMap::new();
        let mut current = String::new();
        for line in text.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')) {
            if line.starts_with(char::is_whitespace) {
                let line = line.trim();
                let pair = if let Some(name) = line.strip_prefix('!') {
                    ("!".to_owned(), name.trim().to_owned())
                } else {
                    let (name, value) = line.split_once(':').expect("a header line is `Name: value`");
                    (name.trim().to_owned(), value.trim().to_owned())
                };
                rules.entry(current.clone()).or_insert_with(Vec::new).push(pair);
            } else {
                current = line.trim().to_owned();
            }
        }
        rules
    }

    #[cfg(feature = "pages")]
    fn get(path: &str) -> Option<http::Response<Vec<u8>>> {
        serve(&http::Request::get(path).body(()).expect("valid request"))
    }

    #[cfg(feature = "pages")]
    #[test]
    fn serve_answers_the_board_and_docs_with_their_headers() {
        let board = get("/").expect("the board is embedded");
        assert_eq!(board.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(board.headers()[header::CONTENT_SECURITY_POLICY], PAGE_CSP);
        assert!(String::from_utf8_lossy(board.body()).contains("board.js"));
        let docs = get("/api/docs").expect("the docs are embedded");
        assert_eq!(docs.headers()[header::CONTENT_SECURITY_POLICY], DOCS_CSP);
        let spec = get("/api/openapi.json").expect("the document is embedded");
        let spec: serde_json::Value = serde_json::from_slice(spec.body()).expect("the document is JSON");
        assert_eq!(spec["openapi"], "3.1.0");
        assert!(get("/dashboard").is_none());
        assert!(get("/nope").is_none());
    }

    #[cfg(feature = "pages")]
    #[test]
    fn head_gets_the_headers_without_the_body_and_other_methods_go_on_to_the_api() {
        let head = serve(&http::Request::head("/").body(()).expect("valid")).expect("HEAD of the board");
        assert!(head.body().is_empty());
        assert_eq!(head.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(serve(&http::Request::post("/").body(()).expect("valid")).is_none());
    }

    /// Every file in public/ that a page links to is embedded, and nothing embedded is missing.
    #[cfg(feature = "pages")]
    #[test]
    fn every_public_file_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("public");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).expect("read public/").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    on_disk.push(
                        path.strip_prefix(&root).expect("under public/").to_string_lossy().into_owned(),
                    );
                }
            }
        }
        let not_pages = [
            "_headers",
            "vendor/swagger-ui/LICENSE",
            "vendor/swagger-ui/NOTICE",
            "vendor/swagger-ui/swagger-ui-bundle.js.LICENSE.txt",
        ];
        for file in on_disk.iter().filter(|f| !not_pages.contains(&f.as_str())) {
            let url = match file.as_str() {
                "index.html" => "/".to_owned(),
                "api/docs.html" => "/api/docs".to_owned(),
                other => format!("/{other}"),
            };
            assert!(get(&url).is_some(), "public/{file} is not embedded for {url}");
        }
    }
}
