//! Starting the kernel's writeback of a file range without waiting for it
//! (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, Linux only; elsewhere a no-op). A put that calls it
//! as it writes leaves little for its final fsync: the disk works while the archive is still
//! being produced instead of after. It makes nothing durable by itself; the fsync still does.

use std::fs::File;

/// Asks the kernel to start writing back `len` bytes of `file` from `offset`. Advisory: an
/// error (a file system without support, say) is ignored, the final fsync covers it.
pub fn start(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: sync_file_range reads no memory of ours; the descriptor is valid for the
        // borrow of `file`, and a bad range only yields an error.
        #[allow(unsafe_code)]
        let _ = unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    #[test]
    fn starting_writeback_leaves_the_content_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&[7u8; 1 << 20]).unwrap();
        super::start(&f, 0, 1 << 20);
        // Past the end, and a range too large for off_t: ignored.
        super::start(&f, 1 << 30, 4096);
        super::start(&f, u64::MAX, 1);
        f.sync_all().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 1 << 20]);
    }
}
