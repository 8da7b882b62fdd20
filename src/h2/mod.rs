//! HTTP/2 (RFC 9113), sans-I/O: header compression (`hpack`, with its
//! Huffman code in `huffman`), the frame layer (`frame`), a request's
//! header list to an HTTP/1.1 head (`request`), a server connection's
//! state, flow control and limits (`conn`), and the session the worker
//! drives for an HTTP/2 client (`session`).

pub mod conn;
pub mod frame;
pub mod fuzzing;
pub mod hpack;
pub mod huffman;
pub mod request;
pub mod session;
pub mod upstream;
