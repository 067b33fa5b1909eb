//! The attacks of issue 10, replayed: forged epochs, impossible numbers and hostile
//! names, through the server and through every command that reads files.

use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use latmap::config::ProbeKind;
use latmap::report::PathEntry;
use latmap::run::Run;
use serde_json::{Value, json};

use crate::harness::{Dir, read_json};
use crate::remote::{BEARER, JSON, lab, post, push_body, report, runs, serve};
use crate::service::{Answer, free_port, get, until};

const AUTH: (&str, &str) = ("Authorization", BEARER);

/// A recent whole minute, `back` minutes ago, as RFC 3339.
fn recent(back: i64) -> String {
    let now = Utc::now().timestamp();
    DateTime::<Utc>::from_timestamp(now - now % 60 - 60 * back, 0)
        .expect("time")
        .to_rfc3339()
}

fn refused(a: &Answer, status: u16, reason: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    let e = a.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(e.contains(reason), "{status}: {e}");
}

/// A one-region fleet: every push completes its run at once.
fn push_one(addr: SocketAddr, epoch: &str) -> Answer {
    post(
        addr,
        &[AUTH, JSON],
        &push_body(epoch, report("a", &["a"], 3)),
    )
}

fn ids(addr: SocketAddr) -> Vec<String> {
    runs(addr)
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn far_future_epochs_are_refused_and_cannot_delete_real_runs() {
    let dir = Dir::new();
    lab(&dir);
    let port = free_port();
    let (server, addr) = serve(&dir, port, &["--keep", "3"]);
    let real: Vec<String> = (1..=3).rev().map(recent).collect();
    for e in &real {
        assert_eq!(push_one(addr, e).status, 201);
    }
    // The exact pushes of the report: far-future epochs, and one past year 9999
    // that no listing could ever read.
    for future in ["2999-01-01T00:00:00Z", "9999-12-31T23:59:59Z"] {
        refused(
            &push_one(addr, future),
            400,
            "later than the server's clock allows",
        );
    }
    let mut v: Value =
        serde_json::from_slice(&push_body(&real[0], report("a", &["a"], 3))).expect("JSON");
    v["epoch"] = "+10000-01-01T00:00:00Z".into();
    refused(
        &post(addr, &[AUTH, JSON], v.to_string().as_bytes()),
        400,
        "outside the years 0 to 9999",
    );
    // Ahead of the clock by more than --max-skew (5 minutes by default).
    let ahead = (Utc::now() + chrono::TimeDelta::minutes(7)).timestamp();
    let ahead = DateTime::<Utc>::from_timestamp(ahead - ahead % 60, 0)
        .expect("time")
        .to_rfc3339();
    refused(&push_one(addr, &ahead), 400, "--max-skew");
    // A real epoch whose report says its sweep finished in year 9999.
    let mut r = report("a", &["a"], 3);
    r.finished_at = "9999-12-31T23:59:59Z".parse().expect("time");
    refused(
        &post(addr, &[AUTH, JSON], &push_body(&real[0], r)),
        400,
        "report.finished_at 9999-12-31T23:59:59+00:00 is later than the server's clock allows",
    );
    // Nothing of them was stored; the real runs are all there, the newest is latest.
    let want: Vec<String> = real
        .iter()
        .map(|e| latmap::schedule::run_dir_name(e.parse().expect("epoch")))
        .collect();
    let got = until(
        std::time::Duration::from_secs(30),
        "the three real runs",
        || {
            let got = ids(addr);
            (got.len() == 3).then_some(got)
        },
    );
    assert_eq!(got, want);
    assert_eq!(get(addr, "/v1/runs/latest").json()["id"], want[2].as_str());
    // A report older than the three kept runs would be deleted at once: refused.
    refused(&push_one(addr, &recent(10)), 410, "--keep");

    // A data folder that an older version let a far-future run into: that run is
    // neither latest nor counted by retention, which keeps deleting only real runs.
    drop(server);
    for sub in ["runs", "reports"] {
        let from = dir.join(&format!("data/{sub}/{}", want[2]));
        let to = dir.join(&format!("data/{sub}/29990101T000000Z"));
        copy_dir(&from, &to);
    }
    // Its listing is rebuilt from the run, under the folder's id.
    std::fs::remove_file(dir.join("data/runs/29990101T000000Z/listing.json")).expect("rm");
    let (_server, addr) = serve(&dir, port, &["--keep", "3"]);
    until(
        std::time::Duration::from_secs(30),
        "the far-future run listed",
        || {
            ids(addr)
                .contains(&"29990101T000000Z".to_string())
                .then_some(())
        },
    );
    assert_eq!(get(addr, "/v1/runs/latest").json()["id"], want[2].as_str());
    let newer = recent(0);
    assert_eq!(push_one(addr, &newer).status, 201);
    let newer_id = latmap::schedule::run_dir_name(newer.parse().expect("epoch"));
    let kept = until(
        std::time::Duration::from_secs(30),
        "retention after the new run",
        || {
            let got = ids(addr);
            (got.contains(&newer_id) && got.len() == 4).then_some(got)
        },
    );
    assert_eq!(
        kept,
        [
            want[1].clone(),
            want[2].clone(),
            newer_id.clone(),
            "29990101T000000Z".to_string()
        ]
    );
    assert_eq!(get(addr, "/v1/runs/latest").json()["id"], newer_id.as_str());
    let metrics = get(addr, "/metrics").body;
    let t = newer.parse::<DateTime<Utc>>().expect("epoch").timestamp();
    assert!(
        metrics.contains(&format!("latmap_latest_run_timestamp_seconds {t}\n")),
        "{metrics}"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

/// The ways to make a path's numbers impossible, with the field each must name.
/// A change to a path entry, and the field it makes impossible.
type Tampering = (&'static str, fn(&mut Value));

fn tamperings() -> Vec<Tampering> {
    vec![
        ("rtt_us.p50", |p| {
            p["rtt_us"]["p50"] = json!(9_000_000_000_000u64)
        }),
        ("loss", |p| p["loss"] = json!(-3.5)),
        ("loss", |p| p["loss"] = json!(1e300)),
        ("received", |p| p["received"] = json!(11)),
        ("loss_ci", |p| p["loss_ci"] = json!([5.0, -5.0])),
        ("samples_us[0]", |p| {
            p["samples_us"][0] = json!(9_000_000_000_000u64)
        }),
        ("sent", |p| p["sent"] = json!(3)),
    ]
}

#[test]
fn impossible_numbers_are_refused_where_they_enter() {
    let dir = Dir::new();
    lab(&dir);
    let (_server, addr) = serve(&dir, 0, &[]);
    let epoch = recent(1);
    for (field, tamper) in tamperings() {
        let mut v: Value =
            serde_json::from_slice(&push_body(&epoch, report("a", &["a", "b"], 10))).expect("JSON");
        tamper(&mut v["report"]["paths"][0]);
        let a = post(addr, &[AUTH, JSON], v.to_string().as_bytes());
        refused(&a, 400, &format!("report.paths[0].{field}: "));
    }
    assert_eq!(
        std::fs::read_dir(dir.join("data/reports"))
            .expect("reports")
            .count(),
        0,
        "nothing of a refused push is stored"
    );
    // The same numbers in files: `aggregate` exits 2 naming the file and the field.
    let good = serde_json::to_value(report("a", &["a", "b"], 10)).expect("JSON");
    dir.write(
        "b.json",
        &serde_json::to_string(&report("b", &["a", "b"], 10)).expect("JSON"),
    );
    for (field, tamper) in tamperings() {
        let mut v = good.clone();
        tamper(&mut v["paths"][0]);
        dir.write("a.json", &v.to_string());
        let r = dir.latmap(&["aggregate", "a.json", "b.json", "-o", "run.json"]);
        assert_eq!(r.status, Some(2), "{field}: {}", r.stderr);
        assert!(
            r.stderr.contains("a.json holds impossible values")
                && r.stderr.contains(&format!("paths[0].{field}: ")),
            "{field}: {}",
            r.stderr
        );
        assert!(
            !dir.join("run.json").exists(),
            "nothing half-checked is written"
        );
    }
    // A run file with them: `report`, `render` and `diff` refuse it.
    dir.write("a.json", &good.to_string());
    dir.latmap(&["aggregate", "a.json", "b.json", "-o", "run.json"])
        .assert_ok();
    let run = read_json(&dir.join("run.json"));
    for (field, tamper) in tamperings() {
        let mut v = run.clone();
        tamper(&mut v["paths"][0]);
        dir.write("bad.json", &v.to_string());
        for args in [
            vec!["report", "bad.json"],
            vec!["render", "bad.json"],
            vec!["diff", "run.json", "bad.json"],
        ] {
            let r = dir.latmap(&args);
            assert_eq!(r.status, Some(2), "{args:?} {field}: {}", r.stderr);
            assert!(
                r.stderr.contains(&format!("paths[0].{field}: ")),
                "{args:?}: {}",
                r.stderr
            );
        }
    }
    // A run given where region reports are expected says what it is.
    let r = dir.latmap(&["aggregate", "run.json"]);
    assert_eq!(r.status, Some(2));
    assert!(
        r.stderr
            .contains("run.json is a run (schema \"latmap.run/1\"), not a region report"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("Some("), "{}", r.stderr);
}

/// A name the region-name rule allows but every output must escape.
const HTML: &str = "<img src=x onerror=alert(1)>";
const MARKDOWN: &str = "*b* _i_ [l](e.x) `c` #h ~s~";

/// A run id that tries to leave its code span and start a heading.
const ID: &str = "x```### Injected heading <b>";

/// A run of three regions with hostile names, a run id that tries to leave its code
/// span, a finding whose message carries terminal escape sequences, and a path whose
/// resolution error carries control characters.
fn hostile_run(dir: &Dir, name: &str, rtt: u64) {
    let names = [HTML, MARKDOWN, "plain"];
    let reports: Vec<_> = names
        .iter()
        .map(|n| {
            let mut r = report(n, &names, 10);
            for p in &mut r.paths {
                let samples = vec![Some(rtt); 10];
                *p = PathEntry::from_samples(n, &p.target, p.kind, &p.target_spec, samples);
            }
            if *n == "plain" {
                // A name that did not resolve, with a resolver's message to show.
                let mut p =
                    PathEntry::from_samples(n, HTML, ProbeKind::Udp, "h.invalid:862", vec![]);
                p.address = None;
                p.resolve_error = Some("no such name \u{1}\u{1b}[5m <x>".into());
                r.paths.push(p);
            }
            r
        })
        .collect();
    let mut run = Run::from_reports(&reports).expect("a run");
    run.id = ID.to_string();
    run.anomalies = vec![latmap::run::Anomaly {
        detector: latmap::config::DetectorId::Slo,
        severity: latmap::run::Severity::Critical,
        kind: ProbeKind::Udp,
        subject: latmap::run::Subject::path(HTML, MARKDOWN),
        value: 1.0,
        threshold: 0.5,
        unit: latmap::run::Unit::Ratio,
        message: "\u{1b}[2J\u{1b}]0;pwned\u{7}<script>alert(1)</script>\r".into(),
        relay: None,
        explains: vec![],
    }];
    run.write(&dir.join(name)).expect("write");
}

#[test]
fn hostile_names_are_escaped_in_every_output() {
    let dir = Dir::new();
    hostile_run(&dir, "base.json", 20_000);
    hostile_run(&dir, "run.json", 90_000);
    let no_escape = |what: &str, s: &str| {
        assert!(
            !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{what} carries control characters: {s:?}"
        );
    };
    // Markdown: HTML shown as text, the id kept in its code span.
    let md = dir.latmap(&["report", "run.json", "--format", "markdown"]);
    md.assert_ok();
    assert!(
        !md.stdout.contains("<img") && !md.stdout.contains("<script"),
        "{}",
        md.stdout
    );
    assert!(
        md.stdout.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{}",
        md.stdout
    );
    assert!(
        md.stdout
            .starts_with("### latmap run ````x```### Injected heading <b>````\n"),
        "{}",
        md.stdout
    );
    assert_eq!(
        md.stdout.lines().filter(|l| l.starts_with('#')).count(),
        1,
        "{}",
        md.stdout
    );
    assert!(
        md.stdout.contains("\\*b\\* \\_i\\_ \\[l\\](e.x)"),
        "{}",
        md.stdout
    );
    no_escape("report --format markdown", &md.stdout);
    // Terminal: no escape sequence reaches it.
    let text = dir.latmap(&["report", "run.json"]);
    text.assert_ok();
    no_escape("report", &text.stdout);
    assert!(text.stdout.contains("\\u{1b}[2J"), "{}", text.stdout);
    // SVG: well-formed XML whatever the names and messages hold.
    dir.latmap(&["render", "run.json", "-o", "h.svg"])
        .assert_ok();
    let svg = std::fs::read_to_string(dir.join("h.svg")).expect("svg");
    let doc = roxmltree::Document::parse(&svg).expect("the heatmap is well-formed XML");
    assert!(
        doc.descendants().any(|n| n.text() == Some(HTML)),
        "the name is shown as text"
    );
    // diff: Markdown, text and JUnit.
    let md = dir.latmap(&["diff", "base.json", "run.json", "--format", "markdown"]);
    assert!(
        md.status == Some(1) || md.status == Some(0),
        "{}",
        md.stderr
    );
    assert!(!md.stdout.contains("<img"), "{}", md.stdout);
    no_escape("diff --format markdown", &md.stdout);
    let text = dir.latmap(&["diff", "base.json", "run.json"]);
    no_escape("diff", &text.stdout);
    let junit = dir.latmap(&["diff", "base.json", "run.json", "--format", "junit"]);
    roxmltree::Document::parse(&junit.stdout).expect("JUnit is well-formed XML");
    // aggregate, from reports named the same way.
    let names = [HTML, MARKDOWN];
    for n in names {
        let file = format!("{}.json", if n == HTML { "h" } else { "m" });
        dir.write(
            &file,
            &serde_json::to_string(&report(n, &names, 5)).expect("JSON"),
        );
    }
    let agg = dir.latmap(&["aggregate", "h.json", "m.json", "-o", "agg/run.json"]);
    agg.assert_ok();
    no_escape("aggregate", &agg.stdout);
    let svg = std::fs::read_to_string(dir.join("agg/heatmap-rtt.svg")).expect("svg");
    roxmltree::Document::parse(&svg).expect("well-formed");
    // File names a command prints back (written to ...) are escaped too.
    let out = "o\u{1b}[1m/run.json";
    let agg = dir.latmap(&["aggregate", "h.json", "m.json", "-o", out]);
    agg.assert_ok();
    no_escape("aggregate -o", &format!("{}{}", agg.stdout, agg.stderr));
    assert!(
        agg.stdout.contains("o\\u{1b}[1m/run.json") || agg.stderr.contains("o\\u{1b}[1m/run.json"),
        "{}{}",
        agg.stdout,
        agg.stderr
    );
    let render = dir.latmap(&["render", "run.json", "-o", "r\u{1b}[1m.svg"]);
    render.assert_ok();
    no_escape("render -o", &format!("{}{}", render.stdout, render.stderr));
}

#[test]
fn names_outside_the_rule_or_the_configuration_are_refused() {
    let dir = Dir::new();
    for (name, bad) in [
        ("esc", "a\u{1b}[31mb"),
        ("bidi", "abc\u{202e}fed"),
        ("pipe", "a|b"),
        ("long", &"x".repeat(70)),
    ] {
        let mut v = serde_json::to_value(report("a", &["a", "b"], 3)).expect("JSON");
        v["regions"][1]["name"] = bad.into();
        v["paths"][0]["target"] = bad.into();
        dir.write(&format!("{name}.json"), &v.to_string());
        let r = dir.latmap(&["aggregate", &format!("{name}.json")]);
        assert_eq!(r.status, Some(2), "{name}: {}", r.stderr);
        assert!(
            r.stderr.contains("regions[1].name: region name"),
            "{name}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains('\u{1b}'), "{}", r.stderr);
    }
    // With --config, only the configuration's regions.
    dir.write(
        "fleet.toml",
        "[[region]]\nname = \"a\"\ntargets = [\"127.0.0.1\"]\n\n[[region]]\nname = \"b\"\ntargets = [\"127.0.0.2\"]\n",
    );
    dir.write(
        "a.json",
        &serde_json::to_string(&report("a", &["a", "c"], 3)).expect("JSON"),
    );
    let r = dir.latmap(&["--config", "fleet.toml", "aggregate", "a.json"]);
    assert_eq!(r.status, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("\"c\" is not in the configuration"),
        "{}",
        r.stderr
    );
    dir.write(
        "a.json",
        &serde_json::to_string(&report("a", &["a", "b"], 3)).expect("JSON"),
    );
    dir.latmap(&[
        "--config",
        "fleet.toml",
        "aggregate",
        "a.json",
        "-o",
        "run.json",
    ])
    .assert_ok();
    dir.write("fleet2.toml", "[[region]]\nname = \"a\"\ntargets = [\"127.0.0.1\"]\n\n[[region]]\nname = \"z\"\ntargets = [\"127.0.0.2\"]\n");
    let r = dir.latmap(&["--config", "fleet2.toml", "report", "run.json"]);
    assert_eq!(r.status, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("is not in the configuration"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_fifo_as_a_file_argument_is_refused_at_once() {
    let dir = Dir::new();
    let fifo = dir.join("fifo.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    // `latmap_in` fails the test if a command hangs for two minutes.
    for args in [
        vec!["report", "fifo.json"],
        vec!["aggregate", "fifo.json"],
        vec!["render", "fifo.json"],
        vec!["diff", "fifo.json", "fifo.json"],
        vec!["--config", "fifo.json", "check"],
    ] {
        let r = dir.latmap(&args);
        assert_eq!(r.status, Some(2), "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("not a regular file"),
            "{args:?}: {}",
            r.stderr
        );
    }
}

#[test]
fn sweep_removes_the_temporary_files_a_killed_sweep_left() {
    let dir = Dir::new();
    lab(&dir);
    // What `kill -9` during a write leaves: temporary files of a process that is gone
    // (a pid above the kernel's limit), in the output folder and in a run folder.
    let stale = [
        "out/.run.json.tmp-4194305",
        "out/.heatmap-rtt.svg.tmp-4194305",
        "out/20261126T050000Z/.run.json.tmp-4194305",
    ];
    for f in stale {
        dir.write(f, "{\"schema\": \"latmap.run/1\", \"id\"");
    }
    dir.latmap(&["--config", "lab.toml", "sweep", "-o", "out"])
        .assert_ok();
    for f in stale {
        assert!(!dir.join(f).exists(), "{f} is left");
    }
    latmap::run::Run::read(&dir.join("out/run.json")).expect("the new run");
}
