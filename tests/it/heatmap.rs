//! Heatmaps: snapshots, real rasterisation, determinism, size, and the README's picture.

use serde_json::{Value, json};

use crate::harness::{Dir, repo};

fn path(source: &str, target: &str, p50_ms: Option<f64>, sent: u64, received: u64) -> Value {
    // The statistics follow from the samples, as every reader checks: all replies at
    // the p50 but the slowest, which puts the p95 10% above it.
    let us = p50_ms.map(|p| (p * 1000.0).round() as u64);
    let r = received as usize;
    let rank = 0.95 * r.saturating_sub(1) as f64;
    let frac = rank - rank.floor();
    let samples = (0..sent as usize)
        .map(|i| match us {
            Some(us) if i + 1 == r && frac > 0.0 => {
                Some(us + (us as f64 * 0.1 / frac).round() as u64)
            }
            Some(us) if i < r => Some(us),
            _ => None,
        })
        .collect();
    let mut p = latmap::report::PathEntry::from_samples(
        source,
        target,
        latmap::config::ProbeKind::Udp,
        &format!("{target}.example:862"),
        samples,
    );
    p.address = Some("127.0.0.1:862".into());
    serde_json::to_value(p).expect("JSON")
}

fn run(id: &str, regions: Value, paths: Vec<Value>) -> Value {
    json!({
        "schema": "latmap.run/1", "id": id,
        "started_at": "2026-01-02T03:04:05Z", "finished_at": "2026-01-02T03:04:10Z",
        "regions": regions, "probers": {}, "paths": paths, "anomalies": []
    })
}

/// A path finding as the analysis stage stores it.
fn finding(detector: &str, severity: &str, source: &str, target: &str, message: &str) -> Value {
    json!({"detector": detector, "severity": severity, "kind": "udp",
           "subject": {"type": "path", "source": source, "target": target},
           "value": 0.2, "threshold": 0.01, "unit": "ratio", "message": message})
}

/// Four regions: `d` sent no report (no data), `a -> c` is unreachable, `b -> a` loses 20%,
/// `d` has no location (no inflation for its column).
pub fn small_run(scale: f64) -> Value {
    let regions = json!([
        {"name": "a", "location": {"lat": 50.1, "lon": 8.7}, "reported": true},
        {"name": "b", "location": {"lat": 39.0, "lon": -77.5}, "reported": true},
        {"name": "c", "location": {"lat": 1.35, "lon": 103.8}, "reported": true},
        {"name": "d", "location": null, "reported": false}
    ]);
    let paths = vec![
        path("a", "b", Some(100.0 * scale), 10, 10),
        path("a", "c", None, 10, 0),
        path("a", "d", Some(10.0), 10, 10),
        path("b", "a", Some(90.0), 10, 8),
        path("b", "c", Some(40.0), 10, 10),
        path("b", "d", Some(30.0), 10, 10),
        path("c", "a", Some(20.0), 10, 10),
        path("c", "b", Some(60.0), 10, 10),
        path("c", "d", Some(15.0), 10, 10),
    ];
    let id = if scale == 1.0 {
        "20260102T030405Z-000001"
    } else {
        "20260101T000000Z-000000"
    };
    let mut r = run(id, regions, paths);
    r["anomalies"] = json!([
        finding("loss", "critical", "b", "a", "b → a lost 20% of its probes"),
        finding("unreachable", "critical", "a", "c", "nothing came back from c"),
        {"detector": "region", "severity": "warning", "kind": "udp",
         "subject": {"type": "region", "region": "c", "direction": "outgoing"},
         "value": 1.0, "threshold": 0.5, "unit": "ratio", "message": "c's outgoing paths are slow",
         "explains": [finding("asymmetry", "warning", "c", "b", "c → b is slower than b → c")]}
    ]);
    r
}

fn write_small(dir: &Dir) {
    dir.write(
        "run.json",
        &serde_json::to_string_pretty(&small_run(1.0)).unwrap(),
    );
    dir.write(
        "base.json",
        &serde_json::to_string_pretty(&small_run(0.8)).unwrap(),
    );
}

#[test]
fn snapshots_of_every_view() {
    let dir = Dir::new();
    write_small(&dir);
    for (view, extra) in [
        ("rtt", &[][..]),
        ("loss", &[]),
        ("inflation", &["--order", "geo"]),
        ("delta", &["--baseline", "base.json"]),
    ] {
        let out = format!("{view}.svg");
        let mut args = vec!["render", "run.json", "--view", view, "--out", &out];
        args.extend_from_slice(extra);
        dir.latmap(&args).assert_ok();
        let svg = std::fs::read_to_string(dir.join(&out)).unwrap();
        insta::assert_snapshot!(format!("heatmap-{view}"), svg);
    }
    // The delta view without a baseline is an error that says what to pass.
    let out = dir.latmap(&["render", "run.json", "--view", "delta"]);
    assert_eq!(out.status, Some(2));
    assert!(out.stderr.contains("--baseline"), "{}", out.stderr);
}

/// Cell geometry read back from the SVG: (tooltip head "s → t", x, y) and the cell size.
fn cells(svg: &str) -> (Vec<(String, f32, f32)>, f32) {
    // The number in the attribute value right after `marker`.
    let number = |s: &str, marker: &str| -> f32 {
        s.split(marker)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let size = number(svg, "<g id=\"d\"><rect width=\"");
    let mut cells = Vec::new();
    for row in svg.split("<g transform=\"translate(0,").skip(1) {
        let y: f32 = row.split(')').next().unwrap().parse().unwrap();
        let row = row.split("</g>").next().unwrap();
        for chunk in row.split("<use href=\"#").skip(1) {
            let x = number(chunk, "x=\"");
            let title = chunk
                .split("<title>")
                .nth(1)
                .unwrap()
                .split([':', '<'])
                .next()
                .unwrap()
                .trim()
                .to_string();
            cells.push((title, x, y));
        }
    }
    (cells, size)
}

/// An SVG drawn by resvg, a renderer latmap did not write.
pub(crate) fn rasterise(svg: &str) -> resvg::tiny_skia::Pixmap {
    // No fonts are loaded, so no text is drawn over the cells' centres.
    let tree = resvg::usvg::Tree::from_str(svg, &resvg::usvg::Options::default())
        .expect("resvg parses the SVG");
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height()).unwrap();
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    pixmap
}

fn pixel_at_centre(
    pixmap: &resvg::tiny_skia::Pixmap,
    cells: &[(String, f32, f32)],
    size: f32,
    head: &str,
) -> (u8, u8, u8) {
    let (_, x, y) = cells
        .iter()
        .find(|(t, _, _)| t == head)
        .unwrap_or_else(|| panic!("no cell {head}"));
    let p = pixmap
        .pixel((x + size / 2.0) as u32, (y + size / 2.0) as u32)
        .unwrap();
    (p.red(), p.green(), p.blue())
}

fn close(a: (u8, u8, u8), b: (u8, u8, u8), tol: i32) -> bool {
    (i32::from(a.0) - i32::from(b.0)).abs() <= tol
        && (i32::from(a.1) - i32::from(b.1)).abs() <= tol
        && (i32::from(a.2) - i32::from(b.2)).abs() <= tol
}

#[test]
fn rasterised_cells_have_the_scale_colour_of_their_value() {
    let dir = Dir::new();
    write_small(&dir);
    dir.latmap(&["render", "run.json", "--out", "rtt.svg"])
        .assert_ok();
    let svg = std::fs::read_to_string(dir.join("rtt.svg")).unwrap();
    let (cells, size) = cells(&svg);
    assert_eq!(cells.len(), 16);
    let pixmap = rasterise(&svg);
    // The p50 values run from 10 to 100 ms, so the log scale spans exactly 10..100 ms:
    // a value v sits at ln(v/10)/ln(10) of viridis (the renderer quantises to 1/128
    // of the scale, well inside the tolerance).
    for (head, ms) in [
        ("a → b", 100.0),
        ("a → d", 10.0),
        ("b → c", 40.0),
        ("c → a", 20.0),
        ("c → b", 60.0),
    ] {
        let t = (ms / 10.0f64).ln() / 10f64.ln();
        let want = colorous::VIRIDIS.eval_continuous(t);
        let got = pixel_at_centre(&pixmap, &cells, size, head);
        assert!(
            close(got, (want.r, want.g, want.b), 3),
            "{head}: pixel {got:?}, viridis({t:.3}) = {want:?}"
        );
    }
    // The diagonal's centre lies on its corner-to-corner line.
    let diag = pixel_at_centre(&pixmap, &cells, size, "a → a");
    assert!(close(diag, (0x96, 0x96, 0x96), 40), "diagonal {diag:?}");
    assert_eq!(
        pixel_at_centre(&pixmap, &cells, size, "a → c"),
        (0, 0, 0),
        "unreachable"
    );
    // Findings outline their cells by severity: critical red on b → a, warning orange on
    // c → b (folded under the region finding of c), none on c → a.
    let edge = |head: &str| {
        let (_, x, y) = cells.iter().find(|(t, _, _)| t == head).unwrap();
        let p = pixmap
            .pixel((x + size / 2.0) as u32, (*y + 1.0) as u32)
            .unwrap();
        (p.red(), p.green(), p.blue())
    };
    assert!(
        close(edge("b → a"), (0xe4, 0x1a, 0x1c), 10),
        "b → a edge {:?}",
        edge("b → a")
    );
    assert!(
        close(edge("c → b"), (0xff, 0x8c, 0x00), 10),
        "c → b edge {:?}",
        edge("c → b")
    );
    let t = (20.0f64 / 10.0).ln() / 10f64.ln();
    let plain = colorous::VIRIDIS.eval_continuous(t);
    assert!(
        close(edge("c → a"), (plain.r, plain.g, plain.b), 3),
        "c → a edge {:?}",
        edge("c → a")
    );
    // Row d sent nothing: its cells are "no data", striped in white and grey, and no
    // pixel of them is a colour of the scale.
    for head in ["d → a", "d → b", "d → c"] {
        let (_, x, y) = cells.iter().find(|(t, _, _)| t == head).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for dy in (4..size as u32 - 4).step_by(3) {
            for dx in (4..size as u32 - 4).step_by(3) {
                let p = pixmap.pixel(*x as u32 + dx, *y as u32 + dy).unwrap();
                let got = (p.red(), p.green(), p.blue());
                seen.insert(got);
                for i in 0..=1000 {
                    let c = colorous::VIRIDIS.eval_continuous(f64::from(i) / 1000.0);
                    assert!(
                        !close(got, (c.r, c.g, c.b), 40),
                        "{head} pixel {got:?} looks like viridis {c:?}"
                    );
                }
            }
        }
        assert!(
            seen.contains(&(255, 255, 255))
                && seen.iter().any(|c| close(*c, (0x9e, 0x9e, 0x9e), 10)),
            "{head}: not striped: {seen:?}"
        );
    }
}

/// A synthetic run of `n` regions named like cloud regions (9 to 14 characters, as
/// `us-east-1` to `ap-southeast-2`).
fn big_run(n: usize) -> Value {
    let area = ["us", "eu", "ap", "sa", "ca", "me", "af"];
    let part = [
        "east",
        "west",
        "south",
        "north",
        "central",
        "southeast",
        "northeast",
    ];
    let names: Vec<String> = (0..n)
        .map(|i| format!("{}-{}-{}", area[i % 7], part[(i / 7) % 7], i / 49 + 1))
        .collect();
    let regions: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, name)| json!({"name": name, "location": {"lat": (i as f64 * 7.0) % 140.0 - 70.0, "lon": (i as f64 * 37.0) % 360.0 - 180.0}, "reported": true}))
        .collect();
    let mut paths = Vec::new();
    for (i, s) in names.iter().enumerate() {
        for (j, t) in names.iter().enumerate() {
            if i != j {
                // With their samples: a reader checks the statistics against them.
                paths.push(path(
                    s,
                    t,
                    Some(5.0 + ((i * 31 + j * 17) % 300) as f64),
                    10,
                    10,
                ));
            }
        }
    }
    run("20260102T030405Z-000100", json!(regions), paths)
}

#[test]
fn a_100_region_heatmap_stays_under_1_mib_and_300_regions_render() {
    let dir = Dir::new();
    for (n, limit) in [(100usize, Some(1usize << 20)), (300, None)] {
        // (The 300-region map is only drawn: it takes long enough in a debug build.)
        dir.write("big.json", &serde_json::to_string(&big_run(n)).unwrap());
        dir.latmap(&["render", "big.json", "--out", "big.svg"])
            .assert_ok();
        let bytes = std::fs::metadata(dir.join("big.svg")).unwrap().len() as usize;
        eprintln!("{n} regions: {bytes} bytes");
        if let Some(limit) = limit {
            assert!(bytes <= limit, "{n}-region heatmap is {bytes} bytes");
        }
        let svg = std::fs::read_to_string(dir.join("big.svg")).unwrap();
        assert_eq!(svg.matches("<use href=\"#").count(), n * n);
        if n == 100 {
            // Same run, same bytes.
            dir.latmap(&["render", "big.json", "--out", "again.svg"])
                .assert_ok();
            assert!(
                std::fs::read(dir.join("again.svg")).unwrap() == svg.as_bytes(),
                "output differs between renders"
            );
        }
    }
}

#[test]
fn the_readme_heatmap_is_current() {
    // docs/heatmap-rtt.svg is drawn from docs/lab-run.json; regenerate both with the
    // command in docs/heatmaps.md when the renderer or the default lab changes.
    let dir = Dir::new();
    let run = repo().join("docs/lab-run.json");
    dir.latmap(&["render", run.to_str().unwrap(), "--out", "fresh.svg"])
        .assert_ok();
    let fresh = std::fs::read_to_string(dir.join("fresh.svg")).unwrap();
    let kept = std::fs::read_to_string(repo().join("docs/heatmap-rtt.svg")).unwrap();
    assert!(
        fresh == kept,
        "docs/heatmap-rtt.svg is stale: run `cargo run --release -- render docs/lab-run.json --out docs/heatmap-rtt.svg`"
    );
}
