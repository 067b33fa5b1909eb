//! Scheduled sweeps: clock-aligned run folders, the `latest` link, retention, no overlap.

use chrono::NaiveDateTime;

use crate::harness::{Dir, read_json, timing_lock};

const MATRIX: &str = ",a,b,c\na,,5,8\nb,5,,6\nc,8,6,\n";

fn lab(dir: &Dir, probe: &str, extra: &str) {
    dir.write("rtt.csv", MATRIX);
    dir.write(
        "regions.toml",
        &format!("[probe]\n{probe}\n\n[lab]\nmatrix = \"rtt.csv\"\nport = 0\n{extra}"),
    );
}

/// The run folders in `out`, oldest first, as times.
fn runs(dir: &Dir, out: &str) -> Vec<NaiveDateTime> {
    let mut v: Vec<NaiveDateTime> = std::fs::read_dir(dir.join(out))
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            e.file_type()
                .unwrap()
                .is_dir()
                .then(|| NaiveDateTime::parse_from_str(&name, "%Y%m%dT%H%M%SZ").ok())
                .flatten()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn scheduled_sweeps_keep_the_newest_runs_and_link_the_latest() {
    let _t = timing_lock();
    let dir = Dir::new();
    lab(
        &dir,
        "count = 5\ninterval = \"10ms\"\ntimeout = \"200ms\"",
        "",
    );
    dir.latmap(&[
        "sweep", "--every", "1s", "--sweeps", "3", "--keep", "2", "--out", "runs",
    ])
    .assert_ok();
    let kept = runs(&dir, "runs");
    assert_eq!(kept.len(), 2, "{kept:?}");
    // Epochs are whole seconds, one period apart or more, and latest is the newest.
    assert!(kept[1] > kept[0]);
    let latest = std::fs::read_link(dir.join("runs/latest")).unwrap();
    assert_eq!(
        latest.to_str().unwrap(),
        kept[1].format("%Y%m%dT%H%M%SZ").to_string()
    );
    let run = read_json(&dir.join("runs/latest/run.json"));
    assert_eq!(run["paths"].as_array().unwrap().len(), 6);
    assert!(dir.join("runs/latest/heatmap-rtt.svg").exists());
}

#[test]
fn a_sweep_longer_than_the_period_skips_instead_of_overlapping() {
    let _t = timing_lock();
    let dir = Dir::new();
    // About 1.6 s of probing against a 1 s period.
    lab(
        &dir,
        "count = 32\ninterval = \"50ms\"\ntimeout = \"200ms\"",
        "",
    );
    let out = dir.latmap(&["sweep", "--every", "1s", "--sweeps", "2", "--out", "runs"]);
    out.assert_ok();
    assert!(out.stderr.contains("skipped"), "{}", out.stderr);
    let kept = runs(&dir, "runs");
    assert_eq!(kept.len(), 2);
    assert!((kept[1] - kept[0]).num_seconds() >= 2, "{kept:?}");
}

#[test]
fn the_configuration_schedule_and_its_errors() {
    let _t = timing_lock();
    let dir = Dir::new();
    lab(
        &dir,
        "count = 3\ninterval = \"10ms\"\ntimeout = \"200ms\"",
        "\n[schedule]\nevery = \"1s\"\nkeep = 1\n",
    );
    dir.latmap(&["sweep", "--schedule", "--sweeps", "2", "--out", "runs"])
        .assert_ok();
    assert_eq!(runs(&dir, "runs").len(), 1);
    // Without [schedule], --schedule says what is missing; a bad cron says how to write it.
    lab(&dir, "count = 3", "");
    let out = dir.latmap(&["sweep", "--schedule"]);
    assert_eq!(out.status, Some(2));
    assert!(
        out.stderr
            .contains("needs a schedule: add a [schedule] table"),
        "{}",
        out.stderr
    );
    let out = dir.latmap(&["sweep", "--cron", "every minute"]);
    assert_eq!(out.status, Some(2));
    assert!(out.stderr.contains("write five fields"), "{}", out.stderr);
    let out = dir.latmap(&["sweep", "--every", "2s", "--jitter", "3s"]);
    assert_eq!(out.status, Some(2));
    assert!(
        out.stderr.contains("must be shorter than the period"),
        "{}",
        out.stderr
    );
}
