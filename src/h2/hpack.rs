//! HPACK, header compression for HTTP/2 (RFC 7541): ours, small, checked
//! against the RFC's examples (Appendix C). The decoder keeps the dynamic
//! table within the size ringmux announced, and bounds what a header block
//! may expand to (an HPACK bomb: small references to a large entry), yet
//! reads every block to its end so that its table stays in step with the
//! peer's. The encoder never indexes: its output refers to the static
//! table or is literal, so it keeps no state beyond a size update owed.

use std::collections::VecDeque;

use super::huffman;

/// The static table (RFC 7541 Appendix A); index 1 is the first entry.
pub const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// What an entry costs in the dynamic table besides its octets.
const ENTRY_OVERHEAD: usize = 32;

/// Why a header block did not decode: each is a connection error
/// (COMPRESSION_ERROR), since the tables can no longer agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HpackError {
    /// An integer past 2^32 or cut short.
    Integer,
    /// A string or representation cut short by the block's end.
    Truncated,
    /// Index 0, or past the end of both tables.
    Index,
    /// A table size update past the size announced, or after a field.
    SizeUpdate,
    /// A Huffman string that does not decode.
    Huffman,
}

/// The fields of one header block, names and values in one buffer.
#[derive(Debug, Default)]
pub struct Fields {
    buf: Vec<u8>,
    /// (name start, value start, value end) in `buf`.
    at: Vec<(u32, u32, u32)>,
    /// The list's size as RFC 9113 counts it (octets + 32 per field),
    /// dropped fields included.
    pub size: usize,
    /// Fields were dropped: the list passed the limit it was read with.
    pub oversize: bool,
}

impl Fields {
    /// Empty it for the next block (its capacity kept).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.at.clear();
        self.size = 0;
        self.oversize = false;
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// The fields in order: (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.at.iter().map(|&(n, v, e)| {
            (
                &self.buf[n as usize..v as usize],
                &self.buf[v as usize..e as usize],
            )
        })
    }

    fn push(&mut self, name: &[u8], value: &[u8], limit: usize) {
        self.size += name.len() + value.len() + ENTRY_OVERHEAD;
        if self.size > limit {
            self.oversize = true;
            return;
        }
        let n = self.buf.len() as u32;
        self.buf.extend_from_slice(name);
        let v = self.buf.len() as u32;
        self.buf.extend_from_slice(value);
        self.at.push((n, v, self.buf.len() as u32));
    }
}

/// The dynamic table: newest entry first.
#[derive(Debug, Default)]
struct Table {
    entries: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max: usize,
}

impl Table {
    fn get(&self, index: usize) -> Option<(&[u8], &[u8])> {
        if index == 0 {
            return None;
        }
        if let Some((n, v)) = STATIC.get(index - 1) {
            return Some((n.as_bytes(), v.as_bytes()));
        }
        self.entries
            .get(index - 1 - STATIC.len())
            .map(|(n, v)| (&n[..], &v[..]))
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        self.evict_to(self.max.saturating_sub(size));
        if size <= self.max {
            self.size += size;
            self.entries.push_front((name, value));
        }
    }

    fn evict_to(&mut self, room: usize) {
        while self.size > room {
            let Some((n, v)) = self.entries.pop_back() else {
                break;
            };
            self.size -= n.len() + v.len() + ENTRY_OVERHEAD;
        }
    }
}

/// A connection's HPACK decoder.
#[derive(Debug)]
pub struct Decoder {
    table: Table,
    /// The most the peer may make the table (our
    /// SETTINGS_HEADER_TABLE_SIZE).
    limit: usize,
    /// Scratch for strings on their way into the table or the list.
    name: Vec<u8>,
    value: Vec<u8>,
}

impl Decoder {
    /// A decoder whose peer may use a table of up to `limit` octets.
    pub fn new(limit: usize) -> Decoder {
        Decoder {
            table: Table {
                max: limit,
                ..Table::default()
            },
            limit,
            name: Vec::new(),
            value: Vec::new(),
        }
    }

    /// Let go of the scratch buffers' capacity (an idle connection).
    pub fn shrink_scratch(&mut self) {
        self.name = Vec::new();
        self.value = Vec::new();
    }

    /// The dynamic table's size now, in RFC 7541 octets.
    pub fn table_size(&self) -> usize {
        self.table.size
    }

    /// Decode a whole header block into `out`; fields past `list_limit`
    /// (RFC 9113 octets) are read but dropped, and `out.oversize` says so.
    pub fn decode(
        &mut self,
        mut block: &[u8],
        list_limit: usize,
        out: &mut Fields,
    ) -> Result<(), HpackError> {
        out.clear();
        let mut fields_seen = false;
        while let Some(&first) = block.first() {
            if first & 0x80 != 0 {
                // Indexed field.
                let index = integer(&mut block, 7)?;
                let (n, v) = self.table.get(index).ok_or(HpackError::Index)?;
                out.push(n, v, list_limit);
                fields_seen = true;
            } else if first & 0xc0 == 0x40 {
                // Literal with incremental indexing.
                self.literal(&mut block, 6)?;
                out.push(&self.name, &self.value, list_limit);
                self.table.insert(self.name.clone(), self.value.clone());
                fields_seen = true;
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update: only before the first field.
                let size = integer(&mut block, 5)?;
                if fields_seen || size > self.limit {
                    return Err(HpackError::SizeUpdate);
                }
                self.table.max = size;
                self.table.evict_to(size);
            } else {
                // Literal without indexing (0000) or never indexed (0001).
                self.literal(&mut block, 4)?;
                out.push(&self.name, &self.value, list_limit);
                fields_seen = true;
            }
        }
        Ok(())
    }

    /// A literal field's name (indexed or literal) and value into
    /// `self.name` and `self.value`.
    fn literal(&mut self, block: &mut &[u8], prefix: u8) -> Result<(), HpackError> {
        let index = integer(block, prefix)?;
        self.name.clear();
        if index == 0 {
            string(block, &mut self.name)?;
        } else {
            let (n, _) = self.table.get(index).ok_or(HpackError::Index)?;
            self.name.extend_from_slice(n);
        }
        self.value.clear();
        string(block, &mut self.value)
    }
}

/// An integer with an N-bit prefix (RFC 7541 §5.1), at most 2^32 - 1.
fn integer(block: &mut &[u8], prefix: u8) -> Result<usize, HpackError> {
    let (&first, rest) = block.split_first().ok_or(HpackError::Truncated)?;
    let max = (1u32 << prefix) - 1;
    let mut value = u64::from(u32::from(first) & max);
    *block = rest;
    if value < u64::from(max) {
        return Ok(value as usize);
    }
    let mut shift = 0;
    loop {
        let (&b, rest) = block.split_first().ok_or(HpackError::Integer)?;
        *block = rest;
        value += u64::from(b & 0x7f) << shift;
        if value > u64::from(u32::MAX) {
            return Err(HpackError::Integer);
        }
        if b & 0x80 == 0 {
            return Ok(value as usize);
        }
        shift += 7;
        if shift > 28 {
            return Err(HpackError::Integer);
        }
    }
}

/// A string literal (RFC 7541 §5.2) appended to `out`.
fn string(block: &mut &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let huffman = block.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(block, 7)?;
    if len > block.len() {
        return Err(HpackError::Truncated);
    }
    let (s, rest) = block.split_at(len);
    *block = rest;
    if huffman {
        huffman::decode(s, out).map_err(|_| HpackError::Huffman)
    } else {
        out.extend_from_slice(s);
        Ok(())
    }
}

/// Append an integer with an N-bit prefix, `flags` in the first octet's
/// other bits.
fn put_integer(out: &mut Vec<u8>, flags: u8, prefix: u8, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Append a string literal, Huffman-coded when that is shorter.
fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    let coded = huffman::encoded_len(s);
    if coded < s.len() {
        put_integer(out, 0x80, 7, coded);
        huffman::encode(s, out);
    } else {
        put_integer(out, 0, 7, s.len());
        out.extend_from_slice(s);
    }
}

/// A connection's HPACK encoder. By default it never adds to the dynamic
/// table; [`Encoder::indexing`] makes one that does, for fields that
/// repeat from one header block to the next (a proxy's requests to an
/// origin: the same `user-agent`, `x-forwarded-for`, `:authority` on every
/// stream become an octet each after the first).
#[derive(Debug, Default)]
pub struct Encoder {
    /// The peer changed SETTINGS_HEADER_TABLE_SIZE: the next block starts
    /// with a size update (to `limit`).
    update_owed: bool,
    /// The entries we added, newest first, and their size (RFC 7541 §4.1).
    table: std::collections::VecDeque<Entry>,
    size: usize,
    /// The table size we use (at most the peer's), and the most we want
    /// (0: we never index).
    limit: usize,
    cap: usize,
}

/// A field in the encoder's table: name, value.
type Entry = (Box<[u8]>, Box<[u8]>);

/// The table size a peer gives until it says otherwise (RFC 9113 §6.5.2).
const DEFAULT_TABLE: usize = 4096;

impl Encoder {
    /// An encoder that indexes repeated fields in a table of at most `cap`
    /// octets (and at most what the peer allows).
    pub fn indexing(cap: usize) -> Encoder {
        Encoder {
            cap,
            limit: cap.min(DEFAULT_TABLE),
            ..Encoder::default()
        }
    }

    /// The peer announced a table size (it may have lowered it).
    pub fn peer_table_size(&mut self, size: u32) {
        self.limit = self.cap.min(size as usize);
        self.evict(0);
        self.update_owed = true;
    }

    /// A block begun was not sent: the size update it carried is owed again
    /// (one more than needed does no harm).
    pub fn owe_update(&mut self) {
        self.update_owed = true;
    }

    /// Start a header block in `out`.
    pub fn begin(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.update_owed) {
            put_integer(out, 0x20, 5, self.limit);
        }
    }

    /// Append one field; `sensitive` ones are marked never to be indexed
    /// (by any later hop). A name of the static table is sent as its
    /// index; a whole field of it (`:status: 200`, ...) as one octet; with
    /// a table, a field sent before as its index there.
    pub fn field(&mut self, out: &mut Vec<u8>, name: &[u8], value: &[u8], sensitive: bool) {
        let mut name_index = static_name(name).unwrap_or(0);
        if name_index != 0 && !sensitive {
            // The entries with a value: a name's first entry and those
            // right after it with the same name.
            let same = STATIC[name_index - 1..]
                .iter()
                .take_while(|(n, _)| n.as_bytes() == name);
            for (i, (_, v)) in same.enumerate() {
                if !v.is_empty() && v.as_bytes() == value {
                    put_integer(out, 0x80, 7, name_index + i);
                    return;
                }
            }
        }
        if self.limit > 0 && !sensitive {
            for (i, (n, v)) in self.table.iter().enumerate() {
                if **n == *name {
                    if **v == *value {
                        put_integer(out, 0x80, 7, STATIC.len() + 1 + i);
                        return;
                    }
                    if name_index == 0 {
                        name_index = STATIC.len() + 1 + i;
                    }
                }
            }
            let entry = name.len() + value.len() + 32;
            // (Fields that change with each request would only churn the
            // table.)
            let churns = matches!(name, b":path" | b"content-length" | b"date");
            if !churns && entry <= self.limit / 4 {
                put_integer(out, 0x40, 6, name_index);
                if name_index == 0 {
                    put_string(out, name);
                }
                put_string(out, value);
                self.evict(entry);
                self.table.push_front((name.into(), value.into()));
                self.size += entry;
                return;
            }
        }
        put_integer(out, if sensitive { 0x10 } else { 0 }, 4, name_index);
        if name_index == 0 {
            put_string(out, name);
        }
        put_string(out, value);
    }

    /// Drop the oldest entries until `room` more octets fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.limit {
            let Some((n, v)) = self.table.pop_back() else {
                break;
            };
            self.size -= n.len() + v.len() + 32;
        }
    }
}

/// The index of `name`'s first entry in the static table (RFC 7541
/// Appendix A), if it has one: a match the compiler turns into length
/// and byte comparisons, not a scan of 61 entries.
fn static_name(name: &[u8]) -> Option<usize> {
    Some(match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b":status" => 8,
        b"accept-charset" => 15,
        b"accept-encoding" => 16,
        b"accept-language" => 17,
        b"accept-ranges" => 18,
        b"accept" => 19,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"authorization" => 23,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"cookie" => 32,
        b"date" => 33,
        b"etag" => 34,
        b"expect" => 35,
        b"expires" => 36,
        b"from" => 37,
        b"host" => 38,
        b"if-match" => 39,
        b"if-modified-since" => 40,
        b"if-none-match" => 41,
        b"if-range" => 42,
        b"if-unmodified-since" => 43,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"max-forwards" => 47,
        b"proxy-authenticate" => 48,
        b"proxy-authorization" => 49,
        b"range" => 50,
        b"referer" => 51,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"transfer-encoding" => 57,
        b"user-agent" => 58,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_names_agree_with_the_table() {
        for (i, (name, _)) in STATIC.iter().enumerate() {
            let first = STATIC.iter().position(|(n, _)| n == name).unwrap() + 1;
            assert_eq!(
                static_name(name.as_bytes()),
                Some(first),
                "{name} ({})",
                i + 1
            );
        }
        assert_eq!(static_name(b"x-unknown"), None);
        // Whole fields as one octet, names as an index, others literal.
        let mut e = Encoder::default();
        let mut out = Vec::new();
        e.field(&mut out, b":status", b"404", false);
        assert_eq!(out, [0x80 | 13]);
        out.clear();
        e.field(&mut out, b":status", b"418", false);
        assert_eq!(out, [0x08, 3, b'4', b'1', b'8']);
        out.clear();
        e.field(&mut out, b"set-cookie", b"a", true);
        assert_eq!(out, [0x1f, 55 - 15, 1, b'a']);
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn fields(f: &Fields) -> Vec<(String, String)> {
        f.iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rfc_c1_integers() {
        let mut out = Vec::new();
        put_integer(&mut out, 0, 5, 10);
        assert_eq!(out, [0x0a]);
        out.clear();
        put_integer(&mut out, 0, 5, 1337);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
        assert_eq!(integer(&mut &out[..], 5), Ok(1337));
        out.clear();
        put_integer(&mut out, 0, 8, 42);
        assert_eq!(out, [0x2a]);
        // Past 2^32, and cut short.
        assert_eq!(
            integer(&mut &[0x1f, 0xff, 0xff, 0xff, 0xff, 0x7f][..], 5),
            Err(HpackError::Integer)
        );
        assert_eq!(integer(&mut &[0x1f, 0x9a][..], 5), Err(HpackError::Integer));
    }

    /// RFC 7541 C.3 (requests, no Huffman) and C.4 (the same, Huffman):
    /// three blocks on one connection, with the table after each.
    #[test]
    fn rfc_c3_and_c4_requests() {
        let blocks = [
            (
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                vec![
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":path", "/"),
                    (":authority", "www.example.com"),
                ],
                57,
            ),
            (
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8286 84be 5886 a8eb 1064 9cbf",
                vec![
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":path", "/"),
                    (":authority", "www.example.com"),
                    ("cache-control", "no-cache"),
                ],
                110,
            ),
            (
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
                vec![
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":path", "/index.html"),
                    (":authority", "www.example.com"),
                    ("custom-key", "custom-value"),
                ],
                164,
            ),
        ];
        for huffman in [false, true] {
            let mut d = Decoder::new(4096);
            let mut out = Fields::default();
            for (plain, coded, want, size) in &blocks {
                let block = hex(if huffman { coded } else { plain });
                d.decode(&block, 1 << 20, &mut out).unwrap();
                assert_eq!(fields(&out), pairs(want));
                assert_eq!(d.table_size(), *size);
            }
        }
    }

    #[test]
    fn an_indexing_encoder_sends_repeated_fields_as_indexes() {
        let list: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"GET"),
            (b":authority", b"origin.example:8080"),
            (b":path", b"/a"),
            (b"user-agent", b"curl/8.0"),
            (b"x-forwarded-for", b"192.0.2.7"),
            (b"cookie", b"secret=1"),
        ];
        let mut e = Encoder::indexing(4096);
        let mut d = Decoder::new(4096);
        let mut sizes = Vec::new();
        for round in 0..40 {
            let mut block = Vec::new();
            e.begin(&mut block);
            for (n, v) in &list {
                let path = format!("/a{round}");
                let v = if *n == b":path" { path.as_bytes() } else { v };
                e.field(&mut block, n, v, *n == b"cookie");
            }
            let mut out = Fields::default();
            d.decode(&block, 1 << 16, &mut out).unwrap();
            let got: Vec<_> = out.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
            assert_eq!(got.len(), list.len());
            assert_eq!(got[1].1, b"origin.example:8080");
            assert_eq!(got[2].1, format!("/a{round}").as_bytes());
            assert_eq!(got[5].1, b"secret=1");
            sizes.push(block.len());
            if round == 20 {
                // The peer shrinks its table: a size update, then the
                // fields again in full.
                e.peer_table_size(64);
            }
        }
        assert!(sizes[1] < sizes[0] / 2, "{sizes:?}");
        assert!(sizes[21] > sizes[1], "{sizes:?}");
        // The tables agree: the encoder's never outgrows the decoder's.
        assert!(e.size <= e.limit && e.limit <= 64);
    }

    /// RFC 7541 C.5 (responses, a 256-octet table: entries are evicted)
    /// and C.6 (the same with Huffman).
    #[test]
    fn rfc_c5_and_c6_responses_with_eviction() {
        let first = vec![
            (":status", "302"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("location", "https://www.example.com"),
        ];
        let second = vec![
            (":status", "307"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("location", "https://www.example.com"),
        ];
        let third = vec![
            (":status", "200"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
            ("location", "https://www.example.com"),
            ("content-encoding", "gzip"),
            (
                "set-cookie",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            ),
        ];
        let plain = [
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
             2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
             6c65 2e63 6f6d",
            "4803 3330 37c1 c0bf",
            "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d \
             54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 \
             5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e \
             3d31",
        ];
        let coded = [
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "4883 640e ffc1 c0bf",
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
             77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
             9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        ];
        let sizes = [222, 222, 215];
        for blocks in [plain, coded] {
            let mut d = Decoder::new(256);
            let mut out = Fields::default();
            for (i, (block, want)) in blocks.iter().zip([&first, &second, &third]).enumerate() {
                d.decode(&hex(block), 1 << 20, &mut out).unwrap();
                assert_eq!(fields(&out), pairs(want), "block {i}");
                assert_eq!(d.table_size(), sizes[i], "block {i}");
            }
        }
    }

    #[test]
    fn what_the_encoder_writes_decodes_the_same() {
        let list = [
            (":status", "200"),
            (":status", "502"),
            ("content-type", "text/html; charset=utf-8"),
            ("x-custom", "Value With Caps and \u{7f} bytes"),
            ("set-cookie", "a=b"),
            ("accept-encoding", "gzip, deflate"),
        ];
        let mut e = Encoder::default();
        e.peer_table_size(0);
        let mut block = Vec::new();
        e.begin(&mut block);
        for (n, v) in list {
            e.field(&mut block, n.as_bytes(), v.as_bytes(), n == "set-cookie");
        }
        let mut d = Decoder::new(4096);
        let mut out = Fields::default();
        d.decode(&block, 1 << 20, &mut out).unwrap();
        assert_eq!(fields(&out), pairs(&list));
        assert_eq!(d.table_size(), 0, "nothing indexed");
        // The update is owed once.
        let mut next = Vec::new();
        e.begin(&mut next);
        assert!(next.is_empty());
    }

    #[test]
    fn a_bomb_is_read_to_its_end_but_not_kept() {
        // One large entry, then many one-octet references to it.
        let mut block = vec![0x40, 0x01, b'x', 0x7f, 0xa1, 0x1e];
        block.extend(std::iter::repeat_n(b'a', 4000));
        let refs = vec![0xbe; 10_000]; // index 62: the newest dynamic entry
        let mut d = Decoder::new(4096);
        let mut out = Fields::default();
        d.decode(&block, 16 * 1024, &mut out).unwrap();
        d.decode(&refs, 16 * 1024, &mut out).unwrap();
        assert!(out.oversize);
        assert!(out.len() <= 4, "{} fields kept", out.len());
        assert!(out.size > 10_000 * 4000);
    }

    #[test]
    fn malformed_blocks_are_errors() {
        let mut d = Decoder::new(4096);
        let mut out = Fields::default();
        for (block, err) in [
            (&[0x80][..], HpackError::Index),
            (&[0xff, 0x80, 0x01][..], HpackError::Index),
            (&[0x40, 0x85, b'a'][..], HpackError::Truncated),
            (&[0x3f, 0xe2, 0x1f][..], HpackError::SizeUpdate),
            (&[0x82, 0x20][..], HpackError::SizeUpdate),
            (&[0x00, 0x81, 0x00, 0x00][..], HpackError::Huffman),
        ] {
            assert_eq!(d.decode(block, 1 << 20, &mut out), Err(err), "{block:02x?}");
        }
    }
}
