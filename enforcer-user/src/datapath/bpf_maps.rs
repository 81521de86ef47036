//! The pinned maps as typed aya handles, and their [`SlotTable`]/[`ConfigCell`] adapters.

use std::{io, path::Path};

use aya::{
    Pod,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, lpm_trie::Key},
};
use enforcer_common::{
    Config, CtKey, CtValue, EndpointKey, EndpointValue, PeerV4Data, PeerV6Data, PortData,
    VerdictKey, VerdictValue, maps,
};

use super::{
    error::DatapathError,
    paths::{ALL_MAPS, PinPaths},
    tables::{ConfigCell, LpmKey, SlotKey, SlotTable},
};

/// Whether a map error is "no such key" (lookups say `KeyNotFound`, deletes say ENOENT).
pub(crate) fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(s) => s.io_error.kind() == io::ErrorKind::NotFound,
        _ => false,
    }
}

/// Opens a pinned map as the typed handle `T`, returning its kernel id and `max_entries`.
pub(crate) fn open_pinned<T>(
    name: &'static str,
    path: &Path,
) -> Result<(T, u32, u32), DatapathError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let data = MapData::from_pin(path).map_err(|e| DatapathError::OpenPin {
        kind: "map",
        name,
        path: path.to_owned(),
        error: super::error::chain(&e),
    })?;
    let info = data.info().map_err(|error| DatapathError::Map {
        map: name,
        op: "reading map info",
        error,
    })?;
    let layout = |error| DatapathError::MapLayout {
        name,
        path: path.to_owned(),
        error,
    };
    let typed = T::try_from(Map::from_map_data(data).map_err(layout)?).map_err(layout)?;
    Ok((typed, info.id(), info.max_entries()))
}

pub(crate) struct HashTable<K: Pod, V: Pod> {
    name: &'static str,
    max: u32,
    map: HashMap<MapData, K, V>,
}

impl<K: SlotKey + Pod, V: Pod> SlotTable for HashTable<K, V> {
    type Key = K;
    type Value = V;
    fn name(&self) -> &'static str {
        self.name
    }
    fn max_entries(&self) -> usize {
        self.max as usize
    }
    fn keys(&self) -> Result<Vec<K>, MapError> {
        self.map.keys().collect()
    }
    fn entries(&self) -> Result<Vec<(K, V)>, MapError> {
        self.map.iter().collect()
    }
    fn insert(&mut self, key: &K, value: &V) -> Result<(), MapError> {
        self.map.insert(key, value, 0)
    }
    fn remove(&mut self, key: &K) -> Result<(), MapError> {
        match self.map.remove(key) {
            Err(e) if is_not_found(&e) => Ok(()),
            other => other,
        }
    }
}

pub(crate) struct LpmTable<const N: usize> {
    name: &'static str,
    max: u32,
    map: LpmTrie<MapData, [u8; N], u32>,
}

fn lpm_key<const N: usize>(k: &Key<[u8; N]>) -> LpmKey<N> {
    LpmKey {
        prefix_len: k.prefix_len(),
        data: k.data(),
    }
}

impl<const N: usize> SlotTable for LpmTable<N> {
    type Key = LpmKey<N>;
    type Value = u32;
    fn name(&self) -> &'static str {
        self.name
    }
    fn max_entries(&self) -> usize {
        self.max as usize
    }
    fn keys(&self) -> Result<Vec<LpmKey<N>>, MapError> {
        self.map.keys().map(|k| k.map(|k| lpm_key(&k))).collect()
    }
    fn entries(&self) -> Result<Vec<(LpmKey<N>, u32)>, MapError> {
        self.map
            .iter()
            .map(|kv| kv.map(|(k, v)| (lpm_key(&k), v)))
            .collect()
    }
    fn insert(&mut self, key: &LpmKey<N>, value: &u32) -> Result<(), MapError> {
        self.map
            .insert(&Key::new(key.prefix_len, key.data), value, 0)
    }
    fn remove(&mut self, key: &LpmKey<N>) -> Result<(), MapError> {
        match self.map.remove(&Key::new(key.prefix_len, key.data)) {
            Err(e) if is_not_found(&e) => Ok(()),
            other => other,
        }
    }
}

pub(crate) struct ConfigMap(Array<MapData, Config>);

impl ConfigCell for ConfigMap {
    fn get(&self) -> Result<Config, MapError> {
        self.0.get(&0, 0)
    }
    fn set(&mut self, config: &Config) -> Result<(), MapError> {
        self.0.set(0, config, 0)
    }
}

/// Every map of the contract except the ring buffer and the rate limiter (opened on demand).
pub(crate) struct BpfMaps {
    pub config: ConfigMap,
    pub endpoints: HashTable<EndpointKey, EndpointValue>,
    pub peer_v4: LpmTable<8>,
    pub peer_v6: LpmTable<20>,
    pub ports: LpmTable<8>,
    pub verdicts: HashTable<VerdictKey, VerdictValue>,
    pub conntrack: HashMap<MapData, CtKey, CtValue>,
    pub verdict_counters: PerCpuArray<MapData, u64>,
    pub rule_counters: PerCpuArray<MapData, u64>,
    pub staged_counters: PerCpuArray<MapData, u64>,
    /// (map name, kernel map id) of every pinned map.
    pub ids: Vec<(&'static str, u32)>,
}

// The LPM data types are the byte arrays the adapters use.
const _: () = assert!(
    size_of::<PeerV4Data>() == 8 && size_of::<PeerV6Data>() == 20 && size_of::<PortData>() == 8
);

impl BpfMaps {
    pub(crate) fn open(paths: &PinPaths) -> Result<BpfMaps, DatapathError> {
        let p = |name| paths.map(name);
        let (config, ..) = open_pinned(maps::CONFIG, &p(maps::CONFIG))?;
        let (endpoints, _, endpoints_max) = open_pinned(maps::ENDPOINTS, &p(maps::ENDPOINTS))?;
        let (peer_v4, _, peer_v4_max) = open_pinned(maps::PEER_V4, &p(maps::PEER_V4))?;
        let (peer_v6, _, peer_v6_max) = open_pinned(maps::PEER_V6, &p(maps::PEER_V6))?;
        let (ports, _, ports_max) = open_pinned(maps::PORTS, &p(maps::PORTS))?;
        let (verdicts, _, verdicts_max) = open_pinned(maps::VERDICTS, &p(maps::VERDICTS))?;
        let (conntrack, ..) = open_pinned(maps::CONNTRACK, &p(maps::CONNTRACK))?;
        let (verdict_counters, ..) =
            open_pinned(maps::VERDICT_COUNTERS, &p(maps::VERDICT_COUNTERS))?;
        let (rule_counters, ..) = open_pinned(maps::RULE_COUNTERS, &p(maps::RULE_COUNTERS))?;
        let (staged_counters, ..) = open_pinned(maps::STAGED_COUNTERS, &p(maps::STAGED_COUNTERS))?;
        let mut ids = Vec::with_capacity(ALL_MAPS.len());
        for name in ALL_MAPS {
            let path = p(name);
            let info = aya::maps::MapInfo::from_pin(&path).map_err(|e| DatapathError::OpenPin {
                kind: "map",
                name,
                path: path.clone(),
                error: super::error::chain(&e),
            })?;
            ids.push((name, info.id()));
        }
        Ok(BpfMaps {
            config: ConfigMap(config),
            endpoints: HashTable {
                name: maps::ENDPOINTS,
                max: endpoints_max,
                map: endpoints,
            },
            peer_v4: LpmTable {
                name: maps::PEER_V4,
                max: peer_v4_max,
                map: peer_v4,
            },
            peer_v6: LpmTable {
                name: maps::PEER_V6,
                max: peer_v6_max,
                map: peer_v6,
            },
            ports: LpmTable {
                name: maps::PORTS,
                max: ports_max,
                map: ports,
            },
            verdicts: HashTable {
                name: maps::VERDICTS,
                max: verdicts_max,
                map: verdicts,
            },
            conntrack,
            verdict_counters,
            rule_counters,
            staged_counters,
            ids,
        })
    }
}
