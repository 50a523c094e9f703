//! The producers the simulator impersonates, the channel names and units each sends, and the
//! encoding of canonical values into their envelopes.
//!
//! The tables here are the producer side of the dictionary's aliases; a unit test holds them
//! against `manifests/dictionary/racing.yaml` (names, units, version ranges, and that each
//! factor/offset equals the UCUM conversion), so the simulator and the dictionary cannot drift.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use pitgun_contracts::envelope::{ChannelValue, Envelope, Source, SourceKind, ENVELOPE_SCHEMA_V1};
use serde::Serialize;

use crate::metric::{Metric, Value, MAX_DIM};
use crate::session::SimEvent;

/// A producer identity: id, version and the channel table that version sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Producer {
    /// `pitgun-web` 0.9.5: the old browser client (`spd`, `eng_temp`, no ERS).
    Web09,
    /// `pitgun-web` 1.4.2: the browser game.
    Web14,
    /// `pitgun-sim` 2.1.0: the racing simulator.
    Sim21,
}

/// Sessions after which [`Producer::for_session`] repeats itself.
const PRODUCER_CYCLE: u32 = 8;

/// The producer ids (`source.id`) a run of `sessions` sessions sends from, sorted: who needs an
/// API key when the run is posted to a gateway.
pub fn source_ids(sessions: u32) -> Vec<&'static str> {
    let mut ids: Vec<&'static str> = (0..sessions.min(PRODUCER_CYCLE)).map(|i| Producer::for_session(i).id()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

impl Producer {
    pub(crate) const ALL: [Producer; 3] = [Producer::Web09, Producer::Web14, Producer::Sim21];

    /// Alternates web 1.4.2 and sim 2.1.0, with the old web client on every eighth session.
    pub(crate) fn for_session(index: u32) -> Producer {
        if index % PRODUCER_CYCLE == 4 {
            Producer::Web09
        } else if index.is_multiple_of(2) {
            Producer::Web14
        } else {
            Producer::Sim21
        }
    }

    pub(crate) fn id(self) -> &'static str {
        match self {
            Producer::Web09 | Producer::Web14 => "pitgun-web",
            Producer::Sim21 => "pitgun-sim",
        }
    }

    pub(crate) fn version(self) -> &'static str {
        match self {
            Producer::Web09 => "0.9.5",
            Producer::Web14 => "1.4.2",
            Producer::Sim21 => "2.1.0",
        }
    }

    pub(crate) fn kind(self) -> SourceKind {
        match self {
            Producer::Web09 | Producer::Web14 => SourceKind::Game,
            Producer::Sim21 => SourceKind::Simulator,
        }
    }

    pub(crate) fn is_web(self) -> bool {
        !matches!(self, Producer::Sim21)
    }

    pub(crate) fn source(self) -> Source {
        Source { kind: self.kind(), id: self.id().to_string(), version: self.version().to_string() }
    }

    /// The channels this producer version sends, indexed by metric and dimension value.
    pub(crate) fn table(self) -> &'static ChannelTable {
        static TABLES: OnceLock<[ChannelTable; 3]> = OnceLock::new();
        let tables = TABLES.get_or_init(|| Producer::ALL.map(ChannelTable::build));
        &tables[self as usize]
    }
}

/// How one canonical value travels for one producer: `sent = canonical * scale + offset`,
/// rounded to `decimals` so the JSON stays compact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ChannelSpec {
    pub metric: Metric,
    pub index: u8,
    pub name: &'static str,
    pub unit: &'static str,
    pub scale: f64,
    pub offset: f64,
    pub decimals: i32,
}

impl ChannelSpec {
    pub(crate) fn convert(&self, canonical: f64) -> ChannelValue {
        if self.metric.is_bool() {
            return ChannelValue::Bool(canonical >= 0.5);
        }
        ChannelValue::Number(round_to(canonical * self.scale + self.offset, self.decimals))
    }
}

/// Rounds to `decimals` places; never yields `-0`.
pub(crate) fn round_to(value: f64, decimals: i32) -> f64 {
    const POW10: [f64; 8] = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7];
    let p = POW10[decimals.clamp(0, 7) as usize];
    let r = (value * p).round() / p;
    if r == 0.0 {
        0.0
    } else {
        r
    }
}

/// A producer version's channels, looked up by `(metric, dimension index)` without hashing.
pub(crate) struct ChannelTable {
    slots: Vec<Option<ChannelSpec>>,
}

impl ChannelTable {
    fn build(producer: Producer) -> ChannelTable {
        let mut slots = vec![None; Metric::COUNT * MAX_DIM];
        let rows: &[Row] = if producer.is_web() { WEB } else { SIM };
        for row in rows {
            let applies = match row.7 {
                Ver::All => true,
                Ver::Old => producer == Producer::Web09,
                Ver::New => producer == Producer::Web14,
            };
            if applies {
                let spec = ChannelSpec { metric: row.0, index: row.1, name: row.2, unit: row.3, scale: row.4, offset: row.5, decimals: row.6 };
                let slot = &mut slots[row.0 as usize * MAX_DIM + row.1 as usize];
                assert!(slot.is_none(), "two channels for {:?}[{}]", row.0, row.1);
                *slot = Some(spec);
            }
        }
        ChannelTable { slots }
    }

    pub(crate) fn get(&self, metric: Metric, index: u8) -> Option<&ChannelSpec> {
        self.slots[metric as usize * MAX_DIM + index as usize].as_ref()
    }

    pub(crate) fn specs(&self) -> impl Iterator<Item = &ChannelSpec> {
        self.slots.iter().flatten()
    }
}

/// One channel a simulated producer version sends: the producer side of a dictionary alias.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelInfo {
    /// Producer id (`source.id`).
    pub producer: &'static str,
    /// Producer version (`source.version`).
    pub version: &'static str,
    /// Channel name in the envelope.
    pub channel: &'static str,
    /// UCUM unit the value is sent in.
    pub unit: &'static str,
    /// Dictionary metric id.
    pub metric: &'static str,
    /// The metric's dimension and the value this channel carries (`wheel`, `fl`).
    pub dimension: Option<(&'static str, &'static str)>,
    /// `sent = canonical * scale + offset` …
    pub scale: f64,
    /// … with this offset …
    pub offset: f64,
    /// … rounded to this many decimals.
    pub decimals: u32,
}

/// Every channel of every simulated producer version, by producer then metric.
pub fn channels() -> Vec<ChannelInfo> {
    Producer::ALL
        .iter()
        .flat_map(|&p| {
            p.table().specs().map(move |s| ChannelInfo {
                producer: p.id(),
                version: p.version(),
                channel: s.name,
                unit: s.unit,
                metric: s.metric.id(),
                dimension: s.metric.dimension().map(|(name, values)| (name, values[usize::from(s.index)])),
                scale: s.scale,
                offset: s.offset,
                decimals: s.decimals as u32,
            })
        })
        .collect()
}

/// Turns a session's canonical events into that producer's envelopes.
pub(crate) struct Encoder {
    table: &'static ChannelTable,
    source: Source,
    session_id: String,
    dims: BTreeMap<String, String>,
}

impl Encoder {
    pub(crate) fn new(producer: Producer, session_id: String, dims: BTreeMap<String, String>) -> Encoder {
        Encoder { table: producer.table(), source: producer.source(), session_id, dims }
    }

    pub(crate) fn encode(&self, event: &SimEvent) -> Envelope {
        let mut channels = BTreeMap::new();
        for v in &event.values {
            self.put(&mut channels, v);
        }
        Envelope {
            schema: ENVELOPE_SCHEMA_V1.to_string(),
            event_id: format!("{}-{}", self.session_id, event.seq),
            source: self.source.clone(),
            session_id: self.session_id.clone(),
            seq: event.seq,
            time_us: event.time_us,
            kind: event.kind,
            channels,
            dims: self.dims.clone(),
        }
    }

    /// Values of metrics this producer version does not send are left out, as a real client would.
    fn put(&self, channels: &mut BTreeMap<String, ChannelValue>, v: &Value) {
        if let Some(spec) = self.table.get(v.metric, v.index) {
            channels.insert(spec.name.to_string(), spec.convert(v.value));
        }
    }
}

/// Which versions of `pitgun-web` send a row (pitgun-sim rows always use `All`).
#[derive(Clone, Copy)]
enum Ver {
    All,
    /// 0.9.x only.
    Old,
    /// 1.x only.
    New,
}

/// metric, dimension index, channel, unit, scale, offset, decimals, versions.
type Row = (Metric, u8, &'static str, &'static str, f64, f64, i32, Ver);

const KMH: f64 = 3.6;
const DEGF: f64 = 1.8;
const DEGF0: f64 = 32.0;
const PCT: f64 = 100.0;
const PER_PSI: f64 = 1.0 / 6.894_757_293_168_361;
const PER_LB: f64 = 1.0 / 0.453_592_37;
const DEG: f64 = 180.0 / std::f64::consts::PI;
const G0: f64 = 9.806_65;

use Metric as M;
use Ver::{All, New, Old};

#[rustfmt::skip]
const WEB: &[Row] = &[
    (M::VehicleSpeed, 0, "spd", "km/h", KMH, 0.0, 1, Old),
    (M::VehicleSpeed, 0, "speed_kmh", "km/h", KMH, 0.0, 1, New),
    (M::AccelLong, 0, "g_long", "[g]", 1.0, 0.0, 2, All),
    (M::AccelLat, 0, "g_lat", "[g]", 1.0, 0.0, 2, All),
    (M::YawRate, 0, "yaw_rate", "deg/s", DEG, 0.0, 1, All),
    (M::Damage, 0, "dmg_fw", "%", PCT, 0.0, 1, All),
    (M::Damage, 1, "dmg_rw", "%", PCT, 0.0, 1, All),
    (M::Damage, 2, "dmg_floor", "%", PCT, 0.0, 1, All),
    (M::Throttle, 0, "throttle", "%", PCT, 0.0, 1, All),
    (M::Brake, 0, "brake", "%", PCT, 0.0, 1, All),
    (M::Clutch, 0, "clutch", "%", PCT, 0.0, 1, All),
    (M::Steer, 0, "steer", "%", PCT, 0.0, 1, All),
    (M::Gear, 0, "gear", "1", 1.0, 0.0, 0, All),
    (M::EngineRpm, 0, "rpm", "/min", 1.0, 0.0, 0, All),
    (M::WaterTemp, 0, "water_temp", "[degF]", DEGF, DEGF0, 1, New),
    (M::OilTemp, 0, "oil_temp", "[degF]", DEGF, DEGF0, 1, All),
    (M::EngineTemp, 0, "eng_temp", "[degF]", DEGF, DEGF0, 1, Old),
    (M::TyreSurfaceTemp, 0, "tyre_fl_temp", "[degF]", DEGF, DEGF0, 1, All),
    (M::TyreSurfaceTemp, 1, "tyre_fr_temp", "[degF]", DEGF, DEGF0, 1, All),
    (M::TyreSurfaceTemp, 2, "tyre_rl_temp", "[degF]", DEGF, DEGF0, 1, All),
    (M::TyreSurfaceTemp, 3, "tyre_rr_temp", "[degF]", DEGF, DEGF0, 1, All),
    (M::TyreInnerTemp, 0, "tyre_fl_core", "[degF]", DEGF, DEGF0, 1, All),
    (M::TyreInnerTemp, 1, "tyre_fr_core", "[degF]", DEGF, DEGF0, 1, All),
    (M::TyreInnerTemp, 2, "tyre_rl_core", "[degF]", DEGF, DEGF0, 1, All),
    (M::TyreInnerTemp, 3, "tyre_rr_core", "[degF]", DEGF, DEGF0, 1, All),
    (M::TyrePressure, 0, "tyre_fl_psi", "[psi]", PER_PSI, 0.0, 2, All),
    (M::TyrePressure, 1, "tyre_fr_psi", "[psi]", PER_PSI, 0.0, 2, All),
    (M::TyrePressure, 2, "tyre_rl_psi", "[psi]", PER_PSI, 0.0, 2, All),
    (M::TyrePressure, 3, "tyre_rr_psi", "[psi]", PER_PSI, 0.0, 2, All),
    (M::TyreWear, 0, "tyre_fl_wear", "%", PCT, 0.0, 2, All),
    (M::TyreWear, 1, "tyre_fr_wear", "%", PCT, 0.0, 2, All),
    (M::TyreWear, 2, "tyre_rl_wear", "%", PCT, 0.0, 2, All),
    (M::TyreWear, 3, "tyre_rr_wear", "%", PCT, 0.0, 2, All),
    (M::BrakeTemp, 0, "brake_fl_temp", "[degF]", DEGF, DEGF0, 0, All),
    (M::BrakeTemp, 1, "brake_fr_temp", "[degF]", DEGF, DEGF0, 0, All),
    (M::BrakeTemp, 2, "brake_rl_temp", "[degF]", DEGF, DEGF0, 0, All),
    (M::BrakeTemp, 3, "brake_rr_temp", "[degF]", DEGF, DEGF0, 0, All),
    (M::LapNumber, 0, "lap", "1", 1.0, 0.0, 0, All),
    (M::LapDistance, 0, "lap_dist", "m", 1.0, 0.0, 1, All),
    (M::LapSector, 0, "sector", "1", 1.0, 0.0, 0, All),
    (M::LapCurrentTime, 0, "cur_lap_ms", "ms", 1000.0, 0.0, 0, All),
    (M::LapLastTime, 0, "last_lap_ms", "ms", 1000.0, 0.0, 3, All),
    (M::SectorTime, 0, "s1_ms", "ms", 1000.0, 0.0, 3, All),
    (M::SectorTime, 1, "s2_ms", "ms", 1000.0, 0.0, 3, All),
    (M::SectorTime, 2, "s3_ms", "ms", 1000.0, 0.0, 3, All),
    (M::RacePosition, 0, "pos", "1", 1.0, 0.0, 0, All),
    (M::PitStatus, 0, "in_pit", "1", 1.0, 0.0, 0, All),
    (M::FuelMass, 0, "fuel_lb", "[lb_av]", PER_LB, 0.0, 2, All),
    (M::ErsStore, 0, "ers_kj", "kJ", 1.0, 0.0, 0, New),
    (M::ErsDeploy, 0, "ers_kw", "kW", 1.0, 0.0, 1, New),
    (M::TrackTemp, 0, "track_temp", "[degF]", DEGF, DEGF0, 1, All),
    (M::AirTemp, 0, "air_temp", "[degF]", DEGF, DEGF0, 1, All),
    (M::Fps, 0, "fps", "/s", 1.0, 0.0, 1, All),
    (M::FrameTime, 0, "frame_ms", "ms", 1.0, 0.0, 2, All),
    (M::Rtt, 0, "ping_ms", "ms", 1.0, 0.0, 0, All),
    (M::DroppedFrames, 0, "dropped_frames", "1", 1.0, 0.0, 0, All),
    (M::PacketLoss, 0, "loss_pct", "%", PCT, 0.0, 2, New),
];

#[rustfmt::skip]
const SIM: &[Row] = &[
    (M::VehicleSpeed, 0, "speed", "m/s", 1.0, 0.0, 2, All),
    (M::AccelLong, 0, "accel_long", "m/s2", G0, 0.0, 2, All),
    (M::AccelLat, 0, "accel_lat", "m/s2", G0, 0.0, 2, All),
    (M::YawRate, 0, "yaw_rate", "rad/s", 1.0, 0.0, 3, All),
    (M::Damage, 0, "damage_front_wing", "1", 1.0, 0.0, 3, All),
    (M::Damage, 1, "damage_rear_wing", "1", 1.0, 0.0, 3, All),
    (M::Damage, 2, "damage_floor", "1", 1.0, 0.0, 3, All),
    (M::Throttle, 0, "throttle", "1", 1.0, 0.0, 3, All),
    (M::Brake, 0, "brake", "1", 1.0, 0.0, 3, All),
    (M::Clutch, 0, "clutch", "1", 1.0, 0.0, 3, All),
    (M::Steer, 0, "steering", "1", 1.0, 0.0, 3, All),
    (M::Gear, 0, "gear", "1", 1.0, 0.0, 0, All),
    (M::EngineRpm, 0, "engine_rpm", "/min", 1.0, 0.0, 0, All),
    (M::WaterTemp, 0, "engine_water_temp", "Cel", 1.0, 0.0, 2, All),
    (M::OilTemp, 0, "engine_oil_temp", "Cel", 1.0, 0.0, 2, All),
    (M::TyreSurfaceTemp, 0, "wheel_temp_surface_fl", "Cel", 1.0, 0.0, 2, All),
    (M::TyreSurfaceTemp, 1, "wheel_temp_surface_fr", "Cel", 1.0, 0.0, 2, All),
    (M::TyreSurfaceTemp, 2, "wheel_temp_surface_rl", "Cel", 1.0, 0.0, 2, All),
    (M::TyreSurfaceTemp, 3, "wheel_temp_surface_rr", "Cel", 1.0, 0.0, 2, All),
    (M::TyreInnerTemp, 0, "wheel_temp_inner_fl", "Cel", 1.0, 0.0, 2, All),
    (M::TyreInnerTemp, 1, "wheel_temp_inner_fr", "Cel", 1.0, 0.0, 2, All),
    (M::TyreInnerTemp, 2, "wheel_temp_inner_rl", "Cel", 1.0, 0.0, 2, All),
    (M::TyreInnerTemp, 3, "wheel_temp_inner_rr", "Cel", 1.0, 0.0, 2, All),
    (M::TyrePressure, 0, "wheel_pressure_fl", "kPa", 1.0, 0.0, 2, All),
    (M::TyrePressure, 1, "wheel_pressure_fr", "kPa", 1.0, 0.0, 2, All),
    (M::TyrePressure, 2, "wheel_pressure_rl", "kPa", 1.0, 0.0, 2, All),
    (M::TyrePressure, 3, "wheel_pressure_rr", "kPa", 1.0, 0.0, 2, All),
    (M::TyreWear, 0, "wheel_wear_fl", "1", 1.0, 0.0, 4, All),
    (M::TyreWear, 1, "wheel_wear_fr", "1", 1.0, 0.0, 4, All),
    (M::TyreWear, 2, "wheel_wear_rl", "1", 1.0, 0.0, 4, All),
    (M::TyreWear, 3, "wheel_wear_rr", "1", 1.0, 0.0, 4, All),
    (M::BrakeTemp, 0, "brake_temp_fl", "Cel", 1.0, 0.0, 1, All),
    (M::BrakeTemp, 1, "brake_temp_fr", "Cel", 1.0, 0.0, 1, All),
    (M::BrakeTemp, 2, "brake_temp_rl", "Cel", 1.0, 0.0, 1, All),
    (M::BrakeTemp, 3, "brake_temp_rr", "Cel", 1.0, 0.0, 1, All),
    (M::LapNumber, 0, "lap_number", "1", 1.0, 0.0, 0, All),
    (M::LapDistance, 0, "lap_distance", "m", 1.0, 0.0, 1, All),
    (M::LapSector, 0, "sector_index", "1", 1.0, 0.0, 0, All),
    (M::LapCurrentTime, 0, "lap_time", "s", 1.0, 0.0, 3, All),
    (M::LapLastTime, 0, "lap_time_last", "s", 1.0, 0.0, 6, All),
    (M::SectorTime, 0, "sector_time_1", "s", 1.0, 0.0, 6, All),
    (M::SectorTime, 1, "sector_time_2", "s", 1.0, 0.0, 6, All),
    (M::SectorTime, 2, "sector_time_3", "s", 1.0, 0.0, 6, All),
    (M::RacePosition, 0, "race_position", "1", 1.0, 0.0, 0, All),
    (M::PitStatus, 0, "pit_lane", "1", 1.0, 0.0, 0, All),
    (M::FuelMass, 0, "fuel_mass", "kg", 1.0, 0.0, 3, All),
    (M::ErsStore, 0, "ers_energy", "MJ", 0.001, 0.0, 4, All),
    (M::ErsDeploy, 0, "ers_power", "W", 1000.0, 0.0, 0, All),
    (M::TrackTemp, 0, "track_temperature", "Cel", 1.0, 0.0, 2, All),
    (M::AirTemp, 0, "air_temperature", "Cel", 1.0, 0.0, 2, All),
    (M::Fps, 0, "render_fps", "/s", 1.0, 0.0, 2, All),
    (M::FrameTime, 0, "frame_time", "s", 0.001, 0.0, 5, All),
    (M::Rtt, 0, "net_rtt", "ms", 1.0, 0.0, 2, All),
    (M::DroppedFrames, 0, "frames_dropped", "1", 1.0, 0.0, 0, All),
    (M::PacketLoss, 0, "net_loss", "1", 1.0, 0.0, 4, All),
];
