//! The report of a run for people and programs: a summary of the matrix (regions,
//! paths, the slowest and lossiest paths) and the findings, most severe first, as
//! plain text for a terminal, Markdown for a pull-request comment, or JSON.
//!
//! Renders what the run holds; it runs no detector. The output depends only on the run.

use std::fmt::Write;

use serde::Serialize;

use crate::config::ProbeKind;
use crate::graph::LatencyGraph;
use crate::run::{Anomaly, Run, Severity, Unit};

use super::escape;

/// How many of the slowest and of the lossiest paths the summary lists.
pub const WORST: usize = 5;

/// Text width the terminal report wraps messages at.
const WIDTH: usize = 100;

/// An output format of `latmap report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Json,
}

/// The figures of the summary, shared by every format.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub run: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub regions: usize,
    /// Regions that sent no report ("no data").
    pub no_data: Vec<String>,
    /// Measured paths per probe kind (one per source, target and kind).
    pub paths: Vec<KindCount>,
    /// Paths on which nothing came back.
    pub unreachable: usize,
    pub slowest: Vec<WorstPath>,
    pub lossiest: Vec<WorstPath>,
    pub critical: usize,
    pub warning: usize,
}

#[derive(Debug, Serialize)]
pub struct KindCount {
    pub kind: ProbeKind,
    pub paths: usize,
}

/// One of the worst paths.
#[derive(Debug, Serialize)]
pub struct WorstPath {
    pub kind: ProbeKind,
    pub source: String,
    pub target: String,
    pub p50_us: Option<u64>,
    pub loss: Option<f64>,
}

impl Summary {
    pub fn of(run: &Run) -> Summary {
        let mut paths = Vec::new();
        let mut all = Vec::new();
        let mut unreachable = 0;
        for kind in LatencyGraph::kinds(run) {
            let g = LatencyGraph::new(run, kind);
            paths.push(KindCount {
                kind,
                paths: g.path_count(),
            });
            for (_, _, e) in g.paths() {
                if e.entry.sent > 0 && e.entry.received == 0 {
                    unreachable += 1;
                }
                all.push(WorstPath {
                    kind,
                    source: e.entry.source.clone(),
                    target: e.entry.target.clone(),
                    p50_us: e.entry.rtt_us.map(|r| r.p50),
                    loss: e.entry.loss,
                });
            }
        }
        let pick = |key: &dyn Fn(&WorstPath) -> Option<f64>| -> Vec<WorstPath> {
            let mut ranked: Vec<(f64, &WorstPath)> = all
                .iter()
                .filter_map(|p| key(p).filter(|v| *v > 0.0).map(|v| (v, p)))
                .collect();
            // Worst first; ties in run order (a stable sort keeps it).
            ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
            ranked
                .into_iter()
                .take(WORST)
                .map(|(_, p)| WorstPath {
                    kind: p.kind,
                    source: p.source.clone(),
                    target: p.target.clone(),
                    p50_us: p.p50_us,
                    loss: p.loss,
                })
                .collect()
        };
        let slowest = pick(&|p| p.p50_us.map(|v| v as f64));
        // Lossiest among paths that answered at all (unreachable ones are counted apart).
        let lossiest = pick(&|p| p.loss.filter(|_| p.p50_us.is_some()));
        let count = |s: Severity| run.anomalies.iter().filter(|a| a.severity == s).count();
        Summary {
            run: run.id.clone(),
            started_at: run.started_at,
            regions: run.regions.len(),
            no_data: run
                .regions
                .iter()
                .filter(|r| !r.reported)
                .map(|r| r.name.clone())
                .collect(),
            paths,
            unreachable,
            slowest,
            lossiest,
            critical: count(Severity::Critical),
            warning: count(Severity::Warning),
        }
    }

    fn several_kinds(&self) -> bool {
        self.paths.len() > 1
    }
}

/// The report of `run` in `format` (ends with a newline).
pub fn render(run: &Run, format: Format) -> String {
    let summary = Summary::of(run);
    match format {
        Format::Text => text(run, &summary),
        Format::Markdown => markdown(run, &summary),
        Format::Json => json(run, summary),
    }
}

fn path_label(p: &WorstPath, kinds: bool) -> String {
    if kinds {
        format!("{} → {} ({})", p.source, p.target, p.kind)
    } else {
        format!("{} → {}", p.source, p.target)
    }
}

fn when(s: &Summary) -> String {
    s.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn findings_line(s: &Summary) -> String {
    let n = s.critical + s.warning;
    if n == 0 {
        return "no findings: every path is within its thresholds".to_string();
    }
    format!(
        "{n} finding{}: {} critical, {} warning",
        if n == 1 { "" } else { "s" },
        s.critical,
        s.warning
    )
}

/// The line of counts; `name` escapes region names for the output format.
fn paths_line(s: &Summary, name: &dyn Fn(&str) -> String) -> String {
    let kinds: Vec<String> = s
        .paths
        .iter()
        .map(|k| format!("{} {} paths", k.paths, k.kind))
        .collect();
    let kinds = if kinds.is_empty() {
        "no paths".to_string()
    } else {
        kinds.join(", ")
    };
    let mut line = format!("{} regions, {kinds}", s.regions);
    if s.unreachable > 0 {
        let _ = write!(line, " ({} unreachable)", s.unreachable);
    }
    if !s.no_data.is_empty() {
        let names: Vec<String> = s.no_data.iter().map(|n| name(n)).collect();
        let _ = write!(line, "; no data from {}", names.join(", "));
    }
    line
}

/// The anomaly's measure against its limit: `8.6% ≥ 1.0%`, `3.16x > 3.00x`.
fn measure(a: &Anomaly) -> String {
    let rel = if a.value >= a.threshold { "≥" } else { "<" };
    format!(
        "{} {rel} {}",
        a.unit.format(a.value),
        a.unit.format(a.threshold)
    )
}

fn subject(a: &Anomaly, kinds: bool) -> String {
    if kinds {
        format!("{} ({})", a.subject, a.kind)
    } else {
        a.subject.to_string()
    }
}

/// Region names and other outside text on a terminal.
fn term(s: &str) -> String {
    escape::terminal_line(s).into_owned()
}

fn text(run: &Run, s: &Summary) -> String {
    let kinds = s.several_kinds();
    let mut out = String::new();
    let _ = writeln!(out, "run {} ({})", term(&s.run), when(s));
    let _ = writeln!(out, "  {}", paths_line(s, &term));
    let worst = |list: &[WorstPath], value: &dyn Fn(&WorstPath) -> String| {
        list.iter()
            .map(|p| format!("{} {}", term(&path_label(p, kinds)), value(p)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !s.slowest.is_empty() {
        let v = worst(&s.slowest, &|p| {
            p.p50_us
                .map_or_else(String::new, |v| Unit::Us.format(v as f64))
        });
        let _ = writeln!(out, "  slowest p50: {v}");
    }
    if !s.lossiest.is_empty() {
        let v = worst(&s.lossiest, &|p| {
            p.loss.map_or_else(String::new, |v| Unit::Ratio.format(v))
        });
        let _ = writeln!(out, "  most loss: {v}");
    }
    let _ = writeln!(out, "\n{}", findings_line(s));
    for a in &run.anomalies {
        let _ = writeln!(
            out,
            "\n{:<8}  {}  {}: {}",
            a.severity.as_str().to_uppercase(),
            a.detector,
            term(&subject(a, kinds)),
            measure(a)
        );
        wrap(&mut out, &term(&a.message), 10);
        for e in &a.explains {
            let _ = writeln!(
                out,
                "          · {:<8} {:<11} {}: {}",
                e.severity.as_str(),
                e.detector.as_str(),
                term(&subject(e, kinds)),
                measure(e)
            );
        }
    }
    out
}

/// Appends `text` wrapped at [`WIDTH`], every line indented by `indent` spaces.
fn wrap(out: &mut String, text: &str, indent: usize) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent + line.chars().count() + 1 + word.chars().count() > WIDTH {
            let _ = writeln!(out, "{:indent$}{line}", "");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "{:indent$}{line}", "");
    }
}

/// Markdown text (safe in a table cell): no HTML, no Markdown syntax, no line breaks.
fn cell(text: &str) -> String {
    escape::markdown(text)
}

fn markdown(run: &Run, s: &Summary) -> String {
    let kinds = s.several_kinds();
    let mut out = String::new();
    let _ = writeln!(out, "### latmap run {}\n", escape::markdown_code(&s.run));
    let _ = writeln!(out, "{}, {}.\n", paths_line(s, &cell), when(s));
    let _ = writeln!(out, "**{}**\n", findings_line(s));
    if !run.anomalies.is_empty() {
        let _ = writeln!(
            out,
            "| severity | detector | subject | value | what to do |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
        let row = |out: &mut String, severity: String, a: &Anomaly| {
            let _ = writeln!(
                out,
                "| {severity} | `{}` | {} | {} | {} |",
                a.detector,
                cell(&subject(a, kinds)),
                cell(&measure(a)),
                cell(&a.message)
            );
        };
        for a in &run.anomalies {
            row(&mut out, format!("**{}**", a.severity), a);
            for e in &a.explains {
                row(&mut out, format!("↳ {}", e.severity), e);
            }
        }
        out.push('\n');
    }
    if !s.slowest.is_empty() || !s.lossiest.is_empty() {
        let _ = writeln!(out, "<details><summary>Worst paths</summary>\n");
        let _ = writeln!(out, "| path | p50 | loss |");
        let _ = writeln!(out, "| --- | ---: | ---: |");
        let mut listed: Vec<&WorstPath> = Vec::new();
        for p in s.slowest.iter().chain(&s.lossiest) {
            let same =
                |q: &&WorstPath| (q.kind, &q.source, &q.target) == (p.kind, &p.source, &p.target);
            if listed.iter().any(same) {
                continue;
            }
            listed.push(p);
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                cell(&path_label(p, kinds)),
                p.p50_us
                    .map_or_else(|| "–".to_string(), |v| Unit::Us.format(v as f64)),
                p.loss
                    .map_or_else(|| "–".to_string(), |v| Unit::Ratio.format(v))
            );
        }
        let _ = writeln!(out, "\n</details>");
    }
    out
}

#[derive(Serialize)]
struct JsonReport<'r> {
    schema: &'static str,
    #[serde(flatten)]
    summary: Summary,
    anomalies: &'r [Anomaly],
}

fn json(run: &Run, summary: Summary) -> String {
    let report = JsonReport {
        schema: "latmap.run-report/1",
        summary,
        anomalies: &run.anomalies,
    };
    match crate::artifact::to_string(&report) {
        Ok(mut s) => {
            s.push('\n');
            s
        }
        // Serializing plain structs of strings and numbers cannot fail.
        Err(e) => format!("{{\"error\": {:?}}}\n", e.to_string()),
    }
}
