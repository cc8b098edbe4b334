//! File-backed snapshots: openraft's snapshot data is a file on disk, streamed when built, sent
//! and installed, never held whole in memory.
//!
//! A data file is the state-machine column families (metadata, public, private) as records,
//! then the SHA-256 of everything before it, so a truncated or damaged snapshot is refused
//! before it replaces any state:
//!
//! ```text
//! tag   "wattle.snapshot2"          16 bytes
//! per family, in order sm_meta, public, private:
//!   record* : 0x01, u32 key length, key, u32 value length, value
//!   end     : 0x00
//! trailer: SHA-256 of all bytes above      32 bytes
//! ```
//!
//! The current snapshot is named by a small metadata file, `current`, replaced atomically
//! (write, fsync, rename), which names its data file.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use crate::kv::Cf;

const TAG: &[u8; 16] = b"wattle.snapshot2";
/// The families a snapshot carries, in file order.
pub const FAMILIES: [Cf; 3] = [Cf::SmMeta, Cf::Public, Cf::Private];
/// Largest key or value in a snapshot record.
const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// openraft's snapshot data: an open file, read and written with blocking calls. The files are
/// local and every call is short, and blocking keeps the deterministic simulation's order of
/// events independent of a thread pool.
#[derive(Debug)]
pub struct SnapshotFile {
    file: File,
    path: PathBuf,
    seek_result: Option<std::io::Result<u64>>,
}

impl SnapshotFile {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Ok(SnapshotFile { file: File::open(path)?, path: path.to_path_buf(), seek_result: None })
    }
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = File::options().read(true).write(true).create(true).truncate(true).open(path)?;
        Ok(SnapshotFile { file, path: path.to_path_buf(), seek_result: None })
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn into_file(self) -> File {
        self.file
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let read = self.file.read(buf.initialize_unfilled());
        Poll::Ready(read.map(|count| buf.advance(count)))
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.file.write(buf))
    }
    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.file.flush())
    }
    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_flush(context)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> std::io::Result<()> {
        let result = self.file.seek(position);
        self.seek_result = Some(result);
        Ok(())
    }
    fn poll_complete(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Poll::Ready(match self.seek_result.take() {
            Some(result) => result,
            None => self.file.stream_position(),
        })
    }
}

/// Writes a snapshot data file record by record.
pub struct SnapshotWriter {
    out: BufWriter<File>,
    hasher: Sha256,
    family: usize,
}

impl SnapshotWriter {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let mut writer = SnapshotWriter { out: BufWriter::new(File::create(path)?), hasher: Sha256::new(), family: 0 };
        writer.emit(TAG)?;
        Ok(writer)
    }

    fn emit(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hasher.update(bytes);
        self.out.write_all(bytes)
    }

    /// Appends a record of `cf`; families must come in [`FAMILIES`] order.
    pub fn record(&mut self, cf: Cf, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        while FAMILIES[self.family] != cf {
            self.end_family()?;
        }
        for part in [key, value] {
            if part.len() > RECORD_BYTES_MAX {
                return Err(std::io::Error::other(format!("snapshot record over {RECORD_BYTES_MAX} bytes")));
            }
        }
        self.emit(&[1])?;
        self.emit(&(key.len() as u32).to_be_bytes())?;
        self.emit(key)?;
        self.emit(&(value.len() as u32).to_be_bytes())?;
        self.emit(value)
    }

    fn end_family(&mut self) -> std::io::Result<()> {
        self.emit(&[0])?;
        self.family += 1;
        Ok(())
    }

    /// Ends the remaining families, writes the checksum and, if `sync`, fsyncs the file.
    pub fn finish(mut self, sync: bool) -> std::io::Result<()> {
        while self.family < FAMILIES.len() {
            self.end_family()?;
        }
        let digest = std::mem::take(&mut self.hasher).finalize();
        self.out.write_all(&digest)?;
        let file = self.out.into_inner().map_err(|error| error.into_error())?;
        if sync {
            file.sync_all()?;
        }
        Ok(())
    }
}

/// One key and value of a family.
pub type Record = (Cf, Vec<u8>, Vec<u8>);

/// Reads a snapshot data file from the start, verifying its checksum before returning any record.
/// The records come back whole, so a damaged file changes nothing.
pub fn read_records(file: &mut File) -> std::io::Result<Vec<Record>> {
    fn corrupt(what: &str) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("snapshot data: {what}"))
    }
    struct Hashing<R> {
        inner: R,
        hasher: Sha256,
    }
    impl<R: Read> Hashing<R> {
        fn exact(&mut self, buffer: &mut [u8]) -> std::io::Result<()> {
            self.inner.read_exact(buffer).map_err(|_| corrupt("truncated"))?;
            self.hasher.update(&buffer[..]);
            Ok(())
        }
        fn sized(&mut self) -> std::io::Result<Vec<u8>> {
            let mut length = [0u8; 4];
            self.exact(&mut length)?;
            let length = u32::from_be_bytes(length) as usize;
            if length > RECORD_BYTES_MAX {
                return Err(corrupt("record too large"));
            }
            let mut bytes = vec![0u8; length];
            self.exact(&mut bytes)?;
            Ok(bytes)
        }
    }
    file.seek(SeekFrom::Start(0))?;
    let mut reader = Hashing { inner: BufReader::new(file), hasher: Sha256::new() };
    let mut tag = [0u8; 16];
    reader.exact(&mut tag)?;
    if &tag != TAG {
        return Err(corrupt("not a wattle snapshot (bad tag)"));
    }
    let mut records = Vec::new();
    for cf in FAMILIES {
        loop {
            let mut marker = [0u8; 1];
            reader.exact(&mut marker)?;
            match marker[0] {
                0 => break,
                1 => {
                    let key = reader.sized()?;
                    let value = reader.sized()?;
                    records.push((cf, key, value));
                }
                _ => return Err(corrupt("bad record marker")),
            }
        }
    }
    let expected = reader.hasher.finalize();
    let mut trailer = [0u8; 32];
    reader.inner.read_exact(&mut trailer).map_err(|_| corrupt("truncated checksum"))?;
    if trailer[..] != expected[..] {
        return Err(corrupt("checksum mismatch"));
    }
    let mut rest = [0u8; 1];
    if reader.inner.read(&mut rest)? != 0 {
        return Err(corrupt("bytes after the checksum"));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.snap");
        let mut writer = SnapshotWriter::create(&path)?;
        writer.record(Cf::SmMeta, b"k", b"v")?;
        writer.record(Cf::Private, b"p1", b"")?;
        writer.record(Cf::Private, b"p2", &[7; 300])?;
        writer.finish(true)?;
        let records = read_records(&mut File::open(&path)?)?;
        assert_eq!(records.len(), 3);
        assert_eq!(records[2], (Cf::Private, b"p2".to_vec(), vec![7; 300]));
        let bytes = std::fs::read(&path)?;
        for position in [0, 20, bytes.len() / 2, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x40;
            std::fs::write(&path, &damaged)?;
            assert!(read_records(&mut File::open(&path)?).is_err(), "flip at {position} went unnoticed");
        }
        std::fs::write(&path, &bytes[..bytes.len() - 1])?;
        assert!(read_records(&mut File::open(&path)?).is_err());
        Ok(())
    }
}
