//! `/v1/sessions/{session}/performance`: a session's laps as a driver reads them — each lap's
//! time and its gap to the session's best complete lap, speeds, pedal shares and distance —
//! with the best lap, the mean complete lap and the consistency (standard deviation) of the
//! complete laps. Only complete laps (ended by the next lap's start) count towards the best,
//! the mean and the spread; an out-lap or an unfinished last lap is shown but not ranked.

use std::time::SystemTime;

use serde_json::{json, Value};
use tokio_postgres::Row;

use crate::store::time_json;

/// One lap row (the `lap-performance` contract's columns the endpoint shows).
#[derive(Debug, Clone, PartialEq)]
pub struct Lap {
    /// Lap number.
    pub lap: i64,
    /// Lap time, s.
    pub lap_time: f64,
    /// Whether the next lap's start ended it.
    pub complete: bool,
    /// First event of the lap.
    pub started_at: SystemTime,
    /// Top speed, km/h.
    pub max_speed: Option<f64>,
    /// Mean speed, km/h.
    pub mean_speed: Option<f64>,
    /// Share of samples at full throttle.
    pub full_throttle_share: Option<f64>,
    /// Share of samples braking.
    pub braking_share: Option<f64>,
    /// Distance, m.
    pub distance: Option<f64>,
    /// Samples in the lap.
    pub samples: i64,
}

impl Lap {
    fn of(r: &Row) -> Lap {
        Lap {
            lap: r.get("lap"),
            lap_time: r.get("lap_time"),
            complete: r.get("complete"),
            started_at: r.get("window_start"),
            max_speed: r.get("max_speed"),
            mean_speed: r.get("mean_speed"),
            full_throttle_share: r.get("full_throttle_share"),
            braking_share: r.get("braking_share"),
            distance: r.get("distance"),
            samples: r.get("samples"),
        }
    }
}

/// The response for a session's lap rows.
pub fn performance(session: &str, rows: &[Row]) -> Value {
    summarise(session, &rows.iter().map(Lap::of).collect::<Vec<_>>())
}

/// The response for a session's laps (ordered by lap number).
pub fn summarise(session: &str, laps: &[Lap]) -> Value {
    let complete: Vec<&Lap> = laps.iter().filter(|l| l.complete).collect();
    // Ties: the earlier lap is the best.
    let best = complete.iter().copied().reduce(|a, b| if b.lap_time < a.lap_time { b } else { a });
    let n = complete.len() as f64;
    let mean = (n > 0.0).then(|| complete.iter().map(|l| l.lap_time).sum::<f64>() / n);
    let spread = mean.filter(|_| n > 1.0).map(|m| (complete.iter().map(|l| (l.lap_time - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    let rows: Vec<Value> = laps
        .iter()
        .map(|l| {
            json!({
                "lap": l.lap,
                "lap_time_s": l.lap_time,
                "complete": l.complete,
                "started_at": time_json(l.started_at),
                "delta_to_best_s": best.filter(|_| l.complete).map(|b| l.lap_time - b.lap_time),
                "max_speed_kmh": l.max_speed,
                "mean_speed_kmh": l.mean_speed,
                "full_throttle_share": l.full_throttle_share,
                "braking_share": l.braking_share,
                "distance_m": l.distance,
                "samples": l.samples,
            })
        })
        .collect();
    json!({
        "session_id": session,
        "laps": rows,
        "complete_laps": complete.len(),
        "best_lap": best.map(|b| json!({"lap": b.lap, "lap_time_s": b.lap_time})),
        "mean_complete_lap_s": mean,
        "consistency_s": spread,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn lap(n: i64, t: f64, complete: bool) -> Lap {
        Lap {
            lap: n,
            lap_time: t,
            complete,
            started_at: UNIX_EPOCH + Duration::from_secs(n as u64 * 100),
            max_speed: Some(300.0),
            mean_speed: None,
            full_throttle_share: Some(0.5),
            braking_share: Some(0.1),
            distance: Some(5000.0),
            samples: 10,
        }
    }

    #[test]
    fn best_mean_and_spread_count_complete_laps_only() {
        let v = summarise("s", &[lap(1, 90.0, true), lap(2, 88.0, true), lap(3, 88.0, true), lap(4, 30.0, false)]);
        assert_eq!(v["best_lap"], json!({"lap": 2, "lap_time_s": 88.0}), "the earlier of two equal laps");
        assert_eq!(v["complete_laps"], 3);
        assert_eq!(v["mean_complete_lap_s"].as_f64().unwrap(), 266.0 / 3.0);
        let sd = v["consistency_s"].as_f64().unwrap();
        assert!((sd - (4.0f64 / 3.0).sqrt()).abs() < 1e-12, "{sd}");
        assert_eq!(v["laps"][0]["delta_to_best_s"], 2.0);
        assert_eq!(v["laps"][3]["delta_to_best_s"], Value::Null, "an unfinished lap is not ranked");
        assert_eq!(v["laps"][1]["started_at"], "1970-01-01T00:03:20.000000Z");
        let none = summarise("s", &[lap(1, 30.0, false)]);
        assert_eq!((none["best_lap"].clone(), none["consistency_s"].clone()), (Value::Null, Value::Null));
    }
}
