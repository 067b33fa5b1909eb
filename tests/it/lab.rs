//! The lab, end to end: `latmap sweep` measures real packets against the emulated truth.

use std::collections::BTreeMap;

use rand::{RngExt, SeedableRng};
use serde_json::Value;

use crate::harness::{Dir, binomial_interval, read_json, repo, timing_lock};

/// RTT p50 must be within max(1 ms, 2%) of the emulated RTT.
fn rtt_tolerance_ms(truth_ms: f64) -> f64 {
    (truth_ms * 0.02).max(1.0)
}

/// Checks every path of a run against `truth[(source, target)] = (rtt_ms or None, loss)`.
fn check_against_truth(run: &Value, truth: &BTreeMap<(String, String), (Option<f64>, f64)>) {
    let paths = run["paths"].as_array().expect("paths");
    assert_eq!(paths.len(), truth.len(), "one path per (source, target)");
    let mut worst: f64 = 0.0;
    let mut errors = Vec::new();
    // Every lossy path's count is checked: together they may fail by chance 1% of the
    // time, so each gets a share of that (a lossless path must lose nothing at all).
    let lossy = truth
        .values()
        .filter(|(r, l)| r.is_some() && *l > 0.0)
        .count()
        .max(1);
    let alpha = 0.01 / lossy as f64;
    for p in paths {
        let key = (
            p["source"].as_str().unwrap().to_string(),
            p["target"].as_str().unwrap().to_string(),
        );
        let (rtt, loss) = truth
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected path {key:?}"));
        let sent = p["sent"].as_u64().unwrap();
        let received = p["received"].as_u64().unwrap();
        assert!(sent > 0, "{key:?} sent nothing");
        match rtt {
            None => {
                assert_eq!(received, 0, "{key:?} is unreachable in the lab");
                assert!(p["rtt_us"].is_null());
            }
            Some(want) => {
                let got = p["rtt_us"]["p50"]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{key:?} has no RTT"))
                    / 1000.0;
                let err = (got - want).abs();
                worst = worst.max(err);
                errors.push(got - want);
                assert!(
                    err <= rtt_tolerance_ms(*want),
                    "{key:?}: p50 {got:.3} ms, lab RTT {want:.3} ms"
                );
                let (lo, hi) = binomial_interval(sent, *loss, alpha);
                let lost = sent - received;
                assert!(
                    (lo..=hi).contains(&lost),
                    "{key:?}: lost {lost} of {sent}, outside the {:.3}% interval {lo}..={hi} of loss {loss} \
                     (99% for all {lossy} lossy paths together)",
                    100.0 * (1.0 - alpha)
                );
            }
        }
    }
    let mean = errors.iter().sum::<f64>() / errors.len().max(1) as f64;
    eprintln!(
        "p50 error over {} paths: mean {mean:+.3} ms, worst {worst:.3} ms",
        errors.len()
    );
}

fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (p1, p2) = (a.0.to_radians(), b.0.to_radians());
    let dp = p2 - p1;
    let dl = (b.1 - a.1).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

/// The truth of a location-based lab, computed from the TOML text independently of
/// latmap's own code.
pub(crate) fn geo_truth(config_text: &str) -> BTreeMap<(String, String), (Option<f64>, f64)> {
    let doc: toml::Table = toml::from_str(config_text).expect("valid TOML");
    let lab = doc["lab"].as_table().expect("[lab]");
    let num = |v: Option<&toml::Value>, d: f64| {
        v.and_then(|v| v.as_float().or(v.as_integer().map(|i| i as f64)))
            .unwrap_or(d)
    };
    let inflation = num(lab.get("inflation"), 1.6);
    let base = num(lab.get("base_ms"), 1.0);
    let regions: Vec<(String, (f64, f64))> = doc["region"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let loc = &r["location"];
            (
                r["name"].as_str().unwrap().to_string(),
                (num(loc.get("lat"), 0.0), num(loc.get("lon"), 0.0)),
            )
        })
        .collect();
    let mut truth = BTreeMap::new();
    for (a, la) in &regions {
        for (b, lb) in &regions {
            if a != b {
                truth.insert(
                    (a.clone(), b.clone()),
                    (Some(base + inflation * haversine_km(*la, *lb) / 100.0), 0.0),
                );
            }
        }
    }
    for fault in lab
        .get("fault")
        .and_then(|f| f.as_array())
        .into_iter()
        .flatten()
    {
        let s = fault.get("source").and_then(|v| v.as_str());
        let t = fault.get("target").and_then(|v| v.as_str());
        let both = fault
            .get("both_directions")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let extra = num(fault.get("extra_ms"), 0.0);
        let loss = num(fault.get("loss_pct"), 0.0) / 100.0;
        for ((a, b), (rtt, l)) in truth.iter_mut() {
            let fwd = s.is_none_or(|s| s == a) && t.is_none_or(|t| t == b);
            let bwd = both && s.is_none_or(|s| s == b) && t.is_none_or(|t| t == a);
            if fwd || bwd {
                *rtt = rtt.map(|r| r + extra);
                *l = 1.0 - (1.0 - *l) * (1.0 - loss);
            }
        }
    }
    truth
}

#[test]
fn default_lab_sweep_matches_the_emulated_truth() {
    let _t = timing_lock();
    let dir = Dir::new();
    let text = std::fs::read_to_string(repo().join("regions.toml")).expect("root regions.toml");
    // Free ports, so that this test never collides with another lab on the machine.
    let text = text.replacen("[lab]\n", "[lab]\nport = 0\n", 1);
    dir.write("regions.toml", &text);
    let out = dir.latmap(&["sweep", "--out", "out"]);
    out.assert_ok();
    let run = read_json(&dir.join("out/run.json"));
    assert_eq!(run["schema"], "latmap.run/1");
    assert_eq!(run["regions"].as_array().unwrap().len(), 10);
    assert!(run["anomalies"].as_array().is_some());
    check_against_truth(&run, &geo_truth(&text));
    // The three injected faults are found, and nothing else.
    crate::analysis::assert_default_lab_findings(&run);
    assert!(out.stdout.contains("4 findings"), "{}", out.stdout);
    let report = dir.latmap(&["report", "out/run.json", "--fail-on", "critical"]);
    assert_eq!(report.status, Some(1), "{}", report.stderr);
    assert!(
        report
            .stdout
            .contains("CRITICAL  loss  eu-west-1 → us-east-1"),
        "{}",
        report.stdout
    );
    // The matrix table names every region.
    for r in run["regions"].as_array().unwrap() {
        assert!(
            out.stdout.contains(r["name"].as_str().unwrap()),
            "{}",
            out.stdout
        );
    }
}

pub(crate) fn matrix_csv(names: &[String], cell: impl Fn(usize, usize) -> String) -> String {
    let mut s = String::from(",");
    s.push_str(&names.join(","));
    s.push('\n');
    for (i, n) in names.iter().enumerate() {
        s.push_str(n);
        for j in 0..names.len() {
            s.push(',');
            if i != j {
                s.push_str(&cell(i, j));
            }
        }
        s.push('\n');
    }
    s
}

#[test]
fn matrix_lab_of_21_regions_matches_the_csv() {
    let _t = timing_lock();
    let dir = Dir::new();
    let names: Vec<String> = (0..21).map(|i| format!("region-{i:02}")).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let n = names.len();
    let rtt: Vec<Vec<f64>> = (0..n)
        .map(|_| {
            (0..n)
                .map(|_| ((2.0 + rng.random_range(0.0f64..1.0) * 330.0) * 1000.0).round() / 1000.0)
                .collect()
        })
        .collect();
    let mut loss = vec![vec![0.0; n]; n];
    loss[0][1] = 10.0;
    loss[5][7] = 2.0;
    loss[20][3] = 30.0;
    let unreachable = (4usize, 9usize);
    dir.write(
        "rtt.csv",
        &matrix_csv(&names, |i, j| {
            if (i, j) == unreachable {
                String::new()
            } else {
                format!("{}", rtt[i][j])
            }
        }),
    );
    dir.write(
        "loss.csv",
        &matrix_csv(&names, |i, j| format!("{}", loss[i][j])),
    );
    dir.write(
        "regions.toml",
        "[probe]\ncount = 60\ninterval = \"50ms\"\ntimeout = \"1s\"\n\n[lab]\nmatrix = \"rtt.csv\"\nloss = \"loss.csv\"\nport = 0\n",
    );
    dir.latmap(&["check"]).assert_ok();
    dir.latmap(&["sweep"]).assert_ok();
    let run = read_json(&dir.join("latmap-out/run.json"));
    let mut truth = BTreeMap::new();
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let r = if (i, j) == unreachable {
                    None
                } else {
                    Some(rtt[i][j])
                };
                truth.insert(
                    (names[i].clone(), names[j].clone()),
                    (r, loss[i][j] / 100.0),
                );
            }
        }
    }
    check_against_truth(&run, &truth);
    // The detours and asymmetries found are those the CSV implies, up to the lab's
    // measurement tolerance on each RTT involved.
    let rtt_of = |i: usize, j: usize| (i != j && (i, j) != unreachable).then(|| rtt[i][j]);
    crate::analysis::assert_findings_follow_the_matrix(&run, &names, rtt_of, rtt_tolerance_ms);
}

#[test]
fn aggregate_of_region_reports_gives_the_same_paths_as_sweep() {
    let _t = timing_lock();
    let dir = Dir::new();
    dir.write("rtt.csv", ",a,b,c\na,,10,20\nb,11,,30\nc,21,31,\n");
    // A fixed port, so that targets (and so path identities) are the same in every run.
    dir.write(
        "regions.toml",
        "[probe]\ncount = 30\ninterval = \"10ms\"\n\n[lab]\nmatrix = \"rtt.csv\"\nport = 38621\n",
    );
    dir.latmap(&["sweep", "--out", "swept"]).assert_ok();
    for r in ["a", "b", "c"] {
        dir.latmap(&["probe", "--region", r]).assert_ok();
    }
    dir.latmap(&[
        "aggregate",
        "a.json",
        "b.json",
        "c.json",
        "--out",
        "agg/run.json",
    ])
    .assert_ok();
    let swept = read_json(&dir.join("swept/run.json"));
    let agg = read_json(&dir.join("agg/run.json"));
    let key = |p: &Value| {
        (
            p["source"].as_str().unwrap().to_string(),
            p["target"].as_str().unwrap().to_string(),
            p["kind"].as_str().unwrap().to_string(),
            p["target_spec"].as_str().unwrap().to_string(),
            p["address"].as_str().unwrap().to_string(),
        )
    };
    let sp: Vec<_> = swept["paths"].as_array().unwrap().iter().collect();
    let ap: Vec<_> = agg["paths"].as_array().unwrap().iter().collect();
    assert_eq!(
        sp.iter().map(|p| key(p)).collect::<Vec<_>>(),
        ap.iter().map(|p| key(p)).collect::<Vec<_>>()
    );
    assert_eq!(sp.len(), 6);
    for (s, a) in sp.iter().zip(&ap) {
        assert_eq!(s["sent"], a["sent"]);
        let (x, y) = (
            s["rtt_us"]["p50"].as_f64().unwrap(),
            a["rtt_us"]["p50"].as_f64().unwrap(),
        );
        assert!(
            (x - y).abs() / 1000.0 <= rtt_tolerance_ms(x / 1000.0),
            "{:?}: {x} vs {y}",
            key(s)
        );
    }
    assert_eq!(swept["regions"], agg["regions"]);

    // One report alone: the other regions are "no data", not 100% loss.
    dir.latmap(&["aggregate", "a.json", "--out", "one.json"])
        .assert_ok();
    let one = read_json(&dir.join("one.json"));
    let reported: Vec<(String, bool)> = one["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["reported"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reported,
        [("a".into(), true), ("b".into(), false), ("c".into(), false)]
    );
    assert!(
        one["paths"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["source"] == "a")
    );
}

#[test]
fn a_loopback_lab_kept_up_serves_sweeps_of_the_same_file_and_goes_with_down() {
    let _t = timing_lock();
    let dir = Dir::new();
    let records = dir.join("labs");
    let env = [("LATMAP_LAB_DIR", records.as_os_str())];
    let run = |args: &[&str]| crate::harness::latmap_env(dir.path(), &env, args);
    dir.write("rtt.csv", ",a,b,c\na,,10,20\nb,11,,30\nc,21,31,\n");
    dir.write(
        "regions.toml",
        "[probe]\ncount = 20\ninterval = \"10ms\"\n\n[lab]\nmatrix = \"rtt.csv\"\nport = 0\n",
    );
    // No lab yet.
    let status = run(&["lab", "status"]);
    assert_eq!(status.status, Some(1), "{}", status.stderr);
    assert!(
        status.stderr.contains("no lab is up for"),
        "{}",
        status.stderr
    );
    let log = dir.join("up.log");
    let mut up = std::process::Command::new(env!("CARGO_BIN_EXE_latmap"))
        .args(["lab", "up"])
        .current_dir(dir.path())
        .env("LATMAP_LAB_DIR", &records)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("lab up");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let record = loop {
        let s = run(&["lab", "status", "--format", "json"]);
        if s.status == Some(0) {
            break serde_json::from_str::<Value>(&s.stdout).expect("JSON");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lab did not come up"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(record["mode"], "loopback");
    let regions = record["regions"].as_array().expect("regions");
    assert_eq!(regions.len(), 3);
    assert_eq!(regions[1]["addresses"], serde_json::json!(["127.0.2.1"]));
    let target: std::net::SocketAddr = regions[1]["target"].as_str().unwrap().parse().unwrap();
    assert_ne!(target.port(), 0);
    assert_eq!(record["truth"].as_array().map(Vec::len), Some(6));
    // Another `lab up` for the same file refuses.
    let again = run(&["lab", "up"]);
    assert_eq!(again.status, Some(2));
    assert!(
        again.stderr.contains("a lab is already up for"),
        "{}",
        again.stderr
    );
    // A sweep of the same file uses that lab: its reflectors, its ports.
    let sweep = run(&["-v", "sweep"]);
    sweep.assert_ok();
    assert!(
        sweep
            .stderr
            .contains("using the lab that `latmap lab up` keeps"),
        "{}",
        sweep.stderr
    );
    let swept = read_json(&dir.join("latmap-out/run.json"));
    assert_eq!(
        crate::harness::path(&swept, "a", "b")["address"],
        regions[1]["target"]
    );
    let mut truth = BTreeMap::new();
    for (s, t, r) in [
        ("a", "b", 10.0),
        ("a", "c", 20.0),
        ("b", "a", 11.0),
        ("b", "c", 30.0),
        ("c", "a", 21.0),
        ("c", "b", 31.0),
    ] {
        truth.insert((s.to_string(), t.to_string()), (Some(r), 0.0));
    }
    check_against_truth(&swept, &truth);
    // A loopback lab has no namespaces to run a command in.
    let exec = run(&["lab", "exec", "a", "--", "true"]);
    assert_eq!(exec.status, Some(2));
    assert!(exec.stderr.contains("127.0.1.1"), "{}", exec.stderr);
    // The file changed since the lab started: the sweep refuses to measure against a
    // truth that is not the file's.
    dir.write("rtt.csv", ",a,b,c\na,,15,20\nb,11,,30\nc,21,31,\n");
    let stale = run(&["sweep"]);
    assert_eq!(stale.status, Some(2), "{}", stale.stderr);
    assert!(stale.stderr.contains("restart it"), "{}", stale.stderr);
    let down = run(&["lab", "down"]);
    down.assert_ok();
    assert!(down.stderr.contains("stopped lab"), "{}", down.stderr);
    let status = up.wait().expect("lab up exits");
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(run(&["lab", "status"]).status, Some(1));
    assert!(
        std::fs::read_dir(&records).map(|d| d.count()).unwrap_or(0) == 0,
        "no record is left"
    );
}
