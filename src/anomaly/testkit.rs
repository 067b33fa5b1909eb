//! Small runs for the detectors' unit tests: a mesh of named regions with chosen RTTs,
//! losses, jitter and locations.

use std::collections::BTreeMap;

use crate::config::{Location, ProbeKind};
use crate::report::{PathEntry, synthetic_samples};
use crate::run::{Run, RunRegion};

#[derive(Debug, Clone, Copy)]
struct Cell {
    rtt_ms: f64,
    lost: usize,
    jitter_ms: f64,
}

/// A mesh under construction.
pub(crate) struct Mesh {
    names: Vec<String>,
    locations: Vec<Option<Location>>,
    cells: BTreeMap<(usize, usize), Cell>,
    count: usize,
}

impl Mesh {
    /// Every path measured at `rtt_ms`, 100 probes each, nothing lost.
    pub fn symmetric(names: &[&str], rtt_ms: f64) -> Mesh {
        let mut mesh = Mesh::empty(names);
        for i in 0..names.len() {
            for j in 0..names.len() {
                if i != j {
                    mesh.cells.insert(
                        (i, j),
                        Cell {
                            rtt_ms,
                            lost: 0,
                            jitter_ms: 0.0,
                        },
                    );
                }
            }
        }
        mesh
    }

    /// No path measured.
    pub fn empty(names: &[&str]) -> Mesh {
        Mesh {
            names: names.iter().map(|n| n.to_string()).collect(),
            locations: vec![None; names.len()],
            cells: BTreeMap::new(),
            count: 100,
        }
    }

    fn at(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .expect("a region of the mesh")
    }

    /// Sets `s -> t`.
    pub fn set(&mut self, s: &str, t: &str, rtt_ms: f64, lost: usize) -> &mut Mesh {
        assert_ne!(s, t, "a path joins two regions");
        let key = (self.at(s), self.at(t));
        let jitter_ms = self.cells.get(&key).map_or(0.0, |c| c.jitter_ms);
        self.cells.insert(
            key,
            Cell {
                rtt_ms,
                lost,
                jitter_ms,
            },
        );
        self
    }

    /// Sets both directions of `a <-> b`.
    pub fn pair(&mut self, a: &str, b: &str, rtt_ms: f64) -> &mut Mesh {
        self.set(a, b, rtt_ms, 0).set(b, a, rtt_ms, 0)
    }

    pub fn remove(&mut self, s: &str, t: &str) -> &mut Mesh {
        let key = (self.at(s), self.at(t));
        self.cells.remove(&key);
        self
    }

    pub fn jitter(&mut self, s: &str, t: &str, jitter_ms: f64) -> &mut Mesh {
        let key = (self.at(s), self.at(t));
        if let Some(c) = self.cells.get_mut(&key) {
            c.jitter_ms = jitter_ms;
        }
        self
    }

    pub fn locate(&mut self, name: &str, lat: f64, lon: f64) -> &mut Mesh {
        let i = self.at(name);
        self.locations[i] = Some(Location { lat, lon });
        self
    }

    /// Probes per path.
    pub fn count(&mut self, count: usize) -> &mut Mesh {
        self.count = count;
        self
    }

    pub fn run(&self) -> Run {
        let regions = self
            .names
            .iter()
            .zip(&self.locations)
            .map(|(name, location)| RunRegion {
                name: name.clone(),
                location: *location,
                reported: true,
            })
            .collect();
        let paths = self
            .cells
            .iter()
            .map(|(&(i, j), c)| {
                let samples = synthetic_samples(
                    (c.rtt_ms * 1000.0).round() as u64,
                    c.lost,
                    (c.jitter_ms * 1000.0).round() as u64,
                    self.count,
                );
                PathEntry::from_samples(
                    &self.names[i],
                    &self.names[j],
                    ProbeKind::Udp,
                    "target",
                    samples,
                )
            })
            .collect();
        Run::new(regions, paths, chrono::DateTime::UNIX_EPOCH)
    }
}
