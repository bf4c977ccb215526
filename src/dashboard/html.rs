//! The page frame and the escaping every page goes through (docs/dashboard.md §2): one stylesheet
//! inline, no external resource of any kind, a navigation bar, and a two-line script that reloads
//! the overview while a cycle runs (the pages are complete without it).

use std::fmt::Write;

use actix_web::http::header;
use actix_web::HttpResponse;

/// Text made safe for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A rate as a percentage with one decimal, or `–`.
pub fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "–".into(), |r| format!("{:.1}%", r * 100.0))
}

/// A heat-map cell background for a success rate: red (0) through yellow to green (1).
pub fn heat(rate: f64) -> String {
    let hue = (rate.clamp(0.0, 1.0) * 120.0).round();
    format!("hsl({hue},70%,80%)")
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}\
nav{background:#1d2b3a;padding:8px 16px}nav a{color:#cfe;margin-right:16px;text-decoration:none}\
nav a.on{color:#fff;font-weight:bold}main{padding:16px;max-width:1200px}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}\
th{background:#eef}td.l,th.l{text-align:left}.bar{background:#ddd;width:400px;height:18px;display:inline-block}\
.bar span{background:#4a8;height:18px;display:block}.muted{color:#777}h2{margin-top:24px}\
svg{background:#fff;border:1px solid #ddd}";

/// The pages, for the navigation bar: (path, title).
const NAV: [(&str, &str); 4] = [
    ("/", "Overview"),
    ("/leaderboard", "Leaderboard"),
    ("/pareto", "Pareto"),
    ("/weights", "Weights"),
];

/// A whole page; `reload` adds a script that refreshes it every 5 s (the page works without it).
pub fn page(title: &str, active: &str, body: &str, reload: bool) -> HttpResponse {
    let mut nav = String::new();
    for (path, name) in NAV {
        let class = if path == active { " class=\"on\"" } else { "" };
        let _ = write!(nav, "<a href=\"{path}\"{class}>{name}</a>");
    }
    let script = if reload {
        "<script>setTimeout(function(){location.reload()},5000)</script>"
    } else {
        ""
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{} · kinitro</title>\
         <style>{STYLE}</style></head><body><nav>{nav}</nav><main><h1>{}</h1>{body}</main>{script}</body></html>",
        esc(title),
        esc(title)
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        // The data behind every page changes at most every few seconds (docs/api.md §1.3).
        .insert_header((header::CACHE_CONTROL, "public, max-age=5"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'self' data:",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(html)
}

/// A page saying what is missing (e.g. no completed cycle yet), with status 200 so the frame shows.
pub fn empty(title: &str, active: &str, message: &str) -> HttpResponse {
    page(
        title,
        active,
        &format!("<p class=\"muted\" id=\"empty\">{}</p>", esc(message)),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_every_html_metacharacter() {
        assert_eq!(
            esc(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(heat(0.0), "hsl(0,70%,80%)");
        assert_eq!(heat(1.0), "hsl(120,70%,80%)");
        assert_eq!(percent(Some(0.5)), "50.0%");
    }
}
