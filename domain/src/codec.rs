//! The hand-written canonical codec: big-endian integers, fixed layouts, length prefixes where a
//! field varies, and rejection of trailing bytes. Hashed and signed bytes come only from here.

use thiserror::Error;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("truncated: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("{count} trailing bytes after the value")]
    TrailingBytes { count: usize },
    #[error("bad domain-separation tag")]
    BadTag,
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    #[error("unsupported algorithm {0}")]
    UnsupportedAlgorithm(u8),
    #[error("invalid field {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("too large: {size} bytes, limit {limit}")]
    TooLarge { size: usize, limit: usize },
}

impl DecodeError {
    /// An invalid-field error.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        DecodeError::InvalidField { field, reason: reason.into() }
    }
}

/// Appends canonical encodings to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }
    /// A writer with reserved capacity.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { bytes: Vec::with_capacity(capacity) }
    }
    pub fn u8(&mut self, value: u8) -> &mut Self {
        self.bytes.push(value);
        self
    }
    pub fn u16(&mut self, value: u16) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub fn i64(&mut self, value: i64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub fn i128(&mut self, value: i128) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }
    /// Raw bytes of a fixed-length field.
    pub fn fixed(&mut self, value: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(value);
        self
    }
    /// A short byte string: u8 length, then the bytes. Panics past 255 bytes, a caller bug.
    pub fn short_bytes(&mut self, value: &[u8]) -> &mut Self {
        let length = u8::try_from(value.len()).expect("short_bytes longer than 255: caller must bound it");
        self.u8(length).fixed(value)
    }
    /// A byte string with a u32 length prefix.
    pub fn long_bytes(&mut self, value: &[u8]) -> &mut Self {
        let length = u32::try_from(value.len()).expect("long_bytes longer than 4 GiB: caller must bound it");
        self.u32(length).fixed(value)
    }
    /// The bytes written so far.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads canonical encodings from a slice; [`Reader::finish`] rejects trailing bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, offset: 0 }
    }
    /// The next `count` bytes.
    pub fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        let remaining = self.bytes.len() - self.offset;
        if remaining < count {
            return Err(DecodeError::Truncated { offset: self.offset, needed: count - remaining });
        }
        let slice = &self.bytes[self.offset..self.offset + count];
        self.offset += count;
        Ok(slice)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    pub fn i128(&mut self) -> Result<i128, DecodeError> {
        Ok(i128::from_be_bytes(self.array()?))
    }
    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::invalid(field, format!("boolean byte {other}"))),
        }
    }
    pub fn short_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let length = self.u8()? as usize;
        self.take(length)
    }
    /// A u32-length-prefixed byte string of at most `limit` bytes.
    pub fn long_bytes(&mut self, limit: usize) -> Result<&'a [u8], DecodeError> {
        let length = self.u32()? as usize;
        if length > limit {
            return Err(DecodeError::TooLarge { size: length, limit });
        }
        self.take(length)
    }
    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }
    /// Succeeds only if every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }
}
