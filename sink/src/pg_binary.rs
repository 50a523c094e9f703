//! PostgreSQL's binary `COPY` format for a table's rows, written straight into one buffer.
//!
//! tokio-postgres's `BinaryCopyInWriter` takes each row as a list of `&dyn ToSql`, checks every
//! value's type against its column and awaits once per row; the sink's cells are typed for their
//! columns when converted ([`crate::table::TableShape::convert_fields`]), so here each cell is
//! encoded by its own kind into a buffer sent in large chunks. The layout is the one the server
//! documents for `COPY … (FORMAT binary)`: a signature and two zero words, then per row the
//! field count and each field as its length (−1 for NULL) and its bytes in network order, then a
//! −1 field count.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};

use crate::table::{Cell, TableRow};

/// The 11-byte signature, then the flags word and the header-extension length, both zero.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// PostgreSQL's timestamp epoch, 2000-01-01T00:00:00Z, in seconds after the Unix epoch.
const PG_EPOCH_UNIX_SECONDS: u64 = 946_684_800;

/// Starts a copy's data.
pub(crate) fn header(out: &mut BytesMut) {
    out.put_slice(HEADER);
}

/// One row: its cells in column order, then its version (the tables' last column,
/// [`crate::table::VERSION_COLUMN`]).
pub(crate) fn row(out: &mut BytesMut, row: &TableRow) {
    let fields = i16::try_from(row.cells.len() + 1).expect("a table has fewer than 32767 columns");
    out.put_i16(fields);
    for cell in &row.cells {
        match cell {
            Cell::Null => out.put_i32(-1),
            Cell::Text(s) => {
                out.put_i32(i32::try_from(s.len()).expect("a text value under 2 GB (a row is one Kafka record)"));
                out.put_slice(s.as_bytes());
            }
            Cell::Int(i) => {
                out.put_i32(8);
                out.put_i64(*i);
            }
            Cell::Float(f) => {
                out.put_i32(8);
                out.put_f64(*f);
            }
            Cell::Bool(b) => {
                out.put_i32(1);
                out.put_u8(u8::from(*b));
            }
            Cell::Time(t) => {
                out.put_i32(8);
                out.put_i64(micros_since_pg_epoch(*t));
            }
        }
    }
    out.put_i32(8);
    out.put_i64(row.version);
}

/// Ends a copy's data.
pub(crate) fn trailer(out: &mut BytesMut) {
    out.put_i16(-1);
}

/// Microseconds from PostgreSQL's epoch (negative before it), what `timestamptz` holds; finer
/// parts are dropped, as the server's own binary input does.
fn micros_since_pg_epoch(t: SystemTime) -> i64 {
    let epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECONDS);
    let micros = |d: Duration| (d.as_secs() as i64).saturating_mul(1_000_000).saturating_add(i64::from(d.subsec_micros()));
    match t.duration_since(epoch) {
        Ok(after) => micros(after),
        Err(before) => -micros(before.duration()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::types::{ToSql, Type};

    /// Each kind of cell is encoded as tokio-postgres's own `ToSql` encodes the value for its
    /// column type (the path this replaced), NULL and times before 2000 included.
    #[test]
    fn cells_are_encoded_as_the_client_library_encodes_them() {
        let times = [UNIX_EPOCH + Duration::from_micros(1_767_225_603_677_340), UNIX_EPOCH + Duration::from_micros(123_456_789), UNIX_EPOCH];
        let mut cells = vec![Cell::Null, Cell::Text("monza é".into()), Cell::Int(-42), Cell::Float(-0.1), Cell::Bool(true), Cell::Bool(false)];
        cells.extend(times.iter().map(|t| Cell::Time(*t)));
        let mut expected = BytesMut::new();
        expected.put_i16(cells.len() as i16 + 1);
        for cell in &cells {
            let mut value = BytesMut::new();
            let written = match cell {
                Cell::Null => None,
                Cell::Text(s) => Some(s.to_sql(&Type::TEXT, &mut value)),
                Cell::Int(i) => Some(i.to_sql(&Type::INT8, &mut value)),
                Cell::Float(f) => Some(f.to_sql(&Type::FLOAT8, &mut value)),
                Cell::Bool(b) => Some(b.to_sql(&Type::BOOL, &mut value)),
                Cell::Time(t) => Some(t.to_sql(&Type::TIMESTAMPTZ, &mut value)),
            };
            match written {
                None => expected.put_i32(-1),
                Some(r) => {
                    r.unwrap();
                    expected.put_i32(value.len() as i32);
                    expected.put_slice(&value);
                }
            }
        }
        expected.put_i32(8);
        expected.put_i64(7);
        let mut out = BytesMut::new();
        row(&mut out, &TableRow { cells, key_at: 1, scope_at: None, version: 7 });
        // The header and trailer are held by the server itself: the PostgreSQL tests
        // (`sink/tests/postgres.rs`) write every batch through them.
        assert_eq!(&out[..], &expected[..]);
    }
}
