//! Writes the heatmap's SVG from its model and layout: templates per colour, labels,
//! one `<use>` per cell with its `<title>`, outlines, values, then the legend.
//! Deterministic: the same model gives the same bytes.

use std::fmt::Write;

use super::layout::Layout;
use super::legend::legend;
use super::model::{Cell, Model};
use super::{Options, Order, View};
use crate::render::escape::xml;
use crate::render::scale::{self, Rgb};
use crate::run::Severity;
use crate::units::ms as fmt_ms;

/// Colour steps of a scale: the cells' colours are quantised to this many levels.
const PALETTE: usize = 128;

/// The template id of palette step `i`: two lowercase letters (`aa`, `ab`, ...), which
/// cannot clash with the special cells' one-letter ids.
fn palette_id(i: usize) -> String {
    let a = char::from(b'a' + (i / 26 % 26) as u8);
    let b = char::from(b'a' + (i % 26) as u8);
    format!("{a}{b}")
}

/// The document.
pub(super) fn write(opts: &Options, model: &Model<'_>, layout: &Layout) -> String {
    let (kind, names, cells) = (model.kind, &model.names, &model.cells);
    let (outlines, findings, scale) = (&model.outlines, &model.findings, &model.scale);
    let n = names.len();
    let (c, font, gx, gy, lx) = (layout.c, layout.font, layout.gx, layout.gy, layout.lx);
    let (bar_h, width, height) = (layout.bar_h, layout.width, layout.height);
    let title = &layout.title;
    let mut out = String::with_capacity(n * n * 110 + 4096);
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"DejaVu Sans,Arial,sans-serif\">"
    );
    let _ = write!(
        out,
        "<defs><pattern id=\"nd\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"{}\"/><rect width=\"1.5\" height=\"6\" fill=\"{}\"/></pattern>",
        scale::NO_DATA.hex(),
        scale::NO_DATA_HATCH.hex()
    );
    // One template cell per colour; a cell is then `<use href="#kI" x="X">` in its row's
    // group: the fewest bytes per cell, as a 100-region map has 9,900 of them.
    out.push_str("<linearGradient id=\"lg\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">");
    for i in 0..=16 {
        let t = f64::from(i) / 16.0;
        let _ = write!(
            out,
            "<stop offset=\"{t:.4}\" stop-color=\"{}\"/>",
            scale.at(t).hex()
        );
    }
    out.push_str(
        "</linearGradient></defs>\n<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n",
    );

    // Title and subtitle.
    let _ = writeln!(
        out,
        "<text x=\"10\" y=\"24\" font-size=\"16\" font-weight=\"bold\">{}</text>",
        xml(title)
    );
    let _ = writeln!(
        out,
        "<text x=\"10\" y=\"42\" font-size=\"12\" fill=\"#444444\">rows: source region · columns: target region · {n} regions, order: {}</text>",
        match opts.order {
            Order::Config => "as configured",
            Order::Geo => "west to east",
            Order::Cluster => "clustered by RTT",
        }
    );

    // Labels: rows right-aligned left of the grid, columns written upwards above it.
    let _ = writeln!(
        out,
        "<g font-size=\"{font}\" fill=\"#222222\" dominant-baseline=\"central\">"
    );
    let _ = writeln!(out, "<g text-anchor=\"end\">");
    for (i, name) in names.iter().enumerate() {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            gx - 6,
            gy + i * c + c / 2,
            xml(name)
        );
    }
    let _ = writeln!(out, "</g>\n<g transform=\"rotate(-90)\">");
    for (j, name) in names.iter().enumerate() {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            6 - gy as i64,
            gx + j * c + c / 2,
            xml(name)
        );
    }
    out.push_str("</g>\n</g>\n");

    // Cells: one row group each. Colours are quantised to PALETTE steps of the scale
    // (finer than the eye can tell apart); each step used gets a template.
    let step = |v: f64| (scale.position(v) * PALETTE as f64).round() as usize;
    let mut used = [false; PALETTE + 1];
    for (cell, _) in cells.iter() {
        if let Cell::Value(v) = cell {
            used[step(*v)] = true;
        }
    }
    out.push_str("<defs>");
    let template = |out: &mut String, id: &str, fill: &str| {
        let _ = write!(
            out,
            "<rect id=\"{id}\" width=\"{c}\" height=\"{c}\" fill=\"{fill}\"/>"
        );
    };
    let _ = write!(
        out,
        "<g id=\"d\"><rect width=\"{c}\" height=\"{c}\" fill=\"{}\"/><line x2=\"{c}\" y2=\"{c}\" stroke=\"{}\"/></g>",
        scale::DIAGONAL.hex(),
        scale::DIAGONAL_LINE.hex()
    );
    template(&mut out, "n", "url(#nd)");
    template(&mut out, "u", &scale::UNREACHABLE.hex());
    for (i, _) in used.iter().enumerate().filter(|(_, u)| **u) {
        template(
            &mut out,
            &palette_id(i),
            &scale.at(i as f64 / PALETTE as f64).hex(),
        );
    }
    out.push_str("</defs>\n");
    for (row, chunk) in cells.chunks(n.max(1)).enumerate() {
        let _ = writeln!(out, "<g transform=\"translate(0,{})\">", gy + row * c);
        for (col, (cell, tip)) in chunk.iter().enumerate() {
            let id = match cell {
                Cell::Diagonal => "d".to_string(),
                Cell::NoData => "n".to_string(),
                Cell::Unreachable => "u".to_string(),
                Cell::Value(v) => palette_id(step(*v)),
            };
            let link = opts.links.filter(|_| row != col).map(|base| {
                let seg = crate::render::escape::url_segment;
                format!("{base}{}/{}?kind={kind}", seg(names[row]), seg(names[col]))
            });
            if let Some(href) = &link {
                let _ = write!(out, "<a href=\"{}\">", xml(href));
            }
            let _ = write!(
                out,
                "<use href=\"#{id}\" x=\"{}\"><title>{}</title></use>",
                gx + col * c,
                xml(tip)
            );
            if link.is_some() {
                out.push_str("</a>");
            }
        }
        out.push_str("\n</g>\n");
    }

    // Outlines of anomalous cells, inside the cell so neighbours stay visible; a bar
    // beside the label of a region that has a region finding.
    if outlines.iter().any(Option::is_some) || !findings.regions.is_empty() {
        out.push_str("<g fill=\"none\">\n");
        for (k, o) in outlines.iter().enumerate() {
            let Some(sev) = o else { continue };
            let (colour, w) = severity_stroke(*sev);
            let (x, y) = (gx + (k % n) * c, gy + (k / n) * c);
            let half = w as f64 / 2.0;
            let _ = writeln!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" stroke=\"{}\" stroke-width=\"{w}\"/>",
                x as f64 + half,
                y as f64 + half,
                c as f64 - 2.0 * half,
                c as f64 - 2.0 * half,
                colour.hex()
            );
        }
        for (name, outgoing, sev) in &findings.regions {
            let Some(pos) = names.iter().position(|n| n == name) else {
                continue;
            };
            let (colour, _) = severity_stroke(*sev);
            let (x, y, w, h) = if *outgoing {
                (gx - 4, gy + pos * c, 3, c)
            } else {
                (gx + pos * c, gy - 4, c, 3)
            };
            let _ = writeln!(
                out,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"{}\"/>",
                colour.hex()
            );
        }
        out.push_str("</g>\n");
    }

    // Values, where a cell is large enough to read them.
    if c >= 36 {
        let _ = writeln!(
            out,
            "<g font-size=\"11\" text-anchor=\"middle\" dominant-baseline=\"central\">"
        );
        for (k, (cell, _)) in cells.iter().enumerate() {
            let Cell::Value(v) = cell else { continue };
            let (x, y) = (gx + (k % n) * c + c / 2, gy + (k / n) * c + c / 2);
            let ink = if scale.color(*v).luminance() > 0.35 {
                "#000000"
            } else {
                "#ffffff"
            };
            let text = match opts.view {
                View::Rtt => fmt_ms(*v),
                View::Loss => format!("{:.1}%", v * 100.0),
                View::Inflation => format!("{v:.1}×"),
                View::Delta => format!("{}{}", if *v > 0.0 { "+" } else { "" }, fmt_ms(*v)),
            };
            let _ = writeln!(
                out,
                "<text x=\"{x}\" y=\"{y}\" fill=\"{ink}\">{}</text>",
                xml(&text)
            );
        }
        out.push_str("</g>\n");
    }

    legend(&mut out, opts.view, scale, lx, gy, bar_h);
    out.push_str("</svg>\n");
    out
}

fn severity_stroke(s: Severity) -> (Rgb, u8) {
    match s {
        Severity::Warning => (scale::WARNING, 2),
        Severity::Critical => (scale::CRITICAL, 3),
    }
}
