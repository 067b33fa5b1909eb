//! The aggregator's web pages and its history API: plain HTML rendered on the server,
//! with no script, no build step and nothing fetched from elsewhere, so that it works
//! offline behind the operator's proxy.
//!
//! - `/`: the latest run (as `/runs/{id}`).
//! - `/runs`: the runs, newest first, fifty a page (`?before=ID` pages back).
//! - `/runs/{id}`: a run's heatmap (each cell links to its path's page), its findings,
//!   the regions that reported and those that did not, links to the runs before and
//!   after it, and when the next run is expected.
//! - `/paths/{source}/{target}?kind=K`: the path's smoke chart over the runs kept, its
//!   latest figures and its recent findings.
//! - `GET /v1/history?source=&target=` or `?region=` (`&kind=`, `&since=`): the series
//!   as `latmap.history/1` JSON, what `latmap history URL` draws.
//!
//! Every name and message from outside is escaped for HTML ([`xml`]). With
//! `--auth-reads`, these pages and the read API need the token like a push does: a
//! bearer token, or HTTP Basic auth with the token as the password (browsers ask for
//! it).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::extract::{Param, Params};
use super::{State, error, load, resolve};
use crate::config::ProbeKind;
use crate::history::Point;
use crate::history::doc::{Doc, PathSeries, Selection};
use crate::render::escape::xml;
use crate::render::heatmap::{Options, Order, View, heatmap_svg};
use crate::render::smoke;
use crate::run::{Run, Severity};

/// Runs per page of `/runs`.
const PAGE: usize = 50;
/// Findings a path's page lists.
const RECENT_FINDINGS: usize = 20;

use crate::render::escape::url_segment as seg;

fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · latmap</title><style>{STYLE}</style></head>\n<body>\n\
         <nav><a href=\"/\">latest run</a> · <a href=\"/runs\">runs</a></nav>\n{body}\n</body></html>\n",
        xml(title)
    );
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'",
                ),
            ),
        ],
        html,
    )
        .into_response()
}

const STYLE: &str = "body{font-family:DejaVu Sans,Arial,sans-serif;margin:1.5em;color:#222}\
nav{margin-bottom:1em}table{border-collapse:collapse;margin:.5em 0}\
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}\
.critical{color:#b00020;font-weight:bold}.warning{color:#b35c00;font-weight:bold}\
.missing{color:#b00020}figure{margin:0;overflow-x:auto}";

fn not_found_page(message: &str) -> Response {
    let mut r = page(
        "not found",
        &format!("<h1>Not found</h1><p>{}</p>", xml(message)),
    );
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

/// `/`: the latest run's page, or a word on what to do when there is none.
pub(super) async fn index(AxumState(state): AxumState<Arc<State>>) -> Response {
    match resolve(&state, "latest") {
        Ok(id) => run_page_of(&state, id).await,
        Err(_) => page(
            "no run yet",
            "<h1>latmap</h1><p>No run has been assembled yet. Agents push their region \
             reports to this server (<code>latmap agent --aggregator URL</code>); a run \
             appears here once the first sweep's reports arrive.</p>",
        ),
    }
}

/// `/runs/{id}`.
pub(super) async fn run_page(
    AxumState(state): AxumState<Arc<State>>,
    Param(id): Param<String>,
) -> Response {
    match resolve(&state, &id) {
        Ok(id) => run_page_of(&state, id).await,
        Err(_) => not_found_page(&format!(
            "There is no run {:?}; the runs page lists those kept.",
            id.chars().take(60).collect::<String>()
        )),
    }
}

async fn run_page_of(state: &Arc<State>, id: String) -> Response {
    state
        .gated(&state.drawings, run_page_drawn(state, id))
        .await
}

async fn run_page_drawn(state: &Arc<State>, id: String) -> Response {
    let run = match load(state, &id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (before, after, epochs) = {
        let index = state.index_read();
        let before = index
            .range(..id.clone())
            .next_back()
            .map(|(k, _)| k.clone());
        let after = index
            .range(id.clone()..)
            .map(|(k, _)| k)
            .find(|k| **k != id && state.plausible(k))
            .cloned();
        let epochs: Vec<DateTime<Utc>> = index
            .keys()
            .rev()
            .filter(|k| state.plausible(k))
            .take(11)
            .filter_map(|k| super::parse_run_id(k))
            .collect();
        (before, after, epochs)
    };
    let drawn = tokio::task::spawn_blocking(move || {
        let opts = Options {
            view: View::Rtt,
            order: Order::Config,
            kind: None,
            baseline: None,
            links: Some("/paths/"),
        };
        let svg = heatmap_svg(&run, &opts).map_err(|e| e.to_string());
        (run, svg)
    })
    .await;
    let (run, svg) = match drawn {
        Ok(x) => x,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Run <code>{}</code></h1><p>Started {} · {} paths · {} findings</p>",
        xml(&run.id),
        run.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        run.paths.len(),
        run.anomalies.len()
    );
    body.push_str("<p>");
    if let Some(b) = &before {
        let _ = write!(
            body,
            "<a rel=\"prev\" href=\"/runs/{}\">← earlier run</a> ",
            seg(b)
        );
    }
    if let Some(a) = &after {
        let _ = write!(
            body,
            "<a rel=\"next\" href=\"/runs/{}\">later run →</a> ",
            seg(a)
        );
    }
    let _ = write!(
        body,
        "<a href=\"/v1/runs/{0}\">run.json</a> · <a href=\"/v1/runs/{0}/report.md\">report.md</a></p>",
        seg(&run.id)
    );
    body.push_str(&next_due(&epochs, Utc::now(), state.settings.deadline));
    regions_html(&run, &mut body);
    match svg {
        Ok(svg) => {
            body.push_str("<h2>RTT p50</h2><p>Each cell links to its path's history.</p><figure id=\"heatmap\">");
            // The heatmap escapes every name itself; its XML prolog, if any, is not HTML.
            body.push_str(svg.trim_start_matches(|c| c != '<'));
            body.push_str("</figure>");
        }
        Err(e) => {
            let _ = write!(body, "<p>No heatmap: {}</p>", xml(&e));
        }
    }
    findings_html(&run, &mut body);
    page(&format!("run {}", run.id), &body)
}

/// When the next run is expected: the spacing of the latest runs carried on. The
/// schedule lives in the agents, so the server goes by what it sees. It is overdue
/// once `grace` (the assembly deadline) has passed too.
fn next_due(epochs: &[DateTime<Utc>], now: DateTime<Utc>, grace: std::time::Duration) -> String {
    if epochs.len() < 2 {
        return "<p>Next run: not known until two runs have arrived.</p>".into();
    }
    let mut gaps: Vec<i64> = epochs
        .windows(2)
        .map(|w| (w[0] - w[1]).num_seconds())
        .filter(|g| *g > 0)
        .collect();
    if gaps.is_empty() {
        return String::new();
    }
    gaps.sort_unstable();
    let gap = gaps[gaps.len() / 2];
    let next = epochs[0] + chrono::TimeDelta::seconds(gap);
    let every = humantime::format_duration(std::time::Duration::from_secs(gap as u64));
    if next + chrono::TimeDelta::from_std(grace).unwrap_or_default() >= now {
        format!(
            "<p id=\"next-run\">Next run expected at {} (runs have come every {every}).</p>",
            next.format("%Y-%m-%d %H:%M:%S UTC")
        )
    } else {
        let late = humantime::format_duration(std::time::Duration::from_secs(
            (now - next).num_seconds().max(0) as u64,
        ));
        format!(
            "<p id=\"next-run\" class=\"warning\">The next run was expected at {} (runs have come \
             every {every}) and has not been assembled: {late} overdue. Check the agents, and the \
             server's log.</p>",
            next.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

fn regions_html(run: &Run, body: &mut String) {
    let (reported, missing): (Vec<_>, Vec<_>) = run.regions.iter().partition(|r| r.reported);
    let list = |v: &[&crate::run::RunRegion]| {
        v.iter()
            .map(|r| xml(&r.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = write!(
        body,
        "<h2>Regions</h2><p id=\"reported\">Reported ({}): {}</p>",
        reported.len(),
        list(&reported)
    );
    if missing.is_empty() {
        body.push_str("<p id=\"missing\">Every region reported.</p>");
    } else {
        let _ = write!(
            body,
            "<p id=\"missing\" class=\"missing\">No report ({}): {}</p>",
            missing.len(),
            list(&missing)
        );
    }
}

fn findings_html(run: &Run, body: &mut String) {
    let _ = write!(body, "<h2>Findings ({})</h2>", run.anomalies.len());
    if run.anomalies.is_empty() {
        body.push_str("<p>None.</p>");
        return;
    }
    body.push_str("<table id=\"findings\"><tr><th>severity</th><th>detector</th><th>kind</th><th>subject</th><th>message</th></tr>");
    for a in &run.anomalies {
        let subject = match &a.subject {
            crate::run::Subject::Path { source, target } => format!(
                "<a href=\"/paths/{}/{}?kind={}\">{}</a>",
                seg(source),
                seg(target),
                a.kind,
                xml(&a.subject.to_string())
            ),
            other => xml(&other.to_string()),
        };
        let _ = write!(
            body,
            "<tr><td class=\"{0}\">{0}</td><td>{1}</td><td>{2}</td><td>{subject}</td><td>{3}",
            a.severity,
            a.detector,
            a.kind,
            xml(&a.message)
        );
        if !a.explains.is_empty() {
            body.push_str("<ul>");
            for x in &a.explains {
                let _ = write!(
                    body,
                    "<li>{} {}: {}</li>",
                    x.detector,
                    xml(&x.subject.to_string()),
                    xml(&x.message)
                );
            }
            body.push_str("</ul>");
        }
        body.push_str("</td></tr>");
    }
    body.push_str("</table>");
}

/// `/runs`: newest first, a page at a time.
pub(super) async fn runs_page(
    AxumState(state): AxumState<Arc<State>>,
    Params(q): Params<BTreeMap<String, String>>,
) -> Response {
    let ids: Vec<String> = {
        let index = state.index_read();
        let upto = q.get("before").cloned();
        index
            .keys()
            .rev()
            .filter(|k| upto.as_ref().is_none_or(|u| *k < u))
            .take(PAGE + 1)
            .cloned()
            .collect()
    };
    let mut body = String::from("<h1>Runs</h1>");
    if ids.is_empty() {
        body.push_str("<p>No run kept.</p>");
        return page("runs", &body);
    }
    body.push_str("<table id=\"runs\"><tr><th>run</th><th>started (UTC)</th><th>regions reported</th><th>paths</th><th>findings</th></tr>");
    for id in ids.iter().take(PAGE) {
        let listing = state.index_read().get(id).cloned().flatten();
        let listing = match listing {
            Some(l) => Some(l),
            None => {
                let state = state.clone();
                let id = id.clone();
                tokio::task::spawn_blocking(move || state.load_listing(&id))
                    .await
                    .ok()
                    .flatten()
            }
        };
        match listing {
            Some(l) => {
                let _ = write!(
                    body,
                    "<tr><td><a href=\"/runs/{}\">{}</a></td><td>{}</td><td>{} of {}</td><td>{}</td><td>{}</td></tr>",
                    seg(id),
                    xml(id),
                    l.epoch.format("%Y-%m-%d %H:%M:%S"),
                    l.reported.len(),
                    l.regions.len(),
                    l.paths,
                    l.anomalies
                );
            }
            None => {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td colspan=\"4\">being assembled</td></tr>",
                    xml(id)
                );
            }
        }
    }
    body.push_str("</table>");
    if ids.len() > PAGE {
        let _ = write!(
            body,
            "<p><a rel=\"next\" href=\"/runs?before={}\">older runs →</a></p>",
            seg(&ids[PAGE - 1])
        );
    }
    page("runs", &body)
}

/// `?kind=` of the path pages and the history API.
#[allow(clippy::result_large_err)]
fn kind_of(q: &BTreeMap<String, String>) -> Result<Option<ProbeKind>, Response> {
    match q.get("kind") {
        None => Ok(None),
        Some(k) => k.parse().map(Some).map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown kind {:?}; use icmp, udp or tcp",
                    k.chars().take(20).collect::<String>()
                ),
            )
        }),
    }
}

/// The selected paths' history ([`History::select`](crate::history::History::select))
/// on a blocking thread; `Err` is a response (no history kept, or a store error).
#[allow(clippy::result_large_err)]
async fn series(
    state: &Arc<State>,
    which: Selection,
    kind: Option<ProbeKind>,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<(PathSeries, Vec<Point>)>, Response> {
    let state = state.clone();
    let read = tokio::task::spawn_blocking(move || {
        let Some(h) = state.history.as_ref() else {
            return Err(
                "this server keeps no history (its history file could not be opened; see its log)"
                    .to_string(),
            );
        };
        h.select(&which, kind, since).map_err(|e| e.to_string())
    })
    .await;
    match read {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!("history: {e}");
            Err(error(StatusCode::SERVICE_UNAVAILABLE, e))
        }
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// `GET /v1/history`.
pub(super) async fn history_json(
    AxumState(state): AxumState<Arc<State>>,
    Params(q): Params<BTreeMap<String, String>>,
) -> Response {
    let kind = match kind_of(&q) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let since = match q.get("since") {
        None => None,
        Some(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("since: {e}; give a UTC time like 2026-12-01T00:00:00Z"),
                );
            }
        },
    };
    let which = match (q.get("source"), q.get("target"), q.get("region")) {
        (Some(s), Some(t), None) => Selection::Path {
            source: s.clone(),
            target: t.clone(),
        },
        (None, None, Some(r)) => Selection::Region(r.clone()),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give source and target (one path) or region (its paths)",
            );
        }
    };
    let what = which.describe();
    let answer = async {
        match series(&state, which, kind, since).await {
            Ok(v) if v.is_empty() => error(
                StatusCode::NOT_FOUND,
                format!(
                    "no history of {}",
                    what.chars().take(200).collect::<String>()
                ),
            ),
            Ok(v) => (
                [(header::CONTENT_TYPE, "application/json")],
                Doc::new(v.into_iter().map(|(s, _)| s).collect()).to_json(),
            )
                .into_response(),
            Err(r) => r,
        }
    };
    state.gated(&state.drawings, answer).await
}

/// `/paths/{source}/{target}`.
pub(super) async fn path_page(
    AxumState(state): AxumState<Arc<State>>,
    Param((source, target)): Param<(String, String)>,
    Params(q): Params<BTreeMap<String, String>>,
) -> Response {
    let kind = match kind_of(&q) {
        Ok(k) => k,
        Err(r) => return r,
    };
    state
        .gated(
            &state.drawings,
            path_page_drawn(&state, source, target, kind),
        )
        .await
}

async fn path_page_drawn(
    state: &Arc<State>,
    source: String,
    target: String,
    kind: Option<ProbeKind>,
) -> Response {
    let which = Selection::Path {
        source: source.clone(),
        target: target.clone(),
    };
    let found = match series(state, which, kind, None).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let title = format!("{source} → {target}");
    if found.is_empty() {
        return not_found_page(&format!(
            "No history of {title}{}: it was never measured in the runs kept.",
            kind.map(|k| format!(" ({k})")).unwrap_or_default()
        ));
    }
    let drawn = tokio::task::spawn_blocking(move || {
        found
            .into_iter()
            .map(|(s, points)| {
                let svg = smoke::chart_svg(&s.key(), &points).map_err(|e| e.to_string());
                (s, points, svg)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let drawn = match drawn {
        Ok(d) => d,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut body = format!("<h1>{}</h1>", xml(&title));
    for (s, points, svg) in drawn {
        let _ = write!(body, "<h2>{} · {} runs</h2>", s.kind, points.len());
        match svg {
            Ok(svg) => {
                let _ = write!(body, "<figure class=\"smoke\" data-kind=\"{}\">", s.kind);
                body.push_str(svg.trim_start_matches(|c| c != '<'));
                body.push_str("</figure>");
            }
            Err(e) => {
                let _ = write!(body, "<p>No chart: {}</p>", xml(&e));
            }
        }
        latest_html(&s, &points, &mut body);
        recent_findings_html(&s, &mut body);
    }
    let _ = write!(
        body,
        "<p><a href=\"/v1/history?source={}&amp;target={}\">this history as JSON</a></p>",
        seg(&source),
        seg(&target)
    );
    page(&title, &body)
}

fn ms(us: u32) -> String {
    crate::anomaly::ms(f64::from(us) / 1000.0)
}

fn latest_html(s: &PathSeries, points: &[Point], body: &mut String) {
    let Some((p, doc)) = points.last().zip(s.points.last()) else {
        return;
    };
    let run = doc
        .run
        .as_deref()
        .map(|r| format!("<a href=\"/runs/{}\">{}</a>", seg(r), xml(r)))
        .unwrap_or_default();
    let _ = write!(
        body,
        "<table class=\"latest\"><tr><th>latest run</th><td>{run} ({})</td></tr>\
         <tr><th>answered</th><td>{} of {} ({})</td></tr>",
        p.at.format("%Y-%m-%d %H:%M:%S UTC"),
        p.received,
        p.sent,
        p.loss()
            .map(|l| format!("{:.1}% lost", l * 100.0))
            .unwrap_or_else(|| "nothing sent".into())
    );
    if let Some(q) = p.rtt_us {
        let _ = write!(
            body,
            "<tr><th>RTT</th><td>min {} · p50 {} · p95 {} · p99 {} · max {}</td></tr>",
            ms(q[0]),
            ms(q[1]),
            ms(q[3]),
            ms(q[4]),
            ms(q[5])
        );
    }
    if p.lagged {
        body.push_str(
            "<tr><th>prober</th><td class=\"warning\">lagged: this run was not judged</td></tr>",
        );
    }
    body.push_str("</table>");
}

fn recent_findings_html(s: &PathSeries, body: &mut String) {
    let with: Vec<_> = s
        .points
        .iter()
        .rev()
        .filter(|p| !p.findings.is_empty())
        .take(RECENT_FINDINGS)
        .collect();
    if with.is_empty() {
        body.push_str("<p>No findings on this path in the runs kept.</p>");
        return;
    }
    body.push_str("<table class=\"findings\"><tr><th>run</th><th>findings</th></tr>");
    for p in with {
        let run = p
            .run
            .as_deref()
            .map(|r| {
                format!(
                    "<a href=\"/runs/{}\">{}</a>",
                    seg(r),
                    p.at.format("%Y-%m-%d %H:%M:%S")
                )
            })
            .unwrap_or_else(|| p.at.format("%Y-%m-%d %H:%M:%S").to_string());
        let f: Vec<String> = p
            .findings
            .iter()
            .map(|f| {
                let class = if f.severity == Severity::Critical {
                    "critical"
                } else {
                    "warning"
                };
                format!(
                    "<span class=\"{class}\">{} {}</span>",
                    f.detector, f.severity
                )
            })
            .collect();
        let _ = write!(body, "<tr><td>{run}</td><td>{}</td></tr>", f.join(", "));
    }
    body.push_str("</table>");
}

/// With `--auth-reads`: every read needs the token, as a bearer token or as the
/// password of HTTP Basic auth (the user name is ignored), so a browser can ask for it.
pub(super) async fn reads_need_token(
    AxumState(state): AxumState<Arc<State>>,
    request: Request,
    next: Next,
) -> Response {
    let read = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if !state.settings.auth_reads || !read || request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let token = &state.settings.token;
    let headers = request.headers();
    // A bearer token as a push presents it, or the password of HTTP Basic auth.
    let ok = super::extract::check_token(headers, token).is_ok()
        || headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .and_then(|v| {
                v.get(..6)
                    .filter(|s| s.eq_ignore_ascii_case(b"basic "))
                    .map(|_| &v[6..])
            })
            .and_then(|b64| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(b64).ok()
            })
            .and_then(|d| {
                let colon = d.iter().position(|b| *b == b':')?;
                Some(token.matches(&d[colon + 1..]))
            })
            .unwrap_or(false);
    if ok {
        return next.run(request).await;
    }
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "this server needs its token to be read: Authorization: Bearer TOKEN, or Basic with the token as the password",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"latmap\", charset=\"UTF-8\""),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const G: std::time::Duration = std::time::Duration::from_secs(30);

    #[test]
    fn the_next_run_follows_the_spacing_of_the_last_ones() {
        let epochs = [
            t("2026-12-01T10:10:00Z"),
            t("2026-12-01T10:05:00Z"),
            t("2026-12-01T10:00:00Z"),
        ];
        let s = next_due(&epochs, t("2026-12-01T10:11:00Z"), G);
        assert!(
            s.contains("2026-12-01 10:15:00 UTC") && s.contains("every 5m"),
            "{s}"
        );
        assert!(!s.contains("overdue"), "{s}");
        let s = next_due(&epochs, t("2026-12-01T10:16:00Z"), G);
        assert!(s.contains("10:15:00") && s.contains("1m overdue"), "{s}");
        let s = next_due(&epochs, t("2026-12-01T10:15:20Z"), G);
        assert!(!s.contains("overdue"), "within the deadline: {s}");
        assert!(next_due(&epochs[..1], t("2026-12-01T10:11:00Z"), G).contains("not known"));
    }

    #[test]
    fn names_in_links_are_encoded() {
        assert_eq!(
            seg("Europe (Ireland)/x?&\"<"),
            "Europe%20%28Ireland%29%2Fx%3F%26%22%3C"
        );
        assert_eq!(seg("us-east-1"), "us-east-1");
    }
}
