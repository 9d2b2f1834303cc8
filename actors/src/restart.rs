//! Restart arithmetic: exponential backoff with full jitter, and the intensity window that
//! decides when a child has failed too often to be tried again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::settings::{self, Dur, NonZero};

/// `min(cap, base * 2^attempt)` (`attempt` 0-based), without overflow: the one exponential
/// backoff of the tree (restarts here, upstream retries in the services).
pub fn exponential(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

/// The wait of a service after `failures` (≥ 1) failed passes in a row against an upstream:
/// `base × 2^(failures − 1)`, capped, and never shorter than what the upstream asked for
/// (`Retry-After`, itself capped).
pub fn upstream_backoff(
    base: Duration,
    cap: Duration,
    failures: u32,
    retry_after: Option<Duration>,
) -> Duration {
    exponential(base, cap, failures.saturating_sub(1)).max(retry_after.unwrap_or_default().min(cap))
}

/// An exponential backoff: `base × 2^n`, capped. [`Backoff::checked`] refuses a cap below
/// the base; every service's backoff settings are one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// A backoff from constants (the defaults).
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap }
    }

    /// A backoff from settings: the cap may not be smaller than the base.
    pub fn checked(base: Duration, cap: Duration) -> Result<Self, String> {
        if cap < base {
            return Err(format!(
                "the cap ({cap:?}) must not be smaller than the base ({base:?})"
            ));
        }
        Ok(Backoff { base, cap })
    }

    /// `base × 2^attempt`, capped.
    pub fn exponential(&self, attempt: u32) -> Duration {
        exponential(self.base, self.cap, attempt)
    }

    /// The wait after `failures` failures in a row of an upstream: `base × 2^(failures − 1)`,
    /// capped, and never shorter than the upstream's `Retry-After` (itself capped).
    pub fn after(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        upstream_backoff(self.base, self.cap, failures, retry_after)
    }
}

/// Supervisor-wide restart settings (defaults: base 1 s, cap 5 min, 5 restarts in 60 s).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct RestartSettings {
    /// Restart backoff: base × 2^n with full jitter, up to the cap.
    #[serde(rename = "restart_backoff_base", with = "Dur")]
    pub backoff_base: Duration,
    #[serde(rename = "restart_backoff_cap", with = "Dur")]
    pub backoff_cap: Duration,
    /// Full jitter (a uniform delay in `0..=ceiling`). Off only in tests that assert exact growth.
    #[serde(skip, default = "jitter")]
    pub jitter: bool,
    /// A child that has run this long without failing starts its backoff from the base again.
    #[serde(rename = "restart_reset_after", with = "Dur")]
    pub reset_after: Duration,
    /// A service restarted more than this many times within `restart_window` is left failed
    /// (a critical one stops the daemon).
    #[serde(
        rename = "restart_max",
        deserialize_with = "settings::at_least::<1, _, _>"
    )]
    pub intensity_max: u32,
    #[serde(rename = "restart_window", with = "NonZero")]
    pub intensity_window: Duration,
}

fn jitter() -> bool {
    true
}

impl Default for RestartSettings {
    fn default() -> Self {
        RestartSettings {
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            jitter: true,
            reset_after: Duration::from_secs(60),
            intensity_max: 5,
            intensity_window: Duration::from_secs(60),
        }
    }
}

impl settings::Section for RestartSettings {
    fn check(&self) -> Result<(), settings::Invalid> {
        settings::backoff(
            self.backoff_base,
            self.backoff_cap,
            "restart_backoff_base",
            "restart_backoff_cap",
        )
        .map(drop)
    }
}

impl RestartSettings {
    /// The largest delay allowed for the `attempt`-th consecutive restart (0-based):
    /// `min(cap, base * 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        exponential(self.backoff_base, self.backoff_cap, attempt)
    }

    /// The delay before the `attempt`-th consecutive restart.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        if !self.jitter || ceiling.is_zero() {
            return ceiling;
        }
        let nanos =
            rand::thread_rng().gen_range(0..=ceiling.as_nanos().min(u64::MAX as u128) as u64);
        Duration::from_nanos(nanos)
    }
}

/// Restart times inside the sliding intensity window.
#[derive(Debug, Default)]
pub struct Intensity {
    recent: VecDeque<Instant>,
}

impl Intensity {
    /// Records a restart at `now` unless the window is already full; `false` means give up.
    pub fn admit(&mut self, now: Instant, settings: &RestartSettings) -> bool {
        while let Some(first) = self.recent.front() {
            if now.duration_since(*first) > settings.intensity_window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() as u32 >= settings.intensity_max {
            return false;
        }
        self.recent.push_back(now);
        true
    }

    pub fn clear(&mut self) {
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backoff_refuses_a_cap_below_its_base_and_grows_to_it() {
        let (s5, s60) = (Duration::from_secs(5), Duration::from_secs(60));
        assert!(Backoff::checked(s60, s5)
            .unwrap_err()
            .contains("must not be smaller"));
        let b = Backoff::checked(s5, s60).unwrap();
        assert_eq!(b.after(1, None), s5);
        assert_eq!(b.after(3, None), Duration::from_secs(20));
        assert_eq!(b.after(30, None), s60);
        assert_eq!(b.exponential(0), s5);
        assert_eq!(
            b.after(1, Some(Duration::from_secs(600))),
            s60,
            "Retry-After capped"
        );
    }

    #[test]
    fn upstream_backoff_starts_at_the_base_and_honours_retry_after_up_to_the_cap() {
        let (base, cap) = (Duration::from_secs(5), Duration::from_secs(60));
        assert_eq!(upstream_backoff(base, cap, 1, None), base);
        assert_eq!(
            upstream_backoff(base, cap, 3, None),
            Duration::from_secs(20)
        );
        assert_eq!(upstream_backoff(base, cap, 30, None), cap);
        let asked = Some(Duration::from_secs(30));
        assert_eq!(
            upstream_backoff(base, cap, 1, asked),
            Duration::from_secs(30)
        );
        let too_long = Some(Duration::from_secs(3600));
        assert_eq!(upstream_backoff(base, cap, 1, too_long), cap);
    }

    #[test]
    fn ceiling_doubles_until_the_cap() {
        let s = RestartSettings::default();
        assert_eq!(s.ceiling(0), Duration::from_secs(1));
        assert_eq!(s.ceiling(1), Duration::from_secs(2));
        assert_eq!(s.ceiling(5), Duration::from_secs(32));
        assert_eq!(s.ceiling(9), Duration::from_secs(300));
        assert_eq!(s.ceiling(200), Duration::from_secs(300));
    }

    #[test]
    fn jittered_delay_stays_within_its_ceiling() {
        let s = RestartSettings::default();
        for attempt in 0..12 {
            for _ in 0..50 {
                assert!(s.delay(attempt) <= s.ceiling(attempt));
            }
        }
    }

    #[test]
    fn intensity_refuses_the_restart_past_the_limit_and_forgets_old_ones() {
        let s = RestartSettings {
            intensity_max: 3,
            intensity_window: Duration::from_secs(10),
            ..RestartSettings::default()
        };
        let mut i = Intensity::default();
        let t0 = Instant::now();
        assert!(i.admit(t0, &s));
        assert!(i.admit(t0 + Duration::from_secs(1), &s));
        assert!(i.admit(t0 + Duration::from_secs(2), &s));
        assert!(!i.admit(t0 + Duration::from_secs(3), &s));
        assert!(i.admit(t0 + Duration::from_secs(11), &s));
    }
}
