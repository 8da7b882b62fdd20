//! HTTP/2 (RFC 9113), sans-I/O: header compression (`hpack`, with its
//! Huffman code in `huffman`) and the frame layer (`frame`). Not yet wired
//! to listeners: see issue 23's note.

pub mod frame;
pub mod hpack;
pub mod huffman;
pub mod request;
