//! Sequence numbers and check values that an observer cannot predict.
//!
//! A prober numbers its probes 0, 1, 2, ... internally. On the wire, a STAMP probe's
//! 32-bit sequence number is that number through a keyed permutation (a four-round
//! Feistel network over SipHash with a random key per socket), so seeing one probe does
//! not tell the next, and a reply's sequence number maps straight back to its probe
//! without a table. ICMP probes carry a keyed 64-bit check value in their payload.

use std::hash::{BuildHasher, RandomState};

/// A random keyed permutation of the 32-bit numbers, and a keyed 64-bit tag.
#[derive(Debug, Clone)]
pub(crate) struct Keyed {
    key: RandomState,
}

impl Default for Keyed {
    fn default() -> Self {
        Keyed {
            key: RandomState::new(),
        }
    }
}

const ROUNDS: u32 = 4;

impl Keyed {
    fn round(&self, round: u32, half: u16) -> u16 {
        self.key.hash_one((round, half)) as u16
    }

    /// The wire sequence number of probe `n`.
    pub(crate) fn encode(&self, n: u32) -> u32 {
        let (mut l, mut r) = ((n >> 16) as u16, n as u16);
        for round in 0..ROUNDS {
            (l, r) = (r, l ^ self.round(round, r));
        }
        (u32::from(l) << 16) | u32::from(r)
    }

    /// The probe number behind wire sequence number `seq` (the inverse of `encode`).
    pub(crate) fn decode(&self, seq: u32) -> u32 {
        let (mut l, mut r) = ((seq >> 16) as u16, seq as u16);
        for round in (0..ROUNDS).rev() {
            (l, r) = (r ^ self.round(round, l), l);
        }
        (u32::from(l) << 16) | u32::from(r)
    }

    /// A 64-bit value tied to probe `n` that cannot be computed without the key.
    pub(crate) fn tag(&self, n: u32) -> u64 {
        self.key.hash_one((u32::MAX, n))
    }
}

#[cfg(test)]
mod tests {
    use super::Keyed;

    #[test]
    fn the_permutation_inverts_and_does_not_count_up() {
        let k = Keyed::default();
        let mut seen = std::collections::HashSet::new();
        let mut steps_of_one = 0;
        for n in 0..100_000u32 {
            let s = k.encode(n);
            assert_eq!(k.decode(s), n);
            assert!(seen.insert(s), "a permutation has no collisions");
            if n > 0 && s == k.encode(n - 1).wrapping_add(1) {
                steps_of_one += 1;
            }
        }
        assert!(steps_of_one < 3, "{steps_of_one} consecutive numbers");
        // Two keys give two different numberings.
        let other = Keyed::default();
        let same = (0..1000)
            .filter(|&n| k.encode(n) == other.encode(n))
            .count();
        assert!(same < 3, "{same}");
        assert_ne!(k.tag(1), k.tag(2));
    }
}
