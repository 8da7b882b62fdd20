//! Our HPACK against another implementation: the Python `hpack` package
//! (the one the `h2` client uses) encodes header lists, with and without
//! Huffman and indexing into its dynamic table, that our decoder must read
//! back exactly, block after block on one connection's table; and what our
//! encoder writes, Python's decoder must read back.

use std::io::Write;
use std::process::{Command, Stdio};

use ringmux::h2::hpack::{Decoder, Encoder, Fields};

/// Header lists as Python made them and the blocks its encoder wrote: one
/// JSON object a line, `{"block": hex, "fields": [[hex, hex], ...]}`.
const PYTHON_ENCODES: &str = r#"
import json, random, hpack
rnd = random.Random(7)
names = [b':method', b':path', b':authority', b'user-agent', b'accept', b'cookie',
         b'x-request-id', b'content-type', b'x-long', b'accept-encoding', b'etag']
enc = hpack.Encoder()
for i in range(300):
    fields = []
    for _ in range(rnd.randint(1, 12)):
        n = rnd.choice(names)
        size = rnd.choice([0, 1, 5, 20, 200, 3000])
        v = bytes(rnd.choice(b'abcXYZ019 -_/;=%\x7f\x80\xfe\xff') for _ in range(size)).strip()
        fields.append((n, v))
    if i % 50 == 25:
        enc.header_table_size = rnd.choice([0, 256, 4096])
    block = enc.encode(fields, huffman=(i % 3 != 0))
    print(json.dumps({'block': block.hex(), 'fields': [[n.hex(), v.hex()] for n, v in fields]}))
"#;

/// Read blocks (hex, one a line) from stdin with one decoder; print each
/// list as JSON.
const PYTHON_DECODES: &str = r#"
import sys, json, hpack
dec = hpack.Decoder()
for line in sys.stdin:
    fields = dec.decode(bytes.fromhex(line.strip()), raw=True)
    print(json.dumps([[n.hex(), v.hex()] for n, v in fields]))
"#;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn python(script: &str, input: &str) -> String {
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    // (Written from another thread: the output fills its pipe meanwhile.)
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "python failed (is the hpack package installed? .ci/run installs h2): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

type List = Vec<(Vec<u8>, Vec<u8>)>;

fn list_of(v: &serde_json::Value) -> List {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| (unhex(p[0].as_str().unwrap()), unhex(p[1].as_str().unwrap())))
        .collect()
}

fn fields_list(f: &Fields) -> List {
    f.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect()
}

#[test]
fn python_hpack_blocks_decode_and_ours_decode_in_python() {
    let made = python(PYTHON_ENCODES, "");
    let mut decoder = Decoder::new(4096);
    let mut fields = Fields::default();
    let mut lists = Vec::new();
    for (i, line) in made.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let want = list_of(&v["fields"]);
        decoder
            .decode(&unhex(v["block"].as_str().unwrap()), 1 << 20, &mut fields)
            .unwrap_or_else(|e| panic!("block {i}: {e:?}"));
        assert_eq!(fields_list(&fields), want, "block {i}");
        lists.push(want);
    }
    assert_eq!(lists.len(), 300);
    // The other way: our blocks through Python's decoder, on one table.
    let mut encoder = Encoder::default();
    let mut input = String::new();
    for (i, list) in lists.iter().enumerate() {
        if i == 10 {
            encoder.peer_table_size(4096);
        }
        let mut block = Vec::new();
        encoder.begin(&mut block);
        for (n, v) in list {
            encoder.field(&mut block, n, v, n == b"cookie");
        }
        input += &hex(&block);
        input.push('\n');
    }
    let back = python(PYTHON_DECODES, &input);
    for (i, (line, want)) in back.lines().zip(&lists).enumerate() {
        let got = list_of(&serde_json::from_str(line).unwrap());
        assert_eq!(&got, want, "block {i}");
    }
    assert_eq!(back.lines().count(), lists.len());
}
