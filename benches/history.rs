//! The history store at fleet scale: 2,000 runs of a 100-region fleet (9,900 paths, 20
//! samples each). Measures, in one run:
//!
//! - adding one run to the store, against writing that run's `run.json` (target: under
//!   10% of it);
//! - loading one path's history over all 2,000 runs (target: at most 200 ms), cold
//!   (a fresh process, the file just reopened) and warm;
//! - loading every path's last 24 runs, what the `shift` detector reads per run.
//!
//! `cargo bench --bench history` (options after `--`: `--runs N`, `--regions N`,
//! `--dir DIR`). The store is built once per size in DIR (default: the system's
//! temporary folder) and kept. Not part of `cargo test`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use latmap::config::ProbeKind;
use latmap::history::{History, PathKey};
use latmap::report::PathEntry;
use latmap::run::{Run, RunRegion};
use rand::{RngExt, SeedableRng};

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(regions: usize, index: usize, rng: &mut rand::rngs::StdRng) -> Run {
    let names: Vec<String> = (0..regions).map(|i| format!("region-{i:03}")).collect();
    let rs = names
        .iter()
        .map(|n| RunRegion {
            name: n.clone(),
            location: None,
            reported: true,
        })
        .collect();
    let mut paths = Vec::with_capacity(regions * (regions - 1));
    for (i, a) in names.iter().enumerate() {
        for (j, b) in names.iter().enumerate() {
            if i == j {
                continue;
            }
            let base = 5_000 + 700 * (i + j) as u64;
            let samples = (0..20)
                .map(|_| (rng.random_range(0..100) > 0).then(|| base + rng.random_range(0..2_000)))
                .collect();
            paths.push(PathEntry::from_samples(
                a,
                b,
                ProbeKind::Udp,
                "192.0.2.1:862",
                samples,
            ));
        }
    }
    let at = Utc
        .timestamp_opt(1_800_000_000 + 300 * index as i64, 0)
        .single()
        .expect("time");
    Run::new(rs, paths, at)
}

/// This thread's CPU time.
fn cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("run with `cargo bench --bench history`");
        return;
    }
    let runs = arg(&args, "--runs", 2000);
    let regions = arg(&args, "--regions", 100);
    let dir = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let file = dir.join(format!("latmap-history-{runs}x{regions}.redb"));
    let key = PathKey {
        source: "region-042".into(),
        target: "region-017".into(),
        kind: ProbeKind::Udp,
    };
    if args.iter().any(|a| a == "--add-loop") {
        // For profiling: one run added again and again.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut r = run(regions, 0, &mut rng);
        let dir = tempfile::tempdir().expect("temporary folder");
        let h = History::open(&dir.path().join("h.redb")).expect("open");
        for i in 0..200 {
            r.started_at += chrono::TimeDelta::seconds(300 * i);
            h.add(&r).expect("add");
        }
        return;
    }
    if args.iter().any(|a| a == "--load") {
        // A fresh process: nothing of the file is in this process's memory.
        let t = Instant::now();
        let h = History::open(&file).expect("open");
        let points = h.path(&key, None).expect("load");
        println!("{} {}", t.elapsed().as_secs_f64(), points.len());
        return;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let tmp = tempfile::tempdir_in(&dir).expect("temporary folder");
    if !file.exists() {
        println!(
            "building {} runs of {} regions into {} ...",
            runs,
            regions,
            file.display()
        );
        let part = file.with_extension("building");
        let _ = std::fs::remove_file(&part);
        let h = History::open(&part).expect("open");
        for i in 0..runs {
            let r = run(regions, i, &mut rng);
            h.add(&r).expect("add");
        }
        drop(h);
        std::fs::rename(&part, &file).expect("rename");
    }
    // Adding to the full store, against writing run.json, in the same run: wall time
    // and this thread's CPU time (the machine is shared; CPU time does not count the
    // neighbours), alternating which goes first.
    let h = History::open(&file).expect("open");
    let (mut add_wall, mut add_cpu, mut write_wall, mut write_cpu) =
        (vec![], vec![], vec![], vec![]);
    let json = tmp.path().join("run.json");
    for i in 0..10 {
        let r = run(regions, runs + 1000 + i, &mut rng);
        let mut add = || {
            let (w, c) = (Instant::now(), cpu());
            h.add(&r).expect("add");
            add_wall.push(w.elapsed());
            add_cpu.push(cpu() - c);
        };
        let mut write = || {
            let (w, c) = (Instant::now(), cpu());
            r.write(&json).expect("write run.json");
            write_wall.push(w.elapsed());
            write_cpu.push(cpu() - c);
        };
        if i % 2 == 0 {
            add();
            write();
        } else {
            write();
            add();
        }
        h.remove(&[r.started_at]).expect("remove");
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (aw, ac, ww, wc) = (
        median(&mut add_wall),
        median(&mut add_cpu),
        median(&mut write_wall),
        median(&mut write_cpu),
    );
    println!(
        "add one run: {:.1} ms wall, {:.1} ms CPU; write its run.json: {:.1} ms wall, {:.1} ms CPU",
        ms(aw),
        ms(ac),
        ms(ww),
        ms(wc)
    );
    println!(
        "add / write: {:.3} in CPU, {:.3} in wall time (target < 0.10)",
        ac.as_secs_f64() / wc.as_secs_f64(),
        aw.as_secs_f64() / ww.as_secs_f64()
    );
    drop(h);
    let exe = std::env::current_exe().expect("this benchmark");
    let mut cold = Vec::new();
    for _ in 0..5 {
        let out = std::process::Command::new(&exe)
            .args([
                "--bench",
                "--load",
                "--runs",
                &runs.to_string(),
                "--regions",
                &regions.to_string(),
                "--dir",
            ])
            .arg(&dir)
            .output()
            .expect("child");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text.split_whitespace();
        let secs: f64 = it.next().and_then(|s| s.parse().ok()).expect("seconds");
        let n: usize = it.next().and_then(|s| s.parse().ok()).expect("points");
        assert_eq!(n, runs, "every run has the path");
        cold.push(secs);
    }
    cold.sort_by(f64::total_cmp);
    let h = History::open(&file).expect("open");
    let t = Instant::now();
    let points = h.path(&key, None).expect("load");
    let warm = t.elapsed();
    let t = Instant::now();
    let recent = h
        .recent(
            Utc.timestamp_opt(4_000_000_000, 0).single().expect("time"),
            24,
        )
        .expect("recent");
    let window = t.elapsed();
    println!(
        "one path over {} runs: {:.1} ms opened afresh (median of 5, max {:.1}), {:.1} ms warm (target <= 200 ms)",
        points.len(),
        cold[2] * 1e3,
        cold[4] * 1e3,
        warm.as_secs_f64() * 1e3
    );
    println!(
        "every path's last 24 runs ({} paths): {:.1} ms",
        recent.len(),
        window.as_secs_f64() * 1e3
    );
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    println!(
        "store: {:.0} MiB for {} runs",
        size as f64 / (1 << 20) as f64,
        runs
    );
}
