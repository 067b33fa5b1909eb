//! Smoke charts: a path's history over time, drawn with plotters, SmokePing-style.
//!
//! Per run, the spread of the path's samples as shaded bands (its min to p90, p95, p99
//! and max, from the history's [`Point`]s), the median as a line coloured by the run's
//! loss on SmokePing's loss scale, the loss itself on a second axis (right), and the
//! runs that had findings on the path marked along the top (orange for a warning, red
//! for a critical one). Time runs left to right in UTC. With more runs than the chart
//! has room for, neighbouring runs are binned (the bins' bands span their runs', the
//! median is the median of their medians, the loss their pooled loss), so 2 runs and
//! 2,000 both read. Deterministic: the same points give the same bytes.
//!
//! Reads history points; does no I/O.

use chrono::{DateTime, Utc};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::history::{PathKey, Point};
use crate::run::Severity;

/// Width and height of one chart, in pixels.
pub const SIZE: (u32, u32) = (900, 320);

/// The most bins a chart draws: one per three pixels of plot.
const MAX_BINS: usize = 260;

/// SmokePing's loss colours (its default `loss_colors` for 20 pings: 0 lost green,
/// 1 blue, 2 darker blue, 3 and 4 violets, 10 magenta, 19 red), as upper bounds of the
/// loss ratio.
pub const LOSS_SCALE: [(f64, RGBColor, &str); 7] = [
    (0.0, RGBColor(0x26, 0xff, 0x00), "0"),
    (0.05, RGBColor(0x00, 0xb8, 0xff), "≤5%"),
    (0.10, RGBColor(0x00, 0x59, 0xff), "≤10%"),
    (0.15, RGBColor(0x5e, 0x00, 0xff), "≤15%"),
    (0.20, RGBColor(0x7e, 0x00, 0xff), "≤20%"),
    (0.50, RGBColor(0xdd, 0x00, 0xff), "≤50%"),
    (1.0, RGBColor(0xff, 0x00, 0x00), ">50%"),
];

/// The colour of a median whose run lost `loss` of its probes.
pub fn loss_color(loss: f64) -> RGBColor {
    LOSS_SCALE
        .iter()
        .find(|(upto, _, _)| loss <= *upto + 1e-9)
        .map_or(LOSS_SCALE[6].1, |(_, c, _)| *c)
}

/// Why a chart could not be drawn (plotters' errors, in words).
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the chart: {0}")]
pub struct ChartError(String);

fn err<E: std::fmt::Debug>(e: E) -> ChartError {
    ChartError(format!("{e:?}"))
}

/// One bin of the chart: one run, or several neighbouring ones.
#[derive(Debug, Clone, PartialEq)]
struct Bin {
    /// Seconds since the Unix epoch: where it is drawn.
    x: f64,
    /// min, p50, p90, p95, p99, max of the RTT in ms, when any reply came back.
    rtt: Option<[f64; 6]>,
    loss: Option<f64>,
    finding: Option<Severity>,
}

fn bins(points: &[Point]) -> Vec<Bin> {
    let per = points.len().div_ceil(MAX_BINS).max(1);
    points
        .chunks(per)
        .map(|group| {
            let secs = |p: &Point| p.at.timestamp_millis() as f64 / 1000.0;
            let x = group.iter().map(secs).sum::<f64>() / group.len() as f64;
            let rtts: Vec<[f64; 6]> = group
                .iter()
                .filter_map(|p| p.rtt_us.map(|q| q.map(|v| f64::from(v) / 1000.0)))
                .collect();
            let rtt = (!rtts.is_empty()).then(|| {
                let median_of = |k: usize| {
                    let mut v: Vec<f64> = rtts.iter().map(|q| q[k]).collect();
                    v.sort_by(f64::total_cmp);
                    v[v.len() / 2]
                };
                let min = rtts.iter().map(|q| q[0]).fold(f64::INFINITY, f64::min);
                let max = rtts.iter().map(|q| q[5]).fold(0.0, f64::max);
                [
                    min,
                    median_of(1),
                    median_of(2),
                    median_of(3),
                    median_of(4),
                    max,
                ]
            });
            let (sent, received) = group.iter().fold((0u64, 0u64), |(s, r), p| {
                (s + u64::from(p.sent), r + u64::from(p.received))
            });
            let loss = (sent > 0).then(|| 1.0 - received as f64 / sent as f64);
            let finding = group
                .iter()
                .flat_map(|p| p.findings.iter().map(|f| f.1))
                .max();
            Bin {
                x,
                rtt,
                loss,
                finding,
            }
        })
        .collect()
}

/// Time labels: UTC, as wide as the span needs.
fn time_label(secs: f64, span: f64) -> String {
    let Some(t) = DateTime::<Utc>::from_timestamp(secs.round() as i64, 0) else {
        return String::new();
    };
    if span > 3.0 * 86_400.0 {
        t.format("%Y-%m-%d").to_string()
    } else if span > 3_600.0 {
        t.format("%m-%d %H:%M").to_string()
    } else {
        t.format("%H:%M:%S").to_string()
    }
}

/// A name for a chart's text: plotters escapes XML's markup characters itself, but
/// control characters have no place in XML at all, so they become U+FFFD.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// The smoke chart of one path as an SVG document.
pub fn chart_svg(path: &PathKey, points: &[Point]) -> Result<String, ChartError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root, path, points)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Small multiples: one chart per path, two columns, as one SVG document.
pub fn multiples_svg(charts: &[(PathKey, Vec<Point>)]) -> Result<String, ChartError> {
    let cols = if charts.len() > 1 { 2 } else { 1 };
    let rows = charts.len().div_ceil(cols).max(1);
    let (w, h) = (
        SIZE.0 * cols as u32 / 2 + 450 * (cols as u32 % 2),
        240 * rows as u32,
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w.max(450), h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let areas = root.split_evenly((rows, cols));
        for (area, (path, points)) in areas.iter().zip(charts) {
            draw(area, path, points)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    path: &PathKey,
    points: &[Point],
) -> Result<(), ChartError> {
    root.fill(&WHITE).map_err(err)?;
    let bins = bins(points);
    let runs = points.len();
    let title = format!(
        "{} → {} ({}), {} run{} (UTC)",
        printable(&path.source),
        printable(&path.target),
        path.kind,
        runs,
        if runs == 1 { "" } else { "s" }
    );
    let (x0, x1) = match (bins.first(), bins.last()) {
        (Some(a), Some(b)) if b.x > a.x => (a.x, b.x),
        (Some(a), _) => (a.x - 60.0, a.x + 60.0),
        _ => (0.0, 60.0),
    };
    let pad = (x1 - x0) * 0.02;
    let (x0, x1) = (x0 - pad, x1 + pad);
    // The y range holds every run's p99 (a rare max may leave the chart at the top).
    let top = bins
        .iter()
        .filter_map(|b| b.rtt.map(|q| q[4]))
        .fold(0.0, f64::max);
    let ymax = if top > 0.0 { top * 1.15 } else { 1.0 };
    let span = x1 - x0;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(52)
        .right_y_label_area_size(58)
        .build_cartesian_2d(x0..x1, 0f64..ymax)
        .map_err(err)?
        .set_secondary_coord(x0..x1, 0f64..100f64);
    chart
        .configure_mesh()
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|x| time_label(*x, span))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .y_desc("RTT ms")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    chart
        .configure_secondary_axes()
        .y_desc("loss %")
        .y_labels(5)
        .draw()
        .map_err(err)?;
    // The smoke: min to p90, p95, p99 and max, lighter as they widen; each band one
    // polygon over the runs that answered (a run without replies breaks it).
    for (k, shade) in [(5usize, 0.12), (4, 0.20), (3, 0.30), (2, 0.45)] {
        for segment in bins.split(|b| b.rtt.is_none()) {
            if segment.is_empty() {
                continue;
            }
            let mut outline: Vec<(f64, f64)> = Vec::with_capacity(segment.len() * 2 + 2);
            let half = if segment.len() == 1 {
                span * 0.004
            } else {
                0.0
            };
            for b in segment {
                if let Some(q) = b.rtt {
                    outline.push((b.x - half, q[k].min(ymax)));
                    if half > 0.0 {
                        outline.push((b.x + half, q[k].min(ymax)));
                    }
                }
            }
            for b in segment.iter().rev() {
                if let Some(q) = b.rtt {
                    if half > 0.0 {
                        outline.push((b.x + half, q[0]));
                    }
                    outline.push((b.x - half, q[0]));
                }
            }
            chart
                .draw_series(std::iter::once(Polygon::new(
                    outline,
                    BLACK.mix(shade).filled(),
                )))
                .map_err(err)?;
        }
    }
    // The median, each stretch between two runs in the colour of the later run's loss.
    let medians: Vec<(f64, f64, f64)> = bins
        .iter()
        .filter_map(|b| b.rtt.map(|q| (b.x, q[1], b.loss.unwrap_or(0.0))))
        .collect();
    for w in medians.windows(2) {
        let color = loss_color(w[1].2);
        chart
            .draw_series(LineSeries::new(
                [(w[0].0, w[0].1), (w[1].0, w[1].1)],
                color.stroke_width(2),
            ))
            .map_err(err)?;
    }
    chart
        .draw_series(
            medians
                .iter()
                .map(|&(x, y, loss)| Circle::new((x, y), 2, loss_color(loss).filled())),
        )
        .map_err(err)?;
    // Loss, on the right axis.
    chart
        .draw_secondary_series(LineSeries::new(
            bins.iter().filter_map(|b| b.loss.map(|l| (b.x, l * 100.0))),
            RED.mix(0.6).stroke_width(1),
        ))
        .map_err(err)?;
    // Findings along the top.
    chart
        .draw_series(bins.iter().filter_map(|b| {
            let color = match b.finding? {
                Severity::Critical => RED,
                Severity::Warning => RGBColor(0xff, 0x8c, 0x00),
            };
            Some(TriangleMarker::new((b.x, ymax * 0.97), 5, color.filled()))
        }))
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DetectorId, ProbeKind};

    fn point(minute: i64, p50_ms: f64, loss: f64, finding: Option<Severity>) -> Point {
        let us = |ms: f64| (ms * 1000.0) as u32;
        Point {
            at: DateTime::<Utc>::from_timestamp(1_800_000_000 + 300 * minute, 0).unwrap(),
            sent: 20,
            received: (20.0 * (1.0 - loss)).round() as u32,
            rtt_us: Some([
                us(p50_ms - 1.0),
                us(p50_ms),
                us(p50_ms + 2.0),
                us(p50_ms + 3.0),
                us(p50_ms + 5.0),
                us(p50_ms + 9.0),
            ]),
            findings: finding.map(|s| (DetectorId::Loss, s)).into_iter().collect(),
            lagged: false,
        }
    }

    fn key() -> PathKey {
        PathKey {
            source: "a".into(),
            target: "b".into(),
            kind: ProbeKind::Udp,
        }
    }

    #[test]
    fn loss_colors_follow_smokeping() {
        assert_eq!(loss_color(0.0), LOSS_SCALE[0].1);
        assert_eq!(loss_color(0.05), LOSS_SCALE[1].1);
        assert_eq!(loss_color(0.051), LOSS_SCALE[2].1);
        assert_eq!(loss_color(0.95), LOSS_SCALE[6].1);
    }

    #[test]
    fn thousands_of_runs_are_binned_and_the_chart_is_deterministic() {
        let pts: Vec<Point> = (0..2000)
            .map(|m| {
                point(
                    m,
                    100.0 + (m % 7) as f64,
                    if m % 50 == 0 { 0.1 } else { 0.0 },
                    None,
                )
            })
            .collect();
        let b = bins(&pts);
        assert!(
            b.len() <= MAX_BINS && b.len() >= MAX_BINS / 2,
            "{}",
            b.len()
        );
        let a = chart_svg(&key(), &pts).unwrap();
        assert_eq!(a, chart_svg(&key(), &pts).unwrap());
        assert!(a.len() < 300_000, "{} bytes", a.len());
        // Two runs still draw.
        let two = chart_svg(&key(), &pts[..2]).unwrap();
        assert!(two.contains("<polygon") && two.contains("2 runs"), "{two}");
        // One run, and none, too.
        assert!(chart_svg(&key(), &pts[..1]).is_ok());
        assert!(chart_svg(&key(), &[]).is_ok());
    }

    #[test]
    fn a_run_without_replies_breaks_the_bands_and_findings_are_marked() {
        let mut pts: Vec<Point> = (0..10).map(|m| point(m, 50.0, 0.0, None)).collect();
        pts[4].rtt_us = None;
        pts[4].received = 0;
        pts[7].findings = vec![(DetectorId::Shift, Severity::Critical)];
        let b = bins(&pts);
        assert_eq!(b[4].loss, Some(1.0));
        assert_eq!(b[7].finding, Some(Severity::Critical));
        let svg = chart_svg(&key(), &pts).unwrap();
        // Two stretches of bands, four bands each.
        assert_eq!(
            svg.matches("<polygon").count(),
            8 + 1,
            "and one finding marker"
        );
    }

    #[test]
    fn names_are_escaped_and_two_runs_draw() {
        let k = PathKey {
            source: "a<b&\"c'".into(),
            target: "]]>\u{7}".into(),
            kind: ProbeKind::Udp,
        };
        let pts: Vec<Point> = (0..2).map(|m| point(m, 50.0, 0.0, None)).collect();
        for svg in [
            chart_svg(&k, &pts).unwrap(),
            multiples_svg(&[(k.clone(), pts.clone()), (key(), pts.clone())]).unwrap(),
        ] {
            assert!(!svg.contains("a<b"), "raw name in the SVG");
            resvg::usvg::Tree::from_str(&svg, &resvg::usvg::Options::default()).expect("valid SVG");
        }
    }
}
