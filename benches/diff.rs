//! `latmap diff` at fleet scale: 1,000 regions (999,000 paths), 10 samples per path,
//! drawn from the noise model of docs/ci.md. Checks what the diff promises there and
//! measures what it costs:
//!
//! - a pair of runs from one distribution gives no regression;
//! - a current run with three paths 20 ms slower gives exactly those three;
//! - with `--baselines K`, the same against K baseline runs;
//! - the time of the diff against the time to read its runs, and the peak memory
//!   against that of reading them.
//!
//! Run with `cargo bench --bench diff` (options after `--`: `--regions N`, `--samples
//! N`, `--baselines K`, `--dir DIR`). The runs are generated once per size into DIR
//! (default: the system's temporary folder) and kept; each measurement runs in a fresh
//! child process so that its peak resident memory (VmHWM) is its own. Not part of
//! `cargo test`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use latmap::config::ProbeKind;
use latmap::diff::noise::NoiseModel;
use latmap::diff::{DiffBuilder, DiffThresholds, Verdict};
use latmap::report::PathEntry;
use latmap::run::{Run, RunRegion};
use rand::SeedableRng;

struct Options {
    regions: usize,
    samples: usize,
    baselines: usize,
    dir: PathBuf,
}

fn options(args: &[String]) -> Options {
    let mut o = Options {
        regions: 1000,
        samples: 10,
        baselines: 1,
        dir: std::env::temp_dir(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--regions" => o.regions = value().parse().unwrap_or(o.regions),
            "--samples" => o.samples = value().parse().unwrap_or(o.samples),
            "--baselines" => o.baselines = value().parse().unwrap_or(o.baselines).max(1),
            "--dir" => o.dir = PathBuf::from(value()),
            _ => {}
        }
    }
    o
}

/// The three paths that move in the "shifted" run: short ones, so that 20 ms is beyond
/// their thresholds (10% and 2 ms of 12 to 54 ms).
const SHIFTED: [(usize, usize); 3] = [(0, 1), (2, 5), (4, 3)];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--measure") {
        let files: Vec<PathBuf> = args[i + 1..]
            .iter()
            .take_while(|a| !a.starts_with("--"))
            .map(PathBuf::from)
            .collect();
        measure(&files);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("run with `cargo bench --bench diff`");
        return;
    }
    let o = options(&args);
    let name = |what: &str| {
        o.dir.join(format!(
            "latmap-diff-{}x{}-{what}.json",
            o.regions, o.samples
        ))
    };
    let bases: Vec<PathBuf> = (0..o.baselines)
        .map(|k| name(&format!("base{k}")))
        .collect();
    let (same, shifted) = (name("same"), name("shifted"));
    for (k, f) in bases.iter().enumerate() {
        generate(&o, f, 11 + k as u64, false);
    }
    generate(&o, &same, 101, false);
    generate(&o, &shifted, 102, true);
    println!(
        "{} regions, {} paths, {} samples each; {} baseline(s); noise: {:?}",
        o.regions,
        o.regions * (o.regions - 1),
        o.samples,
        o.baselines,
        NoiseModel::default()
    );
    let exe = std::env::current_exe().expect("this benchmark's path");
    for (what, current) in [
        ("one distribution", &same),
        ("three paths +20 ms", &shifted),
    ] {
        println!("\n{what}:");
        let out = Command::new(&exe)
            .arg("--measure")
            .args(&bases)
            .arg(current)
            .output()
            .expect("run the measurement");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A fleet of `o.regions` regions with the fixed delay of path (i, j) 5 + 7 (i + j) mod
/// 300 ms, samples from the noise model; `shifted` moves SHIFTED by 20 ms.
fn generate(o: &Options, file: &Path, seed: u64, shifted: bool) {
    if file.exists() {
        return;
    }
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let noise = NoiseModel::default();
    let n = o.regions;
    let regions: Vec<RunRegion> = (0..n)
        .map(|i| RunRegion {
            name: format!("region-{i:04}"),
            location: None,
            reported: true,
        })
        .collect();
    let mut paths = Vec::with_capacity(n * (n - 1));
    for i in 0..n {
        for j in (0..n).filter(|&j| j != i) {
            let mut base = 5.0 + (7 * (i + j) % 300) as f64;
            if shifted && SHIFTED.contains(&(i, j)) {
                base += 20.0;
            }
            let samples = noise.samples(&mut rng, base, o.samples);
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
    let at = chrono::DateTime::UNIX_EPOCH + chrono::Duration::seconds(seed as i64);
    let mut run = Run::new(regions, paths, at);
    run.id = format!("bench-{seed}");
    run.write(file).expect("write the synthetic run");
    println!(
        "generated {} in {:.1} s",
        file.display(),
        started.elapsed().as_secs_f64()
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

/// Reads the current run (the last file) and the baselines, diffs, and reports the
/// verdicts, the times and the peak memory. The peer for time and memory is reading
/// the current run alone, measured first in the same process.
fn measure(files: &[PathBuf]) {
    let Some((current, bases)) = files.split_last() else {
        return;
    };
    let t = Instant::now();
    let run = Run::read(current).expect("read the current run");
    let read_one = t.elapsed();
    let peak_read_one = peak_mib();

    let t = Instant::now();
    let mut builder = DiffBuilder::new(run);
    let peak_current = peak_mib();
    let mut reading = Duration::ZERO;
    for b in bases {
        let tr = Instant::now();
        let base = Run::read(b).expect("read a baseline");
        reading += tr.elapsed();
        builder.add_baseline(base);
    }
    let peak_bases = peak_mib();
    let tf = Instant::now();
    let d = builder.finish(&DiffThresholds::default());
    let finish = tf.elapsed();
    let total = t.elapsed();
    let work = total - reading;
    let peak = peak_mib();

    let regressed: Vec<String> = d
        .paths
        .iter()
        .filter(|p| p.verdict == Verdict::Regression)
        .map(|p| format!("{} → {}", p.key.source, p.key.target))
        .collect();
    println!(
        "  verdicts: {} regressions {:?}, {} improvements, {} paths compared; family {} tests; blind: {} paths (count = {:?} would for {}, {:?} for all)",
        regressed.len(),
        regressed,
        d.count(Verdict::Improvement),
        d.paths.len(),
        d.family.tests,
        d.blind.p50_paths,
        d.blind.p50_count_most,
        d.blind.p50_paths_most,
        d.blind.p50_count_needed
    );
    let tj = Instant::now();
    let mut sink = CountingSink(0);
    serde_json::to_writer_pretty(&mut sink, &d).expect("serialise");
    let json = tj.elapsed();
    println!(
        "  read current {}  |  diff {} (of which finish {}) besides {} reading {} baseline(s)  |  diff / read current = {:.2}",
        secs(read_one),
        secs(work),
        secs(finish),
        secs(reading),
        bases.len(),
        work.as_secs_f64() / read_one.as_secs_f64()
    );
    println!(
        "  peak memory: {:.0} MiB after reading the current run, {:.0} MiB with its summary, {:.0} MiB with the baselines', {:.0} MiB after the diff ({:.2}x)  |  JSON output {:.0} MiB in {}",
        peak_read_one,
        peak_current,
        peak_bases,
        peak,
        peak / peak_read_one,
        sink.0 as f64 / (1 << 20) as f64,
        secs(json)
    );
}

/// Counts the bytes written to it.
struct CountingSink(u64);

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
