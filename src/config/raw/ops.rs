//! The raw shape of `[diff]` (the CI gate's thresholds) and `[schedule]` (when sweeps
//! and agents run). Types and spans only; `config::ops` gives them meaning.

use toml::de::{DeTable, DeValue};

use super::super::keys;
use super::{At, Reader};

/// `[diff]`: every key is a number.
#[derive(Debug, Default)]
pub(in crate::config) struct RawDiff {
    /// One per key of `keys::diff`, in its order.
    pub values: Vec<Option<At<f64>>>,
}

#[derive(Debug, Default)]
pub(in crate::config) struct RawSchedule {
    pub span: super::Span,
    pub every: Option<At<std::time::Duration>>,
    pub cron: Option<At<String>>,
    pub jitter: Option<At<std::time::Duration>>,
    pub keep: Option<At<i128>>,
    pub keep_for: Option<At<std::time::Duration>>,
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
    r.unknown_keys(t, &keys::diff::SECTION);
    Some(RawDiff {
        values: keys::diff::SECTION
            .keys
            .iter()
            .map(|k| r.number(t, k))
            .collect(),
    })
}

pub(in crate::config) fn read_schedule(
    root: &DeTable<'_>,
    r: &mut Reader<'_>,
) -> Option<RawSchedule> {
    let (t, span) = table(root, r, "schedule")?;
    use keys::schedule::*;
    r.unknown_keys(t, &SECTION);
    Some(RawSchedule {
        span,
        every: r.duration(t, &EVERY),
        cron: r.string(t, &CRON),
        jitter: r.duration(t, &JITTER),
        keep: r.integer(t, &KEEP),
        keep_for: r.duration(t, &KEEP_FOR),
        has_every: t.contains_key("every"),
        has_cron: t.contains_key("cron"),
    })
}
