//! Avro object container files (Avro spec 1.12, "Object Container Files") read block by block,
//! with the datums left as bytes for [`super::decode_avro_into`] — the same path a Kafka record
//! takes, so a dataset and a topic are read by one decoder.
//!
//! A file must carry the envelope schema (compared by its Rabin fingerprint, so whitespace and
//! documentation in the embedded `.avsc` do not matter); blocks may be uncompressed, deflate or
//! zstandard. Files are written by `apache-avro`'s writer ([`crate::dataset::DatasetWriter`]) after a
//! header of [`header`]'s.

use std::io::Read;

use apache_avro::Schema;

use super::envelope_schema;

const MAGIC: [u8; 4] = *b"Obj\x01";

/// The most record bytes one block may hold once decompressed (writers use kilobytes to a few
/// megabytes): a bound on memory, and what keeps a chunk's record offsets within `u32`.
pub const MAX_BLOCK_BYTES: usize = 256 << 20;

/// A block's compression, from the file's `avro.codec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Null,
    Deflate,
    Zstandard,
}

/// A container file's header: the magic, the metadata (`avro.codec`, `avro.schema`) in that
/// order, and the sync marker. `apache-avro` writes the metadata from a hash map, whose order
/// changes from run to run, so the same records made different files.
pub(crate) fn header(schema: &Schema, codec: &str, sync: [u8; 16]) -> Vec<u8> {
    use super::write::{long, string};
    let mut out = MAGIC.to_vec();
    long(&mut out, 2);
    string(&mut out, "avro.codec");
    string(&mut out, codec);
    string(&mut out, "avro.schema");
    string(&mut out, &serde_json::to_string(schema).expect("a parsed schema serializes"));
    long(&mut out, 0);
    out.extend_from_slice(&sync);
    out
}

/// Reads the blocks of one container file.
pub struct ContainerReader<R> {
    inner: R,
    codec: Codec,
    sync: [u8; 16],
    raw: Vec<u8>,
}

impl<R: Read> ContainerReader<R> {
    /// Reads and checks the header.
    pub fn new(mut inner: R) -> Result<ContainerReader<R>, String> {
        let mut magic = [0u8; 4];
        inner.read_exact(&mut magic).map_err(|e| format!("not an Avro object container file: {e}"))?;
        if magic != MAGIC {
            return Err(format!("not an Avro object container file (starts {magic:02x?}, expected \"Obj\" 01)"));
        }
        let (mut schema, mut codec) = (None, Codec::Null);
        loop {
            let mut count = long(&mut inner)?.ok_or("the header ends inside its metadata")?;
            if count == 0 {
                break;
            }
            if count < 0 {
                count = count.checked_neg().ok_or("a metadata block count out of range")?;
                long(&mut inner)?; // block size in bytes
            }
            for _ in 0..count {
                let key = bytes(&mut inner, 1 << 10)?;
                let value = bytes(&mut inner, 1 << 20)?;
                match key.as_slice() {
                    b"avro.schema" => schema = Some(value),
                    b"avro.codec" => {
                        codec = match value.as_slice() {
                            b"null" => Codec::Null,
                            b"deflate" => Codec::Deflate,
                            b"zstandard" => Codec::Zstandard,
                            other => {
                                return Err(format!(
                                    "blocks compressed with {:?}; pitgun reads null, deflate and zstandard",
                                    String::from_utf8_lossy(other)
                                ))
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        let schema = schema.ok_or("the header has no avro.schema")?;
        let json: serde_json::Value = serde_json::from_slice(&schema).map_err(|e| format!("its avro.schema is not JSON: {e}"))?;
        if !safe_for_apache_avro(&json) {
            return Err("its avro.schema has a name, alias, type reference or size Avro does not allow".into());
        }
        let theirs = Schema::parse(&json).map_err(|e| format!("its avro.schema does not parse: {e}"))?;
        let (theirs, ours) = (theirs.fingerprint::<apache_avro::rabin::Rabin>(), envelope_schema().fingerprint::<apache_avro::rabin::Rabin>());
        if theirs.bytes != ours.bytes {
            return Err(format!("written with another schema (fingerprint {theirs}); pitgun reads pitgun-envelope/v1.avsc (fingerprint {ours})"));
        }
        let mut sync = [0u8; 16];
        inner.read_exact(&mut sync).map_err(|e| format!("the header ends before its sync marker: {e}"))?;
        Ok(ContainerReader { inner, codec, sync, raw: Vec::new() })
    }

    /// Appends the next block's datums (decompressed) to `data`; returns how many it holds, or
    /// `None` at the end of the file.
    pub fn next_block(&mut self, data: &mut Vec<u8>) -> Result<Option<u64>, String> {
        let Some(count) = long(&mut self.inner)? else { return Ok(None) };
        let size = long(&mut self.inner)?.ok_or("the file ends inside a block header")?;
        let (Ok(count), Ok(size)) = (u64::try_from(count), usize::try_from(size)) else {
            return Err(format!("a block header says {count} records in {size} bytes"));
        };
        self.raw.clear();
        (&mut self.inner).take(size as u64).read_to_end(&mut self.raw).map_err(|e| e.to_string())?;
        if self.raw.len() != size {
            return Err(format!("the file ends inside a block ({} of {size} bytes)", self.raw.len()));
        }
        let before = data.len();
        let limit = MAX_BLOCK_BYTES as u64 + 1;
        match self.codec {
            Codec::Null => data.extend_from_slice(&self.raw),
            Codec::Deflate => {
                flate2::read::DeflateDecoder::new(&self.raw[..]).take(limit).read_to_end(data).map_err(|e| format!("a deflate block: {e}"))?;
            }
            Codec::Zstandard => {
                zstd::stream::read::Decoder::new(&self.raw[..])
                    .and_then(|d| d.take(limit).read_to_end(data))
                    .map_err(|e| format!("a zstandard block: {e}"))?;
            }
        }
        if data.len() - before > MAX_BLOCK_BYTES {
            return Err(format!("a block holds more than {MAX_BLOCK_BYTES} bytes of records; write smaller blocks"));
        }
        let mut sync = [0u8; 16];
        self.inner.read_exact(&mut sync).map_err(|e| format!("the file ends before a block's sync marker: {e}"))?;
        if sync != self.sync {
            return Err("a block's sync marker differs from the header's: the file is damaged".into());
        }
        Ok(Some(count))
    }
}

/// Whether `apache-avro` can be given the schema: it panics on some schemas instead of refusing
/// them (an `unwrap` on a name, namespace, alias or type reference that is not an Avro name, on a
/// `size` that is not an integer), and a damaged file must be an error. Stricter than Avro is
/// harmless here: only the envelope schema is accepted.
fn safe_for_apache_avro(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    let ident =
        |s: &str| s.bytes().next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_') && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
    let full_name = |v: &Value| v.as_str().is_none_or(|s| s.split('.').all(ident));
    match v {
        Value::Object(m) => m.iter().all(|(k, x)| {
            let here = match k.as_str() {
                "name" | "type" => full_name(x),
                "namespace" => x.as_str().is_none_or(|s| s.is_empty() || s.split('.').all(ident)),
                "aliases" => x.as_array().is_none_or(|a| a.iter().all(|a| a.is_string() && full_name(a))),
                "size" => x.is_u64(),
                _ => true,
            };
            here && safe_for_apache_avro(x)
        }),
        Value::Array(a) => a.iter().all(safe_for_apache_avro),
        _ => true,
    }
}

/// A zig-zag varint; `None` at a clean end of input.
fn long(r: &mut impl Read) -> Result<Option<i64>, String> {
    let mut value: u64 = 0;
    for (i, shift) in (0..64).step_by(7).enumerate() {
        let mut b = [0u8];
        match r.read(&mut b) {
            Ok(0) if i == 0 => return Ok(None),
            Ok(0) => return Err("the file ends inside a number".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        value |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            return Ok(Some((value >> 1) as i64 ^ -((value & 1) as i64)));
        }
    }
    Err("a varint longer than 10 bytes".into())
}

fn bytes(r: &mut impl Read, max: usize) -> Result<Vec<u8>, String> {
    let len = long(r)?.ok_or("the header ends inside its metadata")?;
    let len = usize::try_from(len).ok().filter(|&n| n <= max).ok_or_else(|| format!("a metadata entry of {len} bytes"))?;
    let mut out = vec![0u8; len];
    r.read_exact(&mut out).map_err(|e| format!("the header ends inside its metadata: {e}"))?;
    Ok(out)
}
