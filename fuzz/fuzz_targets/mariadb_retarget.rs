//! Any bytes as a mariadb-dump stream read back from storage, through the filter that aims it at
//! another database: reading it to the end may fail but never panic or loop, and the output must
//! not depend on how the stream is cut into reads.
//!
//! Input: the source database name, `\n`, the target database name, `\n`, then the dump (the
//! corpus seeds start with `ferry_fuzz_seed\ncopy\n`, the name they were dumped under).
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;

// The filter's own source, compiled into this target: it depends on `std` only, so the fuzz
// build needs none of ferry-worker's dependency tree (see ../README.md).
#[allow(dead_code)]
#[path = "../../worker/src/engines/mariadb/retarget.rs"]
mod retarget;

/// A reader handing out at most `step` bytes per call.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Reads `inner` through the filter, `read_size` bytes at a time.
fn retarget(inner: impl Read, from: &str, to: &str, read_size: usize) -> Vec<u8> {
    let mut filter = retarget::Retarget::new(inner, from, to);
    let mut out = Vec::new();
    let mut buf = vec![0u8; read_size];
    loop {
        match filter.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading from a slice failed: {e}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let (Some(from), Some(to), Some(dump)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    // Database names are at most 64 characters.
    if from.len() > 256 || to.len() > 256 {
        return;
    }
    let (from, to) = (String::from_utf8_lossy(from), String::from_utf8_lossy(to));
    let whole = retarget(dump, &from, &to, 64 << 10);
    // The same stream in small, odd-sized pieces (chosen by the input) gives the same output.
    let step = 1 + usize::from(from.len() as u8 ^ to.len() as u8) % 97;
    let read_size = 1 + dump.len() % 61;
    let pieces = retarget(Trickle { data: dump, step }, &from, &to, read_size);
    assert!(
        whole == pieces,
        "the output depends on the reads (step {step}, read size {read_size})"
    );
    // Growth is bounded: only the recognised statements change, each by the names' lengths.
    assert!(whole.len() <= dump.len() + dump.len() / 4 * (to.len() + 2) + 64);
});
