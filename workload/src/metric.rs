//! The canonical metrics the simulator produces, and the values it carries between the physics
//! and the producer encoding. Values are always in the metric's canonical dictionary unit here.

/// A canonical metric of `manifests/dictionary/racing.yaml`, interned as an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Metric {
    VehicleSpeed,
    AccelLong,
    AccelLat,
    YawRate,
    Damage,
    Throttle,
    Brake,
    Clutch,
    Steer,
    Gear,
    EngineRpm,
    WaterTemp,
    OilTemp,
    EngineTemp,
    TyreSurfaceTemp,
    TyreInnerTemp,
    TyrePressure,
    TyreWear,
    BrakeTemp,
    LapNumber,
    LapDistance,
    LapSector,
    LapCurrentTime,
    LapLastTime,
    SectorTime,
    RacePosition,
    PitStatus,
    FuelMass,
    ErsStore,
    ErsDeploy,
    TrackTemp,
    AirTemp,
    Fps,
    FrameTime,
    Rtt,
    DroppedFrames,
    PacketLoss,
}

/// Values of a metric's dimension, in the order the simulator indexes them.
pub(crate) const WHEELS: [&str; 4] = ["fl", "fr", "rl", "rr"];
pub(crate) const PARTS: [&str; 3] = ["front_wing", "rear_wing", "floor"];
pub(crate) const SECTORS: [&str; 3] = ["1", "2", "3"];

/// Largest number of dimension values of any metric (the wheels).
pub(crate) const MAX_DIM: usize = 4;

impl Metric {
    pub(crate) const COUNT: usize = 37;

    #[cfg(test)]
    pub(crate) const ALL: [Metric; Metric::COUNT] = [
        Metric::VehicleSpeed,
        Metric::AccelLong,
        Metric::AccelLat,
        Metric::YawRate,
        Metric::Damage,
        Metric::Throttle,
        Metric::Brake,
        Metric::Clutch,
        Metric::Steer,
        Metric::Gear,
        Metric::EngineRpm,
        Metric::WaterTemp,
        Metric::OilTemp,
        Metric::EngineTemp,
        Metric::TyreSurfaceTemp,
        Metric::TyreInnerTemp,
        Metric::TyrePressure,
        Metric::TyreWear,
        Metric::BrakeTemp,
        Metric::LapNumber,
        Metric::LapDistance,
        Metric::LapSector,
        Metric::LapCurrentTime,
        Metric::LapLastTime,
        Metric::SectorTime,
        Metric::RacePosition,
        Metric::PitStatus,
        Metric::FuelMass,
        Metric::ErsStore,
        Metric::ErsDeploy,
        Metric::TrackTemp,
        Metric::AirTemp,
        Metric::Fps,
        Metric::FrameTime,
        Metric::Rtt,
        Metric::DroppedFrames,
        Metric::PacketLoss,
    ];

    /// The dictionary id.
    pub(crate) fn id(self) -> &'static str {
        match self {
            Metric::VehicleSpeed => "vehicle.speed",
            Metric::AccelLong => "vehicle.accel_long",
            Metric::AccelLat => "vehicle.accel_lat",
            Metric::YawRate => "vehicle.yaw_rate",
            Metric::Damage => "vehicle.damage",
            Metric::Throttle => "driver.throttle",
            Metric::Brake => "driver.brake",
            Metric::Clutch => "driver.clutch",
            Metric::Steer => "driver.steer",
            Metric::Gear => "driver.gear",
            Metric::EngineRpm => "engine.rpm",
            Metric::WaterTemp => "engine.water_temperature",
            Metric::OilTemp => "engine.oil_temperature",
            Metric::EngineTemp => "engine.temperature",
            Metric::TyreSurfaceTemp => "tyre.surface_temperature",
            Metric::TyreInnerTemp => "tyre.inner_temperature",
            Metric::TyrePressure => "tyre.pressure",
            Metric::TyreWear => "tyre.wear",
            Metric::BrakeTemp => "brake.temperature",
            Metric::LapNumber => "lap.number",
            Metric::LapDistance => "lap.distance",
            Metric::LapSector => "lap.sector",
            Metric::LapCurrentTime => "lap.current_time",
            Metric::LapLastTime => "lap.last_time",
            Metric::SectorTime => "lap.sector_time",
            Metric::RacePosition => "race.position",
            Metric::PitStatus => "pit.status",
            Metric::FuelMass => "fuel.mass",
            Metric::ErsStore => "ers.store_energy",
            Metric::ErsDeploy => "ers.deploy_power",
            Metric::TrackTemp => "track.temperature",
            Metric::AirTemp => "weather.air_temperature",
            Metric::Fps => "client.fps",
            Metric::FrameTime => "client.frame_time",
            Metric::Rtt => "client.rtt",
            Metric::DroppedFrames => "client.dropped_frames",
            Metric::PacketLoss => "client.packet_loss",
        }
    }

    /// The metric's dimension, if it has one: its name and values in index order.
    pub(crate) fn dimension(self) -> Option<(&'static str, &'static [&'static str])> {
        match self {
            Metric::TyreSurfaceTemp | Metric::TyreInnerTemp | Metric::TyrePressure | Metric::TyreWear | Metric::BrakeTemp => Some(("wheel", &WHEELS)),
            Metric::Damage => Some(("part", &PARTS)),
            Metric::SectorTime => Some(("sector", &SECTORS)),
            _ => None,
        }
    }

    /// Booleans travel as JSON booleans, not numbers.
    pub(crate) fn is_bool(self) -> bool {
        matches!(self, Metric::PitStatus)
    }
}

/// One canonical value: a metric, the index of its dimension value (0 without a dimension) and
/// the value in the metric's canonical unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Value {
    pub metric: Metric,
    pub index: u8,
    pub value: f64,
}

impl Value {
    pub(crate) fn new(metric: Metric, value: f64) -> Value {
        Value { metric, index: 0, value }
    }

    pub(crate) fn at(metric: Metric, index: usize, value: f64) -> Value {
        Value { metric, index: index as u8, value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_metric_once_in_declaration_order() {
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(*m as usize, i, "{m:?}");
        }
        let mut ids: Vec<_> = Metric::ALL.iter().map(|m| m.id()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), Metric::COUNT);
    }
}
