//! Dataset files: NDJSON or Avro OCF, plain, gzip or zstd — chosen by file extension.
//!
//! `x.ndjson`, `x.jsonl`, `x.json` (one envelope per line), each optionally `.gz` or `.zst`;
//! `x.avro` is an Avro object container file with the schema in `schemas/pitgun-envelope/v1.avsc`
//! (its blocks may be deflate- or zstd-compressed by the writer).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use apache_avro::{Codec, Reader as AvroReader, Schema, Writer as AvroWriter};
use pitgun_contracts::envelope::Envelope;
use pitgun_contracts::schema::ENVELOPE_AVRO_SCHEMA;

/// How a dataset file is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Newline-delimited JSON.
    Ndjson(Compression),
    /// Avro object container file.
    Avro,
}

/// Stream compression of an NDJSON file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Format {
    /// From a file name.
    pub fn of(path: &Path) -> Result<Format> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let (stem, compression) = if let Some(s) = name.strip_suffix(".gz") {
            (s, Compression::Gzip)
        } else if let Some(s) = name.strip_suffix(".zst") {
            (s, Compression::Zstd)
        } else {
            (name, Compression::None)
        };
        if stem.ends_with(".avro") {
            if compression != Compression::None {
                bail!("{}: Avro files compress their blocks themselves; drop the .gz/.zst", path.display());
            }
            return Ok(Format::Avro);
        }
        if stem.ends_with(".ndjson") || stem.ends_with(".jsonl") || stem.ends_with(".json") {
            return Ok(Format::Ndjson(compression));
        }
        bail!("{}: unknown dataset format; use .ndjson, .jsonl, .json (optionally .gz or .zst) or .avro", path.display())
    }
}

/// The envelope Avro schema, parsed.
pub fn avro_schema() -> Schema {
    Schema::parse_str(ENVELOPE_AVRO_SCHEMA).expect("the embedded .avsc parses")
}

/// Calls `f(record_number, text)` for every record of a dataset, as one JSON envelope per
/// record (Avro records are converted). `text` for a broken NDJSON line is the line itself, so
/// the engine reports it with its line number. `progress` receives compressed bytes read.
pub fn for_each_record(
    path: &Path,
    progress: &dyn Fn(u64),
    mut f: impl FnMut(u64, &str) -> Result<bool>,
) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let counted = CountingReader { inner: file, progress, pending: 0 };
    match Format::of(path)? {
        Format::Ndjson(c) => {
            let reader = decompressed(counted, c)?;
            let mut reader = BufReader::with_capacity(1 << 20, reader);
            let mut line = String::new();
            let mut number = 0u64;
            loop {
                line.clear();
                let n = reader
                    .read_line(&mut line)
                    .with_context(|| format!("{}: read error after line {number}", path.display()))?;
                if n == 0 {
                    break;
                }
                number += 1;
                let text = line.trim_end_matches(['\n', '\r']);
                if text.trim().is_empty() {
                    continue;
                }
                if !f(number, text)? {
                    break;
                }
            }
        }
        Format::Avro => {
            let reader = AvroReader::new(BufReader::new(counted))
                .with_context(|| format!("{}: not an Avro object container file", path.display()))?;
            for (i, value) in reader.enumerate() {
                let number = i as u64 + 1;
                let value = value.with_context(|| format!("{}: record {number} cannot be read", path.display()))?;
                let text = match apache_avro::from_value::<Envelope>(&value) {
                    Ok(env) => serde_json::to_string(&env)?,
                    Err(e) => format!("{{\"avro_error\": {:?}}}", e.to_string()),
                };
                if !f(number, &text)? {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// A run of whole NDJSON lines from one file.
pub struct Chunk {
    /// Index of the file among the inputs.
    pub file: u32,
    /// Line number (1-based) of the first line in `bytes`.
    pub first_line: u64,
    /// Whole lines, each ending in `\n`.
    pub bytes: Vec<u8>,
}

impl Chunk {
    /// Calls `f(line_number, line)` for every non-blank line (without its line ending).
    pub fn for_each_line(&self, mut f: impl FnMut(u64, &[u8])) {
        let mut number = self.first_line;
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', &self.bytes) {
            let mut line = &self.bytes[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                f(number, line);
            }
            number += 1;
            start = end + 1;
        }
    }
}

/// Target size of a chunk.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Reads a dataset as chunks of whole lines (Avro records become JSON lines), so the caller can
/// hand them to workers without touching each line. `progress` receives compressed bytes read.
pub fn for_each_chunk(path: &Path, file: u32, progress: &dyn Fn(u64), mut f: impl FnMut(Chunk) -> Result<bool>) -> Result<()> {
    let handle = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let counted = CountingReader { inner: handle, progress, pending: 0 };
    match Format::of(path)? {
        Format::Ndjson(c) => {
            let mut reader = decompressed(counted, c)?;
            let mut carry: Vec<u8> = Vec::new();
            let mut first_line = 1u64;
            loop {
                let mut bytes = std::mem::take(&mut carry);
                bytes.reserve(CHUNK_BYTES + 4096);
                let before = bytes.len();
                let n = (&mut reader)
                    .take(CHUNK_BYTES as u64)
                    .read_to_end(&mut bytes)
                    .with_context(|| format!("{}: read error", path.display()))?;
                if n == 0 {
                    if bytes.is_empty() {
                        break;
                    }
                    bytes.push(b'\n');
                } else if let Some(last) = memchr::memrchr(b'\n', &bytes[before..]) {
                    carry = bytes.split_off(before + last + 1);
                } else {
                    carry = bytes;
                    continue;
                }
                let lines = memchr::memchr_iter(b'\n', &bytes).count() as u64;
                let chunk = Chunk { file, first_line, bytes };
                first_line += lines;
                if !f(chunk)? {
                    break;
                }
            }
        }
        Format::Avro => {
            let mut bytes = Vec::with_capacity(CHUNK_BYTES + 4096);
            let mut first_line = 1u64;
            let mut lines = 0u64;
            let mut keep_going = true;
            for_each_record(path, progress, |_, text| {
                bytes.extend_from_slice(text.as_bytes());
                bytes.push(b'\n');
                lines += 1;
                if bytes.len() >= CHUNK_BYTES {
                    let full = std::mem::replace(&mut bytes, Vec::with_capacity(CHUNK_BYTES + 4096));
                    keep_going = f(Chunk { file, first_line, bytes: full })?;
                    first_line += lines;
                    lines = 0;
                }
                Ok(keep_going)
            })?;
            if keep_going && !bytes.is_empty() {
                f(Chunk { file, first_line, bytes })?;
            }
        }
    }
    Ok(())
}

/// The decompressing reader for an NDJSON file.
fn decompressed<'r>(raw: impl Read + 'r, c: Compression) -> Result<Box<dyn Read + 'r>> {
    Ok(match c {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(raw)?),
    })
}

struct CountingReader<'a, R> {
    inner: R,
    progress: &'a dyn Fn(u64),
    pending: u64,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pending += n as u64;
        if self.pending >= 1 << 20 || n == 0 {
            (self.progress)(self.pending);
            self.pending = 0;
        }
        Ok(n)
    }
}

/// Writes envelopes (or raw lines) to a dataset file in the format its name says.
pub enum DatasetWriter {
    Ndjson(Box<dyn Write>),
    Avro(Box<AvroWriter<'static, BufWriter<File>>>),
}

impl DatasetWriter {
    /// Creates `path`.
    pub fn create(path: &Path) -> Result<DatasetWriter> {
        let format = Format::of(path)?;
        let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(match format {
            Format::Ndjson(c) => {
                let buffered = BufWriter::with_capacity(1 << 20, file);
                let w: Box<dyn Write> = match c {
                    Compression::None => Box::new(buffered),
                    Compression::Gzip => Box::new(flate2::write::GzEncoder::new(buffered, flate2::Compression::fast())),
                    Compression::Zstd => Box::new(zstd::stream::write::Encoder::new(buffered, 3)?.auto_finish()),
                };
                DatasetWriter::Ndjson(w)
            }
            Format::Avro => {
                let schema: &'static Schema = Box::leak(Box::new(avro_schema()));
                DatasetWriter::Avro(Box::new(AvroWriter::with_codec(schema, BufWriter::new(file), Codec::Deflate(Default::default()))))
            }
        })
    }

    /// Appends an envelope.
    pub fn envelope(&mut self, env: &Envelope) -> Result<()> {
        match self {
            DatasetWriter::Ndjson(w) => {
                serde_json::to_writer(&mut *w, env)?;
                w.write_all(b"\n")?;
            }
            DatasetWriter::Avro(w) => {
                w.append_ser(env).context("envelope does not fit the Avro schema")?;
            }
        }
        Ok(())
    }

    /// Appends a raw line (malformed records only exist in NDJSON).
    pub fn raw_line(&mut self, line: &str) -> Result<bool> {
        match self {
            DatasetWriter::Ndjson(w) => {
                w.write_all(line.as_bytes())?;
                w.write_all(b"\n")?;
                Ok(true)
            }
            DatasetWriter::Avro(_) => Ok(false),
        }
    }

    /// Flushes and closes.
    pub fn finish(self) -> Result<()> {
        match self {
            DatasetWriter::Ndjson(mut w) => w.flush()?,
            DatasetWriter::Avro(mut w) => {
                w.flush()?;
            }
        }
        Ok(())
    }
}
