//! Name resolution for targets given as hostnames, once per sweep, with hickory-resolver.
//!
//! The address used and the time the lookup took are kept with the path, so that a
//! DNS change shows in a diff. IPv4 is preferred when a name has both families.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;

/// Resolves hostnames with the system's resolver configuration (`/etc/resolv.conf`,
/// `/etc/hosts`).
pub struct Resolver {
    inner: Result<TokioResolver, String>,
}

impl Resolver {
    pub fn from_system() -> Resolver {
        let inner = TokioResolver::builder_tokio()
            .and_then(|b| b.build())
            .map_err(|e| format!("cannot set up DNS resolution: {e}"));
        Resolver { inner }
    }

    /// The address for `name` and how long the lookup took, or why there is none.
    pub async fn resolve(&self, name: &str) -> (Result<IpAddr, String>, Duration) {
        let start = Instant::now();
        let resolver = match &self.inner {
            Ok(r) => r,
            Err(e) => return (Err(e.clone()), start.elapsed()),
        };
        let result = match resolver.lookup_ip(name).await {
            Ok(lookup) => {
                let addrs: Vec<IpAddr> = lookup.iter().collect();
                addrs
                    .iter()
                    .find(|a| a.is_ipv4())
                    .or_else(|| addrs.first())
                    .copied()
                    .ok_or_else(|| format!("{name} has no A or AAAA record"))
            }
            Err(e) if e.is_nx_domain() => Err(format!("{name} does not exist (NXDOMAIN)")),
            Err(e) => Err(format!("cannot resolve {name}: {e}")),
        };
        (result, start.elapsed())
    }
}
