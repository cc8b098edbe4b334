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
//! (write, fsync, rename), which names its data file. Installing streams the records into the
//! state in bounded batches behind a marker (`store.rs`): a node that crashes mid-install
//! finishes it when it reopens, and never takes a half state as complete.

// openraft's storage traits fix the error type (`StorageError`, ~224 bytes); the install helpers
// return it as the trait methods that call them do.
#![allow(clippy::result_large_err)]

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use crate::entry::{
    decode_optional_log_id, decode_stored_membership, encode_optional_log_id, encode_stored_membership, NodeId,
};
use crate::kv::{Batch, Cf};
use crate::store::{
    read_error, snapshot_error, write_error, StorageResult, Store, KEY_LAST_APPLIED, KEY_MEMBERSHIP, SNAPSHOT_CURRENT,
};
use domain::codec::{Reader, Writer};
use openraft::{ErrorVerb, SnapshotMeta, StorageError};

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

/// Visitor of a snapshot's records: family, key, value.
pub type RecordVisit<'a> = dyn FnMut(Cf, &[u8], &[u8]) -> std::io::Result<()> + 'a;

/// One key and value of a family.
pub type Record = (Cf, Vec<u8>, Vec<u8>);

/// Reads a snapshot data file whole, verifying its checksum before returning any record (tests
/// and small files; an install streams with [`for_each_record`]).
pub fn read_records(file: &mut File) -> std::io::Result<Vec<Record>> {
    let mut records = Vec::new();
    for_each_record(file, &mut |cf, key, value| {
        records.push((cf, key.to_vec(), value.to_vec()));
        Ok(())
    })?;
    Ok(records)
}

/// Streams a snapshot data file from the start, one record at a time, holding at most one record
/// in memory; the checksum is checked at the end, so a caller that must not act on a damaged file
/// makes one pass with a visitor that does nothing first.
pub fn for_each_record(file: &mut File, visit: &mut RecordVisit<'_>) -> std::io::Result<()> {
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
        fn sized(&mut self, bytes: &mut Vec<u8>) -> std::io::Result<()> {
            let mut length = [0u8; 4];
            self.exact(&mut length)?;
            let length = u32::from_be_bytes(length) as usize;
            if length > RECORD_BYTES_MAX {
                return Err(corrupt("record too large"));
            }
            bytes.resize(length, 0);
            self.exact(bytes)
        }
    }
    file.seek(SeekFrom::Start(0))?;
    let mut reader = Hashing { inner: BufReader::new(file), hasher: Sha256::new() };
    let mut tag = [0u8; 16];
    reader.exact(&mut tag)?;
    if &tag != TAG {
        return Err(corrupt("not a wattle snapshot (bad tag)"));
    }
    let (mut key, mut value) = (Vec::new(), Vec::new());
    for cf in FAMILIES {
        loop {
            let mut marker = [0u8; 1];
            reader.exact(&mut marker)?;
            match marker[0] {
                0 => break,
                1 => {
                    reader.sized(&mut key)?;
                    reader.sized(&mut value)?;
                    visit(cf, &key, &value)?;
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
    Ok(())
}

// ---- installing into a store ------------------------------------------------------------------

pub(crate) type Meta = SnapshotMeta<NodeId, openraft::BasicNode>;

/// In the `raft` family (which an install leaves alone): the snapshot being installed, while its
/// records are streamed into the state families. A store that opens with it finishes the install.
const KEY_INSTALLING: &[u8] = b"snapshot_installing";

/// The `current` file and the install marker: a snapshot's metadata and its data file's name.
fn encode_pointer(meta: &Meta, data_name: &str) -> Vec<u8> {
    let mut writer = Writer::new();
    encode_optional_log_id(&mut writer, &meta.last_log_id);
    encode_stored_membership(&mut writer, &meta.last_membership);
    writer.long_bytes(meta.snapshot_id.as_bytes()).long_bytes(data_name.as_bytes());
    writer.finish()
}

pub(crate) fn decode_pointer(bytes: &[u8]) -> StorageResult<(Meta, String)> {
    let mut reader = Reader::new(bytes);
    let last_log_id = decode_optional_log_id(&mut reader).map_err(read_error)?;
    let last_membership = decode_stored_membership(&mut reader).map_err(read_error)?;
    let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).map_err(read_error);
    let snapshot_id = text(reader.long_bytes(bytes.len()).map_err(read_error)?)?;
    let data_name = text(reader.long_bytes(bytes.len()).map_err(read_error)?)?;
    reader.finish().map_err(read_error)?;
    Ok((SnapshotMeta { last_log_id, last_membership, snapshot_id }, data_name))
}

impl Store {
    pub(crate) fn snapshot_path(&self, name: &str) -> PathBuf {
        self.snapshot_dir.join(name)
    }

    fn sync_snapshot_dir(&self, failed: &impl Fn(std::io::Error) -> StorageError<NodeId>) -> StorageResult<()> {
        if self.kv.durable() {
            std::fs::File::open(&self.snapshot_dir).and_then(|dir| dir.sync_all()).map_err(failed)?;
        }
        Ok(())
    }

    /// Moves the data file `part` to its snapshot's name (copies it if it lives elsewhere), durably.
    pub(crate) fn place_snapshot_data(&self, meta: &Meta, part: &Path) -> StorageResult<String> {
        let failed = snapshot_error(Some(meta), ErrorVerb::Write);
        let data_name = format!("{}.snap", hex::encode(&Sha256::digest(meta.snapshot_id.as_bytes())[..16]));
        let data_path = self.snapshot_path(&data_name);
        if part.parent() == Some(self.snapshot_dir.as_path()) {
            std::fs::rename(part, &data_path).map_err(&failed)?;
        } else {
            // Data from elsewhere (not received into this directory): copy, leave the original.
            std::fs::copy(part, &data_path).map_err(&failed)?;
            if self.kv.durable() {
                std::fs::File::open(&data_path).and_then(|file| file.sync_all()).map_err(&failed)?;
            }
        }
        self.sync_snapshot_dir(&failed)?;
        Ok(data_name)
    }

    /// Makes `data_name` the current snapshot: replaces the metadata file atomically (write to
    /// `temporary`, fsync, rename, fsync the directory), then removes older data files.
    pub(crate) fn publish_current(&self, meta: &Meta, data_name: &str, temporary: &Path) -> StorageResult<PathBuf> {
        let failed = snapshot_error(Some(meta), ErrorVerb::Write);
        let data_path = self.snapshot_path(data_name);
        std::fs::write(temporary, encode_pointer(meta, data_name)).map_err(&failed)?;
        if self.kv.durable() {
            std::fs::File::open(temporary).and_then(|file| file.sync_all()).map_err(&failed)?;
        }
        std::fs::rename(temporary, self.snapshot_path(SNAPSHOT_CURRENT)).map_err(&failed)?;
        self.sync_snapshot_dir(&failed)?;
        // openraft builds snapshots in a task of their own, so a build may publish while an
        // install streams its file: never remove the file an unfinished install names (a crash
        // would leave nothing to finish it from).
        let installing = match self.kv.get(Cf::Raft, KEY_INSTALLING).map_err(read_error)? {
            Some(pointer) => Some(self.snapshot_path(&decode_pointer(&pointer)?.1)),
            None => None,
        };
        for entry in std::fs::read_dir(&self.snapshot_dir).map_err(&failed)? {
            let path = entry.map_err(&failed)?.path();
            let keep = path == data_path || installing.as_ref() == Some(&path);
            if !keep && path.extension().is_some_and(|extension| extension == "snap") {
                std::fs::remove_file(&path).map_err(&failed)?;
            }
        }
        Ok(data_path)
    }

    /// Replaces the state with a snapshot's data file, streaming it in batches of at most
    /// `install_batch_records` records. The first batch writes the install marker and clears the
    /// state families; the last sets `last_applied` and removes the marker. In between the state
    /// is partial and marked so: [`Store::finish_interrupted_install`] redoes the install on the
    /// next open. `verify` first checks the whole file's checksum.
    pub(crate) fn install_from(
        &self,
        meta: &Meta,
        data_name: &str,
        verify: bool,
        temporary: &Path,
    ) -> StorageResult<()> {
        let read_failed = snapshot_error(Some(meta), ErrorVerb::Read);
        let path = self.snapshot_path(data_name);
        let mut file = std::fs::File::open(&path).map_err(&read_failed)?;
        if verify {
            for_each_record(&mut file, &mut |_, _, _| Ok(())).map_err(&read_failed)?;
        }
        // Readers see `installing` from before the first batch until after the last; a failed
        // install leaves it set (the marker too): the node is not fit to answer until restarted.
        self.installing.store(true, std::sync::atomic::Ordering::Release);
        let mut batch = Batch::default();
        batch.put(Cf::Raft, KEY_INSTALLING, encode_pointer(meta, data_name));
        for cf in FAMILIES {
            // Every key the state writes starts with an ASCII byte; anything else goes one by one.
            batch.delete_range(cf, Vec::new(), vec![0xff]);
            self.kv
                .scan(cf, &[0xff], &mut |key, _| {
                    batch.delete(cf, key.to_vec());
                    true
                })
                .map_err(read_error)?;
        }
        self.kv.write(batch).map_err(write_error)?;
        let mut batch = Batch::default();
        let limit = self.install_batch_records.max(1);
        let mut failure = None;
        for_each_record(&mut file, &mut |cf, key, value| {
            batch.put(cf, key, value);
            if batch.ops.len() >= limit {
                if let Err(error) = self.kv.write_stored(std::mem::take(&mut batch)) {
                    failure = Some(error.to_string());
                    return Err(error);
                }
            }
            Ok(())
        })
        .map_err(|error| match failure.take() {
            Some(message) => write_error(std::io::Error::other(message)),
            None => read_failed(error),
        })?;
        self.kv.write_stored(batch).map_err(write_error)?;
        // Published before the marker goes: a crash in between redoes the install from the same file.
        self.publish_current(meta, data_name, temporary)?;
        let mut batch = Batch::default();
        let mut writer = Writer::new();
        encode_optional_log_id(&mut writer, &meta.last_log_id);
        batch.put(Cf::SmMeta, KEY_LAST_APPLIED, writer.finish());
        let mut writer = Writer::new();
        encode_stored_membership(&mut writer, &meta.last_membership);
        batch.put(Cf::SmMeta, KEY_MEMBERSHIP, writer.finish());
        batch.delete(Cf::Raft, KEY_INSTALLING);
        self.kv.write(batch).map_err(write_error)?;
        self.installing.store(false, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Finishes a snapshot install that a crash interrupted (the marker is still there).
    pub(crate) fn finish_interrupted_install(&self) -> anyhow::Result<()> {
        let Some(pointer) = self.kv.get(Cf::Raft, KEY_INSTALLING)? else { return Ok(()) };
        let (meta, data_name) = decode_pointer(&pointer)?;
        tracing::warn!(snapshot = %meta.snapshot_id, "finishing a snapshot install interrupted by a crash");
        let temporary = self.snapshot_path("current-resume.part");
        self.install_from(&meta, &data_name, true, &temporary)?;
        Ok(())
    }
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
