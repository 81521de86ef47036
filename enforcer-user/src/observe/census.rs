//! Map pressure: how full each pinned map is, read straight from the pins.
//!
//! Hash and LPM maps are counted by walking their keys (one `BPF_MAP_GET_NEXT_KEY` per entry,
//! values are not read); the table maps are split by the slot their keys carry. Arrays are
//! always full (every index exists), so they report no count; the ring buffer reports its size
//! in bytes. A hash walk that races deletions may restart and count an entry twice, so counts
//! of a changing map (conntrack) are approximate and capped at the map's size.

use std::path::Path;

use aya::maps::{HashMap, LpmTrie, Map, MapData, MapInfo, MapType};
use enforcer_common::{CtKey, CtValue, EndpointKey, EndpointValue, VerdictKey, VerdictValue, maps};
use serde::Serialize;

use crate::datapath::{DatapathError, PinPaths, paths::ALL_MAPS};

/// One map's size and fill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MapStat {
    /// The map's name in the object and pin (`ENFORCER_CONNTRACK`).
    pub name: &'static str,
    /// Metrics label: the name without `ENFORCER_`, lower case (`conntrack`).
    pub short: String,
    /// `hash`, `lru-hash`, `lpm-trie`, `array`, `percpu-array`, `ringbuf`.
    pub kind: String,
    /// Kernel map id.
    pub id: u32,
    pub max_entries: u32,
    /// Entries present (none for arrays, which are always full, and the ring buffer).
    pub entries: Option<u64>,
    /// Entries per table slot, for the slotted policy tables.
    pub slots: Option<[u64; 2]>,
    /// `entries / max_entries`.
    pub fill_ratio: Option<f64>,
}

/// `ENFORCER_PEER_V4` → `peer_v4`.
pub fn short_name(name: &str) -> String {
    name.strip_prefix("ENFORCER_")
        .unwrap_or(name)
        .to_ascii_lowercase()
}

fn kind_name(t: Result<MapType, aya::maps::MapError>) -> String {
    match t {
        Ok(MapType::Hash) => "hash".into(),
        Ok(MapType::LruHash) => "lru-hash".into(),
        Ok(MapType::LpmTrie) => "lpm-trie".into(),
        Ok(MapType::Array) => "array".into(),
        Ok(MapType::PerCpuArray) => "percpu-array".into(),
        Ok(MapType::RingBuf) => "ringbuf".into(),
        Ok(other) => format!("{other:?}").to_ascii_lowercase(),
        Err(_) => "unknown".into(),
    }
}

fn map_err(name: &'static str, op: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |error| DatapathError::Map {
        map: name,
        op,
        error,
    }
}

fn open(name: &'static str, path: &Path) -> Result<Map, DatapathError> {
    let data = MapData::from_pin(path).map_err(|e| DatapathError::OpenPin {
        kind: "map",
        name,
        path: path.to_owned(),
        error: e.to_string(),
    })?;
    Map::from_map_data(data).map_err(|error| DatapathError::MapLayout {
        name,
        path: path.to_owned(),
        error,
    })
}

/// Slot of an LPM key: its first 4 bytes, big-endian.
fn lpm_slot(data: &[u8]) -> usize {
    let s = data
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(u32::MAX, u32::from_be_bytes);
    usize::from(s == 1)
}

fn count_slots<I, E>(
    keys: I,
    slot_of: impl Fn(&E) -> usize,
    cap: u64,
) -> Result<[u64; 2], aya::maps::MapError>
where
    I: Iterator<Item = Result<E, aya::maps::MapError>>,
{
    let mut slots = [0u64; 2];
    for k in keys {
        let k = k?;
        slots[slot_of(&k)] += 1;
        if slots[0] + slots[1] >= cap {
            break;
        }
    }
    Ok(slots)
}

/// The size and fill of one pinned map.
pub fn map_stat(paths: &PinPaths, name: &'static str) -> Result<MapStat, DatapathError> {
    let path = paths.map(name);
    let info = MapInfo::from_pin(&path).map_err(|e| DatapathError::OpenPin {
        kind: "map",
        name,
        path: path.clone(),
        error: e.to_string(),
    })?;
    let max = info.max_entries();
    let cap = u64::from(max).max(1);
    let read = map_err(name, "counting entries");
    let slots: Option<[u64; 2]> = match name {
        maps::ENDPOINTS => {
            let m: HashMap<MapData, EndpointKey, EndpointValue> =
                HashMap::try_from(open(name, &path)?).map_err(&read)?;
            Some(count_slots(m.keys(), |k| usize::from(k.slot == 1), cap).map_err(&read)?)
        }
        maps::VERDICTS => {
            let m: HashMap<MapData, VerdictKey, VerdictValue> =
                HashMap::try_from(open(name, &path)?).map_err(&read)?;
            Some(count_slots(m.keys(), |k| usize::from(k.slot == 1), cap).map_err(&read)?)
        }
        maps::PEER_V4 | maps::PORTS => {
            let m: LpmTrie<MapData, [u8; 8], u32> =
                LpmTrie::try_from(open(name, &path)?).map_err(&read)?;
            Some(count_slots(m.keys(), |k| lpm_slot(&k.data()), cap).map_err(&read)?)
        }
        maps::PEER_V6 => {
            let m: LpmTrie<MapData, [u8; 20], u32> =
                LpmTrie::try_from(open(name, &path)?).map_err(&read)?;
            Some(count_slots(m.keys(), |k| lpm_slot(&k.data()), cap).map_err(&read)?)
        }
        _ => None,
    };
    let entries = match (name, slots) {
        (_, Some([a, b])) => Some(a + b),
        (maps::CONNTRACK, _) => {
            let m: HashMap<MapData, CtKey, CtValue> =
                HashMap::try_from(open(name, &path)?).map_err(&read)?;
            let [n, _] = count_slots(m.keys(), |_| 0, cap).map_err(&read)?;
            Some(n)
        }
        _ => None,
    };
    Ok(MapStat {
        name,
        short: short_name(name),
        kind: kind_name(info.map_type()),
        id: info.id(),
        max_entries: max,
        entries,
        slots,
        fill_ratio: entries.map(|n| n as f64 / f64::from(max.max(1))),
    })
}

/// Every contract map, in pin order.
pub fn census(paths: &PinPaths) -> Result<Vec<MapStat>, DatapathError> {
    ALL_MAPS.iter().map(|n| map_stat(paths, n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_and_slots() {
        assert_eq!(short_name(maps::PEER_V4), "peer_v4");
        assert_eq!(short_name(maps::VERDICT_COUNTERS), "verdict_counters");
        assert_eq!(lpm_slot(&[0, 0, 0, 1, 9]), 1);
        assert_eq!(lpm_slot(&[0, 0, 0, 0, 9]), 0);
        let keys = [Ok::<u32, aya::maps::MapError>(0), Ok(1), Ok(1)];
        let counted = count_slots(keys.into_iter(), |k| *k as usize, 10).ok();
        assert_eq!(counted, Some([1, 2]));
        let capped = count_slots((0..100).map(Ok::<u32, aya::maps::MapError>), |_| 0, 10).ok();
        assert_eq!(capped, Some([10, 0]));
    }
}
