//! The slot/generation protocol of `enforcer-common`, over an abstract set of tables so it can
//! be tested without BPF (the real maps implement the same traits in `bpf_maps.rs`).
//!
//! Programming a new policy ([`program`]). Both slots stay resident: after a flip the old
//! slot is kept, and the next write turns it into the new tables by changing only the entries
//! that differ. The writer remembers what each slot holds ([`SlotState`], slot-independent),
//! so a write costs syscalls for the changed entries only (plus O(entries) userspace work to
//! compare them):
//! 1. read `CONFIG` (active slot `s`, generation `g`); the target is the inactive slot `1 - s`;
//! 2. if the memory of the slots is missing or stale (a new handle, or `CONFIG` is not the
//!    slot and generation this writer left: another writer flipped), read both slots back
//!    from the maps (one pass over each map);
//! 3. if the new tables equal the active slot's, with the same table flags, return
//!    `unchanged`: nothing written, no flip, no generation bump (unless the last generation
//!    bump failed: then flip and bump anyway);
//! 4. check capacity: the new entries plus the active slot's must fit each map;
//! 5. wait until the grace period since this writer's last flip has passed (packets that read
//!    the old `active_slot` finish their lookups in what is now the target slot; the whole
//!    grace period if the last flip is unknown);
//! 6. in the target slot, delete the keys the new tables lack (first, so a map never holds
//!    more than new + active), then insert or update the entries whose value differs. On any
//!    error undo what was done (re-insert, restore old values, delete inserts) and return it:
//!    `CONFIG` was not touched, so the old policy stays in force; if the undo fails too, the
//!    target slot is marked unknown and the next write reads it back;
//! 7. flip, in the order `docs/datapath-kernel.md` ("The flip and torn reads") requires,
//!    since the kernel copies `CONFIG` with a plain `memcpy` while programs read
//!    `active_slot` and `generation` with one 8-byte load and `flags` with another:
//!    - (a) only if the new tables need a table flag the old ones lack (`CONFIG_SRC_PORTS`):
//!      `{s, g, old flags | new table flags}` (table flags are set early: with the per-slot
//!      source-port catch-all the old tables answer class 0, as if unset);
//!    - (b) `{1 - s, g, same flags}`: the flip proper; one byte changes, so no packet sees a
//!      torn slot: new flows use the new tables from here on;
//!    - (c) `{1 - s, g + 1, new flags}`: the generation bump (established flows are re-checked
//!      against the new tables); table flags the new tables no longer need are cleared late.
//!
//! The old slot is not deleted: it is the base of the next write.
//!
//! If (a) or (b) fails, the previous `CONFIG` is restored and the target slot's changes are
//! undone: the old policy stays in force. If (c) fails, the new tables are active for new
//! flows but existing flows keep their old verdicts until the next successful write (which
//! flips and bumps even for unchanged tables); the error says so.
//!
//! The inactive slot lags two writes behind: after writes A, B, C, writing D into the slot
//! that holds B changes what differs between B and D (the changes of C and D). The first write
//! into a slot that held nothing (after a fresh load) writes everything.
//!
//! The memory is trusted while `CONFIG` shows the slot and generation this writer left. A
//! second writer that changes the inactive slot without flipping (one that crashed half-way
//! through a write while this one runs) is not detected; `Datapath` serialises writers with a
//! `flock` and one process (the agent) should write. A failing writer undoes its changes.
//!
//! Cost: one syscall per entry written or deleted (aya 0.14 has no batch map operations),
//! plus, once per handle, one pass reading both slots back; and O(entries) userspace work to
//! compare the new tables with the slots. Full writes measured on the 2-core lab machine
//! (release build): 12.5k entries 0.06–0.11 s, 125k 0.6–1.3 s, 250k 1.3–1.8 s.

use std::{
    collections::HashMap,
    hash::Hash,
    thread,
    time::{Duration, Instant},
};

use aya::maps::MapError;
use enforcer_common::{
    CONFIG_FAIL_CLOSED, CONFIG_SRC_PORTS, Config, EndpointKey, EndpointValue, MAX_ENDPOINTS,
    MAX_PEER_PREFIXES, MAX_PORT_PREFIXES, MAX_VERDICTS, PEER_KEY_FIXED_BITS, PORT_KIND_DST,
    PORT_KIND_SRC, VerdictKey, VerdictValue, maps,
};
use serde::Serialize;

use super::error::DatapathError;
use crate::compile::{LpmEntry, MapEntries};

/// `CONFIG.flags` bits that belong to a table set (written with the flip), as opposed to
/// operator settings such as `CONFIG_FAIL_CLOSED` (kept across flips).
pub const TABLE_FLAGS: u32 = CONFIG_SRC_PORTS;

/// Per-map entry limits checked before writing (both slots together). The effective limit is
/// the smaller of this and the map's own `max_entries`; tests shrink it to exercise the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub endpoints: u32,
    pub peer_v4: u32,
    pub peer_v6: u32,
    pub ports: u32,
    pub verdicts: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            endpoints: MAX_ENDPOINTS,
            peer_v4: MAX_PEER_PREFIXES,
            peer_v6: MAX_PEER_PREFIXES,
            ports: MAX_PORT_PREFIXES,
            verdicts: MAX_VERDICTS,
        }
    }
}

/// A key carrying a table slot.
pub trait SlotKey: Copy + Eq + Hash {
    fn slot(&self) -> u32;
    fn with_slot(self, slot: u32) -> Self;
}

impl SlotKey for EndpointKey {
    fn slot(&self) -> u32 {
        self.slot
    }
    fn with_slot(self, slot: u32) -> Self {
        EndpointKey { slot, ..self }
    }
}

impl SlotKey for VerdictKey {
    fn slot(&self) -> u32 {
        self.slot
    }
    fn with_slot(self, slot: u32) -> Self {
        VerdictKey { slot, ..self }
    }
}

/// An LPM trie key: the prefix length and the data, whose first 4 bytes are the slot
/// (big-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LpmKey<const N: usize> {
    pub prefix_len: u32,
    pub data: [u8; N],
}

impl<const N: usize> SlotKey for LpmKey<N> {
    fn slot(&self) -> u32 {
        let mut s = [0u8; 4];
        if let Some(head) = self.data.get(..4) {
            s.copy_from_slice(head);
        }
        u32::from_be_bytes(s)
    }
    fn with_slot(mut self, slot: u32) -> Self {
        if let Some(head) = self.data.get_mut(..4) {
            head.copy_from_slice(&slot.to_be_bytes());
        }
        self
    }
}

/// One slotted map.
pub trait SlotTable {
    type Key: SlotKey;
    type Value: Copy;
    fn name(&self) -> &'static str;
    /// The map's `max_entries`.
    fn max_entries(&self) -> usize;
    fn keys(&self) -> Result<Vec<Self::Key>, MapError>;
    #[allow(clippy::type_complexity, reason = "a plain list of pairs")]
    fn entries(&self) -> Result<Vec<(Self::Key, Self::Value)>, MapError>;
    fn insert(&mut self, key: &Self::Key, value: &Self::Value) -> Result<(), MapError>;
    /// Removes a key; a missing key is not an error.
    fn remove(&mut self, key: &Self::Key) -> Result<(), MapError>;
}

/// The `CONFIG` map's single entry.
pub trait ConfigCell {
    fn get(&self) -> Result<Config, MapError>;
    fn set(&mut self, config: &Config) -> Result<(), MapError>;
}

pub type Lpm8Table = dyn SlotTable<Key = LpmKey<8>, Value = u32>;
pub type Lpm20Table = dyn SlotTable<Key = LpmKey<20>, Value = u32>;

/// The tables a policy is written to, and what the writer knows they hold.
pub struct Tables<'a> {
    pub config: &'a mut dyn ConfigCell,
    pub endpoints: &'a mut dyn SlotTable<Key = EndpointKey, Value = EndpointValue>,
    pub peer_v4: &'a mut Lpm8Table,
    pub peer_v6: &'a mut Lpm20Table,
    pub ports: &'a mut Lpm8Table,
    pub verdicts: &'a mut dyn SlotTable<Key = VerdictKey, Value = VerdictValue>,
    /// The writer's memory of both slots, kept between calls.
    pub known: &'a mut SlotState,
}

/// What one slot holds, slot-independent (every key re-slotted to 0), as maps so that two
/// contents compare and diff in O(entries) whatever order they were rendered or read in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlotContents {
    pub endpoints: HashMap<EndpointKey, EndpointValue>,
    pub peer_v4: HashMap<LpmKey<8>, u32>,
    pub peer_v6: HashMap<LpmKey<20>, u32>,
    pub ports: HashMap<LpmKey<8>, u32>,
    pub verdicts: HashMap<VerdictKey, VerdictValue>,
}

impl SlotContents {
    /// Entries over all maps.
    pub fn len(&self) -> usize {
        self.endpoints.len()
            + self.peer_v4.len()
            + self.peer_v6.len()
            + self.ports.len()
            + self.verdicts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `entries` re-slotted to 0 (duplicate keys: the last one wins, as the map would have
    /// it); LPM prefixes shorter than the slot field are refused.
    pub fn from_entries(entries: &MapEntries) -> Result<Self, DatapathError> {
        Ok(SlotContents {
            endpoints: slot0(&entries.endpoints),
            peer_v4: lpm_keys(maps::PEER_V4, &entries.peer_v4)?
                .into_iter()
                .map(|(k, v)| (k.with_slot(0), v))
                .collect(),
            peer_v6: lpm_keys(maps::PEER_V6, &entries.peer_v6)?
                .into_iter()
                .map(|(k, v)| (k.with_slot(0), v))
                .collect(),
            ports: lpm_keys(maps::PORTS, &entries.ports)?
                .into_iter()
                .map(|(k, v)| (k.with_slot(0), v))
                .collect(),
            verdicts: slot0(&entries.verdicts),
        })
    }
}

/// Keys (slot 0) in which the two slots differ, per map.
#[derive(Debug, Default, Clone)]
struct SlotDelta {
    endpoints: Vec<EndpointKey>,
    peer_v4: Vec<LpmKey<8>>,
    peer_v6: Vec<LpmKey<20>>,
    ports: Vec<LpmKey<8>>,
    verdicts: Vec<VerdictKey>,
}

/// `map` re-slotted to 0 (a copy without rehashing when it already is).
fn slot0<K: SlotKey, V: Copy>(map: &HashMap<K, V>) -> HashMap<K, V> {
    if map.keys().all(|k| k.slot() == 0) {
        map.clone()
    } else {
        map.iter().map(|(k, v)| (k.with_slot(0), *v)).collect()
    }
}

/// What [`program`] knows of both slots between calls: both stay resident, so the next write
/// into the inactive slot only has to change what differs from what it holds.
///
/// The memory is trusted only while `CONFIG` still shows the slot and generation this writer
/// left; any other change (another writer's flip) makes both slots unknown and the next call
/// reads them back from the maps. A slot is also unknown (`None`) while it is being written,
/// so a write that fails and cannot be undone is re-read next time.
#[derive(Debug, Default, Clone)]
pub struct SlotState {
    /// `(active_slot, generation)` of `CONFIG` when `contents` was last known to be true.
    config: Option<(u32, u32)>,
    contents: [Option<SlotContents>; 2],
    /// The keys in which the two slots differ (what the last write changed relative to the
    /// slot it left), when both are known: the next write only has to look at these and at
    /// its own changes. `None` after a read-back: the next write compares in full.
    delta: Option<SlotDelta>,
    /// The last flip failed at the generation bump: the next call must flip (and bump) even
    /// if the tables are unchanged.
    bump_pending: bool,
    /// When this writer last flipped: the slot it left is not rewritten before the grace
    /// period has passed (packets that read the old `active_slot` may still look it up).
    last_flip: Option<Instant>,
}

impl SlotState {
    /// Forgets both slots (the next [`program`] reads them back from the maps).
    pub fn forget(&mut self) {
        *self = SlotState::default();
    }

    /// What `slot` holds, if known.
    pub fn contents(&self, slot: u32) -> Option<&SlotContents> {
        self.contents.get(slot as usize).and_then(Option::as_ref)
    }
}

/// What one map saw during [`program`] (in the slot written, the previously inactive one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapWrite {
    pub map: &'static str,
    /// Entries inserted or updated (keys whose value already matched are not written).
    pub written: usize,
    /// Entries deleted: keys the slot held that the new tables lack (including leftovers of
    /// an interrupted earlier write, when the slot was read back).
    pub deleted: usize,
    /// Entries of the new tables (the slot's size after the write).
    pub entries: usize,
}

/// The outcome of a successful [`program`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgramReport {
    pub previous: ConfigView,
    /// `CONFIG` after the write (equal to `previous` when `unchanged`).
    pub config: ConfigView,
    pub maps: Vec<MapWrite>,
    /// Entries inserted or updated, over all maps.
    pub written: usize,
    /// Entries deleted, over all maps.
    pub deleted: usize,
    /// The new tables equal the active slot's (and its table flags): nothing was written, no
    /// flip, no generation bump.
    pub unchanged: bool,
    /// The slots' contents were unknown (first write of this process, or another writer
    /// flipped) and were read back from the maps first.
    pub read_back: bool,
    /// Per-slot catch-all entries the tables lack (see [`missing_catch_alls`]).
    pub missing_catch_alls: Vec<&'static str>,
    #[serde(skip)]
    pub elapsed: Duration,
}

/// The per-slot catch-alls `docs/datapath-kernel.md` expects userspace to install and that
/// `entries` lacks: without them a trie miss denies the flow (`REASON_DENY_NO_VERDICT`).
/// Written anyway (a table set may deny on purpose), but reported and logged.
pub fn missing_catch_alls(entries: &MapEntries) -> Vec<&'static str> {
    let mut out = Vec::new();
    if entries.endpoints.is_empty() {
        return out;
    }
    if !entries
        .peer_v4
        .iter()
        .any(|e| e.prefix_len == PEER_KEY_FIXED_BITS)
    {
        out.push("PEER_V4 prefix length 32 (slot only)");
    }
    if !entries
        .peer_v6
        .iter()
        .any(|e| e.prefix_len == PEER_KEY_FIXED_BITS)
    {
        out.push("PEER_V6 prefix length 32 (slot only)");
    }
    let port_catch_all = |kind: u8| {
        entries
            .ports
            .iter()
            .any(|e| e.prefix_len == PORT_CATCH_ALL_BITS && e.data[4] == kind)
    };
    if !port_catch_all(PORT_KIND_DST) {
        out.push("PORTS prefix length 40 (slot and PORT_KIND_DST)");
    }
    if entries.config_flags & CONFIG_SRC_PORTS != 0 && !port_catch_all(PORT_KIND_SRC) {
        out.push("PORTS prefix length 40 (slot and PORT_KIND_SRC)");
    }
    out
}

/// Bits of a `PORTS` catch-all: the slot and the kind byte.
const PORT_CATCH_ALL_BITS: u32 = 40;

/// `Config` without padding, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConfigView {
    pub active_slot: u32,
    pub generation: u32,
    pub flags: u32,
    pub fail_closed: bool,
    pub src_ports: bool,
}

impl From<Config> for ConfigView {
    fn from(c: Config) -> Self {
        ConfigView {
            active_slot: c.active_slot,
            generation: c.generation,
            flags: c.flags,
            fail_closed: c.flags & CONFIG_FAIL_CLOSED != 0,
            src_ports: c.flags & CONFIG_SRC_PORTS != 0,
        }
    }
}

fn map_err(map: &'static str, op: &'static str) -> impl FnOnce(MapError) -> DatapathError {
    move |error| DatapathError::Map { map, op, error }
}

pub(crate) fn read_config(config: &dyn ConfigCell) -> Result<Config, DatapathError> {
    let c = config
        .get()
        .map_err(map_err(maps::CONFIG, "reading index 0"))?;
    if c.active_slot > 1 {
        return Err(DatapathError::CorruptConfig {
            active_slot: c.active_slot,
        });
    }
    Ok(c)
}

/// One map's part of a write, type-erased so the steps can loop over all maps.
trait Step {
    fn name(&self) -> &'static str;
    fn new_len(&self) -> usize;
    fn active_len(&self) -> usize;
    fn max(&self) -> usize;
    /// The new tables equal the active slot's in this map.
    fn unchanged(&self) -> bool;
    /// Deletes the keys the new tables lack (first, so the map never holds more than
    /// `active + new` entries).
    fn delete(&mut self) -> Result<(), MapError>;
    /// Inserts and updates.
    fn upsert(&mut self) -> Result<(), MapError>;
    /// Undoes what `delete` and `upsert` did, newest first; returns whether all of it went.
    fn undo(&mut self) -> bool;
    fn report(&self) -> MapWrite;
}

/// (slot-0 key, new value, old value if the key was there).
type Upsert<T> = (
    <T as SlotTable>::Key,
    <T as SlotTable>::Value,
    Option<<T as SlotTable>::Value>,
);

/// One map's entries per slot (keys re-slotted to 0).
type BySlot<T> = [HashMap<<T as SlotTable>::Key, <T as SlotTable>::Value>; 2];

struct Plan<'t, T: SlotTable + ?Sized> {
    table: &'t mut T,
    limit: usize,
    target: u32,
    new_len: usize,
    active_len: usize,
    /// Keys (slot 0) in which the new tables differ from the active slot's.
    changed: Vec<T::Key>,
    /// (slot-0 key, old value) to delete.
    deletes: Vec<(T::Key, T::Value)>,
    /// (slot-0 key, new value, old value if the key was there).
    upserts: Vec<Upsert<T>>,
    deleted: usize,
    written: usize,
}

impl<'t, T> Plan<'t, T>
where
    T: SlotTable + ?Sized,
    T::Value: PartialEq,
{
    /// `lag`: the keys in which `inactive` differs from `active`, if known; then only those
    /// and the keys this write changes are compared with `inactive` (elsewhere it equals
    /// `active`, which equals `new`). Otherwise `inactive` is compared in full.
    fn new(
        table: &'t mut T,
        limit: u32,
        new: &HashMap<T::Key, T::Value>,
        inactive: &HashMap<T::Key, T::Value>,
        active: &HashMap<T::Key, T::Value>,
        lag: Option<&[T::Key]>,
        target: u32,
    ) -> Self {
        let mut changed = Vec::new();
        let mut common = 0;
        for (k, v) in new {
            match active.get(k) {
                Some(old) if old == v => common += 1,
                Some(_) => {
                    common += 1;
                    changed.push(*k);
                }
                None => changed.push(*k),
            }
        }
        if common < active.len() {
            changed.extend(active.keys().filter(|k| !new.contains_key(k)).copied());
        }
        let mut deletes = Vec::new();
        let mut upserts = Vec::new();
        let mut consider = |k: &T::Key| match (inactive.get(k), new.get(k)) {
            (Some(old), None) => deletes.push((*k, *old)),
            (old, Some(v)) if old != Some(v) => upserts.push((*k, *v, old.copied())),
            _ => {}
        };
        match lag {
            Some(lag) => {
                let keys: std::collections::HashSet<&T::Key> =
                    lag.iter().chain(changed.iter()).collect();
                keys.into_iter().for_each(&mut consider);
            }
            None => {
                inactive
                    .keys()
                    .filter(|k| !new.contains_key(k))
                    .for_each(&mut consider);
                new.keys().for_each(&mut consider);
            }
        }
        let limit = (limit as usize).min(table.max_entries());
        Plan {
            table,
            limit,
            target,
            new_len: new.len(),
            active_len: active.len(),
            changed,
            deletes,
            upserts,
            deleted: 0,
            written: 0,
        }
    }
}

impl<T: SlotTable + ?Sized> Step for Plan<'_, T> {
    fn name(&self) -> &'static str {
        self.table.name()
    }
    fn new_len(&self) -> usize {
        self.new_len
    }
    fn active_len(&self) -> usize {
        self.active_len
    }
    fn max(&self) -> usize {
        self.limit
    }
    fn unchanged(&self) -> bool {
        self.changed.is_empty()
    }
    fn delete(&mut self) -> Result<(), MapError> {
        for (k, _) in &self.deletes {
            self.table.remove(&k.with_slot(self.target))?;
            self.deleted += 1;
        }
        Ok(())
    }
    fn upsert(&mut self) -> Result<(), MapError> {
        for (k, v, _) in &self.upserts {
            self.table.insert(&k.with_slot(self.target), v)?;
            self.written += 1;
        }
        Ok(())
    }
    fn undo(&mut self) -> bool {
        let mut ok = true;
        let name = self.table.name();
        let mut check = |r: Result<(), MapError>| {
            if let Err(e) = r {
                tracing::warn!(map = name, error = %e, "rollback: cannot restore an entry of the inactive slot");
                ok = false;
            }
        };
        for (k, _, old) in self.upserts.iter().take(self.written).rev() {
            let k = k.with_slot(self.target);
            check(match old {
                Some(v) => self.table.insert(&k, v),
                None => self.table.remove(&k),
            });
        }
        for (k, v) in self.deletes.iter().take(self.deleted).rev() {
            check(self.table.insert(&k.with_slot(self.target), v));
        }
        self.written = 0;
        self.deleted = 0;
        ok
    }
    fn report(&self) -> MapWrite {
        MapWrite {
            map: self.table.name(),
            written: self.written,
            deleted: self.deleted,
            entries: self.new_len,
        }
    }
}

/// Splits a map's entries into the two slots, re-slotted to 0. Keys of any other slot value
/// (no writer puts them there) are ignored.
fn split_slots<K: SlotKey, V: Copy>(entries: Vec<(K, V)>) -> [HashMap<K, V>; 2] {
    let mut out = [HashMap::new(), HashMap::new()];
    for (k, v) in entries {
        if let Some(slot) = out.get_mut(k.slot() as usize) {
            slot.insert(k.with_slot(0), v);
        }
    }
    out
}

/// Reads both slots back from the maps (one pass over each map).
fn read_back_slots(t: &Tables<'_>) -> Result<[SlotContents; 2], DatapathError> {
    fn all<T: SlotTable + ?Sized>(table: &T) -> Result<BySlot<T>, DatapathError> {
        Ok(split_slots(
            table
                .entries()
                .map_err(map_err(table.name(), "reading entries back"))?,
        ))
    }
    let [e0, e1] = all(&*t.endpoints)?;
    let [v40, v41] = all(&*t.peer_v4)?;
    let [v60, v61] = all(&*t.peer_v6)?;
    let [p0, p1] = all(&*t.ports)?;
    let [d0, d1] = all(&*t.verdicts)?;
    Ok([
        SlotContents {
            endpoints: e0,
            peer_v4: v40,
            peer_v6: v60,
            ports: p0,
            verdicts: d0,
        },
        SlotContents {
            endpoints: e1,
            peer_v4: v41,
            peer_v6: v61,
            ports: p1,
            verdicts: d1,
        },
    ])
}

fn lpm_keys<const N: usize>(
    map: &'static str,
    entries: &[LpmEntry<[u8; N]>],
) -> Result<Vec<(LpmKey<N>, u32)>, DatapathError> {
    let max_bits = 8 * N as u32;
    entries
        .iter()
        .map(|e| {
            // A prefix shorter than the slot field would match both slots.
            if e.prefix_len < PEER_KEY_FIXED_BITS || e.prefix_len > max_bits {
                return Err(DatapathError::InvalidEntry {
                    map,
                    detail: format!(
                        "prefix length {} outside {PEER_KEY_FIXED_BITS}..={max_bits} (the first \
                         {PEER_KEY_FIXED_BITS} bits are the slot)",
                        e.prefix_len
                    ),
                });
            }
            Ok((
                LpmKey {
                    prefix_len: e.prefix_len,
                    data: e.data,
                },
                e.class,
            ))
        })
        .collect()
}

/// Writes `entries` (whatever slot they were rendered for) into the inactive slot, changing
/// only what differs from what that slot holds, and flips to it; see the module docs for the
/// steps and the failure guarantees.
pub fn program(
    t: Tables<'_>,
    entries: &MapEntries,
    limits: &Limits,
    grace: Duration,
) -> Result<ProgramReport, DatapathError> {
    let start = Instant::now();
    let previous = read_config(t.config)?;
    let s = previous.active_slot;
    let target = 1 - s;

    let missing = missing_catch_alls(entries);
    if !missing.is_empty() {
        tracing::warn!(
            ?missing,
            "the new tables lack per-slot catch-alls: flows that miss them are denied \
             (DENY_NO_VERDICT)"
        );
    }
    let new = SlotContents::from_entries(entries)?;
    let table_flags = entries.config_flags & TABLE_FLAGS;

    // What both slots hold: the writer's memory if CONFIG is as it left it, else the maps.
    if t.known.config != Some((s, previous.generation)) {
        let bump_pending = t.known.bump_pending && t.known.config.is_some_and(|(a, _)| a == s);
        t.known.forget();
        t.known.bump_pending = bump_pending;
    }
    let read_back = t.known.contents.iter().any(Option::is_none);
    if read_back {
        let [c0, c1] = read_back_slots(&t)?;
        t.known.contents = [Some(c0), Some(c1)];
        t.known.config = Some((s, previous.generation));
        t.known.delta = None;
    }
    // Taken out of the memory (no copy); every return path below puts back what holds.
    let (s_index, target_index) = (s as usize, target as usize);
    let (Some(active), Some(inactive)) = (
        t.known.contents[s_index].take(),
        t.known.contents[target_index].take(),
    ) else {
        unreachable!("both slots are known here")
    };

    let report = |config: Config, maps: Vec<MapWrite>, unchanged: bool| ProgramReport {
        previous: previous.into(),
        config: config.into(),
        written: maps.iter().map(|m| m.written).sum(),
        deleted: maps.iter().map(|m| m.deleted).sum(),
        maps,
        unchanged,
        read_back,
        missing_catch_alls: missing.clone(),
        elapsed: start.elapsed(),
    };

    let Tables {
        config: config_cell,
        endpoints,
        peer_v4,
        peer_v6,
        ports,
        verdicts,
        known,
    } = t;
    let lag = known.delta.take();
    let mut p_endpoints = Plan::new(
        endpoints,
        limits.endpoints,
        &new.endpoints,
        &inactive.endpoints,
        &active.endpoints,
        lag.as_ref().map(|d| &d.endpoints[..]),
        target,
    );
    let mut p_peer_v4 = Plan::new(
        peer_v4,
        limits.peer_v4,
        &new.peer_v4,
        &inactive.peer_v4,
        &active.peer_v4,
        lag.as_ref().map(|d| &d.peer_v4[..]),
        target,
    );
    let mut p_peer_v6 = Plan::new(
        peer_v6,
        limits.peer_v6,
        &new.peer_v6,
        &inactive.peer_v6,
        &active.peer_v6,
        lag.as_ref().map(|d| &d.peer_v6[..]),
        target,
    );
    let mut p_ports = Plan::new(
        ports,
        limits.ports,
        &new.ports,
        &inactive.ports,
        &active.ports,
        lag.as_ref().map(|d| &d.ports[..]),
        target,
    );
    let mut p_verdicts = Plan::new(
        verdicts,
        limits.verdicts,
        &new.verdicts,
        &inactive.verdicts,
        &active.verdicts,
        lag.as_ref().map(|d| &d.verdicts[..]),
        target,
    );
    let mut steps: [&mut dyn Step; 5] = [
        &mut p_endpoints,
        &mut p_peer_v4,
        &mut p_peer_v6,
        &mut p_ports,
        &mut p_verdicts,
    ];

    if steps.iter().all(|step| step.unchanged())
        && previous.flags & TABLE_FLAGS == table_flags
        && !known.bump_pending
    {
        let maps = steps.iter().map(|step| step.report()).collect();
        known.contents[s_index] = Some(active);
        known.contents[target_index] = Some(inactive);
        known.delta = lag;
        return Ok(report(previous, maps, true));
    }

    // Both slots are resident: the new tables plus the active ones must fit. Deletes go
    // first, so the map never holds more than that.
    let over = steps
        .iter()
        .find(|step| step.new_len() + step.active_len() > step.max())
        .map(|step| DatapathError::Capacity {
            map: step.name(),
            needed: step.new_len(),
            in_active: step.active_len(),
            max: step.max(),
        });
    if let Some(err) = over {
        known.contents[s_index] = Some(active);
        known.contents[target_index] = Some(inactive);
        known.delta = lag;
        return Err(err);
    }

    // Packets that read the old active_slot before this writer's last flip may still be
    // looking the target slot up.
    // Unknown (a new handle, or another writer flipped): wait the whole grace period once.
    let wait = known
        .last_flip
        .map_or(grace, |flipped| grace.saturating_sub(flipped.elapsed()));
    if !wait.is_zero() {
        thread::sleep(wait);
    }

    // The target slot is unknown (`None`) while it changes: a failure that cannot be undone
    // leaves it so, and the next call reads it back.
    let undo_all = |steps: &mut [&mut dyn Step]| -> bool {
        let mut ok = true;
        for step in steps.iter_mut().rev() {
            ok &= step.undo();
        }
        ok
    };
    let mut failed = None;
    'apply: for phase in 0..2 {
        for step in steps.iter_mut() {
            let r = if phase == 0 {
                step.delete()
            } else {
                step.upsert()
            };
            if let Err(error) = r {
                failed = Some((step.name(), error));
                break 'apply;
            }
        }
    }
    if let Some((map, error)) = failed {
        let cleanup_failed = !undo_all(&mut steps);
        known.contents[s_index] = Some(active);
        if !cleanup_failed {
            known.contents[target_index] = Some(inactive);
            known.delta = lag;
        }
        return Err(DatapathError::Write {
            map,
            cleanup_failed,
            error,
        });
    }

    let early_flags = previous.flags | table_flags;
    let config = Config {
        active_slot: target,
        generation: previous.generation.wrapping_add(1),
        flags: (previous.flags & !TABLE_FLAGS) | table_flags,
        _pad: 0,
    };
    let mut pre_flip = Vec::with_capacity(2);
    if early_flags != previous.flags {
        pre_flip.push(Config {
            flags: early_flags,
            ..previous
        });
    }
    pre_flip.push(Config {
        active_slot: target,
        flags: early_flags,
        ..previous
    });
    for c in &pre_flip {
        if let Err(error) = config_cell.set(c) {
            // The failed update did not happen; undo an earlier one, if any.
            let config_restored = config_cell.set(&previous).is_ok();
            let undone = undo_all(&mut steps);
            known.contents[s_index] = Some(active);
            if undone {
                known.contents[target_index] = Some(inactive);
                known.delta = lag;
            }
            let cleanup_failed = !(config_restored && undone);
            if !config_restored {
                // CONFIG may not be what this writer believes: re-read everything next time.
                known.config = None;
            }
            return Err(DatapathError::Write {
                map: maps::CONFIG,
                cleanup_failed,
                error,
            });
        }
    }
    known.last_flip = Some(Instant::now());
    let maps: Vec<MapWrite> = steps.iter().map(|s| s.report()).collect();
    // The slots now differ where this write changed the tables.
    known.delta = Some(SlotDelta {
        endpoints: p_endpoints.changed,
        peer_v4: p_peer_v4.changed,
        peer_v6: p_peer_v6.changed,
        ports: p_ports.changed,
        verdicts: p_verdicts.changed,
    });
    known.contents[s_index] = Some(active);
    known.contents[target_index] = Some(new);
    if let Err(error) = config_cell.set(&config) {
        // Flipped, not bumped: the next call must bump even for unchanged tables.
        known.config = Some((target, previous.generation));
        known.bump_pending = true;
        return Err(DatapathError::GenerationBump {
            slot: target,
            generation: previous.generation,
            error,
        });
    }
    known.config = Some((target, config.generation));
    known.bump_pending = false;
    Ok(report(config, maps, false))
}

/// Sets operator flags without touching the tables: one `CONFIG` update keeping the slot and
/// generation.
pub fn set_flags(
    config: &mut dyn ConfigCell,
    fail_closed: bool,
    src_ports: bool,
) -> Result<Config, DatapathError> {
    let mut c = read_config(config)?;
    let mut flags = c.flags & !(CONFIG_FAIL_CLOSED | CONFIG_SRC_PORTS);
    if fail_closed {
        flags |= CONFIG_FAIL_CLOSED;
    }
    if src_ports {
        flags |= CONFIG_SRC_PORTS;
    }
    c.flags = flags;
    config
        .set(&c)
        .map_err(map_err(maps::CONFIG, "writing index 0"))?;
    Ok(c)
}

fn lpm_entries<const N: usize>(
    table: &dyn SlotTable<Key = LpmKey<N>, Value = u32>,
    slot: u32,
) -> Result<Vec<LpmEntry<[u8; N]>>, DatapathError> {
    let mut out: Vec<LpmEntry<[u8; N]>> = table
        .entries()
        .map_err(map_err(table.name(), "reading entries"))?
        .into_iter()
        .filter(|(k, _)| k.slot() == slot)
        .map(|(k, class)| LpmEntry {
            prefix_len: k.prefix_len,
            data: k.data,
            class,
        })
        .collect();
    out.sort_by_key(|e| (e.data, e.prefix_len));
    Ok(out)
}

/// The entries of one slot as they are in the maps (`config_flags`: the table flags of the
/// current `CONFIG`, meaningful for the active slot).
pub fn read_slot(
    config: &dyn ConfigCell,
    endpoints: &dyn SlotTable<Key = EndpointKey, Value = EndpointValue>,
    peer_v4: &Lpm8Table,
    peer_v6: &Lpm20Table,
    ports: &Lpm8Table,
    verdicts: &dyn SlotTable<Key = VerdictKey, Value = VerdictValue>,
    slot: u32,
) -> Result<MapEntries, DatapathError> {
    let c = read_config(config)?;
    Ok(MapEntries {
        slot,
        config_flags: c.flags & TABLE_FLAGS,
        endpoints: endpoints
            .entries()
            .map_err(map_err(endpoints.name(), "reading entries"))?
            .into_iter()
            .filter(|(k, _)| k.slot == slot)
            .collect(),
        peer_v4: lpm_entries(peer_v4, slot)?,
        peer_v6: lpm_entries(peer_v6, slot)?,
        ports: lpm_entries(ports, slot)?,
        verdicts: verdicts
            .entries()
            .map_err(map_err(verdicts.name(), "reading entries"))?
            .into_iter()
            .filter(|(k, _)| k.slot == slot)
            .collect(),
    })
}

/// In-memory tables for testing the protocol without BPF.
#[cfg(test)]
pub(crate) mod mem {
    use std::{collections::HashMap, io};

    use aya::sys::SyscallError;

    use super::*;

    fn syscall_error(errno: i32) -> MapError {
        MapError::SyscallError(SyscallError {
            call: "bpf_map_update_elem",
            io_error: io::Error::from_raw_os_error(errno),
        })
    }

    pub struct MemTable<K, V> {
        pub name: &'static str,
        pub max: usize,
        pub map: HashMap<K, V>,
        /// Inserts fail (EIO) once this many have succeeded.
        pub fail_after: Option<usize>,
        pub inserts: usize,
    }

    impl<K, V> MemTable<K, V> {
        pub fn new(name: &'static str, max: usize) -> Self {
            MemTable {
                name,
                max,
                map: HashMap::new(),
                fail_after: None,
                inserts: 0,
            }
        }
    }

    impl<K: SlotKey, V: Copy> SlotTable for MemTable<K, V> {
        type Key = K;
        type Value = V;
        fn name(&self) -> &'static str {
            self.name
        }
        fn max_entries(&self) -> usize {
            self.max
        }
        fn keys(&self) -> Result<Vec<K>, MapError> {
            Ok(self.map.keys().copied().collect())
        }
        fn entries(&self) -> Result<Vec<(K, V)>, MapError> {
            Ok(self.map.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn insert(&mut self, key: &K, value: &V) -> Result<(), MapError> {
            if self.fail_after.is_some_and(|n| self.inserts >= n) {
                return Err(syscall_error(libc::EIO));
            }
            if !self.map.contains_key(key) && self.map.len() >= self.max {
                return Err(syscall_error(libc::E2BIG));
            }
            self.inserts += 1;
            self.map.insert(*key, *value);
            Ok(())
        }
        fn remove(&mut self, key: &K) -> Result<(), MapError> {
            self.map.remove(key);
            Ok(())
        }
    }

    #[derive(Default)]
    pub struct MemConfig {
        pub config: Config,
        /// Every successful update, in order.
        pub history: Vec<Config>,
        /// Updates attempted so far.
        pub attempts: usize,
        /// The attempt (0-based) that fails, once.
        pub fail_attempt: Option<usize>,
    }

    impl ConfigCell for MemConfig {
        fn get(&self) -> Result<Config, MapError> {
            Ok(self.config)
        }
        fn set(&mut self, config: &Config) -> Result<(), MapError> {
            let attempt = self.attempts;
            self.attempts += 1;
            if self.fail_attempt == Some(attempt) {
                return Err(syscall_error(libc::EIO));
            }
            self.config = *config;
            self.history.push(*config);
            Ok(())
        }
    }

    pub struct MemTables {
        pub config: MemConfig,
        pub endpoints: MemTable<EndpointKey, EndpointValue>,
        pub peer_v4: MemTable<LpmKey<8>, u32>,
        pub peer_v6: MemTable<LpmKey<20>, u32>,
        pub ports: MemTable<LpmKey<8>, u32>,
        pub verdicts: MemTable<VerdictKey, VerdictValue>,
        pub known: SlotState,
    }

    impl MemTables {
        pub fn new(max: usize) -> Self {
            MemTables {
                config: MemConfig::default(),
                endpoints: MemTable::new(maps::ENDPOINTS, max),
                peer_v4: MemTable::new(maps::PEER_V4, max),
                peer_v6: MemTable::new(maps::PEER_V6, max),
                ports: MemTable::new(maps::PORTS, max),
                verdicts: MemTable::new(maps::VERDICTS, max),
                known: SlotState::default(),
            }
        }

        pub fn tables(&mut self) -> Tables<'_> {
            Tables {
                config: &mut self.config,
                endpoints: &mut self.endpoints,
                peer_v4: &mut self.peer_v4,
                peer_v6: &mut self.peer_v6,
                ports: &mut self.ports,
                verdicts: &mut self.verdicts,
                known: &mut self.known,
            }
        }

        pub fn slot(&self, slot: u32) -> MapEntries {
            read_slot(
                &self.config,
                &self.endpoints,
                &self.peer_v4,
                &self.peer_v6,
                &self.ports,
                &self.verdicts,
                slot,
            )
            .unwrap_or_else(|e| panic!("reading slot {slot}: {e}"))
        }

        pub fn total(&self) -> usize {
            self.endpoints.map.len()
                + self.peer_v4.map.len()
                + self.peer_v6.map.len()
                + self.ports.map.len()
                + self.verdicts.map.len()
        }
    }
}

#[cfg(test)]
mod tests {
    use enforcer_common::{ACTION_ALLOW, ACTION_DENY, ANY};

    use super::{mem::MemTables, *};

    /// A small table set rendered for `slot`; `variant` changes its content.
    pub(crate) fn sample(slot: u32, variant: u32) -> MapEntries {
        let mut m = MapEntries {
            slot,
            config_flags: if variant % 2 == 1 {
                CONFIG_SRC_PORTS
            } else {
                0
            },
            ..MapEntries::default()
        };
        for ifindex in [10, 11 + variant] {
            m.endpoints.insert(
                EndpointKey { slot, ifindex },
                EndpointValue {
                    ingress_set: variant,
                    egress_set: variant + 1,
                    flags: 0,
                    _pad: 0,
                },
            );
        }
        let s = slot.to_be_bytes();
        // Sorted by (data, prefix length), as read back.
        m.peer_v4.push(LpmEntry {
            prefix_len: 32,
            data: [s[0], s[1], s[2], s[3], 0, 0, 0, 0],
            class: 0,
        });
        m.peer_v4.push(LpmEntry {
            prefix_len: 32 + 24,
            data: [s[0], s[1], s[2], s[3], 10, variant as u8, 0, 0],
            class: 1,
        });
        let mut v6 = [0u8; 20];
        v6[..4].copy_from_slice(&s);
        v6[4] = 0xfd;
        m.peer_v6.push(LpmEntry {
            prefix_len: 32 + 8,
            data: v6,
            class: 1,
        });
        m.ports.push(LpmEntry {
            prefix_len: 48 + 16,
            data: [s[0], s[1], s[2], s[3], 0, 6, 0, 80],
            class: 1,
        });
        for (peer_class, port_class, action) in [(ANY, ANY, ACTION_DENY), (1, 1, ACTION_ALLOW)] {
            m.verdicts.insert(
                VerdictKey {
                    slot,
                    set: variant,
                    peer_class,
                    port_class,
                },
                VerdictValue {
                    action,
                    staged_action: action,
                    rule_id: variant,
                    ..VerdictValue::default()
                },
            );
        }
        m
    }

    fn ok(t: &mut MemTables, e: &MapEntries) -> ProgramReport {
        program(t.tables(), e, &Limits::default(), Duration::ZERO)
            .unwrap_or_else(|e| panic!("program: {e}"))
    }

    #[test]
    fn writes_flip_and_keep_the_old_slot_resident() {
        let mut t = MemTables::new(100);
        let r = ok(&mut t, &sample(0, 0));
        assert_eq!((r.previous.active_slot, r.previous.generation), (0, 0));
        assert_eq!((r.config.active_slot, r.config.generation), (1, 1));
        assert!(r.read_back, "a new writer reads the slots back first");
        assert_eq!((r.written, r.deleted), (8, 0));
        // Rendered for slot 0, written re-slotted into slot 1.
        assert_eq!(t.slot(1), sample(1, 0));
        assert_eq!(t.slot(0), MapEntries::default());

        let r = ok(&mut t, &sample(1, 1));
        assert_eq!((r.config.active_slot, r.config.generation), (0, 2));
        assert!(r.config.src_ports);
        assert!(!r.read_back);
        assert_eq!((r.written, r.deleted), (8, 0), "slot 0 held nothing");
        assert_eq!(t.slot(0), sample(0, 1));
        // The old slot stays resident (it is the base of the next write).
        assert_eq!(t.slot(1).endpoints, sample(1, 0).endpoints);
        assert_eq!(t.total(), 2 * 8);

        // Back to slot 1, which holds sample(_, 0): only the differences are written.
        let mut c = sample(0, 0);
        let key = VerdictKey {
            slot: 0,
            set: 0,
            peer_class: 1,
            port_class: 1,
        };
        if let Some(v) = c.verdicts.get_mut(&key) {
            v.rule_id = 99;
        }
        c.verdicts.insert(
            VerdictKey {
                peer_class: 5,
                ..key
            },
            VerdictValue::default(),
        );
        c.endpoints.remove(&EndpointKey {
            slot: 0,
            ifindex: 11,
        });
        let r = ok(&mut t, &c);
        assert_eq!((r.config.active_slot, r.config.generation), (1, 3));
        assert_eq!((r.written, r.deleted), (2, 1));
        let v = r.maps.iter().find(|m| m.map == maps::VERDICTS);
        assert_eq!(
            v.map(|m| (m.written, m.deleted, m.entries)),
            Some((2, 0, 3))
        );
        let mut want = c.clone();
        want.slot = 1;
        want.endpoints = want
            .endpoints
            .into_iter()
            .map(|(k, v)| (k.with_slot(1), v))
            .collect();
        want.verdicts = want
            .verdicts
            .into_iter()
            .map(|(k, v)| (k.with_slot(1), v))
            .collect();
        for l in [&mut want.peer_v4, &mut want.ports] {
            for e in l.iter_mut() {
                e.data[..4].copy_from_slice(&1u32.to_be_bytes());
            }
        }
        for e in &mut want.peer_v6 {
            e.data[..4].copy_from_slice(&1u32.to_be_bytes());
        }
        assert_eq!(t.slot(1), want);
        assert_eq!(t.slot(0).verdicts, sample(0, 1).verdicts);
    }

    #[test]
    fn a_sequence_of_writes_keeps_both_slots_exact() {
        let mut t = MemTables::new(100);
        let mut history: Vec<u32> = Vec::new();
        for (i, v) in [0, 1, 2, 2, 0, 3, 1, 1, 4, 0, 2, 5, 5, 3]
            .into_iter()
            .enumerate()
        {
            if i == 7 {
                t.known.forget(); // a new handle part-way
            }
            let r = ok(&mut t, &sample(0, v));
            let active = t.config.config.active_slot;
            assert_eq!(
                t.slot(active).verdicts,
                sample(active, v).verdicts,
                "write {i}"
            );
            assert_eq!(
                t.slot(active).endpoints,
                sample(active, v).endpoints,
                "write {i}"
            );
            if r.unchanged {
                continue;
            }
            if let Some(&prev) = history.last() {
                let inactive = 1 - active;
                assert_eq!(
                    t.slot(inactive).verdicts,
                    sample(inactive, prev).verdicts,
                    "write {i}: the other slot keeps the previous tables"
                );
            }
            history.push(v);
        }
    }

    #[test]
    fn unchanged_tables_are_skipped() {
        let mut t = MemTables::new(100);
        ok(&mut t, &sample(0, 1));
        let before = t.config.history.len();
        // Rendered for either slot: the same tables.
        let r = ok(&mut t, &sample(1, 1));
        assert!(r.unchanged);
        assert_eq!((r.written, r.deleted), (0, 0));
        assert_eq!(r.config, r.previous);
        assert_eq!(t.config.history.len(), before, "no CONFIG update");
        // A new writer (read back) sees the same.
        t.known.forget();
        let r = ok(&mut t, &sample(0, 1));
        assert!(r.unchanged && r.read_back);
        // Same tables but another table flag: flips.
        let mut e = sample(0, 1);
        e.config_flags = 0;
        let r = ok(&mut t, &e);
        assert!(!r.unchanged);
        assert_eq!((r.config.generation, r.config.src_ports), (2, false));
    }

    #[test]
    fn another_writers_flip_makes_the_slots_unknown() {
        let mut t = MemTables::new(100);
        ok(&mut t, &sample(0, 0)); // slot 1
        ok(&mut t, &sample(0, 1)); // slot 0
        // Another process writes sample(_, 2) into slot 1 and flips.
        let mut other = MemTables::new(100);
        std::mem::swap(&mut other.known, &mut t.known);
        let r = ok(&mut t, &sample(0, 2));
        assert!(r.read_back);
        std::mem::swap(&mut other.known, &mut t.known);
        // This writer's memory says slot 0 is active at generation 2: stale; it reads back.
        let r = ok(&mut t, &sample(0, 0));
        assert!(r.read_back);
        assert_eq!((r.config.active_slot, r.config.generation), (0, 4));
        assert_eq!(t.slot(0), sample(0, 0));
        assert_eq!(t.slot(1), sample(1, 2));
    }

    #[test]
    fn leftovers_of_an_interrupted_write_are_cleared() {
        let mut t = MemTables::new(100);
        ok(&mut t, &sample(0, 0)); // active slot 1
        // An earlier writer died after writing some of slot 0; this is a new process.
        t.known.forget();
        let stale = sample(0, 7);
        t.endpoints.map.extend(stale.endpoints.clone());
        t.verdicts.map.extend(stale.verdicts.clone());
        let r = ok(&mut t, &sample(0, 2));
        assert!(r.read_back);
        // ifindex 10 is in both (updated); ifindex 18 and set 7's two verdicts go.
        assert_eq!(r.deleted, 3);
        assert_eq!(t.slot(0), sample(0, 2));
        assert_eq!(t.slot(1), sample(1, 0));
    }

    #[test]
    fn capacity_is_checked_before_anything_is_written() {
        let mut t = MemTables::new(100);
        ok(&mut t, &sample(0, 0));
        let before = t.slot(1);
        let limits = Limits {
            verdicts: 3,
            ..Limits::default()
        };
        let err = program(t.tables(), &sample(0, 1), &limits, Duration::ZERO)
            .err()
            .unwrap_or_else(|| panic!("2 new + 2 active verdicts must not fit in 3"));
        let msg = err.to_string();
        assert!(msg.contains(maps::VERDICTS), "{msg}");
        assert!(msg.contains("needs 2 entries"), "{msg}");
        assert!(msg.contains("holds 2"), "{msg}");
        assert!(msg.contains("at most 3"), "{msg}");
        assert!(msg.contains("old policy stays in force"), "{msg}");
        assert_eq!(t.config.config.generation, 1);
        assert_eq!(t.slot(1), before);
        assert_eq!(t.slot(0), MapEntries::default());
    }

    #[test]
    fn the_map_size_caps_the_limit() {
        let mut t = MemTables::new(3);
        assert!(
            program(
                t.tables(),
                &sample(0, 0),
                &Limits::default(),
                Duration::ZERO
            )
            .is_ok()
        );
        let err = program(
            t.tables(),
            &sample(0, 2), // identical tables would be skipped
            &Limits::default(),
            Duration::ZERO,
        );
        assert!(
            matches!(err, Err(DatapathError::Capacity { max: 3, .. })),
            "{err:?}"
        );
    }

    #[test]
    fn a_failed_write_leaves_the_old_policy_in_force() {
        let mut t = MemTables::new(100);
        ok(&mut t, &sample(0, 0));
        let before = t.slot(1);
        t.verdicts.fail_after = Some(t.verdicts.inserts + 1);
        let err = program(
            t.tables(),
            &sample(0, 1),
            &Limits::default(),
            Duration::ZERO,
        );
        let Err(DatapathError::Write {
            map,
            cleanup_failed: false,
            ..
        }) = err
        else {
            panic!("expected a write error, got {err:?}");
        };
        assert_eq!(map, maps::VERDICTS);
        assert_eq!(t.config.config.active_slot, 1);
        assert_eq!(t.config.config.generation, 1);
        assert_eq!(t.slot(1), before);
        assert_eq!(
            t.slot(0),
            MapEntries::default(),
            "the inactive slot is clean"
        );
    }

    #[test]
    fn a_failed_incremental_write_leaves_the_inactive_slot_unknown() {
        let mut t = MemTables::new(100);
        ok(&mut t, &sample(0, 0)); // slot 1
        ok(&mut t, &sample(0, 1)); // slot 0; slot 1 still holds sample(_, 0)
        t.verdicts.fail_after = Some(t.verdicts.inserts + 1);
        let err = program(
            t.tables(),
            &sample(0, 2),
            &Limits::default(),
            Duration::ZERO,
        );
        assert!(
            matches!(
                err,
                Err(DatapathError::Write {
                    map: maps::VERDICTS,
                    cleanup_failed: true, // the mock keeps failing inserts, so the undo too
                    ..
                })
            ),
            "{err:?}"
        );
        let c = t.config.config;
        assert_eq!((c.active_slot, c.generation), (0, 2));
        assert_eq!(t.slot(0), sample(0, 1));
        assert!(t.known.contents(1).is_none(), "slot 1 is unknown now");
        t.verdicts.fail_after = None;
        let r = ok(&mut t, &sample(0, 2));
        assert!(r.read_back, "slot 1 is read back");
        assert_eq!(t.slot(1), sample(1, 2));
    }

    #[test]
    fn a_failed_bump_is_retried_even_for_unchanged_tables() {
        let mut t = MemTables::new(100);
        ok(&mut t, &sample(0, 0));
        t.config.fail_attempt = Some(t.config.attempts + 1);
        let err = program(
            t.tables(),
            &sample(0, 2),
            &Limits::default(),
            Duration::ZERO,
        );
        assert!(
            matches!(err, Err(DatapathError::GenerationBump { .. })),
            "{err:?}"
        );
        let r = ok(&mut t, &sample(0, 2));
        assert!(!r.unchanged, "established flows still need their re-check");
        assert_eq!((r.config.active_slot, r.config.generation), (1, 2));
        assert_eq!(t.slot(1), sample(1, 2));
        assert!(ok(&mut t, &sample(0, 2)).unchanged);
    }

    #[test]
    fn a_failed_flip_leaves_the_old_policy_in_force() {
        let mut t = MemTables::new(100);
        ok(&mut t, &sample(0, 0));
        let before = t.slot(1);
        // sample(0, 1) needs CONFIG_SRC_PORTS: the early flag write goes, the flip fails.
        t.config.fail_attempt = Some(t.config.attempts + 1);
        let err = program(
            t.tables(),
            &sample(0, 1),
            &Limits::default(),
            Duration::ZERO,
        );
        assert!(
            matches!(
                err,
                Err(DatapathError::Write {
                    map: maps::CONFIG,
                    ..
                })
            ),
            "{err:?}"
        );
        assert_eq!(t.slot(1), before);
        assert_eq!(t.slot(0), MapEntries::default());
        let c = t.config.config;
        assert_eq!(
            (c.active_slot, c.generation, c.flags),
            (1, 1, 0),
            "CONFIG restored"
        );
    }

    #[test]
    fn a_failed_generation_bump_says_the_new_tables_are_active() {
        let mut t = MemTables::new(100);
        ok(&mut t, &sample(0, 0));
        t.config.fail_attempt = Some(t.config.attempts + 1);
        let err = program(
            t.tables(),
            &sample(0, 2),
            &Limits::default(),
            Duration::ZERO,
        );
        let Err(e @ DatapathError::GenerationBump { .. }) = err else {
            panic!("expected a generation bump error, got {err:?}");
        };
        assert!(e.to_string().contains("re-checked"), "{e}");
        assert_eq!(t.config.config.active_slot, 0);
        assert_eq!(t.slot(0), sample(0, 2));
        // The next write recovers.
        let r = ok(&mut t, &sample(0, 0));
        assert_eq!((r.config.active_slot, r.config.generation), (1, 2));
    }

    #[test]
    fn the_flip_writes_the_slot_then_the_generation() {
        let mut t = MemTables::new(100);
        ok(&mut t, &sample(0, 0));
        let c = |active_slot, generation, flags| Config {
            active_slot,
            generation,
            flags,
            _pad: 0,
        };
        assert_eq!(t.config.history, vec![c(1, 0, 0), c(1, 1, 0)]);
        // Turning CONFIG_SRC_PORTS on: set before the flip.
        t.config.history.clear();
        ok(&mut t, &sample(0, 1));
        let on = CONFIG_SRC_PORTS;
        assert_eq!(
            t.config.history,
            vec![c(1, 1, on), c(0, 1, on), c(0, 2, on)]
        );
        // Turning it off: cleared with the generation bump, after the flip.
        t.config.history.clear();
        ok(&mut t, &sample(0, 0));
        assert_eq!(t.config.history, vec![c(1, 2, on), c(1, 3, 0)]);
    }

    #[test]
    fn operator_flags_survive_flips_and_table_flags_follow_the_tables() {
        let mut t = MemTables::new(100);
        let c = set_flags(&mut t.config, true, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.flags, CONFIG_FAIL_CLOSED);
        let r = ok(&mut t, &sample(0, 1));
        assert_eq!(r.config.flags, CONFIG_FAIL_CLOSED | CONFIG_SRC_PORTS);
        let r = ok(&mut t, &sample(0, 0));
        assert_eq!(r.config.flags, CONFIG_FAIL_CLOSED);
        let c = set_flags(&mut t.config, false, true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.flags, CONFIG_SRC_PORTS);
        assert_eq!(
            (c.active_slot, c.generation),
            (0, 2),
            "set_flags keeps the slot"
        );
    }

    #[test]
    fn lpm_prefixes_shorter_than_the_slot_are_refused() {
        let mut t = MemTables::new(100);
        let mut e = sample(0, 0);
        e.peer_v4.push(LpmEntry {
            prefix_len: 0,
            data: [0; 8],
            class: 9,
        });
        let err = program(t.tables(), &e, &Limits::default(), Duration::ZERO);
        assert!(
            matches!(
                err,
                Err(DatapathError::InvalidEntry {
                    map: maps::PEER_V4,
                    ..
                })
            ),
            "{err:?}"
        );
        assert_eq!(t.total(), 0);
    }

    #[test]
    fn a_corrupt_active_slot_is_refused() {
        let mut t = MemTables::new(100);
        t.config.config.active_slot = 7;
        let err = program(
            t.tables(),
            &sample(0, 0),
            &Limits::default(),
            Duration::ZERO,
        );
        assert!(
            matches!(err, Err(DatapathError::CorruptConfig { active_slot: 7 })),
            "{err:?}"
        );
    }

    #[test]
    fn missing_catch_alls_are_reported() {
        let mut t = MemTables::new(100);
        // sample() has the PEER_V4 catch-all only, and needs source ports.
        let r = ok(&mut t, &sample(0, 1));
        assert_eq!(
            r.missing_catch_alls,
            vec![
                "PEER_V6 prefix length 32 (slot only)",
                "PORTS prefix length 40 (slot and PORT_KIND_DST)",
                "PORTS prefix length 40 (slot and PORT_KIND_SRC)",
            ]
        );
        assert!(missing_catch_alls(&MapEntries::default()).is_empty());
    }

    #[test]
    fn lpm_key_slot_is_the_first_four_bytes_big_endian() {
        let k = LpmKey::<8> {
            prefix_len: 56,
            data: [0, 0, 0, 1, 10, 0, 0, 0],
        };
        assert_eq!(k.slot(), 1);
        assert_eq!(k.with_slot(0).data, [0, 0, 0, 0, 10, 0, 0, 0]);
    }
}
