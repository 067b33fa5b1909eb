//! Fuzzing of every parser of outside input, on the stable toolchain (see
//! docs/fuzzing.md). `cargo test` runs each target briefly, always with every
//! regression file and seed; `LATMAP_FUZZ_SECONDS=600 cargo test --release --test
//! fuzz -- --nocapture TARGET` runs one for ten minutes.
//!
//! A target is a name, a grammar and a function from bytes to an outcome signature;
//! its seeds are the files in `tests/fuzz/corpus/NAME/`, its found cases the files in
//! `tests/fuzz/regressions/NAME/`. To add one: write the function, add a `Target` and
//! a `#[test]` below, and put a few seeds in the corpus folder.

mod engine;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use engine::{Grammar, Target, fuzz};
use latmap::config::{DiffThresholds, Thresholds};
use latmap::render::heatmap::{Options, Order, View, heatmap_svg};
use latmap::render::report::{Format, render};
use latmap::report::RegionReport;
use latmap::run::Run;

/// A folder for the files the targets read: fixed per process.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("fuzz-scratch")
            .join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).expect("scratch folder");
        let lab = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/lab");
        for f in ["rtt.csv", "loss.csv"] {
            let _ = std::fs::copy(lab.join(f), dir.join(f));
        }
        dir
    })
}

/// A signature: the words of `message`, without numbers and quoted values.
fn sig(prefix: &str, message: &str) -> String {
    let mut out = String::from(prefix);
    let mut quoted = false;
    for c in message.chars().take(300) {
        match c {
            '"' => quoted = !quoted,
            c if quoted || c.is_ascii_digit() => {}
            c => out.push(c),
        }
    }
    out.chars().take(120).collect()
}

/// Writes `bytes` to `name` in the scratch folder (each test thread its own file).
fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let thread = format!("{:?}", std::thread::current().id())
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>();
    let dir = scratch().join(thread);
    std::fs::create_dir_all(&dir).expect("scratch");
    for f in ["rtt.csv", "loss.csv"] {
        if !dir.join(f).exists() {
            let _ = std::fs::copy(scratch().join(f), dir.join(f));
        }
    }
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("scratch write");
    path
}

fn regions_toml(bytes: &[u8]) -> String {
    let path = scratch_file("regions.toml", bytes);
    match latmap::config::load(&path) {
        Ok(c) => {
            assert!(
                c.regions.len() >= 2,
                "a valid configuration has two regions"
            );
            format!("ok {} {:?}", c.lab.is_some(), c.probe.kinds)
        }
        Err(e) => {
            assert!(!e.diagnostics.is_empty());
            for d in &e.diagnostics {
                assert!(d.line >= 1 && d.column >= 1, "{d}");
                assert!(
                    d.message.chars().count() <= 2100,
                    "a message is cut: {}",
                    d.message.len()
                );
            }
            sig("err ", &e.diagnostics[0].message)
        }
    }
}

fn lab_csv(bytes: &[u8]) -> String {
    scratch_file("rtt.csv", bytes);
    let path = scratch_file(
        "lab.toml",
        b"[lab]\nmatrix = \"rtt.csv\"\nloss = \"loss.csv\"\n",
    );
    let toml = path.with_file_name("lab-rtt-only.toml");
    std::fs::write(&toml, "[lab]\nmatrix = \"rtt.csv\"\n").expect("write");
    let mut out = String::new();
    for p in [&path, &toml] {
        match latmap::config::load(p) {
            Ok(c) => {
                for r in &c.regions {
                    assert!(latmap::config::RegionName::problem(&r.name).is_none());
                }
                out.push_str("ok ");
            }
            Err(e) => {
                for d in &e.diagnostics {
                    assert!(d.line >= 1 && d.column >= 1, "{d}");
                }
                out.push_str(&sig("err ", &e.diagnostics[0].message));
            }
        }
    }
    out
}

/// Everything a run that passed the checks goes through: analysis, the reports, the
/// heatmaps, a diff with itself, the metrics.
fn publish(run: &Run) {
    let found = latmap::anomaly::analyse(run, &Thresholds::default());
    for a in &found {
        assert!(a.value.is_finite() && a.threshold.is_finite(), "{a:?}");
    }
    let mut analysed = run.clone();
    analysed.anomalies = found;
    for r in [run, &analysed] {
        for f in [Format::Text, Format::Markdown, Format::Json] {
            let out = render(r, f);
            if f == Format::Json {
                serde_json::from_str::<serde_json::Value>(&out).expect("the JSON report parses");
            }
        }
        for view in [View::Rtt, View::Loss, View::Inflation, View::Delta] {
            let opts = Options {
                view,
                order: Order::Config,
                kind: None,
                baseline: Some(r),
                links: None,
            };
            if let Ok(svg) = heatmap_svg(r, &opts) {
                roxmltree::Document::parse(&svg).expect("the heatmap is well-formed XML");
            }
        }
        let d = latmap::diff::diff(r, r, &DiffThresholds::default());
        let _ = latmap::render::diff::text(&d, false);
        let _ = latmap::render::diff::markdown(&d);
        roxmltree::Document::parse(&latmap::render::diff::junit(&d)).expect("JUnit parses");
    }
    let rtt = latmap::remote::metrics::RttHistogram::of_paths(&run.paths);
    let rtt: Vec<_> = rtt.iter().map(Some).collect();
    let latest = latmap::remote::metrics::Latest::of(&run.id, run, &rtt);
    let _ = latmap::remote::metrics::render(&Default::default(), Some(latest.into()));
}

fn run_json(bytes: &[u8]) -> String {
    let path = scratch_file("run.json", bytes);
    let slim = Run::read_without_samples(&path);
    match Run::read(&path) {
        Ok(run) => {
            assert!(
                slim.is_ok(),
                "a valid run also reads without its samples: {slim:?}"
            );
            publish(&run);
            // Written and read back, it is the same run.
            let again = scratch_file("again.json", b"");
            run.write(&again).expect("write");
            assert_eq!(Run::read(&again).expect("reads back"), run);
            format!("ok {} {}", run.regions.len().min(3), run.paths.len().min(3))
        }
        Err(e) => sig("err ", &chain(&e)),
    }
}

fn region_report(bytes: &[u8]) -> String {
    let path = scratch_file("report.json", bytes);
    match RegionReport::read(&path, None) {
        Ok(r) => {
            let run = Run::from_reports(std::slice::from_ref(&r)).expect("one report merges");
            run.check()
                .unwrap_or_else(|e| panic!("a run of valid reports is valid: {e}"));
            publish(&run);
            "ok".into()
        }
        Err(e) => sig("err ", &chain(&e)),
    }
}

fn push(bytes: &[u8]) -> String {
    use latmap::remote::wire::Push;
    let push: Push = match serde_json::from_slice(bytes) {
        Ok(p) => p,
        Err(e) => return sig("malformed ", &e.to_string()),
    };
    let newest = chrono::Utc::now() + chrono::TimeDelta::minutes(5);
    match push.validate(None, newest) {
        Ok(()) => {
            // What the server stores reads back as the same report, and passes.
            let mut stored = Vec::new();
            latmap::artifact::to_writer(&mut stored, &push.report).expect("serializes");
            let back: RegionReport = serde_json::from_slice(&stored).expect("reads back");
            assert_eq!(back, push.report);
            back.check(None).expect("still valid");
            let _ = latmap::remote::wire::parse_run_id(&push.run_id()).expect("a listable id");
            "ok".into()
        }
        Err(e) => sig("invalid ", &e),
    }
}

/// A datagram on a STAMP port, as the reflector and the sender read it.
fn stamp_packet(bytes: &[u8]) -> String {
    use latmap::probe::stamp::{
        NtpTimestamp, ReflectorPacket, SenderPacket, Shape, reply_len, shape,
    };
    let mut out = match shape(bytes) {
        Err(e) => return sig("short ", &e.to_string()),
        Ok(Shape::Reflector) => String::from("reply"),
        Ok(Shape::Sender) => {
            // What the reflector answers: the same size or 41 bytes, echoing the request.
            let req = SenderPacket::decode(bytes).expect("14 bytes and up decode");
            let mut reply = vec![0u8; reply_len(bytes.len())];
            ReflectorPacket {
                seq: req.seq,
                timestamp: NtpTimestamp::now(),
                error_estimate: req.error_estimate,
                receive_timestamp: NtpTimestamp::now(),
                sender_seq: req.seq,
                sender_timestamp: req.timestamp,
                sender_error_estimate: req.error_estimate,
                sender_ttl: Some(64),
            }
            .encode(&mut reply);
            assert_eq!(
                shape(&reply),
                Ok(Shape::Reflector),
                "a reply must never be answered"
            );
            let back = ReflectorPacket::decode(&reply).expect("a reply decodes");
            assert_eq!(
                (back.sender_seq, back.sender_timestamp),
                (req.seq, req.timestamp)
            );
            String::from("request")
        }
    };
    // What the sender makes of it as a reply.
    match ReflectorPacket::decode(bytes) {
        Ok(p) => out.push_str(if p.dwell().is_some() {
            " timed"
        } else {
            " negative-dwell"
        }),
        Err(_) => out.push_str(" not-a-reply"),
    }
    out
}

/// A datagram on an ICMP socket, as every kind of socket reads it.
fn icmp_reply(bytes: &[u8]) -> String {
    use latmap::probe::{IcmpParsed, parse_icmp};
    let v4 = "192.0.2.1".parse().expect("address");
    let v6 = "2001:db8::1".parse().expect("address");
    let mut out = String::new();
    for (from, raw, is_v6) in [
        (v4, true, false),
        (v4, false, false),
        (v6, true, true),
        (v6, false, true),
    ] {
        let what = match parse_icmp(bytes, from, raw, is_v6, 0x4242) {
            IcmpParsed::Echo { id, .. } => {
                assert!(bytes.len() >= 20, "an echo carries its 12-byte tag: {id}");
                "echo"
            }
            IcmpParsed::Error { .. } => "error",
            IcmpParsed::NotOurs => "other",
            IcmpParsed::Malformed => "malformed",
        };
        out.push_str(what);
        out.push(' ');
    }
    out
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut c = e.source();
    while let Some(x) = c {
        s.push_str(": ");
        s.push_str(&x.to_string());
        c = x.source();
    }
    s
}

const TARGETS: &[Target] = &[
    Target {
        name: "regions-toml",
        grammar: Grammar::Text,
        run: regions_toml,
        short: 400,
    },
    Target {
        name: "lab-csv",
        grammar: Grammar::Text,
        run: lab_csv,
        short: 300,
    },
    Target {
        name: "run-json",
        grammar: Grammar::Json,
        run: run_json,
        short: 150,
    },
    Target {
        name: "region-report",
        grammar: Grammar::Json,
        run: region_report,
        short: 200,
    },
    Target {
        name: "push",
        grammar: Grammar::Json,
        run: push,
        short: 400,
    },
    Target {
        name: "stamp-packet",
        grammar: Grammar::Bytes,
        run: stamp_packet,
        short: 3000,
    },
    Target {
        name: "icmp-reply",
        grammar: Grammar::Bytes,
        run: icmp_reply,
        short: 3000,
    },
];

fn check(name: &str) {
    let target = TARGETS
        .iter()
        .find(|t| t.name == name)
        .expect("a target of that name");
    // Panics are the findings: keep the default hook's message but not a backtrace.
    let report = fuzz(target);
    eprintln!(
        "fuzz {name}: {} inputs, {} distinct outcomes, {:.1} s, {} failures",
        report.inputs,
        report.outcomes,
        report.elapsed.as_secs_f64(),
        report.failures.len()
    );
    assert!(
        report.failures.is_empty(),
        "fuzz {name}: inputs that panicked, saved as {:?}; once fixed, copy them into tests/fuzz/regressions/{name}/",
        report.failures
    );
}

#[test]
fn fuzz_regions_toml() {
    check("regions-toml");
}

#[test]
fn fuzz_lab_csv() {
    check("lab-csv");
}

#[test]
fn fuzz_run_json() {
    check("run-json");
}

#[test]
fn fuzz_region_report() {
    check("region-report");
}

#[test]
fn fuzz_push() {
    check("push");
}

#[test]
fn fuzz_stamp_packet() {
    check("stamp-packet");
}

#[test]
fn fuzz_icmp_reply() {
    check("icmp-reply");
}
