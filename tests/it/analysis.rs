//! The analysis stage: every scenario under `tests/fixtures/scenarios/` gives exactly
//! its expected findings, detectors never panic on random matrices, and `latmap report`
//! prints and exits as documented.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use latmap::anomaly::{Recent, analyse, analyse_with_history};
use latmap::config::{DetectorId, Location, ProbeKind};
use latmap::history::{Past, PathKey, Point};
use latmap::report::{PathEntry, synthetic_samples};
use latmap::run::{Anomaly, Run, RunRegion, Severity, Subject};
use proptest::prelude::*;
use serde::Deserialize;

use crate::harness::{Dir, repo};

fn scenarios() -> PathBuf {
    repo().join("tests/fixtures/scenarios")
}

/// One scenario file (see tests/fixtures/scenarios/README.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    description: String,
    #[serde(default = "default_count")]
    count: usize,
    rtt_ms: String,
    lost: Option<String>,
    jitter_ms: Option<String>,
    /// Probes each path's prober sent more than 10 ms late.
    lagged: Option<String>,
    #[serde(default)]
    locations: BTreeMap<String, [f64; 2]>,
    thresholds: Option<toml::Table>,
    /// The runs of a series before this one, for `shift`.
    history: Option<HistorySpec>,
    #[serde(default)]
    expect: Vec<Expected>,
}

/// Earlier runs of a series: each path's median in them, with seeded noise.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistorySpec {
    /// How many earlier runs, one every 5 minutes before this one.
    runs: usize,
    /// Each path's median in those runs; a path left empty has no history.
    rtt_ms: String,
    /// Each earlier run's median is off by a seeded amount in ± this.
    #[serde(default)]
    noise_ms: f64,
    /// Per path, how many of the latest earlier runs were already at this run's median
    /// (and so had a `shift` finding).
    shifted: Option<String>,
}

fn default_count() -> usize {
    100
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    detector: String,
    severity: String,
    subject: String,
    relay: Option<String>,
    #[serde(default)]
    explains: Vec<String>,
}

/// A CSV matrix: the header's names and `cells[(source, target)]` for non-empty cells.
fn matrix(text: &str) -> (Vec<String>, BTreeMap<(String, String), f64>) {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let header: Vec<String> = lines
        .next()
        .expect("a header")
        .split(',')
        .skip(1)
        .map(|s| s.trim().to_string())
        .collect();
    let mut cells = BTreeMap::new();
    for line in lines {
        let mut parts = line.split(',').map(str::trim);
        let source = parts.next().expect("a row name").to_string();
        for (target, cell) in header.iter().zip(parts) {
            if !cell.is_empty() {
                let v: f64 = cell
                    .parse()
                    .unwrap_or_else(|_| panic!("{cell:?} is no number"));
                cells.insert((source.clone(), target.clone()), v);
            }
        }
    }
    (header, cells)
}

/// The run a scenario describes, and the configuration its thresholds make.
fn scenario_run(s: &Scenario, file: &Path) -> (Run, latmap::config::Config, Option<Recent>) {
    let (names, rtt) = matrix(&s.rtt_ms);
    let lost = s.lost.as_deref().map(|t| matrix(t).1).unwrap_or_default();
    let jitter = s
        .jitter_ms
        .as_deref()
        .map(|t| matrix(t).1)
        .unwrap_or_default();
    let lagged = s.lagged.as_deref().map(|t| matrix(t).1).unwrap_or_default();
    let regions: Vec<RunRegion> = names
        .iter()
        .map(|n| RunRegion {
            name: n.clone(),
            location: s.locations.get(n).map(|&[lat, lon]| Location { lat, lon }),
            reported: true,
        })
        .collect();
    let paths: Vec<PathEntry> = rtt
        .iter()
        .filter(|((a, b), _)| a != b)
        .map(|((a, b), &ms)| {
            let key = (a.clone(), b.clone());
            let samples = synthetic_samples(
                (ms * 1000.0).round() as u64,
                lost.get(&key).copied().unwrap_or(0.0) as usize,
                (jitter.get(&key).copied().unwrap_or(0.0) * 1000.0).round() as u64,
                s.count,
            );
            let mut p = PathEntry::from_samples(a, b, ProbeKind::Udp, "192.0.2.1:862", samples);
            p.lagged = lagged.get(&key).copied().unwrap_or(0.0) as u64;
            p
        })
        .collect();
    let mut run = Run::new(regions, paths, chrono::DateTime::UNIX_EPOCH);
    // A prober whose paths lagged says so in its health, as a real one does.
    for ((source, _), &n) in &lagged {
        let h = run.probers.entry(source.clone()).or_default();
        h.lagged_sends += n as u64;
        h.send_lag_p99_us = 15_000;
        h.send_lag_max_us = 40_000;
    }
    // The thresholds go through the real configuration loader, next to a fleet of the
    // scenario's regions.
    let mut config = String::new();
    if let Some(t) = &s.thresholds {
        let mut top = toml::Table::new();
        top.insert("thresholds".into(), toml::Value::Table(t.clone()));
        config.push_str(&toml::to_string(&top).expect("thresholds as TOML"));
    }
    for n in &names {
        config.push_str(&format!(
            "\n[[region]]\nname = \"{n}\"\ntargets = [\"192.0.2.1\"]\n"
        ));
    }
    let config = latmap::config::parse(&config, file)
        .unwrap_or_else(|e| panic!("{}: thresholds do not load:\n{e}", file.display()));
    let history = s.history.as_ref().map(|h| scenario_history(h, &run, &rtt));
    (run, config, history)
}

/// The points of the earlier runs a scenario's `[history]` describes, as a series' store
/// gives them to the detectors.
fn scenario_history(
    h: &HistorySpec,
    run: &Run,
    now_ms: &BTreeMap<(String, String), f64>,
) -> Recent {
    use rand::{RngExt, SeedableRng};
    let (_, normal) = matrix(&h.rtt_ms);
    let shifted = h
        .shifted
        .as_deref()
        .map(|t| matrix(t).1)
        .unwrap_or_default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let mut recent = Recent::new();
    for p in &run.paths {
        let key = (p.source.clone(), p.target.clone());
        let Some(&base) = normal.get(&key) else {
            continue;
        };
        let already = shifted.get(&key).copied().unwrap_or(0.0) as usize;
        let points = (0..h.runs)
            .map(|k| {
                let at = run.started_at - chrono::Duration::minutes(5 * (h.runs - k) as i64);
                let late = k + already >= h.runs;
                let ms = if late {
                    now_ms[&key]
                } else {
                    base + rng.random_range(-1.0..=1.0) * h.noise_ms
                };
                let us = (ms * 1000.0).round() as u32;
                Past::of(&Point {
                    at,
                    sent: 100,
                    received: 100,
                    rtt_us: Some([us; 6]),
                    findings: if late {
                        vec![(DetectorId::Shift, Severity::Warning)]
                    } else {
                        Vec::new()
                    },
                    lagged: false,
                })
            })
            .collect();
        recent.insert(PathKey::of(p), points);
    }
    recent
}

/// A finding as the scenarios write it.
fn describe(a: &Anomaly) -> String {
    let mut s = format!("{} {} {}", a.severity, a.detector, a.subject);
    if let Some(r) = &a.relay {
        s.push_str(&format!(" via {r}"));
    }
    if !a.explains.is_empty() {
        let mut e: Vec<String> = a
            .explains
            .iter()
            .map(|x| format!("{} {}", x.detector, x.subject))
            .collect();
        e.sort();
        s.push_str(&format!(" explaining [{}]", e.join(", ")));
    }
    s
}

fn expected(e: &Expected) -> String {
    let mut s = format!("{} {} {}", e.severity, e.detector, e.subject);
    if let Some(r) = &e.relay {
        s.push_str(&format!(" via {r}"));
    }
    if !e.explains.is_empty() {
        let mut x = e.explains.clone();
        x.sort();
        s.push_str(&format!(" explaining [{}]", x.join(", ")));
    }
    s
}

#[test]
fn every_scenario_gives_exactly_its_findings() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenarios())
        .expect("scenario folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 12, "{files:?}");
    let mut failures = Vec::new();
    let mut covered: Vec<DetectorId> = Vec::new();
    let mut quiet = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read scenario");
        let s: Scenario = toml::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not a scenario: {e}", file.display()));
        let (run, config, history) = scenario_run(&s, file);
        let found = analyse_with_history(&run, &config.thresholds, history.as_ref());
        let mut got: Vec<String> = found.iter().map(describe).collect();
        let mut want: Vec<String> = s.expect.iter().map(expected).collect();
        got.sort();
        want.sort();
        if got != want {
            failures.push(format!(
                "{} ({}):\n  expected: {want:#?}\n  found: {got:#?}\n  messages: {:#?}",
                file.display(),
                s.description,
                found.iter().map(|a| &a.message).collect::<Vec<_>>()
            ));
        }
        for e in &s.expect {
            let d: DetectorId = e.detector.parse().expect("a detector id");
            covered.push(d);
            for x in &e.explains {
                covered.push(x.split(' ').next().unwrap_or("").parse().expect("an id"));
            }
        }
        quiet += usize::from(s.expect.is_empty());
        // Whatever is found survives the run file.
        let mut with = run.clone();
        with.anomalies = found;
        let back: Run =
            serde_json::from_str(&latmap::artifact::to_string(&with).expect("serialize"))
                .expect("read back");
        assert_eq!(back.anomalies, with.anomalies, "{}", file.display());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    for d in DetectorId::ALL {
        assert!(covered.contains(&d), "no scenario expects a {d} finding");
    }
    assert!(quiet >= 3, "quiet scenarios: {quiet}");
}

/// A random matrix: regions, optional locations, and per path an optional
/// (rtt ms, lost, jitter ms).
fn arbitrary_run() -> impl Strategy<Value = Run> {
    (1usize..8, 1usize..30).prop_flat_map(|(n, count)| {
        let cell = prop::option::weighted(
            0.8,
            (
                0.0f64..2_000.0,
                0usize..=count,
                0.0f64..200.0,
                any::<bool>(),
            ),
        );
        let location = prop::option::of((-90.0f64..=90.0, -180.0f64..=180.0));
        (
            prop::collection::vec(cell, n * n),
            prop::collection::vec(location, n),
            Just((n, count)),
        )
            .prop_map(|(cells, locations, (n, count))| {
                let names: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
                let regions = names
                    .iter()
                    .zip(&locations)
                    .enumerate()
                    .map(|(i, (name, loc))| RunRegion {
                        name: name.clone(),
                        location: loc.map(|(lat, lon)| Location { lat, lon }),
                        reported: i % 5 != 4,
                    })
                    .collect();
                let mut paths = Vec::new();
                for (c, cell) in cells.iter().enumerate() {
                    let (i, j) = (c / n, c % n);
                    if let Some((rtt, lost, jitter, twice)) = cell {
                        if i == j && !twice {
                            continue; // a self path now and then, to be ignored
                        }
                        let samples = synthetic_samples(
                            (rtt * 1000.0) as u64,
                            *lost,
                            (jitter * 1000.0) as u64,
                            count,
                        );
                        paths.push(PathEntry::from_samples(
                            &names[i],
                            &names[j],
                            ProbeKind::Udp,
                            "t1",
                            samples.clone(),
                        ));
                        if *twice && i != j {
                            // A second target of the same path.
                            paths.push(PathEntry::from_samples(
                                &names[i],
                                &names[j],
                                ProbeKind::Udp,
                                "t2",
                                samples.into_iter().rev().collect(),
                            ));
                        }
                    }
                }
                Run::new(regions, paths, chrono::DateTime::UNIX_EPOCH)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn detectors_never_panic_and_findings_are_well_formed(run in arbitrary_run()) {
        let mut t = latmap::config::Thresholds::default();
        t.limits.slo_p95_ms = Some(150.0);
        let found = analyse(&run, &t);
        let names: Vec<&str> = run.regions.iter().map(|r| r.name.as_str()).collect();
        for a in &found {
            prop_assert!(a.value.is_finite() && a.threshold.is_finite());
            prop_assert!(!a.message.is_empty());
            match &a.subject {
                Subject::Path { source, target } => {
                    prop_assert!(names.contains(&source.as_str()) && names.contains(&target.as_str()));
                    prop_assert!(source != target);
                    prop_assert!(a.explains.is_empty());
                }
                Subject::Region { region, .. } => {
                    prop_assert!(names.contains(&region.as_str()));
                    prop_assert!(!a.explains.is_empty());
                    let worst = a.explains.iter().map(|e| e.severity).max();
                    prop_assert_eq!(Some(a.severity), worst);
                }
            }
        }
        // No path finding is reported twice (top level or folded).
        let mut all: Vec<String> = found
            .iter()
            .flat_map(|a| std::iter::once(a).chain(&a.explains))
            .filter(|a| a.detector != DetectorId::Region)
            .map(|a| format!("{} {}", a.detector, a.subject))
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        prop_assert_eq!(all.len(), n);
        // And the run file holds them.
        let mut with = run.clone();
        with.anomalies = found;
        let text = latmap::artifact::to_string(&with).expect("serialize");
        let back: Run = serde_json::from_str(&text).expect("read back");
        prop_assert_eq!(back.anomalies, with.anomalies);
    }
}

/// Writes the run of scenario `name` (analysed, with a fixed id) to `dir/file`.
fn write_scenario_run(dir: &Dir, name: &str, file: &str) -> PathBuf {
    let path = scenarios().join(name);
    let text = std::fs::read_to_string(&path).expect("read scenario");
    let s: Scenario = toml::from_str(&text).expect("a scenario");
    let (mut run, config, _) = scenario_run(&s, &path);
    run.id = "19700101T000000Z-000000".into();
    run.anomalies = analyse(&run, &config.thresholds);
    let out = dir.join(file);
    run.write(&out).expect("write run");
    out
}

#[test]
fn report_prints_text_markdown_and_json() {
    let dir = Dir::new();
    write_scenario_run(&dir, "region-outgoing.toml", "run.json");
    for (format, name) in [
        ("text", "report-text"),
        ("markdown", "report-markdown"),
        ("json", "report-json"),
    ] {
        let out = dir.latmap(&["report", "run.json", "--format", format]);
        out.assert_ok();
        insta::assert_snapshot!(name, out.stdout);
    }
    let json: serde_json::Value =
        serde_json::from_str(&dir.latmap(&["report", "run.json", "-f", "json"]).stdout)
            .expect("JSON output");
    assert_eq!(json["critical"], 1);
    assert_eq!(json["anomalies"][0]["detector"], "region");
}

#[test]
fn report_exits_1_at_fail_on() {
    let dir = Dir::new();
    write_scenario_run(&dir, "region-outgoing.toml", "critical.json");
    write_scenario_run(&dir, "asymmetry.toml", "warning.json");
    write_scenario_run(&dir, "clean-mesh.toml", "clean.json");
    for (file, fail_on, status) in [
        ("critical.json", Some("critical"), 1),
        ("critical.json", Some("warning"), 1),
        ("critical.json", None, 0),
        ("warning.json", Some("critical"), 0),
        ("warning.json", Some("warning"), 1),
        ("clean.json", Some("warning"), 0),
    ] {
        let mut args = vec!["report", file];
        if let Some(level) = fail_on {
            args.extend(["--fail-on", level]);
        }
        let out = dir.latmap(&args);
        assert_eq!(out.status, Some(status), "{args:?}: {}", out.stderr);
        assert!(!out.stdout.is_empty());
    }
    let out = dir.latmap(&["report", "clean.json"]);
    assert!(
        out.stdout
            .contains("no findings: every path is within its thresholds"),
        "{}",
        out.stdout
    );
    let out = dir.latmap(&["report", "absent.json"]);
    assert_eq!(out.status, Some(2));
    assert!(
        out.stderr.contains("cannot read absent.json"),
        "{}",
        out.stderr
    );
}

#[test]
fn report_reanalyses_with_the_configuration() {
    let dir = Dir::new();
    write_scenario_run(&dir, "region-outgoing.toml", "run.json");
    let names = ["a", "b", "c", "d", "e", "f"];
    let mut config = String::from("[thresholds]\nskip = [\"loss\", \"region\"]\n");
    for n in names {
        config.push_str(&format!(
            "\n[[region]]\nname = \"{n}\"\ntargets = [\"192.0.2.1\"]\n"
        ));
    }
    dir.write("fleet.toml", &config);
    let out = dir.latmap(&[
        "report",
        "run.json",
        "--reanalyse",
        "--config",
        "fleet.toml",
        "-f",
        "json",
    ]);
    out.assert_ok();
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let detectors: Vec<&str> = json["anomalies"]
        .as_array()
        .expect("anomalies")
        .iter()
        .map(|a| a["detector"].as_str().expect("id"))
        .collect();
    assert_eq!(detectors, ["asymmetry"; 5]);
    // Without a configuration file, the defaults.
    let out = dir.latmap(&["report", "run.json", "--reanalyse", "-f", "json"]);
    out.assert_ok();
    assert!(
        out.stdout.contains("\"detector\": \"region\""),
        "{}",
        out.stdout
    );
    // A named configuration must exist.
    let out = dir.latmap(&[
        "report",
        "run.json",
        "--reanalyse",
        "--config",
        "nowhere.toml",
    ]);
    assert_eq!(out.status, Some(2));
}

/// What the default lab (`regions.toml`) must produce: its three injected faults and
/// nothing else. Called by the lab's sweep test on its run.
pub fn assert_default_lab_findings(run: &serde_json::Value) {
    let run: Run = serde_json::from_value(run.clone()).expect("a typed run");
    let summary: Vec<String> = run
        .anomalies
        .iter()
        .map(|a| match a.detector {
            // Its severity depends on how many of the lossy region's probes are lost.
            DetectorId::Region => format!("{} {}", a.detector, a.subject),
            _ => format!("{} {} {}", a.severity, a.detector, a.subject),
        })
        .collect();
    let mut sorted = summary.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "critical loss eu-west-1 → us-east-1",
            "region ap-south-1 (outgoing)",
            "warning detour eu-central-1 → us-west-2",
            "warning detour us-west-2 → eu-central-1",
        ],
        "{:#?}",
        run.anomalies
    );
    let region = run
        .anomalies
        .iter()
        .find(|a| a.detector == DetectorId::Region)
        .expect("a region finding");
    // Everything it explains is in ap-south-1's row, and every path of the row is
    // asymmetric.
    let mut asymmetric = 0;
    for e in &region.explains {
        match &e.subject {
            Subject::Path { source, .. } => assert_eq!(source, "ap-south-1", "{e:#?}"),
            other => panic!("a region finding explains {other}"),
        }
        asymmetric += usize::from(e.detector == DetectorId::Asymmetry);
    }
    assert_eq!(asymmetric, 9, "{:#?}", region.explains);
    assert!(region.severity >= Severity::Warning);
}

#[test]
fn aggregate_finds_anomalies_with_default_or_configured_thresholds() {
    use latmap::report::{REPORT_SCHEMA, RegionInfo, RegionReport};

    let dir = Dir::new();
    let path = scenarios().join("region-outgoing.toml");
    let s: Scenario = toml::from_str(&std::fs::read_to_string(&path).expect("read")).expect("toml");
    let (run, config, _) = scenario_run(&s, &path);
    let infos: Vec<RegionInfo> = run
        .regions
        .iter()
        .map(|r| RegionInfo {
            name: r.name.clone(),
            location: r.location,
        })
        .collect();
    let mut files = Vec::new();
    for r in &run.regions {
        let report = RegionReport {
            schema: REPORT_SCHEMA.to_string(),
            region: r.name.clone(),
            started_at: run.started_at,
            finished_at: run.finished_at,
            regions: infos.clone(),
            prober: Default::default(),
            paths: run
                .paths
                .iter()
                .filter(|p| p.source == r.name)
                .cloned()
                .collect(),
        };
        let file = format!("{}.json", r.name);
        latmap::artifact::write_json_atomic(&dir.join(&file), &report).expect("write report");
        files.push(file);
    }
    let mut args: Vec<&str> = vec!["aggregate"];
    args.extend(files.iter().map(String::as_str));
    // No regions.toml here: the default thresholds.
    let out = dir.latmap(&[&args[..], &["-o", "run.json", "--fail-on", "critical"]].concat());
    assert_eq!(out.status, Some(1), "{}", out.stderr);
    assert!(
        out.stdout.contains("CRITICAL  region  d (outgoing)"),
        "{}",
        out.stdout
    );
    let stored = Run::read(&dir.join("run.json")).expect("a run");
    assert_eq!(stored.anomalies, analyse(&stored, &config.thresholds));
    assert_eq!(stored.anomalies.len(), 1);
    // A named configuration: its thresholds.
    let mut fleet = String::from("[thresholds]\nskip = [\"region\", \"loss\"]\n");
    for r in &run.regions {
        fleet.push_str(&format!(
            "\n[[region]]\nname = \"{}\"\ntargets = [\"192.0.2.1\"]\n",
            r.name
        ));
    }
    dir.write("fleet.toml", &fleet);
    let out = dir.latmap(&[&args[..], &["-o", "run2.json", "--config", "fleet.toml"]].concat());
    out.assert_ok();
    let stored = Run::read(&dir.join("run2.json")).expect("a run");
    assert_eq!(stored.anomalies.len(), 5);
    assert!(
        stored
            .anomalies
            .iter()
            .all(|a| a.detector == DetectorId::Asymmetry)
    );
    // A named configuration that is missing is an error, not the defaults.
    let out = dir.latmap(&[&args[..], &["-o", "run3.json", "--config", "nowhere.toml"]].concat());
    assert_eq!(out.status, Some(2));
    assert!(out.stderr.contains("nowhere.toml"), "{}", out.stderr);
}

/// The `detour` and `asymmetry` findings of a lab run (top level or folded under a region
/// finding) against the truth `rtt(i, j)` the lab emulated: every pair whose rule holds
/// by more than the measurement tolerance (`tolerance(rtt)` per RTT involved) is found,
/// and every pair found holds within it.
pub fn assert_findings_follow_the_matrix(
    run: &serde_json::Value,
    names: &[String],
    rtt: impl Fn(usize, usize) -> Option<f64>,
    tolerance: impl Fn(f64) -> f64,
) {
    let run: Run = serde_json::from_value(run.clone()).expect("a typed run");
    let t = latmap::config::Thresholds::default();
    let n = names.len();
    let found = |d: DetectorId| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = run
            .anomalies
            .iter()
            .flat_map(|a| std::iter::once(a).chain(&a.explains))
            .filter(|a| a.detector == d)
            .filter_map(|a| match &a.subject {
                Subject::Path { source, target } => Some((source.clone(), target.clone())),
                Subject::Region { .. } => None,
            })
            .collect();
        v.sort();
        v
    };
    // How far each rule holds in truth (positive: it holds), and its uncertainty.
    let mut detours = (Vec::new(), Vec::new()); // (must be found, may be found)
    let mut asymmetric = (Vec::new(), Vec::new());
    for i in 0..n {
        for j in 0..n {
            let Some(d) = rtt(i, j) else { continue };
            let best = (0..n)
                .filter(|&k| k != i && k != j)
                .filter_map(|k| Some((rtt(i, k)?, rtt(k, j)?)))
                .min_by(|a, b| (a.0 + a.1).total_cmp(&(b.0 + b.1)));
            if let Some((a, b)) = best {
                let margin = (d - a - b) - (d * t.detour_min_pct / 100.0).max(t.detour_min_ms);
                let slack = tolerance(d) + tolerance(a) + tolerance(b);
                let key = (names[i].clone(), names[j].clone());
                if margin > slack {
                    detours.0.push(key.clone());
                }
                if margin >= -slack {
                    detours.1.push(key);
                }
            }
            if let Some(back) = rtt(j, i)
                && d > back
            {
                let margin =
                    (d - back) - (back * t.asymmetry_min_pct / 100.0).max(t.asymmetry_min_ms);
                let slack = tolerance(d) + tolerance(back);
                let key = (names[i].clone(), names[j].clone());
                if margin > slack {
                    asymmetric.0.push(key.clone());
                }
                if margin >= -slack {
                    asymmetric.1.push(key);
                }
            }
        }
    }
    for (what, got, (must, may)) in [
        ("detour", found(DetectorId::Detour), detours),
        ("asymmetry", found(DetectorId::Asymmetry), asymmetric),
    ] {
        let missed: Vec<_> = must.iter().filter(|k| !got.contains(k)).collect();
        let extra: Vec<_> = got.iter().filter(|k| !may.contains(k)).collect();
        assert!(
            missed.is_empty() && extra.is_empty(),
            "{what}: missed {missed:?}, not implied by the matrix {extra:?}"
        );
        eprintln!(
            "{what}: {} found; {} implied beyond doubt, {} within the tolerance",
            got.len(),
            must.len(),
            may.len()
        );
    }
}
