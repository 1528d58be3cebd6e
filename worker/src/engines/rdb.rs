//! A streaming parser of Redis RDB files, for the Redis engine's restore (see `redis.rs`).
//!
//! The parser reads an RDB front to back and hands out one key at a time: its database, name,
//! expiry (absolute unix milliseconds), LRU/LFU hints and its value's bytes *exactly as the RDB
//! holds them* (type byte + serialized value). Those bytes plus the RDB version and a CRC64 are
//! what `DUMP` returns and `RESTORE` accepts, so a key can be re-created in a running Redis
//! without the parser understanding the value's internals: it only has to know where each value
//! ends. Memory is bounded by the largest key; values of databases nobody asked for are skipped
//! without being kept.
//!
//! Formats understood (Redis 2.x – 7.4, RDB versions 1–12):
//!
//! - lengths: 6/14/32/64-bit; strings: raw, integer-encoded (8/16/32 bit), LZF-compressed;
//! - value types: string (0), list (1), set (2), zset (3), hash (4), zset 2 (5), zipmap (9),
//!   ziplist list/zset/hash (10/12/13), intset (11), quicklist (14), quicklist 2 with plain and
//!   packed nodes (18), listpack hash/zset/set (16/17/20), streams with consumer groups, PELs and
//!   consumers (15/19/21);
//! - opcodes: AUX, RESIZEDB, EXPIRETIME_MS, EXPIRETIME, SELECTDB, EOF (+ CRC64 checked unless it
//!   is zero, i.e. `rdbchecksum no`), IDLE, FREQ, MODULE_AUX (skipped: self-describing), FUNCTION2
//!   and the pre-release FUNCTION (skipped and counted: functions are server-wide, not part of a
//!   database), SLOT_INFO (7.4, skipped).
//!
//! Refused with a clear error: module values (6, 7) — restoring them needs the module on the
//! target — and the hash-with-field-expiry types of Redis 7.4 (22–25), which `RESTORE` into an
//! older server could not take either.
//!
//! `redis-cli --rdb -` appends the 40-byte end-of-transfer mark of a diskless sync to its output
//! (it truncates it only from real files), so up to that mark may follow the RDB's end:
//! [`RdbParser::finish`] accepts exactly such a mark and nothing else.
//!
//! This file depends on `std` only, on purpose: the fuzz crate compiles it by path
//! (`fuzz/fuzz_targets/rdb.rs`), which keeps ferry-worker's dependency tree out of the sanitizer
//! build. Keep crate imports out of it.

use std::io::{self, Read};

/// Opcodes and value types, as `rdb.h` names them.
pub mod types {
    pub const STRING: u8 = 0;
    pub const LIST: u8 = 1;
    pub const SET: u8 = 2;
    pub const ZSET: u8 = 3;
    pub const HASH: u8 = 4;
    pub const ZSET_2: u8 = 5;
    pub const MODULE: u8 = 6;
    pub const MODULE_2: u8 = 7;
    pub const HASH_ZIPMAP: u8 = 9;
    pub const LIST_ZIPLIST: u8 = 10;
    pub const SET_INTSET: u8 = 11;
    pub const ZSET_ZIPLIST: u8 = 12;
    pub const HASH_ZIPLIST: u8 = 13;
    pub const LIST_QUICKLIST: u8 = 14;
    pub const STREAM_LISTPACKS: u8 = 15;
    pub const HASH_LISTPACK: u8 = 16;
    pub const ZSET_LISTPACK: u8 = 17;
    pub const LIST_QUICKLIST_2: u8 = 18;
    pub const STREAM_LISTPACKS_2: u8 = 19;
    pub const SET_LISTPACK: u8 = 20;
    pub const STREAM_LISTPACKS_3: u8 = 21;

    pub const OPCODE_SLOT_INFO: u8 = 244;
    pub const OPCODE_FUNCTION2: u8 = 245;
    pub const OPCODE_FUNCTION: u8 = 246;
    pub const OPCODE_MODULE_AUX: u8 = 247;
    pub const OPCODE_IDLE: u8 = 248;
    pub const OPCODE_FREQ: u8 = 249;
    pub const OPCODE_AUX: u8 = 250;
    pub const OPCODE_RESIZEDB: u8 = 251;
    pub const OPCODE_EXPIRETIME_MS: u8 = 252;
    pub const OPCODE_EXPIRETIME: u8 = 253;
    pub const OPCODE_SELECTDB: u8 = 254;
    pub const OPCODE_EOF: u8 = 255;
}
use types::*;

/// The newest RDB version this parser knows (Redis 7.4).
pub const MAX_VERSION: u32 = 12;
/// Length of the end-of-transfer mark of a diskless sync.
const EOF_MARK_LEN: usize = 40;
const COPY_CHUNK: usize = 64 << 10;

/// Why an RDB could not be read.
#[derive(Debug)]
pub enum RdbError {
    /// Reading the input failed (other than ending early).
    Io(io::Error),
    /// The input is not a well-formed RDB (truncated, corrupt, bad checksum).
    Invalid(String),
    /// Well-formed, but holds something that cannot be restored (module values…).
    Unsupported(String),
}

impl std::fmt::Display for RdbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RdbError::Io(e) => write!(f, "reading the RDB: {e}"),
            RdbError::Invalid(m) => write!(f, "invalid RDB: {m}"),
            RdbError::Unsupported(m) => write!(f, "unsupported RDB content: {m}"),
        }
    }
}

impl std::error::Error for RdbError {}

type Result<T> = std::result::Result<T, RdbError>;

/// One key of the RDB with its value's raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Database number (SELECTDB).
    pub db: u64,
    pub key: Vec<u8>,
    /// Absolute expiry in unix milliseconds, if the key has one.
    pub expire_ms: Option<i64>,
    /// LRU idle seconds, when the source ran an LRU eviction policy.
    pub idle_secs: Option<u64>,
    /// LFU frequency, when the source ran an LFU eviction policy.
    pub freq: Option<u8>,
    /// The RDB value type (first byte of [`Entry::value`]).
    pub rdb_type: u8,
    /// Type byte followed by the serialized value, verbatim from the RDB.
    value: Vec<u8>,
}

impl Entry {
    /// The type byte and serialized value, as they appear in the RDB.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// Turns the value into a `DUMP`/`RESTORE` payload: value, RDB version (u16 LE), CRC64 of
    /// everything before (u64 LE). `RESTORE` accepts payloads of its own RDB version or older.
    pub fn into_dump_payload(self, rdb_version: u16) -> Vec<u8> {
        let mut payload = self.value;
        payload.reserve(10);
        payload.extend_from_slice(&rdb_version.to_le_bytes());
        let crc = crc64(0, &payload);
        payload.extend_from_slice(&crc.to_le_bytes());
        payload
    }
}

/// What the parser saw besides the keys it handed out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Keys handed out.
    pub keys: u64,
    /// Keys of other databases, skipped.
    pub skipped_keys: u64,
    /// Function libraries (server-wide), skipped.
    pub functions: u64,
    /// Module auxiliary data blocks (by module type name), skipped.
    pub module_aux: Vec<String>,
    /// The AUX field `redis-ver`, if present.
    pub redis_version: Option<String>,
    /// Whether the RDB carried a checksum (non-zero) that was verified.
    pub checksum_verified: bool,
    /// Bytes of the RDB, header to checksum.
    pub bytes: u64,
}

/// Reads an RDB one key at a time. See the module documentation.
pub struct RdbParser<R: Read> {
    input: Input<R>,
    version: u32,
    db: u64,
    done: bool,
    stats: Stats,
}

impl<R: Read> RdbParser<R> {
    /// Reads and checks the header (`REDIS` + 4-digit version). Buffer `reader` yourself: the
    /// parser reads small pieces.
    pub fn new(reader: R) -> Result<Self> {
        let mut input = Input {
            inner: reader,
            crc: 0,
            offset: 0,
            capture: None,
        };
        let mut header = [0u8; 9];
        input.read_exact(&mut header).map_err(|e| match e {
            RdbError::Invalid(_) => RdbError::Invalid("shorter than an RDB header".into()),
            other => other,
        })?;
        if &header[..5] != b"REDIS" {
            return Err(RdbError::Invalid(format!(
                "does not start with REDIS (found {:?})",
                String::from_utf8_lossy(&header[..5])
            )));
        }
        let version = std::str::from_utf8(&header[5..])
            .ok()
            .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| RdbError::Invalid("bad version in the header".into()))?;
        if version == 0 || version > MAX_VERSION {
            return Err(RdbError::Unsupported(format!(
                "RDB version {version} (this parser reads versions 1 to {MAX_VERSION})"
            )));
        }
        Ok(RdbParser {
            input,
            version,
            db: 0,
            done: false,
            stats: Stats::default(),
        })
    }

    /// The RDB format version from the header (`REDIS0010` → 10).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// What was seen so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The next key of database `only` (or of any database when `None`); `None` at the end of
    /// the RDB. Keys of other databases are read past without being kept.
    pub fn next_entry(&mut self, only: Option<u64>) -> Result<Option<Entry>> {
        if self.done {
            return Ok(None);
        }
        let mut expire_ms = None;
        let mut idle_secs = None;
        let mut freq = None;
        loop {
            let at = self.input.offset;
            let t = self.input.u8()?;
            match t {
                OPCODE_EOF => {
                    let computed = self.input.crc;
                    if self.version >= 5 {
                        let mut sum = [0u8; 8];
                        self.input.read_exact(&mut sum)?;
                        let stored = u64::from_le_bytes(sum);
                        if stored != 0 {
                            if stored != computed {
                                return Err(RdbError::Invalid(format!(
                                    "checksum mismatch: the RDB says {stored:016x}, its content \
                                     hashes to {computed:016x}"
                                )));
                            }
                            self.stats.checksum_verified = true;
                        }
                    }
                    if expire_ms.is_some() || idle_secs.is_some() || freq.is_some() {
                        return Err(RdbError::Invalid(format!(
                            "key attributes without a key before the end (offset {at})"
                        )));
                    }
                    self.stats.bytes = self.input.offset;
                    self.done = true;
                    return Ok(None);
                }
                OPCODE_SELECTDB => self.db = self.input.len()?,
                OPCODE_RESIZEDB => {
                    self.input.len()?;
                    self.input.len()?;
                }
                OPCODE_AUX => {
                    let mut name = Vec::new();
                    self.input.string(Some(&mut name), 1 << 20)?;
                    if name == b"redis-ver" {
                        let mut value = Vec::new();
                        self.input.string(Some(&mut value), 1 << 20)?;
                        self.stats.redis_version = Some(String::from_utf8_lossy(&value).into());
                    } else {
                        self.input.string(None, u64::MAX)?;
                    }
                }
                OPCODE_EXPIRETIME_MS => {
                    let mut b = [0u8; 8];
                    self.input.read_exact(&mut b)?;
                    expire_ms = Some(i64::from_le_bytes(b));
                }
                OPCODE_EXPIRETIME => {
                    let mut b = [0u8; 4];
                    self.input.read_exact(&mut b)?;
                    expire_ms = Some(i64::from(i32::from_le_bytes(b)) * 1000);
                }
                OPCODE_IDLE => idle_secs = Some(self.input.len()?),
                OPCODE_FREQ => freq = Some(self.input.u8()?),
                OPCODE_MODULE_AUX => {
                    let id = self.input.len()?;
                    let when_opcode = self.input.len()?;
                    let _when = self.input.len()?;
                    if when_opcode != 2 {
                        return Err(RdbError::Invalid(format!(
                            "module aux data of {} without its 'when' field (offset {at})",
                            module_name(id)
                        )));
                    }
                    self.input.module_value()?;
                    self.stats.module_aux.push(module_name(id));
                }
                OPCODE_FUNCTION2 => {
                    self.input.string(None, u64::MAX)?;
                    self.stats.functions += 1;
                }
                OPCODE_FUNCTION => {
                    // Redis 7.0 rc1/rc2: name, engine, has-description, [description], code.
                    self.input.string(None, u64::MAX)?;
                    self.input.string(None, u64::MAX)?;
                    if self.input.len()? != 0 {
                        self.input.string(None, u64::MAX)?;
                    }
                    self.input.string(None, u64::MAX)?;
                    self.stats.functions += 1;
                }
                OPCODE_SLOT_INFO => {
                    self.input.len()?;
                    self.input.len()?;
                    self.input.len()?;
                }
                t if is_value_type(t) => {
                    let wanted = only.is_none_or(|db| db == self.db);
                    let mut key = Vec::new();
                    self.input
                        .string(wanted.then_some(&mut key), u64::MAX)
                        .map_err(|e| context(e, format_args!("reading a key at offset {at}")))?;
                    if wanted {
                        self.input.capture = Some(vec![t]);
                    }
                    let skipped = self.input.value(t).map_err(|e| {
                        context(
                            e,
                            format_args!(
                                "the value of key {:?} (type {t}, offset {at})",
                                String::from_utf8_lossy(&key)
                            ),
                        )
                    });
                    let value = self.input.capture.take();
                    skipped?;
                    if let Some(value) = value {
                        self.stats.keys += 1;
                        return Ok(Some(Entry {
                            db: self.db,
                            key,
                            expire_ms,
                            idle_secs,
                            freq,
                            rdb_type: t,
                            value,
                        }));
                    }
                    self.stats.skipped_keys += 1;
                    expire_ms = None;
                    idle_secs = None;
                    freq = None;
                }
                t => {
                    return Err(match t {
                        22..=25 => RdbError::Unsupported(format!(
                            "value type {t} (a hash with field expiry, Redis 7.4) at offset {at}"
                        )),
                        _ => {
                            RdbError::Invalid(format!("unknown type or opcode {t} at offset {at}"))
                        }
                    });
                }
            }
        }
    }

    /// Reads the rest of the input after the RDB's end: nothing, or the 40-character mark that
    /// `redis-cli --rdb -` leaves after a diskless transfer. Anything else is an error. Returns
    /// what was seen.
    pub fn finish(mut self) -> Result<Stats> {
        if !self.done {
            return Err(RdbError::Invalid(
                "finish called before the end of the RDB".into(),
            ));
        }
        let mut rest = Vec::new();
        (&mut self.input.inner)
            .take(EOF_MARK_LEN as u64 + 1)
            .read_to_end(&mut rest)
            .map_err(RdbError::Io)?;
        let is_mark = rest.len() == EOF_MARK_LEN && rest.iter().all(|b| b.is_ascii_hexdigit());
        if !rest.is_empty() && !is_mark {
            return Err(RdbError::Invalid(format!(
                "unexpected data after the end of the RDB (at offset {})",
                self.input.offset
            )));
        }
        Ok(self.stats)
    }
}

fn context(e: RdbError, what: std::fmt::Arguments<'_>) -> RdbError {
    match e {
        RdbError::Invalid(m) => RdbError::Invalid(format!("{what}: {m}")),
        RdbError::Unsupported(m) => RdbError::Unsupported(format!("{what}: {m}")),
        io => io,
    }
}

fn is_value_type(t: u8) -> bool {
    matches!(t, 0..=7 | 9..=21)
}

/// The 9-character type name encoded in a module type id (`moduleTypeNameByID`).
fn module_name(id: u64) -> String {
    const CHARSET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = id >> 10;
    let mut name = [0u8; 9];
    for slot in name.iter_mut().rev() {
        *slot = CHARSET[(id & 63) as usize];
        id >>= 6;
    }
    String::from_utf8_lossy(&name).into_owned()
}

enum Len {
    Plain(u64),
    /// Special string encoding: 0 = int8, 1 = int16, 2 = int32, 3 = LZF.
    Encoded(u8),
}

/// The byte source: keeps the running CRC64 and offset, and copies every byte read into
/// `capture` while a value is being read.
struct Input<R: Read> {
    inner: R,
    crc: u64,
    offset: u64,
    capture: Option<Vec<u8>>,
}

impl<R: Read> Input<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => RdbError::Invalid(format!(
                "truncated: ends inside an item (after offset {})",
                self.offset
            )),
            _ => RdbError::Io(e),
        })?;
        self.crc = crc64(self.crc, buf);
        self.offset += buf.len() as u64;
        if let Some(capture) = self.capture.as_mut() {
            capture.extend_from_slice(buf);
        }
        Ok(())
    }

    fn u8(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b)?;
        Ok(b[0])
    }

    /// Reads `n` bytes, appending them to `out` when given; chunked, so a corrupt length runs
    /// into the end of the input rather than into a huge allocation.
    fn copy(&mut self, n: u64, mut out: Option<&mut Vec<u8>>) -> Result<()> {
        let mut buf = [0u8; COPY_CHUNK];
        let mut left = n;
        while left > 0 {
            let step = left.min(COPY_CHUNK as u64) as usize;
            self.read_exact(&mut buf[..step])?;
            if let Some(out) = out.as_deref_mut() {
                out.extend_from_slice(&buf[..step]);
            }
            left -= step as u64;
        }
        Ok(())
    }

    fn len_or_encoding(&mut self) -> Result<Len> {
        let first = self.u8()?;
        Ok(match first >> 6 {
            0 => Len::Plain(u64::from(first & 0x3f)),
            1 => Len::Plain(u64::from(first & 0x3f) << 8 | u64::from(self.u8()?)),
            2 => match first {
                0x80 => {
                    let mut b = [0u8; 4];
                    self.read_exact(&mut b)?;
                    Len::Plain(u64::from(u32::from_be_bytes(b)))
                }
                0x81 => {
                    let mut b = [0u8; 8];
                    self.read_exact(&mut b)?;
                    Len::Plain(u64::from_be_bytes(b))
                }
                other => {
                    return Err(RdbError::Invalid(format!(
                        "bad length prefix {other:#04x} at offset {}",
                        self.offset - 1
                    )));
                }
            },
            _ => Len::Encoded(first & 0x3f),
        })
    }

    fn len(&mut self) -> Result<u64> {
        match self.len_or_encoding()? {
            Len::Plain(n) => Ok(n),
            Len::Encoded(e) => Err(RdbError::Invalid(format!(
                "a length is string-encoded ({e}) at offset {}",
                self.offset - 1
            ))),
        }
    }

    /// Reads a string object; when `out` is given, appends its decoded bytes (integers as
    /// decimal, LZF decompressed), refusing strings longer than `limit`.
    fn string(&mut self, out: Option<&mut Vec<u8>>, limit: u64) -> Result<()> {
        let at = self.offset;
        match self.len_or_encoding()? {
            Len::Plain(n) => {
                if out.is_some() && n > limit {
                    return Err(RdbError::Invalid(format!(
                        "string of {n} bytes at offset {at} is implausibly long here"
                    )));
                }
                self.copy(n, out)
            }
            Len::Encoded(enc @ 0..=2) => {
                let width = 1usize << enc;
                let mut b = [0u8; 4];
                self.read_exact(&mut b[..width])?;
                if let Some(out) = out {
                    let v: i64 = match enc {
                        0 => i64::from(b[0] as i8),
                        1 => i64::from(i16::from_le_bytes([b[0], b[1]])),
                        _ => i64::from(i32::from_le_bytes(b)),
                    };
                    out.extend_from_slice(v.to_string().as_bytes());
                }
                Ok(())
            }
            Len::Encoded(3) => {
                let compressed = self.len()?;
                let len = self.len()?;
                match out {
                    None => self.copy(compressed, None),
                    Some(out) => {
                        if len > limit {
                            return Err(RdbError::Invalid(format!(
                                "string of {len} bytes at offset {at} is implausibly long here"
                            )));
                        }
                        let mut packed = Vec::new();
                        self.copy(compressed, Some(&mut packed))?;
                        lzf_decompress(&packed, len, out).map_err(|m| {
                            RdbError::Invalid(format!("LZF string at offset {at}: {m}"))
                        })
                    }
                }
            }
            Len::Encoded(e) => Err(RdbError::Invalid(format!(
                "unknown string encoding {e} at offset {at}"
            ))),
        }
    }

    /// A zset score in the old textual form: length byte (253 NaN, 254 +inf, 255 -inf).
    fn text_double(&mut self) -> Result<()> {
        match self.u8()? {
            253..=255 => Ok(()),
            n => self.copy(u64::from(n), None),
        }
    }

    /// Reads past one value of type `t`.
    fn value(&mut self, t: u8) -> Result<()> {
        match t {
            STRING => self.string(None, u64::MAX),
            LIST | SET | LIST_QUICKLIST => {
                for _ in 0..self.len()? {
                    self.string(None, u64::MAX)?;
                }
                Ok(())
            }
            ZSET => {
                for _ in 0..self.len()? {
                    self.string(None, u64::MAX)?;
                    self.text_double()?;
                }
                Ok(())
            }
            ZSET_2 => {
                for _ in 0..self.len()? {
                    self.string(None, u64::MAX)?;
                    self.copy(8, None)?;
                }
                Ok(())
            }
            HASH => {
                for _ in 0..self.len()? {
                    self.string(None, u64::MAX)?;
                    self.string(None, u64::MAX)?;
                }
                Ok(())
            }
            HASH_ZIPMAP | LIST_ZIPLIST | SET_INTSET | ZSET_ZIPLIST | HASH_ZIPLIST
            | HASH_LISTPACK | ZSET_LISTPACK | SET_LISTPACK => self.string(None, u64::MAX),
            LIST_QUICKLIST_2 => {
                for _ in 0..self.len()? {
                    let container = self.len()?;
                    if container != 1 && container != 2 {
                        return Err(RdbError::Invalid(format!(
                            "quicklist node container {container}"
                        )));
                    }
                    self.string(None, u64::MAX)?;
                }
                Ok(())
            }
            STREAM_LISTPACKS | STREAM_LISTPACKS_2 | STREAM_LISTPACKS_3 => self.stream(t),
            MODULE | MODULE_2 => {
                let id = self.len()?;
                Err(RdbError::Unsupported(format!(
                    "module type {} is not supported (values of Redis modules cannot be \
                     restored by Ferry)",
                    module_name(id)
                )))
            }
            other => Err(RdbError::Invalid(format!("unknown value type {other}"))),
        }
    }

    fn stream(&mut self, t: u8) -> Result<()> {
        for _ in 0..self.len()? {
            self.string(None, u64::MAX)?; // master ID of the node (16 bytes)
            self.string(None, u64::MAX)?; // the listpack
        }
        self.len()?; // length
        self.len()?; // last id ms
        self.len()?; // last id seq
        if t >= STREAM_LISTPACKS_2 {
            for _ in 0..5 {
                self.len()?; // first id (2), max deleted id (2), entries added
            }
        }
        for _ in 0..self.len()? {
            self.string(None, u64::MAX)?; // group name
            self.len()?; // last delivered id ms
            self.len()?; // last delivered id seq
            if t >= STREAM_LISTPACKS_2 {
                self.len()?; // entries read
            }
            for _ in 0..self.len()? {
                self.copy(16, None)?; // pending id
                self.copy(8, None)?; // delivery time
                self.len()?; // delivery count
            }
            for _ in 0..self.len()? {
                self.string(None, u64::MAX)?; // consumer name
                self.copy(8, None)?; // seen time
                if t >= STREAM_LISTPACKS_3 {
                    self.copy(8, None)?; // active time
                }
                for _ in 0..self.len()? {
                    self.copy(16, None)?; // pending id owned by the consumer
                }
            }
        }
        Ok(())
    }

    /// A self-describing module value (module aux data), up to its EOF opcode.
    fn module_value(&mut self) -> Result<()> {
        loop {
            match self.len()? {
                0 => return Ok(()),
                1 | 2 => {
                    self.len()?;
                }
                3 => self.copy(4, None)?,
                4 => self.copy(8, None)?,
                5 => self.string(None, u64::MAX)?,
                op => {
                    return Err(RdbError::Invalid(format!(
                        "unknown module value opcode {op}"
                    )));
                }
            }
        }
    }
}

/// LZF decompression (liblzf's format), appending exactly `len` bytes to `out`.
fn lzf_decompress(input: &[u8], len: u64, out: &mut Vec<u8>) -> std::result::Result<(), String> {
    let start = out.len();
    let len = usize::try_from(len).map_err(|_| "too long".to_owned())?;
    // `len` is what the RDB claims: reserve no more than the input can expand to (a 3-byte
    // back-reference yields at most 264 bytes), not 4 GiB for a corrupt length.
    out.reserve(len.min(input.len().saturating_mul(88)));
    let mut ip = 0;
    while ip < input.len() {
        let ctrl = usize::from(input[ip]);
        ip += 1;
        if ctrl < 32 {
            let run = ctrl + 1;
            let literal = input
                .get(ip..ip + run)
                .ok_or("literal runs past the input")?;
            out.extend_from_slice(literal);
            ip += run;
        } else {
            let mut run = ctrl >> 5;
            if run == 7 {
                run += usize::from(*input.get(ip).ok_or("truncated back-reference")?);
                ip += 1;
            }
            let low = usize::from(*input.get(ip).ok_or("truncated back-reference")?);
            ip += 1;
            let back = ((ctrl & 0x1f) << 8) + low + 1;
            let produced = out.len() - start;
            if back > produced {
                return Err("back-reference before the start".into());
            }
            let from = out.len() - back;
            for i in 0..run + 2 {
                let b = out[from + i];
                out.push(b);
            }
        }
        if out.len() - start > len {
            return Err(format!("decompresses to more than {len} bytes"));
        }
    }
    if out.len() - start != len {
        return Err(format!(
            "decompresses to {} bytes, not {len}",
            out.len() - start
        ));
    }
    Ok(())
}

/// CRC-64/Jones as Redis computes it (reflected, polynomial 0xad93d23594c935a9, init 0, no final
/// xor): `crc64(0, b"123456789") == 0xe9c6d914c4b8d9ca`. `crc` chains: pass the previous value.
pub fn crc64(crc: u64, data: &[u8]) -> u64 {
    let mut crc = crc;
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        crc ^= u64::from_le_bytes(word);
        crc = CRC_TABLES[7][(crc & 0xff) as usize]
            ^ CRC_TABLES[6][((crc >> 8) & 0xff) as usize]
            ^ CRC_TABLES[5][((crc >> 16) & 0xff) as usize]
            ^ CRC_TABLES[4][((crc >> 24) & 0xff) as usize]
            ^ CRC_TABLES[3][((crc >> 32) & 0xff) as usize]
            ^ CRC_TABLES[2][((crc >> 40) & 0xff) as usize]
            ^ CRC_TABLES[1][((crc >> 48) & 0xff) as usize]
            ^ CRC_TABLES[0][(crc >> 56) as usize];
    }
    for &b in chunks.remainder() {
        crc = CRC_TABLES[0][((crc ^ u64::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// Slicing-by-8 tables of CRC-64/Jones (reflected polynomial 0x95ac9329ac4bc9b5).
static CRC_TABLES: [[u64; 256]; 8] = crc_tables();

const fn crc_tables() -> [[u64; 256]; 8] {
    const POLY_REFLECTED: u64 = 0x95ac_9329_ac4b_c9b5;
    let mut tables = [[0u64; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY_REFLECTED
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev >> 8) ^ tables[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;
    use std::process::{Child, Command, Stdio};

    /// A throwaway redis-server on a free port, killed on drop.
    struct Server {
        child: Child,
        port: u16,
        dir: tempfile::TempDir,
    }

    impl Server {
        fn start() -> Server {
            let version = Command::new("redis-server")
                .arg("--version")
                .output()
                .expect("redis-server must be installed to test the RDB parser (scripts/setup)");
            assert!(version.status.success(), "redis-server --version failed");
            for _ in 0..5 {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                let dir = tempfile::tempdir().unwrap();
                let mut child = Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                    .args(["--repl-diskless-sync-delay", "0"])
                    .args(["--enable-debug-command", "yes"])
                    .arg("--dir")
                    .arg(dir.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("starting redis-server");
                for _ in 0..200 {
                    if let Ok(mut c) = Client::connect(port)
                        && c.cmd("PING") == Reply::Status("PONG".into())
                    {
                        return Server { child, port, dir };
                    }
                    if child.try_wait().unwrap().is_some() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            panic!("redis-server did not start");
        }

        fn client(&self) -> Client {
            Client::connect(self.port).unwrap()
        }

        /// `redis-cli --rdb FILE`: a real RDB of the server.
        fn rdb_file(&self) -> Vec<u8> {
            let file = self.dir.path().join("copy.rdb");
            let out = Command::new("redis-cli")
                .args(["-p", &self.port.to_string(), "--rdb"])
                .arg(&file)
                .output()
                .expect("redis-cli must be installed");
            assert!(out.status.success(), "{out:?}");
            std::fs::read(&file).unwrap()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Reply {
        Status(String),
        Error(String),
        Int(i64),
        Bulk(Option<Vec<u8>>),
        Array(Option<Vec<Reply>>),
    }

    /// Just enough RESP2 to drive a test server.
    struct Client {
        r: BufReader<TcpStream>,
        w: TcpStream,
    }

    impl Client {
        fn connect(port: u16) -> std::io::Result<Client> {
            let w = TcpStream::connect(("127.0.0.1", port))?;
            Ok(Client {
                r: BufReader::new(w.try_clone()?),
                w,
            })
        }

        fn call(&mut self, args: &[&[u8]]) -> Reply {
            let mut out = format!("*{}\r\n", args.len()).into_bytes();
            for a in args {
                out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                out.extend_from_slice(a);
                out.extend_from_slice(b"\r\n");
            }
            self.w.write_all(&out).unwrap();
            self.read()
        }

        /// A command of whitespace-separated words.
        fn cmd(&mut self, line: &str) -> Reply {
            let words: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
            self.call(&words)
        }

        fn ok(&mut self, line: &str) {
            let reply = self.cmd(line);
            assert!(!matches!(reply, Reply::Error(_)), "{line}: {reply:?}");
        }

        fn read(&mut self) -> Reply {
            let mut line = Vec::new();
            self.r.read_until(b'\n', &mut line).unwrap();
            let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
            match line[0] {
                b'+' => Reply::Status(text),
                b'-' => Reply::Error(text),
                b':' => Reply::Int(text.parse().unwrap()),
                b'$' => {
                    let n: i64 = text.parse().unwrap();
                    if n < 0 {
                        return Reply::Bulk(None);
                    }
                    let mut data = vec![0u8; n as usize + 2];
                    self.r.read_exact(&mut data).unwrap();
                    data.truncate(n as usize);
                    Reply::Bulk(Some(data))
                }
                b'*' => {
                    let n: i64 = text.parse().unwrap();
                    if n < 0 {
                        return Reply::Array(None);
                    }
                    Reply::Array(Some((0..n).map(|_| self.read()).collect()))
                }
                other => panic!("bad reply type {other}"),
            }
        }

        fn keys(&mut self) -> BTreeSet<Vec<u8>> {
            match self.cmd("KEYS *") {
                Reply::Array(Some(keys)) => keys
                    .into_iter()
                    .map(|k| match k {
                        Reply::Bulk(Some(k)) => k,
                        other => panic!("{other:?}"),
                    })
                    .collect(),
                other => panic!("{other:?}"),
            }
        }
    }

    /// Every type and encoding Redis 7.0 writes, in the current db.
    fn fill(c: &mut Client) {
        for line in [
            "SET plain hello",
            "SET int 12345",
            "SET neg -7",
            "SET 424242 integer-key",
            "RPUSH smalllist a b c 1 2 3",
            "SADD intset 1 2 3 -5 1000000",
            "SADD strset a b c",
            "ZADD zsmall -1.5 a 0 b 3.25 c inf d -inf e",
            "HSET hsmall f1 v1 f2 v2",
            "XADD st 1-1 a 1",
            "XADD st 1-2 b 2",
            "XADD st 2-1 c 3",
            "XDEL st 1-2",
            "XGROUP CREATE st g1 0",
            "XGROUP CREATE st g2 $",
            "XREADGROUP GROUP g1 alice COUNT 1 STREAMS st >",
            "XGROUP CREATECONSUMER st g2 bob",
            "SET ttl1 x PX 600000",
            "HSET httl a b",
            "PEXPIRE httl 900000",
            "DEBUG QUICKLIST-PACKED-THRESHOLD 1000",
        ] {
            c.ok(line);
        }
        c.call(&[b"SET", b"empty", b""]);
        c.call(&[b"SET", "k".repeat(100).as_bytes(), b"lzf-key"]);
        c.call(&[b"SET", b"lzf", "abcdefgh".repeat(1000).as_bytes()]);
        c.call(&[b"SET", b"\xff\x00bin\r\n key", b"\x00\x01\r\n \xfe"]);
        for i in 0..3000 {
            c.call(&[b"RPUSH", b"biglist", format!("{i:050}").as_bytes()]);
        }
        // Elements above the packed threshold become PLAIN quicklist nodes.
        for element in [b"s".repeat(10), noise(2000), b"t".repeat(10)] {
            c.call(&[b"RPUSH", b"plainlist", &element]);
        }
        for i in 0..200 {
            let score = format!("{}", f64::from(i) * 0.5 - 30.25);
            c.call(&[
                b"ZADD",
                b"zbig",
                score.as_bytes(),
                format!("m{i}").as_bytes(),
            ]);
        }
        for i in 0..600 {
            c.call(&[b"HSET", b"hbig", format!("f{i}").as_bytes(), b"v"]);
            c.call(&[b"SADD", b"sbig", format!("m{i}").as_bytes()]);
        }
    }

    /// Bytes LZF cannot shrink.
    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn parse_all(rdb: &[u8], only: Option<u64>) -> Result<(Vec<Entry>, Stats, u32)> {
        let mut parser = RdbParser::new(rdb)?;
        let mut entries = Vec::new();
        while let Some(e) = parser.next_entry(only)? {
            entries.push(e);
        }
        let version = parser.version();
        Ok((entries, parser.finish()?, version))
    }

    #[test]
    fn rdb_crc64_matches_redis() {
        assert_eq!(crc64(0, b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        // Slicing-by-8 and chaining agree with the plain byte-at-a-time table.
        let data: Vec<u8> = (0..10_007u32).map(|i| (i * 31 % 251) as u8).collect();
        let bytewise = data.iter().fold(0u64, |crc, &b| {
            CRC_TABLES[0][((crc ^ u64::from(b)) & 0xff) as usize] ^ (crc >> 8)
        });
        assert_eq!(crc64(0, &data), bytewise);
        assert_eq!(crc64(crc64(0, &data[..1234]), &data[1234..]), bytewise);
    }

    #[test]
    fn rdb_payloads_equal_redis_dump_for_every_type() {
        let server = Server::start();
        let mut c = server.client();
        fill(&mut c);
        c.ok("SELECT 2");
        fill(&mut c);
        c.ok("SET only-in-2 yes");
        let function = "#!lua name=mylib\nredis.register_function('f', function() return 1 end)";
        assert_eq!(
            c.call(&[b"FUNCTION", b"LOAD", function.as_bytes()]),
            Reply::Bulk(Some(b"mylib".to_vec()))
        );
        // The encodings this test means to cover.
        for (key, encoding) in [
            ("biglist", "quicklist"),
            ("zbig", "skiplist"),
            ("hbig", "hashtable"),
            ("intset", "intset"),
            ("zsmall", "listpack"),
            ("int", "int"),
        ] {
            assert_eq!(
                c.cmd(&format!("OBJECT ENCODING {key}")),
                Reply::Bulk(Some(encoding.as_bytes().to_vec())),
                "{key}"
            );
        }

        let rdb = server.rdb_file();
        let (entries, stats, version) = parse_all(&rdb, None).unwrap();
        assert_eq!(version, 10, "Redis 7.0 writes RDB 10");
        assert!(stats.checksum_verified);
        assert_eq!(stats.functions, 1);
        assert_eq!(stats.bytes, rdb.len() as u64);
        assert_eq!(
            stats.redis_version.as_deref().map(|v| v.starts_with('7')),
            Some(true)
        );
        let types: BTreeSet<u8> = entries.iter().map(|e| e.rdb_type).collect();
        for t in [
            STRING,
            SET,
            ZSET_2,
            HASH,
            SET_INTSET,
            HASH_LISTPACK,
            ZSET_LISTPACK,
        ] {
            assert!(types.contains(&t), "no value of type {t} in {types:?}");
        }
        assert!(types.contains(&LIST_QUICKLIST_2) && types.contains(&STREAM_LISTPACKS_2));
        let plain = entries.iter().find(|e| e.key == b"plainlist").unwrap();
        assert_eq!(
            plain.value()[..3],
            [LIST_QUICKLIST_2, 3, 2],
            "packed, plain, packed"
        );
        // The plain node: container 1, then the raw 2000-byte element (14-bit length).
        let element_at = plain.value().windows(3).position(|w| w == [1, 0x47, 0xd0]);
        assert_eq!(
            &plain.value()[element_at.unwrap() + 3..][..2000],
            noise(2000)
        );

        for db in [0u64, 2] {
            c.ok(&format!("SELECT {db}"));
            let mine: BTreeSet<Vec<u8>> = entries
                .iter()
                .filter(|e| e.db == db)
                .map(|e| e.key.clone())
                .collect();
            assert_eq!(mine, c.keys(), "keys of db {db}");
            for entry in entries.iter().filter(|e| e.db == db) {
                let key = entry.key.clone();
                let pexpiretime = c.call(&[b"PEXPIRETIME", &key]);
                assert_eq!(
                    pexpiretime,
                    Reply::Int(entry.expire_ms.unwrap_or(-1)),
                    "{:?}",
                    String::from_utf8_lossy(&key)
                );
                let dump = c.call(&[b"DUMP", &key]);
                let payload = entry.clone().into_dump_payload(version as u16);
                assert!(
                    dump == Reply::Bulk(Some(payload)),
                    "payload of {:?} differs from DUMP",
                    String::from_utf8_lossy(&key)
                );
            }
        }

        // The same through `--rdb -`, which may leave the transfer's end mark after the RDB.
        let out = Command::new("redis-cli")
            .args(["-p", &server.port.to_string(), "--rdb", "-"])
            .stderr(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success());
        let (only2, stats, _) = parse_all(&out.stdout, Some(2)).unwrap();
        assert!(only2.iter().all(|e| e.db == 2));
        assert_eq!(only2.len(), entries.iter().filter(|e| e.db == 2).count());
        assert_eq!(
            stats.skipped_keys,
            entries.iter().filter(|e| e.db == 0).count() as u64
        );
        let extra = out.stdout.len() as u64 - stats.bytes;
        assert!(
            extra == 0 || extra == EOF_MARK_LEN as u64,
            "{extra} bytes after the RDB"
        );

        // Corruption is caught: a flipped byte in a value, a cut, trailing junk.
        let at = rdb.windows(5).position(|w| w == b"hello").unwrap();
        let mut flipped = rdb.clone();
        flipped[at] ^= 0x20;
        let err = parse_all(&flipped, None).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        let err = parse_all(&rdb[..rdb.len() - 20], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
        let mut junk = rdb.clone();
        junk.extend_from_slice(b"junk");
        let err = parse_all(&junk, None).unwrap_err().to_string();
        assert!(err.contains("after the end"), "{err}");
        let mut marked = rdb.clone();
        marked.extend_from_slice(&[b'a'; EOF_MARK_LEN]);
        parse_all(&marked, None).unwrap();
        let err = parse_all(b"RUBBISH!!", None).unwrap_err().to_string();
        assert!(err.contains("REDIS"), "{err}");
    }

    fn put_len(out: &mut Vec<u8>, n: usize) {
        match n {
            0..64 => out.push(n as u8),
            64..16384 => out.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]),
            _ => {
                out.push(0x80);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
        }
    }

    fn put_str(out: &mut Vec<u8>, s: &[u8]) {
        put_len(out, s.len());
        out.extend_from_slice(s);
    }

    fn module_id(name: &str, encver: u64) -> u64 {
        const CHARSET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let id = name
            .chars()
            .fold(0u64, |id, ch| id << 6 | CHARSET.find(ch).unwrap() as u64);
        id << 10 | encver
    }

    const ZIPLIST_A: [u8; 14] = [14, 0, 0, 0, 10, 0, 0, 0, 1, 0, 0, 1, b'a', 0xff];
    const ZIPLIST_F_V: [u8; 17] = [17, 0, 0, 0, 13, 0, 0, 0, 2, 0, 0, 1, b'f', 3, 1, b'v', 0xff];
    const ZIPLIST_M_1: [u8; 16] = [16, 0, 0, 0, 13, 0, 0, 0, 2, 0, 0, 1, b'm', 3, 0xf2, 0xff];

    /// An RDB 9 (Redis 5/6) file with the encodings Redis 7 no longer writes.
    fn old_rdb(expire_secs: i32) -> Vec<u8> {
        let mut r = b"REDIS0009".to_vec();
        r.push(OPCODE_AUX);
        put_str(&mut r, b"redis-ver");
        put_str(&mut r, b"5.0.14");
        r.push(OPCODE_MODULE_AUX);
        r.push(0x81);
        r.extend_from_slice(&module_id("mymodtype", 3).to_be_bytes());
        r.extend_from_slice(&[2, 2]); // when_opcode = UINT, when
        r.extend_from_slice(&[2, 5]); // UINT 5
        r.push(5); // STRING
        put_str(&mut r, b"abc");
        r.push(4); // DOUBLE
        r.extend_from_slice(&1.5f64.to_le_bytes());
        r.push(3); // FLOAT
        r.extend_from_slice(&1.5f32.to_le_bytes());
        r.extend_from_slice(&[1, 7, 0]); // SINT 7, EOF
        r.push(OPCODE_FUNCTION2);
        put_str(
            &mut r,
            b"#!lua name=x\nredis.register_function('f', function() end)",
        );
        r.extend_from_slice(&[OPCODE_SELECTDB, 0, OPCODE_RESIZEDB, 12, 1]);
        r.push(LIST);
        put_str(&mut r, b"l1");
        r.push(2);
        put_str(&mut r, b"a");
        put_str(&mut r, b"b");
        r.push(SET);
        put_str(&mut r, b"s1");
        r.push(2);
        put_str(&mut r, b"x");
        put_str(&mut r, b"y");
        r.push(ZSET);
        put_str(&mut r, b"z1");
        r.push(3);
        put_str(&mut r, b"a");
        put_str(&mut r, b"1.5");
        put_str(&mut r, b"b");
        r.push(254); // +inf
        put_str(&mut r, b"c");
        r.push(255); // -inf
        r.push(HASH);
        put_str(&mut r, b"h1");
        r.push(1);
        put_str(&mut r, b"f");
        put_str(&mut r, b"v");
        r.push(OPCODE_EXPIRETIME);
        r.extend_from_slice(&expire_secs.to_le_bytes());
        r.push(STRING);
        put_str(&mut r, b"e1");
        r.extend_from_slice(&[0xc0, 42]); // int8-encoded 42
        r.extend_from_slice(&[OPCODE_IDLE, 50, HASH_ZIPMAP]);
        put_str(&mut r, b"zm");
        put_str(&mut r, &[1, 1, b'f', 1, 0, b'v', 0xff]);
        r.extend_from_slice(&[OPCODE_FREQ, 7, LIST_ZIPLIST]);
        put_str(&mut r, b"zl");
        put_str(&mut r, &ZIPLIST_A);
        r.push(LIST_QUICKLIST);
        put_str(&mut r, b"ql");
        r.push(1);
        put_str(&mut r, &ZIPLIST_A);
        r.push(HASH_ZIPLIST);
        put_str(&mut r, b"hz");
        put_str(&mut r, &ZIPLIST_F_V);
        r.push(ZSET_ZIPLIST);
        put_str(&mut r, b"zz");
        put_str(&mut r, &ZIPLIST_M_1);
        r.extend_from_slice(&[OPCODE_SELECTDB, 1, STRING]);
        put_str(&mut r, b"other-db");
        put_str(&mut r, b"x");
        r.push(OPCODE_EOF);
        let crc = crc64(0, &r);
        r.extend_from_slice(&crc.to_le_bytes());
        r
    }

    fn bulks(reply: Reply) -> Vec<String> {
        match reply {
            Reply::Array(Some(items)) => items
                .into_iter()
                .map(|i| match i {
                    Reply::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rdb_old_encodings_restore_into_redis_7() {
        let expire_secs = (SystemTime_now_secs() + 3600) as i32;
        let rdb = old_rdb(expire_secs);
        let (entries, stats, version) = parse_all(&rdb, Some(0)).unwrap();
        assert_eq!(version, 9);
        assert!(stats.checksum_verified);
        assert_eq!(stats.functions, 1);
        assert_eq!(stats.module_aux, vec!["mymodtype".to_owned()]);
        assert_eq!(stats.redis_version.as_deref(), Some("5.0.14"));
        assert_eq!(stats.skipped_keys, 1);
        let keys: Vec<&[u8]> = entries.iter().map(|e| e.key.as_slice()).collect();
        assert_eq!(
            keys,
            [
                &b"l1"[..],
                b"s1",
                b"z1",
                b"h1",
                b"e1",
                b"zm",
                b"zl",
                b"ql",
                b"hz",
                b"zz"
            ]
        );
        let e1 = &entries[4];
        assert_eq!(e1.expire_ms, Some(i64::from(expire_secs) * 1000));
        assert_eq!((entries[5].idle_secs, entries[6].freq), (Some(50), Some(7)));
        assert!(
            entries
                .iter()
                .filter(|e| e.key != b"e1")
                .all(|e| e.expire_ms.is_none())
        );

        // Redis 7 takes every payload (version 9 ≤ 10) and reads the values back right.
        let server = Server::start();
        let mut c = server.client();
        for entry in entries {
            let key = entry.key.clone();
            let ttl = entry.expire_ms.unwrap_or(0).to_string();
            let payload = entry.into_dump_payload(version as u16);
            let reply = c.call(&[b"RESTORE", &key, ttl.as_bytes(), &payload, b"ABSTTL"]);
            assert_eq!(
                reply,
                Reply::Status("OK".into()),
                "{:?}",
                String::from_utf8_lossy(&key)
            );
        }
        assert_eq!(bulks(c.cmd("LRANGE l1 0 -1")), ["a", "b"]);
        let mut members = bulks(c.cmd("SMEMBERS s1"));
        members.sort();
        assert_eq!(members, ["x", "y"]);
        assert_eq!(
            bulks(c.cmd("ZRANGE z1 0 -1 WITHSCORES")),
            ["c", "-inf", "a", "1.5", "b", "inf"]
        );
        assert_eq!(bulks(c.cmd("HGETALL h1")), ["f", "v"]);
        assert_eq!(c.cmd("GET e1"), Reply::Bulk(Some(b"42".to_vec())));
        assert_eq!(
            c.cmd("PEXPIRETIME e1"),
            Reply::Int(i64::from(expire_secs) * 1000)
        );
        assert_eq!(bulks(c.cmd("HGETALL zm")), ["f", "v"]);
        assert_eq!(bulks(c.cmd("LRANGE zl 0 -1")), ["a"]);
        assert_eq!(bulks(c.cmd("LRANGE ql 0 -1")), ["a"]);
        assert_eq!(bulks(c.cmd("HGETALL hz")), ["f", "v"]);
        assert_eq!(bulks(c.cmd("ZRANGE zz 0 -1 WITHSCORES")), ["m", "1"]);
    }

    #[allow(non_snake_case)]
    fn SystemTime_now_secs() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn rdb_refuses_module_values_and_unknown_types() {
        let mut r = b"REDIS0010".to_vec();
        r.extend_from_slice(&[OPCODE_SELECTDB, 0, MODULE_2]);
        put_str(&mut r, b"mk");
        r.push(0x81);
        r.extend_from_slice(&module_id("ReJSON-RL", 3).to_be_bytes());
        r.extend_from_slice(&[2, 1, 0, OPCODE_EOF]);
        r.extend_from_slice(&[0; 8]);
        let err = parse_all(&r, None).unwrap_err();
        assert!(matches!(err, RdbError::Unsupported(_)), "{err}");
        assert!(
            err.to_string()
                .contains("module type ReJSON-RL is not supported"),
            "{err}"
        );

        let mut r = b"REDIS0010".to_vec();
        r.extend_from_slice(&[OPCODE_SELECTDB, 0, 8]);
        let err = parse_all(&r, None).unwrap_err();
        assert!(
            err.to_string().contains("unknown type or opcode 8"),
            "{err}"
        );

        let err = parse_all(b"REDIS0099", None).unwrap_err();
        assert!(err.to_string().contains("RDB version 99"), "{err}");

        // A zero checksum means "not computed" (rdbchecksum no).
        let mut r = b"REDIS0010".to_vec();
        r.extend_from_slice(&[OPCODE_SELECTDB, 0, STRING, 1, b'k', 1, b'v', OPCODE_EOF]);
        r.extend_from_slice(&[0; 8]);
        let (entries, stats, _) = parse_all(&r, None).unwrap();
        assert_eq!((entries.len(), stats.checksum_verified), (1, false));
    }

    #[test]
    fn rdb_lzf_decompresses_liblzf_output() {
        // "abcabcabcabc" as liblzf writes it: 2 literals… then back-references.
        let mut out = Vec::new();
        lzf_decompress(&[2, b'a', b'b', b'c', 0xe0, 0, 2], 12, &mut out).unwrap();
        assert_eq!(out, b"abcabcabcabc");
        assert!(lzf_decompress(&[2, b'a', b'b', b'c'], 4, &mut Vec::new()).is_err());
        assert!(lzf_decompress(&[0x20, 9], 3, &mut Vec::new()).is_err());
    }

    /// Found by the `rdb` fuzz target: a key whose LZF header claims a huge decompressed length
    /// reserved that length up front (an allocation failure, not an error).
    #[test]
    fn rdb_lzf_length_claims_do_not_allocate() {
        let mut r = b"REDIS0010".to_vec();
        r.extend_from_slice(&[OPCODE_SELECTDB, 0, STRING, 0xc3, 7, 0x81]);
        r.extend_from_slice(&(1u64 << 40).to_be_bytes());
        r.extend_from_slice(&[2, b'a', b'b', b'c', 0xe0, 0, 2]);
        put_str(&mut r, b"v");
        r.push(OPCODE_EOF);
        r.extend_from_slice(&[0; 8]);
        let err = parse_all(&r, None).unwrap_err();
        assert!(
            err.to_string()
                .contains("decompresses to 12 bytes, not 1099511627776"),
            "{err}"
        );
        let mut out = Vec::new();
        assert!(lzf_decompress(&[2, b'a', b'b', b'c'], 1 << 40, &mut out).is_err());
        assert!(out.capacity() < 1 << 20, "{}", out.capacity());
    }
}
