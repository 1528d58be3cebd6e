//! Content-defined chunking of a byte stream that arrives in pieces (FastCDC 2020).
//!
//! The cut points depend only on the content, so an insertion early in a file moves the
//! boundaries near it and leaves the later chunks (and their ids) as they were. Bytes are
//! pushed in as they come; a chunk is cut once `MAX` bytes are buffered (FastCDC never looks
//! further than `MAX` from a chunk's start, so the cuts equal those of the whole input at once).

use fastcdc::v2020::FastCDC;

/// No chunk is smaller (except a file's last).
pub const MIN: usize = 256 * 1024;
/// The average chunk size (DESIGN §10: about 1 MiB).
pub const AVG: usize = 1024 * 1024;
/// No chunk is larger.
pub const MAX: usize = 4 * 1024 * 1024;

/// A push-based chunker; memory is bounded by `2 × MAX` (allocated on first use).
#[derive(Debug, Default)]
pub struct Chunker {
    buf: Vec<u8>,
    /// Start of the bytes not yet cut.
    start: usize,
}

impl Chunker {
    /// Adds `data`, calling `emit` for every chunk that is now certain.
    pub fn push<E>(
        &mut self,
        mut data: &[u8],
        emit: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.buf.capacity() < 2 * MAX {
            self.buf.reserve_exact(2 * MAX - self.buf.len());
        }
        while !data.is_empty() {
            if self.buf.len() == 2 * MAX {
                self.compact();
            }
            let room = 2 * MAX - self.buf.len();
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            while self.buf.len() - self.start >= MAX {
                let len = first_cut(&self.buf[self.start..]);
                emit(&self.buf[self.start..self.start + len])?;
                self.start += len;
            }
        }
        Ok(())
    }

    /// Cuts what is left (the end of a file) and resets the chunker for the next one.
    pub fn finish<E>(&mut self, emit: &mut impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        while self.start < self.buf.len() {
            let len = first_cut(&self.buf[self.start..]);
            emit(&self.buf[self.start..self.start + len])?;
            self.start += len;
        }
        self.buf.clear();
        self.start = 0;
        Ok(())
    }

    fn compact(&mut self) {
        self.buf.copy_within(self.start.., 0);
        self.buf.truncate(self.buf.len() - self.start);
        self.start = 0;
    }
}

/// Length of the first chunk of `data` (all of it when it is short).
fn first_cut(data: &[u8]) -> usize {
    FastCDC::new(data, MIN, AVG, MAX)
        .next()
        .map_or(data.len(), |c| c.length)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic, incompressible-looking bytes.
    pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn chunks_of(data: &[u8], piece: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut c = Chunker::default();
        let mut emit = |b: &[u8]| {
            out.push(b.to_vec());
            Ok::<(), ()>(())
        };
        for p in data.chunks(piece) {
            c.push(p, &mut emit).unwrap();
        }
        c.finish(&mut emit).unwrap();
        out
    }

    #[test]
    fn cuts_do_not_depend_on_how_the_bytes_arrive() {
        let data = noise(20 << 20, 7);
        let whole: Vec<usize> = FastCDC::new(&data, MIN, AVG, MAX)
            .map(|c| c.length)
            .collect();
        for piece in [1 << 20, 4096, 3 * MAX + 17] {
            let got: Vec<usize> = chunks_of(&data, piece).iter().map(Vec::len).collect();
            assert_eq!(got, whole, "pieces of {piece}");
        }
        assert_eq!(chunks_of(&data, 1 << 20).concat(), data);
        let avg = data.len() / whole.len();
        assert!((AVG / 2..AVG * 2).contains(&avg), "average chunk {avg}");
    }

    #[test]
    fn an_insertion_changes_only_the_chunks_around_it() {
        let data = noise(16 << 20, 3);
        let mut edited = data[..5 << 20].to_vec();
        edited.extend_from_slice(b"a few inserted bytes");
        edited.extend_from_slice(&data[5 << 20..]);
        let before = chunks_of(&data, 1 << 20);
        let after = chunks_of(&edited, 1 << 20);
        let common = after.iter().filter(|c| before.contains(c)).count();
        assert!(
            common + 3 >= after.len(),
            "{common} of {} chunks survived an insertion",
            after.len()
        );
    }

    #[test]
    fn short_input_is_one_chunk_and_empty_input_none() {
        assert_eq!(chunks_of(b"abc", 2), vec![b"abc".to_vec()]);
        assert!(chunks_of(b"", 2).is_empty());
    }
}
