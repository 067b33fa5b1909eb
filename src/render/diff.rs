//! A `RunDiff` for people and for CI: a terminal table, Markdown for a pull-request
//! comment, JSON, and JUnit XML (one test case per path). Every format says how blind
//! the diff was: which paths had too few probes to see a change of the configured size.

use std::fmt::Write;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Color, ContentArrangement, Table};

use super::escape::markdown as md_escape;
use super::escape::terminal_line as term;
use super::escape::xml;
use crate::diff::{PathDiff, RunDiff, Test, Verdict};

fn ms(us: Option<u64>) -> String {
    us.map_or_else(|| "–".into(), |us| crate::units::us_as_ms(us as f64))
}

fn pct(loss: Option<f64>) -> String {
    loss.map(|l| format!("{:.1}%", l * 100.0))
        .unwrap_or_else(|| "–".into())
}

fn delta_ms(us: Option<i64>) -> String {
    us.map(crate::units::signed_ms).unwrap_or_default()
}

/// The one-line summary that opens every format.
pub fn summary(d: &RunDiff) -> String {
    let r = d.count(Verdict::Regression);
    let i = d.count(Verdict::Improvement);
    let u = d.count(Verdict::Unchanged);
    let mut s = format!(
        "{r} regression{}, {i} improvement{}, {u} unchanged",
        if r == 1 { "" } else { "s" },
        if i == 1 { "" } else { "s" }
    );
    let mut extra = Vec::new();
    if !d.appeared.is_empty() {
        extra.push(format!(
            "{} new path{}",
            d.appeared.len(),
            if d.appeared.len() == 1 { "" } else { "s" }
        ));
    }
    if !d.vanished.is_empty() {
        extra.push(format!("{} vanished", d.vanished.len()));
    }
    if !d.findings_new.is_empty() {
        extra.push(format!(
            "{} new finding{}",
            d.findings_new.len(),
            if d.findings_new.len() == 1 { "" } else { "s" }
        ));
    }
    if !d.findings_resolved.is_empty() {
        extra.push(format!("{} resolved", d.findings_resolved.len()));
    }
    if !extra.is_empty() {
        s.push_str(&format!("; {}", extra.join(", ")));
    }
    s
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What the comparison was made of: the baselines (when several) and the family
/// corrected over.
pub fn basis(d: &RunDiff) -> String {
    let family = format!(
        "α = {} over {} that could give a verdict (Holm)",
        d.thresholds.alpha,
        plural(d.family.tests, "test", "tests")
    );
    match d.baselines.as_slice() {
        [first, .., last] => format!(
            "Against {} baselines ({first} … {last}), each path's run-to-run variation included; {family}.",
            d.baselines.len()
        ),
        _ => format!("{family}."),
    }
}

/// How blind the diff was, one sentence per blind spot; one sentence when it was not.
pub fn blind_spots(d: &RunDiff) -> Vec<String> {
    let b = &d.blind;
    let t = &d.thresholds;
    let mut out = Vec::new();
    if b.p50_paths > 0 {
        let helped = b.p50_paths - b.p50_beyond_help;
        let mut s = format!(
            "{} too few probes to detect a p50 change of the configured size ({}% and {} ms)",
            plural(b.p50_paths, "path had", "paths had"),
            t.p50_pct,
            t.p50_ms
        );
        match (b.p50_count_most, b.p50_count_needed) {
            (Some(most), Some(all)) if most < all => s.push_str(&format!(
                "; count = {most} would for {} of them, count = {all} for {}",
                b.p50_paths_most,
                if helped == b.p50_paths {
                    "all".to_string()
                } else {
                    format!("{helped}")
                }
            )),
            (_, Some(all)) if helped == b.p50_paths => {
                s.push_str(&format!("; count = {all} would"))
            }
            (_, Some(all)) => s.push_str(&format!("; count = {all} would for {helped} of them")),
            _ => {}
        }
        if b.p50_beyond_help > 0 {
            s.push_str(&format!(
                "; {} vary too much (between runs, or beyond count = 10000) for more probes to help",
                plural(b.p50_beyond_help, "path", "paths")
            ));
        }
        out.push(format!("{s}."));
    } else if !d.paths.is_empty() {
        out.push(format!(
            "Every path had the probes to detect a p50 change of the configured size ({}% and {} ms).",
            t.p50_pct, t.p50_ms
        ));
    }
    for (name, untested, count, need) in [
        ("p95", b.p95_untested, b.p95_count_needed, 50),
        ("p99", b.p99_untested, b.p99_count_needed, 250),
    ] {
        if untested > 0 {
            let mut s = format!(
                "{name} was not tested on {} (it needs {need} replies a run)",
                plural(untested, "path", "paths")
            );
            if let Some(c) = count {
                s.push_str(&format!("; count = {c} would"));
            }
            out.push(format!("{s}."));
        }
    }
    if b.discounted > 0 {
        out.push(format!(
            "{} no verdict: the prober lagged behind its schedule while measuring them, so their \
             numbers may describe its host (see the run's prober health, and docs/accuracy.md).",
            plural(b.discounted, "path got", "paths got")
        ));
    }
    out
}

fn changed(d: &RunDiff) -> impl Iterator<Item = &PathDiff> {
    d.paths.iter().filter(|p| p.verdict != Verdict::Unchanged)
}

/// The terminal table of changed paths; colours only when `color` is set.
pub fn text(d: &RunDiff, color: bool) -> String {
    let mut out = format!(
        "latmap diff {} → {}: {}\n",
        term(&d.base),
        term(&d.current),
        summary(d)
    );
    let _ = writeln!(out, "{}", term(&basis(d)));
    if changed(d).next().is_some() {
        let mut table = Table::new();
        table
            .load_preset(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled);
        table.set_header([
            "verdict", "path", "p50 ms", "Δ", "p95 ms", "Δ", "loss", "why",
        ]);
        for p in changed(d) {
            let mut verdict = comfy_table::Cell::new(p.verdict.as_str());
            if color {
                verdict = verdict.fg(if p.verdict == Verdict::Regression {
                    Color::Red
                } else {
                    Color::Green
                });
            }
            table.add_row(vec![
                verdict,
                comfy_table::Cell::new(format!(
                    "{} → {} ({})",
                    term(&p.key.source),
                    term(&p.key.target),
                    p.key.kind
                )),
                comfy_table::Cell::new(format!("{} → {}", ms(p.base.p50_us), ms(p.current.p50_us))),
                comfy_table::Cell::new(delta_ms(p.p50_delta_us)),
                comfy_table::Cell::new(format!("{} → {}", ms(p.base.p95_us), ms(p.current.p95_us))),
                comfy_table::Cell::new(delta_ms(p.p95_delta_us)),
                comfy_table::Cell::new(format!("{} → {}", pct(p.base.loss), pct(p.current.loss))),
                comfy_table::Cell::new(term(&p.reasons.join(", "))),
            ]);
        }
        let _ = writeln!(out, "{table}");
    }
    for k in &d.appeared {
        let _ = writeln!(out, "new path: {}", term(&k.to_string()));
    }
    for k in &d.vanished {
        let _ = writeln!(out, "vanished path: {}", term(&k.to_string()));
    }
    for r in &d.regions_appeared {
        let _ = writeln!(out, "new region: {}", term(r));
    }
    for r in &d.regions_vanished {
        let _ = writeln!(out, "region without data now: {}", term(r));
    }
    for a in &d.address_changes {
        let _ = writeln!(
            out,
            "address changed: {}: {} → {}",
            term(&a.key.to_string()),
            term(a.base.as_deref().unwrap_or("–")),
            term(a.current.as_deref().unwrap_or("–"))
        );
    }
    for f in &d.findings_new {
        let _ = writeln!(
            out,
            "new finding: [{}] {}: {}",
            f.severity,
            f.detector,
            term(&f.message)
        );
    }
    for f in &d.findings_resolved {
        let _ = writeln!(
            out,
            "resolved finding: {}: {}",
            f.detector,
            term(&f.message)
        );
    }
    for line in blind_spots(d) {
        let _ = writeln!(out, "{}", term(&line));
    }
    out
}

fn md_rows(out: &mut String, paths: &[&PathDiff]) {
    out.push_str("| path | p50 ms | Δ p50 | p95 ms | Δ p95 | loss | why |\n|---|---:|---:|---:|---:|---:|---|\n");
    for p in paths {
        let _ = writeln!(
            out,
            "| {} → {} ({}) | {} → {} | {} | {} → {} | {} | {} → {} | {} |",
            md_escape(&p.key.source),
            md_escape(&p.key.target),
            p.key.kind,
            ms(p.base.p50_us),
            ms(p.current.p50_us),
            delta_ms(p.p50_delta_us),
            ms(p.base.p95_us),
            ms(p.current.p95_us),
            delta_ms(p.p95_delta_us),
            pct(p.base.loss),
            pct(p.current.loss),
            md_escape(&p.reasons.join(", "))
        );
    }
}

/// Markdown for a pull-request comment: the summary line, the regressions, and the rest
/// folded away.
pub fn markdown(d: &RunDiff) -> String {
    let regressions: Vec<&PathDiff> = d
        .paths
        .iter()
        .filter(|p| p.verdict == Verdict::Regression)
        .collect();
    let improvements: Vec<&PathDiff> = d
        .paths
        .iter()
        .filter(|p| p.verdict == Verdict::Improvement)
        .collect();
    let icon = if regressions.is_empty() { "✅" } else { "❌" };
    let mut out = format!("### {icon} latmap: {}\n\n", summary(d));
    let _ = writeln!(
        out,
        "Base {} → current {}. {}\n",
        super::escape::markdown_code(&d.base),
        super::escape::markdown_code(&d.current),
        md_escape(&basis(d))
    );
    for line in blind_spots(d) {
        let _ = writeln!(out, "> {}", md_escape(&line));
    }
    out.push('\n');
    if !regressions.is_empty() {
        out.push_str("#### Regressions\n\n");
        md_rows(&mut out, &regressions);
        out.push('\n');
    }
    let mut rest = String::new();
    if !improvements.is_empty() {
        rest.push_str("#### Improvements\n\n");
        md_rows(&mut rest, &improvements);
        rest.push('\n');
    }
    let mut list = |title: &str, items: Vec<String>| {
        if !items.is_empty() {
            let _ = writeln!(rest, "#### {title}\n");
            for i in items {
                let _ = writeln!(rest, "- {}", md_escape(&i));
            }
            rest.push('\n');
        }
    };
    list(
        "New findings",
        d.findings_new
            .iter()
            .map(|f| format!("[{}] {}: {}", f.severity, f.detector, f.message))
            .collect(),
    );
    list(
        "Resolved findings",
        d.findings_resolved
            .iter()
            .map(|f| format!("{}: {}", f.detector, f.message))
            .collect(),
    );
    list(
        "New paths",
        d.appeared.iter().map(|k| k.to_string()).collect(),
    );
    list(
        "Vanished paths",
        d.vanished.iter().map(|k| k.to_string()).collect(),
    );
    list("Regions without data now", d.regions_vanished.clone());
    list("New regions", d.regions_appeared.clone());
    list(
        "Address changes",
        d.address_changes
            .iter()
            .map(|a| {
                format!(
                    "{}: {} → {}",
                    a.key,
                    a.base.as_deref().unwrap_or("–"),
                    a.current.as_deref().unwrap_or("–")
                )
            })
            .collect(),
    );
    let _ = writeln!(
        rest,
        "{} paths unchanged (thresholds: p50 +{}% and +{} ms, p95 +{}% and +{} ms, p99 +{}% and +{} ms, loss +{} pp).",
        d.count(Verdict::Unchanged),
        d.thresholds.p50_pct,
        d.thresholds.p50_ms,
        d.thresholds.p95_pct,
        d.thresholds.p95_ms,
        d.thresholds.p99_pct,
        d.thresholds.p99_ms,
        d.thresholds.loss_pp
    );
    let _ = write!(
        out,
        "<details><summary>Everything else</summary>\n\n{rest}\n</details>\n"
    );
    out
}

/// JUnit XML: one test case per path compared, regressions as failures.
pub fn junit(d: &RunDiff) -> String {
    let failures = d.count(Verdict::Regression);
    let tests = d.paths.len();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"latmap diff\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\">"
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"latmap diff {} vs {}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\">",
        xml(&d.current),
        xml(&d.base)
    );
    out.push_str("    <properties>\n");
    let b = &d.blind;
    let count = |c: Option<u64>| c.map(|c| c.to_string()).unwrap_or_default();
    for (name, value) in [
        ("baselines", d.baselines.len().to_string()),
        ("family.tests", d.family.tests.to_string()),
        ("alpha", d.thresholds.alpha.to_string()),
        ("blind.p50_paths", b.p50_paths.to_string()),
        ("blind.p50_count_needed", count(b.p50_count_needed)),
        ("blind.p50_count_most", count(b.p50_count_most)),
        ("blind.p50_beyond_help", b.p50_beyond_help.to_string()),
        ("blind.p95_untested", b.p95_untested.to_string()),
        ("blind.p95_count_needed", count(b.p95_count_needed)),
        ("blind.p99_untested", b.p99_untested.to_string()),
        ("blind.p99_count_needed", count(b.p99_count_needed)),
        ("blind.discounted", b.discounted.to_string()),
    ] {
        let _ = writeln!(
            out,
            "      <property name=\"latmap.{name}\" value=\"{}\"/>",
            xml(&value)
        );
    }
    out.push_str("    </properties>\n");
    for p in &d.paths {
        let name = format!(
            "{} → {} ({} {})",
            p.key.source, p.key.target, p.key.kind, p.key.target_spec
        );
        let _ = write!(
            out,
            "    <testcase classname=\"latmap.{}\" name=\"{}\"",
            xml(&p.key.source),
            xml(&name)
        );
        let detail = format!(
            "p50 {} → {} ms, p95 {} → {} ms, p99 {} → {} ms, loss {} → {}; adjusted p: {}; smallest detectable p50 change {}{}",
            ms(p.base.p50_us),
            ms(p.current.p50_us),
            ms(p.base.p95_us),
            ms(p.current.p95_us),
            ms(p.base.p99_us),
            ms(p.current.p99_us),
            pct(p.base.loss),
            pct(p.current.loss),
            [
                ("p50", &p.tests.p50),
                ("p95", &p.tests.p95),
                ("p99", &p.tests.p99),
                ("loss", &p.tests.loss)
            ]
            .iter()
            .map(|(n, t)| format!("{n} {}", p_text(t)))
            .collect::<Vec<_>>()
            .join(", "),
            p.min_detectable_p50_us
                .map(|us| format!("{} ms", ms(Some(us))))
                .unwrap_or_else(|| "–".into()),
            match (p.p50_blind, p.probes_needed) {
                (true, Some(c)) => format!(" (too few probes; count = {c} would)"),
                (true, None) => " (too few probes)".to_string(),
                _ => String::new(),
            }
        );
        if p.verdict == Verdict::Regression {
            let _ = writeln!(
                out,
                ">\n      <failure type=\"regression\" message=\"{}\">{}</failure>\n    </testcase>",
                xml(&p.reasons.join(", ")),
                xml(&detail)
            );
        } else {
            let _ = writeln!(
                out,
                ">\n      <system-out>{}: {}</system-out>\n    </testcase>",
                p.verdict.as_str(),
                xml(&detail)
            );
        }
    }
    let _ = writeln!(
        out,
        "    <system-out>{}</system-out>",
        xml(&[basis(d)]
            .into_iter()
            .chain(blind_spots(d))
            .collect::<Vec<_>>()
            .join("\n"))
    );
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// A test's adjusted p-value, or why it was not tested.
fn p_text(t: &Test) -> String {
    match t.skipped {
        None => format!("{:.3e}", t.p_adjusted),
        Some(s) => format!("not tested ({})", skip_text(s)),
    }
}

fn skip_text(s: crate::diff::Skip) -> &'static str {
    match s {
        crate::diff::Skip::TooFewReplies => "too few replies",
        crate::diff::Skip::WithinThresholds => "cannot move beyond its threshold",
        crate::diff::Skip::CannotReachAlpha => "cannot reach α",
    }
}
