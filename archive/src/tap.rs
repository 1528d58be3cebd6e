//! Each member's PAX extended header, read whole beside the `tar` crate.
//!
//! `tar` 0.4.46 hands PAX records out by splitting the header's data at newlines, so a value
//! that holds one — an ACL in text form, a binary attribute value with a 0x0A byte — ends the
//! records early and everything after it is lost. [`Tap`] sits between the input and the
//! crate, follows the tar framing of the bytes the crate reads (header blocks, GNU sparse
//! extension blocks, data and padding, PAX `size` overrides), and keeps the data of the `x`
//! header that precedes each member; [`records`] parses it by its length prefixes as POSIX
//! says. The crate reads a member's headers before handing the member out and nothing beyond
//! them, so when an entry arrives [`Tap::current`] holds its PAX data.
//!
//! Memory is bounded: at most [`MAX_PAX`] bytes of one header are kept; everything else only
//! passes through. The crate itself reads PAX headers and GNU long names whole into memory, so
//! a header that declares more than [`MAX_PAX`] (PAX) or [`MAX_LONG_NAME`] (GNU long name or
//! link) bytes fails the read at once: a 1 KiB archive cannot make a restore allocate
//! gigabytes.

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

const BLOCK: usize = 512;
/// Most bytes of one member's PAX data kept: attributes (1 MiB) plus the usual records.
pub(crate) const MAX_PAX: usize = crate::xattrs::MAX_ENTRY_BYTES + (64 << 10);

/// Most bytes of a GNU long name or link target (Linux's `PATH_MAX` is 4 KiB).
pub(crate) const MAX_LONG_NAME: u64 = 64 << 10;

/// The PAX data of the member the crate handed out last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pax {
    None,
    Data(Vec<u8>),
    /// More than [`MAX_PAX`] bytes: refused.
    TooLarge,
}

/// Where the framing is.
#[derive(Debug)]
enum Phase {
    /// Collecting a 512-byte header block.
    Header,
    /// Collecting a GNU sparse extension block; `data` bytes follow the last one.
    Extension { data: u64 },
    /// Passing a member's data (and then its padding).
    Data { left: u64, pad: u64, kind: Kind },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// A PAX extended header for the next member: kept.
    Pax,
    /// Anything else: passed.
    Other,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    block: Vec<u8>,
    /// The PAX header being read.
    capture: Vec<u8>,
    overflow: bool,
    /// A PAX header read, waiting for its member.
    pending: Pax,
    /// The PAX data of the latest member.
    current: Pax,
}

/// The reader the `tar` crate reads through.
pub(crate) struct Tap<R> {
    inner: R,
    state: Rc<RefCell<State>>,
}

/// A handle on what the tap saw, kept by the extractor.
#[derive(Clone)]
pub(crate) struct Seen(Rc<RefCell<State>>);

impl Seen {
    /// The PAX data of the member whose header was read last.
    pub(crate) fn current(&self) -> Pax {
        self.0.borrow().current.clone()
    }
}

impl<R: Read> Tap<R> {
    pub(crate) fn new(inner: R) -> (Tap<R>, Seen) {
        let state = Rc::new(RefCell::new(State {
            phase: Phase::Header,
            block: Vec::with_capacity(BLOCK),
            capture: Vec::new(),
            overflow: false,
            pending: Pax::None,
            current: Pax::None,
        }));
        let seen = Seen(state.clone());
        (Tap { inner, state }, seen)
    }

    pub(crate) fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.state.borrow_mut().feed(&buf[..n])?;
        Ok(n)
    }
}

impl State {
    fn feed(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.phase {
                Phase::Header | Phase::Extension { .. } => {
                    let take = (BLOCK - self.block.len()).min(bytes.len());
                    self.block.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.block.len() == BLOCK {
                        let block = std::mem::take(&mut self.block);
                        self.block_done(&block)?;
                        self.block = block;
                        self.block.clear();
                    }
                }
                Phase::Data {
                    mut left,
                    mut pad,
                    kind,
                } => {
                    if left > 0 {
                        let take = left.min(bytes.len() as u64) as usize;
                        if kind == Kind::Pax {
                            if self.capture.len() + take <= MAX_PAX {
                                self.capture.extend_from_slice(&bytes[..take]);
                            } else {
                                self.overflow = true;
                            }
                        }
                        left -= take as u64;
                        bytes = &bytes[take..];
                    } else {
                        let take = pad.min(bytes.len() as u64) as usize;
                        pad -= take as u64;
                        bytes = &bytes[take..];
                    }
                    if left > 0 || pad > 0 {
                        self.phase = Phase::Data { left, pad, kind };
                        continue;
                    }
                    self.phase = Phase::Header;
                    if kind == Kind::Pax {
                        self.pending = if self.overflow {
                            self.capture.clear();
                            Pax::TooLarge
                        } else {
                            Pax::Data(std::mem::take(&mut self.capture))
                        };
                        self.overflow = false;
                    }
                }
            }
        }
        Ok(())
    }

    fn block_done(&mut self, block: &[u8]) -> io::Result<()> {
        if let Phase::Extension { data } = self.phase {
            // `isextended` of a GNU sparse extension block: another one follows.
            self.phase = if block[504] != 0 {
                Phase::Extension { data }
            } else {
                Phase::data(data, Kind::Other)
            };
            return Ok(());
        }
        if block.iter().all(|&b| b == 0) {
            // End-of-archive blocks.
            return Ok(());
        }
        let size = parse_size(&block[124..136]).unwrap_or(0);
        let limit = match block[156] {
            b'x' | b'X' | b'g' => Some(MAX_PAX as u64),
            b'L' | b'K' => Some(MAX_LONG_NAME),
            _ => None,
        };
        if let Some(limit) = limit.filter(|&limit| size > limit) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a '{}' header declares {size} bytes of names or attributes (at most \
                     {limit}); refused as hostile",
                    block[156] as char
                ),
            ));
        }
        match block[156] {
            b'x' | b'X' => self.phase = Phase::data(size, Kind::Pax),
            // Global records, GNU long names and link targets describe the next member.
            b'g' | b'L' | b'K' => self.phase = Phase::data(size, Kind::Other),
            kind => {
                let pax = std::mem::replace(&mut self.pending, Pax::None);
                // A PAX `size` record overrides the header's, as the crate honours it.
                let size = match &pax {
                    Pax::Data(data) => records(data)
                        .find(|(k, _)| *k == b"size")
                        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
                        .unwrap_or(size),
                    _ => size,
                };
                self.current = pax;
                // Old GNU sparse: `isextended` at 482 means extension blocks come first.
                self.phase = if kind == b'S' && block[482] != 0 {
                    Phase::Extension { data: size }
                } else {
                    Phase::data(size, Kind::Other)
                };
            }
        }
        Ok(())
    }
}

impl Phase {
    fn data(size: u64, kind: Kind) -> Phase {
        let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        if size == 0 {
            Phase::Header
        } else {
            Phase::Data {
                left: size,
                pad,
                kind,
            }
        }
    }
}

/// A numeric header field: octal digits (spaces and NULs around them), or GNU base-256 (high
/// bit of the first byte set, big-endian). `None` when malformed or negative.
fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        if field[0] == 0xff {
            return None;
        }
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(value);
    }
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c| c == ' ' || c == '\0');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

/// The records of PAX extended header data, `LENGTH KEY=VALUE\n` each, read by their length
/// (values may hold newlines and any byte). Stops at the first malformed record.
pub(crate) fn records(data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let space = rest.iter().take(20).position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return None;
        }
        let record = &rest[space + 1..len - 1];
        rest = &rest[len..];
        let eq = record.iter().position(|&b| b == b'=')?;
        Some((&record[..eq], &record[eq + 1..]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, value: &[u8]) -> Vec<u8> {
        let rest = key.len() + value.len() + 3;
        let len = (1..)
            .map(|digits| rest + digits)
            .find(|len| rest + len.to_string().len() == *len)
            .unwrap();
        let mut out = format!("{len} {key}=").into_bytes();
        out.extend_from_slice(value);
        out.push(b'\n');
        out
    }

    #[test]
    fn records_are_read_by_length_whatever_the_values_hold() {
        let mut data = record("mtime", b"1.5");
        data.extend(record("SCHILY.acl.access", b"user::rw-\ngroup::r--\n"));
        data.extend(record(
            "SCHILY.xattr.user.bin",
            &[0, b'\n', b'\n', b'=', 255],
        ));
        data.extend(record("SCHILY.xattr.user.empty", b""));
        let got: Vec<_> = records(&data).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[1].1, b"user::rw-\ngroup::r--\n");
        assert_eq!(got[2].1, &[0, b'\n', b'\n', b'=', 255]);
        assert_eq!(got[3], (&b"SCHILY.xattr.user.empty"[..], &b""[..]));
        // Malformed: stop, never panic.
        for bad in [
            &b"99 a=b\n"[..],
            b"x a=b\n",
            b"5 ab\n",
            b"3 a\n",
            b"",
            b"0 \n",
        ] {
            assert!(records(bad).next().is_none(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_in_octal_and_base_256() {
        assert_eq!(parse_size(b"00000001750\0"), Some(1000));
        assert_eq!(parse_size(b"        \0\0\0\0"), Some(0));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[7] = 2; // 2 << 32
        assert_eq!(parse_size(&big), Some(2u64 << 32));
        assert_eq!(parse_size(&[0xff; 12]), None);
        assert_eq!(parse_size(b"12x45678901\0"), None);
    }
}
