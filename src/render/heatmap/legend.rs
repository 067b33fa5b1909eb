//! The colour scale a view uses (its range from the values drawn) and the legend that
//! explains it and the special cells.

use std::fmt::Write;

use super::View;
use crate::render::scale::{self, Rgb, Scale, Transform};

pub(super) fn scale_for(view: View, values: impl Iterator<Item = f64>) -> Scale {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    match view {
        View::Rtt => {
            let min = 10f64.powf(lo.max(0.1).log10().floor());
            let max = 10f64.powf(hi.max(min * 10.0).log10().ceil());
            let (min, max) = tighten(min, max, lo.max(0.1), hi);
            Scale {
                gradient: colorous::VIRIDIS,
                reversed: false,
                transform: Transform::Log,
                min,
                max,
            }
        }
        View::Loss => Scale {
            gradient: colorous::CIVIDIS,
            reversed: false,
            transform: Transform::Sqrt,
            min: 0.0,
            max: nice_up(hi.max(0.01)),
        },
        View::Inflation => Scale {
            gradient: colorous::PLASMA,
            reversed: false,
            transform: Transform::Linear,
            min: 1.0,
            max: nice_up(hi.max(4.0)),
        },
        View::Delta => Scale {
            gradient: colorous::RED_BLUE,
            reversed: true,
            transform: Transform::Diverging,
            min: -nice_up(lo.abs().max(hi.abs()).max(1.0)),
            max: nice_up(lo.abs().max(hi.abs()).max(1.0)),
        },
    }
}

/// Narrows a decade range to 1-2-5 steps that still hold `lo..=hi`.
fn tighten(min: f64, max: f64, lo: f64, hi: f64) -> (f64, f64) {
    let mut a = min;
    for m in [5.0, 2.0] {
        if min * m <= lo {
            a = min * m;
            break;
        }
    }
    let mut b = max;
    for m in [0.2, 0.5] {
        if max * m >= hi {
            b = max * m;
            break;
        }
    }
    if b <= a { (min, max) } else { (a, b) }
}

/// The 1-2-5 number at or above `v`.
fn nice_up(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|x| *x >= v * 0.9999)
        .unwrap_or(10.0 * p)
}

pub(super) fn legend(out: &mut String, view: View, scale: &Scale, x: usize, y: usize, h: usize) {
    let unit = match view {
        View::Rtt => "p50 RTT, ms (log)",
        View::Loss => "loss, % (sqrt)",
        View::Inflation => "× fiber bound",
        View::Delta => "p50 change, ms",
    };
    let _ = write!(
        out,
        "<g font-size=\"11\" fill=\"#222222\">\n<text x=\"{x}\" y=\"{}\" font-weight=\"bold\">{unit}</text>\n",
        y - 10
    );
    let _ = writeln!(
        out,
        "<rect x=\"{x}\" y=\"{y}\" width=\"16\" height=\"{h}\" fill=\"url(#lg)\" stroke=\"#666666\" stroke-width=\"0.5\"/>"
    );
    for v in scale.ticks() {
        let ty = y as f64 + h as f64 * (1.0 - scale.position(v));
        let label = match view {
            View::Rtt => fmt_tick(v),
            View::Loss => fmt_tick(v * 100.0),
            View::Inflation => format!("{}×", fmt_tick(v)),
            View::Delta => format!("{}{}", if v > 0.0 { "+" } else { "" }, fmt_tick(v)),
        };
        let _ = writeln!(
            out,
            "<line x1=\"{}\" y1=\"{ty:.1}\" x2=\"{}\" y2=\"{ty:.1}\" stroke=\"#222222\"/><text x=\"{}\" y=\"{ty:.1}\" dominant-baseline=\"central\">{label}</text>",
            x + 16,
            x + 20,
            x + 24
        );
    }
    let mut sy = y + h + 24;
    let swatch = |out: &mut String,
                  sy: usize,
                  fill: &str,
                  stroke: Option<(Rgb, u8)>,
                  text: &str| {
        let stroke = stroke
            .map(|(c, w)| format!(" stroke=\"{}\" stroke-width=\"{w}\"", c.hex()))
            .unwrap_or_else(|| " stroke=\"#666666\" stroke-width=\"0.5\"".into());
        let _ = writeln!(
            out,
            "<rect x=\"{x}\" y=\"{sy}\" width=\"14\" height=\"14\" fill=\"{fill}\"{stroke}/><text x=\"{}\" y=\"{}\" dominant-baseline=\"central\">{text}</text>",
            x + 22,
            sy + 7
        );
    };
    let _ = write!(
        out,
        "<line x1=\"{x}\" y1=\"{sy}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\"/>",
        x + 14,
        sy + 14,
        scale::DIAGONAL_LINE.hex()
    );
    swatch(out, sy, "none", None, "same region");
    sy += 20;
    swatch(out, sy, "url(#nd)", None, "no data");
    sy += 20;
    swatch(
        out,
        sy,
        &scale::UNREACHABLE.hex(),
        None,
        "unreachable (no reply)",
    );
    sy += 20;
    swatch(
        out,
        sy,
        "#ffffff",
        Some((scale::WARNING, 2)),
        "warning finding",
    );
    sy += 20;
    swatch(
        out,
        sy,
        "#ffffff",
        Some((scale::CRITICAL, 3)),
        "critical finding",
    );
    out.push_str("</g>\n");
}

fn fmt_tick(v: f64) -> String {
    if v == v.round() {
        format!("{v:.0}")
    } else if (v * 10.0) == (v * 10.0).round() {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
