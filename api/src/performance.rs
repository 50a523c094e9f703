//! `/v1/sessions/{session}/performance`: a session's laps as a driver reads them — each lap's
//! time and its gap to the session's best complete lap, speeds, pedal shares and distance —
//! with the best lap, the mean complete lap and the consistency (standard deviation) of the
//! complete laps. Only complete laps (ended by the next lap's start) count towards the best,
//! the mean and the spread; an out-lap or an unfinished last lap is shown but not ranked.
//!
//! Laps are listed in the order they started, a page at a time, each naming its driver and car
//! (a session's key may change: a driver or car change starts new laps). The best, the mean and
//! the spread are of every complete lap of the session, on every page.

use std::time::SystemTime;

use serde_json::{json, Value};
use tokio_postgres::Row;

use crate::store::{time_json, LapSummary};

/// One lap row (the `lap-performance` contract's columns the endpoint shows).
#[derive(Debug, Clone, PartialEq)]
pub struct Lap {
    /// Who drove it.
    pub player: String,
    /// Where.
    pub track: String,
    /// In what.
    pub car: String,
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
            player: r.get("player"),
            track: r.get("track"),
            car: r.get("car"),
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

/// The session's best complete lap.
#[derive(Debug, Clone, PartialEq)]
pub struct BestLap {
    /// Lap number.
    pub lap: i64,
    /// Lap time, s.
    pub lap_time: f64,
    /// Who drove it.
    pub player: String,
    /// In what.
    pub car: String,
}

/// The response for a page of a session's lap rows.
pub fn performance(session: &str, summary: &LapSummary, rows: &[Row], next: Option<String>) -> Value {
    let best = summary.best.as_ref().map(|r| BestLap { lap: r.get("lap"), lap_time: r.get("lap_time"), player: r.get("player"), car: r.get("car") });
    let laps: Vec<Lap> = rows.iter().map(Lap::of).collect();
    summarise(session, summary, best.as_ref(), &laps, next)
}

/// The response for a page of a session's laps (in the order they started).
pub fn summarise(session: &str, summary: &LapSummary, best: Option<&BestLap>, laps: &[Lap], next: Option<String>) -> Value {
    let rows: Vec<Value> = laps
        .iter()
        .map(|l| {
            json!({
                "lap": l.lap,
                "player": l.player,
                "track": l.track,
                "car": l.car,
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
        "next_cursor": next,
        "complete_laps": summary.complete_laps,
        "best_lap": best.map(|b| json!({"lap": b.lap, "lap_time_s": b.lap_time, "player": b.player, "car": b.car})),
        "mean_complete_lap_s": summary.mean,
        "consistency_s": summary.spread,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn lap(n: i64, t: f64, complete: bool) -> Lap {
        Lap {
            player: "ana".into(),
            track: "monza".into(),
            car: "gt3".into(),
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
    fn each_complete_lap_is_measured_against_the_best_and_an_unfinished_one_is_not() {
        let summary = LapSummary { laps: 4, complete_laps: 3, mean: Some(266.0 / 3.0), spread: Some(1.0), best: None };
        let best = BestLap { lap: 2, lap_time: 88.0, player: "ana".into(), car: "gt3".into() };
        let laps = [lap(1, 90.0, true), lap(2, 88.0, true), lap(3, 88.0, true), lap(4, 30.0, false)];
        let v = summarise("s", &summary, Some(&best), &laps, Some("6e".into()));
        assert_eq!(v["best_lap"], json!({"lap": 2, "lap_time_s": 88.0, "player": "ana", "car": "gt3"}));
        assert_eq!((v["complete_laps"].clone(), v["consistency_s"].clone()), (json!(3), json!(1.0)));
        assert_eq!(v["laps"][0]["delta_to_best_s"], 2.0);
        assert_eq!(v["laps"][3]["delta_to_best_s"], Value::Null, "an unfinished lap is not ranked");
        assert_eq!((v["laps"][1]["started_at"].clone(), v["laps"][1]["car"].clone()), (json!("1970-01-01T00:03:20.000000Z"), json!("gt3")));
        assert_eq!(v["next_cursor"], "6e");
        let none = LapSummary { laps: 1, complete_laps: 0, mean: None, spread: None, best: None };
        let v = summarise("s", &none, None, &[lap(1, 30.0, false)], None);
        assert_eq!((v["best_lap"].clone(), v["consistency_s"].clone(), v["next_cursor"].clone()), (Value::Null, Value::Null, Value::Null));
    }
}
