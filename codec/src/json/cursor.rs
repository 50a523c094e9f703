//! A cursor over compact JSON text, for direct scans of the usual shape of a record.
//!
//! A scan built on it reads only what producers usually send: strings without escapes, numbers
//! that fit. Every method returns `None` rather than decide on anything else (an escape, bad
//! syntax, a number out of range), so a scan gives up and leaves the record to the general
//! decoder (`serde_json`), whose rule then decides. Numbers come out with the same bits as
//! `serde_json`'s (with `float_roundtrip`): tests and the `envelope_json` fuzz target hold them
//! equal through the envelope scan ([`super::scan`]).

/// A JSON number as read by [`Cursor::number`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Number {
    /// The nearest `f64`, as `serde_json` with `float_roundtrip` gives it.
    pub value: f64,
    /// The same as an integer, when written as a plain non-negative integer literal of at most
    /// 19 digits (what fits 64 bits without a check).
    pub integer: Option<u64>,
    /// Written without a fraction or an exponent (`serde_json` reads such a literal as an
    /// integer when it fits, as an `f64` otherwise).
    pub integral: bool,
}

/// Past these, a number is left to the general decoder: `serde_json` handles an exponent beyond
/// 32 bits, or billions of digits, its own way, and no producer sends them.
pub(super) const MAX_EXPONENT: i64 = 1_000_000;
pub(super) const MAX_NUMBER_LEN: usize = 1_000;

/// The powers of ten an `f64` holds exactly.
const POWERS_OF_TEN: [f64; 23] =
    [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22];

/// A cursor over JSON text.
pub struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `text`.
    pub fn new(text: &'a str) -> Cursor<'a> {
        Cursor { text, bytes: text.as_bytes(), at: 0 }
    }

    /// Whether only whitespace is left.
    #[inline]
    pub fn at_end(&mut self) -> bool {
        self.skip_whitespace();
        self.at == self.bytes.len()
    }

    /// Skips JSON whitespace (RFC 8259: space, tab, line feed, carriage return).
    #[inline]
    pub fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, consumed.
    #[inline]
    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    /// The next byte after whitespace, not consumed. Producers send compact JSON, so the byte
    /// under the cursor is tested first and the whitespace loop entered only on one.
    #[inline]
    pub fn peek(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        if byte > b' ' {
            return Some(byte);
        }
        self.skip_whitespace();
        self.bytes.get(self.at).copied()
    }

    /// Consumes `literal` exactly.
    #[inline]
    pub fn literal(&mut self, literal: &[u8]) -> Option<()> {
        let end = self.at + literal.len();
        (self.bytes.get(self.at..end)? == literal).then(|| self.at = end)
    }

    /// An object: calls `member(self, name)` for each member; `member` reads the value.
    #[inline]
    pub fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        if self.next()? != b'{' {
            return None;
        }
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            let name = self.string()?;
            if self.next()? != b':' {
                return None;
            }
            member(self, name)?;
            match self.next()? {
                b',' => {}
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// A string with no escape (a control character is not allowed in JSON text either),
    /// borrowed from the input.
    #[inline(always)]
    pub fn string(&mut self) -> Option<&'a str> {
        if self.next()? != b'"' {
            return None;
        }
        let start = self.at;
        // Sixteen bytes at a time (SSE2, which every x86-64 has) to the first byte that may end
        // the plain run: a quote, a backslash or a control character. Most names and values
        // end within the first block; this took half the instructions of the word loop below.
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        while let Some(block) = self.bytes.get(self.at..self.at + 16) {
            use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8};
            // SAFETY: the build enables SSE2 (the `cfg` above), and the unaligned load reads
            // exactly the 16 bytes `block` borrows.
            let hits = unsafe {
                let v = _mm_loadu_si128(block.as_ptr().cast());
                let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
                let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
                // Unsigned `v <= 0x1f`: the byte equals its minimum with 0x1f.
                let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
                _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
            };
            if hits != 0 {
                self.at += hits.trailing_zeros() as usize;
                return self.string_end(start);
            }
            self.at += 16;
        }
        // Then (or elsewhere) eight bytes at a time. The lowest flagged byte is a true one (a
        // borrow only flags bytes above a true hit), so the word's test alone decides.
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x;
        while let Some(word) = self.bytes.get(self.at..self.at + 8) {
            let v = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            let hits = (zero_byte(v ^ (ONES * b'"' as u64)) | zero_byte(v ^ (ONES * b'\\' as u64)) | (v.wrapping_sub(ONES * 0x20) & !v)) & HIGH;
            if hits != 0 {
                self.at += (hits.trailing_zeros() / 8) as usize;
                return self.string_end(start);
            }
            self.at += 8;
        }
        while let Some(&byte) = self.bytes.get(self.at) {
            if matches!(byte, b'"' | b'\\' | 0..=0x1f) {
                break;
            }
            self.at += 1;
        }
        self.string_end(start)
    }

    /// Ends the string begun at `start` at the byte under the cursor: a quote, else give up.
    #[inline]
    fn string_end(&mut self, start: usize) -> Option<&'a str> {
        if *self.bytes.get(self.at)? != b'"' {
            return None;
        }
        // SAFETY: `text` is a `str`, and both ends sit next to an ASCII quote (`start` just
        // after the opening one, `self.at` on the closing one), so both are character
        // boundaries within it. The checked `get` cost 5 % of a replay in this hot loop.
        let value = unsafe { self.text.get_unchecked(start..self.at) };
        self.at += 1;
        Some(value)
    }

    /// A JSON number, its grammar checked, in one pass.
    #[inline(always)]
    pub fn number(&mut self) -> Option<Number> {
        self.skip_whitespace();
        let start = self.at;
        let negative = self.bytes.get(self.at) == Some(&b'-');
        if negative {
            self.at += 1;
        }
        // The decimal digits as one integer, and the power of ten they are scaled by. Nineteen
        // digits always fit 64 bits, so the loop needs no overflow check; past nineteen the
        // text is parsed instead (and `seq` or `time_us` left to the general decoder).
        let mut mantissa = 0u64;
        let mut digits = |scan: &mut Self| {
            let first = scan.at;
            while let Some(&d @ b'0'..=b'9') = scan.bytes.get(scan.at) {
                mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                scan.at += 1;
            }
            scan.at - first
        };
        let mut count = match self.bytes.get(self.at)? {
            b'0' => {
                self.at += 1;
                0
            }
            b'1'..=b'9' => digits(self),
            _ => return None,
        };
        let (mut integral, mut scale) = (true, 0i64);
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            let fraction = digits(self);
            if fraction == 0 {
                return None;
            }
            (count, scale, integral) = (count + fraction, -(fraction as i64), false);
        }
        let fits = count <= 19;
        let mut exponent = 0i64;
        if let Some(b'e' | b'E') = self.bytes.get(self.at) {
            self.at += 1;
            let sign = match self.bytes.get(self.at) {
                Some(b'-') => -1,
                Some(b'+') => 1,
                _ => 0,
            };
            self.at += usize::from(sign != 0);
            let first = self.at;
            while let Some(&d @ b'0'..=b'9') = self.bytes.get(self.at) {
                exponent = exponent * 10 + i64::from(d - b'0');
                if exponent > MAX_EXPONENT {
                    return None;
                }
                self.at += 1;
            }
            if self.at == first {
                return None;
            }
            exponent *= if sign < 0 { -1 } else { 1 };
            integral = false;
        }
        // Exact operands and one rounding when the digits fit 53 bits and the power of ten is
        // exact (Clinger's fast path); otherwise the standard library's correctly rounded parse.
        let power = scale + exponent;
        let value = if fits && mantissa <= 1 << 53 && (-22..=22).contains(&power) {
            let (m, p) = (mantissa as f64, POWERS_OF_TEN[power.unsigned_abs() as usize]);
            let v = if power < 0 { m / p } else { m * p };
            if negative {
                -v
            } else {
                v
            }
        } else {
            self.text.get(start..self.at)?.parse().ok()?
        };
        if self.at - start > MAX_NUMBER_LEN {
            return None;
        }
        Some(Number { value, integer: (integral && !negative && fits).then_some(mantissa), integral })
    }
}
