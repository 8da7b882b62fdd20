//! HPACK's Huffman code (RFC 7541 Appendix B). The code is canonical: each
//! symbol's code follows from the code lengths alone (shorter codes first,
//! then by symbol), so only the 257 lengths are written here and the codes
//! are derived from them at compile time.

/// Code lengths in bits of the 256 octets and EOS (256), RFC 7541
/// Appendix B.
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

const EOS: usize = 256;

/// Each symbol's code, right-aligned.
const CODES: [u32; 257] = codes();

/// Canonical code assignment: walk the symbols by (length, symbol); each
/// code is the previous plus one, shifted left by the growth in length.
const fn codes() -> [u32; 257] {
    let mut out = [0u32; 257];
    let mut code: u32 = 0;
    let mut prev_len: u8 = 0;
    let mut first = true;
    let mut len = 5u8;
    while len <= 30 {
        let mut sym = 0;
        while sym < 257 {
            if LENGTHS[sym] == len {
                if first {
                    first = false;
                } else {
                    code = (code + 1) << (len - prev_len);
                }
                prev_len = len;
                out[sym] = code;
            }
            sym += 1;
        }
        len += 1;
    }
    out
}

/// For decoding: per code length, the first code of that length and where
/// its symbols start in `SORTED`.
struct Canonical {
    first: [u32; 31],
    count: [u16; 31],
    offset: [u16; 31],
    sorted: [u16; 257],
}

const CANONICAL: Canonical = canonical();

const fn canonical() -> Canonical {
    let mut c = Canonical {
        first: [0; 31],
        count: [0; 31],
        offset: [0; 31],
        sorted: [0; 257],
    };
    let mut n = 0;
    let mut len = 5;
    while len <= 30 {
        c.offset[len] = n as u16;
        let mut sym = 0;
        while sym < 257 {
            if LENGTHS[sym] as usize == len {
                if c.count[len] == 0 {
                    c.first[len] = CODES[sym];
                }
                c.count[len] += 1;
                c.sorted[n] = sym as u16;
                n += 1;
            }
            sym += 1;
        }
        len += 1;
    }
    c
}

/// Why a Huffman string did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HuffmanError {
    /// The EOS symbol inside the string.
    Eos,
    /// Padding longer than 7 bits, or not the EOS code's first bits (all
    /// ones).
    Padding,
}

/// Per code length, the end of its codes left-aligned in 30 bits (the
/// codes of that length are below it, and at or above the previous
/// length's): a code's length is the first whose limit is above it.
const LIMITS: [u32; 31] = limits();

const fn limits() -> [u32; 31] {
    let c = &CANONICAL;
    let mut out = [0u32; 31];
    let mut len = 5;
    while len <= 30 {
        out[len] = (c.first[len] + c.count[len] as u32) << (30 - len);
        len += 1;
    }
    out
}

/// Append the octets `data` decodes to, to `out`. A symbol at a time:
/// the next 30 bits, left-aligned, are compared with each length's limit
/// (most symbols are 5 to 8 bits long: a few comparisons), rather than a
/// bit at a time.
pub fn decode(data: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let c = &CANONICAL;
    // The bits not decoded yet, left-aligned.
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    let mut input = data.iter();
    out.reserve(data.len() * 8 / 5);
    loop {
        while bits <= 56 {
            let Some(&b) = input.next() else { break };
            acc |= u64::from(b) << (56 - bits);
            bits += 8;
        }
        if bits == 0 {
            return Ok(());
        }
        let top = (acc >> 34) as u32;
        let mut len = 5;
        while c.count[len] == 0 || top >= LIMITS[len] {
            len += 1;
        }
        if len as u32 > bits {
            // Not a whole code: what is left is padding, at most 7 bits,
            // all ones.
            let mask = !(u64::MAX >> bits);
            return if bits <= 7 && acc & mask == mask {
                Ok(())
            } else {
                Err(HuffmanError::Padding)
            };
        }
        let at = (top >> (30 - len)) - c.first[len];
        let sym = c.sorted[usize::from(c.offset[len]) + at as usize] as usize;
        if sym == EOS {
            return Err(HuffmanError::Eos);
        }
        out.push(sym as u8);
        acc <<= len;
        bits -= len as u32;
    }
}

/// The length of `data` Huffman-coded, in octets.
pub fn encoded_len(data: &[u8]) -> usize {
    let bits: usize = data
        .iter()
        .map(|&b| usize::from(LENGTHS[usize::from(b)]))
        .sum();
    bits.div_ceil(8)
}

/// Append `data` Huffman-coded (padded with ones) to `out`.
pub fn encode(data: &[u8], out: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in data {
        let len = u32::from(LENGTHS[usize::from(b)]);
        acc = (acc << len) | u64::from(CODES[usize::from(b)]);
        bits += len;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1u64 << bits) - 1;
    }
    if bits > 0 {
        let pad = 8 - bits;
        out.push(((acc << pad) | ((1 << pad) - 1)) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first decoder, a bit at a time: the reference the faster one is
    /// checked against.
    fn decode_bitwise(data: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
        let c = &CANONICAL;
        let mut code: u32 = 0;
        let mut len: usize = 0;
        for &byte in data {
            for bit in (0..8).rev() {
                code = (code << 1) | u32::from((byte >> bit) & 1);
                len += 1;
                if len < 5 {
                    continue;
                }
                if len > 30 {
                    return Err(HuffmanError::Padding);
                }
                let at = code.wrapping_sub(c.first[len]);
                if c.count[len] > 0 && code >= c.first[len] && at < u32::from(c.count[len]) {
                    let sym = c.sorted[usize::from(c.offset[len]) + at as usize] as usize;
                    if sym == EOS {
                        return Err(HuffmanError::Eos);
                    }
                    out.push(sym as u8);
                    code = 0;
                    len = 0;
                }
            }
        }
        // What is left is padding: at most 7 bits, all ones.
        if len > 7 || code != (1u32 << len) - 1 {
            return Err(HuffmanError::Padding);
        }
        Ok(())
    }

    #[test]
    fn the_decoder_agrees_with_the_bitwise_one() {
        // Random strings (and the codes of random text, which decode),
        // every result and error the same.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let len = (next() % 24) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 {
                let text = data.clone();
                data.clear();
                encode(&text, &mut data);
            }
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let (ra, rb) = (decode(&data, &mut a), decode_bitwise(&data, &mut b));
            assert_eq!(ra, rb, "{data:02x?}");
            if ra.is_ok() {
                assert_eq!(a, b, "{data:02x?}");
            }
        }
    }

    #[test]
    fn codes_are_the_rfc_s() {
        // A few rows of RFC 7541 Appendix B: (symbol, code, length).
        for (sym, code, len) in [
            (0usize, 0x1ff8u32, 13u8),
            (b' ' as usize, 0x14, 6),
            (b'0' as usize, 0x0, 5),
            (b'a' as usize, 0x3, 5),
            (b'z' as usize, 0x7b, 7),
            (b'\n' as usize, 0x3ffffffc, 30),
            (255, 0x3ffffee, 26),
            (EOS, 0x3fffffff, 30),
        ] {
            assert_eq!((CODES[sym], LENGTHS[sym]), (code, len), "symbol {sym}");
        }
    }

    #[test]
    fn every_octet_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut enc = Vec::new();
        encode(&all, &mut enc);
        assert_eq!(enc.len(), encoded_len(&all));
        let mut dec = Vec::new();
        decode(&enc, &mut dec).unwrap();
        assert_eq!(dec, all);
    }

    #[test]
    fn rfc_examples_decode() {
        // RFC 7541 C.4.1: "www.example.com".
        let enc = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        let mut out = Vec::new();
        decode(&enc, &mut out).unwrap();
        assert_eq!(out, b"www.example.com");
        let mut again = Vec::new();
        encode(b"www.example.com", &mut again);
        assert_eq!(again, enc);
    }

    #[test]
    fn bad_padding_and_eos_are_refused() {
        let mut out = Vec::new();
        // 'a' (00011) then 3 bits of zeros: padding must be ones.
        assert_eq!(decode(&[0b0001_1000], &mut out), Err(HuffmanError::Padding));
        // A whole octet of ones after a complete symbol: padding over 7 bits.
        assert_eq!(
            decode(&[0b0001_1111, 0xff], &mut out),
            Err(HuffmanError::Padding)
        );
        // EOS itself (30 ones) then padding.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err(HuffmanError::Eos)
        );
    }
}
