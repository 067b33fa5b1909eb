//! The raw shape of `[thresholds]` and its `[[thresholds.pair]]` rules.
//!
//! Like the rest of `raw`, this only copies out known keys with their TOML types checked
//! and their spans kept; what the values mean (ranges, detector ids, region patterns) is
//! checked by `config::thresholds`.

use toml::de::{DeTable, DeValue};

use super::super::keys;
use super::{At, Reader, Span};

/// Limits that `[thresholds]` sets and a pair rule may override.
#[derive(Debug, Default)]
pub(in crate::config) struct RawLimits {
    pub slo_p95_ms: Option<At<f64>>,
    pub loss_warning_pct: Option<At<f64>>,
    pub loss_critical_pct: Option<At<f64>>,
    pub loss_min_lost: Option<At<i128>>,
    pub jitter_warning_ms: Option<At<f64>>,
    pub jitter_critical_ms: Option<At<f64>>,
    pub skip: Option<At<Vec<At<String>>>>,
}

impl RawLimits {
    /// Whether any key is present.
    pub fn any(&self) -> bool {
        self.slo_p95_ms.is_some()
            || self.loss_warning_pct.is_some()
            || self.loss_critical_pct.is_some()
            || self.loss_min_lost.is_some()
            || self.jitter_warning_ms.is_some()
            || self.jitter_critical_ms.is_some()
            || self.skip.is_some()
    }
}

/// `[thresholds]`.
#[derive(Debug, Default)]
pub(in crate::config) struct RawThresholds {
    pub limits: RawLimits,
    pub detour_min_pct: Option<At<f64>>,
    pub detour_min_ms: Option<At<f64>>,
    pub inflation_factor: Option<At<f64>>,
    pub inflation_min_ms: Option<At<f64>>,
    pub asymmetry_min_pct: Option<At<f64>>,
    pub asymmetry_min_ms: Option<At<f64>>,
    pub region_min_share: Option<At<f64>>,
    pub region_min_paths: Option<At<i128>>,
    pub shift_window: Option<At<i128>>,
    pub shift_min_runs: Option<At<i128>>,
    pub shift_margin_pct: Option<At<f64>>,
    pub shift_margin_ms: Option<At<f64>>,
    pub shift_deviations: Option<At<f64>>,
    pub pairs: Vec<RawPair>,
}

/// One `[[thresholds.pair]]`.
#[derive(Debug, Default)]
pub(in crate::config) struct RawPair {
    pub span: Span,
    pub source: Option<At<String>>,
    pub target: Option<At<String>>,
    pub both_directions: Option<At<bool>>,
    pub limits: RawLimits,
    /// Whether the table has a key that is not allowed (reported by itself).
    pub unknown_keys: bool,
    /// Keys present but unusable, or meant by a misspelt key.
    pub broken: Vec<&'static str>,
}

impl Reader<'_> {
    pub(super) fn thresholds(&mut self, t: &DeTable<'_>) -> RawThresholds {
        use keys::thresholds::*;
        self.unknown_keys(t, &SECTION);
        let mut raw = RawThresholds {
            limits: self.limits(t),
            detour_min_pct: self.number(t, &DETOUR_MIN_PCT),
            detour_min_ms: self.number(t, &DETOUR_MIN_MS),
            inflation_factor: self.number(t, &INFLATION_FACTOR),
            inflation_min_ms: self.number(t, &INFLATION_MIN_MS),
            asymmetry_min_pct: self.number(t, &ASYMMETRY_MIN_PCT),
            asymmetry_min_ms: self.number(t, &ASYMMETRY_MIN_MS),
            region_min_share: self.number(t, &REGION_MIN_SHARE),
            region_min_paths: self.integer(t, &REGION_MIN_PATHS),
            shift_window: self.integer(t, &SHIFT_WINDOW),
            shift_min_runs: self.integer(t, &SHIFT_MIN_RUNS),
            shift_margin_pct: self.number(t, &SHIFT_MARGIN_PCT),
            shift_margin_ms: self.number(t, &SHIFT_MARGIN_MS),
            shift_deviations: self.number(t, &SHIFT_DEVIATIONS),
            pairs: Vec::new(),
        };
        if let Some((key, value)) = t.get_key_value("pair") {
            raw.pairs = self.tables(key, value, "pair", "[[thresholds.pair]]", |r, t, span| {
                let (mut pair, broken) = r.scoped(|r| r.pair(t, span));
                pair.broken = broken;
                pair
            });
        }
        raw
    }

    fn pair(&mut self, t: &DeTable<'_>, span: Span) -> RawPair {
        use keys::pair::*;
        self.unknown_keys(t, &SECTION);
        RawPair {
            span,
            source: self.string(t, &SOURCE),
            target: self.string(t, &TARGET),
            both_directions: self.boolean(t, &BOTH_DIRECTIONS),
            limits: self.limits(t),
            unknown_keys: t
                .keys()
                .any(|k| !SECTION.names().contains(&k.get_ref().as_ref())),
            broken: Vec::new(),
        }
    }

    fn limits(&mut self, t: &DeTable<'_>) -> RawLimits {
        use keys::limits::*;
        RawLimits {
            slo_p95_ms: self.number(t, &SLO_P95_MS),
            loss_warning_pct: self.number(t, &LOSS_WARNING_PCT),
            loss_critical_pct: self.number(t, &LOSS_CRITICAL_PCT),
            loss_min_lost: self.integer(t, &LOSS_MIN_LOST),
            jitter_warning_ms: self.number(t, &JITTER_WARNING_MS),
            jitter_critical_ms: self.number(t, &JITTER_CRITICAL_MS),
            skip: self.strings(t, &SKIP),
        }
    }
}

/// Reads `[thresholds]` from the document root, if present; `None` also when it is not
/// a table (the problem is reported and the key marked failed).
pub(super) fn read(root: &DeTable<'_>, r: &mut Reader<'_>) -> Option<RawThresholds> {
    let (key, value) = root.get_key_value("thresholds")?;
    match value.get_ref() {
        DeValue::Table(t) => Some(r.scoped(|r| r.thresholds(t)).0),
        DeValue::Array(_) => {
            r.fail(
                "thresholds",
                key.span(),
                "thresholds must be one table; write [thresholds], not [[thresholds]]",
            );
            None
        }
        other => {
            r.wrong_type(
                key,
                value,
                "a table",
                "[thresholds] on a line of its own",
                other,
            );
            r.failed.push("thresholds");
            None
        }
    }
}
