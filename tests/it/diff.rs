//! `latmap diff` end to end: exit codes, formats, several baselines, and real lab
//! sweeps.

use crate::harness::{Dir, read_json, timing_lock};
use crate::heatmap::small_run;

fn write(dir: &Dir, name: &str, run: &serde_json::Value) {
    dir.write(name, &serde_json::to_string_pretty(run).unwrap());
}

#[test]
fn a_run_against_itself_is_unchanged_and_exits_0() {
    let dir = Dir::new();
    write(&dir, "run.json", &small_run(1.0));
    let out = dir.latmap(&["diff", "run.json", "run.json"]);
    out.assert_ok();
    assert!(
        out.stdout
            .contains("0 regressions, 0 improvements, 9 unchanged"),
        "{}",
        out.stdout
    );
    let out = dir.latmap(&["diff", "run.json", "run.json", "--fail-on", "any"]);
    out.assert_ok();
}

#[test]
fn formats_of_a_regression() {
    let dir = Dir::new();
    write(&dir, "base.json", &small_run(0.8));
    write(&dir, "run.json", &small_run(1.0));
    for format in ["text", "markdown"] {
        let out = dir.latmap(&["diff", "base.json", "run.json", "--format", format]);
        assert_eq!(out.status, Some(1), "{}", out.stderr);
        insta::assert_snapshot!(format!("diff-{format}"), out.stdout);
    }
    let out = dir.latmap(&[
        "diff",
        "base.json",
        "run.json",
        "--format",
        "json",
        "--heatmap",
        "delta.svg",
    ]);
    assert_eq!(out.status, Some(1));
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["schema"], "latmap.diff/1");
    let regressions: Vec<&serde_json::Value> = json["paths"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["verdict"] == "regression")
        .collect();
    assert_eq!(regressions.len(), 1);
    assert_eq!(
        (
            regressions[0]["source"].as_str(),
            regressions[0]["target"].as_str()
        ),
        (Some("a"), Some("b"))
    );
    // The new facts: what moved, the test behind it, and how small a change was visible.
    let r = regressions[0];
    assert_eq!(r["worse"], serde_json::json!(["p50"]));
    assert_eq!(r["tests"]["p50"]["tested"], true);
    assert_eq!(r["tests"]["p95"]["skipped"], "too-few-replies");
    assert_eq!(r["p50_threshold_us"], 8000);
    assert_eq!(r["min_detectable_p50_us"], 8000);
    assert_eq!(r["p50_blind"], false);
    assert_eq!(
        json["baselines"],
        serde_json::json!(["20260101T000000Z-000000"])
    );
    assert_eq!(json["blind"]["p95_untested"], 8);
    assert_eq!(json["blind"]["p95_count_needed"], 100);
    assert!(json["family"]["tests"].as_u64().unwrap() >= 1);
    assert!(
        std::fs::read_to_string(dir.join("delta.svg"))
            .unwrap()
            .contains("p50 change")
    );

    // JUnit: a real XML parser reads one test case per path, the regression as a failure.
    let out = dir.latmap(&["diff", "base.json", "run.json", "--format", "junit"]);
    assert_eq!(out.status, Some(1));
    let doc = roxmltree::Document::parse(&out.stdout).expect("well-formed JUnit XML");
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 9);
    let failed: Vec<_> = cases
        .iter()
        .filter(|c| c.children().any(|n| n.has_tag_name("failure")))
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].attribute("name").unwrap().starts_with("a → b"));
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    assert_eq!(
        (suite.attribute("tests"), suite.attribute("failures")),
        (Some("9"), Some("1"))
    );
    let property = |name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name("property") && n.attribute("name") == Some(name))
            .and_then(|n| n.attribute("value"))
            .map(str::to_string)
    };
    assert_eq!(property("latmap.baselines").as_deref(), Some("1"));
    assert_eq!(
        property("latmap.blind.p95_count_needed").as_deref(),
        Some("100")
    );
}

#[test]
fn errors_exit_2_with_a_reason() {
    let dir = Dir::new();
    std::fs::create_dir_all(dir.join("empty/not-a-run")).unwrap();
    write(&dir, "run.json", &small_run(1.0));
    dir.write("report.json", "{\"schema\": \"latmap.report/1\"}");
    let mut other = small_run(1.0);
    for p in other["paths"].as_array_mut().unwrap() {
        p["kind"] = "icmp".into();
    }
    write(&dir, "other.json", &other);
    for (args, needle) in [
        (
            &["diff", "run.json", "absent.json"][..],
            "cannot read absent.json",
        ),
        (
            &["diff", "report.json", "run.json"],
            "is a region report (schema \"latmap.report/1\"), not a run",
        ),
        (&["diff", "run.json", "other.json"], "no path in common"),
        (
            &["diff", "run.json", "run.json", "--alpha", "2"],
            "latmap: --alpha is out of range; use a number above 0 and below 0.5, like 0.01",
        ),
        (&["diff", "empty", "run.json"], "empty holds no run"),
        (
            &["diff", "run.json", "run.json", "--last", "0"],
            "--last takes a count",
        ),
        (
            &["diff", "run.json", "run.json", "--p50-ms=-1"],
            "latmap: --p50-ms is out of range; use a number >= 0",
        ),
    ] {
        let out = dir.latmap(args);
        assert_eq!(out.status, Some(2), "{args:?}");
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
}

const LAB: &str = "[probe]\ncount = 50\ninterval = \"10ms\"\n\n[lab]\nmatrix = \"rtt.csv\"\nport = 0\njitter_ms = 0.5\n";

#[test]
fn lab_sweeps_diff_as_unchanged_until_a_fault_is_added() {
    let _t = timing_lock();
    let dir = Dir::new();
    dir.write(
        "rtt.csv",
        ",a,b,c,d\na,,10,20,30\nb,10,,15,25\nc,20,15,,12\nd,30,25,12,\n",
    );
    dir.write("regions.toml", LAB);
    dir.latmap(&["sweep", "--out", "one"]).assert_ok();
    dir.latmap(&["sweep", "--out", "two"]).assert_ok();
    let out = dir.latmap(&["diff", "one/run.json", "two/run.json", "--format", "json"]);
    assert_eq!(out.status, Some(0), "{}{}", out.stdout, out.stderr);
    // Real sweeps of 50 probes test p50 and p95 of every path: nothing moved.
    let d: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        d["paths"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["verdict"] == "unchanged"),
        "{}",
        out.stdout
    );
    assert_eq!(d["blind"]["p95_untested"], 0, "{}", d["blind"]);
    assert_eq!(d["blind"]["p50_paths"], 0, "{}", d["blind"]);
    // The same lab with a fault: paths out of c are 20 ms slower.
    dir.write(
        "regions.toml",
        &format!("{LAB}\n[[lab.fault]]\nsource = \"c\"\nextra_ms = 20.0\n"),
    );
    dir.latmap(&["sweep", "--out", "three"]).assert_ok();
    let out = dir.latmap(&["diff", "one/run.json", "three/run.json", "--format", "json"]);
    assert_eq!(out.status, Some(1), "{}", out.stdout);
    let d: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let mut regressed: Vec<String> = d["paths"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["verdict"] == "regression")
        .map(|p| {
            format!(
                "{}>{}",
                p["source"].as_str().unwrap(),
                p["target"].as_str().unwrap()
            )
        })
        .collect();
    regressed.sort();
    assert_eq!(regressed, ["c>a", "c>b", "c>d"]);
    let _ = read_json(&dir.join("three/run.json"));
}

#[test]
fn thresholds_come_from_the_diff_table_and_flags_override_them() {
    let dir = Dir::new();
    write(&dir, "base.json", &small_run(0.8));
    write(&dir, "run.json", &small_run(1.0));
    // a -> b is 25% slower: a regression by default, not under [diff] p50_pct = 50 (the
    // p95 moved 25% too, below its 50% here).
    dir.write(
        "regions.toml",
        "[diff]\np50_pct = 50\np95_pct = 50\n\n[[region]]\nname = \"a\"\ntargets = [\"127.0.0.1\"]\n\n[[region]]\nname = \"b\"\ntargets = [\"127.0.0.1\"]\n",
    );
    let out = dir.latmap(&["diff", "base.json", "run.json"]);
    assert_eq!(out.status, Some(0), "{}{}", out.stdout, out.stderr);
    let out = dir.latmap(&["diff", "base.json", "run.json", "--p50-pct", "10"]);
    assert_eq!(out.status, Some(1), "{}{}", out.stdout, out.stderr);
}

#[test]
fn help_says_what_diff_compares() {
    let out = Dir::new().latmap(&["diff", "--help"]);
    out.assert_ok();
    insta::assert_snapshot!("help-diff", out.stdout);
}

#[test]
fn several_baselines_from_files_and_a_scheduled_folder() {
    let _t = timing_lock();
    let dir = Dir::new();
    dir.write("rtt.csv", ",a,b,c\na,,10,20\nb,10,,15\nc,20,15,\n");
    dir.write("regions.toml", LAB);
    // Three scheduled sweeps: runs/<epoch>/run.json and runs/latest.
    dir.latmap(&["sweep", "--every", "1s", "--sweeps", "3", "--out", "runs"])
        .assert_ok();
    dir.latmap(&["sweep", "--out", "now"]).assert_ok();
    let json = |out: &crate::harness::Run| -> serde_json::Value {
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}{}", out.stdout, out.stderr))
    };
    let out = dir.latmap(&["diff", "runs", "now/run.json", "--format", "json"]);
    assert_eq!(out.status, Some(0), "{}{}", out.stdout, out.stderr);
    let d = json(&out);
    // The latest link is the newest epoch, not a fourth baseline.
    assert_eq!(
        d["baselines"].as_array().unwrap().len(),
        3,
        "{}",
        d["baselines"]
    );
    let p = &d["paths"][0];
    assert_eq!(p["baselines"], 3);
    assert!(p["between_run_sd_us"].is_u64(), "{p}");
    // Files and folders mix; a file named twice counts once; --last keeps the newest.
    let newest = std::fs::read_link(dir.join("runs/latest")).unwrap();
    let newest = format!("runs/{}/run.json", newest.display());
    let out = dir.latmap(&["diff", &newest, "runs", "now/run.json", "--format", "json"]);
    assert_eq!(out.status, Some(0), "{}{}", out.stdout, out.stderr);
    assert_eq!(json(&out)["baselines"].as_array().unwrap().len(), 3);
    // A copy of a baseline is the same run: it counts once, and says so.
    std::fs::copy(dir.join(&newest), dir.join("copy.json")).unwrap();
    let out = dir.latmap(&[
        "diff",
        "runs",
        "copy.json",
        "now/run.json",
        "--format",
        "json",
    ]);
    assert_eq!(out.status, Some(0), "{}{}", out.stdout, out.stderr);
    assert_eq!(json(&out)["baselines"].as_array().unwrap().len(), 3);
    assert!(
        out.stderr
            .contains("not using copy.json as a baseline: it holds run"),
        "{}",
        out.stderr
    );
    let out = dir.latmap(&[
        "diff",
        "runs",
        "now/run.json",
        "--last",
        "2",
        "--format",
        "json",
    ]);
    assert_eq!(out.status, Some(0), "{}{}", out.stdout, out.stderr);
    let d = json(&out);
    assert_eq!(d["baselines"].as_array().unwrap().len(), 2);
    assert_eq!(d["base"], read_json(&dir.join(&newest))["id"]);
    // Judging the latest run against its own folder leaves it out of the baselines.
    let out = dir.latmap(&[
        "diff",
        "runs",
        "runs/latest/run.json",
        "--format",
        "markdown",
    ]);
    assert_eq!(out.status, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("it is the run being judged"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("2 baselines"), "{}", out.stdout);
    // A fault after the history: exactly the faulted paths regress.
    dir.write(
        "regions.toml",
        &format!("{LAB}\n[[lab.fault]]\nsource = \"b\"\nextra_ms = 20.0\n"),
    );
    dir.latmap(&["sweep", "--out", "faulted"]).assert_ok();
    let out = dir.latmap(&["diff", "runs", "faulted/run.json", "--format", "json"]);
    assert_eq!(out.status, Some(1), "{}", out.stdout);
    let d = json(&out);
    let mut regressed: Vec<String> = d["paths"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["verdict"] == "regression")
        .map(|p| {
            format!(
                "{}>{}",
                p["source"].as_str().unwrap(),
                p["target"].as_str().unwrap()
            )
        })
        .collect();
    regressed.sort();
    assert_eq!(regressed, ["b>a", "b>c"]);
}
