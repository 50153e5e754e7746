//! The producing systems ([`Source`]), the subject each one produces, and the source mix of a
//! command line ([`parse_mix`]).

use std::str::FromStr;

use crate::LoadError;

/// A producing system; each produces one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// The web shop: `com.riffle.shop.OrderPlaced`.
    ShopWeb,
    /// The app shop: `com.riffle.shop.OrderPlaced`.
    ShopApp,
    /// The web site: `com.riffle.web.PageView`.
    Web,
    /// The IoT gateway: `com.riffle.iot.SensorReading`.
    IotGateway,
}

/// The payload subjects, in the order of [`Generator`](super::Generator)'s subject table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SubjectKind {
    Order = 0,
    PageView = 1,
    Sensor = 2,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 4] = [
        Source::ShopWeb,
        Source::ShopApp,
        Source::Web,
        Source::IotGateway,
    ];

    /// The name written into the envelope's `source`.
    pub fn name(self) -> &'static str {
        match self {
            Source::ShopWeb => "shop-web",
            Source::ShopApp => "shop-app",
            Source::Web => "web",
            Source::IotGateway => "iot-gateway",
        }
    }

    /// The registry subject of the payloads this source produces.
    pub fn subject(self) -> &'static str {
        match self.kind() {
            SubjectKind::Order => "com.riffle.shop.OrderPlaced",
            SubjectKind::PageView => "com.riffle.web.PageView",
            SubjectKind::Sensor => "com.riffle.iot.SensorReading",
        }
    }

    pub(super) fn kind(self) -> SubjectKind {
        match self {
            Source::ShopWeb | Source::ShopApp => SubjectKind::Order,
            Source::Web => SubjectKind::PageView,
            Source::IotGateway => SubjectKind::Sensor,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Source {
    type Err = LoadError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Source::ALL
            .into_iter()
            .find(|src| src.name() == s)
            .ok_or_else(|| LoadError::Config(format!("unknown source `{s}`")))
    }
}

/// Parses a source mix such as `shop-web=3,shop-app=1,web=4,iot-gateway` (weight 1 if left
/// out), for command lines.
///
/// # Errors
/// [`LoadError::Config`] for an unknown source, a bad weight, or an empty mix.
pub fn parse_mix(spec: &str) -> Result<Vec<(Source, u32)>, LoadError> {
    let mix = spec
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
            let weight = weight
                .trim()
                .parse::<u32>()
                .map_err(|e| LoadError::Config(format!("weight of `{name}`: {e}")))?;
            Ok((name.trim().parse::<Source>()?, weight))
        })
        .collect::<Result<Vec<_>, LoadError>>()?;
    if mix.iter().all(|(_, w)| *w == 0) {
        return Err(LoadError::Config(format!("empty source mix `{spec}`")));
    }
    Ok(mix)
}
