//! The raw shape of `[diff]` (the CI gate's thresholds) and `[schedule]` (when sweeps
//! and agents run). Types and spans only; `config::ops` gives them meaning.

use toml::de::{DeTable, DeValue};

use super::{At, Reader};

pub(in crate::config) const DIFF_KEYS: &[&str] = &[
    "p50_pct", "p50_ms", "p95_pct", "p95_ms", "p99_pct", "p99_ms", "loss_pp", "alpha",
];
pub(in crate::config) const SCHEDULE_KEYS: &[&str] =
    &["every", "cron", "jitter", "keep", "keep_for"];

#[derive(Debug, Default)]
pub(in crate::config) struct RawDiff {
    pub p50_pct: Option<At<f64>>,
    pub p50_ms: Option<At<f64>>,
    pub p95_pct: Option<At<f64>>,
    pub p95_ms: Option<At<f64>>,
    pub p99_pct: Option<At<f64>>,
    pub p99_ms: Option<At<f64>>,
    pub loss_pp: Option<At<f64>>,
    pub alpha: Option<At<f64>>,
}

#[derive(Debug, Default)]
pub(in crate::config) struct RawSchedule {
    pub span: super::Span,
    pub every: Option<At<String>>,
    pub cron: Option<At<String>>,
    pub jitter: Option<At<String>>,
    pub keep: Option<At<i128>>,
    pub keep_for: Option<At<String>>,
    /// Whether `every` / `cron` are present at all (even with an unusable value, which
    /// is reported by itself), so that no follow-on "needs every or cron" is reported.
    pub has_every: bool,
    pub has_cron: bool,
}

/// `[name]` as one table, or a problem saying how to write it.
fn table<'a, 'i>(
    root: &'a DeTable<'i>,
    r: &mut Reader<'_>,
    name: &'static str,
) -> Option<(&'a DeTable<'i>, super::Span)> {
    let (key, value) = root.get_key_value(name)?;
    match value.get_ref() {
        DeValue::Table(t) => Some((t, value.span())),
        DeValue::Array(_) => {
            r.fail(
                name,
                key.span(),
                format!("{name} must be one table; write [{name}], not [[{name}]]"),
            );
            None
        }
        other => {
            r.wrong_type(
                key,
                value,
                "a table",
                &format!("[{name}] on a line of its own"),
                other,
            );
            r.failed.push(name);
            None
        }
    }
}

pub(in crate::config) fn read_diff(root: &DeTable<'_>, r: &mut Reader<'_>) -> Option<RawDiff> {
    let (t, _) = table(root, r, "diff")?;
    r.unknown_keys(t, DIFF_KEYS, "in [diff]");
    Some(RawDiff {
        p50_pct: r.number(t, "p50_pct", "10"),
        p50_ms: r.number(t, "p50_ms", "2"),
        p95_pct: r.number(t, "p95_pct", "20"),
        p95_ms: r.number(t, "p95_ms", "5"),
        p99_pct: r.number(t, "p99_pct", "25"),
        p99_ms: r.number(t, "p99_ms", "10"),
        loss_pp: r.number(t, "loss_pp", "0.5"),
        alpha: r.number(t, "alpha", "0.01"),
    })
}

pub(in crate::config) fn read_schedule(
    root: &DeTable<'_>,
    r: &mut Reader<'_>,
) -> Option<RawSchedule> {
    let (t, span) = table(root, r, "schedule")?;
    r.unknown_keys(t, SCHEDULE_KEYS, "in [schedule]");
    Some(RawSchedule {
        span,
        every: r.duration(t, "every"),
        cron: r.string(t, "cron", r#""*/5 * * * *""#),
        jitter: r.duration(t, "jitter"),
        keep: r.integer(t, "keep", "100"),
        keep_for: r.duration(t, "keep_for"),
        has_every: t.contains_key("every"),
        has_cron: t.contains_key("cron"),
    })
}
