//! What to simulate: sessions, duration, rates, seed, start time and injected faults.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// 2026-01-01T00:00:00Z in microseconds since the Unix epoch: the default, fixed start time, so
/// that a config without one still produces the same bytes on every run.
pub const DEFAULT_START_TIME_US: i64 = 1_767_225_600_000_000;

/// A simulation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Concurrent racing sessions.
    pub sessions: u32,
    /// Length of every session in microseconds of event time.
    pub duration_us: i64,
    /// Sample events per second per session (default 60).
    pub rate_hz: f64,
    /// Client-health events per second per session (default 1; 0 disables them).
    pub health_rate_hz: f64,
    /// Seed of every random choice; same config, same records.
    pub seed: u64,
    /// Event time of the start of the first possible session, µs since the Unix epoch.
    pub start_time_us: i64,
    /// Faults to inject (all off by default).
    pub faults: Faults,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            sessions: 1,
            duration_us: 60_000_000,
            rate_hz: 60.0,
            health_rate_hz: 1.0,
            seed: 0,
            start_time_us: DEFAULT_START_TIME_US,
            faults: Faults::default(),
        }
    }
}

impl SimConfig {
    /// A config with defaults for everything but the size of the run and the seed.
    pub fn new(sessions: u32, duration_us: i64, seed: u64) -> SimConfig {
        SimConfig { sessions, duration_us, seed, ..SimConfig::default() }
    }

    /// Checks that the run can be simulated; [`crate::simulate`] panics on a config that fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.duration_us < 0 {
            return Err(ConfigError(format!("duration_us must not be negative, got {}", self.duration_us)));
        }
        check_sample_rate(self.rate_hz).map_err(|e| ConfigError(format!("rate_hz {e}")))?;
        check_health_rate(self.health_rate_hz).map_err(|e| ConfigError(format!("health_rate_hz {e}")))?;
        self.start_time_us
            .checked_add(self.duration_us)
            .and_then(|t| t.checked_add(400_000_000_000))
            .ok_or_else(|| ConfigError("start_time_us + duration_us overflows".into()))?;
        for (name, p) in self.faults.iter() {
            if !(0.0..=1.0).contains(&p) {
                return Err(ConfigError(format!("fault {name} must be a probability in [0, 1], got {p}")));
            }
        }
        Ok(())
    }
}

/// The rule on [`SimConfig::rate_hz`] (samples per second per session), for callers that name the
/// value their own way (a command-line flag): the error says what it must be.
pub fn check_sample_rate(hz: f64) -> Result<(), String> {
    if hz.is_finite() && hz > 0.0 && hz <= 10_000.0 {
        return Ok(());
    }
    Err(format!("must be more than 0 and at most 10000 per second, got {hz}"))
}

/// The rule on [`SimConfig::health_rate_hz`] (client-health events per second per session; 0
/// sends none).
pub fn check_health_rate(hz: f64) -> Result<(), String> {
    if hz.is_finite() && (0.0..=1000.0).contains(&hz) {
        return Ok(());
    }
    Err(format!("must be from 0 (none) to 1000 per second, got {hz}"))
}

/// A config that cannot be simulated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid simulation config: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Probability, per eligible event, of each injected fault (see [`crate::faults`] for what each
/// one does). Session start, session end and lap events are never faulted.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Delay the event by under 1 s: out of order, inside a 2 s out-of-orderness bound.
    pub reorder_within: f64,
    /// Delay the event by 3–20 s: beyond the 2 s bound, within 30 s of allowed lateness.
    pub late_within_lateness: f64,
    /// Delay the event by more than 60 s: too late for any window.
    pub very_late: f64,
    /// Send the identical envelope again, up to 1 s later.
    pub duplicates: f64,
    /// Skip a sequence number: the event is not sent at all.
    pub gaps: f64,
    /// Stamp the event one hour in the future.
    pub clock_jumps: f64,
    /// Send an undecodable line instead of the event (truncated JSON or a wrong-typed field).
    pub malformed: f64,
    /// Add a `debug_*` channel that no dictionary alias knows.
    pub unknown_channels: f64,
    /// Put one value far outside its metric's range (e.g. 9999 km/h).
    pub out_of_range: f64,
}

impl Faults {
    /// The fault names, as `parse_list` accepts them.
    pub const NAMES: [&'static str; 9] =
        ["reorder_within", "late_within_lateness", "very_late", "duplicates", "gaps", "clock_jumps", "malformed", "unknown_channels", "out_of_range"];

    /// Parses `name=probability` pairs separated by commas, e.g. `duplicates=0.01,gaps=0.001`.
    /// An empty string (or `none`) is no faults.
    pub fn parse_list(list: &str) -> Result<Faults, FaultParseError> {
        let mut faults = Faults::default();
        let list = list.trim();
        if list.is_empty() || list == "none" {
            return Ok(faults);
        }
        let mut given: Vec<&str> = Vec::new();
        for item in list.split(',') {
            let item = item.trim();
            let (name, value) = item.split_once('=').ok_or_else(|| FaultParseError(format!("expected name=probability, got {item:?}")))?;
            let name = name.trim();
            let p: f64 = value.trim().parse().map_err(|_| FaultParseError(format!("{name}: {value:?} is not a number")))?;
            faults.set(name, p)?;
            // After `set`, so an unknown name is named as unknown first.
            if given.contains(&name) {
                return Err(FaultParseError(format!("{name:?} is given twice")));
            }
            given.push(name);
        }
        Ok(faults)
    }

    /// Sets one fault's probability by name.
    pub fn set(&mut self, name: &str, p: f64) -> Result<(), FaultParseError> {
        if !(0.0..=1.0).contains(&p) {
            return Err(FaultParseError(format!("{name}: probability {p} is outside [0, 1]")));
        }
        let slot = match name {
            "reorder_within" => &mut self.reorder_within,
            "late_within_lateness" => &mut self.late_within_lateness,
            "very_late" => &mut self.very_late,
            "duplicates" => &mut self.duplicates,
            "gaps" => &mut self.gaps,
            "clock_jumps" => &mut self.clock_jumps,
            "malformed" => &mut self.malformed,
            "unknown_channels" => &mut self.unknown_channels,
            "out_of_range" => &mut self.out_of_range,
            _ => return Err(FaultParseError(format!("unknown fault {name:?}; expected one of {}", Faults::NAMES.join(", ")))),
        };
        *slot = p;
        Ok(())
    }

    /// `(name, probability)` for every fault, in [`Faults::NAMES`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, f64)> {
        let values = [
            self.reorder_within,
            self.late_within_lateness,
            self.very_late,
            self.duplicates,
            self.gaps,
            self.clock_jumps,
            self.malformed,
            self.unknown_channels,
            self.out_of_range,
        ];
        Faults::NAMES.into_iter().zip(values)
    }

    /// True when no fault is enabled.
    pub fn is_none(&self) -> bool {
        self.iter().all(|(_, p)| p == 0.0)
    }
}

impl fmt::Display for Faults {
    /// The non-zero faults as `parse_list` reads them, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on: Vec<String> = self.iter().filter(|(_, p)| *p != 0.0).map(|(n, p)| format!("{n}={p}")).collect();
        if on.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&on.join(","))
        }
    }
}

impl FromStr for Faults {
    type Err = FaultParseError;

    fn from_str(s: &str) -> Result<Faults, FaultParseError> {
        Faults::parse_list(s)
    }
}

/// A fault list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultParseError(pub String);

impl fmt::Display for FaultParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid fault list: {}", self.0)
    }
}

impl std::error::Error for FaultParseError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_fault_lists() {
        let f = Faults::parse_list("duplicates=0.01, gaps=0.001").unwrap();
        assert_eq!(f.duplicates, 0.01);
        assert_eq!(f.gaps, 0.001);
        assert_eq!(f.malformed, 0.0);
        assert_eq!(f.to_string(), "duplicates=0.01,gaps=0.001");
        assert_eq!(f.to_string().parse::<Faults>().unwrap(), f);
        assert_eq!(Faults::parse_list("").unwrap(), Faults::default());
        assert_eq!(Faults::parse_list("none").unwrap(), Faults::default());
        assert!(Faults::default().is_none());
        for name in Faults::NAMES {
            assert_eq!(Faults::parse_list(&format!("{name}=0.5")).unwrap().iter().filter(|f| f.1 == 0.5).count(), 1);
        }
    }

    #[test]
    fn rejects_bad_fault_lists() {
        for bad in ["duplicates", "duplicates=x", "duplicates=1.5", "duplicates=-0.1", "dupes=0.1"] {
            assert!(Faults::parse_list(bad).is_err(), "{bad}");
        }
    }

    /// A fault given twice is refused: the last one was kept, so a long list edited by hand
    /// ran with a probability its reader did not see.
    #[test]
    fn refuses_a_fault_given_twice() {
        let err = Faults::parse_list("duplicates=0.01,gaps=0.1, duplicates=0.2").unwrap_err().to_string();
        assert!(err.contains("\"duplicates\" is given twice"), "{err}");
    }

    #[test]
    fn validates_configs() {
        assert!(SimConfig::default().validate().is_ok());
        assert_eq!(SimConfig::default().rate_hz, 60.0);
        assert_eq!(SimConfig::default().health_rate_hz, 1.0);
        let bad = [
            SimConfig { rate_hz: 0.0, ..SimConfig::default() },
            SimConfig { rate_hz: f64::NAN, ..SimConfig::default() },
            SimConfig { duration_us: -1, ..SimConfig::default() },
            SimConfig { health_rate_hz: -1.0, ..SimConfig::default() },
            SimConfig { faults: Faults { gaps: 2.0, ..Faults::default() }, ..SimConfig::default() },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
