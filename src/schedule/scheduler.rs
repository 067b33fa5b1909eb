//! The scheduled-sweep loop's decisions, in one place for `sweep --every/--cron` and the
//! agent: which epoch comes next, the random delay before it (drawn one way), and which
//! epochs went by while the previous sweep ran (skipped, never overlapped).
//!
//! Pure over the times it is given: the callers read the clock and wait, so tests drive
//! it with a fake clock. It neither sleeps, probes nor writes.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::{Schedule, ScheduleError};

/// Picks the start of each sweep of a series.
#[derive(Debug)]
pub struct Scheduler {
    schedule: Schedule,
    jitter: Duration,
    rng: StdRng,
    /// The epoch of the previous sweep.
    last: Option<DateTime<Utc>>,
}

/// One sweep to come.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// The epoch the sweep is filed under (its run folder, its reports).
    pub epoch: DateTime<Utc>,
    /// When it starts: the epoch plus a random delay in `[0, jitter)`.
    pub start: DateTime<Utc>,
    /// The epochs that went by since the previous sweep's, if that sweep ran past them.
    pub skipped: Option<Skipped>,
}

/// Epochs passed over because a sweep ran past them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Skipped {
    /// The epoch of the sweep that ran long.
    pub after: DateTime<Utc>,
    /// The first epoch skipped.
    pub first: DateTime<Utc>,
    /// How many were skipped (at most [`MAX_COUNTED`]: past that the count stops).
    pub count: u64,
}

/// Skipped cron epochs are counted one by one up to this many.
pub const MAX_COUNTED: u64 = 100_000;

impl Slot {
    /// How long to wait at `now` before the sweep starts (zero when it is due).
    pub fn wait(&self, now: DateTime<Utc>) -> Duration {
        (self.start - now).to_std().unwrap_or_default()
    }
}

impl Scheduler {
    /// A scheduler for `schedule` that delays each sweep by a random time in
    /// `[0, jitter)`. The jitter of a fixed period must be shorter than the period, or
    /// a late start would run into the next epoch's sweep.
    pub fn new(schedule: Schedule, jitter: Duration) -> Result<Scheduler, ScheduleError> {
        Self::seeded(schedule, jitter, rand::rng().random())
    }

    /// [`Scheduler::new`] with a fixed seed for the jitter, so that tests repeat.
    pub fn seeded(
        schedule: Schedule,
        jitter: Duration,
        seed: u64,
    ) -> Result<Scheduler, ScheduleError> {
        if let Schedule::Every(period) = schedule
            && let Some(why) = crate::config::schedule_problem(Some(period), jitter)
        {
            return Err(ScheduleError::Jitter { jitter, why });
        }
        Ok(Scheduler {
            schedule,
            jitter,
            rng: StdRng::seed_from_u64(seed),
            last: None,
        })
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The next sweep when the previous one (if any) ended at `now`: the first epoch
    /// strictly after `now`, so a sweep never overlaps the one before. Each call is one
    /// sweep: the slot's epoch becomes the previous one.
    pub fn next(&mut self, now: DateTime<Utc>) -> Result<Slot, ScheduleError> {
        let epoch = self
            .schedule
            .next_epoch(now)
            .ok_or_else(|| ScheduleError::Ended(self.schedule.to_string()))?;
        let skipped = self.last.and_then(|after| self.skipped(after, epoch));
        let jitter = if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.rng.random_range(Duration::ZERO..self.jitter)
        };
        self.last = Some(epoch);
        Ok(Slot {
            epoch,
            start: epoch + TimeDelta::from_std(jitter).unwrap_or_default(),
            skipped,
        })
    }

    /// The epochs strictly between `after` and `epoch`.
    fn skipped(&self, after: DateTime<Utc>, epoch: DateTime<Utc>) -> Option<Skipped> {
        let first = self.schedule.next_epoch(after).filter(|&e| e < epoch)?;
        let count = match self.schedule {
            Schedule::Every(period) => {
                let p = period.as_millis().max(1) as i64;
                ((epoch - first).num_milliseconds() / p) as u64
            }
            Schedule::Cron { .. } => {
                let mut count = 1;
                let mut e = first;
                while count < MAX_COUNTED {
                    match self.schedule.next_epoch(e) {
                        Some(next) if next < epoch => {
                            count += 1;
                            e = next;
                        }
                        _ => break,
                    }
                }
                count
            }
        };
        Some(Skipped {
            after,
            first,
            count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Runs a series on a fake clock: each sweep takes `lengths[k]`; returns the slots.
    fn series(scheduler: &mut Scheduler, start: DateTime<Utc>, lengths: &[Duration]) -> Vec<Slot> {
        let mut now = start;
        let mut slots = Vec::new();
        for &length in lengths {
            let slot = scheduler.next(now).unwrap();
            now += TimeDelta::from_std(slot.wait(now)).unwrap();
            assert_eq!(
                now,
                slot.start.max(now),
                "the fake clock waits until the start"
            );
            now += TimeDelta::from_std(length).unwrap();
            slots.push(slot);
        }
        slots
    }

    #[test]
    fn sweeps_start_on_the_epochs_and_skip_the_ones_a_long_sweep_ran_past() {
        let every = Schedule::every(secs(60)).unwrap();
        let mut s = Scheduler::seeded(every, Duration::ZERO, 1).unwrap();
        let slots = series(
            &mut s,
            t("2026-11-26T05:00:30Z"),
            &[secs(10), secs(130), secs(5), secs(60)],
        );
        let epochs: Vec<_> = slots.iter().map(|s| s.epoch).collect();
        assert_eq!(
            epochs,
            [
                t("2026-11-26T05:01:00Z"),
                t("2026-11-26T05:02:00Z"),
                // 05:02 + 130 s = 05:04:10: 05:03 and 05:04 went by.
                t("2026-11-26T05:05:00Z"),
                t("2026-11-26T05:06:00Z"),
            ]
        );
        assert_eq!(slots[0].skipped, None);
        assert_eq!(slots[1].skipped, None);
        assert_eq!(
            slots[2].skipped,
            Some(Skipped {
                after: t("2026-11-26T05:02:00Z"),
                first: t("2026-11-26T05:03:00Z"),
                count: 2,
            })
        );
        assert_eq!(slots[3].skipped, None);
        // Without jitter a sweep starts on its epoch.
        assert!(slots.iter().all(|s| s.start == s.epoch));
    }

    #[test]
    fn a_sweep_ending_exactly_on_an_epoch_skips_it() {
        // The next epoch is strictly after the end: starting at the very instant would
        // mean a sweep with no pause, and its predecessor may still be writing.
        let mut s =
            Scheduler::seeded(Schedule::every(secs(60)).unwrap(), Duration::ZERO, 1).unwrap();
        let slots = series(&mut s, t("2026-11-26T05:00:30Z"), &[secs(60), secs(1)]);
        assert_eq!(slots[1].epoch, t("2026-11-26T05:03:00Z"));
        assert_eq!(slots[1].skipped.map(|k| k.count), Some(1));
    }

    #[test]
    fn jitter_is_below_its_bound_spread_and_repeats_with_a_seed() {
        let every = Schedule::every(secs(300)).unwrap();
        let draw = |seed| {
            let mut s = Scheduler::seeded(every.clone(), secs(60), seed).unwrap();
            series(&mut s, t("2026-11-26T05:00:00Z"), &[secs(1); 200])
        };
        let slots = draw(7);
        let delays: Vec<i64> = slots
            .iter()
            .map(|s| (s.start - s.epoch).num_milliseconds())
            .collect();
        assert!(
            delays.iter().all(|&d| (0..60_000).contains(&d)),
            "{delays:?}"
        );
        // Uniform over [0, 60 s): about half fall in the upper half (200 draws: a
        // binomial's 4.9 standard deviations either side of 100).
        let upper = delays.iter().filter(|&&d| d >= 30_000).count();
        assert!((65..=135).contains(&upper), "{upper}");
        // The epochs stay on the clock whatever the delay, one period apart.
        for w in slots.windows(2) {
            assert_eq!((w[1].epoch - w[0].epoch).num_seconds(), 300);
            assert_eq!(w[1].skipped, None);
        }
        assert_eq!(draw(7), slots, "the same seed draws the same delays");
        assert_ne!(draw(8), slots);
    }

    #[test]
    fn cron_epochs_and_their_skips() {
        let cron = Schedule::cron("*/15 * * * *").unwrap();
        let mut s = Scheduler::seeded(cron, secs(3600), 1).unwrap();
        // A jitter longer than a cron's gap is allowed: the epochs still come from the
        // expression and a late start is skipped over as any long sweep.
        let first = s.next(t("2026-11-26T05:02:00Z")).unwrap();
        assert_eq!(first.epoch, t("2026-11-26T05:15:00Z"));
        let second = s.next(t("2026-11-26T06:20:00Z")).unwrap();
        assert_eq!(second.epoch, t("2026-11-26T06:30:00Z"));
        assert_eq!(
            second.skipped,
            Some(Skipped {
                after: t("2026-11-26T05:15:00Z"),
                first: t("2026-11-26T05:30:00Z"),
                count: 4,
            })
        );
    }

    #[test]
    fn a_clock_stepped_back_neither_skips_nor_overlaps() {
        let mut s =
            Scheduler::seeded(Schedule::every(secs(60)).unwrap(), Duration::ZERO, 1).unwrap();
        let a = s.next(t("2026-11-26T05:10:30Z")).unwrap();
        // The clock is set back ten minutes (NTP step) after the sweep.
        let b = s.next(t("2026-11-26T05:00:30Z")).unwrap();
        assert_eq!(a.epoch, t("2026-11-26T05:11:00Z"));
        assert_eq!(b.epoch, t("2026-11-26T05:01:00Z"));
        assert_eq!(b.skipped, None);
        assert_eq!(b.wait(t("2026-11-26T05:00:30Z")), secs(30));
        assert_eq!(b.wait(t("2026-11-26T05:02:00Z")), Duration::ZERO);
    }

    #[test]
    fn jitter_must_be_shorter_than_the_period() {
        let every = Schedule::every(secs(2)).unwrap();
        let err = Scheduler::new(every.clone(), secs(3))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "the jitter (3s) must be shorter than the period (every), or sweeps would run into each other"
        );
        assert!(Scheduler::new(every.clone(), secs(2)).is_err());
        assert!(Scheduler::new(every, Duration::from_millis(1999)).is_ok());
    }
}
