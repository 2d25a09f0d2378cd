//! Tests of the bank example: the HTTP API over a real socket.

mod http;
