//! Point-in-time restore, the pure part: how a log stream is archived (chunk keys), which
//! moments it can restore to (the recovery window and its gaps), which chunks a restore reads,
//! and `--at` times.
//!
//! A stream of a database entry with `pitr: true` archives its server's log (PostgreSQL WAL
//! segments, MariaDB/MySQL binlog files) as it grows, in chunks:
//!
//! ```text
//! teams/TEAM/apps/APP/logs/STREAM/FILE/OFFSET-END.RECEIVED_MS.ATTEMPT
//! ```
//!
//! `OFFSET` and `END` (16 hex digits) are the bytes of `FILE` the chunk holds, `RECEIVED_MS` is
//! when the worker had received them (so every commit in the chunk happened at or before it),
//! `ATTEMPT` the stream shard's attempt that wrote it. Chunks are never rewritten: a stream that
//! resumes on another worker lists what is there and archives from the end of it; two attempts
//! that overlap hold the same bytes of the same file, and readers take each byte once. In an
//! encrypted location a chunk is an age file to the location's recipients, its key ending in
//! `.age` ([`SEALED_SUFFIX`]); a chunk holds at most [`MAX_CHUNK`] bytes of log.
//!
//! A log file's end is recorded when the stream moves on to the next file: an empty
//! `FILE/END-END.RECEIVED_MS.ATTEMPT.eof` object says the archive holds all of `FILE` (its
//! `END` bytes). Only then does the archived log run on into the next file without a hole: a
//! stream that resumes after its server dropped the rest of a file (a purged binlog, a slot
//! that no longer held the WAL) starts the next file without one, and the window shows a gap.
//!
//! A *mark* (`OFFSET-OFFSET`, no log bytes) says that at `RECEIVED_MS` the server had written
//! nothing past `OFFSET`: every commit up to that moment is in the archive before it. A stream
//! writes one when its server is idle and the archive has caught up, so the window of a quiet
//! server reaches the present instead of ending [`SETTLE_MS`] before its last write.

/// The most log bytes one chunk holds (bounds what a sealed chunk needs in memory).
pub const MAX_CHUNK: u64 = 8 << 20;

/// How far a stream's receiver may run behind its server: a chunk received at `t` is taken to
/// hold every commit made before `t − SETTLE_MS` (streaming replication is asynchronous, and a
/// loaded machine delays the receiver). The recovery window ends this long before the newest
/// chunk, and a restore reads the log on to the first chunk received this long after its moment.
pub const SETTLE_MS: i64 = 5_000;

/// The suffix of a chunk encrypted to its location's recipients.
pub const SEALED_SUFFIX: &str = ".age";

use std::collections::BTreeMap;

use crate::ModelError;

/// `teams/TEAM/apps/APP/logs/`
pub fn logs_root(team: &str, app: &str) -> String {
    format!("teams/{team}/apps/{app}/logs/")
}

/// `teams/TEAM/apps/APP/logs/STREAM/`
pub fn stream_prefix(team: &str, app: &str, stream: &str) -> String {
    format!("{}{stream}/", logs_root(team, app))
}

/// A position in a log: a file and a byte offset in it, written `FILE:OFFSET`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub file: String,
    pub offset: u64,
}

impl Position {
    /// Parses `FILE:OFFSET`.
    pub fn parse(text: &str) -> Option<Position> {
        let (file, offset) = text.rsplit_once(':')?;
        valid_file(file).then_some(())?;
        Some(Position {
            file: file.to_owned(),
            offset: offset.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.offset)
    }
}

/// A log file name as servers make them: `000000010000000000000003`, `binlog.000007`.
pub fn valid_file(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One archived chunk of a log file, or a mark (`offset == end`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Its key, relative to the location.
    pub key: String,
    pub file: String,
    pub offset: u64,
    pub end: u64,
    pub received_ms: i64,
    /// The end of `file`: it holds `end` bytes and the log goes on in its successor.
    pub eof: bool,
}

impl Chunk {
    /// The key of a new chunk of `file` under a stream's prefix.
    pub fn key_for(
        prefix: &str,
        file: &str,
        offset: u64,
        end: u64,
        received_ms: i64,
        attempt: u32,
    ) -> String {
        format!("{prefix}{file}/{offset:016x}-{end:016x}.{received_ms}.{attempt}")
    }

    /// The key of the record that `file` ends after `end` bytes.
    pub fn eof_key(prefix: &str, file: &str, end: u64, received_ms: i64, attempt: u32) -> String {
        format!(
            "{}.eof",
            Chunk::key_for(prefix, file, end, end, received_ms, attempt)
        )
    }

    /// A mark: no log bytes, only the moment the server had nothing past `offset`.
    pub fn is_mark(&self) -> bool {
        self.offset == self.end && !self.eof
    }

    /// Reads a chunk key found under `prefix`; anything else (a stray object) is `None`.
    pub fn parse(prefix: &str, key: &str) -> Option<Chunk> {
        let rest = key.strip_prefix(prefix)?;
        let (file, name) = rest.split_once('/')?;
        if !valid_file(file) {
            return None;
        }
        let name = name.strip_suffix(SEALED_SUFFIX).unwrap_or(name);
        let mut parts = name.split('.');
        let range = parts.next()?;
        let received_ms: i64 = parts.next()?.parse().ok()?;
        let _attempt: u32 = parts.next()?.parse().ok()?;
        let eof = match parts.next() {
            None => false,
            Some("eof") => true,
            Some(_) => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        let (offset, end) = range.split_once('-')?;
        let (offset, end) = (
            u64::from_str_radix(offset, 16).ok()?,
            u64::from_str_radix(end, 16).ok()?,
        );
        if offset > end || (eof && offset != end) {
            return None;
        }
        Some(Chunk {
            key: key.to_owned(),
            file: file.to_owned(),
            offset,
            end,
            received_ms,
            eof,
        })
    }
}

/// The file that follows `file` in its server's sequence: the next WAL segment (16 MiB segments,
/// 256 per log id), the next binlog number.
pub fn successor(file: &str) -> Option<String> {
    if file.len() == 24 && file.bytes().all(|b| b.is_ascii_hexdigit()) {
        let tli = &file[..8];
        let log = u32::from_str_radix(&file[8..16], 16).ok()?;
        let seg = u32::from_str_radix(&file[16..], 16).ok()?;
        let (log, seg) = if seg >= 0xFF {
            (log.checked_add(1)?, 0)
        } else {
            (log, seg + 1)
        };
        return Some(format!("{tli}{log:08X}{seg:08X}"));
    }
    let (base, number) = file.rsplit_once('.')?;
    let n: u64 = number.parse().ok()?;
    Some(format!("{base}.{:0width$}", n + 1, width = number.len()))
}

/// How many bytes of a server's binlogs (`files`: each with its size, as `SHOW BINARY LOGS`
/// lists them) lie past `archived`: the archive's lag behind the server. A file the server no
/// longer lists counts as nothing; files before the archived one are not behind.
pub fn bytes_behind(archived: &Position, files: &[(String, u64)]) -> u64 {
    let number = |f: &str| f.rsplit_once('.').and_then(|(_, n)| n.parse::<u64>().ok());
    let Some(at) = number(&archived.file) else {
        return 0;
    };
    files
        .iter()
        .filter_map(|(f, size)| match number(f) {
            Some(n) if n == at => Some(size.saturating_sub(archived.offset)),
            Some(n) if n > at => Some(*size),
            _ => None,
        })
        .sum()
}

/// A piece of a chunk a reader takes: bytes `offset..end` of `file`, found `skip` bytes into
/// the chunk object `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub key: String,
    pub file: String,
    pub skip: u64,
    pub offset: u64,
    pub end: u64,
    pub received_ms: i64,
}

/// A stretch of log archived without a hole: from `start` to `end`, received between
/// `from_ms` (its first chunk) and `to_ms` (its last chunk or mark). Every commit up to
/// `covered_ms` is in it: [`SETTLE_MS`] before its newest chunk, or a mark's moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub start: Position,
    pub end: Position,
    pub from_ms: i64,
    pub to_ms: i64,
    pub covered_ms: i64,
    pub pieces: Vec<Piece>,
    /// The span's marks: where the log ended at a moment.
    pub marks: Vec<(Position, i64)>,
}

/// Cuts a stream's chunks into contiguous spans (each byte once), in log order. A span goes on
/// into the next file when the file's end was recorded (`eof`) right where the span reached;
/// a hole inside a file, or a file whose predecessor did not end in the span, starts a new
/// span.
pub fn spans(chunks: &[Chunk]) -> Vec<Span> {
    let mut by_file: BTreeMap<&str, Vec<&Chunk>> = BTreeMap::new();
    for c in chunks {
        by_file.entry(c.file.as_str()).or_default().push(c);
    }
    let mut out: Vec<Span> = Vec::new();
    let mut open: Option<Span> = None;
    for (file, mut list) in by_file {
        // By offset, the longest first, a file's end after everything else of it.
        list.sort_by_key(|c| (c.eof, c.offset, std::cmp::Reverse(c.end)));
        for c in list {
            let continues = open
                .as_ref()
                .is_some_and(|s| s.end.file == file && c.offset <= s.end.offset);
            if !continues {
                out.extend(open.take());
            }
            let span = open.get_or_insert_with(|| Span {
                start: Position {
                    file: file.to_owned(),
                    offset: c.offset,
                },
                end: Position {
                    file: file.to_owned(),
                    offset: c.offset,
                },
                from_ms: c.received_ms,
                to_ms: c.received_ms,
                covered_ms: i64::MIN,
                pieces: Vec::new(),
                marks: Vec::new(),
            });
            if c.eof {
                if c.offset == span.end.offset
                    && let Some(next) = successor(file)
                {
                    span.end = Position {
                        file: next,
                        offset: 0,
                    };
                }
                continue;
            }
            if c.is_mark() {
                span.marks.push((
                    Position {
                        file: file.to_owned(),
                        offset: c.offset,
                    },
                    c.received_ms,
                ));
                span.covered_ms = span.covered_ms.max(c.received_ms);
                span.from_ms = span.from_ms.min(c.received_ms);
                span.to_ms = span.to_ms.max(c.received_ms);
                continue;
            }
            if c.end <= span.end.offset {
                continue; // every byte of it is already taken
            }
            let skip = span.end.offset - c.offset;
            span.pieces.push(Piece {
                key: c.key.clone(),
                file: file.to_owned(),
                skip,
                offset: span.end.offset,
                end: c.end,
                received_ms: c.received_ms,
            });
            span.end.offset = c.end;
            span.from_ms = span.from_ms.min(c.received_ms);
            span.to_ms = span.to_ms.max(c.received_ms);
            span.covered_ms = span.covered_ms.max(c.received_ms - SETTLE_MS);
        }
    }
    out.extend(open);
    out
}

/// A base a point-in-time restore can start from: a backup's archive of the server and where
/// the log continues after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    pub backup_id: String,
    /// When the archive was complete: the earliest moment it can be restored to.
    pub ready_ms: i64,
    pub position: Position,
}

/// One stretch of time a stream can restore to, from a base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub from_ms: i64,
    pub to_ms: i64,
}

/// The recovery window of one stream: the intervals it can restore to (merged, in order) and
/// the gaps between them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Window {
    pub intervals: Vec<Interval>,
    pub gaps: Vec<Interval>,
}

/// The span that holds `position` (the log after a base), if the stream archived it.
fn span_of<'a>(spans: &'a [Span], position: &Position) -> Option<&'a Span> {
    spans
        .iter()
        .find(|s| s.start <= *position && *position <= s.end)
}

/// Which moments the stream can restore to: from each base's `ready_ms` to what the span its
/// position lies in covers (`Span::covered_ms`; a base whose log was not archived restores to
/// its own moment only).
pub fn window(bases: &[Base], spans: &[Span]) -> Window {
    let mut intervals: Vec<Interval> = bases
        .iter()
        .map(|b| Interval {
            from_ms: b.ready_ms,
            to_ms: span_of(spans, &b.position).map_or(b.ready_ms, |s| s.covered_ms.max(b.ready_ms)),
        })
        .collect();
    intervals.sort_by_key(|i| (i.from_ms, i.to_ms));
    let mut merged: Vec<Interval> = Vec::new();
    for i in intervals {
        match merged.last_mut() {
            Some(last) if i.from_ms <= last.to_ms => last.to_ms = last.to_ms.max(i.to_ms),
            _ => merged.push(i),
        }
    }
    let gaps = merged
        .windows(2)
        .map(|w| Interval {
            from_ms: w[0].to_ms,
            to_ms: w[1].from_ms,
        })
        .collect();
    Window {
        intervals: merged,
        gaps,
    }
}

/// What a restore to `at_ms` reads: the newest base ready at or before it whose archived log
/// reaches it, and the pieces of log from the start of the base's file (log readers need whole
/// files) through the position of the first mark at or after `at_ms`, or else through the
/// first piece received more than [`SETTLE_MS`] after `at_ms` (every commit up to `at_ms` is in
/// them). Errors name the window.
pub fn plan<'a>(
    at_ms: i64,
    bases: &'a [Base],
    spans: &[Span],
) -> Result<(&'a Base, Vec<Piece>), ModelError> {
    let mut candidates: Vec<&Base> = bases.iter().filter(|b| b.ready_ms <= at_ms).collect();
    candidates.sort_by_key(|b| std::cmp::Reverse(b.ready_ms));
    for base in candidates {
        let file_start = Position {
            file: base.position.file.clone(),
            offset: 0,
        };
        let Some(span) = span_of(spans, &base.position).filter(|s| s.start <= file_start) else {
            if base.ready_ms == at_ms {
                return Ok((base, Vec::new()));
            }
            continue;
        };
        if span.covered_ms < at_ms {
            continue;
        }
        let mark = span
            .marks
            .iter()
            .filter(|(_, ms)| *ms >= at_ms)
            .map(|(position, _)| position)
            .min();
        let mut pieces = Vec::new();
        for p in &span.pieces {
            if p.file < base.position.file {
                continue;
            }
            pieces.push(p.clone());
            let done = match mark {
                Some(mark) => (p.file.as_str(), p.end) >= (mark.file.as_str(), mark.offset),
                None => p.received_ms > at_ms + SETTLE_MS,
            };
            if done {
                break;
            }
        }
        return Ok((base, pieces));
    }
    Err(ModelError::Manifest(format!(
        "{} is outside the recovery window ({})",
        format_ms(at_ms),
        describe(&window(bases, spans))
    )))
}

/// The chunks no base needs any more: those of log files before the file of the oldest base
/// (`oldest`, the earliest position any kept backup continues from; a restore reads whole files
/// from there on). Without a base nothing goes: a backup running now will need what is there.
pub fn prunable<'a>(chunks: &'a [Chunk], oldest: Option<&Position>) -> Vec<&'a Chunk> {
    let Some(oldest) = oldest else {
        return Vec::new();
    };
    chunks.iter().filter(|c| c.file < oldest.file).collect()
}

/// The stream (`COMPONENT.ENTRY`) a backup shard's log position belongs to, from its slot:
/// `COMPONENT/postgres-base/ENTRY` or `COMPONENT/ENGINE/ENTRY/INDEX`.
pub fn stream_of_slot(slot: &str) -> Option<String> {
    let parts: Vec<&str> = slot.split('/').collect();
    match parts.as_slice() {
        [component, "postgres-base", entry] => Some(crate::task::stream_name(component, entry)),
        [component, _, entry, _] => Some(crate::task::stream_name(component, entry)),
        _ => None,
    }
}

/// `from … to …[, from … to …] (gaps: …)`, or that there is none.
pub fn describe(w: &Window) -> String {
    if w.intervals.is_empty() {
        return "there is none yet: no backup of the database has completed".to_owned();
    }
    let list = |v: &[Interval]| {
        v.iter()
            .map(|i| format!("{} to {}", format_ms(i.from_ms), format_ms(i.to_ms)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if w.gaps.is_empty() {
        list(&w.intervals)
    } else {
        format!("{}; gaps: {}", list(&w.intervals), list(&w.gaps))
    }
}

/// RFC 3339 in UTC with milliseconds.
pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// An `--at` time: RFC 3339 (`2026-12-02T16:40:00Z`, any offset) or relative to `now_ms`
/// (`-2h`, `-90s`, `-1h 30m`).
pub fn parse_at(text: &str, now_ms: i64) -> Result<i64, ModelError> {
    let text = text.trim();
    if let Some(ago) = text.strip_prefix('-') {
        let d = humantime::parse_duration(ago.trim()).map_err(|e| {
            ModelError::Manifest(format!("--at {text:?}: not a relative time like -2h ({e})"))
        })?;
        return Ok(now_ms - d.as_millis() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            ModelError::Manifest(format!(
                "--at {text:?}: give an RFC 3339 time (2026-12-02T16:40:00Z) or a relative one (-2h): {e}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "teams/t/apps/a/logs/c.db/";

    fn chunk(file: &str, offset: u64, end: u64, ms: i64) -> Chunk {
        Chunk::parse(P, &Chunk::key_for(P, file, offset, end, ms, 1)).unwrap()
    }

    fn eof(file: &str, end: u64, ms: i64) -> Chunk {
        Chunk::parse(P, &Chunk::eof_key(P, file, end, ms, 1)).unwrap()
    }

    #[test]
    fn bytes_behind_counts_the_rest_of_the_archived_file_and_every_later_one() {
        let files = |list: &[(&str, u64)]| -> Vec<(String, u64)> {
            list.iter().map(|(f, n)| (f.to_string(), *n)).collect()
        };
        let at = |file: &str, offset| Position {
            file: file.into(),
            offset,
        };
        let server = files(&[("b.000007", 900), ("b.000008", 500), ("b.000009", 40)]);
        assert_eq!(bytes_behind(&at("b.000008", 200), &server), 300 + 40);
        assert_eq!(bytes_behind(&at("b.000009", 40), &server), 0, "caught up");
        // The archived file was purged: only the newer files count.
        assert_eq!(bytes_behind(&at("b.000006", 10), &server), 900 + 500 + 40);
        // Numbers, not names: binlog.999999 is followed by binlog.1000000.
        let wide = files(&[("b.999999", 100), ("b.1000000", 60)]);
        assert_eq!(bytes_behind(&at("b.999999", 100), &wide), 60);
        // An archive ahead of what the server reports (a late listing) is not behind.
        assert_eq!(bytes_behind(&at("b.000009", 99), &server), 0);
    }

    #[test]
    fn chunk_keys_round_trip_and_strays_are_ignored() {
        let key = Chunk::key_for(P, "binlog.000003", 4, 900, 1_700_000, 2);
        assert_eq!(
            key,
            "teams/t/apps/a/logs/c.db/binlog.000003/0000000000000004-0000000000000384.1700000.2"
        );
        let c = Chunk::parse(P, &key).unwrap();
        assert_eq!((c.offset, c.end, c.received_ms), (4, 900, 1_700_000));
        let sealed = Chunk::parse(P, &format!("{key}{SEALED_SUFFIX}")).unwrap();
        assert_eq!((sealed.offset, sealed.end), (4, 900));
        assert!(sealed.key.ends_with(".age"));
        let end = Chunk::eof_key(P, "binlog.000003", 900, 1_700_001, 2);
        assert!(
            end.ends_with("0000000000000384-0000000000000384.1700001.2.eof"),
            "{end}"
        );
        let end = Chunk::parse(P, &format!("{end}{SEALED_SUFFIX}")).unwrap();
        assert!(end.eof && !end.is_mark() && (end.offset, end.end) == (900, 900));
        for stray in [
            "teams/t/apps/a/logs/c.db/x/notes.txt",
            "teams/t/apps/a/logs/c.db/../0-1.1.1",
            "teams/t/apps/a/logs/c.db/f/0000000000000009-0000000000000001.1.1",
            "teams/t/apps/a/logs/c.db/f/0000000000000000-0000000000000001.1.1.eof",
            "teams/t/apps/a/logs/c.db/f/0000000000000001-0000000000000001.1.1.other",
            "elsewhere/f/0000000000000000-0000000000000001.1.1",
        ] {
            assert_eq!(Chunk::parse(P, stray), None, "{stray}");
        }
    }

    #[test]
    fn successors_of_wal_segments_and_binlogs() {
        assert_eq!(
            successor("000000010000000000000003").unwrap(),
            "000000010000000000000004"
        );
        assert_eq!(
            successor("0000000100000000000000FF").unwrap(),
            "000000010000000100000000"
        );
        assert_eq!(successor("binlog.000009").unwrap(), "binlog.000010");
        assert_eq!(successor("nodots"), None);
    }

    #[test]
    fn overlapping_chunks_give_each_byte_once_and_holes_split_spans() {
        let chunks = [
            chunk("binlog.000001", 0, 100, 10),
            // a resumed attempt re-sent part of what was there
            chunk("binlog.000001", 0, 150, 20),
            chunk("binlog.000001", 150, 200, 30),
            eof("binlog.000001", 200, 35),
            chunk("binlog.000002", 0, 50, 40),
            // a hole: 50..60 of the second file is missing
            chunk("binlog.000002", 60, 80, 50),
            // a file skipped: 000003 never archived
            chunk("binlog.000004", 0, 10, 60),
        ];
        let s = spans(&chunks);
        assert_eq!(s.len(), 3, "{s:#?}");
        let first = &s[0];
        assert_eq!(first.start.to_string(), "binlog.000001:0");
        assert_eq!(first.end.to_string(), "binlog.000002:50");
        let taken: Vec<_> = first
            .pieces
            .iter()
            .map(|p| (p.offset, p.end, p.skip))
            .collect();
        assert_eq!(taken, [(0, 150, 0), (150, 200, 0), (0, 50, 0)]);
        assert_eq!((first.from_ms, first.to_ms), (20, 40));
        assert_eq!(s[1].start.to_string(), "binlog.000002:60");
        assert_eq!(s[2].start.to_string(), "binlog.000004:0");
        // Without the record of its end the next file starts a span of its own (the stream
        // resumed after the rest of the file was lost), with it the log runs on.
        let resumed = [chunk("b.000001", 0, 100, 1), chunk("b.000002", 0, 10, 2)];
        assert_eq!(spans(&resumed).len(), 2);
        let ended = [
            chunk("b.000001", 0, 100, 1),
            eof("b.000001", 100, 2),
            chunk("b.000001", 100, 100, 2), // a mark at the same place
            chunk("b.000002", 0, 10, 3),
        ];
        let one = spans(&ended);
        assert_eq!(one.len(), 1, "{one:#?}");
        assert_eq!(one[0].end.to_string(), "b.000002:10");
        // An end recorded past a hole does not bridge it.
        let holed = [
            chunk("b.000001", 0, 50, 1),
            eof("b.000001", 100, 2),
            chunk("b.000002", 0, 10, 3),
        ];
        assert_eq!(spans(&holed).len(), 2);
        // A stream resuming after a recorded end starts in the next file.
        assert_eq!(
            spans(&[chunk("b.000001", 0, 100, 1), eof("b.000001", 100, 2)])[0]
                .end
                .to_string(),
            "b.000002:0"
        );
    }

    fn base(id: &str, ready_ms: i64, pos: &str) -> Base {
        Base {
            backup_id: id.into(),
            ready_ms,
            position: Position::parse(pos).unwrap(),
        }
    }

    #[test]
    fn the_window_runs_from_each_base_to_the_end_of_its_log_and_names_gaps() {
        let s = spans(&[
            chunk("binlog.000001", 0, 100, 10_000),
            chunk("binlog.000001", 100, 200, 20_000),
            chunk("binlog.000003", 0, 100, 80_000),
            chunk("binlog.000003", 100, 300, 90_000),
        ]);
        let bases = [
            base("b1", 500, "binlog.000001:40"),
            base("b2", 70_000, "binlog.000003:0"),
        ];
        // Each range ends SETTLE_MS before its newest chunk.
        let w = window(&bases, &s);
        assert_eq!(
            w.intervals,
            [
                Interval {
                    from_ms: 500,
                    to_ms: 15_000
                },
                Interval {
                    from_ms: 70_000,
                    to_ms: 85_000
                }
            ]
        );
        assert_eq!(
            w.gaps,
            [Interval {
                from_ms: 15_000,
                to_ms: 70_000
            }]
        );
        assert!(describe(&w).contains("gaps"));
    }

    #[test]
    fn a_plan_takes_the_newest_base_and_log_through_the_first_piece_after_the_moment() {
        let s = spans(&[
            chunk("binlog.000001", 0, 100, 10_000),
            chunk("binlog.000001", 100, 200, 20_000),
            chunk("binlog.000001", 200, 300, 30_000),
            chunk("binlog.000001", 300, 400, 40_000),
        ]);
        let bases = [
            base("b1", 500, "binlog.000001:50"),
            base("b2", 15_000, "binlog.000001:150"),
        ];
        // Through the first piece received more than SETTLE_MS after the moment.
        let (b, pieces) = plan(16_000, &bases, &s).unwrap();
        assert_eq!(b.backup_id, "b2");
        let ranges: Vec<_> = pieces.iter().map(|p| (p.offset, p.end)).collect();
        assert_eq!(ranges, [(0, 100), (100, 200), (200, 300)]);
        let (b, _) = plan(12_000, &bases, &s).unwrap();
        assert_eq!(b.backup_id, "b1");
        let before = plan(100, &bases, &s).unwrap_err().to_string();
        assert!(before.contains("outside the recovery window"), "{before}");
        assert!(
            before.contains("1970-01-01T00:00:00.500Z to 1970-01-01T00:00:35.000Z"),
            "{before}"
        );
        assert!(plan(35_001, &bases, &s).is_err());
    }

    #[test]
    fn a_mark_of_an_idle_server_extends_the_window_to_its_moment_and_ends_the_plan_there() {
        let mark = chunk("binlog.000001", 200, 200, 60_000);
        assert!(mark.is_mark() && !chunk("binlog.000001", 0, 1, 1).is_mark());
        let s = spans(&[
            chunk("binlog.000001", 0, 100, 10_000),
            chunk("binlog.000001", 100, 200, 20_000),
            // idle from 20 s: at 60 s the server had written nothing past byte 200
            mark,
            chunk("binlog.000001", 200, 300, 90_000),
        ]);
        assert_eq!(s.len(), 1, "a mark continues its span: {s:#?}");
        assert_eq!((s[0].to_ms, s[0].covered_ms), (90_000, 85_000));
        let bases = [base("b1", 500, "binlog.000001:50")];
        // Without the mark the window would stop at 15 s until the next write.
        let idle = spans(&[
            chunk("binlog.000001", 0, 100, 10_000),
            chunk("binlog.000001", 100, 200, 20_000),
            chunk("binlog.000001", 200, 200, 60_000),
        ]);
        assert_eq!(window(&bases, &idle).intervals[0].to_ms, 60_000);
        // A moment in the quiet stretch reads through the mark's position, not further.
        let (_, pieces) = plan(40_000, &bases, &s).unwrap();
        let ranges: Vec<_> = pieces.iter().map(|p| (p.offset, p.end)).collect();
        assert_eq!(ranges, [(0, 100), (100, 200)]);
        // A moment after the mark: through the first piece received SETTLE_MS after it.
        let (_, pieces) = plan(70_000, &bases, &s).unwrap();
        assert_eq!(pieces.len(), 3);
        assert!(plan(85_001, &bases, &s).is_err());
        // A mark past a hole does not bridge it.
        let holed = spans(&[
            chunk("binlog.000001", 0, 100, 10_000),
            chunk("binlog.000001", 150, 150, 60_000),
        ]);
        assert_eq!(holed.len(), 2);
        assert_eq!(window(&bases, &holed).intervals[0].to_ms, 5_000);
    }

    #[test]
    fn only_files_before_the_oldest_base_are_pruned_and_nothing_without_a_base() {
        let chunks = [
            chunk("binlog.000001", 0, 100, 1),
            chunk("binlog.000002", 0, 100, 2),
            chunk("binlog.000003", 0, 100, 3),
        ];
        assert!(prunable(&chunks, None).is_empty());
        let oldest = Position::parse("binlog.000002:50").unwrap();
        let gone: Vec<&str> = prunable(&chunks, Some(&oldest))
            .iter()
            .map(|c| c.file.as_str())
            .collect();
        assert_eq!(gone, ["binlog.000001"]);
        assert_eq!(stream_of_slot("db/postgres-base/main").unwrap(), "db.main");
        assert_eq!(stream_of_slot("db/mariadb/legacy/0").unwrap(), "db.legacy");
        assert_eq!(stream_of_slot("api/volume/up"), None);
    }

    #[test]
    fn at_times_are_rfc3339_or_relative() {
        let now = 1_000_000_000;
        assert_eq!(parse_at("-2h", now).unwrap(), now - 7_200_000);
        assert_eq!(parse_at("-90s", now).unwrap(), now - 90_000);
        assert_eq!(parse_at("1970-01-01T01:00:00+01:00", now).unwrap(), 0);
        let err = parse_at("yesterday", now).unwrap_err().to_string();
        assert!(err.contains("RFC 3339"), "{err}");
    }

    #[test]
    fn positions_parse_and_print() {
        let p = Position::parse("binlog.000003:1234").unwrap();
        assert_eq!((p.file.as_str(), p.offset), ("binlog.000003", 1234));
        assert_eq!(p.to_string(), "binlog.000003:1234");
        assert_eq!(Position::parse("../x:1"), None);
        assert_eq!(Position::parse("x:-1"), None);
    }
}
