//! The index of one volume backup: the volume's tar stream as a recipe. Tar headers (with
//! every attribute a full archive keeps) are stored inline; each regular file's content is a
//! list of chunk references into packs. Replaying the records in order gives back, byte for
//! byte, the tar stream a full backup would have written, so restores use the same extractor
//! and its rules.
//!
//! Binary, little-endian, zstd-compressed as a whole; read and written as a stream:
//!
//! ```text
//! "FERRYIX1"
//! 'I' len:u32 bytes                      tar bytes stored inline (headers, padding, the end)
//! 'F' len:u32 path size:u64 mtime:i64 mtime_ns:u32 ctime:i64 ctime_ns:u32 ino:u64 content:u64
//! 'C' id:[32] len:u16 pack offset:u64 stored:u32 raw:u32     one chunk of the file above
//! 'D'                                    the file's chunks end
//! 'E' tar_bytes:u64 chunks:u64           the end; an index without it is truncated
//! ```

use std::io::{self, Read, Write};

use ferry_archive::FileKey;

/// The first bytes of every index.
pub const MAGIC: &[u8; 8] = b"FERRYIX1";
/// Largest inline record written (and accepted).
pub const MAX_INLINE: usize = 1 << 20;
/// Longest path accepted.
const MAX_PATH: usize = 64 * 1024;

/// A chunk's id: the SHA-256 of its content.
pub type ChunkId = [u8; 32];

/// Where one chunk is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRef {
    pub id: ChunkId,
    /// The pack's name (see `layout`).
    pub pack: String,
    /// Offset of the compressed chunk in the pack.
    pub offset: u64,
    /// Compressed length.
    pub stored: u32,
    /// Content length.
    pub raw: u32,
}

/// A regular file whose content follows as chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub path: Vec<u8>,
    pub key: FileKey,
    pub content_len: u64,
}

/// One record of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Inline(Vec<u8>),
    File(FileRecord),
    Chunk(ChunkRef),
    FileEnd,
    End { tar_bytes: u64, chunks: u64 },
}

/// Writes records (into a compressor, usually).
#[derive(Debug)]
pub struct IndexWriter<W: Write> {
    out: W,
}

impl<W: Write> IndexWriter<W> {
    pub fn new(mut out: W) -> io::Result<IndexWriter<W>> {
        out.write_all(MAGIC)?;
        Ok(IndexWriter { out })
    }

    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        let o = &mut self.out;
        match record {
            Record::Inline(bytes) => {
                o.write_all(b"I")?;
                o.write_all(&len32(bytes.len())?.to_le_bytes())?;
                o.write_all(bytes)
            }
            Record::File(f) => {
                o.write_all(b"F")?;
                o.write_all(&len32(f.path.len())?.to_le_bytes())?;
                o.write_all(&f.path)?;
                let k = &f.key;
                o.write_all(&k.size.to_le_bytes())?;
                o.write_all(&k.mtime_s.to_le_bytes())?;
                o.write_all(&k.mtime_ns.to_le_bytes())?;
                o.write_all(&k.ctime_s.to_le_bytes())?;
                o.write_all(&k.ctime_ns.to_le_bytes())?;
                o.write_all(&k.ino.to_le_bytes())?;
                o.write_all(&f.content_len.to_le_bytes())
            }
            Record::Chunk(c) => {
                o.write_all(b"C")?;
                o.write_all(&c.id)?;
                let pack = u16::try_from(c.pack.len()).map_err(|_| bad("pack name too long"))?;
                o.write_all(&pack.to_le_bytes())?;
                o.write_all(c.pack.as_bytes())?;
                o.write_all(&c.offset.to_le_bytes())?;
                o.write_all(&c.stored.to_le_bytes())?;
                o.write_all(&c.raw.to_le_bytes())
            }
            Record::FileEnd => o.write_all(b"D"),
            Record::End { tar_bytes, chunks } => {
                o.write_all(b"E")?;
                o.write_all(&tar_bytes.to_le_bytes())?;
                o.write_all(&chunks.to_le_bytes())
            }
        }
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

fn len32(n: usize) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| bad("record too long"))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("index: {what}"))
}

/// Reads records, refusing anything malformed (an index is input like any archive).
#[derive(Debug)]
pub struct IndexReader<R: Read> {
    input: R,
    ended: bool,
}

impl<R: Read> IndexReader<R> {
    pub fn new(mut input: R) -> io::Result<IndexReader<R>> {
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|_| bad("too short to be an index"))?;
        if &magic != MAGIC {
            return Err(bad("not a Ferry index (wrong magic)"));
        }
        Ok(IndexReader {
            input,
            ended: false,
        })
    }

    /// The next record; `None` after the end record. An input that stops before it is an
    /// error.
    pub fn next_record(&mut self) -> io::Result<Option<Record>> {
        if self.ended {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        if self.input.read(&mut tag)? == 0 {
            return Err(bad("truncated (no end record)"));
        }
        let record = match tag[0] {
            b'I' => {
                let n = self.u32()? as usize;
                if n > MAX_INLINE {
                    return Err(bad("inline record too long"));
                }
                Record::Inline(self.bytes(n)?)
            }
            b'F' => {
                let n = self.u32()? as usize;
                if n > MAX_PATH {
                    return Err(bad("path too long"));
                }
                let path = self.bytes(n)?;
                let key = FileKey {
                    size: self.u64()?,
                    mtime_s: self.u64()? as i64,
                    mtime_ns: self.u32()?,
                    ctime_s: self.u64()? as i64,
                    ctime_ns: self.u32()?,
                    ino: self.u64()?,
                };
                Record::File(FileRecord {
                    path,
                    key,
                    content_len: self.u64()?,
                })
            }
            b'C' => {
                let mut id = [0u8; 32];
                self.exact(&mut id)?;
                let mut n = [0u8; 2];
                self.exact(&mut n)?;
                let pack = String::from_utf8(self.bytes(u16::from_le_bytes(n) as usize)?)
                    .map_err(|_| bad("pack name is not UTF-8"))?;
                let chunk = ChunkRef {
                    id,
                    pack,
                    offset: self.u64()?,
                    stored: self.u32()?,
                    raw: self.u32()?,
                };
                // Nothing this side wrote is larger: a hostile index cannot make a reader
                // allocate more than a chunk.
                if chunk.raw as usize > crate::chunker::MAX
                    || chunk.stored as usize > zstd::zstd_safe::compress_bound(crate::chunker::MAX)
                {
                    return Err(bad("chunk larger than any chunk Ferry writes"));
                }
                Record::Chunk(chunk)
            }
            b'D' => Record::FileEnd,
            b'E' => {
                self.ended = true;
                Record::End {
                    tar_bytes: self.u64()?,
                    chunks: self.u64()?,
                }
            }
            other => return Err(bad(&format!("unknown record type {other:#04x}"))),
        };
        Ok(Some(record))
    }

    /// After the end record: reads what is left of the input and refuses anything there.
    pub fn expect_eof(&mut self) -> io::Result<()> {
        let rest = io::copy(&mut self.input, &mut io::sink())?;
        if rest > 0 {
            return Err(bad("data after the end record"));
        }
        Ok(())
    }

    fn exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.input.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                bad("truncated inside a record")
            } else {
                e
            }
        })
    }

    fn bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut v = vec![0u8; n];
        self.exact(&mut v)?;
        Ok(v)
    }

    fn u32(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// Compares two archive paths in the order the tree writer visits them (depth first, each
/// directory's names sorted by bytes): component by component, so `a/b` comes before `a.txt`.
pub fn walk_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.split(|c| *c == b'/').cmp(b.split(|c| *c == b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record::Inline(vec![1; 1024]),
            Record::File(FileRecord {
                path: b"dir/caf\xe9".to_vec(),
                key: FileKey {
                    size: 5,
                    mtime_s: -3,
                    mtime_ns: 7,
                    ctime_s: 1_700_000_000,
                    ctime_ns: 999_999_999,
                    ino: u64::MAX,
                },
                content_len: 5,
            }),
            Record::Chunk(ChunkRef {
                id: [9; 32],
                pack: "0000000000001-abc".into(),
                offset: 1 << 40,
                stored: 3,
                raw: 5,
            }),
            Record::FileEnd,
            Record::End {
                tar_bytes: 3072,
                chunks: 1,
            },
        ]
    }

    fn encode(records: &[Record]) -> Vec<u8> {
        let mut w = IndexWriter::new(Vec::new()).unwrap();
        for r in records {
            w.write(r).unwrap();
        }
        w.into_inner()
    }

    #[test]
    fn records_round_trip() {
        let bytes = encode(&sample());
        let mut r = IndexReader::new(&bytes[..]).unwrap();
        let mut back = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            back.push(rec);
        }
        assert_eq!(back, sample());
    }

    #[test]
    fn truncated_or_foreign_input_is_refused() {
        let bytes = encode(&sample());
        for cut in [bytes.len() - 1, bytes.len() - 17, 40, 9] {
            let mut r = IndexReader::new(&bytes[..cut]).unwrap();
            let err = loop {
                match r.next_record() {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("a cut at {cut} read as complete"),
                    Err(e) => break e,
                }
            };
            assert_eq!(
                err.kind(),
                io::ErrorKind::InvalidData,
                "cut at {cut}: {err}"
            );
        }
        assert!(IndexReader::new(&b"PK\x03\x04 not an index"[..]).is_err());
        let mut junk = MAGIC.to_vec();
        junk.extend_from_slice(b"Z");
        assert!(IndexReader::new(&junk[..]).unwrap().next_record().is_err());
        let mut huge = MAGIC.to_vec();
        huge.push(b'I');
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(IndexReader::new(&huge[..]).unwrap().next_record().is_err());
    }

    #[test]
    fn walk_order_is_component_wise() {
        use std::cmp::Ordering::*;
        assert_eq!(walk_cmp(b"a/b", b"a.txt"), Less);
        assert_eq!(walk_cmp(b"a", b"a/b"), Less);
        assert_eq!(walk_cmp(b"a/z", b"b"), Less);
        assert_eq!(walk_cmp(b"x/y", b"x/y"), Equal);
        assert_eq!(walk_cmp(b"b", b"a/z"), Greater);
    }
}
