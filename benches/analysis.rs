//! The analysis stage at fleet scale: read a run of 1,000 regions (999,000 paths, 10
//! samples each), build its latency graph and run every detector; compare the analysis
//! time with the read time, and report the peak memory.
//!
//! Run with `cargo bench --bench analysis` (options after `--`: `--regions N`,
//! `--samples N`, `--repeat N`, `--dir DIR`, `--petgraph` to also time petgraph's own
//! Floyd-Warshall, and `--via-value` to also time the old way of reading, through a
//! `serde_json::Value` tree). The synthetic run is generated once per
//! size into DIR (default: the system's temporary folder) and kept for later runs;
//! each measurement runs in a fresh child process, so that the peak resident memory
//! (VmHWM) is that of reading and analysing alone. Not part of `cargo test`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use latmap::anomaly::{self, Context, detectors};
use latmap::config::{Location, ProbeKind, Thresholds};
use latmap::graph::LatencyGraph;
use latmap::report::{PathEntry, synthetic_samples};
use latmap::run::{Run, RunRegion};
use rand::{RngExt, SeedableRng};

struct Options {
    regions: usize,
    samples: usize,
    repeat: usize,
    dir: PathBuf,
    petgraph: bool,
    via_value: bool,
}

fn options(args: &[String]) -> Options {
    let mut o = Options {
        regions: 1000,
        samples: 10,
        repeat: 3,
        dir: std::env::temp_dir(),
        petgraph: false,
        via_value: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--regions" => o.regions = value().parse().unwrap_or(o.regions),
            "--samples" => o.samples = value().parse().unwrap_or(o.samples),
            "--repeat" => o.repeat = value().parse().unwrap_or(o.repeat),
            "--dir" => o.dir = PathBuf::from(value()),
            "--petgraph" => o.petgraph = true,
            "--via-value" => o.via_value = true,
            _ => {}
        }
    }
    o
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--measure-value") {
        let file = args.get(i + 1).expect("--measure-value FILE");
        measure_via_value(Path::new(file));
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--measure") {
        let file = args.get(i + 1).expect("--measure FILE");
        measure(Path::new(file), args.iter().any(|a| a == "--petgraph"));
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("run with `cargo bench --bench analysis`");
        return;
    }
    let o = options(&args);
    let file = o
        .dir
        .join(format!("latmap-bench-{}x{}.json", o.regions, o.samples));
    if !file.exists() {
        generate(&o, &file);
    }
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    println!(
        "run file: {} ({:.0} MiB, {} regions, {} paths, {} samples each)",
        file.display(),
        size as f64 / (1 << 20) as f64,
        o.regions,
        o.regions * (o.regions - 1),
        o.samples
    );
    let exe = std::env::current_exe().expect("this benchmark's path");
    for k in 0..o.repeat {
        let mut cmd = Command::new(&exe);
        cmd.arg("--measure").arg(&file);
        if o.petgraph {
            cmd.arg("--petgraph");
        }
        let out = cmd.output().expect("run the measurement");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        if k + 1 < o.repeat {
            println!();
        }
    }
    if o.via_value {
        let out = Command::new(&exe)
            .arg("--measure-value")
            .arg(&file)
            .output()
            .expect("run the measurement");
        print!("\n{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Reads the run as latmap did before streaming: the whole file, a `serde_json::Value`
/// tree, then the typed run.
fn measure_via_value(file: &Path) {
    let t = Instant::now();
    let bytes = std::fs::read(file).expect("read the file");
    let value: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    drop(bytes);
    let run: Run = serde_json::from_value(value).expect("a run");
    println!(
        "read through a serde_json::Value: {} for {} paths, peak memory {:.0} MiB",
        secs(t.elapsed()),
        run.paths.len(),
        peak_mib()
    );
}

/// A fleet spread over the globe, RTTs 1 ms + 1.6x the fiber bound with a little
/// noise, and faults for every detector to find: a region whose outgoing paths are
/// slow and lossy, a slow pair (detours), lossy, jittery and unreachable paths.
fn generate(o: &Options, file: &Path) {
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let n = o.regions;
    // Uniform on the sphere.
    let locations: Vec<Location> = (0..n)
        .map(|_| Location {
            lat: (2.0 * rng.random_range(0.0f64..1.0) - 1.0)
                .asin()
                .to_degrees(),
            lon: rng.random_range(0.0f64..1.0) * 360.0 - 180.0,
        })
        .collect();
    let regions: Vec<RunRegion> = locations
        .iter()
        .enumerate()
        .map(|(i, &location)| RunRegion {
            name: format!("region-{i:04}"),
            location: Some(location),
            reported: true,
        })
        .collect();
    let mut paths = Vec::with_capacity(n * (n - 1));
    for i in 0..n {
        for j in 0..n {
            if i == j {
                continue;
            }
            let km = locations[i].great_circle_km(locations[j]);
            let mut rtt = 1.0 + 1.6 * km / 100.0 + rng.random_range(0.0f64..1.0) * 0.5;
            let mut lost = 0;
            let mut jitter = 0.1 + rng.random_range(0.0f64..1.0) * 0.4;
            if i == 3 {
                rtt += 60.0; // a bad region
                lost = usize::from(rng.random_range(0.0f64..1.0) < 0.3) * 3;
            }
            if (i, j) == (10, 20) || (i, j) == (20, 10) {
                rtt += 150.0; // a detour pair
            }
            let x = rng.random_range(0.0f64..1.0);
            if x < 0.0005 {
                lost = o.samples; // unreachable
            } else if x < 0.002 {
                lost = 3;
            } else if x < 0.003 {
                jitter = 15.0;
            }
            let samples = synthetic_samples(
                (rtt * 1000.0) as u64,
                lost,
                (jitter * 1000.0) as u64,
                o.samples,
            );
            let target = format!("127.{}.{}.1:862", (j + 1) >> 8, (j + 1) & 0xff);
            paths.push(PathEntry::from_samples(
                &regions[i].name,
                &regions[j].name,
                ProbeKind::Udp,
                &target,
                samples,
            ));
        }
    }
    let run = Run::new(regions, paths, chrono::DateTime::UNIX_EPOCH);
    let built = started.elapsed();
    let t = Instant::now();
    run.write(file).expect("write the synthetic run");
    println!(
        "generated {} in {:.1} s, written in {:.1} s",
        file.display(),
        built.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
}

/// Peak resident memory of this process so far, in MiB (Linux's VmHWM).
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Reads the run, builds its graphs and runs every detector, timing each step; then
/// times the all-pairs steps alone (after the peak memory is taken).
fn measure(file: &Path, petgraph: bool) {
    let t = Instant::now();
    let run = Run::read(file).expect("read the run");
    let read = t.elapsed();
    let peak_read = peak_mib();

    let thresholds = Thresholds::default();
    let t = Instant::now();
    let mut build = Duration::ZERO;
    let mut per_detector = vec![Duration::ZERO; detectors().len()];
    let mut found = Vec::new();
    for kind in LatencyGraph::kinds(&run) {
        let tb = Instant::now();
        let graph = LatencyGraph::new(&run, kind);
        let ctx = Context::new(&graph, &thresholds);
        build += tb.elapsed();
        let mut f = Vec::new();
        for (k, d) in detectors().iter().enumerate() {
            let td = Instant::now();
            d.detect(&ctx, &mut f);
            per_detector[k] += td.elapsed();
        }
        found.extend(f);
    }
    anomaly::sort(&mut found, &run);
    let analysis = t.elapsed();
    let peak = peak_mib();

    println!(
        "read {}  |  analysis {} = graph {} + detectors {}  |  analysis / read = {:.2}",
        secs(read),
        secs(analysis),
        secs(build),
        secs(analysis - build),
        analysis.as_secs_f64() / read.as_secs_f64()
    );
    let breakdown: Vec<String> = detectors()
        .iter()
        .zip(&per_detector)
        .map(|(d, t)| format!("{} {:.2}", d.id(), t.as_secs_f64()))
        .collect();
    println!("detectors (s): {}", breakdown.join(", "));
    let explained: usize = found.iter().map(|a| a.explains.len()).sum();
    println!(
        "findings: {} ({} folded under region findings)  |  peak memory: {:.0} MiB after read, {:.0} MiB after analysis",
        found.len(),
        explained,
        peak_read,
        peak
    );

    let graph = LatencyGraph::new(&run, ProbeKind::Udp);
    let t = Instant::now();
    let relays = graph.relay_matrix();
    let relay_time = t.elapsed();
    let t = Instant::now();
    let best = graph.best_paths();
    let best_time = t.elapsed();
    let mut line = format!(
        "all-pairs on the flat matrix: best single relay {}, Floyd-Warshall {}",
        secs(relay_time),
        secs(best_time)
    );
    if petgraph {
        let t = Instant::now();
        let reference = petgraph::algo::floyd_warshall(graph.graph(), |e| {
            e.weight().p50_ms.unwrap_or(f64::INFINITY)
        });
        line.push_str(&format!(
            ", petgraph's floyd_warshall {} ({} pairs)",
            secs(t.elapsed()),
            reference.map_or(0, |m| m.len())
        ));
    }
    // Keep the results alive until here, so that nothing is optimised away.
    let checksum: f64 = relays.iter().take(10).sum::<f64>() + best.rtt_ms(0, 1).unwrap_or(0.0);
    println!("{line} [checksum {checksum:.1}]");
}
