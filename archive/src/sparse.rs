//! Sparse files in the old GNU sparse format (entry type 'S').
//!
//! The `tar` crate reads these entries (holes come back as zeros) but its
//! writer cannot be combined with a progress counter or with files that change
//! size while read, so the writing half lives here: find the data regions
//! with `lseek(SEEK_DATA/SEEK_HOLE)`, encode the map into the header and its
//! extension blocks, and on restore turn zero runs back into holes.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use tar::{EntryType, GnuExtSparseHeader, Header};

/// Tar block size: archive data is laid out in these.
pub(crate) const TAR_BLOCK: u64 = 512;

/// Past this many regions the map (kept in memory, and 24 bytes per region
/// in the archive) stops paying off; such files are stored densely.
const MAX_REGIONS: usize = 1 << 16;

/// Granularity of hole detection on restore: one file system page.
const HOLE_BLOCK: usize = 4096;

/// Map entries that fit in the main GNU header; the rest go to extension
/// blocks of 21 each.
const HEADER_SLOTS: usize = 4;

/// One data region of a sparse file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    /// Offset in the file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Data regions of `file`, whose size was `size` when opened.
///
/// `None` means "store it as a regular file": the file system cannot report
/// holes, the file has no holes after all, or it changed under us.
/// Note: moves the file offset (callers read with positioned reads).
pub(crate) fn data_regions(file: &File, size: u64) -> io::Result<Option<Vec<Region>>> {
    let mut raw = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let data = match seek(file, pos, Whence::Data)? {
            Seek::At(d) if d >= pos => d,
            Seek::At(_) | Seek::Unsupported => return Ok(None),
            Seek::PastEnd => break, // only a hole is left
        };
        if data >= size {
            break;
        }
        let hole = match seek(file, data, Whence::Hole)? {
            Seek::At(h) => h,
            Seek::PastEnd => size, // shrank under us: the copy pads with zeros
            Seek::Unsupported => return Ok(None),
        };
        if hole <= data {
            return Ok(None);
        }
        let end = hole.min(size);
        raw.push(Region {
            offset: data,
            len: end - data,
        });
        if raw.len() > MAX_REGIONS {
            return Ok(None);
        }
        pos = end;
    }
    let regions = align(raw, size);
    let dense = matches!(regions.as_slice(), [r] if r.offset == 0 && r.len == size);
    Ok((!dense).then_some(regions))
}

/// Makes the map something every reader accepts: regions start on 512-byte
/// boundaries and all but the last end on one (the `tar` crate requires the
/// data before each region to be block-aligned), overlaps merge, and a final
/// empty region at `size` marks a trailing hole, since readers take the end
/// of the last region as the file size.
fn align(raw: Vec<Region>, size: u64) -> Vec<Region> {
    let mut out: Vec<Region> = Vec::with_capacity(raw.len() + 1);
    for r in raw {
        let start = r.offset / TAR_BLOCK * TAR_BLOCK;
        let end = r
            .offset
            .saturating_add(r.len)
            .div_ceil(TAR_BLOCK)
            .saturating_mul(TAR_BLOCK)
            .min(size);
        if let Some(last) = out.last_mut()
            && start <= last.offset + last.len
        {
            last.len = end.max(last.offset + last.len) - last.offset;
            continue;
        }
        out.push(Region {
            offset: start,
            len: end - start,
        });
    }
    let reach = out.last().map_or(0, |r| r.offset + r.len);
    if reach < size {
        out.push(Region {
            offset: size,
            len: 0,
        });
    }
    out
}

/// Turns `header` into a GNU sparse header for `regions` of a file of
/// `real_size` bytes: type 'S', size = data bytes stored, `realsize`, the
/// first four map entries and the "extended" flag.
pub(crate) fn fill_header(
    header: &mut Header,
    regions: &[Region],
    real_size: u64,
) -> io::Result<()> {
    header.set_entry_type(EntryType::GNUSparse);
    header.set_size(regions.iter().map(|r| r.len).sum());
    let gnu = header
        .as_gnu_mut()
        .ok_or_else(|| io::Error::other("sparse entries need a GNU header"))?;
    gnu.set_real_size(real_size);
    for (slot, r) in gnu.sparse.iter_mut().zip(regions) {
        slot.set_offset(r.offset);
        slot.set_length(r.len);
    }
    gnu.set_is_extended(regions.len() > HEADER_SLOTS);
    Ok(())
}

/// Writes the extension blocks carrying the map entries past the fourth; they
/// follow the header directly, before the data.
pub(crate) fn write_ext_headers(out: &mut impl Write, regions: &[Region]) -> io::Result<()> {
    let rest = regions.get(HEADER_SLOTS..).unwrap_or(&[]);
    let mut chunks = rest.chunks(21).peekable();
    while let Some(chunk) = chunks.next() {
        let mut ext = GnuExtSparseHeader::new();
        for (slot, r) in ext.sparse.iter_mut().zip(chunk) {
            slot.set_offset(r.offset);
            slot.set_length(r.len);
        }
        ext.set_is_extended(chunks.peek().is_some());
        out.write_all(ext.as_bytes())?;
    }
    Ok(())
}

/// Writes `data`, which belongs at `offset` of a freshly created file, leaving
/// all-zero 4 KiB blocks unwritten so they stay holes (the caller sets the
/// final length). Slice equality compiles to memcmp, fast even unoptimised.
pub(crate) fn write_skipping_zeros(file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    static ZEROS: [u8; HOLE_BLOCK] = [0; HOLE_BLOCK];
    let mut run: Option<usize> = None;
    for (i, block) in data.chunks(HOLE_BLOCK).enumerate() {
        let at = i * HOLE_BLOCK;
        if block == &ZEROS[..block.len()] {
            if let Some(start) = run.take() {
                file.write_all_at(&data[start..at], offset + start as u64)?;
            }
        } else if run.is_none() {
            run = Some(at);
        }
    }
    if let Some(start) = run {
        file.write_all_at(&data[start..], offset + start as u64)?;
    }
    Ok(())
}

enum Whence {
    Data,
    Hole,
}

enum Seek {
    At(u64),
    /// ENXIO: no data (or no hole) at or after the offset.
    PastEnd,
    /// The system or file system cannot answer.
    Unsupported,
}

// std has no SEEK_DATA/SEEK_HOLE: the one raw call, allowed despite the
// workspace's unsafe_code = "deny".
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
#[allow(unsafe_code)]
fn seek(file: &File, offset: u64, whence: Whence) -> io::Result<Seek> {
    use std::os::fd::AsRawFd;
    let Ok(off) = libc::off_t::try_from(offset) else {
        return Ok(Seek::Unsupported);
    };
    let whence = match whence {
        Whence::Data => libc::SEEK_DATA,
        Whence::Hole => libc::SEEK_HOLE,
    };
    // SAFETY: lseek only reads its integer arguments; the fd is valid for the
    // lifetime of `file`.
    let r = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
    if r >= 0 {
        return Ok(Seek::At(r as u64));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENXIO) => Ok(Seek::PastEnd),
        Some(libc::EINVAL | libc::EOPNOTSUPP) => Ok(Seek::Unsupported),
        _ => Err(err),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn seek(_file: &File, _offset: u64, _whence: Whence) -> io::Result<Seek> {
    Ok(Seek::Unsupported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn r(offset: u64, len: u64) -> Region {
        Region { offset, len }
    }

    #[test]
    fn align_rounds_merges_and_terminates() {
        // Unaligned data regions grow to block bounds and merge when they touch.
        let got = align(vec![r(100, 10), r(600, 10), r(5000, 100)], 10_000);
        assert_eq!(got, vec![r(0, 1024), r(4608, 512), r(10_000, 0)]);
        // Data reaching the end needs no terminator, even if the end is unaligned.
        assert_eq!(
            align(vec![r(0, 10), r(4096, 904)], 5000),
            vec![r(0, 512), r(4096, 904)]
        );
        // No data at all: just the terminator.
        assert_eq!(align(vec![], 1 << 30), vec![r(1 << 30, 0)]);
    }

    #[test]
    fn finds_regions_of_a_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let f = File::create(&path).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&[1u8; 4096], 0).unwrap();
        f.write_all_at(&[2u8; 4096], 32 << 20).unwrap();
        f.sync_all().unwrap();
        let meta = f.metadata().unwrap();
        assert!(meta.blocks() * 512 < meta.len());
        let regions = data_regions(&f, meta.len()).unwrap().expect("sparse");
        // File systems may report bigger extents; they must cover the data and stay small.
        assert!(regions.iter().any(|x| x.offset == 0 && x.len >= 4096));
        assert!(
            regions
                .iter()
                .any(|x| x.offset <= 32 << 20 && x.offset + x.len >= (32 << 20) + 4096)
        );
        assert_eq!(regions.last().unwrap(), &r(64 << 20, 0));
        assert!(regions.iter().map(|x| x.len).sum::<u64>() < 4 << 20);
    }

    #[test]
    fn dense_file_is_not_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        std::fs::write(&path, vec![7u8; 100_000]).unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(data_regions(&f, 100_000).unwrap(), None);
    }

    #[test]
    fn zero_blocks_become_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z");
        let f = File::create(&path).unwrap();
        let mut data = vec![0u8; 1 << 20];
        data[10] = 1;
        data[(1 << 20) - 1] = 2;
        write_skipping_zeros(&f, 0, &data).unwrap();
        write_skipping_zeros(&f, 1 << 20, &vec![0u8; 1 << 20]).unwrap();
        f.set_len(2 << 20).unwrap();
        f.sync_all().unwrap();
        assert_eq!(std::fs::read(&path).unwrap()[..1 << 20], data[..]);
        assert!(f.metadata().unwrap().blocks() * 512 <= 64 * 1024);
    }
}
