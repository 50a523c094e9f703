//! One racing session: who drives what where, and the events it produces, one at a time in
//! event-time order, with values in canonical units.
//!
//! A session is a small state machine: `session_start` at its start, then whichever comes first of
//! the next sample, the next health event and the end. Before each of those it advances the car to
//! that time; anything the car crossed on the way (sectors, the line, the pit lane) becomes an
//! event at its exact crossing time, ahead of the sample. Nothing is buffered beyond the events of
//! one step, so a session's memory does not grow with its duration.

use std::collections::{BTreeMap, VecDeque};
use std::sync::OnceLock;

use pitgun_contracts::envelope::EventKind;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::car::{Car, Crossing};
use crate::config::SimConfig;
use crate::metric::{Metric as M, Value};
use crate::producer::Producer;
use crate::track::{cars, tracks, Circuit, PLAYERS};

/// Random streams of a session, so physics and faults never perturb each other.
pub(crate) const STREAM_PHYSICS: u64 = 0;
pub(crate) const STREAM_FAULTS: u64 = 1;

/// Slow channels ride on every fourth sample, one of `SLOW_GROUPS` groups at a time, so each
/// slow channel comes at `rate_hz / 32` (1.875 Hz at 60 Hz): temperatures, wear and fuel change
/// over seconds, and this keeps a sample envelope near 450 bytes.
const SLOW_GROUPS: u64 = 8;
const SLOW_EVERY: u64 = 4;

/// The per-session random generator for one purpose: ChaCha8 keyed by the seed, with the session
/// index and the purpose as the stream, so sessions are independent of each other and of order.
pub(crate) fn session_rng(seed: u64, index: u32, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((u64::from(index) << 8) | stream);
    rng
}

/// The circuits, rasterised once per process.
fn circuits() -> &'static [Circuit] {
    static CIRCUITS: OnceLock<Vec<Circuit>> = OnceLock::new();
    CIRCUITS.get_or_init(|| tracks().iter().map(Circuit::build).collect())
}

/// A lap completed at a line crossing, as the ground truth records it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LapRecord {
    pub lap: u32,
    pub start_us: i64,
    pub end_us: i64,
}

/// An event before encoding: canonical values, in the session's sequence.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SimEvent {
    pub kind: EventKind,
    pub time_us: i64,
    pub seq: u64,
    pub values: Vec<Value>,
    /// Set on lap events.
    pub lap: Option<LapRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    NotStarted,
    Running,
    Ended,
}

/// Client-side health state (frame rate, network).
struct Health {
    fps_cap: f64,
    rtt_ms: f64,
    loss: f64,
    dropped: u64,
}

/// Who, what, where and when of a session.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub id: String,
    pub producer: Producer,
    pub track: &'static str,
    pub car: &'static str,
    pub player: &'static str,
    pub start_us: i64,
    pub end_us: i64,
}

impl Identity {
    pub(crate) fn dims(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("car".to_string(), self.car.to_string()),
            ("player".to_string(), self.player.to_string()),
            ("track".to_string(), self.track.to_string()),
        ])
    }
}

/// A session's event generator.
pub(crate) struct Session {
    pub identity: Identity,
    rate_hz: f64,
    health_rate_hz: f64,
    samples: u64,
    healths: u64,
    seq: u64,
    phase: Phase,
    car: Car,
    health: Health,
    rng: ChaCha8Rng,
    crossings: Vec<Crossing>,
    pending: VecDeque<SimEvent>,
}

impl Session {
    pub(crate) fn new(config: &SimConfig, index: u32) -> Session {
        let mut rng = session_rng(config.seed, index, STREAM_PHYSICS);
        let track = rng.random_range(0..tracks().len());
        let car = rng.random_range(0..cars().len());
        let player = PLAYERS[rng.random_range(0..PLAYERS.len())];
        // Sessions start a few seconds apart so their events interleave like a live stream.
        let offset_us = rng.random_range(0..5_000_000i64);
        let start_us = config.start_time_us + offset_us;
        let producer = Producer::for_session(index);
        let identity = Identity {
            id: format!("s-{}-{}", config.seed, index),
            producer,
            track: &tracks()[track].name,
            car: &cars()[car].name,
            player,
            start_us,
            end_us: start_us + config.duration_us,
        };
        let health = Health {
            fps_cap: if producer.is_web() { 60.0 } else { 144.0 },
            rtt_ms: 12.0 + 80.0 * rng.random::<f64>(),
            loss: 0.002 + 0.01 * rng.random::<f64>(),
            dropped: 0,
        };
        let car = Car::new(&cars()[car], car, &circuits()[track], start_us, &mut rng);
        Session {
            identity,
            rate_hz: config.rate_hz,
            health_rate_hz: config.health_rate_hz,
            samples: 0,
            healths: 0,
            seq: 0,
            phase: Phase::NotStarted,
            car,
            health,
            rng,
            crossings: Vec::with_capacity(4),
            pending: VecDeque::with_capacity(8),
        }
    }

    fn sample_time(&self, k: u64) -> i64 {
        self.identity.start_us + (k as f64 * 1e6 / self.rate_hz).round() as i64
    }

    fn health_time(&self, k: u64) -> Option<i64> {
        (self.health_rate_hz > 0.0).then(|| self.identity.start_us + ((k + 1) as f64 * 1e6 / self.health_rate_hz).round() as i64)
    }

    /// The session's next event, or `None` after `session_end`.
    pub(crate) fn next_event(&mut self) -> Option<SimEvent> {
        if let Some(event) = self.pending.pop_front() {
            return Some(event);
        }
        match self.phase {
            Phase::Ended => return None,
            Phase::NotStarted => {
                self.phase = Phase::Running;
                let values = vec![
                    Value::new(M::LapNumber, 1.0),
                    Value::new(M::LapDistance, 0.0),
                    Value::new(M::RacePosition, f64::from(self.car.position)),
                    Value::new(M::PitStatus, 0.0),
                ];
                return Some(self.event(EventKind::SessionStart, self.identity.start_us, values));
            }
            Phase::Running => {}
        }
        let end = self.identity.end_us;
        let sample = Some(self.sample_time(self.samples)).filter(|&t| t < end);
        let health = self.health_time(self.healths).filter(|&t| t < end);
        let t = [sample, health].into_iter().flatten().min().unwrap_or(end);

        self.car.advance_to(t, &mut self.rng, &mut self.crossings);
        let mut crossings = std::mem::take(&mut self.crossings);
        for c in crossings.drain(..) {
            let event = self.crossing_event(c);
            self.pending.push_back(event);
        }
        self.crossings = crossings;

        if sample == Some(t) {
            let event = self.sample(t);
            self.pending.push_back(event);
            self.samples += 1;
        }
        if health == Some(t) {
            let event = self.health_event(t);
            self.pending.push_back(event);
            self.healths += 1;
        }
        if t == end {
            let car = &self.car;
            let values = vec![
                Value::new(M::LapNumber, f64::from(car.lap)),
                Value::new(M::LapDistance, car.s),
                Value::new(M::RacePosition, f64::from(car.position)),
            ];
            let event = self.event(EventKind::SessionEnd, end, values);
            self.pending.push_back(event);
            self.phase = Phase::Ended;
        }
        self.pending.pop_front()
    }

    fn event(&mut self, kind: EventKind, time_us: i64, values: Vec<Value>) -> SimEvent {
        self.seq += 1;
        SimEvent { kind, time_us, seq: self.seq, values, lap: None }
    }

    fn crossing_event(&mut self, crossing: Crossing) -> SimEvent {
        match crossing {
            Crossing::Sector { time_us, lap, completed, sector_time_us } => {
                let values =
                    vec![Value::new(M::LapNumber, f64::from(lap)), Value::at(M::SectorTime, usize::from(completed - 1), sector_time_us as f64 / 1e6)];
                self.event(EventKind::Sector, time_us, values)
            }
            Crossing::Line { new_lap, start_us, end_us } => {
                let values = vec![
                    Value::new(M::LapNumber, f64::from(new_lap)),
                    Value::new(M::LapLastTime, (end_us - start_us) as f64 / 1e6),
                    Value::new(M::RacePosition, f64::from(self.car.position)),
                ];
                let mut event = self.event(EventKind::Lap, end_us, values);
                event.lap = Some(LapRecord { lap: new_lap - 1, start_us, end_us });
                event
            }
            Crossing::PitIn { time_us, lap, distance } | Crossing::PitOut { time_us, lap, distance } => {
                let pit_in = matches!(crossing, Crossing::PitIn { .. });
                let values = vec![
                    Value::new(M::PitStatus, if pit_in { 1.0 } else { 0.0 }),
                    Value::new(M::LapNumber, f64::from(lap)),
                    Value::new(M::LapDistance, distance),
                ];
                let kind = if pit_in { EventKind::PitIn } else { EventKind::PitOut };
                self.event(kind, time_us, values)
            }
        }
    }

    /// Twelve fast channels on every sample, plus one rotating group of slow ones on every fourth.
    fn sample(&mut self, t: i64) -> SimEvent {
        let rng = &mut self.rng;
        let car = &self.car;
        let mut noise = |scale: f64| scale * (rng.random::<f64>() - 0.5);
        let mut values = Vec::with_capacity(18);
        values.extend([
            Value::new(M::VehicleSpeed, (car.v + noise(0.04)).max(0.0)),
            Value::new(M::AccelLong, car.long_g + noise(0.02)),
            Value::new(M::AccelLat, car.lat_g + noise(0.02)),
            Value::new(M::YawRate, car.yaw_rate + noise(0.004)),
            Value::new(M::Throttle, car.throttle),
            Value::new(M::Brake, car.brake),
            Value::new(M::Steer, car.steer),
            Value::new(M::Gear, f64::from(car.gear)),
            Value::new(M::EngineRpm, car.rpm),
            Value::new(M::LapNumber, f64::from(car.lap)),
            Value::new(M::LapDistance, car.s),
            Value::new(M::LapCurrentTime, (t - car.lap_start_us) as f64 / 1e6),
        ]);
        let group = (self.samples % SLOW_EVERY == 2).then_some(self.samples / SLOW_EVERY % SLOW_GROUPS);
        match group {
            None => {}
            Some(0) => values.extend((0..4).map(|w| Value::at(M::TyreSurfaceTemp, w, car.wheels[w].surface_c + noise(0.2)))),
            Some(1) => values.extend((0..4).map(|w| Value::at(M::TyreInnerTemp, w, car.wheels[w].inner_c))),
            Some(2) => values.extend((0..4).map(|w| Value::at(M::TyrePressure, w, car.pressure_kpa(w)))),
            Some(3) => values.extend((0..4).map(|w| Value::at(M::BrakeTemp, w, car.wheels[w].brake_c + noise(1.0)))),
            Some(4) => values.extend((0..4).map(|w| Value::at(M::TyreWear, w, car.wheels[w].wear))),
            Some(5) => values.extend([
                // Old web clients call the coolant temperature `engine.temperature`; each
                // producer's table keeps the one it sends.
                Value::new(M::WaterTemp, car.water_c),
                Value::new(M::EngineTemp, car.water_c),
                Value::new(M::OilTemp, car.oil_c),
                Value::new(M::FuelMass, car.fuel_kg),
                Value::new(M::Clutch, car.clutch),
            ]),
            Some(6) => values.extend([
                Value::new(M::LapSector, f64::from(car.sector)),
                Value::new(M::RacePosition, f64::from(car.position)),
                Value::new(M::PitStatus, if car.in_pit_lane() { 1.0 } else { 0.0 }),
                Value::new(M::ErsStore, car.ers_kj),
                Value::new(M::ErsDeploy, car.ers_kw),
            ]),
            Some(_) => values.extend([
                Value::new(M::TrackTemp, car.track_c),
                Value::new(M::AirTemp, car.air_c),
                Value::at(M::Damage, 0, car.damage[0]),
                Value::at(M::Damage, 1, car.damage[1]),
                Value::at(M::Damage, 2, car.damage[2]),
            ]),
        }
        self.event(EventKind::Sample, t, values)
    }

    fn health_event(&mut self, t: i64) -> SimEvent {
        let rng = &mut self.rng;
        let h = &mut self.health;
        let stall = if rng.random_bool(0.05) { 0.25 + 0.3 * rng.random::<f64>() } else { 0.0 };
        let fps = h.fps_cap * (1.0 - 0.04 * rng.random::<f64>() - stall);
        let frame_ms = 1000.0 / fps * (1.0 + 0.02 * (rng.random::<f64>() - 0.5));
        let rtt = h.rtt_ms * (0.9 + 0.2 * rng.random::<f64>()) - 3.0 * rng.random::<f64>().max(1e-12).ln();
        let loss = (h.loss * (0.5 + rng.random::<f64>())).min(1.0);
        h.dropped += ((h.fps_cap - fps).max(0.0) * 0.3 / self.health_rate_hz).round() as u64;
        let values = vec![
            Value::new(M::Fps, fps),
            Value::new(M::FrameTime, frame_ms),
            Value::new(M::Rtt, rtt),
            Value::new(M::DroppedFrames, h.dropped as f64),
            Value::new(M::PacketLoss, loss),
        ];
        self.event(EventKind::Health, t, values)
    }
}
