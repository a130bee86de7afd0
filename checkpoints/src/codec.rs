//! The Thrift binary-protocol encoding of records (in progress).
