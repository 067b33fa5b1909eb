//! `latmap diff` end to end: exit codes, formats, and real lab sweeps.

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
}

#[test]
fn errors_exit_2_with_a_reason() {
    let dir = Dir::new();
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
            "--alpha must be between 0 and 1",
        ),
    ] {
        let out = dir.latmap(args);
        assert_eq!(out.status, Some(2), "{args:?}");
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
}

const LAB: &str = "[probe]\ncount = 40\ninterval = \"10ms\"\n\n[lab]\nmatrix = \"rtt.csv\"\nport = 0\njitter_ms = 0.5\n";

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
    let out = dir.latmap(&["diff", "one/run.json", "two/run.json"]);
    assert_eq!(out.status, Some(0), "{}{}", out.stdout, out.stderr);
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
