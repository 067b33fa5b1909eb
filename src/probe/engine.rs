//! The prober's engine: one send loop and one receive loop per prober, on threads of
//! their own, around a table of every probe of the sweep.
//!
//! The send loop paces the probes ([`send_loop`], generic over a [`Clock`] and a
//! [`Transport`] so its pacing is tested with a scripted fake) and takes each send time
//! immediately before the send call. The receive loop waits on every socket of the
//! prober at once (epoll), reads each datagram with the kernel's receive timestamp,
//! matches it to its probe in the [`Table`] and declares probes lost when their timeout
//! passes. Nothing is spawned, locked for long or allocated per probe; a probe's whole
//! state is one [`Slot`].
//!
//! Whether a reply counts is decided here, once for every kind: by the RTT measured
//! against the timeout (so a reply read late by a busy prober still counts if the
//! kernel saw it in time), and by the check value it must echo.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Outcome, ProbeEvent};
use crate::config::ProbeKind;

/// Probes sent more than this behind their schedule are counted as lagged, and so are
/// the paths they belong to: the prober's host did not give it the CPU it needed, so
/// what it measured may say more about that host than about the network (see
/// docs/accuracy.md). Ordinary scheduling noise on a busy machine stays far below it.
pub const LAG_BOUND: Duration = Duration::from_millis(10);

/// Wall-clock time in nanoseconds since the Unix epoch: the clock of the kernel's
/// receive timestamps (`SO_TIMESTAMPNS`).
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// What the send loop waits on. The real one sleeps; a test's advances by itself.
pub(crate) trait Clock {
    fn now(&self) -> Instant;
    fn sleep_until(&self, t: Instant);
}

/// The system's monotonic clock and `nanosleep`.
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, t: Instant) {
        let now = Instant::now();
        if t > now {
            std::thread::sleep(t - now);
        }
    }
}

/// Sends one probe. The real one writes the probe into the table and calls `sendto`.
pub(crate) trait Transport {
    /// Sends probe `id` (the `entry`-th of its round), due at `due`. Returns the time
    /// taken as its send time: immediately before the send call.
    fn send(&mut self, id: u32, entry: usize, due: Instant) -> Instant;
}

/// The schedule: `count` rounds of one probe per entry, round `r` no earlier than
/// `r * interval` after the start, and at least `gap` between two sends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pacing {
    pub count: u32,
    pub interval: Duration,
    pub gap: Duration,
}

/// Sends every probe on schedule, in id order (round by round, entries in order), and
/// returns how late each send was, in microseconds: the time at the send call minus
/// the time it was due.
pub(crate) fn send_loop(
    clock: &impl Clock,
    transport: &mut impl Transport,
    entries: usize,
    pacing: Pacing,
) -> Vec<u32> {
    let mut lags = Vec::with_capacity(entries * pacing.count as usize);
    let start = clock.now();
    let mut next = start;
    let mut id = 0u32;
    for round in 0..pacing.count {
        let round_start = start + pacing.interval * round;
        for entry in 0..entries {
            let due = next.max(round_start);
            clock.sleep_until(due);
            let sent = transport.send(id, entry, due);
            let lag = sent.saturating_duration_since(due).as_micros();
            lags.push(u32::try_from(lag).unwrap_or(u32::MAX));
            next = sent + pacing.gap;
            id += 1;
        }
    }
    lags
}

/// Where a probe is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Unsent,
    Waiting,
    Done(Outcome),
}

/// One probe.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub state: State,
    /// Wall-clock send time, nanoseconds since the Unix epoch.
    pub sent_ns: u64,
    /// Monotonic send time.
    pub sent_at: Option<Instant>,
    /// What the reply must echo: the STAMP timestamp T1, or the ICMP payload's tag.
    pub check: u64,
    /// Sent more than [`LAG_BOUND`] late.
    pub lagged: bool,
    /// Declared lost when its timeout passed; a reply the kernel received in time may
    /// still turn it into a sample.
    pub expired: bool,
}

/// One entry of the schedule: a path and the address its probes go to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Entry {
    pub path: usize,
    pub kind: ProbeKind,
    pub to: SocketAddr,
}

/// Per-path counts of replies that did not become samples, and what the reflector said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PathTally {
    pub late: u64,
    pub duplicates: u64,
    /// STAMP: the TTL the last probe arrived at the reflector with; `None` if not said.
    pub arrival_ttl: Option<u8>,
    pub lagged: u64,
}

/// Stray packets: counted, never samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Strays {
    /// Matching no probe of this sweep.
    pub unmatched: u64,
    /// Not valid replies, or with impossible timestamps.
    pub malformed: u64,
    /// Naming a probe but not echoing its check value (forged or corrupted).
    pub mismatched: u64,
    /// Valid replies from an address other than the one probed (counted as samples).
    pub foreign_source: u64,
}

/// A reply, as the receive loop read it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reply {
    pub id: u32,
    pub from: IpAddr,
    /// The value the reply echoed, to compare with the probe's check value; `None`
    /// when the reply cannot carry it (ICMP errors).
    pub echo: Option<u64>,
    /// The kernel's receive time (wall clock, ns), if it gave one.
    pub kernel_ns: Option<u64>,
    /// When the receive loop read it (monotonic).
    pub read_at: Instant,
    /// The reflector's own dwell time, taken out of the RTT (STAMP).
    pub dwell: Option<Duration>,
    pub what: ReplyKind,
    pub arrival_ttl: Option<u8>,
    /// The RTT as the kernel measured it itself (TCP_INFO), when it did.
    pub measured: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyKind {
    /// An answer: a sample.
    Answer,
    /// The probe got an ICMP error instead.
    IcmpError,
    /// TCP: the connection was refused.
    Refused,
}

/// Every probe of one sweep of one prober.
pub(crate) struct Table {
    pub slots: Vec<Slot>,
    pub entries: Vec<Entry>,
    pub timeout: Duration,
    pub tallies: Vec<PathTally>,
    pub strays: Strays,
    /// Probes handed to the transport so far (ids below it have been sent or failed).
    pub sent: usize,
    /// Probes below this id are final, or have been declared lost.
    expiry: usize,
}

impl Table {
    pub(crate) fn new(entries: Vec<Entry>, count: u32, paths: usize, timeout: Duration) -> Table {
        let empty = Slot {
            state: State::Unsent,
            sent_ns: 0,
            sent_at: None,
            check: 0,
            lagged: false,
            expired: false,
        };
        Table {
            slots: vec![empty; entries.len() * count as usize],
            entries,
            timeout,
            tallies: vec![PathTally::default(); paths],
            strays: Strays::default(),
            sent: 0,
            expiry: 0,
        }
    }

    /// The schedule entry of probe `id`.
    pub(crate) fn entry(&self, id: u32) -> Option<&Entry> {
        let n = self.entries.len();
        if n == 0 || id as usize >= self.slots.len() {
            return None;
        }
        self.entries.get(id as usize % n)
    }

    /// Probe `id` is going out now: it waits for its reply from here on.
    pub(crate) fn sending(&mut self, id: u32, sent_ns: u64, sent_at: Instant, check: u64) {
        if let Some(slot) = self.slots.get_mut(id as usize) {
            *slot = Slot {
                state: State::Waiting,
                sent_ns,
                sent_at: Some(sent_at),
                check,
                lagged: false,
                expired: false,
            };
        }
        self.sent = self.sent.max(id as usize + 1);
    }

    /// The send of probe `id` was `lag_us` microseconds behind schedule.
    pub(crate) fn lag(&mut self, id: u32, lag_us: u32) {
        if u128::from(lag_us) <= LAG_BOUND.as_micros() {
            return;
        }
        let path = self.entry(id).map(|e| e.path);
        if let Some(slot) = self.slots.get_mut(id as usize) {
            slot.lagged = true;
        }
        if let Some(t) = path.and_then(|p| self.tallies.get_mut(p)) {
            t.lagged += 1;
        }
    }

    /// Probe `id` ended without a reply being possible (send failed, connect refused
    /// at once).
    pub(crate) fn finish(&mut self, id: u32, outcome: Outcome) -> Option<ProbeEvent> {
        let event = self.event(id, outcome);
        if let Some(slot) = self.slots.get_mut(id as usize) {
            slot.state = State::Done(outcome);
        }
        self.sent = self.sent.max(id as usize + 1);
        event
    }

    fn event(&self, id: u32, outcome: Outcome) -> Option<ProbeEvent> {
        let n = self.entries.len();
        let entry = self.entry(id)?;
        Some(ProbeEvent {
            path: entry.path,
            round: (id as usize / n) as u32,
            outcome,
        })
    }

    /// Takes a reply into account. Returns the event to report, if the probe's outcome
    /// became known.
    pub(crate) fn reply(&mut self, r: &Reply) -> Option<ProbeEvent> {
        let Some(entry) = self.entry(r.id).copied() else {
            self.strays.unmatched += 1;
            return None;
        };
        let timeout = self.timeout;
        let Some(slot) = self.slots.get(r.id as usize).copied() else {
            self.strays.unmatched += 1;
            return None;
        };
        let Some(sent_at) = slot.sent_at else {
            // Not sent (yet): nobody could be answering it.
            self.strays.unmatched += 1;
            return None;
        };
        if r.echo.is_some_and(|e| e != slot.check) {
            self.strays.mismatched += 1;
            return None;
        }
        let user = r.read_at.saturating_duration_since(sent_at);
        // T4 − T1 on the kernel's clock when it said, checked against the monotonic
        // measurement (the wall clock may have been stepped in between; the kernel's
        // time can only be earlier than the loop's).
        let raw = match (
            r.measured,
            r.kernel_ns.and_then(|k| k.checked_sub(slot.sent_ns)),
        ) {
            (Some(m), _) if m <= user => m,
            (_, Some(k)) if Duration::from_nanos(k) <= user + Duration::from_millis(1) => {
                Duration::from_nanos(k)
            }
            _ => user,
        };
        let rtt = match r.dwell {
            Some(dwell) if dwell > raw => {
                // The reflector says it held the packet longer than the whole round
                // trip took: its timestamps cannot be right.
                self.strays.malformed += 1;
                return None;
            }
            Some(dwell) => raw - dwell,
            None => raw,
        };
        if entry.to.ip() != r.from && r.what == ReplyKind::Answer {
            self.strays.foreign_source += 1;
        }
        let tally = &mut self.tallies[entry.path];
        if r.arrival_ttl.is_some() {
            tally.arrival_ttl = r.arrival_ttl;
        }
        if rtt > timeout {
            tally.late += 1;
            return None;
        }
        let outcome = match r.what {
            ReplyKind::Answer => Outcome::Reply(rtt.max(Duration::from_nanos(1))),
            ReplyKind::IcmpError => Outcome::IcmpError,
            ReplyKind::Refused => Outcome::Refused,
        };
        match slot.state {
            State::Waiting => {}
            State::Done(Outcome::Lost) if slot.expired => {
                // Declared lost while the reply sat in the socket's queue, but the
                // kernel received it in time: it counts. Its event was already sent.
                self.slots[r.id as usize].state = State::Done(outcome);
                return None;
            }
            State::Done(Outcome::Reply(_)) if r.what == ReplyKind::Answer => {
                tally.duplicates += 1;
                return None;
            }
            _ => return None,
        }
        self.slots[r.id as usize].state = State::Done(outcome);
        self.event(r.id, outcome)
    }

    /// Declares lost every waiting probe whose timeout has passed at `now`, calling
    /// `lost` for each. Returns when the next one is due, if any probe is waiting.
    pub(crate) fn expire(
        &mut self,
        now: Instant,
        mut lost: impl FnMut(u32, ProbeEvent),
    ) -> Option<Instant> {
        while self.expiry < self.sent {
            let id = self.expiry as u32;
            let slot = self.slots[self.expiry];
            if let (State::Waiting, Some(at)) = (slot.state, slot.sent_at) {
                let due = at + self.timeout;
                if due > now {
                    return Some(due);
                }
                let s = &mut self.slots[self.expiry];
                s.state = State::Done(Outcome::Lost);
                s.expired = true;
                if let Some(e) = self.event(id, Outcome::Lost) {
                    lost(id, e);
                }
            }
            self.expiry += 1;
        }
        None
    }

    /// The probe that an ICMP error quoting sequence number `seq` (the low 16 bits of a
    /// probe id) and destination `to` is about: the latest sent probe with both.
    pub(crate) fn by_seq16(&self, seq: u16, to: IpAddr) -> Option<u32> {
        let last = self.sent.checked_sub(1)?;
        let back = (last as u64).wrapping_sub(u64::from(seq)) & 0xffff;
        let mut id = (last as u64).checked_sub(back)?;
        loop {
            if self.entry(id as u32).is_some_and(|e| e.to.ip() == to) {
                return Some(id as u32);
            }
            id = id.checked_sub(0x1_0000)?;
        }
    }

    /// Whether every probe that has been sent is final.
    pub(crate) fn all_final(&self) -> bool {
        self.expiry >= self.sent
    }

    /// The outcomes of path `path`'s probes in send order.
    pub(crate) fn outcomes(&self, entry_index: usize) -> Vec<Outcome> {
        let n = self.entries.len();
        self.slots
            .iter()
            .skip(entry_index)
            .step_by(n.max(1))
            .map(|s| match s.state {
                State::Done(o) => o,
                State::Waiting => Outcome::Lost,
                State::Unsent => Outcome::SendFailed,
            })
            .collect()
    }
}

/// `p`-quantile (0..=1) of `values` (sorted in place), 0 when empty.
pub(crate) fn quantile_us(values: &mut [u32], p: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let rank = ((values.len() - 1) as f64 * p).round() as usize;
    u64::from(values[rank.min(values.len() - 1)])
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::net::Ipv4Addr;

    use super::*;

    /// A clock that only moves when told to: sleeping jumps to the wake-up time.
    struct FakeClock(Cell<Instant>);

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            self.0.get()
        }
        fn sleep_until(&self, t: Instant) {
            if t > self.0.get() {
                self.0.set(t);
            }
        }
    }

    /// A transport whose sends take a scripted time, recording when each happened.
    struct Scripted<'c> {
        clock: &'c FakeClock,
        cost: Box<dyn Fn(u32) -> Duration>,
        sends: RefCell<Vec<(u32, usize, Duration)>>,
        start: Instant,
    }

    impl Transport for Scripted<'_> {
        fn send(&mut self, id: u32, entry: usize, _due: Instant) -> Instant {
            let at = self.clock.now();
            self.sends.borrow_mut().push((id, entry, at - self.start));
            self.clock.0.set(at + (self.cost)(id));
            at
        }
    }

    fn run(
        entries: usize,
        pacing: Pacing,
        cost: impl Fn(u32) -> Duration + 'static,
    ) -> (Vec<(u32, usize, Duration)>, Vec<u32>) {
        let start = Instant::now();
        let clock = FakeClock(Cell::new(start));
        let mut t = Scripted {
            clock: &clock,
            cost: Box::new(cost),
            sends: RefCell::new(Vec::new()),
            start,
        };
        let lags = send_loop(&clock, &mut t, entries, pacing);
        (t.sends.into_inner(), lags)
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn rounds_start_on_the_interval_and_sends_keep_the_gap() {
        let pacing = Pacing {
            count: 3,
            interval: 10 * MS,
            gap: MS,
        };
        let (sends, lags) = run(3, pacing, |_| Duration::ZERO);
        let at: Vec<u64> = sends.iter().map(|s| s.2.as_millis() as u64).collect();
        assert_eq!(at, [0, 1, 2, 10, 11, 12, 20, 21, 22]);
        let ids: Vec<u32> = sends.iter().map(|s| s.0).collect();
        assert_eq!(ids, (0..9).collect::<Vec<_>>());
        assert!(lags.iter().all(|&l| l == 0));
    }

    #[test]
    fn a_round_longer_than_the_interval_pushes_the_next_one_without_bursting() {
        // Five sends 3 ms apart take 12 ms: round 2 starts at 15 ms, not at 10 ms.
        let pacing = Pacing {
            count: 2,
            interval: 10 * MS,
            gap: 3 * MS,
        };
        let (sends, lags) = run(5, pacing, |_| Duration::ZERO);
        let at: Vec<u64> = sends.iter().map(|s| s.2.as_millis() as u64).collect();
        assert_eq!(at, [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]);
        assert!(lags.iter().all(|&l| l == 0), "a full schedule is not lag");
    }

    #[test]
    fn a_send_that_blocks_shows_as_lag_of_the_next() {
        let pacing = Pacing {
            count: 1,
            interval: Duration::ZERO,
            gap: MS,
        };
        // The third send blocks for 25 ms inside the send call.
        let (sends, lags) = run(
            5,
            pacing,
            |id| if id == 2 { 25 * MS } else { Duration::ZERO },
        );
        let at: Vec<u64> = sends.iter().map(|s| s.2.as_millis() as u64).collect();
        assert_eq!(at, [0, 1, 2, 27, 28]);
        assert_eq!(lags, [0, 0, 0, 24_000, 0]);
    }

    fn table(count: u32) -> Table {
        let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 862);
        let entries = vec![
            Entry {
                path: 0,
                kind: ProbeKind::Udp,
                to,
            },
            Entry {
                path: 1,
                kind: ProbeKind::Udp,
                to: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)), 862),
            },
        ];
        Table::new(entries, count, 2, Duration::from_millis(100))
    }

    fn reply(id: u32, from: [u8; 4], echo: u64, kernel_ns: u64, read_at: Instant) -> Reply {
        Reply {
            id,
            from: IpAddr::V4(Ipv4Addr::from(from)),
            echo: Some(echo),
            kernel_ns: Some(kernel_ns),
            read_at,
            dwell: None,
            what: ReplyKind::Answer,
            arrival_ttl: None,
            measured: None,
        }
    }

    #[test]
    fn a_reply_counts_only_with_its_echo_and_in_time() {
        let t0 = Instant::now();
        let mut t = table(2);
        for id in 0..4 {
            t.sending(id, 1_000_000 * u64::from(id), t0, 77 + u64::from(id));
        }
        let read = t0 + Duration::from_millis(5);
        // Wrong echo: forged or corrupted.
        assert!(
            t.reply(&reply(0, [127, 0, 0, 2], 1, 40_000, read))
                .is_none()
        );
        assert_eq!(t.strays.mismatched, 1);
        // Right echo: RTT from the kernel's receive time (40 µs), not the read time.
        let e = t
            .reply(&reply(0, [127, 0, 0, 2], 77, 40_000, read))
            .expect("an event");
        assert_eq!(e.outcome, Outcome::Reply(Duration::from_micros(40)));
        assert_eq!((e.path, e.round), (0, 0));
        // The same again: a duplicate.
        assert!(
            t.reply(&reply(0, [127, 0, 0, 2], 77, 41_000, read))
                .is_none()
        );
        assert_eq!(t.tallies[0].duplicates, 1);
        // From another address, echo right: a sample, counted as foreign.
        let e = t
            .reply(&reply(1, [127, 0, 0, 9], 78, 1_050_000, read))
            .expect("an event");
        assert_eq!(e.outcome, Outcome::Reply(Duration::from_micros(50)));
        assert_eq!(t.strays.foreign_source, 1);
        // Received by the kernel after the timeout: late, not a sample.
        assert!(
            t.reply(&reply(
                2,
                [127, 0, 0, 2],
                79,
                2_000_000 + 150_000_000,
                read + Duration::from_millis(200)
            ))
            .is_none()
        );
        assert_eq!(t.tallies[0].late, 1);
        // An id never sent.
        assert!(t.reply(&reply(9, [127, 0, 0, 2], 0, 0, read)).is_none());
        assert_eq!(t.strays.unmatched, 1);
    }

    #[test]
    fn expiry_declares_lost_but_a_reply_received_in_time_still_counts() {
        let t0 = Instant::now();
        let mut t = table(1);
        t.sending(0, 0, t0, 5);
        t.sending(1, 0, t0, 6);
        let mut lost = Vec::new();
        let next = t.expire(t0 + Duration::from_millis(50), |id, _| lost.push(id));
        assert_eq!(next, Some(t0 + Duration::from_millis(100)));
        t.expire(t0 + Duration::from_millis(101), |id, _| lost.push(id));
        assert_eq!(lost, [0, 1]);
        assert!(t.all_final());
        // The kernel had probe 1's reply at 80 ms; the loop read it at 120 ms.
        t.reply(&reply(
            1,
            [127, 0, 0, 3],
            6,
            80_000_000,
            t0 + Duration::from_millis(120),
        ));
        assert_eq!(t.outcomes(0), [Outcome::Lost]);
        assert_eq!(t.outcomes(1), [Outcome::Reply(Duration::from_millis(80))]);
    }

    #[test]
    fn impossible_dwell_is_malformed() {
        let t0 = Instant::now();
        let mut t = table(1);
        t.sending(0, 0, t0, 5);
        let mut r = reply(0, [127, 0, 0, 2], 5, 30_000, t0 + Duration::from_millis(1));
        r.dwell = Some(Duration::from_micros(31));
        assert!(t.reply(&r).is_none());
        assert_eq!(t.strays.malformed, 1);
        r.dwell = Some(Duration::from_micros(10));
        let e = t.reply(&r).expect("event");
        assert_eq!(e.outcome, Outcome::Reply(Duration::from_micros(20)));
    }

    #[test]
    fn lagged_sends_mark_their_path() {
        let t0 = Instant::now();
        let mut t = table(1);
        t.sending(0, 0, t0, 0);
        t.lag(0, LAG_BOUND.as_micros() as u32);
        t.lag(1, (LAG_BOUND + MS).as_micros() as u32);
        assert_eq!((t.tallies[0].lagged, t.tallies[1].lagged), (0, 1));
        assert!(t.slots[1].lagged && !t.slots[0].lagged);
    }
}
