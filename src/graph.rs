//! The latency graph of a run: regions as nodes, one edge per measured directed path of
//! one probe kind, weighted with the path's statistics.
//!
//! [`LatencyGraph`] wraps a petgraph [`DiGraph`] (node `i` is the run's `i`-th region)
//! and keeps beside it a flat `n × n` matrix of p50 RTTs, which the all-pairs
//! computations ([`LatencyGraph::relay_matrix`], [`LatencyGraph::best_paths`]) run over:
//! at a thousand regions they are a billion steps each, and a flat `Vec<f64>` with a
//! tight inner loop is several times faster than a generic graph algorithm. When a
//! (source, target) has several target addresses, the edge is the one with the most
//! replies. This module reads runs and judges nothing; the detectors come later.

use std::collections::HashMap;

use petgraph::graph::{DiGraph, EdgeIndex, NodeIndex};

use crate::config::{Location, ProbeKind};
use crate::probe::ProberHealth;
use crate::report::PathEntry;
use crate::run::Run;

/// No edge in the index matrix.
const NO_EDGE: u32 = u32::MAX;

/// A region of the graph.
#[derive(Debug, Clone, Copy)]
pub struct RegionNode<'r> {
    pub name: &'r str,
    pub location: Option<Location>,
    /// Whether the region sent a report (its outgoing paths are absent otherwise).
    pub reported: bool,
    /// Its prober's view of its own health, when the run has it.
    pub prober: Option<&'r ProberHealth>,
}

/// A measured directed path.
#[derive(Debug, Clone, Copy)]
pub struct PathEdge<'r> {
    pub entry: &'r PathEntry,
    /// The p50 RTT in milliseconds; `None` when nothing came back.
    pub p50_ms: Option<f64>,
}

/// The measured paths of one probe kind of a run, as a directed graph.
#[derive(Debug)]
pub struct LatencyGraph<'r> {
    kind: ProbeKind,
    graph: DiGraph<RegionNode<'r>, PathEdge<'r>>,
    index: HashMap<&'r str, usize>,
    n: usize,
    /// `n × n`: the edge of `i -> j`, or [`NO_EDGE`].
    edges: Vec<u32>,
    /// `n × n`: the p50 of `i -> j` in ms; infinite without one (and on the diagonal).
    p50: Vec<f64>,
}

impl<'r> LatencyGraph<'r> {
    /// The probe kinds that have at least one path in `run`, in [`ProbeKind::ALL`] order.
    pub fn kinds(run: &Run) -> Vec<ProbeKind> {
        ProbeKind::ALL
            .into_iter()
            .filter(|k| run.paths.iter().any(|p| p.kind == *k))
            .collect()
    }

    /// The graph of the `kind` paths of `run`. Paths naming a region the run does not
    /// list, and paths from a region to itself, are left out.
    pub fn new(run: &'r Run, kind: ProbeKind) -> LatencyGraph<'r> {
        let n = run.regions.len();
        let mut graph = DiGraph::with_capacity(n, n * n.saturating_sub(1));
        let mut index = HashMap::with_capacity(n);
        for r in &run.regions {
            let node = graph.add_node(RegionNode {
                name: &r.name,
                location: r.location,
                reported: r.reported,
                prober: run.probers.get(&r.name),
            });
            index.entry(r.name.as_str()).or_insert(node.index());
        }
        let mut edges = vec![NO_EDGE; n * n];
        let mut p50 = vec![f64::INFINITY; n * n];
        let mut last_source: Option<(&str, usize)> = None;
        for entry in run.paths.iter().filter(|p| p.kind == kind) {
            // Paths are grouped by source: look the source up once per group.
            let i = match last_source {
                Some((name, i)) if name == entry.source => Some(i),
                _ => index.get(entry.source.as_str()).copied(),
            };
            let Some(i) = i else { continue };
            last_source = Some((&entry.source, i));
            let Some(&j) = index.get(entry.target.as_str()) else {
                continue;
            };
            if i == j {
                continue;
            }
            let edge = PathEdge {
                entry,
                p50_ms: entry.rtt_us.map(|r| r.p50 as f64 / 1000.0),
            };
            let cell = i * n + j;
            match edges[cell] {
                NO_EDGE => {
                    let e = graph.add_edge(NodeIndex::new(i), NodeIndex::new(j), edge);
                    edges[cell] = u32::try_from(e.index()).unwrap_or(NO_EDGE);
                }
                e => {
                    let weight = &mut graph[EdgeIndex::new(e as usize)];
                    if crate::run::stands_for_pair(entry, weight.entry) {
                        *weight = edge;
                    } else {
                        continue;
                    }
                }
            }
            p50[cell] = edge.p50_ms.unwrap_or(f64::INFINITY);
        }
        LatencyGraph {
            kind,
            graph,
            index,
            n,
            edges,
            p50,
        }
    }

    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// The number of regions (nodes).
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The number of measured paths (edges).
    pub fn path_count(&self) -> usize {
        self.graph.edge_count()
    }

    /// The petgraph graph: node `i` is region `i`.
    pub fn graph(&self) -> &DiGraph<RegionNode<'r>, PathEdge<'r>> {
        &self.graph
    }

    /// Region `i`. Panics when `i >= len()`.
    pub fn region(&self, i: usize) -> &RegionNode<'r> {
        &self.graph[NodeIndex::new(i)]
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The measured path `i -> j`, if any.
    pub fn path(&self, i: usize, j: usize) -> Option<&PathEdge<'r>> {
        if i >= self.n || j >= self.n {
            return None;
        }
        match self.edges[i * self.n + j] {
            NO_EDGE => None,
            e => self.graph.edge_weight(EdgeIndex::new(e as usize)),
        }
    }

    /// Every measured path as `(source index, target index, edge)`.
    pub fn paths(&self) -> impl Iterator<Item = (usize, usize, &PathEdge<'r>)> {
        self.graph.edge_indices().filter_map(|e| {
            let (a, b) = self.graph.edge_endpoints(e)?;
            Some((a.index(), b.index(), self.graph.edge_weight(e)?))
        })
    }

    /// The p50 RTT of `i -> j` in ms, when measured and answered.
    pub fn rtt_ms(&self, i: usize, j: usize) -> Option<f64> {
        if i >= self.n || j >= self.n {
            return None;
        }
        Some(self.p50[i * self.n + j]).filter(|v| v.is_finite())
    }

    /// The `n × n` p50 matrix in ms, row-major; infinite where there is no RTT.
    pub fn p50_matrix(&self) -> &[f64] {
        &self.p50
    }

    /// For every pair, the best RTT through exactly one relay region `k`:
    /// `min over k of p50(i, k) + p50(k, j)`, row-major, infinite when no relay has both
    /// legs measured. `n³` additions in a loop the compiler vectorises.
    pub fn relay_matrix(&self) -> Vec<f64> {
        let n = self.n;
        let d = &self.p50;
        let mut best = vec![f64::INFINITY; n * n];
        for (i, row_best) in best.chunks_exact_mut(n.max(1)).enumerate().take(n) {
            let d_i = &d[i * n..(i + 1) * n];
            for (k, &d_ik) in d_i.iter().enumerate() {
                if !d_ik.is_finite() {
                    continue; // includes k == i (the diagonal is infinite)
                }
                // k == j adds d(j, j) = infinity, so a relay is never an end point.
                let d_k = &d[k * n..(k + 1) * n];
                for (b, &d_kj) in row_best.iter_mut().zip(d_k) {
                    *b = b.min(d_ik + d_kj);
                }
            }
        }
        best
    }

    /// The relay `k` with the smallest `p50(i, k) + p50(k, j)`, and that sum (ties: the
    /// first region in run order).
    pub fn best_relay(&self, i: usize, j: usize) -> Option<(usize, f64)> {
        let n = self.n;
        if i >= n || j >= n {
            return None;
        }
        let mut best: Option<(usize, f64)> = None;
        for k in 0..n {
            let via = self.p50[i * n + k] + self.p50[k * n + j];
            if via.is_finite() && best.is_none_or(|(_, b)| via < b) {
                best = Some((k, via));
            }
        }
        best
    }

    /// All-pairs best paths over p50 RTT, through any number of relays
    /// (Floyd-Warshall on the flat matrix).
    pub fn best_paths(&self) -> BestPaths {
        let n = self.n;
        let mut dist = self.p50.clone();
        let mut next: Vec<u32> = (0..n * n)
            .map(|c| {
                if dist[c].is_finite() {
                    (c % n) as u32
                } else {
                    NO_EDGE
                }
            })
            .collect();
        for i in 0..n {
            dist[i * n + i] = 0.0;
            next[i * n + i] = i as u32;
        }
        let mut row_k = vec![0.0; n];
        for k in 0..n {
            // Row k does not change during step k (d(k, k) = 0), so a copy is exact.
            row_k.copy_from_slice(&dist[k * n..(k + 1) * n]);
            for i in 0..n {
                let d_ik = dist[i * n + k];
                if i == k || !d_ik.is_finite() {
                    continue;
                }
                let next_ik = next[i * n + k];
                let row = i * n..(i + 1) * n;
                for ((d, nx), &d_kj) in dist[row.clone()].iter_mut().zip(&mut next[row]).zip(&row_k)
                {
                    let via = d_ik + d_kj;
                    if via < *d {
                        *d = via;
                        *nx = next_ik;
                    }
                }
            }
        }
        BestPaths { n, dist, next }
    }
}

/// All-pairs best paths (see [`LatencyGraph::best_paths`]).
#[derive(Debug, Clone)]
pub struct BestPaths {
    n: usize,
    dist: Vec<f64>,
    next: Vec<u32>,
}

impl BestPaths {
    /// The best RTT from `i` to `j` in ms, through any relays; `None` when `j` cannot
    /// be reached from `i`.
    pub fn rtt_ms(&self, i: usize, j: usize) -> Option<f64> {
        if i >= self.n || j >= self.n {
            return None;
        }
        Some(self.dist[i * self.n + j]).filter(|v| v.is_finite())
    }

    /// The regions of the best path from `i` to `j`, both ends included.
    pub fn route(&self, i: usize, j: usize) -> Option<Vec<usize>> {
        self.rtt_ms(i, j)?;
        let mut route = vec![i];
        let mut at = i;
        while at != j {
            let next = self.next[at * self.n + j];
            if next == NO_EDGE || route.len() > self.n {
                return None; // cannot happen for a finite distance; never loop
            }
            at = next as usize;
            route.push(at);
        }
        Some(route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::RunRegion;
    use rand::{RngExt, SeedableRng};

    /// A run of regions `r0..` whose `i -> j` RTT is `rtt[i][j]` ms (`None`: not
    /// measured; `Some(f64::INFINITY)`: measured, nothing came back).
    pub(crate) fn run_of(rtt: &[Vec<Option<f64>>]) -> Run {
        let n = rtt.len();
        let regions = (0..n)
            .map(|i| RunRegion {
                name: format!("r{i}"),
                location: None,
                reported: true,
            })
            .collect();
        let mut paths = Vec::new();
        for (i, row) in rtt.iter().enumerate() {
            for (j, cell) in row.iter().enumerate() {
                if let Some(ms) = cell {
                    let sample = ms.is_finite().then(|| (ms * 1000.0).round() as u64);
                    paths.push(PathEntry::from_samples(
                        &format!("r{i}"),
                        &format!("r{j}"),
                        ProbeKind::Udp,
                        "t",
                        vec![sample; 3],
                    ));
                }
            }
        }
        Run::new(regions, paths, chrono::DateTime::UNIX_EPOCH)
    }

    fn random_matrix(n: usize, seed: u64) -> Vec<Vec<Option<f64>>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        let x = rng.random_range(0.0f64..1.0);
                        (i != j && x > 0.2)
                            .then(|| (1.0 + rng.random_range(0.0f64..1.0) * 300.0).round())
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn edges_follow_the_run_and_prefer_the_target_with_most_replies() {
        let mut run = run_of(&[
            vec![None, Some(10.0), None],
            vec![Some(11.0), None, Some(f64::INFINITY)],
            vec![None, None, None],
        ]);
        // A second target of r0 -> r1 with more replies and another RTT.
        let mut better =
            PathEntry::from_samples("r0", "r1", ProbeKind::Udp, "u", vec![Some(20_000); 4]);
        better.target_spec = "u".into();
        run.paths.push(better);
        // And an ICMP path, which the UDP graph ignores.
        run.paths.push(PathEntry::from_samples(
            "r2",
            "r0",
            ProbeKind::Icmp,
            "t",
            vec![Some(1); 3],
        ));
        let g = LatencyGraph::new(&run, ProbeKind::Udp);
        assert_eq!((g.len(), g.path_count()), (3, 3));
        assert_eq!(g.rtt_ms(0, 1), Some(20.0));
        assert_eq!(
            g.path(0, 1).map(|e| e.entry.target_spec.as_str()),
            Some("u")
        );
        assert_eq!(g.rtt_ms(1, 0), Some(11.0));
        assert_eq!(g.rtt_ms(1, 2), None, "unreachable: an edge without RTT");
        assert!(g.path(1, 2).is_some());
        assert!(g.path(2, 0).is_none());
        assert_eq!(g.index_of("r2"), Some(2));
        assert_eq!(g.region(1).name, "r1");
        assert_eq!(LatencyGraph::kinds(&run), [ProbeKind::Icmp, ProbeKind::Udp]);
        assert_eq!(LatencyGraph::new(&run, ProbeKind::Icmp).path_count(), 1);
        assert!(g.path(7, 0).is_none() && g.rtt_ms(0, 7).is_none());
    }

    #[test]
    fn relay_matrix_is_the_best_single_relay() {
        for seed in 1..6 {
            let m = random_matrix(9, seed);
            let run = run_of(&m);
            let g = LatencyGraph::new(&run, ProbeKind::Udp);
            let relays = g.relay_matrix();
            for i in 0..9 {
                for j in 0..9 {
                    let want = (0..9)
                        .filter(|&k| k != i && k != j)
                        .filter_map(|k| Some(m[i][k]? + m[k][j]?))
                        .fold(f64::INFINITY, f64::min);
                    assert_eq!(relays[i * 9 + j], want, "{seed}: {i} {j}");
                    match g.best_relay(i, j) {
                        Some((k, via)) => {
                            assert_eq!(via, want);
                            assert!(k != i && k != j);
                        }
                        None => assert!(want.is_infinite() || i == j),
                    }
                }
            }
        }
    }

    #[test]
    fn best_paths_agree_with_petgraph_floyd_warshall() {
        for seed in 1..6 {
            let m = random_matrix(12, seed);
            let run = run_of(&m);
            let g = LatencyGraph::new(&run, ProbeKind::Udp);
            let best = g.best_paths();
            let reference = petgraph::algo::floyd_warshall(g.graph(), |e| {
                e.weight().p50_ms.unwrap_or(f64::INFINITY)
            })
            .expect("no negative cycles");
            for i in 0..12 {
                for j in 0..12 {
                    let want = reference
                        .get(&(NodeIndex::new(i), NodeIndex::new(j)))
                        .copied()
                        .filter(|v| v.is_finite());
                    let got = best.rtt_ms(i, j);
                    assert_eq!(got, want, "{seed}: {i} -> {j}");
                    if let Some(total) = got {
                        let route = best.route(i, j).expect("a route");
                        assert_eq!((route[0], route[route.len() - 1]), (i, j));
                        let sum: f64 = route
                            .windows(2)
                            .map(|w| g.rtt_ms(w[0], w[1]).expect("a measured hop"))
                            .sum();
                        assert!((sum - total).abs() < 1e-9, "{route:?}");
                    } else {
                        assert_eq!(best.route(i, j), None);
                    }
                }
            }
        }
    }

    #[test]
    fn empty_and_tiny_runs() {
        let run = run_of(&[]);
        let g = LatencyGraph::new(&run, ProbeKind::Udp);
        assert!(g.is_empty());
        assert!(g.relay_matrix().is_empty());
        assert_eq!(g.best_paths().rtt_ms(0, 0), None);
        let run = run_of(&[vec![None]]);
        let g = LatencyGraph::new(&run, ProbeKind::Udp);
        assert_eq!(g.relay_matrix(), [f64::INFINITY]);
        assert_eq!(g.best_paths().route(0, 0), Some(vec![0]));
    }
}
