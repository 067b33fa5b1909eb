//! `latmap check`: validate the configuration and summarise it.

use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::config::{Config, LabMode, LabSource};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(config_path: &Path, _args: Args) -> anyhow::Result<ExitCode> {
    let config = super::load_config(config_path)?;
    super::print(&summary(&config))?;
    Ok(ExitCode::SUCCESS)
}

/// A short human summary of a valid configuration.
pub fn summary(config: &Config) -> String {
    let mut s = String::new();
    let n = config.regions.len();
    let p = &config.probe;
    let kinds: Vec<&str> = p.kinds.iter().map(|k| k.as_str()).collect();
    let _ = writeln!(s, "{}: ok", super::shown(&config.path));
    let _ = writeln!(
        s,
        "  {n} regions, {} paths per kind, kinds: {}",
        n * n.saturating_sub(1),
        kinds.join(", ")
    );
    let _ = writeln!(
        s,
        "  probes: {} per path, interval {}, gap {}, timeout {}",
        p.count,
        humantime::format_duration(p.interval),
        humantime::format_duration(p.gap),
        humantime::format_duration(p.timeout)
    );
    if let Some(lab) = &config.lab {
        let source = match &lab.source {
            LabSource::Matrix { rtt_file, .. } => format!("matrix {}", super::shown(rtt_file)),
            LabSource::Geo { inflation, base_ms } => {
                format!("locations ({base_ms} ms + {inflation} x fiber distance)")
            }
        };
        let place = match lab.mode {
            LabMode::Loopback => format!("reflectors on 127.0.N.1:{}", lab.port),
            LabMode::Netns => format!(
                "netns mode (root): namespaces behind an emulating core, reflectors and tcp listeners on port {}",
                lab.port
            ),
        };
        let _ = writeln!(
            s,
            "  lab: {source}, {} fault{}, {place}",
            lab.faults.len(),
            if lab.faults.len() == 1 { "" } else { "s" },
        );
    }
    for r in &config.regions {
        let loc = r
            .location
            .map(|l| format!(" ({:.2}, {:.2})", l.lat, l.lon))
            .unwrap_or_default();
        let targets: Vec<String> = r.targets.iter().map(|t| t.to_string()).collect();
        let targets = if targets.is_empty() {
            String::new()
        } else {
            format!(" -> {}", targets.join(", "))
        };
        let _ = writeln!(s, "  - {}{loc}{targets}", r.name);
    }
    s
}
